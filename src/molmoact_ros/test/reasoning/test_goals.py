"""molmoact_ros.reasoning.goals: ExecuteInstruction goal validation and step accounting."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.reasoning.goals import GoalBounds, GoalRejected, GoalRun, Outcome, Stage, resolve_goal

BOUNDS = GoalBounds(default_max_steps=3, max_steps_limit=10, default_timeout_s=5.0, max_timeout_s=60.0)


def test_defaults_and_normalisation():
    spec = resolve_goal('  pick   up\tthe cup ', 0, 0.0, True, bounds=BOUNDS)
    assert spec.instruction == 'pick up the cup' and spec.max_steps == 3 and spec.timeout_s == 5.0
    assert spec.execute and spec.max_translation_m_per_step == 0.0
    spec = resolve_goal('x', 10, 60.0, False, 0.01, 0.1, bounds=BOUNDS)
    assert (spec.max_steps, spec.timeout_s, spec.execute) == (10, 60.0, False)
    assert (spec.max_translation_m_per_step, spec.max_rotation_rad_per_step) == (0.01, 0.1)


@pytest.mark.parametrize('kwargs, words', [
    (dict(instruction='   '), 'instruction'),
    (dict(instruction='x' * 100_000), 'instruction'),
    (dict(max_steps=11), 'max_steps'),
    (dict(timeout_s=61.0), 'timeout_s'),
    (dict(timeout_s=math.nan), 'timeout_s'),
    (dict(timeout_s=-1.0), 'timeout_s'),
    (dict(max_translation_m_per_step=-0.1), 'max_translation_m_per_step'),
    (dict(max_rotation_rad_per_step=math.inf), 'max_rotation_rad_per_step'),
])
def test_rejections_say_why(kwargs, words):
    goal = dict(instruction='pick', max_steps=0, timeout_s=0.0, execute=False)
    goal.update(kwargs)
    with pytest.raises(GoalRejected, match=words):
        resolve_goal(bounds=BOUNDS, **goal)


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        GoalBounds(default_max_steps=0)
    with pytest.raises(ValueError):
        GoalBounds(default_timeout_s=100.0, max_timeout_s=10.0)


def run(max_steps=2, timeout_s=10.0):
    return GoalRun(resolve_goal('pick', max_steps, timeout_s, True, bounds=BOUNDS), started_at_s=100.0, goal_id='g')


def test_one_query_at_a_time_and_completion():
    r = run(max_steps=2)
    assert r.may_start() and r.take_progress() is None and r.outcome(100.5) is None
    r.on_started('a')
    assert not r.may_start()  # one at a time
    assert r.take_progress().stage == Stage.PERCEPTION and r.take_progress() is None
    assert not r.on_trace('other') and not r.on_chunk('other')  # other requests are ignored
    assert r.on_perceived('a') and r.take_progress().stage == Stage.PLANNING
    assert r.on_trace('a') and r.take_progress().stage == Stage.ACTION
    assert r.on_chunk('a') and r.completed == 1 and r.may_start()
    assert not r.on_chunk('a')  # a second chunk of the same request (an edit) is not another step
    r.on_started('b')
    progress = r.take_progress()
    assert (progress.step, progress.request_id) == (2, 'b')
    r.on_chunk('b')
    assert not r.may_start()  # max_steps reached
    assert r.outcome(101.0) == (Outcome.COMPLETED, '') and r.last_request_id == 'b'


def test_outcome_precedence():
    r = run()
    assert r.outcome(110.0)[0] == Outcome.TIMED_OUT and '0 of 2' in r.outcome(110.0)[1]
    assert r.outcome(101.0, node_active=False)[0] == Outcome.FAILED
    r.fail('perception failed: boom')
    r.fail('second reason is not kept')
    assert r.outcome(101.0) == (Outcome.FAILED, 'perception failed: boom') and not r.may_start()
    r.preempt()
    assert r.outcome(101.0) == (Outcome.CANCELED, 'preempted by a newer goal')
    assert r.outcome(101.0, cancel_requested=True) == (Outcome.CANCELED, 'cancelled by the client')


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(['start', 'perceived', 'trace', 'chunk']),
                          st.sampled_from(['a', 'b', 'c', 'd', 'e'])), max_size=40),
       st.integers(1, 4))
def test_never_more_than_max_steps_and_never_two_at_once(events, max_steps):
    r = run(max_steps=max_steps)
    for kind, rid in events:
        if kind == 'start':
            if r.may_start():  # the perception node only starts when allowed
                r.on_started(rid)
        else:
            getattr(r, {'perceived': 'on_perceived', 'trace': 'on_trace', 'chunk': 'on_chunk'}[kind])(rid)
        assert r.completed <= len(r.request_ids) <= max_steps
        assert len(r.request_ids) - r.completed <= 1
    done = r.outcome(100.0)
    assert (done is not None) == (r.completed == max_steps)
