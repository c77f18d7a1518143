#!/usr/bin/env python3
"""Costs of the simulated arm (molmoact_bringup.sim.panda_sim) on this machine's CPU.

Prints, as ``name: value unit`` lines:

* ``import``: importing the sim core (robosuite, MuJoCo, numba, ...);
* ``make_and_reset``: building the scene and the offscreen renderer, then one reset;
* ``reset``: a reset of a built scene;
* ``physics_steps_per_s``: 2 ms physics steps with the arm's trajectory follower and PD, no rendering;
* ``render_rgbd``: one RGB + metric depth frame at the chosen size;
* ``render_depth_only``: the depth (segmentation) pass alone;
* ``control_steps_per_s_with_render``: 20 Hz control steps (50 physics steps each) rendering a frame
  every step, i.e. the rate a gym-style loop reaches;
* ``sim_realtime_factor_at_camera_hz``: simulated seconds per wall second when rendering at
  ``--camera-hz`` (what ``sim_arm`` with that ``camera_rate_hz`` can sustain; >= 1 keeps up with real time).

    python bench/sim_bench.py [--width 320 --height 240] [--runs 10] [--camera-hz 10]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--width', type=int, default=320)
    ap.add_argument('--height', type=int, default=240)
    ap.add_argument('--runs', type=int, default=10)
    ap.add_argument('--camera-hz', type=float, default=10.0)
    ap.add_argument('--shadows', type=int, default=1)
    ap.add_argument('--multisamples', type=int, default=0)
    args = ap.parse_args()

    t = time.perf_counter()
    from molmoact_bringup.sim import franka
    from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig
    from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, TrajectoryPoint
    print(f'import: {time.perf_counter() - t:.2f} s')

    t = time.perf_counter()
    sim = PandaSim(SimConfig(image_width_px=args.width, image_height_px=args.height,
                             render_shadows=bool(args.shadows), render_multisamples=args.multisamples))
    print(f'make_and_reset: {time.perf_counter() - t:.2f} s')
    try:
        t = time.perf_counter()
        sim.reset()
        print(f'reset: {(time.perf_counter() - t) * 1e3:.1f} ms')

        target = sim.arm_positions_rad + 0.3
        sim.command_trajectory(JointTrajectoryCommand(franka.ARM_JOINT_NAMES, (TrajectoryPoint(2.0, tuple(target)),)))
        t = time.perf_counter()
        sim.step(1000)
        print(f'physics_steps_per_s: {1000 / (time.perf_counter() - t):.0f} steps/s')

        sim.render()  # warm-up
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sim.render()
            times.append(time.perf_counter() - t)
        render_s = statistics.median(times)
        print(f'render_rgbd: {render_s * 1e3:.1f} ms ({args.width}x{args.height})')
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sim.render_segmentation()
            times.append(time.perf_counter() - t)
        print(f'render_depth_only: {statistics.median(times) * 1e3:.1f} ms')

        steps = 50  # 20 Hz control at 2 ms physics
        t = time.perf_counter()
        for _ in range(args.runs):
            sim.step(steps)
            sim.render()
        per = (time.perf_counter() - t) / args.runs
        print(f'control_steps_per_s_with_render: {1 / per:.1f} steps/s (20 Hz control, one frame per step)')

        sim_s = 2.0
        frames = int(sim_s * args.camera_hz)
        chunk = max(1, round(1.0 / args.camera_hz / sim.physics_step_s))
        t = time.perf_counter()
        for _ in range(frames):
            sim.step(chunk)
            sim.render()
        print(f'sim_realtime_factor_at_camera_hz: {frames * chunk * sim.physics_step_s / (time.perf_counter() - t):.2f} '
              f'x (camera at {args.camera_hz:g} Hz)')
    finally:
        sim.close()


if __name__ == '__main__':
    main()
