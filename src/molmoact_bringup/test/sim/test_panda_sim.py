"""The simulated Panda (MuJoCo + robosuite, OSMesa rendering on the CPU), without ROS.

Geometry is checked against independent sources: the rendered depth against the table plane, the
camera model against segmentation of known objects, the arm's frames against the suite's URDF
(Pinocchio forward kinematics).
"""

import math
from pathlib import Path

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from molmoact_bringup.sim import franka
from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig
from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, TrajectoryPoint, TrajectoryRejected
from molmoact_ros.robot.geometry import backproject, project, transform_points

URDF = Path(__file__).resolve().parents[2] / 'urdf' / 'panda.urdf'


@pytest.fixture(scope='module')
def sim():
    with PandaSim(SimConfig()) as s:
        yield s


@pytest.fixture
def fresh(sim):
    sim.reset(seed=0)
    return sim


def arm_command(positions, duration_s, start=0.0):
    return JointTrajectoryCommand(franka.ARM_JOINT_NAMES, (TrajectoryPoint(duration_s, tuple(positions)),),
                                  start_time_s=start)


def geoms_of(sim, *body_names):
    return sim.geom_ids_of_bodies(body_names)


def test_render_sizes_dtypes_and_plausible_content(fresh):
    frame = fresh.render()
    assert frame.rgb.shape == (240, 320, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.shape == (240, 320) and frame.depth_m.dtype == np.float32
    assert frame.rgb.flags['C_CONTIGUOUS'] and frame.rgb.std() > 20  # a scene, not a blank frame
    # A closed room: every pixel hits something between 0.3 and 6 m.
    assert np.all(np.isfinite(frame.depth_m))
    assert 0.3 < frame.depth_m.min() and frame.depth_m.max() < 6.0
    # The cube is red where segmentation says it is.
    seg = fresh.render_segmentation()
    cube = np.isin(seg, geoms_of(fresh, 'cube_main'))
    assert cube.sum() > 10
    r, g, b = (frame.rgb[cube][:, i].astype(float).mean() for i in range(3))
    assert r > 2 * g and r > 2 * b
    k = fresh.intrinsics
    assert (k.width, k.height) == (320, 240) and k.fx == k.fy
    assert k.fy == pytest.approx(120.0 / math.tan(math.radians(45.0) / 2))
    assert (k.cx, k.cy) == (159.5, 119.5)


def test_depth_is_metric_along_the_optical_axis_table_pixels_lie_on_the_table_plane(fresh):
    frame, seg = fresh.render(), fresh.render_segmentation()
    table = seg == int(np.flatnonzero([fresh.model.geom(i).name == 'table_visual'
                                       for i in range(fresh.model.ngeom)])[0])
    table[:, :2] = table[:, -2:] = table[:2] = table[-2:] = False
    vs, us = np.nonzero(table)
    assert len(us) > 5000
    pts_cam = backproject(np.stack([us, vs], 1).astype(float), frame.depth_m[vs, us], fresh.intrinsics)
    pts_base = transform_points(fresh.camera_pose().matrix, pts_cam)
    top = fresh.site_position_m('table_top')
    z = pts_base[:, 2]
    on_top = np.abs(z - top[2]) < 1e-3
    # Most table pixels are its top surface, exactly on the plane; the rest are its front and side
    # faces (0.05 m thick), below it.
    assert on_top.mean() > 0.9 and np.median(np.abs(z - top[2])) < 1e-5, np.median(np.abs(z - top[2]))
    assert np.all(z < top[2] + 2e-3) and np.all(z > top[2] - 0.05 - 2e-3)
    # and the top is where the scene puts it: 0.8 m x 0.8 m around its centre
    assert np.all(np.abs(pts_base[on_top, :2] - top[:2]) < 0.4 + 2e-3)
    assert 0.5 < np.median(frame.depth_m[table]) < 3.0


def test_projection_through_intrinsics_and_camera_pose_lands_on_the_objects(fresh):
    seg = fresh.render_segmentation()
    world_to_cam = np.linalg.inv(fresh.camera_pose().matrix)
    # The cube's centre projects onto the middle of the cube's pixels.
    cube_px = np.argwhere(np.isin(seg, geoms_of(fresh, 'cube_main')))[:, ::-1]
    cube_centre = fresh.body_pose('cube_main')[:3, 3]
    uv = project(transform_points(world_to_cam, cube_centre), fresh.intrinsics)
    assert np.linalg.norm(uv - cube_px.mean(0)) < 2.0, (uv, cube_px.mean(0))
    # With the gripper closed, the TCP (between the fingertips) projects onto the fingers' pixels, at
    # the depth the camera measures there.
    fresh.set_gripper(0.0)
    fresh.step_for(0.5)
    frame, seg = fresh.render(), fresh.render_segmentation()
    fingers = np.isin(seg, geoms_of(fresh, 'gripper0_right_leftfinger', 'gripper0_right_rightfinger',
                                    'gripper0_right_finger_joint1_tip', 'gripper0_right_finger_joint2_tip'))
    finger_px = np.argwhere(fingers)[:, ::-1]
    tcp_cam = transform_points(world_to_cam, fresh.ee_pose().translation_m)
    tcp = project(tcp_cam, fresh.intrinsics)
    assert 0 <= tcp[0] < 320 and 0 <= tcp[1] < 240
    nearest = finger_px[np.argmin(np.linalg.norm(finger_px - tcp, axis=1))]
    assert np.linalg.norm(nearest - tcp) < 3.0, (tcp, nearest)
    assert np.all(finger_px.min(0) <= tcp + 1) and np.all(tcp - 1 <= finger_px.max(0))
    assert frame.depth_m[nearest[1], nearest[0]] == pytest.approx(tcp_cam[2], abs=0.03)


def test_camera_pose_is_an_optical_frame_looking_from_position_to_target(fresh):
    pose = fresh.camera_pose()
    assert pose.parent_frame == 'panda_link0' and pose.child_frame == 'sim_camera_color_optical_frame'
    r, t = pose.rotation, pose.translation_m
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)
    cfg = fresh.config
    np.testing.assert_allclose(t, cfg.camera_position_m, atol=1e-9)
    forward = np.subtract(cfg.camera_target_m, cfg.camera_position_m)
    np.testing.assert_allclose(r[:, 2], forward / np.linalg.norm(forward), atol=1e-6)  # z forward
    assert r[2, 1] < 0 and abs(r[2, 0]) < 1e-9  # y points down, x stays horizontal (no roll)
    q = np.array(pose.quaternion_xyzw)
    assert np.linalg.norm(q) == pytest.approx(1.0)


