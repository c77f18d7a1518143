"""Property test of the whole execution core: 10,000 random model outputs and states never command
anything outside the limits, and nothing moves while disabled, e-stopped, stale, or from a chunk that
arrived before the last halt.

Seeded NumPy loops over 10,000 random model outputs in all (chunks with normal, huge, NaN and infinite values in
every rotation convention and delta frame; enable / disable / deactivate / e-stop / reset; camera frames
and model silence; measured states that track the commands, jump, or are missing) through an
:class:`ArmExecutor` in each sink mode, checked against an independent model of what is allowed.
"""

from dataclasses import replace

import numpy as np
import pytest

from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.execution import (DeltaFrame, ExecutionQueue, InvalidChunkError, StartMode,
                                          build_timeline)
from molmoact_ros.robot.executor import (ArmExecutor, HoldCommand, JointCommand, PoseCommand, SinkMode,
                                         TwistCommand)
from molmoact_ros.robot.profiles import load_profile
from molmoact_ros.robot.safety import SafetyGovernor, rotation_angle

from robot_test_data import PANDA_READY

#: Random model outputs (chunks, valid or not) over the whole test, split over the three sink modes.
N_MODEL_OUTPUTS = 10_000
PER_MODE = -(-N_MODEL_OUTPUTS // 3)
SCALES = [0.0, 1e-3, 1e-2, 0.05, 0.3, 3.0, 1e3, 1e300]


class Shadow:
    """What the test itself believes is allowed (kept independently of the governor)."""

    def __init__(self, limits):
        self.limits = limits
        self.enabled = False
        self.e_stopped = False
        self.camera_s = None
        self.model_s = None
        self.last_halt_seq = -1
        self.was_blocked = True
        self.hold_owed = False

    def blocked(self, now):
        lim = self.limits
        return (self.e_stopped or not self.enabled or self.camera_s is None or now - self.camera_s > lim.camera_timeout_s
                or self.model_s is None or now - self.model_s > lim.model_timeout_s)


def _random_chunk(rng, now, obs_pose):
    h = int(rng.integers(1, 12))
    scale = SCALES[int(rng.integers(len(SCALES)))]
    dp = rng.normal(size=(h, 3)) * scale
    dr = rng.normal(size=(h, 3)) * (scale if scale < 10 else rng.choice([scale, 1.0]))
    g = rng.uniform(-1.5, 1.5, size=h)
    for array in (dp, dr, g):
        if rng.random() < 0.02:
            array.flat[int(rng.integers(array.size))] = rng.choice([np.nan, np.inf, -np.inf])
    latency = rng.choice([0.0, rng.uniform(0, 0.3), rng.uniform(0.3, 0.6), rng.uniform(0, 3.0), -rng.uniform(0, 3.0)])
    period = float(rng.choice([0.05, 0.1, 0.2]))
    return dict(translation_m=dp, rotation_rad=dr, gripper=g, observation_pose=obs_pose,
                observation_stamp_s=now - latency, step_period_s=period,
                delta_frame=[DeltaFrame.BASE, DeltaFrame.TOOL][int(rng.integers(2))],
                rotation_convention=[RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW,
                                     RotationConvention.ROTATION_VECTOR][int(rng.integers(2))])


def _check_pose_step(pose, previous, limits, tolerance_m=1e-9, tolerance_rad=1e-9):
    assert np.all(np.isfinite(pose))
    step = np.linalg.norm(pose[:3, 3] - previous[:3, 3])
    assert step <= limits.max_step_translation_m + tolerance_m
    assert rotation_angle(previous[:3, :3].T @ pose[:3, :3]) <= limits.max_step_rotation_rad + tolerance_rad
    if limits.in_workspace(previous[:3, 3]):
        assert limits.in_workspace(pose[:3, 3], tolerance_m)
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-9)


