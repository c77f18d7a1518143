"""The stage cores (perception, goal runs, trace planning, action decoding): the decisions the ROS rigs of
test/test_pipeline.py, test_execute_instruction.py and test_multirate.py check, here without ROS, handed the
time. Each core has a clock-start case: a monotonic clock near 0 (a freshly booted machine) is not "never"."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.cores.action_decoding import ActionDecoding, ActionDecodingConfig, plan_act
from molmoact_ros.cores.goal_runs import Ending, GoalRuns, ending
from molmoact_ros.cores.intake import Admission, IntakeConfig
from molmoact_ros.cores.perception import ModelImageConfig, PerceptionConfig, PerceptionCore, model_image
from molmoact_ros.cores.recent import Recent
from molmoact_ros.cores.trace_planning import (LiftMethod, PerceptionRef, TracePlanning, TracePlanningConfig,
                                               plan_lift)
from molmoact_ros.reasoning.goals import GoalBounds, GoalRejected, Outcome
from molmoact_ros.robot.geometry import CameraIntrinsics

K = CameraIntrinsics.from_k([100.0, 0, 32, 0, 100.0, 24, 0, 0, 1], 64, 48)


# -- perception ----------------------------------------------------------------------------------------
def test_a_goal_replaces_the_instruction_and_runs_one_query_at_a_time():
    core = PerceptionCore(PerceptionConfig(intake=IntakeConfig(min_period_s=0.0)))
    core.set_instruction('  pick   up the cup ')
    assert core.instruction == 'pick up the cup'
    core.offer_frame('f1', 0.0)
    query, admission = core.next_query(0.0)
    assert admission is Admission.RUN and query.instruction == 'pick up the cup' and query.goal is None
    spec = core.goals.resolve('stack the blocks', 2, 0.0, True)
    run = core.goals.start(spec, 0.0, 'g')
    assert core.instruction == ''  # nothing runs after the goal until a new instruction
    core.offer_frame('f2', 0.1)
    query, _ = core.next_query(0.1)
    assert query.goal is run and query.instruction == 'stack the blocks'
    run.on_started('r1')
    core.offer_frame('f3', 0.2)
    assert core.next_query(0.2)[0] is None  # one query at a time
    assert run.on_chunk('r1') and core.next_query(0.2)[0].frame == 'f3'


def test_a_bad_instruction_clears_the_previous_one():
    core = PerceptionCore()
    core.set_instruction('pick up the cup')
    with pytest.raises(ValueError, match='instruction rejected'):
        core.set_instruction('   ')
    core.offer_frame('f', 0.0)
    assert core.next_query(0.0) == (None, Admission.NO_INSTRUCTION)


def test_perception_clock_start_a_long_rate_limit_still_runs_the_first_query():
    core = PerceptionCore(PerceptionConfig(intake=IntakeConfig(min_period_s=3600.0)))
    core.set_instruction('pick up the cup')
    core.offer_frame('f', 0.0)
    assert core.next_query(0.0)[1] is Admission.RUN
    core.offer_frame('g', 1.0)
    assert core.next_query(1.0)[1] is Admission.RATE_LIMITED


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 200), st.integers(8, 200), st.integers(0, 128))
def test_model_image_respects_the_side_limit(w, h, limit):
    rgb = np.zeros((h, w, 3), np.uint8)
    out, affine = model_image(rgb, ModelImageConfig(max_image_side_px=limit, resize_method='area'))
    if limit and max(w, h) > limit:
        assert max(out.shape[:2]) <= limit + 1 and affine is not None
    else:
        assert out is rgb and affine is None


# -- goal runs ---------------------------------------------------------------------------------------------
def test_goal_steps_report_progress_and_end_completed():
    goals = GoalRuns(GoalBounds(default_max_steps=1))
    run = goals.start(goals.resolve('pick up the cup', 0, 0.0, False), 5.0)
    assert goals.step(run, 5.0, cancel_requested=False, node_active=True).outcome is None
    run.on_started('r')
    step = goals.step(run, 5.1, cancel_requested=False, node_active=True)
    assert step.progress.step == 1 and not step.ended
    assert goals.on_trace('r', 'trace-msg') and not goals.on_trace('other', 'x')
    assert goals.on_chunk('r', 'chunk-msg')
    step = goals.step(run, 5.2, cancel_requested=False, node_active=True)
    assert step.latest == {'trace': 'trace-msg', 'chunk': 'chunk-msg'}
    assert step.outcome == (Outcome.COMPLETED, '') and goals.current is None
    assert ending(Outcome.COMPLETED, False) is Ending.SUCCEED


def test_a_newer_goal_preempts_and_cancel_and_deactivate_end_goals():
    goals = GoalRuns()
    first = goals.start(goals.resolve('pick up the cup', 3, 10.0, True), 0.0)
    second = goals.start(goals.resolve('put it down', 3, 10.0, True), 0.0)
    assert goals.step(first, 0.0, cancel_requested=False, node_active=True).outcome[0] is Outcome.CANCELED
    assert ending(Outcome.CANCELED, False) is Ending.ABORT  # preempted: the client did not ask
    assert goals.current is second
    assert goals.step(second, 0.0, cancel_requested=True, node_active=True).outcome[0] is Outcome.CANCELED
    assert ending(Outcome.CANCELED, True) is Ending.CANCELED
    third = goals.start(goals.resolve('put it down', 3, 10.0, True), 0.0)
    assert goals.step(third, 0.0, cancel_requested=False, node_active=False).outcome[0] is Outcome.FAILED


def test_goal_clock_start_a_goal_started_at_zero_times_out_after_its_timeout():
    goals = GoalRuns()
    run = goals.start(goals.resolve('pick up the cup', 3, 5.0, True), 0.0)
    assert goals.step(run, 0.0, cancel_requested=False, node_active=True).outcome is None
    assert goals.step(run, 4.99, cancel_requested=False, node_active=True).outcome is None
    assert goals.step(run, 5.0, cancel_requested=False, node_active=True).outcome[0] is Outcome.TIMED_OUT


def test_goal_rejections_are_bounded():
    with pytest.raises(GoalRejected) as err:
        GoalRuns().resolve('x' * 100_000, 1, 1.0, True)
    assert len(str(err.value)) < 500


# -- trace planning ------------------------------------------------------------------------------------------
UV = np.array([[10.0, 10.0], [30.0, 20.0]])


def test_lift_prefers_aligned_depth_then_the_table_then_marker_rays():
    config = TracePlanningConfig(table_plane_frame='base', camera_pose_in_table_frame='0 0 1 1 0 0 0')
    lift = plan_lift(UV, K, np.full((48, 64), 0.5, np.float32), lambda: pytest.fail('no lookup'), config)
    assert lift.method is LiftMethod.ALIGNED_DEPTH and np.allclose(lift.points[:, 2], 0.5)
    lift = plan_lift(UV, K, None, lambda: pytest.fail('fixed pose: no lookup'), config)
    assert lift.method is LiftMethod.TABLE_PLANE and lift.in_table_frame and np.allclose(lift.points[:, 2], 0.0)
    lift = plan_lift(UV, K, None, lambda: None, TracePlanningConfig())
    assert lift.method is LiftMethod.NONE and lift.points is None and np.allclose(lift.marker_points[:, 2], 1.0)
    assert plan_lift(UV, None, None, lambda: None, config) == type(lift)()


def test_a_failed_table_lookup_is_reported_and_markers_fall_back():
    def lookup():
        raise LookupError('no transform base <- camera')
    lift = plan_lift(UV, K, None, lookup, TracePlanningConfig(table_plane_frame='base'))
    assert lift.method is LiftMethod.NONE and 'table-plane lift skipped' in lift.error
    assert lift.marker_points is not None
    nan_depth = np.full((48, 64), np.nan, np.float32)
    lift = plan_lift(UV, K, nan_depth, lookup, TracePlanningConfig(table_plane_frame='base'))
    assert lift.points is None and not lift.error  # depth present but missing there: no table lift


def test_edits_get_the_next_revision_and_unknown_requests_a_bounded_error():
    planning = TracePlanning(limit=2)
    planning.on_perception(PerceptionRef('a', (256, 256), [], 'msg-a'))
    planning.planned('a')
    assert planning.edit('', [(10, 10), (20, 20)]).revision == 1   # '' : the latest request
    assert planning.edit('a', [(10, 10), (20, 20)]).revision == 2
    with pytest.raises(ValueError) as err:
        planning.edit('x' * 100_000, [(1, 1)])
    assert len(str(err.value)) < 300
    for rid in ('b', 'c'):
        planning.on_perception(PerceptionRef(rid, (256, 256), [], None))
    with pytest.raises(ValueError, match='unknown request'):
        planning.lookup('a')  # forgotten: the planner keeps the last `limit`


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.floats(allow_nan=True, allow_infinity=True, width=32)), min_size=1, max_size=6))
def test_model_space_points_are_in_range_or_refused(points):
    planning = TracePlanning()
    try:
        out = planning.to_model_space('', points, source_pixels=False)
    except ValueError:
        return
    assert all(0 <= v <= 255 for p in out for v in p)


# -- action decoding -------------------------------------------------------------------------------------------
def test_act_plans_resume_at_the_right_stage():
    assert plan_act(True, True).resume is None and not plan_act(True, True).use_trace_points
    assert plan_act(True, False).resume == 'trace'
    assert plan_act(False, False).resume == 'depth' and plan_act(False, True).use_trace_points


def test_multi_rate_acts_once_per_new_frame_and_stops_with_an_old_trace():
    core = ActionDecoding(ActionDecodingConfig(multi_rate_hz=10.0, multi_rate_max_trace_age_s=5.0))
    assert core.tick(0.0) is None
    core.on_trace('trace', 'r', 100.0, True)
    core.on_frame('frame1', (100, 0))
    assert core.tick(100.1) is None  # the trace's perception was not seen
    core.on_perception('r', 'perception')
    step = core.tick(100.1)
    assert step.request_id == 'r-mr1' and step.frame == 'frame1'
    assert core.tick(100.2) is None  # the same frame
    core.on_frame('frame2', (100, 5))
    assert core.tick(105.1) is None  # the trace is too old
    core.on_trace('trace2', 'r', 105.0, False)
    assert core.tick(105.1) is None  # a trace without points


def test_multi_rate_clock_start_a_frame_stamped_zero_is_acted_on():
    core = ActionDecoding(ActionDecodingConfig(multi_rate_hz=10.0))
    core.on_perception('r', 'p')
    core.on_trace('t', 'r', 0.0, True)
    core.on_frame('f', (0, 0))
    assert core.tick(0.0).request_id == 'r-mr1'
    assert core.tick(0.0) is None


def test_perception_for_an_unseen_request_is_a_bounded_error():
    with pytest.raises(ValueError) as err:
        ActionDecoding().perception_for('y' * 50_000)
    assert len(str(err.value)) < 300


def test_recent_keeps_the_newest():
    recent = Recent(2)
    for k in 'abc':
        recent.put(k, k)
    assert list(recent) == ['b', 'c']
