"""Every time-based decision of the suite at the clock's start.

A robot computer that has just booted has a monotonic clock near zero (CI machines too: the multi-rate
test failed on one booted minutes before, because the perception rate limit treated "never ran" as
"ran at t = 0"). Each decision is checked with the clock starting at 0 s and with a limit far longer
than the uptime: a first event is never refused for having happened "too recently", and nothing is
stale before it had a chance to arrive, whatever the clock's value."""

import numpy as np
import pytest

from molmoact_ros.cores.intake import Admission, FrameIntake, IntakeConfig
from molmoact_ros.reasoning.goals import GoalRun, GoalSpec, Outcome
from molmoact_ros.reasoning.sessions import Session, SessionError, SessionLimits, SessionStore
from molmoact_ros.reasoning.steering import ClickedTrace
from molmoact_ros.robot.execution import ExecutionQueue, OfferResult, build_timeline
from molmoact_ros.robot.safety import HaltCause, SafetyGovernor, SafetyLimits

STARTS = [0.0, 0.0625, 3.0]  # exact in binary: the boundaries below are compared exactly


@pytest.mark.parametrize('start', STARTS)
def test_perception_rate_limit_longer_than_the_uptime_lets_the_first_request_run(start):
    intake = FrameIntake(IntakeConfig(min_period_s=3600.0, max_frame_age_s=1.0))
    intake.offer('frame', start)
    assert intake.take(start, has_instruction=True).admission is Admission.RUN


@pytest.mark.parametrize('start', STARTS)
def test_safety_gates_at_the_clock_start(start):
    limits = SafetyLimits(max_step_translation_m=0.02, max_step_rotation_rad=0.1,
                          workspace_min_m=(0.2, -0.4, 0.0), workspace_max_m=(0.8, 0.4, 0.6),
                          gripper_min=0.0, gripper_max=0.08, max_action_age_s=0.5, camera_timeout_s=3600.0,
                          model_timeout_s=3600.0)
    gov = SafetyGovernor(limits)
    assert gov.enable(start)
    # Nothing seen yet: stale, however long the timeouts (never "seen at t = 0").
    assert gov.gate(start) is HaltCause.STALE_CAMERA
    gov.camera_seen(start)
    assert gov.gate(start) is HaltCause.STALLED_MODEL
    gov.model_seen(start)
    assert gov.gate(start) is None


@pytest.mark.parametrize('start', STARTS)
def test_goal_timeout_counts_from_the_goal_start(start):
    spec = GoalSpec('pick up the cube', max_steps=2, timeout_s=3600.0, execute=True,
                    max_translation_m_per_step=0.0, max_rotation_rad_per_step=0.0)
    run = GoalRun(spec, started_at_s=start)
    assert run.may_start()
    assert run.outcome(start + 1.0) is None
    assert run.outcome(start + 3600.0)[0] is Outcome.TIMED_OUT


@pytest.mark.parametrize('start', STARTS)
def test_live_requests_do_not_expire_at_the_clock_start(start):
    clock = [start]
    store = SessionStore(SessionLimits(max_sessions=2, max_age_s=3600.0), clock=lambda: clock[0])
    store.add(Session('r1', 'x', [1, 2, 3]))
    clock[0] = start + 1.0
    assert store.get('r1').request_id == 'r1'
    clock[0] = start + 3601.0
    with pytest.raises(SessionError):
        store.get('r1')


@pytest.mark.parametrize('start', STARTS)
def test_clicked_trace_pause_counts_from_the_first_click(start):
    clicks = ClickedTrace(max_points=5, pause_s=2.0)
    assert clicks.poll(start) is None  # no points: nothing to complete, whatever the clock
    assert clicks.add((10.0, 10.0), 100, 100, start) is None
    assert clicks.poll(start + 1.0) is None
    assert clicks.poll(start + 2.0) == [(10.0, 10.0)]


@pytest.mark.parametrize('start', STARTS)
def test_action_chunks_stamped_at_the_clock_start_are_accepted(start):
    queue = ExecutionQueue(max_action_age_s=1.0)
    timeline = build_timeline(np.full((4, 3), 0.01), np.zeros((4, 3)), np.ones(4), observation_pose=np.eye(4),
                              observation_stamp_s=start, step_period_s=0.1)
    assert queue.offer(timeline, now_s=start) is OfferResult.ACCEPTED
    assert queue.pop_due(start).index == 0
