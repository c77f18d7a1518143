"""Dataset build time per 1,000 steps (molmoact_ros.training.build) on simulated episodes.

    MOLMOACT_VENV=.venv . scripts/ros_env.sh && python bench/dataset_bench.py [--episodes 4] [--steps 40]

Records ``--episodes`` episodes of ``--steps`` camera frames of the simulated Panda (320x240 RGB-D, the
topics sim_arm publishes) into MCAP files, trains the small depth tokenizer once (``--tokenizer-steps``,
timed on its own), then builds the dataset with that tokenizer and prints ``name: value unit`` lines:
the build time per 1,000 steps excludes recording and tokenizer training (a dataset trains it once).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'src' / 'molmoact_ros' / 'test' / 'training'))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--episodes', type=int, default=4)
    p.add_argument('--steps', type=int, default=40)
    p.add_argument('--tokenizer-steps', type=int, default=20)
    p.add_argument('--horizon', type=int, default=8)
    args = p.parse_args()
    from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig
    from sim_episodes import EpisodeSpec, record_sim_episode
    from molmoact_ros.training.build import BuildOptions, build_dataset
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / 'eps').mkdir()
        t0 = time.perf_counter()
        with PandaSim(SimConfig()) as sim:
            for i in range(args.episodes):
                record_sim_episode(sim, tmp / 'eps' / f'ep{i}.mcap', EpisodeSpec(steps=args.steps, seed=i,
                                   close_gripper_at=args.steps // 2))
        t_rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = build_dataset(BuildOptions(episodes=tmp / 'eps', out_dir=tmp / 'ds0', horizon=args.horizon,
                                           train_depth_tokenizer=True, tokenizer_steps=args.tokenizer_steps,
                                           progress=False), log=lambda m: None)
        t_first = time.perf_counter() - t0
        tok_s = first.tokenizer['training']['seconds']
        report = build_dataset(BuildOptions(episodes=tmp / 'eps', out_dir=tmp / 'ds', horizon=args.horizon,
                                            depth_tokenizer=tmp / 'ds0' / 'meta' / 'depth_tokenizer.pt',
                                            progress=False), log=lambda m: None)
        print(f'episodes: {report.episodes} episodes')
        print(f'examples: {report.examples} steps')
        print(f'recording: {t_rec:.1f} s')
        print(f'tokenizer training: {tok_s:.1f} s ({args.tokenizer_steps} steps)')
        print(f'first build with tokenizer training: {t_first:.1f} s')
        print(f'build time: {report.seconds:.2f} s')
        print(f'build time per 1000 steps: {report.seconds_per_1000_steps:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
