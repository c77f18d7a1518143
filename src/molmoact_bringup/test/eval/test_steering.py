"""The steering trial's core: virtual cube placement, waypoint progression, closest approach, projection."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_bringup.eval.steering import SteeringConfig, SteeringTrial, steering_target, to_pixels
from molmoact_ros.robot.geometry import CameraIntrinsics

CENTRE = np.array([0.0, 0.0, 0.8])
CFG = SteeringConfig()


@settings(max_examples=300, deadline=None)
@given(dx=st.floats(-0.10, 0.10), dy=st.floats(-0.10, 0.10), seed=st.integers(0, 2 ** 31))
def test_the_virtual_cube_is_offset_as_configured_and_stays_in_the_region(dx, dy, seed):
    cube = CENTRE + [dx, dy, 0.02]
    t = steering_target(cube, CENTRE, seed, CFG)
    d = float(np.linalg.norm(t.cube_m[:2] - cube[:2]))
    assert CFG.min_offset_m - 1e-9 <= d <= CFG.max_offset_m + 1e-9 and math.isclose(d, t.offset_m, abs_tol=1e-9)
    assert np.all(np.abs(t.cube_m[:2] - CENTRE[:2]) <= CFG.region_half_width_m + 1e-12)
    assert t.cube_m[2] == cube[2]  # on the table, as the real cube
    above, at, lifted = t.waypoints_m
    assert np.allclose(above, t.cube_m + [0, 0, CFG.approach_height_m]) and np.allclose(at, t.cube_m)
    assert np.allclose(t.end_m, t.cube_m + [0, 0, CFG.lift_height_m])
    # The same seed, the same trial.
    assert np.array_equal(steering_target(cube, CENTRE, seed, CFG).cube_m, t.cube_m)


def test_no_room_for_the_offset_is_a_clear_error():
    with pytest.raises(ValueError, match='stays within'):
        steering_target(CENTRE, CENTRE, 0, SteeringConfig(min_offset_m=0.5, max_offset_m=0.6))
    with pytest.raises(ValueError, match='max_offset_m'):
        SteeringConfig(min_offset_m=0.2, max_offset_m=0.1)
    with pytest.raises(ValueError, match='reached_m'):
        SteeringConfig(reached_m=float('nan'))


def test_waypoints_drop_out_in_order_and_the_closest_approach_is_to_the_end_point():
    t = steering_target(CENTRE + [0, 0, 0.02], CENTRE, 3, CFG)
    trial = SteeringTrial(t, CFG)
    start = CENTRE + [0.0, 0.3, 0.3]
    assert len(trial.trace_m(start)) == 4 and np.allclose(trial.trace_m(start)[0], start)
    # Passing near the grasp point first does not skip the approach waypoint (order kept).
    trial.observe(t.waypoints_m[1])
    assert trial.next_waypoint == 0
    trial.observe(t.waypoints_m[0] + [0.01, 0, 0])
    assert trial.next_waypoint == 1 and len(trial.trace_m(start)) == 3
    trial.observe(t.waypoints_m[1])
    assert trial.next_waypoint == 2 and len(trial.trace_m(start)) == 2  # the end point always stays
    trial.observe(t.end_m)
    assert trial.next_waypoint == 2
    assert not SteeringTrial(t, CFG).steered
    assert math.isclose(trial.closest_m, 0.0, abs_tol=1e-12) and trial.steered
    trial.observe([np.nan, 0, 0])  # a bad sample changes nothing
    assert trial.closest_m == 0.0


@settings(max_examples=200, deadline=None)
@given(path=st.lists(st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(0.7, 1.3)), min_size=1,
                     max_size=30))
def test_the_closest_approach_is_the_minimum_distance_over_the_observed_path(path):
    t = steering_target(CENTRE + [0.05, -0.02, 0.02], CENTRE, 11, CFG)
    trial = SteeringTrial(t, CFG)
    for p in path:
        trial.observe(p)
    expected = min(float(np.linalg.norm(np.asarray(p) - t.end_m)) for p in path)
    assert math.isclose(trial.closest_m, expected, rel_tol=1e-12, abs_tol=1e-12)
    assert trial.steered == (expected < CFG.success_m)


def test_points_project_to_source_pixels_or_none_when_not_in_view():
    k = CameraIntrinsics(fx=200.0, fy=200.0, cx=160.0, cy=120.0, width=320, height=240)
    camera = np.eye(4)  # the optical frame is the base frame: z forward
    uv = to_pixels(np.array([[0.0, 0.0, 1.0], [0.1, -0.05, 1.0]]), camera, k)
    assert uv == [(160.0, 120.0), (180.0, 110.0)]
    assert to_pixels(np.array([[0.0, 0.0, -1.0]]), camera, k) is None      # behind
    assert to_pixels(np.array([[2.0, 0.0, 1.0]]), camera, k) is None       # outside the image
    moved = np.eye(4)
    moved[:3, 3] = [0.0, 0.0, -1.0]  # the camera 1 m behind the base origin
    assert to_pixels(np.array([[0.0, 0.0, 1.0]]), moved, k) == [(160.0, 120.0)]
