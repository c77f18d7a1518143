"""The command sink's messages: plain values <-> ROS messages, nothing else.

Pure converters (no node, no clock: the caller hands in the stamp and the frame). The command sink
(``nodes/command_sink.py``) turns action chunks into the core's :class:`~molmoact_ros.cores.chunk_intake.ChunkIn`
with :func:`chunk_from_msg` and publishes what :class:`~molmoact_ros.cores.chunk_intake.ChunkIntake` returns
with the builders below.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped, TwistStamped
from molmoact_msgs.msg import ActionChunk
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..cores.chunk_intake import ChunkIn, ObservationPose, StepIn
from ..reasoning.action_space import RotationConvention
from ..robot.profiles import GripperControllerType
from .sync import split_seconds, stamp_to_s
from .transforms import matrix_to_pose

ROTATION_FROM_MSG = {ActionChunk.ROTATION_RPY: RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW,
                     ActionChunk.ROTATION_AXIS_ANGLE: RotationConvention.ROTATION_VECTOR}
#: The message type of each topic gripper controller (GRIPPER_ACTION is an action, NONE has no gripper).
GRIPPER_MSG_TYPES = {GripperControllerType.FORWARD: Float64MultiArray, GripperControllerType.JTC: JointTrajectory}
ZERO3 = (0.0, 0.0, 0.0)


def duration(seconds: float) -> Duration:
    """Seconds -> builtin_interfaces/Duration (negative values give 0; nanoseconds rounded)."""
    sec, nanosec = split_seconds(max(0.0, float(seconds)))
    return Duration(sec=sec, nanosec=nanosec)


def chunk_from_msg(msg: ActionChunk) -> ChunkIn:
    """molmoact_msgs/ActionChunk -> the core's :class:`ChunkIn` (no validation: the core decides)."""
    pose = None
    if msg.observation_pose_valid:
        p, o = msg.observation_pose.pose.position, msg.observation_pose.pose.orientation
        pose = ObservationPose(msg.observation_pose.header.frame_id, (p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
    steps = tuple(StepIn((s.translation_m.x, s.translation_m.y, s.translation_m.z),
                         (s.rotation_rad.x, s.rotation_rad.y, s.rotation_rad.z), s.gripper, len(s.values))
                  for s in msg.steps)
    c = msg.constraints
    return ChunkIn(request_id=msg.request_id, stamp_s=stamp_to_s(msg.header.stamp), steps=steps,
                   step_period_s=msg.step_period_s, action_dim=msg.action_dim,
                   rotation_convention=ROTATION_FROM_MSG.get(msg.rotation_convention),
                   rotation_code=msg.rotation_convention, delta_frame_id=msg.delta_frame_id,
                   observation_pose=pose, plan_only=c.plan_only,
                   max_translation_m_per_step=c.max_translation_m_per_step,
                   max_rotation_rad_per_step=c.max_rotation_rad_per_step)


def joint_trajectory(names: Sequence[str], positions: Optional[Sequence[float]],
                     time_from_start_s: float) -> JointTrajectory:
    """A one-point JointTrajectory (header stamp 0: start now); no point when ``positions`` is None (a hold
    without measured joints)."""
    traj = JointTrajectory(joint_names=list(names))
    if positions is not None:
        traj.points = [JointTrajectoryPoint(positions=[float(v) for v in positions],
                                            time_from_start=duration(time_from_start_s))]
    return traj


def twist_stamped(stamp, frame_id: str, linear: Sequence[float] = ZERO3,
                  angular: Sequence[float] = ZERO3) -> TwistStamped:
    """TwistStamped (m/s, rad/s) in ``frame_id``; the defaults give the zero twist."""
    twist = TwistStamped()
    twist.header.stamp = stamp
    twist.header.frame_id = frame_id
    (twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z) = map(float, linear)
    (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) = map(float, angular)
    return twist


def pose_stamped(stamp, frame_id: str, pose: np.ndarray) -> PoseStamped:
    """A 4x4 homogeneous pose -> PoseStamped (quaternion x, y, z, w with w >= 0) in ``frame_id``."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(pose)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = float(x), float(y), float(z)
    (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
     msg.pose.orientation.w) = float(qx), float(qy), float(qz), float(qw)
    return msg


def gripper_msg(controller_type: GripperControllerType, command: float, multipliers: Sequence[float],
                joint_names: Sequence[str], duration_s: float):
    """The gripper command for a topic controller: ``command`` times each joint's multiplier, as a
    Float64MultiArray (``forward``) or a one-point JointTrajectory reaching it in ``duration_s`` (at least
    10 ms; ``joint_trajectory``). None for the other controller types (an action, or no gripper)."""
    values = [float(command) * m for m in multipliers]
    if controller_type is GripperControllerType.FORWARD:
        return Float64MultiArray(data=values)
    if controller_type is GripperControllerType.JTC:
        return joint_trajectory(joint_names, values, max(duration_s, 0.01))
    return None
