"""Training examples/s of train_molmoact on this machine: the restricted-vocabulary step vs the naive one.

    python bench/train_bench.py [--dataset DIR] [--steps 3] [--batch-size 8] [--threads 2]

Both steps train the same from-scratch model (ModelSpec defaults unless overridden) on the same batches:
``restricted`` (train_molmoact's default: logits at the answer positions over the answer-token rows only,
exact full-vocabulary loss, trained embedding rows only in the optimizer) and ``naive`` (the model's own loss:
logits at every position over all 152,064 rows, every vocabulary row in AdamW). Without ``--dataset`` a
synthetic dataset in the builder's format is written to a temporary directory (answers with an 8x7 chunk).
Prints ``name: value unit`` lines.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'src' / 'molmoact_ros'))


def measure(trainer, steps: int) -> float:
    trainer.train_step()  # warm-up (allocations, first-call costs)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    return trainer.config.batch_size / statistics.median(times)


def main() -> int:
    import torch

    from molmoact_ros.training.synthetic import write_synthetic_dataset
    from molmoact_ros.training.train import ModelSpec, TrainConfig, Trainer

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', type=Path)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--llm-width', type=int, default=ModelSpec().llm_width)
    p.add_argument('--llm-layers', type=int, default=ModelSpec().llm_layers)
    p.add_argument('--image-size', type=int, default=ModelSpec().image_size)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix='train_bench_'))
    dataset = args.dataset or write_synthetic_dataset(tmp / 'ds', episodes=4, steps=12, horizon=8, width=320,
                                                      height=240)
    spec = ModelSpec(llm_width=args.llm_width, llm_layers=args.llm_layers, image_size=args.image_size)
    rates = {}
    for mode in ('restricted', 'naive'):
        cfg = TrainConfig(dataset=dataset, output=tmp / mode, spec=spec, steps=args.steps + 10,
                          batch_size=args.batch_size, progress=False, eval_every=0, checkpoint_every=0,
                          loss=mode, threads=args.threads, trajectory_fraction=0.3, held_out_fraction=0.0)
        trainer = Trainer(cfg, log=lambda m: None)
        n = sum(p.numel() for p in trainer.trainable_parameters())
        rates[mode] = measure(trainer, args.steps)
        print(f'{mode}_trainable_parameters: {n} parameters')
        print(f'{mode}_train_examples_per_s: {rates[mode]:.3f} examples/s')
    print(f'restricted_over_naive: {rates["restricted"] / rates["naive"]:.2f} x')
    print(f'threads: {args.threads} threads')
    return 0


if __name__ == '__main__':
    sys.exit(main())
