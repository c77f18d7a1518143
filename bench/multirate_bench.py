#!/usr/bin/env python3
"""Multi-rate execution on the tiny model: how much faster actions come when the decoder acts on each new
frame with the newest trace (drawn mode, ``MolmoActEngine.act_on_observation``) than when every chunk
needs the full pipeline (perceive -> plan -> act on the frame).

The engine alone, one request at a time, on the same frames (96x72, as the pipeline feeds the model with
max_image_side_px 96) and the same bounded free text as the pipeline tests:

    full rate       = 1 / median(perceive + plan + act)          (one chunk per trace)
    multi-rate      = 1 / median(act_on_observation)             (one chunk per frame, the trace reused)

    . scripts/ros_env.sh && python bench/multirate_bench.py [--steps 8] [--free-tokens 3]

Prints ``multirate_action_rate_over_full_rate: X x`` (target >= 5 on the tiny model), and a breakdown:
median prefill time, tokens and decode passes (forward passes; fewer than tokens with the engine's grammar
fast-forwarding, ``EngineConfig.fast_forward``) of each path. ``--any-action-split`` admits any token split of
the action values (``EngineConfig.canonical_actions=False``). ``--no-fast-forward`` measures one pass per
token, for comparison.

Why the ratio is bounded: both paths pay one prefill (image preprocessing ~8 ms + ViT and prompt ~22 ms,
about seven decode passes' worth on the tiny model); a full step then makes ~155 decode passes (100 depth
codes, the trace, the actions) and a drawn act ~14 (the action list in its canonical tokenization, ~4 tokens
per value of which about half are forced; ~30 with ``--any-action-split``), so the ratio is about
(7 + 155) / (7 + 14) = 7.7 (4.8 with any split). Faster decode passes alone lower it; a cheaper prefill or
fewer passes per action raise it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--free-tokens', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-fast-forward', dest='fast_forward', action='store_false',
                        help='one forward pass per decoded token (the engine default fast-forwards forced runs)')
    parser.add_argument('--any-action-split', dest='canonical_actions', action='store_false',
                        help='admit any token split of the action values (the default: the tokenizer\'s own)')
    args = parser.parse_args()

    import numpy as np

    from molmoact_ros.model.loading import LoadOptions, load_model
    from molmoact_ros.model.processing import MolmoActProcessor
    from molmoact_ros.model.tiny import save_tiny_checkpoint
    from molmoact_ros.reasoning.engine import EngineConfig, MolmoActEngine, Observation

    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_checkpoint(Path(tmp) / 'tiny')
        model = load_model(path, LoadOptions(dtype='float32', device=args.device))
        engine = MolmoActEngine(model, MolmoActProcessor.from_pretrained(path),
                                EngineConfig(max_free_tokens=args.free_tokens, fast_forward=args.fast_forward,
                                             canonical_actions=args.canonical_actions))
    rng = np.random.default_rng(0)
    frames = [Observation(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)) for _ in range(args.steps + 1)]
    instruction = 'put the red block in the bowl'
    engine.run(frames[0], instruction)  # warm-up
    engine.act_on_observation(frames[0], instruction, [(10, 200), (120, 100)])
    full, fast, trace = [], [], None
    full_timings, fast_timings = [], []
    for frame in frames[1:]:
        start = time.perf_counter()
        p = engine.perceive(frame, instruction)
        t = engine.plan(p.request_id)
        a = engine.act(p.request_id)
        full.append(time.perf_counter() - start)
        trace = t.trace.points
        full_timings.append((p.timing, t.timing, a.timing))
    for frame in frames[1:]:
        start = time.perf_counter()
        o = engine.act_on_observation(frame, instruction, trace)
        fast.append(time.perf_counter() - start)
        fast_timings.append((o.timing,))
    full_s, fast_s = statistics.median(full), statistics.median(fast)
    med = statistics.median
    for name, timings in (('full', full_timings), ('multi-rate', fast_timings)):
        stages = ' + '.join(f'{s.stage} {s.generated_tokens}/{s.decode_passes}' for s in timings[len(timings) // 2])
        print(f'{name} breakdown: prefill {med(sum(s.prefill_s for s in ts) for ts in timings) * 1e3:.1f} ms, '
              f'decode {med(sum(s.decode_s for s in ts) for ts in timings) * 1e3:.1f} ms, '
              f'tokens {med(sum(s.generated_tokens for s in ts) for ts in timings):.0f}, '
              f'decode passes {med(sum(s.decode_passes for s in ts) for ts in timings):.0f} '
              f'(one run, tokens/passes: {stages})')
    print(f'full pipeline per chunk: {full_s * 1e3:.1f} ms (median of {len(full)}; perceive + plan + act)')
    print(f'multi-rate per chunk: {fast_s * 1e3:.1f} ms (median of {len(fast)}; act_on_observation, drawn)')
    print(f'multirate_action_rate_over_full_rate: {full_s / fast_s:.2f} x')


if __name__ == '__main__':
    main()
