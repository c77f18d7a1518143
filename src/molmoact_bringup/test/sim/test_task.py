"""The simulated arm's task core (molmoact_bringup.sim.task), without MuJoCo or ROS: the lift success rule,
seeded cube placement and the episode bookkeeping (unit + hypothesis)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_bringup.sim.task import (MAX_REASON_CHARS, CubeRandomization, GoalSuccess, LiftSuccess,
                                       ObjectPose, TaskMonitor, TIME_TOLERANCE_S, bound_reason, check_seed, poses_by_name)

REST_Z = -0.092


def cube(z, x=0.56, y=0.0):
    return {'cube': ObjectPose('cube', (x, y, z))}


def lift_monitor(lift_height_m=0.04, hold_s=0.5, seed=0, t0=0.0):
    mon = TaskMonitor('lift', 'lift', 'pick up the red cube', LiftSuccess('cube', lift_height_m, hold_s))
    mon.begin(seed, t0, cube(REST_Z))
    return mon


# ---------------------------------------------------------------- the lift rule

def test_lift_needs_the_height_and_the_hold():
    mon = lift_monitor()
    s, changed = mon.update(0.1, cube(REST_Z + 0.039))
    assert not s.success and not changed and '0.039 m above rest (< 0.040 m)' in s.reason
    s, changed = mon.update(0.2, cube(REST_Z + 0.05))           # high enough, not held yet
    assert not s.success and not changed and 'for 0.00 s (< 0.50 s)' in s.reason
    s, changed = mon.update(0.69, cube(REST_Z + 0.05))
    assert not s.success and not s.succeeded and s.first_success_s is None
    s, changed = mon.update(0.7, cube(REST_Z + 0.06))           # 0.5 s since the first sample above
    assert s.success and changed and s.succeeded and s.first_success_s == pytest.approx(0.7)
    assert s.reason == 'cube 0.060 m above rest (>= 0.040 m) for 0.50 s (>= 0.50 s)'
    s, changed = mon.update(0.8, cube(REST_Z + 0.06))
    assert s.success and not changed
    s, changed = mon.update(0.9, cube(REST_Z + 0.01))           # dropped
    assert not s.success and changed and s.succeeded and s.first_success_s == pytest.approx(0.7)
    s, _ = mon.update(1.0, cube(REST_Z + 0.06))                 # lifted again: the hold starts over
    assert not s.success and s.first_success_s == pytest.approx(0.7)
    s, changed = mon.update(1.5, cube(REST_Z + 0.06))
    assert s.success and changed and s.first_success_s == pytest.approx(0.7)


def test_a_dip_below_the_height_restarts_the_hold():
    mon = lift_monitor(hold_s=0.3)
    for t, dz in ((0.0, 0.05), (0.2, 0.05), (0.25, 0.03), (0.3, 0.05), (0.55, 0.05)):
        s, _ = mon.update(t, cube(REST_Z + dz))
        assert not s.success, (t, s.reason)
    assert mon.update(0.6, cube(REST_Z + 0.05))[0].success


def test_height_is_measured_from_the_rest_height_of_the_episode():
    mon = lift_monitor(hold_s=0.0)
    assert mon.update(0.0, cube(REST_Z + 0.04))[0].success      # exactly the height counts
    mon.begin(1, 0.0, cube(REST_Z + 0.03))                        # a cube resting higher (another table)
    assert not mon.update(0.1, cube(REST_Z + 0.06))[0].success
    assert mon.update(0.2, cube(REST_Z + 0.07))[0].success


def test_first_judgement_at_time_zero_is_a_real_time():
    # The episode's clock starts at 0: a success at t = 0 must read 0, not "never" (-1).
    mon = TaskMonitor('lift', 'lift', '', LiftSuccess(hold_s=0.0))
    s = mon.begin(3, 0.0, cube(REST_Z))
    assert not s.success and s.first_success_s is None
    mon2 = TaskMonitor('lift', 'lift', '', LiftSuccess(hold_s=0.0))
    mon2.begin(3, 0.0, cube(REST_Z))
    s, _ = mon2.update(0.0, cube(REST_Z + 0.1))
    assert s.succeeded and s.first_success_s == 0.0


def test_non_finite_and_missing_poses_are_no_success():
    mon = lift_monitor(hold_s=0.0)
    s, _ = mon.update(0.1, cube(math.nan))
    assert not s.success and 'not finite' in s.reason
    s, _ = mon.update(0.2, {})
    assert not s.success and 'unknown' in s.reason
    with pytest.raises(ValueError, match='finite starting pose'):
        mon.begin(1, 0.0, cube(math.inf))


@pytest.mark.parametrize('kwargs, message', [(dict(lift_height_m=0.0), 'lift_height_m'),
                                             (dict(lift_height_m=math.nan), 'lift_height_m'),
                                             (dict(hold_s=-1.0), 'hold_s'), (dict(hold_s=math.inf), 'hold_s')])
def test_lift_rule_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LiftSuccess(**kwargs)


# ---------------------------------------------------------------- episodes and seeds

def test_episodes_count_and_seeds_follow_on():
    mon = lift_monitor(seed=7)
    assert (mon.episode, mon.seed) == (0, 7)
    mon.update(1.0, cube(REST_Z + 0.1))
    s = mon.update(1.6, cube(REST_Z + 0.1))[0]
    assert s.succeeded
    seed = mon.next_seed(-1)
    assert seed == 8
    s = mon.begin(seed, 0.0, cube(REST_Z))
    assert (s.episode, s.seed, s.success, s.succeeded, s.first_success_s) == (1, 8, False, False, None)
    assert mon.update(0.0, cube(REST_Z))[1] is False   # begin() already handed out this episode
    assert mon.next_seed(42) == 42
    mon.begin(42, 0.0, cube(REST_Z))
    assert (mon.episode, mon.seed, mon.next_seed(-1)) == (2, 42, 43)


def test_a_new_episode_is_a_change_even_without_a_change_of_success():
    mon = lift_monitor()
    _, changed = mon.update(0.1, cube(REST_Z))
    assert not changed
    mon.begin(1, 0.0, cube(REST_Z))
    assert mon.status.episode == 1
    # begin() returns the status; the next update with the same success is not a change.
    assert not mon.update(0.1, cube(REST_Z))[1]


@pytest.mark.parametrize('seed, message', [(-2, 'out of range'), (True, 'must be an integer'),
                                           (1.5, 'must be an integer'), ('3', 'must be an integer'),
                                           (2**63, 'out of range')])
def test_bad_seeds_are_refused_and_nothing_changes(seed, message):
    mon = lift_monitor(seed=5)
    with pytest.raises(ValueError, match=message):
        mon.next_seed(seed)
    assert (mon.episode, mon.seed) == (0, 5)


def test_seed_range_of_a_task_with_few_initial_states():
    mon = TaskMonitor('libero', 't', '', GoalSuccess(), min_seed=0, max_seed=49)
    with pytest.raises(ValueError, match='first episode needs an explicit seed'):
        mon.next_seed(-1)
    mon.begin(49, 0.0, {})
    with pytest.raises(ValueError, match=r'next seed 50 is out of range \[0, 49\]'):
        mon.next_seed(-1)
    with pytest.raises(ValueError, match='out of range'):
        mon.begin(50, 0.0, {})
    assert (mon.episode, mon.seed) == (0, 49)


def test_libero_seeds_are_the_tasks_official_initial_states():
    """The libero scene's bookkeeping: a seed is an initial state 0..n-1, -1 the next one; past the last one
    (by -1 or by index) and any other bad value are refused with a reason naming the initial state, and
    nothing changes."""
    mon = TaskMonitor('libero', 't', '', GoalSuccess(), max_seed=49, seed_name='official initial state')
    with pytest.raises(ValueError, match='first episode needs an explicit official initial state'):
        mon.next_seed(-1)
    s = mon.begin(0, 0.0, {})
    assert (s.episode, s.seed, s.success) == (0, 0, False)
    for episode in range(1, 4):                      # the evaluator's episode i: initial state i
        seed = mon.next_seed(-1)
        s = mon.begin(seed, 0.0, {})
        assert (s.episode, s.seed, s.success) == (episode, episode, False)
    s = mon.begin(mon.next_seed(49), 0.0, {})
    assert (s.episode, s.seed) == (4, 49)
    for bad, reason in ((-1, r'the next official initial state 50 is out of range \[0, 49\] \(-1 after the last'),
                        (50, r'^official initial state 50 out of range \[0, 49\]$'),
                        (-2, r'^official initial state -2 out of range'),
                        (1.0, '^official initial state must be an integer, got 1.0'),
                        (True, 'must be an integer')):
        with pytest.raises(ValueError, match=reason):
            mon.next_seed(bad)
        assert (mon.episode, mon.seed) == (4, 49)
    with pytest.raises(ValueError, match='official initial state 50 out of range'):
        mon.begin(50, 0.0, {})
    assert (mon.episode, mon.seed, mon.status.seed) == (4, 49, 49)


def test_time_must_not_go_back_within_an_episode():
    mon = lift_monitor()
    mon.update(1.0, cube(REST_Z))
    with pytest.raises(ValueError, match='time went back'):
        mon.update(0.5, cube(REST_Z))
    with pytest.raises(ValueError, match='finite'):
        mon.update(math.nan, cube(REST_Z))
    mon.begin(1, 0.0, cube(REST_Z))       # a new episode restarts the clock
    mon.update(0.1, cube(REST_Z))


def test_goal_rule_passes_the_verdict_through():
    rule = GoalSuccess()
    mon = TaskMonitor('libero', 'task', 'do it', rule, max_seed=49)
    s = mon.begin(0, 0.0, {})
    assert not s.success and s.reason == 'not judged yet'
    rule.set(True, 'On(akita_black_bowl_1, plate_1): true')
    s, changed = mon.update(0.05, {})
    assert s.success and changed and s.first_success_s == pytest.approx(0.05)
    rule.set(False, 'x' * 2000)
    s, changed = mon.update(0.1, {})
    assert changed and not s.success and s.succeeded and len(s.reason) == MAX_REASON_CHARS


def test_objects_are_reported_in_order():
    poses = poses_by_name([ObjectPose('b', (1, 2, 3)), ObjectPose('a', (4, 5, 6))])
    mon = TaskMonitor('libero', 't', '', GoalSuccess(), max_seed=1)
    s = mon.begin(0, 0.0, poses)
    assert [o.name for o in s.objects] == ['b', 'a']


# ---------------------------------------------------------------- cube placement

def test_the_same_seed_gives_the_same_placement_and_others_differ():
    r = CubeRandomization()
    assert (r.xy_range_m, r.yaw_range_rad) == (0.10, math.pi)
    assert r.sample(123) == r.sample(123) == CubeRandomization().sample(123)
    assert r.sample(123) != r.sample(124)
    # Fixed by the seed, not by the process: numpy's PCG64 from default_rng(seed), documented stable.
    p = r.sample(0)
    assert (round(p.dx_m, 6), round(p.dy_m, 6), round(p.yaw_rad, 6)) == (0.027392, -0.046043, -2.884148)


def test_zero_ranges_put_the_cube_at_the_centre_unturned():
    p = CubeRandomization(0.0, 0.0).sample(99)
    assert (p.dx_m, p.dy_m, p.yaw_rad) == (0.0, 0.0, 0.0)


def test_placements_cover_the_ranges():
    r = CubeRandomization(0.1, math.pi)
    ps = [r.sample(s) for s in range(400)]
    for attr, lim in (('dx_m', 0.1), ('dy_m', 0.1), ('yaw_rad', math.pi)):
        v = np.array([getattr(p, attr) for p in ps])
        assert v.min() < -0.8 * lim and v.max() > 0.8 * lim and abs(v.mean()) < 0.15 * lim


@pytest.mark.parametrize('xy, yaw', [(-0.01, 1.0), (0.2, 1.0), (math.nan, 1.0), (0.1, 4.0), (0.1, -0.1)])
def test_randomization_ranges_are_validated(xy, yaw):
    with pytest.raises(ValueError, match='range'):
        CubeRandomization(xy, yaw)


def test_check_seed_and_bound_reason():
    assert check_seed(np.int64(4)) == 4
    with pytest.raises(ValueError):
        check_seed(-1)
    assert bound_reason('abc', 10) == 'abc'
    assert bound_reason('a' * 11, 10) == 'a' * 7 + '...'


# ---------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), xy=st.floats(0.0, 0.15), yaw=st.floats(0.0, math.pi))
def test_placements_stay_in_their_ranges_and_repeat(seed, xy, yaw):
    r = CubeRandomization(xy, yaw)
    p = r.sample(seed)
    assert abs(p.dx_m) <= xy and abs(p.dy_m) <= xy and abs(p.yaw_rad) <= yaw
    assert r.sample(seed) == p


heights = st.lists(st.tuples(st.floats(0.0, 0.2), st.floats(-0.05, 0.15)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps=heights, lift=st.floats(0.01, 0.1), hold=st.floats(0.0, 0.5))
def test_success_is_exactly_a_held_lift(steps, lift, hold):
    """Against a direct reading of the rule: success at sample k iff every sample from some j <= k to k is
    at or above the height and t_k - t_j >= hold (j the start of the current run above)."""
    mon = lift_monitor(lift_height_m=lift, hold_s=hold)
    t = 0.0
    times, dzs = [], []
    first = None
    previous_success = False
    for dt, dz in steps:
        t += dt
        s, changed = mon.update(t, cube(REST_Z + dz))
        times.append(t)
        dzs.append(dz)
        k = len(times) - 1
        j = k
        while j >= 0 and REST_Z + dzs[j] - REST_Z >= lift:
            j -= 1
        run_start = j + 1
        expected = run_start <= k and times[k] - times[run_start] >= hold - TIME_TOLERANCE_S
        assert s.success == expected, (times, dzs, s.reason)
        assert changed == (s.success != previous_success)
        previous_success = s.success
        if expected and first is None:
            first = t
        assert s.succeeded == (first is not None)
        assert s.first_success_s == first
        assert len(s.reason) <= MAX_REASON_CHARS


@settings(max_examples=100, deadline=None)
@given(seeds=st.lists(st.one_of(st.just(-1), st.integers(0, 1000)), min_size=1, max_size=10),
       first=st.integers(0, 1000))
def test_episode_counter_and_seed_sequence(seeds, first):
    mon = lift_monitor(seed=first)
    last = first
    for i, requested in enumerate(seeds, start=1):
        seed = mon.next_seed(requested)
        assert seed == (last + 1 if requested == -1 else requested)
        s = mon.begin(seed, 0.0, cube(REST_Z))
        assert (s.episode, s.seed, s.succeeded) == (i, seed, False)
        last = seed
