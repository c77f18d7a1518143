"""A small synthetic dataset in the builder's format, written with the builder's own functions.

For tests and benchmarks of training that must not wait for the simulator: each episode is a coloured
square ("cube") on a plain table at a seeded position, an end effector moving to it; per step the image
(with the effector drawn), depth codes from a depth map with the cube raised, the trace (future effector
path, 0..255), action chunks from the effector deltas and the full answer text, laid out exactly as
:func:`.build.build_dataset` writes them (the same features, :class:`.lerobot_format.LeRobotWriter`,
:func:`.labels.answer_text`, :func:`.build.dataset_statistics`, the q01/q99 binning). Not real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..model.processing import PromptVariant, build_prompt
from ..reasoning import grammar
from ..reasoning.action_space import NormStats, normalize_bounds_q99, normalized_to_bins
from .build import dataset_statistics, molmoact_features
from .labels import action_chunks, answer_text, subsample_line
from .lerobot_format import LeRobotWriter

__all__ = ['write_synthetic_dataset']


def write_synthetic_dataset(out: Path, episodes: int = 3, steps: int = 10, horizon: int = 4, seed: int = 0,
                            width: int = 160, height: int = 120, key: str = 'molmoact',
                            template: str = 'finetune', instruction: str = 'lift the red cube') -> Path:
    out = Path(out)
    rng = np.random.default_rng(seed)
    tmpl = grammar.TEMPLATES[template]
    eps = []
    for _ in range(episodes):
        cube = rng.uniform([0.3, 0.4], [0.7, 0.8])           # image fraction (x, y)
        start = rng.uniform([0.1, 0.05], [0.9, 0.3])
        path = np.linspace(start, cube, steps + 1)[:, :]     # effector positions per step (image fraction)
        z = np.linspace(0.2, 0.02, steps + 1)
        pos = np.concatenate([path * [0.4, 0.4], z[:, None]], axis=1)  # a metric-like position
        grip = (np.arange(steps + 1) >= steps - 2).astype(np.float64)
        deltas = np.concatenate([np.diff(pos, axis=0), np.zeros((steps, 3)), grip[1:, None]], axis=1)
        images, depths, traces = [], [], []
        for i in range(steps):
            img = np.full((height, width, 3), 120, np.uint8)
            cx, cy = int(cube[0] * (width - 1)), int(cube[1] * (height - 1))
            img[max(cy - 6, 0):cy + 6, max(cx - 6, 0):cx + 6] = (200, 30, 30)
            ex, ey = int(path[i, 0] * (width - 1)), int(path[i, 1] * (height - 1))
            img[max(ey - 3, 0):ey + 3, max(ex - 3, 0):ex + 3] = (20, 20, 20)
            images.append(img)
            depth = np.full((10, 10), 100, np.int64)
            depth[min(int(cube[1] * 10), 9), min(int(cube[0] * 10), 9)] = 20
            depths.append(depth.reshape(-1))
            future = [(int(round(p[0] * 255)), int(round(p[1] * 255))) for p in path[i:]]
            traces.append(subsample_line(future))
        eps.append((images, np.stack(depths), traces, deltas, np.concatenate([pos[:-1], np.zeros((steps, 3)),
                                                                               grip[:-1, None]], axis=1)))
    all_actions = np.concatenate([e[3] for e in eps])
    stats_dict = dataset_statistics(all_actions, episodes, key)
    stats = NormStats.from_action_dict(stats_dict[key]['action'], key=key)
    features = molmoact_features(height, width, horizon)
    out.mkdir(parents=True, exist_ok=True)
    writer = LeRobotWriter(out, fps=10, features=features, robot_type='synthetic')
    prompt = build_prompt(instruction, PromptVariant.MULTI_VIEW)
    for images, codes, traces, actions, state in eps:
        chunks, padding = action_chunks(actions, horizon)
        bins = normalized_to_bins(normalize_bounds_q99(chunks, stats))
        writer.add_episode({
            'observation.image': images, 'observation.state': state.astype(np.float32),
            'observation.stamp_s': np.arange(steps) * 0.1, 'action': actions.astype(np.float32),
            'molmoact.action_chunk': chunks.reshape(steps, -1).astype(np.float32),
            'molmoact.action_bins': bins.reshape(steps, -1), 'molmoact.chunk_padding': padding,
            'molmoact.depth_codes': codes,
            'molmoact.trace': np.stack([np.array([c for p in t for c in p] + [-1] * (10 - 2 * len(t))) for t in traces]),
            'molmoact.trace_length': np.array([len(t) for t in traces]),
            'molmoact.answer': [answer_text(tmpl, codes[i], traces[i], bins[i]) for i in range(steps)],
            'molmoact.prompt': [prompt] * steps}, task=instruction)
    writer.finalize({'molmoact': {'depth_tokenizer': 'synthetic', 'answer_template': template, 'horizon': horizon,
                                  'dataset_key': key}})
    (out / 'meta' / 'molmoact.json').write_text(json.dumps({
        'builder': 'molmoact_ros.training.synthetic (not real data)', 'dataset_key': key, 'horizon': horizon,
        'answer_template': template, 'norm_stats': stats_dict}, indent=2) + '\n')
    (out / 'dataset_statistics.json').write_text(json.dumps(stats_dict, indent=2) + '\n')
    return out
