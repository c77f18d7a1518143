"""Open-loop accuracy on held-out demonstrations: each model answers (greedy, grammar-constrained, the
engine the nodes use) for held-out dataset images, and its depth codes, trace and action bins are compared
with the labels.

    python bench/open_loop_eval.py DATASET [--model sim-lift --model tiny] [--examples 40]

Held out = the episodes ``train_molmoact`` holds out of this dataset (same fraction and seed). Per model it
prints ``name: value unit`` lines:

* ``<model>_depth_code_accuracy``: fraction of the 100 depth codes equal to the label's;
* ``<model>_trace_end_error``: distance of the predicted trace's last point to the label's, in model space
  (0..255) and in pixels of the dataset image (its width and height);
* ``<model>_action_bin_accuracy_pm2``: fraction of the H x 7 action bins within +-2 of the label's;
* ``<model>_seconds_per_answer``: wall time of a whole answer (perceive + plan + act).

ROS-free.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src' / 'molmoact_ros'))


def make_engine(model: str, horizon: int):
    from molmoact_ros.nodes.engine_provider import ENGINE_PARAMETERS, TINY, EngineProvider
    settings = {p.name: p.default for p in ENGINE_PARAMETERS}
    settings.update(model=model, dtype='float32', device='cpu', action_horizon=horizon)
    if model == TINY:
        settings['max_free_tokens'] = 16  # the demo's setting for the random model (it rambles otherwise)
    return EngineProvider._load(settings)


def evaluate(engine, rows, log) -> dict:
    from molmoact_ros.reasoning.engine import Observation
    depth, end_model, end_px, bins_ok, bins_n, seconds = [], [], [], 0, 0, []
    for k, row in enumerate(rows):
        image = row.image()
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        p, t, a = engine.run(Observation(image=image), row.instruction)
        seconds.append(time.perf_counter() - t0)
        codes = list(p.depth.codes)
        depth.append(float(np.mean([x == y for x, y in zip(codes, row.depth_codes)])) if codes else 0.0)
        if t.trace.points and row.trace:
            (px, py), (lx, ly) = t.trace.points[-1], row.trace[-1]
            end_model.append(float(np.hypot(px - lx, py - ly)))
            end_px.append(float(np.hypot((px - lx) * w / 255.0, (py - ly) * h / 255.0)))
        pred = np.asarray(a.tokens.bins, dtype=np.int64)
        label = np.asarray(row.action_bins, dtype=np.int64)
        bins_n += label.size
        if pred.shape == label.shape:
            bins_ok += int((np.abs(pred - label) <= 2).sum())
        log(f'  {k + 1}/{len(rows)}: depth {depth[-1]:.2f}, trace end '
            f'{end_px[-1] if end_px else float("nan"):.1f} px, {seconds[-1]:.1f} s')
    return {'depth_code_accuracy': (float(np.mean(depth)), 'fraction'),
            'trace_end_error_model_space': (float(np.mean(end_model)) if end_model else float('nan'), 'units_0_255'),
            'trace_end_error': (float(np.mean(end_px)) if end_px else float('nan'), 'px'),
            'trace_end_error_median': (float(np.median(end_px)) if end_px else float('nan'), 'px'),
            'action_bin_accuracy_pm2': (bins_ok / max(bins_n, 1), 'fraction'),
            'seconds_per_answer': (statistics.median(seconds), 's'), 'examples': (len(rows), 'count')}


def main() -> int:
    import torch

    from molmoact_ros.training.data import TrainingDataset

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('dataset', type=Path)
    p.add_argument('--model', action='append', help='sim-lift, tiny or a checkpoint directory (repeatable)')
    p.add_argument('--examples', type=int, default=40)
    p.add_argument('--held-out-fraction', type=float, default=0.1, help="train_molmoact's (default 0.1)")
    p.add_argument('--seed', type=int, default=0, help="train_molmoact's split seed (default 0)")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--quiet', action='store_true')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = TrainingDataset(args.dataset)
    _, held = ds.split(args.held_out_fraction, args.seed)
    pick = np.linspace(0, len(held) - 1, num=min(args.examples, len(held))).astype(int)
    rows = [ds.rows[held[i]] for i in pick]
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    print(f'held_out_examples: {len(rows)} count')
    for model in args.model or ['sim-lift', 'tiny']:
        name = Path(model).name if '/' in model else model
        log(f'{model}:')
        engine = make_engine(model, ds.horizon)
        for key, (value, unit) in evaluate(engine, rows, log).items():
            print(f'{name}_{key}: {value:.4g} {unit}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
