"""Chunk timelines (cumulative deltas, base vs tool frame, anchoring), the execution queue, gripper mapping."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat, mat2euler

from molmoact_ros.reasoning.action_space import ActionChunkValues, NormStats, RotationConvention
from molmoact_ros.robot.execution import (DeltaFrame, ExecutionQueue, GripperMapping, InvalidChunkError,
                                          OfferResult, PoseHistory, StartMode, build_timeline,
                                          delta_rotation, timeline_from_chunk)

EULER = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW
ROTVEC = RotationConvention.ROTATION_VECTOR


def pose(p, R=None):
    T = np.eye(4)
    T[:3, 3] = p
    if R is not None:
        T[:3, :3] = R
    return T


T_OBS = pose([0.4, 0.1, 0.3], euler2mat(math.pi, 0.2, -0.3, 'sxyz'))


def timeline(dp, dr=None, g=None, *, stamp=10.0, period=0.1, frame=DeltaFrame.BASE, conv=EULER,
             obs=T_OBS, request_id='r'):
    dp = np.asarray(dp, dtype=float)
    dr = np.zeros_like(dp) if dr is None else np.asarray(dr, dtype=float)
    g = np.ones(len(dp)) if g is None else g
    return build_timeline(dp, dr, g, observation_pose=obs, observation_stamp_s=stamp, step_period_s=period,
                          delta_frame=frame, rotation_convention=conv, request_id=request_id)


# ---------------------------------------------------------------- timelines

def test_base_frame_deltas_accumulate_in_base_axes():
    tl = timeline([[0.01, 0, 0], [0.01, 0, 0], [0, 0.02, -0.01]], [[0, 0, 0.1], [0, 0, 0.1], [0, 0, 0]])
    np.testing.assert_allclose(tl.poses[:, :3, 3], [[0.41, 0.1, 0.3], [0.42, 0.1, 0.3], [0.42, 0.12, 0.29]])
    # Yaw about the base z axis, applied on the left: two steps of 0.1 rad.
    np.testing.assert_allclose(tl.poses[1, :3, :3], euler2mat(0, 0, 0.2, 'sxyz') @ T_OBS[:3, :3], atol=1e-12)
    np.testing.assert_allclose(tl.poses[2, :3, :3], tl.poses[1, :3, :3])
    assert tl.observation_pose is not T_OBS and np.array_equal(tl.observation_pose, T_OBS)


def test_tool_frame_deltas_accumulate_in_tool_axes():
    tl = timeline([[0, 0, 0.05], [0, 0, 0.05]], [[0, 0, math.pi / 2], [0, 0, 0]], frame=DeltaFrame.TOOL)
    z_tool = T_OBS[:3, 2]
    # Moving along the tool's own z (which points down here: the observation pose is flipped).
    np.testing.assert_allclose(tl.poses[0, :3, 3], T_OBS[:3, 3] + 0.05 * z_tool, atol=1e-12)
    np.testing.assert_allclose(tl.poses[1, :3, 3], T_OBS[:3, 3] + 0.10 * z_tool, atol=1e-12)
    np.testing.assert_allclose(tl.poses[0, :3, :3], T_OBS[:3, :3] @ euler2mat(0, 0, math.pi / 2, 'sxyz'), atol=1e-12)
    # A sideways step after the 90 deg turn about tool z goes along the old tool y.
    tl = timeline([[0, 0, 0], [0.02, 0, 0]], [[0, 0, math.pi / 2], [0, 0, 0]], frame=DeltaFrame.TOOL)
    np.testing.assert_allclose(tl.poses[1, :3, 3], T_OBS[:3, 3] + 0.02 * T_OBS[:3, 1], atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frame=st.sampled_from(list(DeltaFrame)), conv=st.sampled_from([EULER, ROTVEC]))
def test_tool_and_base_agree_with_their_definitions(seed, frame, conv):
    rng = np.random.default_rng(seed)
    dp, dr = rng.normal(0, 0.02, (6, 3)), rng.normal(0, 0.1, (6, 3))
    tl = timeline(dp, dr, frame=frame, conv=conv)
    T = T_OBS.copy()
    for i in range(6):
        D = pose(dp[i], delta_rotation(dr[i], conv))
        if frame is DeltaFrame.TOOL:
            T = T @ D
        else:
            T = pose(T[:3, 3] + dp[i], D[:3, :3] @ T[:3, :3])
        np.testing.assert_allclose(tl.poses[i], T, atol=1e-12)


def test_rotation_conventions():
    np.testing.assert_allclose(delta_rotation([0.1, -0.2, 0.3], EULER), euler2mat(0.1, -0.2, 0.3, 'sxyz'))
    r = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(delta_rotation(r, ROTVEC), axangle2mat(r / np.linalg.norm(r), np.linalg.norm(r)))
    np.testing.assert_allclose(delta_rotation([0, 0, 0], ROTVEC), np.eye(3))
    # A huge rotation vector stays a rotation (no overflow).
    R = delta_rotation([1e300, 1e300, 0], ROTVEC)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    with pytest.raises(InvalidChunkError, match="'unspecified' cannot be executed"):
        delta_rotation([0, 0, 0], RotationConvention.UNSPECIFIED)
    # The released evaluators' reading: dims 3:6 are roll, pitch, yaw; sxyz round-trips.
    assert mat2euler(delta_rotation([0.1, 0.2, 0.3], EULER), 'sxyz') == pytest.approx((0.1, 0.2, 0.3))


@pytest.mark.parametrize('kwargs, message', [
    (dict(dp=[[np.nan, 0, 0]]), 'non-finite'),
    (dict(dp=[[0, 0, 0]], g=[np.inf]), 'non-finite'),
    (dict(dp=[[1e308, 0, 0], [1e308, 0, 0]]), 'overflow'),
    (dict(dp=[[0, 0]]), r'expected translation \(H, 3\)'),
    (dict(dp=np.zeros((0, 3))), 'H >= 1'),
    (dict(dp=[[0, 0, 0]], period=0.0), 'step_period_s must be positive'),
    (dict(dp=[[0, 0, 0]], obs=np.full((4, 4), np.nan)), 'observation_pose must be a finite'),
    (dict(dp=[[0, 0, 0]], conv=RotationConvention.UNSPECIFIED), 'unspecified'),
])
def test_invalid_chunks_are_refused(kwargs, message):
    dp = kwargs.pop('dp')
    with pytest.raises(InvalidChunkError, match=message):
        timeline(dp, **kwargs)


def test_timeline_from_action_chunk_values():
    stats = NormStats(q01=[-0.05] * 3 + [-0.2] * 3 + [0.0], q99=[0.05] * 3 + [0.2] * 3 + [1.0], mask=[True] * 7)
    bins = [[200, 127, 127, 127, 127, 160, 254], [200, 127, 127, 127, 127, 160, 0]]
    chunk = ActionChunkValues.from_bins(bins, stats)
    tl = timeline_from_chunk(chunk, observation_pose=T_OBS, observation_stamp_s=3.0, step_period_s=0.2,
                             delta_frame='base', request_id='abc')
    assert len(tl) == 2 and tl.rotation_convention is EULER and tl.request_id == 'abc'
    dx = chunk.translation_m[0][0]
    assert dx > 0.02
    np.testing.assert_allclose(tl.poses[1, :3, 3], T_OBS[:3, 3] + np.sum(chunk.translation_m, axis=0))
    np.testing.assert_allclose(tl.gripper_raw, chunk.gripper)
    assert tl.duration_s == pytest.approx(0.4)


# ---------------------------------------------------------------- queue

def test_steps_run_on_the_observation_timeline():
    q = ExecutionQueue(max_action_age_s=0.5)
    tl = timeline(np.full((4, 3), 0.01), stamp=10.0, period=0.1)
    assert q.offer(tl, now_s=10.25) is OfferResult.ACCEPTED
    # Steps 0 and 1 are already past on arrival: step 2 is due, anchored to the observation pose.
    step = q.pop_due(10.25)
    assert step.index == 2 and q.skipped_steps == 2
    assert step.start_s == pytest.approx(10.2) and step.end_s == pytest.approx(10.3)
    np.testing.assert_allclose(step.pose[:3, 3], T_OBS[:3, 3] + 0.03)
    assert step.lag_s(10.25) == pytest.approx(0.05) and step.age_s(10.25) == pytest.approx(0.25)
    assert q.pop_due(10.28) is None          # handed out once
    assert q.step_at(10.28).index == 2       # (a plain lookup still sees it)
    assert q.pop_due(10.31).index == 3
    assert q.pop_due(10.45) is None and q.timeline is None  # finished and dropped
    assert q.finished


def test_arrival_start_mode_runs_every_step():
    q = ExecutionQueue(max_action_age_s=2.0, start_mode=StartMode.ARRIVAL)
    tl = timeline(np.full((3, 3), 0.01), stamp=10.0, period=0.1)
    assert q.offer(tl, now_s=11.0) is OfferResult.ACCEPTED
    steps = [q.pop_due(t) for t in (11.0, 11.1, 11.2)]
    assert [s.index for s in steps] == [0, 1, 2]
    assert steps[0].lag_s(11.0) == pytest.approx(1.0)  # behind plan by the latency
    np.testing.assert_allclose(steps[2].pose[:3, 3], T_OBS[:3, 3] + 0.03)


def test_old_future_late_and_out_of_order_chunks_are_dropped():
    q = ExecutionQueue(max_action_age_s=0.5)
    assert q.offer(timeline([[0, 0, 0]], stamp=10.0), now_s=10.6) is OfferResult.TOO_OLD
    assert q.offer(timeline([[0, 0, 0]], stamp=11.0), now_s=10.4) is OfferResult.FROM_FUTURE
    assert q.offer(timeline([[0, 0, 0]] * 2, stamp=10.0, period=0.1), now_s=10.3) is OfferResult.EXPIRED
    assert q.timeline is None
    assert q.offer(timeline([[0, 0, 0]] * 8, stamp=10.0, request_id='new'), now_s=10.1) is OfferResult.ACCEPTED
    assert q.offer(timeline([[0, 0, 0]] * 8, stamp=9.9, request_id='older'), now_s=10.15) is OfferResult.OUT_OF_ORDER
    assert q.timeline.request_id == 'new'
    assert q.offers[OfferResult.TOO_OLD] == 1 and q.offers[OfferResult.ACCEPTED] == 1


def test_a_newer_chunk_replaces_the_current_one_with_its_own_anchor():
    q = ExecutionQueue(max_action_age_s=1.0)
    first = timeline(np.full((8, 3), 0.01), stamp=10.0, request_id='a')
    assert q.offer(first, 10.05) is OfferResult.ACCEPTED
    assert q.pop_due(10.05).request_id == 'a'
    obs2 = pose([0.5, 0.0, 0.2])
    second = timeline(np.full((8, 3), -0.01), stamp=10.1, obs=obs2, request_id='b')
    assert q.offer(second, 10.18) is OfferResult.ACCEPTED
    step = q.pop_due(10.18)
    assert step.request_id == 'b' and step.index == 0
    np.testing.assert_allclose(step.pose[:3, 3], obs2[:3, 3] - 0.01)  # anchored to its own observation
    # A re-act on the same observation (e.g. an edited trace) replaces it too.
    third = timeline(np.zeros((8, 3)), stamp=10.1, obs=obs2, request_id='c')
    assert q.offer(third, 10.19) is OfferResult.ACCEPTED and q.timeline.request_id == 'c'


def test_flush_drops_everything_queued():
    q = ExecutionQueue(max_action_age_s=1.0)
    q.offer(timeline(np.zeros((8, 3)), stamp=10.0), 10.0)
    q.flush()
    assert q.timeline is None and q.flushes == 1
    assert all(q.pop_due(t) is None for t in np.arange(10.0, 11.0, 0.01))


def test_queue_validation():
    with pytest.raises(ValueError, match='max_action_age_s must be positive'):
        ExecutionQueue(0.0)
    with pytest.raises(ValueError):
        ExecutionQueue(1.0, start_mode='later')


# ---------------------------------------------------------------- gripper mapping

def test_gripper_binarize_as_the_released_evaluators():
    widowx = GripperMapping(mode='binarize', threshold=0.5, open_command=1.0, closed_command=-1.0)
    assert widowx(0.996) == 1.0 and widowx(0.0039) == -1.0 and widowx(0.5) == -1.0
    inverted = GripperMapping(mode='binarize', threshold=0.5, invert=True, open_command=0.04, closed_command=0.0)
    assert inverted(0.996) == 0.0 and inverted(0.0039) == 0.04
    assert widowx(float('nan')) is None


def test_gripper_linear():
    m = GripperMapping(mode='linear', open_command=0.08, closed_command=0.0, raw_min=0.0, raw_max=1.0)
    assert m(1.0) == pytest.approx(0.08) and m(0.0) == 0.0 and m(0.25) == pytest.approx(0.02)
    assert m(7.0) == pytest.approx(0.08) and m(-3.0) == 0.0  # clipped to the raw range
    inv = GripperMapping(mode='linear', invert=True, open_command=0.08, closed_command=0.0)
    assert inv(-1.0) == pytest.approx(0.08) and inv(1.0) == pytest.approx(0.0)


def test_gripper_mapping_validation():
    with pytest.raises(ValueError, match='raw_min'):
        GripperMapping(raw_min=1.0, raw_max=1.0)
    with pytest.raises(ValueError, match='threshold must be a finite number'):
        GripperMapping(threshold=float('nan'))
    with pytest.raises(ValueError, match='invert must be true or false'):
        GripperMapping(invert='yes')
    with pytest.raises(ValueError):
        GripperMapping(mode='sticky')


# ---------------------------------------------------------------- pose history

def test_pose_history_finds_the_pose_at_the_observation():
    h = PoseHistory(horizon_s=1.0)
    for i in range(30):
        h.add(10.0 + 0.1 * i, pose([0.01 * i, 0, 0]))
    np.testing.assert_allclose(h.at(12.04, tolerance_s=0.06)[:3, 3], [0.2, 0, 0])
    assert h.at(12.05 + 1.0, tolerance_s=0.01) is None
    assert h.at(10.0, tolerance_s=0.05) is None  # older than the horizon: forgotten
    with pytest.raises(ValueError):
        h.add(20.0, np.full((4, 4), np.nan))
