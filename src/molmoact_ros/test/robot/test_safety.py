"""SafetyLimits validation and the SafetyGovernor state machine and clamps (unit + hypothesis)."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from transforms3d.axangles import axangle2mat

from molmoact_ros.robot.safety import (ClipKind, HaltCause, JointLimits, SafetyGovernor, SafetyLimits,
                                       rotation_angle)

LIMITS = SafetyLimits(max_step_translation_m=0.02, max_step_rotation_rad=0.1,
                      workspace_min_m=(0.2, -0.4, 0.0), workspace_max_m=(0.8, 0.4, 0.6),
                      gripper_min=0.0, gripper_max=0.08, max_action_age_s=0.5, camera_timeout_s=0.2,
                      model_timeout_s=2.0)
JOINTS = JointLimits(names=('a', 'b', 'c'), position_min=[-1.0, -2.0, 0.0], position_max=[1.0, 2.0, 0.04],
                     velocity_max=[1.0, 2.0, 0.1])


def pose(p, R=None):
    T = np.eye(4)
    T[:3, 3] = p
    if R is not None:
        T[:3, :3] = R
    return T


def ready(gov, now=0.0):
    """Enable with fresh camera and model at ``now``."""
    gov.enable(now)
    gov.camera_seen(now)
    gov.model_seen(now)
    assert gov.gate(now) is None


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize('change, message', [
    (dict(max_step_translation_m=0.0), 'max_step_translation_m must be a positive number'),
    (dict(max_step_rotation_rad=4.0), 'max_step_rotation_rad must be <= pi'),
    (dict(max_action_age_s=float('nan')), 'max_action_age_s must be a positive number'),
    (dict(workspace_min_m=(1.0, 0.0, 0.0)), 'workspace_min_m .* must be <= workspace_max_m'),
    (dict(workspace_max_m=(1.0, 0.0)), 'workspace_max_m must be three finite numbers'),
    (dict(gripper_min=0.1), 'gripper_min 0.1 > gripper_max'),
    (dict(max_joint_velocity_scale=1.5), r'max_joint_velocity_scale must be in \(0, 1\]'),
    (dict(joint_position_margin=-0.1), 'joint_position_margin must be >= 0'),
])
def test_limits_validation(change, message):
    with pytest.raises(ValueError, match=message):
        replace(LIMITS, **change)


def test_joint_limits_validation():
    with pytest.raises(ValueError, match='lower limit above upper limit'):
        JointLimits(names=('a',), position_min=[1.0], position_max=[0.0], velocity_max=[1.0])
    with pytest.raises(ValueError, match='velocity limit must be positive'):
        JointLimits(names=('a',), position_min=[0.0], position_max=[1.0], velocity_max=[0.0])
    with pytest.raises(ValueError, match='must have 1 values'):
        JointLimits(names=('a',), position_min=[0.0, 1.0], position_max=[1.0], velocity_max=[1.0])
    assert JOINTS.contains([0, 0, 0.02]) and not JOINTS.contains([0, 0, 0.05])
    # A margin never inverts a range narrower than twice the margin.
    lo, hi = replace(LIMITS, joint_position_margin=0.05, joint_limits=JOINTS).effective_joint_bounds()
    np.testing.assert_allclose(lo, [-0.95, -1.95, 0.02])
    np.testing.assert_allclose(hi, [0.95, 1.95, 0.02])


# ---------------------------------------------------------------- state machine

def test_starts_disabled_and_every_gate_blocks():
    gov = SafetyGovernor(LIMITS)
    assert not gov.enabled and gov.gate(0.0) is HaltCause.DISABLED
    assert gov.enable(0.0)
    assert gov.gate(0.0) is HaltCause.STALE_CAMERA  # no frame yet
    gov.camera_seen(0.0)
    assert gov.gate(0.0) is HaltCause.STALLED_MODEL  # no model output yet
    gov.model_seen(0.0)
    assert gov.gate(0.1) is None
    assert gov.gate(0.25) is HaltCause.STALE_CAMERA  # 0.25 s since the last frame > 0.2 s
    gov.camera_seen(0.3)
    assert gov.gate(0.3) is None
    assert gov.gate(2.1) is HaltCause.STALE_CAMERA
    gov.camera_seen(2.15)
    assert gov.gate(2.15) is HaltCause.STALLED_MODEL
    assert gov.halt_counts[HaltCause.STALE_CAMERA] == 3  # at enable (no frame yet), at 0.25 and at 2.1
    assert gov.halt_counts[HaltCause.STALLED_MODEL] == 2  # before the first output, and at 2.15


def test_e_stop_latches_until_reset_and_then_stays_disabled():
    gov = SafetyGovernor(LIMITS)
    ready(gov)
    gov.e_stop(0.1)
    assert gov.e_stopped and not gov.enabled
    assert not gov.enable(0.2)  # refused while latched
    assert gov.gate(0.2) is HaltCause.E_STOP
    gov.reset_e_stop(0.3)
    assert gov.gate(0.3) is HaltCause.DISABLED  # reset alone does not resume
    assert gov.halt_counts[HaltCause.DISABLED] == 0  # and is not a new halt
    assert gov.enable(0.4)
    gov.camera_seen(0.4)
    assert gov.gate(0.4) is None
    assert gov.halt_counts[HaltCause.E_STOP] == 1


def test_every_halt_flushes_and_requests_one_hold():
    gov = SafetyGovernor(LIMITS)
    flushed = []
    gov.add_flush_hook(lambda: flushed.append(True))
    ready(gov)
    assert not gov.consume_hold_request()
    for action, cause in [(gov.disable, HaltCause.DISABLED), (gov.deactivate, HaltCause.DEACTIVATED),
                          (gov.e_stop, HaltCause.E_STOP)]:
        flushed.clear()
        action(1.0)
        assert flushed == [True]
        assert gov.last_halt_cause is cause and gov.last_halt_time_s == 1.0
        assert gov.consume_hold_request()
        assert not gov.consume_hold_request()  # exactly once
    gov.reset_e_stop(2.0)
    ready(gov, 2.0)
    flushed.clear()
    assert gov.gate(2.5) is HaltCause.STALE_CAMERA  # a gate closing halts too
    assert flushed == [True] and gov.consume_hold_request()
    assert gov.gate(2.6) is HaltCause.STALE_CAMERA  # still closed: no second halt
    assert flushed == [True] and not gov.consume_hold_request()


def test_a_gate_closing_after_a_per_step_halt_still_flushes():
    gov = SafetyGovernor(LIMITS)
    flushed = []
    gov.add_flush_hook(lambda: flushed.append(True))
    ready(gov)
    gov.halt(HaltCause.IK_FAILURE, 0.1)   # per step: the gates stay open
    assert gov.gate(0.1) is None
    gov.halt(HaltCause.IK_FAILURE, 0.15)
    flushed.clear()
    assert gov.gate(0.5) is HaltCause.STALE_CAMERA  # no gate check since the per-step halt
    assert flushed == [True]


def test_action_lag():
    gov = SafetyGovernor(LIMITS)
    assert gov.check_action_lag(0.5, 1.0)
    assert not gov.check_action_lag(0.51, 1.0)
    assert not gov.check_action_lag(float('nan'), 1.0)
    assert gov.halt_counts[HaltCause.ACTION_TOO_OLD] == 2
    assert gov.consume_hold_request()


def test_diagnostics_snapshot():
    gov = SafetyGovernor(LIMITS)
    ready(gov)
    gov.clamp_gripper(1.0)
    gov.e_stop(3.0)
    d = gov.diagnostics()
    assert d.e_stopped and not d.enabled and d.halted_cause is HaltCause.E_STOP
    assert d.last_halt_cause is HaltCause.E_STOP and d.last_halt_time_s == 3.0
    assert d.clip_counts[ClipKind.GRIPPER] == 1 and d.halt_counts[HaltCause.E_STOP] == 1
    gov.clamp_gripper(1.0)
    assert d.clip_counts[ClipKind.GRIPPER] == 1  # a snapshot, not a view


# ---------------------------------------------------------------- end-effector clamp

unit = st.tuples(*[st.floats(-1, 1)] * 3).map(np.array).filter(lambda v: np.linalg.norm(v) > 1e-3)
inside = st.tuples(st.floats(0.2, 0.8), st.floats(-0.4, 0.4), st.floats(0.0, 0.6)).map(np.array)
anything = st.tuples(*[st.one_of(st.floats(-1e6, 1e6), st.floats(-2, 2))] * 3).map(np.array)


@settings(max_examples=300, deadline=None)
@given(p_prev=inside, p_target=anything, axis_prev=unit, angle_prev=st.floats(0, math.pi),
       axis=unit, angle=st.floats(0, math.pi))
def test_ee_clamp_respects_every_limit(p_prev, p_target, axis_prev, angle_prev, axis, angle):
    gov = SafetyGovernor(LIMITS)
    R_prev = axangle2mat(axis_prev, angle_prev)
    previous = pose(p_prev, R_prev)
    target = pose(p_target, axangle2mat(axis, angle) @ R_prev)
    decision = gov.clamp_ee_step(target, previous, 0.0)
    out = decision.pose
    assert decision.halt is None
    assert np.linalg.norm(out[:3, 3] - p_prev) <= LIMITS.max_step_translation_m
    assert rotation_angle(R_prev.T @ out[:3, :3]) <= LIMITS.max_step_rotation_rad + 1e-12
    assert LIMITS.in_workspace(out[:3, 3])
    np.testing.assert_allclose(out[:3, :3] @ out[:3, :3].T, np.eye(3), atol=1e-12)
    # Untouched when already within the limits; otherwise the direction is kept.
    step = np.clip(p_target, LIMITS.workspace_min_m, LIMITS.workspace_max_m) - p_prev
    if ClipKind.STEP_TRANSLATION in decision.clipped:
        assert np.dot(out[:3, 3] - p_prev, step) >= 0
        assert np.linalg.norm(out[:3, 3] - p_prev) == pytest.approx(LIMITS.max_step_translation_m, rel=1e-6)
    elif ClipKind.WORKSPACE not in decision.clipped:
        np.testing.assert_allclose(out[:3, 3], p_target, atol=1e-12)
    if angle <= LIMITS.max_step_rotation_rad - 1e-9:  # (at the limit itself rounding may clip)
        assert ClipKind.STEP_ROTATION not in decision.clipped
        np.testing.assert_allclose(out[:3, :3], target[:3, :3], atol=1e-9)
    elif angle < math.pi - 1e-6:
        # Clipped about the same axis.
        R_step = R_prev.T @ out[:3, :3]
        R_want = R_prev.T @ target[:3, :3]
        w_out = np.array([R_step[2, 1] - R_step[1, 2], R_step[0, 2] - R_step[2, 0], R_step[1, 0] - R_step[0, 1]])
        w_want = np.array([R_want[2, 1] - R_want[1, 2], R_want[0, 2] - R_want[2, 0], R_want[1, 0] - R_want[0, 1]])
        assert np.dot(w_out, w_want) > 0


@settings(max_examples=200, deadline=None)
@given(p_prev=anything, p_target=anything)
def test_from_outside_the_box_it_only_moves_towards_it(p_prev, p_target):
    gov = SafetyGovernor(LIMITS)
    out = gov.clamp_ee_step(pose(p_target), pose(p_prev), 0.0).pose

    def dist(p):
        return np.linalg.norm(p - np.clip(p, LIMITS.workspace_min_m, LIMITS.workspace_max_m))
    assert dist(out[:3, 3]) <= dist(p_prev) + 1e-9
    assert np.linalg.norm(out[:3, 3] - p_prev) <= LIMITS.max_step_translation_m


def test_ee_clamp_rejects_non_finite_and_non_rotations():
    gov = SafetyGovernor(LIMITS)
    prev = pose([0.5, 0.0, 0.3])
    for bad in [pose([np.nan, 0, 0]), pose([0.5, 0, 0.3], np.diag([1.0, 1.0, -1.0])),
                pose([0.5, 0, 0.3], 2 * np.eye(3)), np.eye(3)]:
        decision = gov.clamp_ee_step(bad, prev, 1.0)
        assert decision.pose is None and decision.halt is HaltCause.INVALID_ACTION
    assert gov.halt_counts[HaltCause.INVALID_ACTION] == 4
    decision = gov.clamp_ee_step(prev, pose([np.inf, 0, 0]), 1.0)
    assert decision.pose is None and decision.halt is HaltCause.NO_ROBOT_STATE


def test_clip_counters():
    gov = SafetyGovernor(LIMITS)
    prev = pose([0.5, 0.0, 0.3])
    gov.clamp_ee_step(pose([0.5, 0.0, 0.31]), prev, 0.0)
    assert all(v == 0 for v in gov.clip_counts.values())
    gov.clamp_ee_step(pose([0.9, 0.0, 0.3]), prev, 0.0)
    gov.clamp_ee_step(pose([0.5, 0.0, 0.3], axangle2mat([0, 0, 1], 0.5)), prev, 0.0)
    assert gov.clip_counts[ClipKind.WORKSPACE] == 1
    assert gov.clip_counts[ClipKind.STEP_TRANSLATION] == 1
    assert gov.clip_counts[ClipKind.STEP_ROTATION] == 1


# ---------------------------------------------------------------- gripper and joints

def test_gripper_clamp():
    gov = SafetyGovernor(LIMITS)
    assert gov.clamp_gripper(0.04) == 0.04
    assert gov.clamp_gripper(-1.0) == 0.0
    assert gov.clamp_gripper(float('inf')) == 0.08
    assert gov.clamp_gripper(float('nan')) is None
    assert gov.clamp_gripper(None) is None
    assert gov.clip_counts[ClipKind.GRIPPER] == 2


JL = replace(LIMITS, joint_limits=JOINTS, max_joint_velocity_scale=0.5, joint_position_margin=0.01)
joint_values = st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(-1, 1)).map(np.array)


@settings(max_examples=300, deadline=None)
@given(target=joint_values, previous=joint_values, dt=st.floats(1e-3, 1.0))
def test_joint_clamp_respects_position_and_velocity(target, previous, dt):
    gov = SafetyGovernor(JL)
    out = gov.clamp_joints(target, previous, dt)
    lo, hi = JL.effective_joint_bounds()
    q = out.positions
    assert np.all(q >= lo) and np.all(q <= hi)
    q_prev = np.clip(previous, lo, hi)
    assert np.all(np.abs(q - q_prev) <= JOINTS.velocity_max * 0.5 * dt)
    reachable = np.all(np.abs(np.clip(target, lo, hi) - q_prev) <= JOINTS.velocity_max * 0.5 * dt)
    if reachable:
        np.testing.assert_allclose(q, np.clip(target, lo, hi), atol=1e-12)
        assert ClipKind.JOINT_VELOCITY not in out.clipped
    else:  # scaled uniformly: same direction as the wanted step
        assert ClipKind.JOINT_VELOCITY in out.clipped
        want = np.clip(target, lo, hi) - q_prev
        got = q - q_prev
        np.testing.assert_allclose(np.cross(np.append(got, 0)[:3], np.append(want, 0)[:3]), 0, atol=1e-9)
        assert np.dot(got, want) >= 0


def test_joint_step_also_obeys_the_cartesian_limits():
    """A planar 2-link arm: the joint target is within joint limits but moves the tip too far."""
    joints = JointLimits(names=('a', 'b'), position_min=[-3, -3], position_max=[3, 3], velocity_max=[10, 10])
    lim = replace(LIMITS, joint_limits=joints, workspace_min_m=(-2, -2, -1), workspace_max_m=(2, 2, 1))

    def fk(q):
        x = np.cos(q[0]) + np.cos(q[0] + q[1])
        y = np.sin(q[0]) + np.sin(q[0] + q[1])
        return pose([x, y, 0.0], axangle2mat([0, 0, 1], q[0] + q[1]))
    gov = SafetyGovernor(lim)
    q_prev = np.array([0.3, 0.5])
    out = gov.clamp_joint_step([0.4, 0.6], q_prev, 1.0, fk)
    T_prev, T = fk(q_prev), fk(out.positions)
    assert np.linalg.norm(T[:3, 3] - T_prev[:3, 3]) <= lim.max_step_translation_m
    assert rotation_angle(T_prev[:3, :3].T @ T[:3, :3]) <= lim.max_step_rotation_rad
    assert ClipKind.STEP_TRANSLATION in out.clipped and ClipKind.STEP_ROTATION in out.clipped
    # The same direction in joint space, shorter.
    d = out.positions - q_prev
    assert d[0] > 0 and d[1] > 0 and d[0] == pytest.approx(d[1])
    small = gov.clamp_joint_step([0.301, 0.501], q_prev, 1.0, fk)
    np.testing.assert_allclose(small.positions, [0.301, 0.501])
    assert small.clipped == frozenset()


def test_joint_clamp_errors():
    gov = SafetyGovernor(LIMITS)
    with pytest.raises(ValueError, match='needs SafetyLimits.joint_limits'):
        gov.clamp_joints([0, 0, 0], [0, 0, 0], 0.1)
    gov = SafetyGovernor(JL)
    with pytest.raises(ValueError, match='expected 3 joint values'):
        gov.clamp_joints([0, 0], [0, 0, 0], 0.1)
    with pytest.raises(ValueError, match='finite'):
        gov.clamp_joints([np.nan, 0, 0], [0, 0, 0], 0.1)
    with pytest.raises(ValueError, match='dt_s must be positive'):
        gov.clamp_joints([0, 0, 0], [0, 0, 0], 0.0)
