"""The perception stage's frame intake and inference admission (cores/intake.py), handed the time."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_ros.cores.intake import Admission, FrameIntake, IntakeConfig


def test_first_request_runs_on_a_freshly_booted_clock_whatever_the_rate_limit():
    # A monotonic clock that started near zero (a robot computer that just booted) and a rate limit far
    # longer than the uptime: the first inference must still run (it was refused for an hour before).
    intake = FrameIntake(IntakeConfig(min_period_s=3600.0))
    intake.offer('frame', now_s=0.5)
    taken = intake.take(now_s=0.6, has_instruction=True)
    assert taken.admission is Admission.RUN and taken.frame == 'frame'
    # ... and the next one waits for the period.
    intake.offer('frame2', now_s=1.0)
    assert intake.take(now_s=1.1, has_instruction=True).admission is Admission.RATE_LIMITED
    assert intake.take(now_s=3600.6, has_instruction=True).admission is Admission.FRAME_TOO_OLD


@pytest.mark.parametrize('start_s', [0.0, 2.0**-20, 0.25, 59.0, 1e6])  # exact in binary
def test_clock_start_value_does_not_change_decisions(start_s):
    intake = FrameIntake(IntakeConfig(min_period_s=2.0, max_frame_age_s=1.0))
    intake.offer('a', start_s)
    assert intake.take(start_s, True).admission is Admission.RUN
    intake.offer('b', start_s + 1.0)
    assert intake.take(start_s + 1.5, True).admission is Admission.RATE_LIMITED
    assert intake.take(start_s + 2.0, True).frame == 'b'


def test_rules_in_order():
    intake = FrameIntake(IntakeConfig(min_period_s=0.0, max_frame_age_s=1.0))
    assert intake.take(0.0, has_instruction=True).admission is Admission.NO_FRAME
    intake.offer('a', 0.0)
    # No instruction: the frame stays.
    assert intake.take(0.1, has_instruction=False).admission is Admission.NO_INSTRUCTION
    assert intake.has_frame
    # Superseded frames are counted; the newest wins.
    assert intake.offer('b', 0.2) is True
    assert intake.superseded == 1
    assert intake.take(0.3, True).frame == 'b'
    assert not intake.has_frame
    # A frame that waited too long is dropped and counted.
    intake.offer('c', 1.0)
    taken = intake.take(2.5, True)
    assert taken.admission is Admission.FRAME_TOO_OLD and taken.frame is None and intake.too_old == 1
    assert not intake.has_frame


def test_reset_forgets_the_rate_limit_and_the_frame():
    intake = FrameIntake(IntakeConfig(min_period_s=100.0))
    intake.offer('a', 5.0)
    assert intake.take(5.0, True).admission is Admission.RUN
    intake.offer('b', 6.0)
    intake.reset()
    assert not intake.has_frame and intake.last_start_s is None
    intake.offer('c', 7.0)
    assert intake.take(7.0, True).frame == 'c'


@pytest.mark.parametrize('kwargs', [dict(min_period_s=-1.0), dict(min_period_s=float('nan')),
                                    dict(max_frame_age_s=0.0), dict(max_frame_age_s=float('inf'))])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        IntakeConfig(**kwargs)


events = st.lists(st.tuples(st.sampled_from(['offer', 'take', 'take_no_instruction']),
                            st.floats(min_value=0.0, max_value=5.0)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(start=st.floats(min_value=0.0, max_value=1e7), period=st.floats(min_value=0.0, max_value=1e4),
       age=st.floats(min_value=0.01, max_value=60.0), steps=events)
def test_property_runs_respect_the_period_and_the_age(start, period, age, steps):
    """Whatever the clock's start: inference starts are >= min_period_s apart, the first admitted take
    is never rate-limited, every frame run is at most max_frame_age_s old, and frames are counted."""
    intake = FrameIntake(IntakeConfig(min_period_s=period, max_frame_age_s=age))
    now, runs, offered, taken_frames = start, [], 0, 0
    for kind, dt in steps:
        now += dt
        if kind == 'offer':
            intake.offer(offered, now)
            offered += 1
            continue
        had_frame, ran_before = intake.has_frame, bool(runs)
        t = intake.take(now, has_instruction=(kind == 'take'))
        if t.admission is Admission.RUN:
            assert now - t.arrived_s <= age
            runs.append(now)
            taken_frames += 1
        if kind == 'take' and had_frame and not ran_before and t.admission is not Admission.FRAME_TOO_OLD:
            assert t.admission is Admission.RUN  # nothing ran before: never rate-limited
        if t.admission is Admission.FRAME_TOO_OLD:
            assert now - t.arrived_s > age
    assert all(b - a >= period for a, b in zip(runs, runs[1:]))
    # Every offered frame is run, superseded, dropped as too old, or still pending.
    assert taken_frames + intake.superseded + intake.too_old + int(intake.has_frame) == offered
