"""ChunkIntake (cores/chunk_intake.py): the command sink's decisions on chunks, without ROS.

Unit tests pin each decision (and each bad-input finding of issue 15 that concerns the sink); the property
test feeds arbitrary, malformed chunks, joint states and switches at arbitrary times (from a clock that
starts near 0) and checks that the core never raises, that every chunk is accounted for, that nothing
from the future, too old or malformed is submitted, and that every command stays inside the limits.
"""

import math
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmoact_ros.cores.chunk_intake import (ACTION_DIM, ChunkIn, ChunkIntake, CommandSinkConfig, Intake,
                                             KeepAlive, ObservationPose, Rejection, StepIn)
from molmoact_ros.cores.quoting import QUOTE_LIMIT, TEXT_LIMIT, bound, quote
from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.execution import OfferResult
from molmoact_ros.robot.executor import HoldCommand, JointCommand, PoseCommand
from molmoact_ros.robot.profiles import load_profile
from molmoact_ros.robot.safety import HaltCause, rotation_angle
from molmoact_ros.ros.transforms import matrix_to_pose

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'robot'))
from robot_test_data import PANDA_JOINTS, PANDA_READY, PANDA_URDF  # noqa: E402

PROFILE = load_profile('sim_panda')
MAX_AGE = PROFILE.safety.max_action_age_s       # 1.0 s
BASE = PROFILE.frames.base
RPY = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW
#: A freshly booted machine: the sink's clock starts near 0.
T0 = 0.2


@pytest.fixture(scope='module')
def kin():
    from molmoact_ros.robot.kinematics import ArmKinematics
    return ArmKinematics.from_urdf(PANDA_URDF.read_text(encoding='utf-8'), base_frame=BASE,
                                   ee_frame=PROFILE.frames.ee, joint_names=PANDA_JOINTS)


def make(kin, mode='servo_pose', **config):
    intake = ChunkIntake(CommandSinkConfig(sink=mode, **config), PROFILE)
    intake.kinematics_ready(kin)
    return intake


def ready_pose(kin):
    (x, y, z), quat = matrix_to_pose(kin.fk(PANDA_READY))
    return ObservationPose(BASE, (x, y, z), quat)


def chunk(request_id='r', stamp=T0, *, n=8, dx=0.01, period=0.1, pose=None, **kw):
    steps = tuple(StepIn((dx, 0.0, 0.0), (0.0, 0.0, 0.0), 0.9) for _ in range(n))
    return ChunkIn(request_id=request_id, stamp_s=stamp, steps=steps, step_period_s=period,
                   observation_pose=pose, **kw)


def go(intake, now, kin=None):
    """Enable, with a camera frame and a joint state stamped now."""
    intake.governor.enable(now)
    intake.governor.camera_seen(now)
    intake.joint_state(now, now, PANDA_JOINTS, PANDA_READY)


def run(intake, start, until, dt=0.02):
    """Tick with fresh camera frames and joint states; returns [(t, SinkTick)] with a command or resend."""
    out, t = [], start
    while t < until - 1e-9:
        intake.governor.camera_seen(t)
        intake.joint_state(t, t, PANDA_JOINTS, PANDA_READY)
        tick = intake.tick(t)
        if tick.command is not None or tick.resend is not None or tick.intake is not None:
            out.append((t, tick))
        t = round(t + dt, 9)
    return out


def commands(ticks):
    return [tick.command for _, tick in ticks if tick.command is not None]


# ---------------------------------------------------------------------------------------------- config

def test_config_is_the_one_default_of_each_parameter():
    pytest.importorskip('rclpy')
    from molmoact_ros.nodes.command_sink import CommandSinkNode
    specs = {p.name: p.default for p in CommandSinkNode.PARAMETERS}
    defaults = CommandSinkConfig()
    assert specs == {f.name: getattr(defaults, f.name) for f in fields(CommandSinkConfig)}
    assert CommandSinkConfig.from_params(specs) == defaults


def test_max_action_age_is_read_once_from_the_profile(kin):
    intake = make(kin)
    assert intake.max_action_age_s == MAX_AGE
    assert intake.executor.queue.max_action_age_s == intake.max_action_age_s
    assert intake.history.horizon_s >= intake.max_action_age_s


