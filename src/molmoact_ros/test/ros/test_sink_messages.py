"""molmoact_ros.ros.sink_messages: the command sink's messages from plain values (no node, no ROS graph)."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped, Vector3
from molmoact_msgs.msg import ActionChunk, ActionStep
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory
from transforms3d.euler import euler2mat

from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.profiles import GripperControllerType
from molmoact_ros.ros import sink_messages as M
from molmoact_ros.ros.sync import stamp_to_s
from molmoact_ros.ros.transforms import pose_msg_to_matrix

STAMP = Time(sec=7, nanosec=250_000_000)


def _seconds(d) -> float:
    return d.sec + d.nanosec * 1e-9


@pytest.mark.parametrize('seconds, sec, nanosec', [(0.0, 0, 0), (0.04, 0, 40_000_000), (1.5, 1, 500_000_000),
                                                   (2.000000001, 2, 1), (-0.3, 0, 0), (1.9999999998, 2, 0)])
def test_duration(seconds, sec, nanosec):
    d = M.duration(seconds)
    assert (d.sec, d.nanosec) == (sec, nanosec)


def test_stamp_to_s():
    assert stamp_to_s(STAMP) == pytest.approx(7.25)


def test_chunk_from_msg_hands_the_core_every_field_it_decides_on():
    """The node's only chunk logic is this conversion; the decisions are tested in test/cores/test_chunk_intake."""
    msg = ActionChunk(request_id='r', step_period_s=0.1, action_dim=7, rotation_convention=99, delta_frame_id='x')
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500_000_000
    msg.steps = [ActionStep(translation_m=Vector3(x=0.01), rotation_rad=Vector3(z=0.1), gripper=0.9, values=[0.0] * 6)]
    msg.constraints.plan_only = True
    msg.constraints.max_translation_m_per_step = 0.004
    c = M.chunk_from_msg(msg)
    assert (c.request_id, c.stamp_s, c.step_period_s, c.action_dim, c.delta_frame_id) == (
        'r', 12.5, pytest.approx(0.1), 7, 'x')
    assert c.rotation_convention is None and c.rotation_code == 99 and c.observation_pose is None
    assert c.steps[0].translation_m == (pytest.approx(0.01), 0.0, 0.0)
    assert c.steps[0].rotation_rad[2] == pytest.approx(0.1)
    assert c.steps[0].n_values == 6 and c.plan_only and c.max_translation_m_per_step == pytest.approx(0.004)
    msg.rotation_convention = ActionChunk.ROTATION_AXIS_ANGLE
    msg.observation_pose_valid = True
    msg.observation_pose.header.frame_id = 'panda_link0'
    msg.observation_pose.pose.orientation.w = float('nan')
    c = M.chunk_from_msg(msg)
    assert c.rotation_convention is RotationConvention.ROTATION_VECTOR
    assert c.observation_pose.frame_id == 'panda_link0' and np.isnan(c.observation_pose.orientation_xyzw[3])
    msg.rotation_convention = ActionChunk.ROTATION_RPY
    assert M.chunk_from_msg(msg).rotation_convention is RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW


def test_joint_trajectory_one_point_starting_now():
    traj = M.joint_trajectory(('a', 'b'), np.array([0.5, -1.0]), 0.25)
    assert isinstance(traj, JointTrajectory) and traj.joint_names == ['a', 'b']
    assert (traj.header.stamp.sec, traj.header.stamp.nanosec) == (0, 0)   # 0: the controller starts it now
    assert len(traj.points) == 1 and list(traj.points[0].positions) == [0.5, -1.0]
    assert all(type(v) is float for v in traj.points[0].positions)
    assert _seconds(traj.points[0].time_from_start) == pytest.approx(0.25)


def test_hold_without_measured_joints_is_an_empty_trajectory():
    traj = M.joint_trajectory(['a', 'b'], None, 0.04)
    assert traj.joint_names == ['a', 'b'] and traj.points == []


def test_twist_stamped_and_the_zero_twist():
    twist = M.twist_stamped(STAMP, 'base', (0.1, np.float32(-0.2), 0), (0.0, 0.0, 1.5))
    assert isinstance(twist, TwistStamped) and twist.header.frame_id == 'base' and twist.header.stamp == STAMP
    assert (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z) == (0.1, pytest.approx(-0.2), 0.0)
    assert (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) == (0.0, 0.0, 1.5)
    zero = M.twist_stamped(STAMP, 'base')
    assert zero.header.frame_id == 'base' and zero.twist == TwistStamped().twist


def test_pose_stamped_round_trips_the_matrix():
    pose = np.eye(4)
    pose[:3, :3] = euler2mat(0.3, -0.2, 2.5)
    pose[:3, 3] = (0.4, -0.1, 0.6)
    msg = M.pose_stamped(STAMP, 'panda_link0', pose)
    assert isinstance(msg, PoseStamped) and msg.header.frame_id == 'panda_link0' and msg.header.stamp == STAMP
    assert msg.pose.orientation.w >= 0.0
    np.testing.assert_allclose(pose_msg_to_matrix(msg.pose), pose, atol=1e-12)


def test_gripper_messages_per_controller_type():
    forward = M.gripper_msg(GripperControllerType.FORWARD, 0.04, (1.0, 0.5), ('f1', 'f2'), 0.2)
    assert isinstance(forward, Float64MultiArray) and list(forward.data) == pytest.approx([0.04, 0.02])
    jtc = M.gripper_msg(GripperControllerType.JTC, 0.04, (1.0, 0.5), ('f1', 'f2'), 0.2)
    assert isinstance(jtc, JointTrajectory) and jtc.joint_names == ['f1', 'f2']
    assert list(jtc.points[0].positions) == pytest.approx([0.04, 0.02])
    assert _seconds(jtc.points[0].time_from_start) == pytest.approx(0.2)
    # at least 10 ms to reach the command
    brief = M.gripper_msg(GripperControllerType.JTC, 1.0, (1.0,), ('f1',), 0.0)
    assert _seconds(brief.points[0].time_from_start) == pytest.approx(0.01)
    assert M.gripper_msg(GripperControllerType.GRIPPER_ACTION, 1.0, (1.0,), ('f1',), 0.1) is None
    assert set(M.GRIPPER_MSG_TYPES) == {GripperControllerType.FORWARD, GripperControllerType.JTC}
    assert M.GRIPPER_MSG_TYPES[GripperControllerType.FORWARD] is Float64MultiArray
