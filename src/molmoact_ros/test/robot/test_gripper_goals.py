"""GripperGoalTracker: which GripperCommand goals a sink sends, when, and what a halt cancels."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_ros.robot.executor import GripperGoal, GripperGoalOutcome, GripperGoalTracker


def test_a_goal_only_when_the_command_changes():
    t = GripperGoalTracker(max_effort=20.0)
    first = t.request(0.04)
    assert first == GripperGoal(1, 0.04, 20.0)
    assert t.request(0.04) is None and t.request(0.04 + 1e-9) is None
    assert t.request(None) is None and t.request(math.nan) is None
    second = t.request(0.0)
    assert second == GripperGoal(2, 0.0, 20.0)
    assert t.sent == 2 and t.in_flight == {1, 2} and t.target == 0.0


def test_server_not_ready_forgets_so_the_next_step_retries():
    t = GripperGoalTracker()
    goal = t.request(0.5)
    t.not_sent(goal)
    assert t.sent == 0 and t.target is None and t.in_flight == frozenset()
    assert t.request(0.5) == GripperGoal(2, 0.5, 0.0)


def test_halt_cancels_what_is_in_flight_and_resends_nothing():
    t = GripperGoalTracker()
    a = t.request(0.04)
    assert t.accepted(a.seq) is False
    b = t.request(0.0)           # sent, acceptance not back yet
    assert t.halt() == (a.seq,)  # accepted goals are cancelled now ...
    assert t.target is None
    assert t.accepted(b.seq) is True  # ... and a goal accepted after the halt is cancelled on acceptance
    t.finished(a.seq, GripperGoalOutcome.CANCELED)
    t.finished(b.seq, GripperGoalOutcome.CANCELED)
    assert t.in_flight == frozenset() and t.counts[GripperGoalOutcome.CANCELED] == 2
    assert t.halt() == ()        # nothing in flight, nothing to cancel, nothing produced
    assert t.request(0.0) == GripperGoal(3, 0.0, 0.0)  # the first command after resume is sent


def test_rejected_and_aborted_goals_are_not_resent():
    t = GripperGoalTracker()
    g = t.request(0.3)
    t.rejected(g.seq)
    assert t.request(0.3) is None and t.counts[GripperGoalOutcome.REJECTED] == 1
    h = t.request(0.1)
    t.accepted(h.seq)
    t.finished(h.seq, GripperGoalOutcome.ABORTED)
    assert t.request(0.1) is None and t.in_flight == frozenset()


@pytest.mark.parametrize('status, reached, stalled, outcome', [
    ('succeeded', True, False, GripperGoalOutcome.REACHED),
    ('succeeded', False, False, GripperGoalOutcome.SUCCEEDED),
    ('succeeded', False, True, GripperGoalOutcome.STALLED),
    ('aborted', False, True, GripperGoalOutcome.STALLED),
    ('aborted', False, False, GripperGoalOutcome.ABORTED),
    ('canceled', True, True, GripperGoalOutcome.CANCELED),
])
def test_outcome(status, reached, stalled, outcome):
    assert GripperGoalTracker.outcome(status, reached, stalled) is outcome


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        GripperGoalTracker(max_effort=-1.0)
    with pytest.raises(ValueError):
        GripperGoalTracker(max_effort=math.inf)
    with pytest.raises(ValueError):
        GripperGoalTracker(tolerance=-0.1)


EVENTS = st.lists(st.one_of(
    st.tuples(st.just('step'), st.sampled_from([None, 0.0, 0.04, 0.02, math.nan])),
    st.tuples(st.just('halt'), st.none()),
    st.tuples(st.just('accept'), st.none()),
    st.tuples(st.just('finish'), st.none()),
    st.tuples(st.just('not_ready'), st.none())), max_size=60)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_property_goals_follow_changes_and_halts(events):
    """Against a reference model: a goal iff the value differs from the last one sent since the last halt;
    a halt cancels exactly the accepted goals in flight, later acceptances of older goals are cancelled."""
    t = GripperGoalTracker(max_effort=5.0, tolerance=0.0)
    last = None                  # model: last position sent since the last halt
    pending, active, doomed = [], set(), set()
    last_goal = None
    for kind, value in events:
        if kind == 'step':
            goal = t.request(value)
            should = value is not None and not math.isnan(value) and value != last
            assert (goal is not None) == should
            if goal is not None:
                assert goal.position == value and goal.max_effort == 5.0
                last, last_goal = value, goal
                pending.append(goal.seq)
        elif kind == 'not_ready' and last_goal is not None and last_goal.seq in pending:
            t.not_sent(last_goal)
            pending.remove(last_goal.seq)
            last, last_goal = None, None
        elif kind == 'halt':
            cancelled = t.halt()
            assert set(cancelled) == active
            doomed |= set(pending)
            last = None
        elif kind == 'accept' and pending:
            seq = pending.pop(0)
            assert t.accepted(seq) is (seq in doomed)
            if seq not in doomed:
                active.add(seq)
        elif kind == 'finish' and active:
            seq = min(active)
            active.discard(seq)
            t.finished(seq, GripperGoalOutcome.REACHED)
        assert t.in_flight == frozenset(pending) | frozenset(active)
        assert t.target == last