def test_config_refuses_bad_values():
    for bad in (dict(anchor_tolerance_s=0.0), dict(joint_state_timeout_s=math.nan), dict(sink='fly'),
                dict(servo_pose_keepalive_s=-1.0)):
        with pytest.raises(ValueError):
            CommandSinkConfig(**bad)


# ---------------------------------------------------------------------------------------------- quoting

def test_quote_bounds_long_input_and_keeps_short_input_whole():
    assert quote('abc') == "'abc'"
    long = quote('x' * 100_000)
    assert len(long) < QUOTE_LIMIT + 30 and long.endswith('(100002 chars)') and '...' in long
    assert len(bound('y' * 50_000)) < TEXT_LIMIT + 30


# ---------------------------------------------------------------------------------------------- ordinary intake

def test_a_valid_chunk_is_accepted_and_runs_from_the_clock_start(kin):
    intake = make(kin)
    go(intake, T0)
    decision = intake.chunk(chunk(stamp=T0), T0)
    assert decision.intake is Intake.ACCEPTED and decision.offer is OfferResult.ACCEPTED and not decision.error
    cmds = commands(run(intake, T0, T0 + 0.9))
    assert [c.step_index for c in cmds] == list(range(8))
    assert all(isinstance(c, PoseCommand) for c in cmds)


def test_not_ready_without_kinematics():
    intake = ChunkIntake(CommandSinkConfig(), PROFILE)
    decision = intake.chunk(chunk(), T0)
    assert decision.intake is Intake.NOT_READY and decision.dropped
    assert intake.counts[Intake.NOT_READY] == 1


def test_plan_only_counts_and_feeds_the_model_heartbeat(kin):
    intake = make(kin)
    decision = intake.chunk(chunk(plan_only=True), T0)
    assert decision.intake is Intake.PLAN_ONLY and intake.plan_only_chunks == 1
    assert intake.governor._last_model_s == T0
    assert intake.executor.queue.timeline is None


def test_a_chunk_while_the_e_stop_is_latched_is_refused_and_commands_nothing(kin):
    intake = make(kin)
    go(intake, T0)
    intake.governor.e_stop(T0 + 0.01)
    decision = intake.chunk(chunk('during_stop', stamp=T0 + 0.02, pose=ready_pose(kin)), T0 + 0.02)
    assert decision.intake is Intake.REFUSED and intake.counts[Intake.REFUSED] == 1
    assert not decision.dropped  # refused while halted: expected, not a dropped input
    cmds = commands(run(intake, T0 + 0.02, T0 + 1.0))
    assert not [c for c in cmds if getattr(c, 'request_id', None) == 'during_stop']


def test_a_chunk_waits_for_the_joint_state_at_its_stamp(kin):
    intake = make(kin)
    t = 2.0
    intake.governor.enable(t)
    intake.governor.camera_seen(t)
    intake.joint_state(t, t - 0.5, PANDA_JOINTS, PANDA_READY)   # joint states lag
    decision = intake.chunk(chunk(stamp=t), t)
    assert decision.intake is Intake.PENDING and intake.pending is not None
    assert intake.tick(t + 0.01).intake.intake is Intake.PENDING     # retried: still waiting
    intake.joint_state(t + 0.02, t, PANDA_JOINTS, PANDA_READY)  # the state at the stamp comes
    tick = intake.tick(t + 0.02)
    assert tick.intake is not None and tick.intake.intake is Intake.ACCEPTED and intake.pending is None


def test_a_chunk_no_state_can_anchor_is_dropped_with_an_error(kin):
    intake = make(kin)
    intake.joint_state(T0, T0 + 1.0, PANDA_JOINTS, PANDA_READY)    # newer than the stamp + tolerance
    decision = intake.chunk(chunk(request_id='q' * 20_000, stamp=T0), T0)
    assert decision.intake is Intake.DROPPED and decision.dropped
    assert 'no joint state within' in decision.error and len(decision.error) < 400