def test_frames_are_relative_to_the_arm_base_and_agree_with_the_urdf(fresh):
    np.testing.assert_allclose(fresh.body_pose('robot0_link0'), np.eye(4), atol=1e-12)
    model = pin.buildModelFromUrdf(str(URDF))
    data = model.createData()
    rng = np.random.default_rng(3)
    lo, hi = fresh.arm_limits_rad
    for _ in range(3):
        q = rng.uniform(lo + 0.1, hi - 0.1)
        fresh.data.qpos[fresh._arm_qadr] = q
        mujoco.mj_forward(fresh.model, fresh.data)
        qp = pin.neutral(model)
        for i, name in enumerate(franka.ARM_JOINT_NAMES):
            qp[model.joints[model.getJointId(name)].idx_q] = q[i]
        pin.framesForwardKinematics(model, data, qp)
        for frame, ours in (('panda_link7', fresh.link7_pose()), ('panda_hand_tcp', fresh.ee_pose().matrix)):
            ref = data.oMf[model.getFrameId(frame)].homogeneous
            np.testing.assert_allclose(ours, ref, atol=1e-6, err_msg=frame)


def test_commanded_joints_are_followed_smoothly_and_reached(fresh):
    q0 = fresh.arm_positions_rad
    target = q0 + np.array([0.3, -0.2, 0.25, 0.3, -0.3, 0.2, 0.5])
    fresh.command_trajectory(arm_command(target, 1.0))
    worst, peak_speed = 0.0, 0.0
    for _ in range(75):  # 1.5 s in 20 ms chunks
        sp = fresh.step(10)
        worst = max(worst, float(np.abs(fresh.arm_positions_rad - sp.positions_rad).max()))
        peak_speed = max(peak_speed, float(np.abs(fresh.joint_state().velocities[:7]).max()))
    assert worst < 0.02, worst                    # tracks the moving setpoint closely
    assert peak_speed < 0.5 * 1.2 + 0.05          # no overshooting spikes (fastest joint: 0.5 rad/s)
    np.testing.assert_allclose(fresh.arm_positions_rad, target, atol=2e-3)
    assert fresh.time_s == pytest.approx(1.5)
    effort = fresh.joint_state().efforts[:7]
    assert np.all(np.abs(effort) <= [80] * 5 + [12] * 2)


