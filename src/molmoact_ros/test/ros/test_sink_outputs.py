"""What the command sink publishes for each core tick (ros/sink_outputs.py), without a ROS graph: the mode's
topics, the command and ~/commanded_pose, the gripper only when it changed, every mode's hold, the Servo
keep-alive."""

import dataclasses

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from molmoact_ros.cores.chunk_intake import KeepAlive, Resend, SinkTick
from molmoact_ros.robot.executor import HoldCommand, JointCommand, PoseCommand, SinkMode, TwistCommand
from molmoact_ros.robot.profiles import GripperControllerType, load_profile
from molmoact_ros.robot.safety import HaltCause
from molmoact_ros.ros.sink_outputs import ARM, COMMANDED_POSE, GRIPPER, POSE, TWIST, SinkOutputs, output_topics

PROFILE = load_profile('sim_panda')   # joint_trajectory sink, forward gripper controller


class _Pub:
    def __init__(self):
        self.msgs = []

    def publish(self, msg):
        self.msgs.append(msg)


class _GripperAction:
    def __init__(self):
        self.sent, self.halts = [], 0

    def send(self, value):
        self.sent.append(value)

    def halt(self):
        self.halts += 1


def _outputs(mode: SinkMode, profile=PROFILE, gripper_action=None):
    pubs = {key: _Pub() for key in output_topics(mode, profile)}
    return SinkOutputs(pubs, profile, hold_time_s=0.25, stamp=lambda: Time(sec=7, nanosec=5),
                       gripper_action=gripper_action), pubs


def _pose(x=0.4, y=0.1, z=0.3):
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def _info(**kw):
    return dict(request_id='r1', step_index=0, age_s=0.2, lag_s=0.0, clipped=frozenset(), **kw)


def test_output_topics_per_mode_and_overrides():
    jt = output_topics(SinkMode.JOINT_TRAJECTORY, PROFILE)
    assert jt[ARM] == (JointTrajectory, 'joint_trajectory_controller/joint_trajectory')
    assert jt[GRIPPER] == (Float64MultiArray, 'gripper_controller/commands')
    assert jt[COMMANDED_POSE][0] is PoseStamped and set(jt) == {ARM, GRIPPER, COMMANDED_POSE}
    assert output_topics(SinkMode.JOINT_TRAJECTORY, PROFILE, arm_controller='arm')[ARM][1] == 'arm/joint_trajectory'
    assert output_topics(SinkMode.SERVO_TWIST, PROFILE)[TWIST] == (TwistStamped, 'servo_node/delta_twist_cmds')
    assert output_topics(SinkMode.SERVO_TWIST, PROFILE, servo_twist_topic='t')[TWIST][1] == 't'
    assert output_topics(SinkMode.SERVO_POSE, PROFILE, servo_pose_topic='p')[POSE] == (PoseStamped, 'p')
    assert set(output_topics(SinkMode.NONE, PROFILE)) == {COMMANDED_POSE}   # the dry run: no gripper either
    action = dataclasses.replace(PROFILE, sink=dataclasses.replace(
        PROFILE.sink, gripper_controller_type=GripperControllerType.GRIPPER_ACTION))
    assert GRIPPER not in output_topics(SinkMode.JOINT_TRAJECTORY, action)   # an action, not a topic


def test_joint_command_with_the_gripper_only_when_it_changed():
    out, pubs = _outputs(SinkMode.JOINT_TRAJECTORY)
    command = JointCommand(**_info(), names=PROFILE.joint_names, positions=np.arange(7) * 0.1,
                           time_from_start_s=0.1, gripper=1.0, pose=_pose())
    assert out.publish(SinkTick(command=command, gripper_changed=1.0)) is command
    traj = pubs[ARM].msgs[-1]
    assert list(traj.joint_names) == list(PROFILE.joint_names)
    assert np.allclose(traj.points[0].positions, np.arange(7) * 0.1)
    assert traj.points[0].time_from_start.nanosec == 100_000_000
    pose = pubs[COMMANDED_POSE].msgs[-1]
    assert pose.header.frame_id == 'panda_link0' and pose.header.stamp.sec == 7
    assert (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) == pytest.approx((0.4, 0.1, 0.3))
    assert list(pubs[GRIPPER].msgs[-1].data) == [1.0]
    out.publish(SinkTick(command=command, gripper_changed=None))   # unchanged: no gripper message
    assert len(pubs[GRIPPER].msgs) == 1 and len(pubs[ARM].msgs) == 2