def test_constraints_tighten_the_step_limits_while_their_chunk_runs(kin):
    intake = make(kin)
    go(intake, T0)
    base = intake.base_limits.max_step_translation_m
    intake.chunk(chunk(stamp=T0, dx=0.05, max_translation_m_per_step=0.004), T0)
    cmds = commands(run(intake, T0, T0 + 0.3))
    assert intake.governor.limits.max_step_translation_m == 0.004 < base
    previous = kin.fk(PANDA_READY)
    for c in cmds:
        assert np.linalg.norm(c.pose[:3, 3] - previous[:3, 3]) <= 0.004 + 1e-9
        previous = c.pose
    # looser or nonsense constraints never loosen the profile's limits
    for value in (1.0, math.nan, math.inf, -1.0):
        intake.chunk(chunk(request_id=f'c{value}', stamp=T0 + 0.3, max_translation_m_per_step=value), T0 + 0.3)
        run(intake, T0 + 0.3, T0 + 0.34)
        assert intake.governor.limits.max_step_translation_m == base


def test_servo_twist_keep_alive_then_one_zero_twist(kin):
    intake = make(kin, mode='servo_twist')
    go(intake, T0)
    intake.chunk(chunk(stamp=T0, n=1), T0)
    ticks = run(intake, T0, T0 + 0.3)
    kinds = [tick.resend.kind if tick.resend else type(tick.command).__name__ for _, tick in ticks]
    assert kinds[0] == 'TwistCommand'
    assert kinds.count(KeepAlive.ZERO_TWIST) == 1 and kinds.index(KeepAlive.ZERO_TWIST) == len(kinds) - 1
    assert all(k is KeepAlive.TWIST for k in kinds[1:-1]) and len(kinds) > 2
    twist_end = ticks[0][0] + ticks[0][1].command.duration_s
    assert all(t < twist_end for t, tick in ticks if tick.resend and tick.resend.kind is KeepAlive.TWIST)


def test_servo_pose_keep_alive_lasts_keepalive_after_the_step(kin):
    intake = make(kin, servo_pose_keepalive_s=0.1)
    go(intake, T0)
    intake.chunk(chunk(stamp=T0, n=1), T0)
    ticks = run(intake, T0, T0 + 0.6)
    first_t, first = ticks[0]
    until = first_t + first.command.time_from_start_s + 0.1
    resent = [t for t, tick in ticks if tick.resend and tick.resend.kind is KeepAlive.POSE]
    assert resent and max(resent) <= until + 1e-9 and max(resent) > until - 0.05
    assert all(np.allclose(tick.resend.pose, first.command.pose) for _, tick in ticks if tick.resend)


def test_a_topic_gripper_value_is_sent_only_when_it_changes(kin):
    intake = make(kin)
    go(intake, T0)
    steps = tuple(StepIn((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), g) for g in (0.9, 0.9, 0.1, 0.1, 0.9))
    intake.chunk(ChunkIn('g', T0, steps, 0.1), T0)
    ticks = [tick for _, tick in run(intake, T0, T0 + 0.5) if tick.command is not None]
    assert [t.gripper_changed for t in ticks] == [0.04, None, 0.0, None, 0.04]


# ---------------------------------------------------------------------------------------------- issue 15, finding 3

def test_a_chunk_stamped_far_ahead_is_rejected_counted_and_never_held(kin):
    """Was: held without an error or a count, executed when its stamp came, over a newer valid chunk."""
    intake = make(kin)
    go(intake, T0)
    future = intake.chunk(chunk('future', stamp=T0 + 5.0, dx=-0.02), T0)
    assert future.intake is Intake.REJECTED and future.rejection is Rejection.FROM_FUTURE
    assert 'ahead' in future.error and 'max_action_age_s' in future.error
    assert intake.rejected_chunks == 1 and intake.rejections[Rejection.FROM_FUTURE] == 1
    assert intake.pending is None and not future.halted   # a clock problem, not a corrupt command: no halt
    # A newer valid chunk runs, and nothing of the future chunk ever executes, even when its stamp comes.
    assert intake.chunk(chunk('now', stamp=T0), T0).intake is Intake.ACCEPTED
    cmds = commands(run(intake, T0, T0 + 6.0))
    assert {c.request_id for c in cmds if not isinstance(c, HoldCommand)} == {'now'}


def test_a_chunk_stamped_very_far_ahead_is_rejected_not_pending_forever(kin):
    intake = make(kin)
    go(intake, T0)
    for stamp in (1e9, math.inf, math.nan):
        decision = intake.chunk(chunk(stamp=stamp), T0)
        assert decision.intake is Intake.REJECTED and decision.rejection is Rejection.FROM_FUTURE
        assert intake.pending is None
    assert intake.rejected_chunks == 3


