"""Training examples from a dataset written by the builder (:mod:`.build`): read, mix, tokenize, collate.

A dataset row (LeRobot v3 data file, read with pyarrow) holds the image as the model sees it, the prompt,
the depth codes, the trace, the action bins and the full answer text. Two kinds of examples are made from a
row, as MolmoAct's fine-tune recipe mixes them (``olmo/data/custom_lerobot_dataset.py``: reasoning or
trajectory-conditioned per sample):

* ``reasoning``: the released reasoning prompt (``PromptVariant.MULTI_VIEW``) on the plain image; the answer
  is the row's full answer text (depth -> trace -> actions), or the same parts re-formatted with another
  template (``answer_template``);
* ``trajectory``: the row's trace drawn on the image exactly as the engine's drawn-steering stage draws it
  (:func:`reasoning.steering.draw_trace`), the ``TRAJECTORY_MULTI_VIEW`` prompt, and the actions-only
  answer of :data:`grammar.TRAJECTORY_CONDITIONED_TEMPLATE` (``" Based on the image and the annotated
  trajectory of the end effector, the action that the robot should take is [[...]]."``): the engine prefills
  that lead-in and decodes the list, so the trained text is exactly what that stage reads.

Every answer ends with EOS (the constraints' end of answer). The token layout is the processor's
(BOS, image tokens, ``User: {prompt} Assistant:``) followed by the answer tokens; labels are -100 on
everything but the answer tokens (and the EOS).

ROS-free; needs pyarrow, numpy, OpenCV (PNG decode) and torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..model.processing import MolmoActProcessor, PromptVariant, build_prompt, chat_text
from ..reasoning import grammar
from ..reasoning.steering import draw_trace

__all__ = ['DatasetRow', 'TrainingDataset', 'Encoded', 'encode_example', 'collate_batch', 'IGNORE_INDEX',
           'REASONING', 'TRAJECTORY']

IGNORE_INDEX = -100
REASONING = 'reasoning'
TRAJECTORY = 'trajectory'


@dataclass(frozen=True)
class DatasetRow:
    index: int
    episode: int
    image_png: bytes
    instruction: str
    depth_codes: tuple
    trace: tuple          # ((x, y), ...) 1..5 points in 0..255
    action_bins: tuple    # ((b0..b6), ...) H steps
    answer: str

    def image(self) -> np.ndarray:
        import cv2
        bgr = cv2.imdecode(np.frombuffer(self.image_png, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'row {self.index}: the image is not a decodable PNG')
        return np.ascontiguousarray(bgr[:, :, ::-1])


class TrainingDataset:
    """A builder dataset's rows, its norm stats and metadata (``meta/molmoact.json``)."""

    def __init__(self, root: Path):
        import pyarrow.parquet as pq

        self.root = Path(root)
        info_path = self.root / 'meta' / 'info.json'
        if not info_path.is_file():
            raise FileNotFoundError(f'{self.root}: not a LeRobot dataset (no meta/info.json)')
        self.info = json.loads(info_path.read_text(encoding='utf-8'))
        meta_path = self.root / 'meta' / 'molmoact.json'
        self.meta = json.loads(meta_path.read_text(encoding='utf-8')) if meta_path.is_file() else {}
        stats_path = self.root / 'dataset_statistics.json'
        if not stats_path.is_file():
            raise FileNotFoundError(f'{self.root}: no dataset_statistics.json (build it with build_dataset)')
        self.norm_stats = json.loads(stats_path.read_text(encoding='utf-8'))
        self.key = self.meta.get('dataset_key') or next(iter(self.norm_stats))
        self.horizon = int(self.meta.get('horizon') or 0)
        files = sorted((self.root / 'data').rglob('*.parquet'))
        if not files:
            raise FileNotFoundError(f'{self.root}: no data/*.parquet files')
        wanted = ['index', 'episode_index', 'observation.image', 'molmoact.prompt', 'molmoact.depth_codes',
                  'molmoact.trace', 'molmoact.trace_length', 'molmoact.action_bins', 'molmoact.answer',
                  'task_index']
        tasks = {}
        tasks_path = self.root / 'meta' / 'tasks.parquet'
        if tasks_path.is_file():
            table = pq.read_table(tasks_path).to_pylist()
            for entry in table:
                text = entry.get('__index_level_0__') or entry.get('task')
                tasks[int(entry['task_index'])] = text
        self.rows: List[DatasetRow] = []
        for path in files:
            for r in pq.read_table(path, columns=wanted).to_pylist():
                n = int(r['molmoact.trace_length'])
                flat = list(r['molmoact.trace'])
                trace = tuple((int(flat[2 * i]), int(flat[2 * i + 1])) for i in range(n))
                bins = list(r['molmoact.action_bins'])
                steps = tuple(tuple(int(b) for b in bins[i:i + 7]) for i in range(0, len(bins), 7))
                instruction = tasks.get(int(r['task_index'])) or _instruction_from_prompt(r['molmoact.prompt'])
                self.rows.append(DatasetRow(
                    index=int(r['index']), episode=int(r['episode_index']),
                    image_png=r['observation.image']['bytes'], instruction=instruction,
                    depth_codes=tuple(int(c) for c in r['molmoact.depth_codes']), trace=trace,
                    action_bins=steps, answer=r['molmoact.answer']))
        if not self.rows:
            raise ValueError(f'{self.root}: the dataset has no rows')
        if not self.horizon:
            self.horizon = len(self.rows[0].action_bins)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def name(self) -> str:
        return self.root.name

    def episodes(self) -> List[int]:
        return sorted({r.episode for r in self.rows})

    def split(self, held_out_fraction: float, seed: int):
        """(train row indices, held-out row indices), split by whole episodes (seeded); with one episode or a
        zero fraction every row trains and the held-out list is the last rows (at most 8) of the data."""
        episodes = self.episodes()
        n_out = int(round(len(episodes) * held_out_fraction))
        if held_out_fraction <= 0 or len(episodes) < 2 or n_out < 1:
            return list(range(len(self.rows))), list(range(max(0, len(self.rows) - 8), len(self.rows)))
        rng = np.random.default_rng(seed)
        out = set(rng.choice(episodes, size=min(n_out, len(episodes) - 1), replace=False).tolist())
        train = [i for i, r in enumerate(self.rows) if r.episode not in out]
        held = [i for i, r in enumerate(self.rows) if r.episode in out]
        return train, held


