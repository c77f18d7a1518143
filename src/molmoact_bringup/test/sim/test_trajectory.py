"""JointTrajectoryFollower: joint_trajectory_controller semantics, time passed in (no ROS, no MuJoCo)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_bringup.sim.trajectory import (JointTrajectoryCommand, JointTrajectoryFollower,
                                             TrajectoryPoint, TrajectoryRejected)

NAMES = ('a', 'b', 'c')
HOME = (0.0, 1.0, -1.0)


def cmd(points, names=NAMES, start=0.0):
    return JointTrajectoryCommand(joint_names=tuple(names), start_time_s=start, points=tuple(
        TrajectoryPoint(t, tuple(p), tuple(v) if v is not None else ()) for t, p, v in points))


def follower():
    return JointTrajectoryFollower(NAMES, HOME)


def test_holds_the_initial_positions_until_a_trajectory_arrives():
    f = follower()
    for t in (0.0, 5.0, 100.0):
        sp = f.sample(t)
        np.testing.assert_array_equal(sp.positions_rad, HOME)
        np.testing.assert_array_equal(sp.velocities_rad_s, 0.0)
    assert not f.is_moving(100.0) and f.end_time_s() is None


def test_linear_interpolation_from_the_current_setpoint_then_through_the_points():
    f = follower()
    assert f.accept(cmd([(1.0, (1.0, 1.0, 0.0), None), (3.0, (3.0, 0.0, 0.0), None)]), now_s=10.0) == 2
    # anchor (now=10): HOME; point 0 at 11 s; point 1 at 13 s
    np.testing.assert_allclose(f.sample(10.5).positions_rad, (0.5, 1.0, -0.5))
    np.testing.assert_allclose(f.sample(10.5).velocities_rad_s, (1.0, 0.0, 1.0))
    np.testing.assert_allclose(f.sample(11.0).positions_rad, (1.0, 1.0, 0.0))
    np.testing.assert_allclose(f.sample(12.0).positions_rad, (2.0, 0.5, 0.0))
    np.testing.assert_allclose(f.sample(12.0).velocities_rad_s, (1.0, -0.5, 0.0))
    assert f.is_moving(12.9) and f.end_time_s() == pytest.approx(13.0)


def test_holds_the_last_point_with_zero_velocity_after_the_end():
    f = follower()
    f.accept(cmd([(0.5, (0.2, 0.3, 0.4), None)]), now_s=0.0)
    for t in (0.5, 0.6, 50.0):
        sp = f.sample(t)
        np.testing.assert_allclose(sp.positions_rad, (0.2, 0.3, 0.4))
        np.testing.assert_array_equal(sp.velocities_rad_s, 0.0)
    assert not f.is_moving(50.0)


def test_joint_order_of_the_message_is_mapped_to_the_controllers_order():
    f = follower()
    f.accept(cmd([(1.0, (30.0, 10.0, 20.0), None)], names=('c', 'a', 'b')), now_s=0.0)
    np.testing.assert_allclose(f.sample(1.0).positions_rad, (10.0, 20.0, 30.0))


def test_a_new_trajectory_replaces_the_current_one_from_where_the_setpoint_is():
    f = follower()
    f.accept(cmd([(2.0, (2.0, 1.0, -1.0), None)]), now_s=0.0)
    mid = f.sample(1.0).positions_rad  # halfway: (1, 1, -1)
    np.testing.assert_allclose(mid, (1.0, 1.0, -1.0))
    f.accept(cmd([(1.0, (1.0, 2.0, -1.0), None)]), now_s=1.0)
    np.testing.assert_allclose(f.sample(1.0).positions_rad, mid)  # continuous at the switch
    np.testing.assert_allclose(f.sample(1.5).positions_rad, (1.0, 1.5, -1.0))  # toward the new goal
    np.testing.assert_allclose(f.sample(5.0).positions_rad, (1.0, 2.0, -1.0))  # old goal forgotten


def test_header_stamp_sets_the_start_and_points_in_the_past_are_dropped():
    f = follower()
    traj = cmd([(1.0, (1.0, 1.0, 1.0), None), (2.0, (2.0, 2.0, 2.0), None), (4.0, (4.0, 4.0, 4.0), None)],
               start=100.0)
    # at 102.5 the first two points (101, 102) are past: anchor -> point 2 (due at 104)
    assert f.accept(traj, now_s=102.5) == 1
    np.testing.assert_allclose(f.sample(102.5).positions_rad, HOME)
    np.testing.assert_allclose(f.sample(103.25).positions_rad, np.add(HOME, np.subtract(4.0, HOME) / 2))
    np.testing.assert_allclose(f.sample(104.0).positions_rad, (4.0, 4.0, 4.0))
    # a future stamp: motion toward the first point starts now and arrives when it is due
    f2 = follower()
    f2.accept(cmd([(1.0, (1.0, 1.0, 1.0), None)], start=10.0), now_s=9.0)
    np.testing.assert_allclose(f2.sample(10.0).positions_rad, np.add(HOME, np.subtract(1.0, HOME) / 2))


def test_a_point_due_exactly_now_is_reached_at_once():
    f = follower()
    f.accept(cmd([(0.0, (0.5, 0.5, 0.5), None), (1.0, (1.5, 0.5, 0.5), None)]), now_s=3.0)
    np.testing.assert_allclose(f.sample(3.0).positions_rad, (0.5, 0.5, 0.5))
    np.testing.assert_allclose(f.sample(3.5).positions_rad, (1.0, 0.5, 0.5))
    f.accept(cmd([(0.0, (7.0, 7.0, 7.0), None)]), now_s=5.0)  # a single point due now: go and hold
    np.testing.assert_allclose(f.sample(5.0).positions_rad, (7.0, 7.0, 7.0))
    assert not f.is_moving(5.0)


def test_an_empty_trajectory_stops_and_holds_the_current_setpoint():
    f = follower()
    f.accept(cmd([(2.0, (2.0, 1.0, -1.0), None)]), now_s=0.0)
    assert f.accept(cmd([], names=()), now_s=1.0) == 0
    for t in (1.0, 3.0):
        np.testing.assert_allclose(f.sample(t).positions_rad, (1.0, 1.0, -1.0))


def test_cubic_interpolation_with_velocities_matches_knots_and_is_smooth():
    f = follower()
    f.accept(cmd([(1.0, (1.0, 1.0, 0.0), (1.0, 0.0, 0.5)), (2.0, (2.0, 2.0, 0.0), (0.0, 0.0, 0.0))]),
             now_s=0.0)
    sp = f.sample(1.0)
    np.testing.assert_allclose(sp.positions_rad, (1.0, 1.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(sp.velocities_rad_s, (1.0, 0.0, 0.5), atol=1e-12)
    np.testing.assert_allclose(f.sample(0.0).velocities_rad_s, 0.0, atol=1e-12)  # from rest
    # the reported velocity is the derivative of the reported position
    for t in np.linspace(0.05, 1.95, 17):
        h = 1e-6
        fd = (f.sample(t + h).positions_rad - f.sample(t - h).positions_rad) / (2 * h)
        np.testing.assert_allclose(f.sample(t).velocities_rad_s, fd, atol=1e-5)
    # velocity is continuous across the knot
    np.testing.assert_allclose(f.sample(1.0 - 1e-7).velocities_rad_s, f.sample(1.0 + 1e-7).velocities_rad_s,
                               atol=1e-4)


BAD = [
    (cmd([(1.0, (0, 0, 0), None)], names=('a', 'b', 'x')), "unknown joint(s) ['x']"),
    (cmd([(1.0, (0, 0, 0, 0), None)], names=('a', 'b', 'c', 'a')), "duplicate joint name(s) ['a']"),
    (cmd([(1.0, (0, 0), None)], names=('a', 'b')), "missing joint(s) ['c']"),
    (cmd([(1.0, (0, math.nan, 0), None)]), 'NaN or infinity'),
    (cmd([(1.0, (0, math.inf, 0), None)]), 'NaN or infinity'),
    (cmd([(1.0, (0, 0), None)]), '2 positions for 3 joints'),
    (cmd([(1.0, (0, 0, 0), None), (1.0, (1, 1, 1), None)]), 'not after the previous point'),
    (cmd([(2.0, (0, 0, 0), None), (1.0, (1, 1, 1), None)]), 'not after the previous point'),
    (cmd([(-1.0, (0, 0, 0), None)]), 'time_from_start must be finite and >= 0'),
    (cmd([(math.nan, (0, 0, 0), None)]), 'time_from_start must be finite and >= 0'),
    (cmd([(1.0, (0, 0, 0), (0, 0, 0)), (2.0, (1, 1, 1), None)]), 'on every point or on none'),
    (cmd([(1.0, (0, 0, 0), (0, 1, 0))]), 'non-zero velocity'),
    (cmd([(1.0, (0, 0, 0), (0, 0, 0, 0))]), '4 velocities for 3 joints'),
    (cmd([(1.0, (0, 0, 0), None)], start=-5.0), 'header stamp'),
    (cmd([(1.0, (0, 0, 0), None)], start=1.0), 'every point is in the past'),
]


@pytest.mark.parametrize('bad,reason', BAD)
def test_invalid_trajectories_are_rejected_with_a_reason_and_the_current_one_continues(bad, reason):
    f = follower()
    f.accept(cmd([(10.0, (10.0, 1.0, -1.0), None)]), now_s=0.0)
    with pytest.raises(TrajectoryRejected) as e:
        f.accept(bad, now_s=5.0)
    assert reason in str(e.value)
    np.testing.assert_allclose(f.sample(6.0).positions_rad, (6.0, 1.0, -1.0))
    np.testing.assert_allclose(f.sample(10.0).positions_rad, (10.0, 1.0, -1.0))


def test_the_follower_itself_needs_unique_names_and_finite_initial_positions():
    with pytest.raises(ValueError):
        JointTrajectoryFollower(('a', 'a'), (0, 0))
    with pytest.raises(ValueError):
        JointTrajectoryFollower(('a', 'b'), (0, math.nan))
    with pytest.raises(ValueError):
        JointTrajectoryFollower(('a', 'b'), (0,))


times = st.lists(st.floats(0.01, 2.0), min_size=1, max_size=6)
values = st.floats(-3.0, 3.0)


@settings(max_examples=60, deadline=None)
@given(steps=times, data=st.data(), now=st.floats(0.0, 100.0))
def test_linear_trajectories_pass_through_every_point_and_stay_between_neighbours(steps, data, now):
    tfs = np.cumsum(steps)
    pts = [tuple(data.draw(values) for _ in NAMES) for _ in tfs]
    f = follower()
    f.accept(cmd([(float(t), p, None) for t, p in zip(tfs, pts)]), now_s=now)
    knots_t = np.concatenate([[now], now + tfs])
    knots_p = np.vstack([HOME, pts])
    for t, p in zip(knots_t, knots_p):
        np.testing.assert_allclose(f.sample(t).positions_rad, p, atol=1e-9)
    for t in np.linspace(now, knots_t[-1], 41):
        i = min(np.searchsorted(knots_t, t, side='right') - 1, len(knots_t) - 2)
        lo = np.minimum(knots_p[i], knots_p[i + 1]) - 1e-9
        hi = np.maximum(knots_p[i], knots_p[i + 1]) + 1e-9
        pos = f.sample(t).positions_rad
        assert np.all(pos >= lo) and np.all(pos <= hi)
    np.testing.assert_allclose(f.sample(knots_t[-1] + 1.0).positions_rad, knots_p[-1])