@pytest.mark.parametrize('switch', ['disable', 'e_stop', 'deactivate', 'stale_camera'])
def test_every_halt_discards_the_pending_chunk(kin, switch):
    intake = make(kin)
    go(intake, T0)
    # slightly ahead (within max_action_age_s) and no joint state at its stamp yet: pending
    assert intake.chunk(chunk('held', stamp=T0 + 0.5), T0).intake is Intake.PENDING
    if switch == 'stale_camera':
        intake.tick(T0 + PROFILE.safety.camera_timeout_s + 0.1)
    elif switch == 'deactivate':
        intake.deactivate(T0 + 0.01)
    else:
        getattr(intake.governor, switch)(T0 + 0.01)
    assert intake.pending is None and intake.pending_discarded == 1
    intake.governor.reset_e_stop(T0 + 0.02)
    go(intake, T0 + 0.02)
    cmds = commands(run(intake, T0 + 0.02, T0 + 2.0))
    assert not [c for c in cmds if getattr(c, 'request_id', None) == 'held']


def test_a_newer_valid_chunk_wins_over_the_pending_one(kin):
    intake = make(kin)
    go(intake, T0)
    assert intake.chunk(chunk('held', stamp=T0 + 0.5), T0).intake is Intake.PENDING
    newer = intake.chunk(chunk('newer', stamp=T0, pose=ready_pose(kin)), T0 + 0.01)
    assert newer.intake is Intake.ACCEPTED and intake.pending is None and intake.pending_discarded == 1
    cmds = commands(run(intake, T0 + 0.02, T0 + 1.0))
    assert {c.request_id for c in cmds} == {'newer'}


BAD_QUATERNIONS = [(math.nan, 0.0, 0.0, 1.0), (0.0, math.inf, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0),
                   (0.0, 0.0, 0.0, 2.0), (0.5, 0.5, 0.5, 0.4), (1e308, 1e308, 0.0, 0.0)]


@pytest.mark.parametrize('quaternion', BAD_QUATERNIONS)
def test_a_bad_observation_quaternion_is_rejected_and_halts_the_running_chunk(kin, quaternion):
    """Was: an uncaught ValueError in the callback, not counted, no halt, the running chunk kept going."""
    intake = make(kin)
    go(intake, T0)
    assert intake.chunk(chunk('running', stamp=T0), T0).intake is Intake.ACCEPTED
    run(intake, T0, T0 + 0.25)
    assert intake.executor.queue.timeline is not None
    pose = replace(ready_pose(kin), orientation_xyzw=quaternion)
    decision = intake.chunk(chunk('corrupt', stamp=T0 + 0.25, pose=pose), T0 + 0.25)
    assert decision.intake is Intake.REJECTED and decision.rejection is Rejection.OBSERVATION_POSE
    assert decision.halted and ('quaternion' in decision.error or 'finite' in decision.error)
    assert intake.rejected_chunks == 1
    assert intake.executor.queue.timeline is None   # the running chunk is flushed
    assert intake.governor.last_halt_cause is HaltCause.INVALID_ACTION
    after = commands(run(intake, T0 + 0.26, T0 + 1.0))
    assert isinstance(after[0], HoldCommand) and len(after) == 1


def test_observation_pose_in_another_frame_or_non_finite_position_is_rejected(kin):
    intake = make(kin)
    for pose in (replace(ready_pose(kin), frame_id='w' * 10_000),
                 replace(ready_pose(kin), position=(math.nan, 0.0, 0.0))):
        decision = intake.chunk(chunk(pose=pose), T0)
        assert decision.intake is Intake.REJECTED and decision.rejection is Rejection.OBSERVATION_POSE
        assert len(decision.error) < 400
    assert intake.rejected_chunks == 2


HUGE = 'i' * 100_000