def test_joint_limits_hold_when_commands_exceed_them(fresh):
    lo, hi = fresh.arm_limits_rad
    target = fresh.arm_positions_rad.copy()
    target[3] = hi[3] + 0.5   # elbow past its upper limit (-0.07 rad)
    target[6] = lo[6] - 1.0   # wrist past its lower limit
    fresh.command_trajectory(arm_command(target, 1.0))
    fresh.step_for(2.0)
    q = fresh.arm_positions_rad
    assert np.all(q >= lo - 2e-3) and np.all(q <= hi + 2e-3)
    assert q[3] == pytest.approx(hi[3], abs=5e-3) and q[6] == pytest.approx(lo[6], abs=5e-3)


def test_gripper_closes_and_opens_both_fingers(fresh):
    names = fresh.joint_state().names
    assert names == franka.JOINT_NAMES
    fingers = fresh.joint_state().positions[7:]
    np.testing.assert_allclose(fingers, 0.04, atol=1e-3)
    assert fresh.set_gripper(-1.0) == 0.0  # clamped
    fresh.step_for(1.0)
    np.testing.assert_allclose(fresh.joint_state().positions[7:], 0.0, atol=2e-3)
    assert fresh.set_gripper(0.02) == 0.02
    fresh.step_for(1.0)
    np.testing.assert_allclose(fresh.joint_state().positions[7:], 0.02, atol=2e-3)
    with pytest.raises(ValueError):
        fresh.set_gripper(math.nan)


def test_reset_restores_the_start_and_the_seed_places_the_cube(fresh):
    fresh.command_trajectory(arm_command(fresh.arm_positions_rad + 0.2, 0.5))
    fresh.step_for(0.6)
    fresh.reset(seed=0)
    assert fresh.time_s == 0.0
    np.testing.assert_allclose(fresh.arm_positions_rad, franka.READY_POSITIONS_RAD, atol=1e-12)
    fresh.step_for(0.5)  # a trajectory from before the reset is gone: the arm holds
    np.testing.assert_allclose(fresh.arm_positions_rad, franka.READY_POSITIONS_RAD, atol=1e-3)
    fresh.reset(seed=0)
    a = fresh.body_pose('cube_main')[:3, 3]
    fresh.reset(seed=0)
    b = fresh.body_pose('cube_main')[:3, 3]
    fresh.reset(seed=1)
    c = fresh.body_pose('cube_main')[:3, 3]
    np.testing.assert_allclose(a, b)
    assert np.linalg.norm(a[:2] - c[:2]) > 1e-3


def test_invalid_trajectories_are_refused_by_the_arm(fresh):
    with pytest.raises(TrajectoryRejected, match='unknown joint'):
        fresh.command_trajectory(JointTrajectoryCommand(('panda_finger_joint1',), (TrajectoryPoint(1.0, (0.0,)),)))


def test_robosuite_camera_at_another_size():
    with PandaSim(SimConfig(camera='agentview', image_width_px=64, image_height_px=48)) as s:
        frame = s.render()
        assert frame.rgb.shape == (48, 64, 3) and frame.depth_m.shape == (48, 64)
        assert s.intrinsics.fy == pytest.approx(24.0 / math.tan(math.radians(45.0) / 2))
        assert s.camera_pose().child_frame == 'sim_camera_color_optical_frame'
        # agentview looks at the table from its far side: the optical axis points back toward the arm
        assert s.camera_pose().rotation[0, 2] < -0.5


@pytest.mark.parametrize('kwargs', [dict(image_width_px=8), dict(camera_fovy_deg=0.0),
                                    dict(camera_target_m=SimConfig.camera_position_m), dict(render_multisamples=3),
                                    dict(initial_positions_rad=(0.0,)), dict(position_gain_per_s2=0.0)])
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        SimConfig(**kwargs)
