"""Write a LeRobot dataset (format v3.0) with pyarrow, the layout LeRobot's ``LeRobotDataset`` loads::

    meta/info.json                       codebase_version "v3.0", fps, features, totals, data_path
    meta/stats.json                      per numeric feature: min, max, mean, std, count, q01, q99
    meta/tasks.parquet                   index: task text; column task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                                         data/chunk_index, data/file_index, dataset_from_index,
                                         dataset_to_index, meta/episodes/chunk_index, meta/episodes/file_index
    data/chunk-000/file-000.parquet      one row per frame (a new file past ``data_files_size_in_mb``)

Images are stored in the data files (feature dtype ``image``: a struct of PNG ``bytes`` and ``path``, the
Hugging Face ``datasets.Image`` storage), not as videos. Each data file carries the Hugging Face features in
its schema metadata so ``datasets`` reads it on its own too.

ROS-free; needs pyarrow (and Pillow or OpenCV for PNG).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ['CODEBASE_VERSION', 'LeRobotWriter', 'encode_png', 'feature_stats']

CODEBASE_VERSION = 'v3.0'
CHUNK_FILE = 'chunk-{chunk_index:03d}/file-{file_index:03d}'
DATA_PATH = 'data/' + CHUNK_FILE + '.parquet'
EPISODES_PATH = 'meta/episodes/' + CHUNK_FILE + '.parquet'
DEFAULT_FEATURES = {
    'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
    'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
}
_PA_TYPES = {'float32': pa.float32(), 'float64': pa.float64(), 'int64': pa.int64(), 'int32': pa.int32(),
             'uint8': pa.uint8(), 'bool': pa.bool_(), 'string': pa.string()}
_IMAGE_TYPE = pa.struct([('bytes', pa.binary()), ('path', pa.string())])


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image (OpenCV; lossless, compression 1 for speed)."""
    import cv2
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError('PNG encoding failed')
    return buf.tobytes()


def _arrow_type(ft: dict) -> pa.DataType:
    if ft['dtype'] == 'image':
        return _IMAGE_TYPE
    base = _PA_TYPES[ft['dtype']]
    shape = list(ft['shape'])
    if shape == [1]:
        return base
    if len(shape) == 1:
        return pa.list_(base, shape[0])
    raise ValueError(f'only scalar and 1-D features are written here, got shape {shape}')


def _hf_feature(ft: dict) -> dict:
    if ft['dtype'] == 'image':
        return {'_type': 'Image'}
    value = {'dtype': ft['dtype'], '_type': 'Value'}
    if list(ft['shape']) == [1]:
        return value
    return {'feature': value, 'length': int(ft['shape'][0]), '_type': 'Sequence'}


def feature_stats(values: np.ndarray) -> dict:
    """LeRobot-style statistics of (N, ...) values over axis 0: min, max, mean, std, count, q01, q99."""
    v = np.asarray(values, dtype=np.float64)
    return {'min': v.min(0).tolist(), 'max': v.max(0).tolist(), 'mean': v.mean(0).tolist(),
            'std': v.std(0).tolist(), 'count': [int(len(v))], 'q01': np.quantile(v, 0.01, axis=0).tolist(),
            'q99': np.quantile(v, 0.99, axis=0).tolist()}


def _channel_histogram(image: np.ndarray) -> np.ndarray:
    """(3, 256) counts of each uint8 value per channel of an (H, W, 3) image."""
    flat = np.asarray(image, dtype=np.uint8).reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]).astype(np.int64)