@pytest.mark.parametrize('bad', [
    dict(action_dim=6), dict(rotation_convention=None, rotation_code=250), dict(delta_frame_id='f' * 10_000),
    dict(stamp=T0 + 50.0), dict(pose=ObservationPose('f' * 10_000, (0.3, 0.0, 0.5), (0.0, 0.0, 0.0, 1.0))),
    dict(pose=ObservationPose(BASE, (0.3, 0.0, 0.5), (0.0, 0.0, 0.0, 0.0))), dict(period=math.nan),
    dict(dx=math.inf)])
def test_every_error_text_quoting_input_is_bounded(kin, bad):
    intake = make(kin)
    kw = dict(bad)
    base_args = {k: kw.pop(k) for k in ('stamp', 'pose', 'period', 'dx') if k in kw}
    decision = intake.chunk(chunk(HUGE, **base_args, **kw), T0)
    assert decision.intake is Intake.REJECTED and decision.error
    assert len(decision.error) <= 400, decision.error[:500]
    assert '(100002 chars)' in decision.error   # the request id, quoted and cut, with its length


def test_a_malformed_joint_state_is_an_error_not_an_exception(kin):
    intake = make(kin)
    assert intake.joint_state(T0, T0, list(PANDA_JOINTS) + ['x'], PANDA_READY) != ''
    assert intake.joint_state(T0, T0, ['finger'], [0.04]) == ''                 # not the arm's: ignored
    # non-finite positions of controlled joints: refused with an error (counted), the state is not used
    error = intake.joint_state(T0, T0, PANDA_JOINTS, [0.0] * 6 + [math.inf])
    assert 'non-finite' in error and len(error) <= TEXT_LIMIT
    assert 'non-finite' in intake.joint_state(T0, T0, PANDA_JOINTS, [math.nan] * 7)
    assert intake.last_joint_state is None
    # a NaN in a joint the arm does not control is no fault of the arm's state
    assert intake.joint_state(T0, T0, list(PANDA_JOINTS) + ['finger'], list(PANDA_READY) + [math.nan]) == ''
    assert intake.last_joint_state is not None


def test_an_unstamped_joint_state_counts_at_arrival_and_ages_out(kin):
    intake = make(kin, joint_state_timeout_s=0.5)
    intake.joint_state(0.01, 0.0, PANDA_JOINTS, PANDA_READY)   # clock near 0, stamp unset
    assert intake.measured_q(0.02) is not None and intake.measured_q(0.6) is None


# ---------------------------------------------------------------------------------------------- property test

FRAMES = ['', BASE, PROFILE.frames.ee, 'bogus', 'f' * 5000]
WEIRD = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0]
floats_small = st.floats(-0.05, 0.05, allow_nan=False)
values = st.one_of(floats_small, floats_small, st.sampled_from(WEIRD))
step_st = st.builds(StepIn, st.tuples(values, values, values), st.tuples(values, values, values),
                    st.one_of(st.floats(-1, 1), st.sampled_from(WEIRD)),
                    st.sampled_from([ACTION_DIM] * 6 + [0, 6, 9]))
quat_st = st.one_of(st.just('ready'), st.sampled_from(BAD_QUATERNIONS),
                    st.tuples(values, values, values, values))
pose_st = st.one_of(st.none(), st.none(), st.tuples(st.sampled_from(['', BASE, 'world']), quat_st,
                                                    st.sampled_from(['ready', 'nan', 'far'])))
offset_st = st.one_of(st.floats(-2.5, 2.5), st.floats(-0.3, 0.3), st.sampled_from([math.nan, math.inf, 1e9, -1e9]))
limit_st = st.one_of(st.just(0.0), st.floats(0.001, 0.05), st.sampled_from([math.nan, math.inf, -1.0]))
any_chunk_st = st.fixed_dictionaries(dict(
    offset=offset_st, steps=st.lists(step_st, min_size=0, max_size=10),
    period=st.one_of(st.floats(0.02, 0.3), st.sampled_from([0.0, -0.1, math.nan, math.inf])),
    action_dim=st.sampled_from([ACTION_DIM] * 8 + [6, 0]),
    rotation=st.sampled_from([RPY, RotationConvention.ROTATION_VECTOR, None]),
    frame=st.sampled_from(FRAMES), pose=pose_st, plan_only=st.sampled_from([False] * 7 + [True]),
    max_t=limit_st, max_r=limit_st, request_id=st.one_of(st.text(max_size=8), st.just('R' * 20_000))))
