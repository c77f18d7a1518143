"""What the command sink publishes for each of its core's ticks (no node, no graph).

:class:`~molmoact_ros.cores.chunk_intake.ChunkIntake` decides; :class:`SinkOutputs` turns its
:class:`~molmoact_ros.cores.chunk_intake.SinkTick` into messages on the sink mode's publishers (any object with
``publish``: the node's lifecycle publishers, or a list in a test), stamped by the clock it is handed. The
node (``nodes/command_sink.py``) keeps the counters and logs from what :meth:`SinkOutputs.publish` reports.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from trajectory_msgs.msg import JointTrajectory

from ..cores.chunk_intake import KeepAlive, SinkTick
from ..robot.executor import Command, HoldCommand, JointCommand, PoseCommand, SinkMode, TwistCommand
from ..robot.profiles import RobotProfile
from . import sink_messages as M
from . import topics as T

#: Publisher keys: the mode's arm command, the gripper topic, and ~/commanded_pose (every mode).
ARM, TWIST, POSE, GRIPPER, COMMANDED_POSE = 'arm', 'twist', 'pose', 'gripper', 'commanded_pose'


def output_topics(mode: SinkMode, profile: RobotProfile, *, arm_controller: str = '', servo_twist_topic: str = '',
                  servo_pose_topic: str = '') -> Dict[str, Tuple[type, str]]:
    """Publisher key -> (message type, topic) for ``mode``: the parameters' topics, else the profile's. A
    GripperCommand action controller has no topic here (``ros/gripper_action.py``), nor has the dry run."""
    sink = profile.sink
    out: Dict[str, Tuple[type, str]] = {}
    if mode is SinkMode.JOINT_TRAJECTORY:
        out[ARM] = (JointTrajectory, f'{arm_controller or sink.arm_controller}/joint_trajectory')
    elif mode is SinkMode.SERVO_TWIST:
        out[TWIST] = (TwistStamped, servo_twist_topic or sink.twist_topic)
    elif mode is SinkMode.SERVO_POSE:
        out[POSE] = (PoseStamped, servo_pose_topic or sink.pose_topic)
    if mode is not SinkMode.NONE and sink.gripper_controller_type in M.GRIPPER_MSG_TYPES:
        out[GRIPPER] = (M.GRIPPER_MSG_TYPES[sink.gripper_controller_type], sink.gripper_target)
    out[COMMANDED_POSE] = (PoseStamped, T.COMMANDED_POSE)
    return out


class SinkOutputs:
    """Publishes a :class:`SinkTick`: the command for the mode's publisher (or the hold), ``~/commanded_pose``,
    the gripper (a topic controller's value when it changed, or ``gripper_action.send`` for a GripperCommand
    action), or the Servo keep-alive."""

    def __init__(self, publishers: Mapping[str, object], profile: RobotProfile, *, hold_time_s: float,
                 stamp: Callable[[], object], gripper_action=None):
        self.publishers = publishers
        self.profile = profile
        self.hold_time_s = float(hold_time_s)
        self._stamp = stamp
        self.gripper_action = gripper_action

    def publish(self, tick: SinkTick) -> Optional[Command]:
        """Publish ``tick``; the command sent (a motion command or a :class:`HoldCommand`), None for a tick that
        sent none (a keep-alive or nothing)."""
        command = tick.command
        if command is None:
            self._resend(tick)
            return None
        if isinstance(command, HoldCommand):
            self._hold(command)
            return command
        if isinstance(command, JointCommand):
            self._send(ARM, M.joint_trajectory(command.names, command.positions, command.time_from_start_s))
        elif isinstance(command, TwistCommand):
            self._send(TWIST, self._twist(command.linear_m_s, command.angular_rad_s))
        elif isinstance(command, PoseCommand):
            self._send(POSE, self._pose(command.pose))
        self._send(COMMANDED_POSE, self._pose(command.pose))
        self._gripper(command.gripper, tick.gripper_changed, getattr(command, 'time_from_start_s', 0.1))
        return command

    # -- the parts ------------------------------------------------------------------------------
    def _send(self, key: str, msg) -> None:
        publisher = self.publishers.get(key)
        if publisher is not None:
            publisher.publish(msg)

    def _twist(self, linear=M.ZERO3, angular=M.ZERO3) -> TwistStamped:
        return M.twist_stamped(self._stamp(), self.profile.frames.base, linear, angular)

    def _pose(self, pose: np.ndarray) -> PoseStamped:
        return M.pose_stamped(self._stamp(), self.profile.frames.base, pose)

    def _resend(self, tick: SinkTick) -> None:
        resend = tick.resend
        if resend is None:
            return
        if resend.kind is KeepAlive.TWIST:
            self._send(TWIST, self._twist(resend.twist.linear_m_s, resend.twist.angular_rad_s))
        elif resend.kind is KeepAlive.ZERO_TWIST:
            self._send(TWIST, self._twist())
        elif resend.kind is KeepAlive.POSE:
            self._send(POSE, self._pose(resend.pose))

    def _hold(self, hold: HoldCommand) -> None:
        """Every mode's hold: the measured joints (JTC), a zero twist, the measured pose (Servo pose and
        ``~/commanded_pose``); a GripperCommand goal in flight is cancelled."""
        if self.gripper_action is not None:
            self.gripper_action.halt()
        if ARM in self.publishers:
            self._send(ARM, M.joint_trajectory(self.profile.joint_names, hold.joint_positions, self.hold_time_s))
        if TWIST in self.publishers:
            self._send(TWIST, self._twist())
        if hold.pose is not None:
            self._send(POSE, self._pose(hold.pose))
            self._send(COMMANDED_POSE, self._pose(hold.pose))

    def _gripper(self, value: Optional[float], changed: Optional[float], duration_s: float) -> None:
        """GripperCommand goals (the tracker decides) or, for a topic controller, the value when it changed."""
        if self.gripper_action is not None:
            self.gripper_action.send(value)
        elif changed is not None and GRIPPER in self.publishers:
            sink = self.profile.sink
            self._send(GRIPPER, M.gripper_msg(sink.gripper_controller_type, changed, sink.gripper_joint_multipliers,
                                              sink.gripper_joint_names, duration_s))


__all__ = ['ARM', 'COMMANDED_POSE', 'GRIPPER', 'POSE', 'TWIST', 'SinkOutputs', 'output_topics']