def _kth_smallest(cumulative: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest value (0-based) of each channel, as a value index, from cumulative counts (3, 256)."""
    return np.array([np.searchsorted(row, k, side='right') for row in cumulative])


def _image_stats(histogram: np.ndarray) -> dict:
    """Per-channel stats of uint8 images scaled to [0, 1], shaped (3, 1, 1) as LeRobot keeps them, from the
    (3, 256) value counts: the same figures as ``feature_stats`` of every pixel (np.quantile's linear
    interpolation between order statistics), in memory independent of the number of images."""
    values = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float64)
    n = int(histogram[0].sum())
    mean = histogram @ values / n
    std = np.sqrt((histogram * (values[None, :] - mean[:, None]) ** 2).sum(1) / n)
    cumulative = np.cumsum(histogram, axis=1)
    out = {'min': values[_kth_smallest(cumulative, 0)], 'max': values[_kth_smallest(cumulative, n - 1)],
           'mean': mean, 'std': std}
    for name, q in (('q01', 0.01), ('q99', 0.99)):
        position = q * (n - 1)
        lo = int(math.floor(position))
        below = values[_kth_smallest(cumulative, lo)]
        above = values[_kth_smallest(cumulative, min(lo + 1, n - 1))]
        out[name] = below + (above - below) * (position - lo)
    stats = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in out.items()}
    stats['count'] = [n]
    return stats


class LeRobotWriter:
    """Append episodes, then :meth:`finalize`. ``features``: LeRobot feature dicts (dtype, shape, names)
    besides the five default ones; numeric features of 1-D shape, ``string`` and ``image`` features."""

    def __init__(self, root: Path, *, fps: float, features: Dict[str, dict], robot_type: str,
                 data_file_size_mb: float = 100.0, chunks_size: int = 1000) -> None:
        self.root = Path(root)
        self.fps = fps
        self.features = {**{k: dict(v) for k, v in features.items()}, **DEFAULT_FEATURES}
        self.robot_type = robot_type
        self.limit_bytes = data_file_size_mb * 1024 * 1024
        self.chunks_size = chunks_size
        self.schema = pa.schema([(k, _arrow_type(ft)) for k, ft in self.features.items()]).with_metadata(
            {'huggingface': json.dumps({'info': {'features': {k: _hf_feature(ft) for k, ft in self.features.items()}}})})
        self.tasks: Dict[str, int] = {}
        self.episodes: List[dict] = []
        self.total_frames = 0
        self._file_index = 0
        self._writer: Optional[pq.ParquetWriter] = None
        self._bytes = 0
        self._stats_values: Dict[str, list] = {k: [] for k, ft in self.features.items()
                                               if ft['dtype'] not in ('string',)}

    def _data_path(self, file_index: int) -> Path:
        return self.root / DATA_PATH.format(chunk_index=file_index // self.chunks_size,
                                            file_index=file_index % self.chunks_size)

    def add_episode(self, columns: Dict[str, Any], task: str) -> int:
        """Write one episode: ``columns`` maps every non-default feature to its per-frame values (images as
        (H, W, 3) uint8 arrays or PNG bytes). Returns the episode index."""
        missing = sorted(set(self.features) - set(columns) - set(DEFAULT_FEATURES))
        if missing:
            raise ValueError(f'episode columns lack features {missing}')
        n = len(next(iter(columns.values())))
        if n == 0:
            raise ValueError('an episode needs at least one frame')
        ep = len(self.episodes)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        if self._writer is not None and self._bytes > self.limit_bytes:
            self._writer.close()
            self._writer = None
            self._file_index += 1
            self._bytes = 0
        if self._writer is None:
            path = self._data_path(self._file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(str(path), self.schema)
        fps = float(self.fps)
        cols = dict(columns)
        cols['timestamp'] = np.arange(n, dtype=np.float32) / np.float32(fps)
        cols['frame_index'] = np.arange(n, dtype=np.int64)
        cols['episode_index'] = np.full(n, ep, dtype=np.int64)
        cols['index'] = np.arange(self.total_frames, self.total_frames + n, dtype=np.int64)
        cols['task_index'] = np.full(n, task_index, dtype=np.int64)
        arrays = []
        for name, ft in self.features.items():
            values = cols[name]
            if len(values) != n:
                raise ValueError(f'feature {name} has {len(values)} values, the episode {n} frames')
            if ft['dtype'] == 'image':
                enc = [v if isinstance(v, (bytes, bytearray)) else encode_png(np.asarray(v)) for v in values]
                self._bytes += sum(len(b) for b in enc)
                arrays.append(pa.array([{'bytes': b, 'path': None} for b in enc], type=_IMAGE_TYPE))
                if name in self._stats_values:
                    stride = max(1, n // 8)  # image stats from a sample of frames, kept as value counts
                    for i in range(0, n, stride):
                        if not isinstance(values[i], (bytes, bytearray)):
                            self._stats_values[name].append(_channel_histogram(values[i]))
            elif ft['dtype'] == 'string':
                arrays.append(pa.array([str(v) for v in values], type=pa.string()))
                self._bytes += sum(len(str(v)) for v in values)
            else:
                arr = np.asarray(values, dtype=ft['dtype'])
                shape = list(ft['shape'])
                if shape == [1]:
                    arr = arr.reshape(n)
                    arrays.append(pa.array(arr, type=_PA_TYPES[ft['dtype']]))
                else:
                    arr = arr.reshape(n, shape[0])
                    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), shape[0]))
                self._bytes += arr.nbytes
                self._stats_values[name].append(arr.reshape(n, -1))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._writer.write_table(table)
        self.episodes.append({
            'episode_index': ep, 'tasks': [task], 'length': n,
            'data/chunk_index': self._file_index // self.chunks_size,
            'data/file_index': self._file_index % self.chunks_size,
            'dataset_from_index': self.total_frames, 'dataset_to_index': self.total_frames + n,
            'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0})
        self.total_frames += n
        return ep

    def stats(self) -> dict:
        out = {}
        for name, values in self._stats_values.items():
            if not values:
                continue
            if self.features[name]['dtype'] == 'image':
                out[name] = _image_stats(np.sum(values, axis=0))
            else:
                out[name] = feature_stats(np.concatenate(values))
        return out

    def finalize(self, extra_info: Optional[dict] = None) -> dict:
        """Close the data files and write meta/ (info, stats, tasks, episodes). Returns info.json's dict."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        meta = self.root / 'meta'
        meta.mkdir(parents=True, exist_ok=True)
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        task_table = pa.table({'task_index': pa.array([i for _, i in tasks], type=pa.int64()),
                               '__index_level_0__': pa.array([t for t, _ in tasks], type=pa.string())})
        task_table = task_table.replace_schema_metadata({'pandas': json.dumps({
            'index_columns': ['__index_level_0__'], 'column_indexes': [],
            'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                         'numpy_type': 'int64', 'metadata': None},
                        {'name': None, 'field_name': '__index_level_0__', 'pandas_type': 'unicode',
                         'numpy_type': 'object', 'metadata': None}],
            'creator': {'library': 'pyarrow', 'version': pa.__version__}, 'pandas_version': '2.2.0'})})
        pq.write_table(task_table, meta / 'tasks.parquet')
        ep_path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        ep_cols = {k: [e[k] for e in self.episodes] for k in (self.episodes[0] if self.episodes else {})}
        ep_table = pa.table({k: (pa.array(v, type=pa.list_(pa.string())) if k == 'tasks' else pa.array(v, type=pa.int64()))
                             for k, v in ep_cols.items()})
        pq.write_table(ep_table, ep_path)
        features = {k: {**ft, 'shape': list(ft['shape'])} for k, ft in self.features.items()}
        info = {
            'codebase_version': CODEBASE_VERSION, 'robot_type': self.robot_type,
            'total_episodes': len(self.episodes), 'total_frames': self.total_frames, 'total_tasks': len(self.tasks),
            'chunks_size': self.chunks_size, 'data_files_size_in_mb': int(self.limit_bytes // (1024 * 1024)),
            'video_files_size_in_mb': 200, 'fps': self.fps, 'splits': {'train': f'0:{len(self.episodes)}'},
            'data_path': DATA_PATH.replace('{chunk_index:03d}', '{chunk_index:03d}'), 'video_path': None,
            'features': features}
        if extra_info:
            info.update(extra_info)
        (meta / 'info.json').write_text(json.dumps(info, indent=2) + '\n', encoding='utf-8')
        (meta / 'stats.json').write_text(json.dumps(self.stats(), indent=2) + '\n', encoding='utf-8')
        return info