#: Chunks a healthy pipeline sends (deltas up to 5 cm and 0.25 rad per step: often beyond the step limits).
valid_step_st = st.builds(StepIn, st.tuples(floats_small, floats_small, floats_small),
                          st.tuples(*[st.floats(-0.25, 0.25)] * 3), st.floats(-1, 1), st.just(ACTION_DIM))
valid_chunk_st = st.fixed_dictionaries(dict(
    offset=st.floats(-0.3, 0.1), steps=st.lists(valid_step_st, min_size=1, max_size=10),
    period=st.floats(0.05, 0.2), action_dim=st.just(ACTION_DIM),
    rotation=st.sampled_from([RPY, RotationConvention.ROTATION_VECTOR]), frame=st.sampled_from(FRAMES[:3]),
    pose=st.one_of(st.none(), st.just(('', 'ready', 'ready')), st.just((BASE, 'ready', 'ready'))),
    plan_only=st.just(False), max_t=limit_st, max_r=limit_st, request_id=st.text(max_size=8)))
chunk_st = st.one_of(valid_chunk_st, valid_chunk_st, any_chunk_st)
event_st = st.one_of(
    st.tuples(st.just('chunk'), chunk_st),
    st.tuples(st.just('chunk'), chunk_st),
    st.tuples(st.just('tick'), st.floats(0.005, 0.3)),
    st.tuples(st.just('tick'), st.floats(0.005, 0.05)),
    st.tuples(st.just('ticks'), st.integers(1, 30)),
    st.tuples(st.just('ticks'), st.integers(1, 30)),
    st.tuples(st.just('joints'), st.one_of(st.floats(-1.5, 0.5), st.sampled_from([0.0, math.nan]))),
    st.tuples(st.sampled_from(['enable', 'disable', 'e_stop', 'reset_e_stop', 'deactivate', 'hold', 'camera']),
              st.just(0)))


def build_chunk(spec, n, now, kin):
    pose = None
    if spec['pose'] is not None:
        frame, quat, where = spec['pose']
        ready = ready_pose(kin)
        quat = ready.orientation_xyzw if quat == 'ready' else quat
        position = {'ready': ready.position, 'nan': (math.nan, 0.0, 0.0), 'far': (5.0, -5.0, 9.0)}[where]
        pose = ObservationPose(frame, position, quat)
    return ChunkIn(request_id=f'{n}:{spec["request_id"]}', stamp_s=now + spec['offset'], steps=tuple(spec['steps']),
                   step_period_s=spec['period'], action_dim=spec['action_dim'], rotation_convention=spec['rotation'],
                   rotation_code=0 if spec['rotation'] is not None else 77, delta_frame_id=spec['frame'],
                   observation_pose=pose, plan_only=spec['plan_only'], max_translation_m_per_step=spec['max_t'],
                   max_rotation_rad_per_step=spec['max_r'])


def well_formed(c: ChunkIn, now) -> bool:
    """What may be submitted (independent of the core): the test's own reading of the contract."""
    if not (math.isfinite(c.stamp_s) and abs(now - c.stamp_s) <= MAX_AGE + 1e-9):
        return False
    if c.action_dim != ACTION_DIM or c.rotation_convention is None or not c.steps:
        return False
    if any(s.n_values not in (0, ACTION_DIM) or not all(map(math.isfinite, (*s.translation_m, *s.rotation_rad,
                                                                           s.gripper))) for s in c.steps):
        return False
    if not (math.isfinite(c.step_period_s) and c.step_period_s > 0):
        return False
    if c.delta_frame_id not in ('', BASE, PROFILE.frames.ee):
        return False
    p = c.observation_pose
    if p is not None:
        norm = math.sqrt(sum(v * v for v in p.orientation_xyzw)) if all(map(math.isfinite, p.orientation_xyzw)) \
            else math.nan
        if p.frame_id not in ('', BASE) or not all(map(math.isfinite, p.position)) or not abs(norm - 1) <= 1e-3:
            return False
    return True


