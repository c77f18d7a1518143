#!/usr/bin/env python3
"""IK and FK cost of the command sink's kinematics (Pinocchio, damped least squares) on a robot profile.

Workload: what a ``joint_trajectory`` sink does per action step. Random 8-step chunks of end-effector
deltas (translation up to the profile's per-step limit, rotation up to its limit) are applied from random
start configurations around the arm's ready pose; each step is solved seeded from the previous step's
solution, as the sink does. A second figure solves random reachable targets from seeds up to 0.3 rad
away (a cold start, e.g. after a halt).

Prints, as ``name: value unit`` lines:

* ``ik_time_per_step_ms_median`` / ``ik_time_per_step_ms_p95``: one IK solve per action step;
* ``ik_success_rate``: converged steps (1e-4 m, 1e-3 rad) / steps;
* ``ik_iterations_median``;
* ``ik_cold_success_rate`` / ``ik_cold_time_ms_median``: targets from seeds up to 0.3 rad away;
* ``executor_tick_ms_median``: a whole executor tick that issues a joint command (safety clamps, IK,
  joint clamps, FK checks);
* ``fk_time_us``: one end-effector FK.

    python bench/ik_bench.py [--profile sim_panda] [--chunks 300] [--seed 0]

Defaults to the sim_panda profile and its shipped URDF (src/molmoact_bringup/urdf/panda.urdf).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from transforms3d.axangles import axangle2mat

from molmoact_ros.robot.execution import ExecutionQueue, build_timeline
from molmoact_ros.robot.executor import ArmExecutor, JointCommand
from molmoact_ros.robot.kinematics import ArmKinematics
from molmoact_ros.robot.profiles import load_profile, resolve_urdf_file
from molmoact_ros.robot.safety import SafetyGovernor

#: Franka's ready configuration; other arms start from the middle of their joint ranges.
READY = {'sim_panda': [0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398]}


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--profile', default='sim_panda', help='robot profile with a urdf_file')
    parser.add_argument('--chunks', type=int, default=300, help='8-step chunks to solve')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    profile = load_profile(args.profile)
    kin = ArmKinematics.from_urdf_file(str(resolve_urdf_file(profile)), base_frame=profile.frames.base,
                                       ee_frame=profile.frames.ee, joint_names=profile.joint_names)
    lim = kin.limits
    ready = np.array(READY.get(profile.name, (lim.position_min + lim.position_max) / 2.0))
    rng = np.random.default_rng(args.seed)
    max_dp = profile.safety.max_step_translation_m / np.sqrt(3.0)
    max_dr = profile.safety.max_step_rotation_rad

    # Warm up (first calls allocate).
    for _ in range(20):
        kin.ik(kin.fk(ready), ready)

    # Chunk-following IK, seeded from the previous step.
    times, iterations, converged = [], [], 0
    steps = 0
    for _ in range(args.chunks):
        q = lim.clip(ready + rng.uniform(-0.5, 0.5, kin.dof))
        T = kin.fk(q)
        for _ in range(8):
            axis = rng.normal(size=3)
            target = T.copy()
            target[:3, :3] = axangle2mat(axis / np.linalg.norm(axis), rng.uniform(0, max_dr)) @ T[:3, :3]
            target[:3, 3] += rng.uniform(-max_dp, max_dp, 3)
            result = kin.ik(target, q)
            times.append(result.solve_time_s)
            iterations.append(result.iterations)
            converged += result.converged
            steps += 1
            q = result.q
            T = kin.fk(q)

    # Cold starts: random reachable targets from seeds up to 0.3 rad away.
    cold_times, cold_ok = [], 0
    n_cold = args.chunks
    for _ in range(n_cold):
        q_true = rng.uniform(lim.position_min, lim.position_max)
        seed = lim.clip(q_true + rng.uniform(-0.3, 0.3, kin.dof))
        result = kin.ik(kin.fk(q_true), seed)
        cold_times.append(result.solve_time_s)
        cold_ok += result.converged

    # FK.
    qs = [lim.clip(ready + rng.uniform(-0.5, 0.5, kin.dof)) for _ in range(2000)]
    start = time.perf_counter()
    for q in qs:
        kin.fk(q)
    fk_us = (time.perf_counter() - start) / len(qs) * 1e6

    # Whole executor ticks (joint_trajectory sink), one command per step.
    limits = profile.safety.with_joint_limits(lim)
    governor = SafetyGovernor(limits)
    executor = ArmExecutor(mode='joint_trajectory', governor=governor,
                           queue=ExecutionQueue(limits.max_action_age_s, 'observation'),
                           gripper=profile.gripper, kinematics=kin)
    governor.enable(0.0)
    tick_times = []
    now = 0.0
    period = profile.step_period_s
    q = ready.copy()
    for _ in range(min(args.chunks, 100)):
        governor.camera_seen(now)
        timeline = build_timeline(rng.uniform(-max_dp, max_dp, (8, 3)), rng.uniform(-0.05, 0.05, (8, 3)),
                                  rng.uniform(-1, 1, 8), observation_pose=kin.fk(q), observation_stamp_s=now,
                                  step_period_s=period, delta_frame=profile.delta_frame,
                                  rotation_convention=profile.rotation_convention)
        executor.submit(timeline, now)
        for i in range(8):
            t = now + i * period
            governor.camera_seen(t)
            start = time.perf_counter()
            result = executor.tick(t, joint_positions=q)
            elapsed = time.perf_counter() - start
            if isinstance(result.command, JointCommand):
                tick_times.append(elapsed)
                q = result.command.positions
        now += 8 * period + 0.5 * period  # the next chunk arrives after this one ends

    print(f'# {profile.name}: {kin.dof}-DoF {profile.frames.base} -> {profile.frames.ee}; '
          f'{steps} chunk steps, {n_cold} cold solves, {len(tick_times)} executor ticks')
    print(f'ik_time_per_step_ms_median: {statistics.median(times) * 1e3:.3f} ms')
    print(f'ik_time_per_step_ms_p95: {percentile(times, 95) * 1e3:.3f} ms')
    print(f'ik_success_rate: {converged / steps:.4f} ratio')
    print(f'ik_iterations_median: {statistics.median(iterations):.0f} iterations')
    print(f'ik_cold_success_rate: {cold_ok / n_cold:.4f} ratio')
    print(f'ik_cold_time_ms_median: {statistics.median(cold_times) * 1e3:.3f} ms')
    print(f'executor_tick_ms_median: {statistics.median(tick_times) * 1e3:.3f} ms')
    print(f'fk_time_us: {fk_us:.1f} us')


if __name__ == '__main__':
    main()
