"""The command sink: action chunks in, safe arm commands out (lifecycle node ``command_sink``).

The decisions live in :class:`~molmoact_ros.cores.chunk_intake.ChunkIntake` (chunk validation, anchoring
and its retries, limit tightening, Servo keep-alive: read that module first) and the
:class:`~molmoact_ros.robot.executor.ArmExecutor` it drives; what a tick publishes is
:class:`~molmoact_ros.ros.sink_outputs.SinkOutputs` (messages from :mod:`molmoact_ros.ros.sink_messages`,
GripperCommand goals through :mod:`molmoact_ros.ros.gripper_action`). This node wires topics to the core under
one lock, keeps the clock, counts what was published and records its errors. Its parameters (``PARAMETERS``) are :class:`~molmoact_ros.cores.chunk_intake.CommandSinkConfig`
(read once at configure).

Topics and services (relative names, so namespaces and remapping work):

=============================================  =============================================================
subscribes                                     meaning
=============================================  =============================================================
``action_chunk`` (molmoact_msgs/ActionChunk)   the decoder's chunks; ``constraints`` honoured (plan_only,
                                               tighter per-step limits)
``joint_states`` (sensor_msgs/JointState)      measured joints (sensor QoS); anchors chunks via FK + history
``robot_description`` (std_msgs/String)        URDF, latched; kinematics (Pinocchio) are built from it
``image`` (param ``camera_topic``)             only watched: motion halts when frames stop (sensor QoS)
``e_stop`` (std_msgs/Bool)                     true latches the e-stop (also while inactive)
``~/enable`` (std_srvs/SetBool)                true enables execution, false disables it
``~/reset_e_stop`` (std_srvs/Trigger)          clears the latch; execution stays disabled until enabled
=============================================  =============================================================

Publishes (lifecycle publishers: nothing after deactivate), per ``sink`` mode:

- ``joint_trajectory``: ``<arm_controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory, one point,
  stamp 0 = start now; IK per ``ik_backend``); a hold is a one-point trajectory at the measured joints (empty
  without them).
- ``servo_twist``: MoveIt Servo ``<servo_node>/delta_twist_cmds`` (geometry_msgs/TwistStamped, base frame,
  speed units), re-sent every control tick while the step lasts, then one zero twist; a hold is a zero twist.
- ``servo_pose``: ``<servo_node>/pose_target_cmds`` (geometry_msgs/PoseStamped, base frame), re-stamped and
  re-sent every control tick until the next one, for at most ``servo_pose_keepalive_s`` after its step's end;
  a hold is the measured pose.
- ``none``: dry run, only ``~/commanded_pose``.
- gripper (not with ``none``), per the profile's ``gripper_controller_type``: ``<gripper_controller>/commands``
  (Float64MultiArray) or ``<gripper_controller>/joint_trajectory`` when the command changes, or GripperCommand
  goals to ``<gripper_controller>/gripper_cmd`` (``gripper_action``; left alone without control_msgs).
- ``~/commanded_pose`` (geometry_msgs/PoseStamped): every commanded (or held) end-effector pose, all modes.

Run it alone with ``ros2 run molmoact_ros command_sink [--autostart] --ros-args -p robot_profile:=sim_panda``
(:mod:`.standalone`; no model stack, it starts in about a second). ``/diagnostics`` adds
:meth:`CommandSinkNode.figures` (:class:`~molmoact_ros.cores.sink_figures.SinkFigures`, which the demo reads)
as display strings.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

import numpy as np
from molmoact_msgs.msg import ActionChunk
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from ..cores.chunk_intake import (IK_BACKENDS, SINK_CHOICES, ChunkIntake, CommandSinkConfig,  # noqa: F401
                                  Intake, IntakeDecision, SinkTick)
from ..cores.sink_figures import SinkFigures
from ..robot.executor import HoldCommand, SinkMode
from ..robot.profiles import GripperControllerType, load_profile
from ..ros.gc_tuning import freeze_startup_heap
from ..ros.gripper_action import GripperAction
from ..ros.params import ParamSpec
from ..ros.sink_outputs import SinkOutputs, output_topics
from ..ros import sink_messages as M
from ..ros.sync import stamp_to_s
from ..ros import topics as T
from ..ros.topics import LATCHED, RELIABLE, SENSOR
from .base import MolmoActLifecycleNode
from .standalone import run_alone

#: The one default of each parameter (cores.chunk_intake.CommandSinkConfig).
_D = CommandSinkConfig()


class CommandSinkNode(MolmoActLifecycleNode):
    """See the module docstring. Needs no engine (hostable in the one-process :class:`Pipeline`)."""

    PARAMETERS = (
        ParamSpec('robot_profile', _D.robot_profile, 'Robot profile: a name of config/robots/<name>.yaml or a '
                  'path to a profile YAML (joints, frames, controllers, gripper mapping, safety limits).'),
        ParamSpec('sink', _D.sink, 'How the arm is commanded: profile (the profile\'s sink.mode), '
                  'joint_trajectory (JointTrajectoryController via Pinocchio IK), servo_twist or servo_pose '
                  '(MoveIt Servo), none (dry run: only ~/commanded_pose).', choices=SINK_CHOICES),
        ParamSpec('execution_enabled', _D.execution_enabled, 'Enable execution on activate (otherwise call '
                  '~/enable). An e-stop always needs ~/reset_e_stop and then ~/enable.'),
        ParamSpec('control_rate_hz', _D.control_rate_hz, 'Rate of the control tick (gates, due steps, commands).',
                  min_value=1.0, max_value=1000.0),
        ParamSpec('camera_topic', _D.camera_topic, 'Camera image topic watched for staleness (sensor QoS); '
                  'motion halts when no frame arrives within the profile\'s camera_timeout_s.'),
        ParamSpec('arm_controller', _D.arm_controller, 'Arm controller name (its topic '
                  '<arm_controller>/joint_trajectory); empty: the profile\'s sink.arm_controller.'),
        ParamSpec('servo_twist_topic', _D.servo_twist_topic, 'MoveIt Servo twist input '
                  '(geometry_msgs/TwistStamped); empty: <servo_node>/delta_twist_cmds with the profile\'s '
                  'sink.servo_node.'),
        ParamSpec('servo_pose_topic', _D.servo_pose_topic, 'MoveIt Servo pose input (geometry_msgs/PoseStamped); '
                  'empty: <servo_node>/pose_target_cmds with the profile\'s sink.servo_node.'),
        ParamSpec('robot_description_source', _D.robot_description_source, 'Where the URDF for kinematics comes '
                  'from: topic (robot_description, latched) or profile (the profile\'s urdf_file).',
                  choices=('topic', 'profile')),
        ParamSpec('anchor_tolerance_s', _D.anchor_tolerance_s, 'A chunk without a valid observation_pose is '
                  'anchored to the FK pose of the joint state nearest its header stamp, at most this far from it.',
                  min_value=0.001, max_value=5.0),
        ParamSpec('joint_state_timeout_s', _D.joint_state_timeout_s, 'Joint states older than this count as no '
                  'robot state.', min_value=0.01, max_value=10.0),
        ParamSpec('hold_time_s', _D.hold_time_s, 'time_from_start of the one-point hold trajectory (JTC).',
                  min_value=0.0, max_value=1.0),
        ParamSpec('servo_pose_keepalive_s', _D.servo_pose_keepalive_s, 'servo_pose: the current pose target (or '
                  'hold) is re-sent every control tick (MoveIt Servo drops pose targets older than its '
                  'incoming_command_timeout) until the next one, for at most this long after its step\'s end.',
                  min_value=0.0, max_value=10.0),
        ParamSpec('ik_backend', _D.ik_backend, 'IK of the joint_trajectory sink: auto (moveit_py where importable '
                  'and a planning group is set, else Pinocchio), pinocchio, or moveit_py (falls back to '
                  'Pinocchio, with the reason logged, where moveit_py cannot be used).', choices=IK_BACKENDS),
        ParamSpec('ik_planning_group', _D.ik_planning_group, 'MoveIt planning group for moveit_py IK; empty: the '
                  'profile\'s sink.moveit_planning_group.'),
        ParamSpec('ik_timeout_s', _D.ik_timeout_s, 'moveit_py IK timeout per step (0: the group\'s '
                  'kinematics.yaml timeout).', min_value=0.0, max_value=1.0),
        ParamSpec('moveit_py_node_name', _D.moveit_py_node_name, 'Name of the node MoveItPy starts for IK.'),
        ParamSpec('moveit_py_params_file', _D.moveit_py_params_file, 'ROS parameter file for MoveItPy\'s node '
                  '(robot_description, robot_description_semantic, robot_description_kinematics); empty: '
                  'MoveItPy\'s default (the process\'s --params-file arguments).'),
    )

    def __init__(self, name: str = 'command_sink', *, provider=None, **kwargs):
        # ``provider`` is accepted (and ignored) so that the one-process Pipeline can host the sink:
        # the sink never touches the engine.
        self._lock = threading.RLock()
        self._reset()
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def _reset(self) -> None:
        self.config: Optional[CommandSinkConfig] = None
        self.profile = None
        self.mode: Optional[SinkMode] = None
        self.intake: Optional[ChunkIntake] = None   # the decisions (cores/chunk_intake.py)
        self._pubs = {}
        self.outputs: Optional[SinkOutputs] = None   # what a tick publishes (ros/sink_outputs.py)
        self.gripper_action: Optional[GripperAction] = None   # gripper_action controllers (ros/gripper_action.py)
        self.ik_selection = None       # robot.kinematics.IkSelection (joint_trajectory only)
        self._moveit_ik = None         # a MoveItPyIk kept across robot_description updates
        self.holds_sent = 0
        self.commands_sent = 0
        self._tick_times = []
        self._tick_max_s = 0.0

    # The core's state, under the names the node has always had.
    governor = property(lambda self: self.intake.governor if self.intake else None)
    arm_executor = property(lambda self: self.intake.executor if self.intake else None)
    kinematics = property(lambda self: self.intake.kinematics if self.intake else None)
    _q = property(lambda self: self.intake.last_joint_state if self.intake else None)
    rejected_chunks = property(lambda self: self.intake.rejected_chunks if self.intake else 0)
    plan_only_chunks = property(lambda self: self.intake.plan_only_chunks if self.intake else 0)

    def release_resources(self) -> None:
        """Destroy what configure made (base node), under the sink's lock."""
        with self._lock:
            super().release_resources()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def execution_enabled(self) -> bool:
        gov = self.governor
        return bool(gov is not None and gov.enabled and not gov.e_stopped)

    # -- transitions ----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        super().on_configure(state)
        self.config = config = CommandSinkConfig.from_params(self.params)
        try:
            profile = load_profile(config.robot_profile)
        except Exception as exc:  # noqa: BLE001 - configure fails with the reason
            return self.fail_transition(f'robot profile: {type(exc).__name__}: {exc}')
        self.profile = profile
        self.intake = ChunkIntake(config, profile)
        self.mode = self.intake.mode
        if config.robot_description_source == 'profile':
            try:
                from ..robot.profiles import resolve_urdf_file
                self._build_kinematics(resolve_urdf_file(profile).read_text(encoding='utf-8'))
            except Exception as exc:  # noqa: BLE001
                return self.fail_transition(f'kinematics from the profile URDF: {type(exc).__name__}: {exc}')

        for key, (msg_type, topic) in output_topics(
                self.mode, profile, arm_controller=config.arm_controller, servo_twist_topic=config.servo_twist_topic,
                servo_pose_topic=config.servo_pose_topic).items():
            self._pubs[key] = self.lifecycle_publisher(msg_type, topic, RELIABLE)
        sink = profile.sink
        if self.mode is not SinkMode.NONE and sink.gripper_controller_type is GripperControllerType.GRIPPER_ACTION:
            self.gripper_action = GripperAction.create(self, self._lock, self.get_logger(), sink.gripper_target,
                                                       sink.gripper_max_effort)
        self.outputs = SinkOutputs(self._pubs, profile, hold_time_s=config.hold_time_s,
                                   stamp=lambda: self.get_clock().now().to_msg(), gripper_action=self.gripper_action)

        kept = dict(count_inputs=False, while_inactive=True)   # robot state and the e-stop: also while inactive
        self.subscription(ActionChunk, T.ACTION_CHUNK, self.gate(self._on_chunk), RELIABLE)
        self.subscription(JointState, T.JOINT_STATES, self.gate(self._on_joint_states, **kept), SENSOR)
        self.subscription(String, T.ROBOT_DESCRIPTION, self.gate(self._on_robot_description, **kept), LATCHED)
        self.subscription(Image, config.camera_topic, self.gate(self._on_image, **kept), SENSOR)
        self.subscription(Bool, T.E_STOP, self.gate(self._on_e_stop, **kept), RELIABLE)
        self.service(SetBool, T.ENABLE, self._on_enable)
        self.service(Trigger, T.RESET_E_STOP, self._on_reset_e_stop)
        self.timer(1.0 / config.control_rate_hz, self.gate(self._tick, count_inputs=False))
        # Full garbage collections of a large heap stall every callback (the control tick included): the
        # objects alive now are exempt from them from here on (molmoact_ros.ros.gc_tuning).
        freeze_startup_heap()
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        if result == TransitionCallbackReturn.SUCCESS and self.config.execution_enabled:
            with self._lock:
                self.governor.enable(self._now_s())
            self.publish_status()
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Disable execution and send the hold while the publishers are still on, then stop publishing."""
        with self._lock:
            if self.intake is not None:
                self._publish(self.intake.deactivate(self._now_s()))
            self._active = False
        return super().on_deactivate(state)

    # -- inputs ---------------------------------------------------------------------------------
    # Every input handler returns quietly when the core is gone (``intake`` None: not configured, or cleaned
    # up): the executor may run a callback for a message it took before cleanup destroyed the subscription.

    def _build_kinematics(self, urdf: str) -> None:
        # Pinocchio: only a node that needs it imports it
        from ..robot.kinematics import ArmKinematics, MoveItPyIk, make_ik_solver
        with self._lock:
            intake, profile, config, mode, existing = self.intake, self.profile, self.config, self.mode, self._moveit_ik
        if intake is None:
            return
        kin = ArmKinematics.from_urdf(urdf, base_frame=profile.frames.base, ee_frame=profile.frames.ee,
                                      joint_names=profile.joint_names)
        solver, selection = None, None
        if mode is SinkMode.JOINT_TRAJECTORY:
            # Outside the lock: starting MoveItPy takes a while (it loads the robot model and plugins).
            solver, selection = make_ik_solver(
                config.ik_backend, kin, planning_group=config.ik_planning_group or profile.sink.moveit_planning_group,
                timeout_s=config.ik_timeout_s, node_name=config.moveit_py_node_name,
                params_file=config.moveit_py_params_file, existing=existing)
            log = self.get_logger().warning if selection.fell_back else self.get_logger().info
            log(f'IK backend: {selection.describe()}')
        with self._lock:
            if self.intake is not intake:  # cleaned up (or configured anew) meanwhile: not for this core
                return
            self.ik_selection = selection
            if isinstance(solver, MoveItPyIk):
                self._moveit_ik = solver
            intake.kinematics_ready(kin, solver)
        self.get_logger().info(f'kinematics ready: {profile.frames.base} -> {profile.frames.ee}, '
                               f'{kin.dof} joints ({mode.value} sink)')

    def _on_robot_description(self, msg: String) -> None:
        config = self.config
        if config is not None and config.robot_description_source == 'topic':
            self._build_kinematics(msg.data)

    def _on_joint_states(self, msg: JointState) -> None:
        with self._lock:
            if self.intake is None:
                return
            error = self.intake.joint_state(self._now_s(), stamp_to_s(msg.header.stamp), msg.name, msg.position)
        if error:
            self.record_error(error)

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if self.governor is not None:
                self.governor.camera_seen(self._now_s())

    def _on_e_stop(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if self.governor is None:
                    return
                self.governor.e_stop(self._now_s())
            self.get_logger().warning('e-stop latched: motion halted; ~/reset_e_stop then ~/enable to resume')
            self.publish_status()

    def _on_enable(self, request, response):
        with self._lock:
            if self.governor is None or not self.is_active:
                response.success, response.message = False, f'the command sink is {self.lifecycle_label}, not active'
            elif request.data:
                response.success = self.governor.enable(self._now_s())
                response.message = 'execution enabled' if response.success else 'refused: the e-stop is latched'
            else:
                self.governor.disable(self._now_s())
                response.success, response.message = True, 'execution disabled'
        self.publish_status()
        return response

    def _on_reset_e_stop(self, request, response):
        with self._lock:
            if self.governor is None:
                response.success, response.message = False, 'the command sink is not configured'
            else:
                self.governor.reset_e_stop(self._now_s())
                response.success, response.message = True, 'e-stop reset; execution stays disabled until ~/enable'
        self.publish_status()
        return response

    def _on_chunk(self, msg: ActionChunk) -> None:
        chunk = M.chunk_from_msg(msg)
        with self._lock:
            if self.intake is None:
                return
            decision = self.intake.chunk(chunk, self._now_s())
        self._account(decision)

    def _account(self, decision: Optional[IntakeDecision]) -> None:
        """The node's counters and error record for the core's decision on a chunk."""
        if decision is None:
            return
        if decision.intake is Intake.ACCEPTED:
            self.requests_completed += 1
        if decision.dropped:
            self.inputs_dropped += 1
        if decision.intake is Intake.NOT_READY:
            self.get_logger().warning('action chunk dropped: no kinematics yet (waiting for robot_description)',
                                      throttle_duration_sec=5.0)
        if decision.error:
            self.record_error(decision.error)

    # -- the control tick -----------------------------------------------------------------------
    def _tick(self) -> None:
        start = time.perf_counter()
        with self._lock:
            if self.intake is None:
                return
            tick = self.intake.tick(self._now_s())
            self._publish(tick)
        self._account(tick.intake)
        elapsed = time.perf_counter() - start
        self._tick_times.append(elapsed)
        if len(self._tick_times) > 1000:
            del self._tick_times[:500]
        self._tick_max_s = max(self._tick_max_s, elapsed)

    def _publish(self, tick: SinkTick) -> None:
        """Publish what the core decided (:class:`~molmoact_ros.ros.sink_outputs.SinkOutputs`) and count it."""
        sent = self.outputs.publish(tick)
        if isinstance(sent, HoldCommand):
            self.holds_sent += 1
            cause = sent.cause.value if sent.cause is not None else 'unknown'
            self.get_logger().info(f'halt ({cause}): holding the arm')
        elif sent is not None:
            self.commands_sent += 1
            self.last_latency_s = sent.age_s
            self.current_request_id = sent.request_id

    # -- diagnostics ----------------------------------------------------------------------------
    def figures(self) -> SinkFigures:
        """The sink's figures as typed values (the core's, plus what only the node knows)."""
        with self._lock:
            node = dict(commands_sent=self.commands_sent, holds_sent=self.holds_sent,
                        ik_backend=self.ik_selection.describe() if self.ik_selection is not None else None)
            if self.gripper_action is not None:
                node.update(self.gripper_action.figures())
            if self._tick_times:
                node.update(tick_time_mean_s=float(np.mean(self._tick_times)), tick_time_max_s=self._tick_max_s)
            if self.intake is not None:
                return self.intake.figures(**node)
            return SinkFigures(**node)

    def diagnostic_values(self) -> list:
        """Sink figures for /diagnostics (key, value) pairs: :meth:`figures` as display strings (the base
        node adds them to its /diagnostics status)."""
        return self.figures().display_values()


def main(argv=None) -> int:
    """``ros2 run molmoact_ros command_sink [--autostart]``: the sink alone (:func:`.standalone.run_alone`)."""
    return run_alone(CommandSinkNode, argv, label='command sink')


if __name__ == '__main__':
    sys.exit(main())
