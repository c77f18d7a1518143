#!/usr/bin/env python3
"""Staged engine costs on the tiny random-weight model (one run; ratios measured within the run).

Prints, as ``name: value unit`` lines:

* ``staged_over_monolithic``: perceive + plan + act time / one monolithic constrained generation of the
  same answer (target <= 1.05: the stages share one KV cache);
* ``constraint_overhead_per_token``: extra time per decoded token from the grammar constraint, relative
  to the model step alone, over the same token sequence (target <= 5 %);
* ``steering_prefix_over_full_step`` / ``steering_drawn_over_full_step``: acting on an edited trace /
  a full perceive + plan + act step (target <= 0.25 for the re-plan).

The random model writes free text until each sentence budget runs out; ``--free-tokens`` (default 16) sets
the budget to about the length of the released sentences.

    python bench/engine_bench.py [--runs 5] [--free-tokens 16] [--horizon 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molmoact_ros.model.loading import LoadOptions, load_model
from molmoact_ros.model.processing import MolmoActProcessor
from molmoact_ros.model.tiny import save_tiny_checkpoint
from molmoact_ros.reasoning.engine import EngineConfig, MolmoActEngine, Observation


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--free-tokens', type=int, default=16)
    parser.add_argument('--horizon', type=int, default=1)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_checkpoint(Path(tmp) / 'tiny')
        model = load_model(path, LoadOptions(dtype='float32', device='cpu'))
        processor = MolmoActProcessor.from_pretrained(path)
    engine = MolmoActEngine(model, processor, EngineConfig(max_free_tokens=args.free_tokens, horizon=args.horizon))
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    obs = Observation(image)
    instruction = 'put the red block in the bowl'
    engine.run(obs, instruction)  # warm-up

    staged_s = median_time(lambda: engine.run(obs, instruction), args.runs)
    mono_ids = engine.generate_answer(obs, instruction)
    mono_s = median_time(lambda: engine.generate_answer(obs, instruction), args.runs)

    # Constraint overhead: the same token sequence decoded step by step, with and without the constraint.
    session, _ = engine._start_session('bench', obs, instruction, engine.config.prompt_variant, image)
    prompt = list(session.prompt_ids)
    cache0_len = len(prompt)
    constraint = engine._constraint('answer')

    def steps():
        """The engine's decode loop over the same tokens, timing the constraint and the model step apart."""
        session.cache.crop(-(session.cache.get_seq_length() - cache0_len))
        constraint.reset()
        logits = session.data['next_logits'].clone()
        buf = torch.tensor([prompt + mono_ids], dtype=torch.long)
        t_constraint = t_model = 0.0
        for i in range(len(mono_ids)):
            start = time.perf_counter()
            constraint(buf[:, :cache0_len + i], logits)
            middle = time.perf_counter()
            out = engine.model(input_ids=buf[:, cache0_len + i:cache0_len + i + 1], cache=session.cache,
                               use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
            t_constraint += middle - start
            t_model += time.perf_counter() - middle
        return t_constraint / len(mono_ids), t_model / len(mono_ids)

    measured = [steps() for _ in range(max(1, args.runs // 2))]
    constraint_s = statistics.median(m[0] for m in measured)
    plain = statistics.median(m[1] for m in measured)
    engine.release('bench')

    def full_step():
        return engine.run(obs, instruction)

    full_s = median_time(full_step, args.runs)
    edited = [(40, 200), (90, 150), (140, 100)]

    def steer(mode):
        def fn():
            p = engine.perceive(obs, instruction)
            engine.plan(p.request_id)
            start = time.perf_counter()
            engine.act(p.request_id, trace_points=edited, steering=mode)
            return time.perf_counter() - start
        return statistics.median(fn() for _ in range(args.runs))

    prefix_s = steer('prefix')
    drawn_s = steer('drawn')
    print(f'# tiny model, CPU, {len(mono_ids)} answer tokens (free-text budget {args.free_tokens}, '
          f'horizon {args.horizon}), {args.runs} runs, medians')
    print(f'staged_step: {staged_s * 1e3:.1f} ms')
    print(f'monolithic_step: {mono_s * 1e3:.1f} ms')
    print(f'staged_over_monolithic: {staged_s / mono_s:.3f} ratio')
    print(f'decode_model_step_per_token: {plain * 1e3:.2f} ms')
    print(f'constraint_per_token: {constraint_s * 1e6:.0f} us')
    print(f'constraint_overhead_per_token: {100 * constraint_s / plain:.1f} %')
    print(f'steering_prefix_act: {prefix_s * 1e3:.1f} ms')
    print(f'steering_drawn_act: {drawn_s * 1e3:.1f} ms')
    print(f'steering_prefix_over_full_step: {prefix_s / full_s:.3f} ratio')
    print(f'steering_drawn_over_full_step: {drawn_s / full_s:.3f} ratio')


if __name__ == '__main__':
    main()