@pytest.mark.parametrize('mode', [SinkMode.JOINT_TRAJECTORY, SinkMode.SERVO_POSE, SinkMode.SERVO_TWIST])
def test_random_model_outputs_and_states_never_leave_the_limits(panda_kin, mode):
    rng = np.random.default_rng({SinkMode.JOINT_TRAJECTORY: 11, SinkMode.SERVO_POSE: 12, SinkMode.SERVO_TWIST: 13}[mode])
    profile = load_profile('sim_panda')
    # Short timeouts, so that staleness and stalls happen often in the random time line.
    limits = replace(profile.safety, camera_timeout_s=0.3, model_timeout_s=1.5,
                     max_action_age_s=0.5).with_joint_limits(panda_kin.limits)
    lo, hi = limits.effective_joint_bounds()
    vmax = panda_kin.limits.velocity_max * limits.max_joint_velocity_scale
    governor = SafetyGovernor(limits)
    start_mode = StartMode.OBSERVATION if mode is SinkMode.JOINT_TRAJECTORY else StartMode.ARRIVAL
    executor = ArmExecutor(mode=mode, governor=governor, queue=ExecutionQueue(limits.max_action_age_s, start_mode),
                           gripper=profile.gripper, kinematics=panda_kin)
    shadow = Shadow(limits)
    submitted = {}
    now = 0.0
    q_meas = PANDA_READY.copy()
    prev_q = None          # last commanded joints since the last halt (None: start from measured)
    prev_pose = None
    counts = {'commands': 0, 'holds': 0, 'chunks': 0, 'invalid': 0}

    event = -1
    while counts['chunks'] + counts['invalid'] < PER_MODE:
        event += 1
        now += float(rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.3), rng.uniform(0, 3.0)], p=[0.1, 0.8, 0.08, 0.02]))
        kind = rng.random()
        if kind < 0.06:
            governor.enable(now)
            if not shadow.e_stopped:
                shadow.enabled = True
        elif kind < 0.07:
            governor.disable(now)
            shadow.enabled, shadow.last_halt_seq, shadow.hold_owed = False, event, True
        elif kind < 0.075:
            governor.deactivate(now)
            shadow.enabled, shadow.last_halt_seq, shadow.hold_owed = False, event, True
        elif kind < 0.082:
            governor.e_stop(now)
            shadow.enabled, shadow.e_stopped, shadow.last_halt_seq, shadow.hold_owed = False, True, event, True
        elif kind < 0.11:
            governor.reset_e_stop(now)
            shadow.e_stopped = False
        elif kind < 0.41:
            if rng.random() < 0.97:
                governor.camera_seen(now)
                shadow.camera_s = now
        elif kind < 0.63:
            obs_pose = panda_kin.fk(panda_kin.limits.clip(q_meas)) if rng.random() < 0.98 else \
                np.full((4, 4), np.nan)
            chunk = _random_chunk(rng, now, obs_pose)
            request_id = f'r{event}'
            try:
                timeline = build_timeline(request_id=request_id, **chunk)
            except InvalidChunkError:
                executor.reject_chunk(now)
                shadow.last_halt_seq, shadow.hold_owed = event, True
                counts['invalid'] += 1
            else:
                executor.submit(timeline, now)
                shadow.model_s = now
                # Only a chunk that arrives while nothing blocks may ever fire.
                submitted[request_id] = (event, not shadow.blocked(now))
                counts['chunks'] += 1
        else:
            # Measured state: tracks the last command, or jumps (even a little outside the limits), or is
            # garbage, or missing.
            r = rng.random()
            if r < 0.03:
                q_meas = rng.uniform(panda_kin.limits.position_min - 0.05, panda_kin.limits.position_max + 0.05)
                q_in = q_meas
            elif r < 0.05:
                q_in = np.full(7, np.nan)
            elif r < 0.06:
                q_in = None
            else:
                q_in = q_meas
            blocked = shadow.blocked(now)
            if blocked and not shadow.was_blocked:
                shadow.last_halt_seq, shadow.hold_owed = event, True
            shadow.was_blocked = blocked
            result = executor.tick(now, joint_positions=q_in)
            command = result.command
            # Every halt makes the sink hold, on the first tick after it.
            if shadow.hold_owed:
                assert isinstance(command, HoldCommand), f'event {event}: no hold after a halt'
                shadow.hold_owed = False
            if command is None:
                continue
            if isinstance(command, HoldCommand):
                counts['holds'] += 1
                prev_q = prev_pose = None
                continue
            # A motion command: every gate must be open and the chunk must postdate the last halt.
            assert not blocked, f'event {event}: motion while blocked'
            seq, open_at_arrival = submitted[command.request_id]
            assert open_at_arrival, f'event {event}: a chunk that arrived while halted fired'
            assert seq > shadow.last_halt_seq, f'event {event}: a chunk queued before the last halt fired'
            assert command.gripper is None or limits.gripper_min <= command.gripper <= limits.gripper_max
            assert command.lag_s <= limits.max_action_age_s
            counts['commands'] += 1
            measured_ok = q_in is not None and np.all(np.isfinite(q_in))
            if mode is SinkMode.JOINT_TRAJECTORY:
                meas_pose = panda_kin.fk(np.clip(q_in, lo, hi)) if measured_ok else None
            else:
                meas_pose = panda_kin.fk(panda_kin.limits.clip(q_in)) if measured_ok else None
            reference = prev_pose if prev_pose is not None else meas_pose
            assert reference is not None
            if isinstance(command, JointCommand):
                q = command.positions
                assert np.all(q >= lo - 1e-12) and np.all(q <= hi + 1e-12)
                q_ref = prev_q if prev_q is not None else np.clip(q_in, lo, hi)
                assert command.time_from_start_s > 0
                assert np.all(np.abs(q - q_ref) <= vmax * command.time_from_start_s + 1e-12)
                np.testing.assert_allclose(command.pose, panda_kin.fk(q), atol=1e-12)
                _check_pose_step(command.pose, reference, limits)
                prev_q, prev_pose = q.copy(), command.pose
                q_meas = q.copy()
            elif isinstance(command, PoseCommand):
                _check_pose_step(command.pose, reference, limits)
                prev_pose = command.pose
            else:
                assert isinstance(command, TwistCommand)
                _check_pose_step(command.pose, reference, limits)
                dt = command.duration_s
                assert np.linalg.norm(command.linear_m_s) * dt <= limits.max_step_translation_m + 1e-9
                assert np.linalg.norm(command.angular_rad_s) * dt <= limits.max_step_rotation_rad + 1e-9
                prev_pose = command.pose

    # The run exercised every path.
    assert counts['commands'] > 500, counts
    assert counts['holds'] > 50, counts
    assert counts['invalid'] > 10, counts
    clips = governor.clip_counts
    assert clips['step_translation'] > 0 and clips['step_rotation'] > 0 and clips['workspace'] > 0
    if mode is SinkMode.JOINT_TRAJECTORY:
        assert clips['joint_position'] + clips['joint_velocity'] > 0
    halts = governor.halt_counts
    causes = ['e_stop', 'disabled', 'deactivated', 'stale_camera', 'stalled_model', 'invalid_action']
    if start_mode is StartMode.ARRIVAL:  # on the observation's timeline a step is never later than a period
        causes.append('action_too_old')
    for cause in causes:
        assert halts[cause] > 0, (cause, halts)