@pytest.mark.parametrize('mode', ['servo_pose', 'servo_twist', 'joint_trajectory'])
def test_property_arbitrary_chunks_and_times(kin, mode):
    limits0 = PROFILE.safety

    @settings(max_examples=150 if mode != 'joint_trajectory' else 60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(start=st.floats(0.0, 0.5), events=st.lists(event_st, min_size=1, max_size=40))
    def check(start, events):
        intake = make(kin, mode=mode)
        now = start
        offered = {}            # request_id -> ChunkIn
        allowed = {}            # request_id -> its step translation limit
        previous = None         # last commanded pose (None after a hold: the measured pose)
        measured = kin.fk(PANDA_READY)

        def account(decision):
            if decision is None:
                return
            c = decision.chunk
            if decision.intake is Intake.ACCEPTED:
                assert well_formed(c, now), c
                assert not c.plan_only
                t = c.max_translation_m_per_step
                allowed[c.request_id] = min(limits0.max_step_translation_m,
                                            t if math.isfinite(t) and t > 0 else math.inf)
            if decision.intake is Intake.REJECTED:
                assert decision.error and len(decision.error) <= TEXT_LIMIT + 40
            if decision.error:
                assert len(decision.error) <= TEXT_LIMIT + 40

        def check_command(tick):
            nonlocal previous
            command = tick.command
            if command is None:
                return
            if isinstance(command, HoldCommand):
                previous = None
                return
            assert command.request_id in allowed
            pose = command.pose
            ref = previous if previous is not None else measured
            assert np.all(pose[:3, 3] >= np.asarray(limits0.workspace_min_m) - 1e-9)
            assert np.all(pose[:3, 3] <= np.asarray(limits0.workspace_max_m) + 1e-9)
            if not isinstance(command, JointCommand) or previous is not None:
                assert np.linalg.norm(pose[:3, 3] - ref[:3, 3]) <= allowed[command.request_id] + 1e-6
                assert rotation_angle(ref[:3, :3].T @ pose[:3, :3]) <= limits0.max_step_rotation_rad + 1e-6
            if command.gripper is not None:
                assert limits0.gripper_min <= command.gripper <= limits0.gripper_max
            previous = pose

        n = 0
        intake.governor.enable(now)
        for kind, arg in events:
            if kind == 'chunk':
                n += 1
                c = build_chunk(arg, n, now, kin)
                offered[c.request_id] = c
                account(intake.chunk(c, now))
            elif kind == 'tick':
                now += arg
                tick = intake.tick(now)
                account(tick.intake)
                check_command(tick)
            elif kind == 'ticks':   # a healthy stretch: 50 Hz with camera frames and tracking joint states
                for _ in range(arg):
                    now += 0.02
                    intake.governor.camera_seen(now)
                    intake.joint_state(now, now, PANDA_JOINTS, PANDA_READY)
                    tick = intake.tick(now)
                    account(tick.intake)
                    check_command(tick)
            elif kind == 'joints':
                stamp = arg if arg == 0.0 or math.isnan(arg) else now + arg   # 0: unstamped
                intake.joint_state(now, stamp, PANDA_JOINTS, PANDA_READY)
            elif kind == 'camera':
                intake.governor.camera_seen(now)
            elif kind == 'deactivate':
                check_command(intake.deactivate(now))
            elif kind == 'hold':
                intake.governor.halt(HaltCause.NO_ROBOT_STATE, now)
            else:
                getattr(intake.governor, kind)(now)
        # every chunk offered is accounted for: one terminal count, the pending one, or discarded
        terminal = sum(intake.counts.values())
        assert terminal + (intake.pending is not None) + intake.pending_discarded == len(offered)
        assert intake.rejected_chunks == sum(intake.rejections.values())
        # the tightened limits never exceed the profile's
        assert intake.governor.limits.max_step_translation_m <= limits0.max_step_translation_m
        assert intake.governor.limits.max_step_rotation_rad <= limits0.max_step_rotation_rad

    check()


# ---------------------------------------------------------------------------------------------- figures

def test_figures_before_kinematics_have_no_execution_part():
    from molmoact_ros.cores.sink_figures import SinkFigures
    figures = ChunkIntake(CommandSinkConfig(), PROFILE).figures()
    assert figures.robot_profile == 'sim_panda' and not figures.kinematics_ready
    assert figures.execution is None and figures.chunks == {}
    assert figures.safety is not None and figures.halts == {c.value: 0 for c in HaltCause}
    assert figures.rejected == {r.value: 0 for r in Rejection} and figures.intake.pending_chunk is False
    assert not any(k.startswith('chunks ') or k.startswith('action age') for k, _ in figures.display_values())
    # the node before configure: only its own figures
    assert [k for k, _ in SinkFigures().display_values()] == [
        'robot profile', 'sink mode', 'kinematics ready', 'commands sent', 'holds sent', 'plan-only chunks',
        'rejected chunks']


def test_figures_count_each_decision_per_kind(kin):
    """Each kind of decision shows in its own typed figure (the demo and /diagnostics read these)."""
    from molmoact_ros.robot.safety import ClipKind
    intake = make(kin)
    go(intake, T0)
    assert intake.chunk(chunk(plan_only=True), T0).intake is Intake.PLAN_ONLY
    assert intake.chunk(chunk('future', stamp=T0 + 5.0), T0).intake is Intake.REJECTED
    # a step far beyond the per-step translation limit: executed clamped
    assert intake.chunk(chunk('big', stamp=T0, dx=0.5), T0).intake is Intake.ACCEPTED
    run(intake, T0, T0 + 0.35)
    # slightly ahead with no joint state at its stamp: pending ...
    assert intake.chunk(chunk('held', stamp=T0 + 0.9), T0 + 0.35).intake is Intake.PENDING
    assert intake.figures().intake.pending_chunk is True
    # ... and discarded by the halt of a corrupt observation pose
    pose = replace(ready_pose(kin), orientation_xyzw=(0.0, 0.0, 0.0, 0.0))
    assert intake.chunk(chunk('corrupt', stamp=T0 + 0.35, pose=pose), T0 + 0.35).halted

    f = intake.figures(commands_sent=4, holds_sent=1)
    assert (f.commands_sent, f.holds_sent, f.plan_only_chunks, f.rejected_chunks) == (4, 1, 1, 2)
    assert f.rejected == {'invalid': 0, 'from_future': 1, 'observation_pose': 1}
    assert f.intake.pending_chunk is False and f.intake.pending_discarded == 1
    assert f.halts[HaltCause.INVALID_ACTION.value] == 1 and sum(f.halts.values()) == 1
    assert f.safety.halted_cause == f.safety.last_halt_cause == 'invalid_action' and not f.safety.e_stopped
    assert f.clamps[ClipKind.STEP_TRANSLATION.value] >= 1
    assert f.clamps == {k.value: n for k, n in intake.governor.clip_counts.items()}
    assert f.chunks['accepted'] == 1 and set(f.chunks) == {r.value for r in OfferResult}
    assert f.execution.action_age_s is not None and f.execution.action_age_max_s >= f.execution.action_age_s

    shown = dict(f.display_values())
    assert shown['commands sent'] == '4' and shown['rejected chunks'] == '2'
    assert shown['rejected chunks observation_pose'] == '1' and shown['halts invalid_action'] == '1'
    assert shown['chunks accepted'] == '1' and shown['pending chunks discarded'] == '1'
    assert shown['pending chunk'] == 'false' and shown['halted cause'] == 'invalid_action'
    assert shown['clips step_translation'] == str(f.clamps['step_translation'])
    assert shown['action age at execution s'] == f'{f.execution.action_age_s:.3f}'
    # every typed count has its display string, and the other way round
    for prefix, group in (('halts ', f.halts), ('clips ', f.clamps), ('chunks ', f.chunks),
                          ('rejected chunks ', f.rejected)):
        assert {k[len(prefix):]: int(v) for k, v in shown.items() if k.startswith(prefix)} == dict(group)


def test_figures_are_a_frozen_snapshot(kin):
    import dataclasses
    intake = make(kin)
    go(intake, T0)
    before = intake.figures(tick_time_mean_s=0.0012, tick_time_max_s=0.004, ik_backend='pinocchio (requested)')
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.commands_sent = 3
    with pytest.raises(TypeError):
        before.halts['invalid_action'] = 5
    intake.chunk(chunk('future', stamp=T0 + 5.0), T0)
    assert before.rejected_chunks == 0 and intake.figures().rejected_chunks == 1
    shown = dict(before.display_values())
    assert shown['tick time mean s'] == '0.001200' and shown['tick time max s'] == '0.004000'
    assert shown['ik backend'] == 'pinocchio (requested)'