def _instruction_from_prompt(prompt: str) -> str:
    head = 'The task is '
    if prompt.startswith(head):
        return prompt[len(head):].split('. ', 1)[0]
    return prompt


def answer_for(row: DatasetRow, kind: str, answer_template: str = 'dataset') -> str:
    """The answer text (with its leading space) of ``row`` for an example of ``kind``."""
    if kind == TRAJECTORY:
        return grammar.TRAJECTORY_CONDITIONED_TEMPLATE.format(row.action_bins)
    if answer_template == 'dataset':
        return row.answer
    template = grammar.TEMPLATES[answer_template]
    return template.format(row.action_bins, row.depth_codes, row.trace)


@dataclass
class Encoded:
    """One tokenized example: ids, labels (-100 outside the answer), image arrays, part metadata."""

    input_ids: np.ndarray          # (S,)
    labels: np.ndarray             # (S,)
    images: np.ndarray             # (T, N, 588)
    image_masks: np.ndarray        # (T, N)
    pooled_patches_idx: np.ndarray  # (K, 4)
    answer_start: int              # index of the first answer token in input_ids
    answer_text: str
    kind: str
    row: int


def encode_example(processor: MolmoActProcessor, row: DatasetRow, kind: str, answer_template: str = 'dataset',
                   image: Optional[np.ndarray] = None) -> Encoded:
    """Tokenize one example the way the engine prompts the model (the image as a one-view list, the chat
    framing), with the answer and EOS appended and labelled."""
    image = row.image() if image is None else image
    if kind == TRAJECTORY:
        image = draw_trace(image, row.trace)
        variant = PromptVariant.TRAJECTORY_MULTI_VIEW
    elif kind == REASONING:
        variant = PromptVariant.MULTI_VIEW
    else:
        raise ValueError(f'unknown example kind {kind!r}')
    answer = answer_for(row, kind, answer_template)
    inputs = processor(chat_text(build_prompt(row.instruction, variant)), [image], return_tensors='np')
    prompt_ids = inputs['input_ids'][0]
    answer_ids = processor.encode_text(answer) + [processor.token_ids.eos]
    ids = np.concatenate([prompt_ids, np.asarray(answer_ids, dtype=np.int64)])
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    labels[len(prompt_ids):] = answer_ids
    return Encoded(input_ids=ids, labels=labels, images=inputs['images'][0], image_masks=inputs['image_masks'][0],
                   pooled_patches_idx=inputs['pooled_patches_idx'][0], answer_start=len(prompt_ids),
                   answer_text=answer, kind=kind, row=row.index)


def collate_batch(examples: Sequence[Encoded], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-padded batch (positions 0.. for every row, as without padding); image arrays padded as the
    processor's ``collate`` does (pooled indices -1, masks -1)."""
    width = max(len(e.input_ids) for e in examples)
    b = len(examples)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    labels = np.full((b, width), IGNORE_INDEX, dtype=np.int64)
    attn = np.zeros((b, width), dtype=np.int64)
    for i, e in enumerate(examples):
        ids[i, :len(e.input_ids)] = e.input_ids
        labels[i, :len(e.labels)] = e.labels
        attn[i, :len(e.input_ids)] = 1
    t = max(e.images.shape[0] for e in examples)
    k = max(e.pooled_patches_idx.shape[0] for e in examples)
    n, d = examples[0].images.shape[1:]
    images = np.full((b, t, n, d), -1, dtype=np.float32)
    masks = np.full((b, t, n), -1, dtype=np.float32)
    pooled = np.full((b, k, examples[0].pooled_patches_idx.shape[1]), -1, dtype=np.int64)
    for i, e in enumerate(examples):
        images[i, :e.images.shape[0]] = e.images
        masks[i, :e.image_masks.shape[0]] = e.image_masks
        pooled[i, :e.pooled_patches_idx.shape[0]] = e.pooled_patches_idx
    return {'input_ids': torch.from_numpy(ids), 'labels': torch.from_numpy(labels),
            'attention_mask': torch.from_numpy(attn), 'images': torch.from_numpy(images),
            'image_masks': torch.from_numpy(masks), 'pooled_patches_idx': torch.from_numpy(pooled)}