def test_twist_and_pose_commands_go_to_servo():
    out, pubs = _outputs(SinkMode.SERVO_TWIST)
    twist = TwistCommand(**_info(), linear_m_s=np.array([0.1, 0.0, -0.05]), angular_rad_s=np.zeros(3),
                         duration_s=0.1, pose=_pose())
    out.publish(SinkTick(command=twist))
    msg = pubs[TWIST].msgs[-1]
    assert (msg.twist.linear.x, msg.twist.linear.z) == pytest.approx((0.1, -0.05))
    assert msg.header.frame_id == 'panda_link0' and len(pubs[COMMANDED_POSE].msgs) == 1
    out, pubs = _outputs(SinkMode.SERVO_POSE)
    out.publish(SinkTick(command=PoseCommand(**_info(), pose=_pose(z=0.2), time_from_start_s=0.1)))
    assert pubs[POSE].msgs[-1].pose.position.z == pytest.approx(0.2)


@pytest.mark.parametrize('mode', list(SinkMode))
def test_hold_in_every_mode(mode):
    action = _GripperAction()
    out, pubs = _outputs(mode, gripper_action=action)
    hold = HoldCommand(HaltCause.ACTION_TOO_OLD, joint_positions=np.full(7, 0.5), pose=_pose(z=0.25))
    assert out.publish(SinkTick(command=hold)) is hold
    assert action.halts == 1   # a GripperCommand goal in flight is cancelled
    if mode is SinkMode.JOINT_TRAJECTORY:
        traj = pubs[ARM].msgs[-1]
        assert np.allclose(traj.points[0].positions, 0.5) and traj.points[0].time_from_start.nanosec == 250_000_000
    if mode is SinkMode.SERVO_TWIST:
        msg = pubs[TWIST].msgs[-1]
        assert (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z, msg.twist.angular.z) == (0, 0, 0, 0)
    if mode is SinkMode.SERVO_POSE:
        assert pubs[POSE].msgs[-1].pose.position.z == pytest.approx(0.25)
    assert pubs[COMMANDED_POSE].msgs[-1].pose.position.z == pytest.approx(0.25)
    assert all(not p.msgs for k, p in pubs.items() if k == GRIPPER)


def test_hold_without_measured_state_sends_an_empty_trajectory_and_no_pose():
    out, pubs = _outputs(SinkMode.JOINT_TRAJECTORY)
    out.publish(SinkTick(command=HoldCommand(HaltCause.NO_ROBOT_STATE)))
    assert pubs[ARM].msgs[-1].points == [] and not pubs[COMMANDED_POSE].msgs


def test_servo_keep_alive_resends():
    out, pubs = _outputs(SinkMode.SERVO_TWIST)
    twist = TwistCommand(**_info(), linear_m_s=np.array([0.0, 0.2, 0.0]), angular_rad_s=np.array([0.0, 0.0, 0.1]),
                         duration_s=0.1)
    assert out.publish(SinkTick(resend=Resend(KeepAlive.TWIST, twist=twist))) is None
    assert (pubs[TWIST].msgs[-1].twist.linear.y, pubs[TWIST].msgs[-1].twist.angular.z) == pytest.approx((0.2, 0.1))
    out.publish(SinkTick(resend=Resend(KeepAlive.ZERO_TWIST)))
    assert pubs[TWIST].msgs[-1].twist.linear.y == 0.0 and not pubs[COMMANDED_POSE].msgs
    out, pubs = _outputs(SinkMode.SERVO_POSE)
    out.publish(SinkTick(resend=Resend(KeepAlive.POSE, pose=_pose(x=0.6))))
    assert pubs[POSE].msgs[-1].pose.position.x == pytest.approx(0.6)
    assert out.publish(SinkTick()) is None and len(pubs[POSE].msgs) == 1


def test_gripper_action_gets_every_commanded_value():
    action = _GripperAction()
    out, pubs = _outputs(SinkMode.JOINT_TRAJECTORY, profile=dataclasses.replace(PROFILE, sink=dataclasses.replace(
        PROFILE.sink, gripper_controller_type=GripperControllerType.GRIPPER_ACTION)), gripper_action=action)
    command = JointCommand(**_info(), names=PROFILE.joint_names, positions=np.zeros(7), gripper=0.0, pose=_pose())
    out.publish(SinkTick(command=command, gripper_changed=0.0))
    out.publish(SinkTick(command=command, gripper_changed=None))
    assert action.sent == [0.0, 0.0] and GRIPPER not in pubs   # the tracker decides what becomes a goal
