"""The ROS-free core of a command sink: chunks in, safe arm commands out, on the sink's clock.

:class:`ArmExecutor` ties together an :class:`~molmoact_ros.robot.execution.ExecutionQueue`, a
:class:`~molmoact_ros.robot.safety.SafetyGovernor`, a
:class:`~molmoact_ros.robot.execution.GripperMapping` and (for joint commands) an
:class:`~molmoact_ros.robot.kinematics.ArmKinematics`. A ROS sink node only converts messages and
publishes what :meth:`ArmExecutor.tick` returns::

    executor = ArmExecutor(mode=SinkMode.JOINT_TRAJECTORY, governor=SafetyGovernor(limits),
                           queue=ExecutionQueue(limits.max_action_age_s), gripper=profile.gripper,
                           kinematics=kin)       # ik_solver=MoveItPyIk(...) to solve IK with moveit_py
    # ActionChunk callback:      executor.submit(timeline, now_s)       (timeline: execution.build_timeline;
    #                            on InvalidChunkError: executor.reject_chunk(now_s))
    # Image callback:            executor.governor.camera_seen(now_s)
    # enable / e-stop services:  executor.governor.enable(now_s) / .e_stop(now_s) / .reset_e_stop(now_s)
    # on_deactivate:             executor.governor.deactivate(now_s); then publish executor.tick(...)'s hold
    # control timer (e.g. 50 Hz):
    result = executor.tick(now_s, joint_positions=q_measured)
    publish(result.command)        # JointCommand | PoseCommand | TwistCommand | HoldCommand | None

What :meth:`~ArmExecutor.tick` does, in order:

1. ``governor.gate(now_s)``: e-stop, disabled/deactivated, stale camera, stalled model. A closed gate
   flushes the queue; the first tick after a halt returns a :class:`HoldCommand` (the sink stops the
   arm: JTC -> a one-point trajectory at the measured joints, or an empty one; Servo pose -> the
   measured pose; Servo twist -> zero twist), later ticks return no command while halted.
2. The newest due step of the queue, handed out once; none -> no command (the controller holds the
   last target: a JTC trajectory ends at rest, Servo holds its last pose or times out a twist).
3. ``check_action_lag``: a step more than ``max_action_age_s`` behind its planned time halts.
4. ``clamp_ee_step`` against the previously *commanded* pose (the measured pose after a halt or at
   start): workspace box, step translation, step rotation. A non-finite target halts.
5. Gripper: the mapping, then ``clamp_gripper``.
6. Per mode:
   - ``joint_trajectory``: IK seeded from the previously commanded joints (measured after a halt), by
     ``ik_solver`` (default: the kinematics' own Pinocchio IK; any
     :class:`~molmoact_ros.robot.kinematics.IkSolver`, e.g. the moveit_py adapter);
     no convergence -> halt ``ik_failure``; then ``clamp_joints`` (position limits, velocity limits over
     the time left to the step's end). Returns :class:`JointCommand`.
   - ``servo_pose`` and ``none`` (dry run: the sink publishes nothing): :class:`PoseCommand`.
   - ``servo_twist``: :class:`TwistCommand` = (clamped target - previous) / time left, base frame.

Every command therefore respects the governor's limits; the property test
(``test/robot/test_safety_property.py``) drives 10,000 random chunks and state sequences through it.

Grippers behind a ``control_msgs/action/GripperCommand`` server (GripperActionController,
franka_gripper) are driven by goals, not topics: :class:`GripperGoalTracker` decides what to send and
when (a goal only when the command changes; on a halt, cancel what is in flight and re-send nothing).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .execution import ChunkTimeline, ExecutionQueue, GripperMapping, OfferResult, TimelineStep
from .safety import ClipKind, HaltCause, SafetyGovernor, rotation_vector

if TYPE_CHECKING:  # kinematics imports Pinocchio; a pose-only sink does not need it
    from .kinematics import ArmKinematics, IkSolver

__all__ = [
    'SinkMode',
    'JointCommand',
    'PoseCommand',
    'TwistCommand',
    'HoldCommand',
    'TickResult',
    'ExecutorDiagnostics',
    'ArmExecutor',
    'GripperGoal',
    'GripperGoalOutcome',
    'GripperGoalTracker',
]


class SinkMode(str, enum.Enum):
    """How a sink moves the arm (the ``sink.mode`` of a robot profile)."""

    JOINT_TRAJECTORY = 'joint_trajectory'
    SERVO_TWIST = 'servo_twist'
    SERVO_POSE = 'servo_pose'
    NONE = 'none'


@dataclass(frozen=True)
class _StepInfo:
    request_id: str
    step_index: int
    #: Action age at execution (now - observation stamp) and lag behind plan (now - planned time), s.
    age_s: float
    lag_s: float
    clipped: frozenset[ClipKind]


@dataclass(frozen=True)
class JointCommand(_StepInfo):
    """Joint targets (``names`` order) to reach ``time_from_start_s`` after now; gripper may be None (keep)."""

    names: tuple[str, ...] = ()
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    time_from_start_s: float = 0.0
    gripper: float | None = None
    #: The end-effector pose the joints reach (FK of ``positions``), base frame.
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))


@dataclass(frozen=True)
class PoseCommand(_StepInfo):
    """Absolute end-effector target (4x4, base frame) to reach ``time_from_start_s`` after now."""

    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    time_from_start_s: float = 0.0
    gripper: float | None = None


@dataclass(frozen=True)
class TwistCommand(_StepInfo):
    """End-effector velocity in base-frame axes (m/s, rad/s), valid for ``duration_s``."""

    linear_m_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_rad_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    duration_s: float = 0.0
    gripper: float | None = None
    #: The pose the twist reaches after duration_s (base frame).
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))


@dataclass(frozen=True)
class HoldCommand:
    """Stop where the arm is. ``joint_positions`` / ``pose``: the measured state when known."""

    cause: HaltCause
    joint_positions: np.ndarray | None = None
    pose: np.ndarray | None = None


Command = JointCommand | PoseCommand | TwistCommand | HoldCommand


@dataclass(frozen=True)
class TickResult:
    """What one tick produced: a command (or None) and why nothing moved when it did not."""

    command: Command | None
    halt_cause: HaltCause | None = None


@dataclass(frozen=True)
class ExecutorDiagnostics:
    """Figures for a diagnostics message (the governor's counts are in ``governor.diagnostics()``)."""

    commands: int
    last_age_s: float | None
    last_lag_s: float | None
    max_age_s: float | None
    offers: dict
    skipped_steps: int
    flushes: int
    ik_failures: int
    last_ik_time_s: float | None


#: Smallest time a command gets to reach its target, as a fraction of the step period.
MIN_TIME_FRACTION = 0.2


class ArmExecutor:
    """See the module docstring."""

    def __init__(self, *, mode: SinkMode | str, governor: SafetyGovernor, queue: ExecutionQueue,
                 gripper: GripperMapping, kinematics: 'ArmKinematics | None' = None,
                 ik_solver: 'IkSolver | None' = None) -> None:
        """``ik_solver``: who solves IK for ``joint_trajectory`` (default: ``kinematics.ik``, Pinocchio).
        FK, joint limits and the joint-step clamp always use ``kinematics``."""
        self.mode = SinkMode(mode)
        if self.mode is SinkMode.JOINT_TRAJECTORY and kinematics is None:
            raise ValueError('sink mode joint_trajectory needs kinematics (an ArmKinematics)')
        if (self.mode is SinkMode.JOINT_TRAJECTORY and governor.limits.joint_limits is None):
            raise ValueError('sink mode joint_trajectory needs SafetyLimits.joint_limits '
                             '(e.g. limits.with_joint_limits(kinematics.limits))')
        if (kinematics is not None and governor.limits.joint_limits is not None
                and tuple(governor.limits.joint_limits.names) != tuple(kinematics.joint_names)):
            raise ValueError('the safety joint limits and the kinematics name different joints: '
                             f'{governor.limits.joint_limits.names} vs {kinematics.joint_names}')
        self.governor = governor
        self.queue = queue
        self.gripper = gripper
        self.kinematics = kinematics
        self.ik_solver = ik_solver
        governor.add_flush_hook(self._on_halt)
        self._last_pose: np.ndarray | None = None
        self._last_q: np.ndarray | None = None
        self._commands = 0
        self._last_age: float | None = None
        self._last_lag: float | None = None
        self._max_age: float | None = None
        self._ik_failures = 0
        self._last_ik_time: float | None = None

    # ------------------------------------------------------------------ inputs

    def submit(self, timeline: ChunkTimeline, now_s: float) -> OfferResult:
        """A chunk arrived at ``now_s``: counts as model output (heartbeat) and goes to the queue.

        While a gate is closed (disabled, e-stop, stale camera) the chunk is dropped
        (``OfferResult.HALTED``): nothing queued while halted can fire when execution resumes.
        """
        self.governor.model_seen(now_s)
        if self.governor.blocking_cause(now_s) is not None:
            self.queue.offers[OfferResult.HALTED] += 1
            return OfferResult.HALTED
        return self.queue.offer(timeline, now_s)

    def reject_chunk(self, now_s: float) -> None:
        """A chunk that could not be turned into a timeline (``InvalidChunkError``): halt ``invalid_action``.

        A model that emits non-finite or overflowing actions is not trusted with the rest of its chunk
        either, so the queue is flushed and the arm holds.
        """
        self.governor.halt(HaltCause.INVALID_ACTION, now_s)

    def _on_halt(self) -> None:
        self.queue.flush()
        # After a halt the arm holds where it is: the next motion starts from the measured state.
        self._last_pose = None
        self._last_q = None

    # ------------------------------------------------------------------ the tick

    def _measured(self, joint_positions, ee_pose) -> tuple[np.ndarray | None, np.ndarray | None]:
        q = None
        if joint_positions is not None:
            q = np.asarray(joint_positions, dtype=np.float64)
            if self.kinematics is not None and (q.shape != (self.kinematics.dof,) or not np.all(np.isfinite(q))):
                q = None
            elif not np.all(np.isfinite(q)):
                q = None
        pose = None
        if ee_pose is not None:
            pose = np.asarray(ee_pose, dtype=np.float64)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                pose = None
        if pose is None and q is not None and self.kinematics is not None:
            pose = self.kinematics.fk(self.kinematics.limits.clip(q))
        return q, pose

    def _hold(self, cause: HaltCause, q, pose) -> TickResult:
        if self.governor.consume_hold_request():
            return TickResult(HoldCommand(cause, None if q is None else q.copy(),
                                          None if pose is None else pose.copy()), cause)
        return TickResult(None, cause)

    def tick(self, now_s: float, *, joint_positions: Sequence[float] | None = None,
             ee_pose: np.ndarray | None = None) -> TickResult:
        """One control cycle at ``now_s`` with the measured joints (controller order) and/or EE pose."""
        q_meas, pose_meas = self._measured(joint_positions, ee_pose)
        cause = self.governor.gate(now_s)
        if cause is not None:
            return self._hold(cause, q_meas, pose_meas)
        if self.governor.consume_hold_request():
            # A halt happened since the last tick and was already cleared (e.g. disable, then enable):
            # the hold is still owed; the queue was flushed, so nothing older than the halt can follow.
            return TickResult(HoldCommand(self.governor.last_halt_cause,
                                          None if q_meas is None else q_meas.copy(),
                                          None if pose_meas is None else pose_meas.copy()),
                              self.governor.last_halt_cause)
        step = self.queue.pop_due(now_s)
        if step is None:
            return TickResult(None)
        return self._execute(step, now_s, q_meas, pose_meas)

    def _execute(self, step: TimelineStep, now_s: float, q_meas, pose_meas) -> TickResult:
        gov = self.governor
        age, lag = float(step.age_s(now_s)), float(step.lag_s(now_s))
        if not gov.check_action_lag(lag, now_s):
            return self._hold(HaltCause.ACTION_TOO_OLD, q_meas, pose_meas)
        previous = self._last_pose if self._last_pose is not None else pose_meas
        if self.mode is SinkMode.JOINT_TRAJECTORY and self._last_q is None and q_meas is not None:
            # Joint commands start from the measured joints clipped into the safe bounds.
            previous = self.kinematics.fk(np.clip(q_meas, *gov.limits.effective_joint_bounds()))
        if previous is None:
            gov.halt(HaltCause.NO_ROBOT_STATE, now_s)
            return self._hold(HaltCause.NO_ROBOT_STATE, q_meas, pose_meas)
        decision = gov.clamp_ee_step(step.pose, previous, now_s)
        if decision.pose is None:
            return self._hold(decision.halt, q_meas, pose_meas)
        gripper = gov.clamp_gripper(self.gripper(step.gripper_raw))
        # The floor uses the exact period, not end_s - start_s (clock values ~1.8e9 s: off by up to 2.4e-7 s),
        # so that a twist never exceeds max_step_translation_m / (MIN_TIME_FRACTION * period) beyond rounding.
        dt = max(step.end_s - now_s, MIN_TIME_FRACTION * step.period_s)
        clipped = set(decision.clipped)
        if self.mode is SinkMode.JOINT_TRAJECTORY:
            kin = self.kinematics
            q_prev = self._last_q if self._last_q is not None else q_meas
            if q_prev is None:
                gov.halt(HaltCause.NO_ROBOT_STATE, now_s)
                return self._hold(HaltCause.NO_ROBOT_STATE, q_meas, pose_meas)
            solver = self.ik_solver if self.ik_solver is not None else kin
            result = solver.ik(decision.pose, kin.limits.clip(q_prev))
            self._last_ik_time = result.solve_time_s
            if not result.converged:
                self._ik_failures += 1
                gov.halt(HaltCause.IK_FAILURE, now_s)
                return self._hold(HaltCause.IK_FAILURE, q_meas, pose_meas)
            joints = gov.clamp_joint_step(result.q, q_prev, dt, kin.fk)
            clipped |= joints.clipped
            pose = kin.fk(joints.positions)
            self._last_q = joints.positions
            self._last_pose = pose
            command = JointCommand(step.request_id, step.index, age, lag, frozenset(clipped),
                                   names=kin.joint_names, positions=joints.positions.copy(),
                                   time_from_start_s=dt, gripper=gripper, pose=pose)
        elif self.mode is SinkMode.SERVO_TWIST:
            linear = (decision.pose[:3, 3] - previous[:3, 3]) / dt
            R_rel = decision.pose[:3, :3] @ previous[:3, :3].T
            angular = rotation_vector(R_rel) / dt
            self._last_pose = decision.pose
            command = TwistCommand(step.request_id, step.index, age, lag, frozenset(clipped),
                                   linear_m_s=linear, angular_rad_s=angular, duration_s=dt,
                                   gripper=gripper, pose=decision.pose)
        else:  # servo_pose, none
            self._last_pose = decision.pose
            command = PoseCommand(step.request_id, step.index, age, lag, frozenset(clipped),
                                  pose=decision.pose, time_from_start_s=dt, gripper=gripper)
        self._commands += 1
        self._last_age, self._last_lag = age, lag
        self._max_age = age if self._max_age is None else max(self._max_age, age)
        return TickResult(command)

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self) -> ExecutorDiagnostics:
        return ExecutorDiagnostics(
            commands=self._commands, last_age_s=self._last_age, last_lag_s=self._last_lag,
            max_age_s=self._max_age, offers={k.value: v for k, v in self.queue.offers.items()},
            skipped_steps=self.queue.skipped_steps, flushes=self.queue.flushes,
            ik_failures=self._ik_failures, last_ik_time_s=self._last_ik_time)



# ---------------------------------------------------------------------------------------------------
# GripperCommand action goals (control_msgs/action/GripperCommand)

@dataclass(frozen=True)
class GripperGoal:
    """One GripperCommand goal: ``command.position`` (the profile's gripper units) and ``command.max_effort``."""

    seq: int
    position: float
    max_effort: float


class GripperGoalOutcome(str, enum.Enum):
    """How a goal ended (from the action's terminal status and result)."""

    REACHED = 'reached'        # succeeded with reached_goal
    STALLED = 'stalled'        # stopped on an object (succeeded or aborted with stalled): a grasp
    SUCCEEDED = 'succeeded'    # succeeded, reached_goal false and not stalled
    ABORTED = 'aborted'
    CANCELED = 'canceled'      # by us on a halt, or preempted by our next goal
    REJECTED = 'rejected'


class GripperGoalTracker:
    """What a GripperCommand action client sends, and when. ROS-free; the sink node does the I/O.

    - :meth:`request` takes each executed step's gripper command (already mapped and clamped). It returns
      a :class:`GripperGoal` only when the position differs from the last goal by more than
      ``tolerance`` (or when no goal was sent since the start or the last halt); otherwise None. A goal
      supersedes the previous one (GripperActionController preempts its active goal).
    - :meth:`not_sent`: the server was not ready; the target is forgotten so the next step retries.
    - :meth:`accepted` / :meth:`rejected` / :meth:`finished` follow each goal. A rejected or aborted goal is
      not re-sent (the next *different* command is): a server that refuses does not get a goal every step.
    - :meth:`halt` (every halt of the arm: e-stop, disable, deactivate, staleness, IK failure): returns the
      goals to cancel (those in flight; a GripperActionController holds the current position on cancel) and
      forgets the target. Nothing is re-sent on resume; the first step executed afterwards sends its own
      command. A goal whose acceptance arrives after the halt is cancelled on acceptance.
    """

    def __init__(self, max_effort: float = 0.0, tolerance: float = 1e-6) -> None:
        if not (math.isfinite(max_effort) and max_effort >= 0.0):
            raise ValueError(f'max_effort must be a finite number >= 0, got {max_effort!r}')
        if not (math.isfinite(tolerance) and tolerance >= 0.0):
            raise ValueError(f'tolerance must be a finite number >= 0, got {tolerance!r}')
        self.max_effort = float(max_effort)
        self.tolerance = float(tolerance)
        self._target: float | None = None
        self._seq = 0
        self._pending: set[int] = set()       # sent, acceptance not known yet
        self._active: set[int] = set()        # accepted, not finished
        self._cancel_on_accept: set[int] = set()
        self.counts = {kind: 0 for kind in GripperGoalOutcome}
        self.sent = 0

    @property
    def target(self) -> float | None:
        """Position of the last goal sent since the last halt (None: the next command is sent)."""
        return self._target

    @property
    def in_flight(self) -> frozenset[int]:
        """Goals sent or accepted and not finished."""
        return frozenset(self._pending | self._active)

    def request(self, position: float | None) -> GripperGoal | None:
        """A step's gripper command -> the goal to send now, or None (unchanged, or no command)."""
        if position is None or not math.isfinite(position):
            return None
        if self._target is not None and abs(position - self._target) <= self.tolerance:
            return None
        self._seq += 1
        self._target = float(position)
        self._pending.add(self._seq)
        self.sent += 1
        return GripperGoal(self._seq, float(position), self.max_effort)

    def not_sent(self, goal: GripperGoal) -> None:
        """``goal`` could not be sent (no server): forget it, so the next step's command is sent."""
        self._pending.discard(goal.seq)
        self.sent -= 1
        if self._target is not None and goal.seq == self._seq:
            self._target = None

    def accepted(self, seq: int) -> bool:
        """The server accepted goal ``seq``. Returns True when it must be cancelled at once (a halt came
        between sending and acceptance)."""
        self._pending.discard(seq)
        if seq in self._cancel_on_accept:
            self._cancel_on_accept.discard(seq)
            return True
        self._active.add(seq)
        return False

    def rejected(self, seq: int) -> None:
        self._pending.discard(seq)
        self._cancel_on_accept.discard(seq)
        self.counts[GripperGoalOutcome.REJECTED] += 1

    def finished(self, seq: int, outcome: GripperGoalOutcome) -> None:
        self._pending.discard(seq)
        self._active.discard(seq)
        self._cancel_on_accept.discard(seq)
        self.counts[GripperGoalOutcome(outcome)] += 1

    def halt(self) -> tuple[int, ...]:
        """The arm halted: goals to cancel now (accepted ones); pending ones are cancelled on acceptance."""
        self._target = None
        self._cancel_on_accept |= self._pending
        return tuple(sorted(self._active))

    @staticmethod
    def outcome(status: str, reached_goal: bool, stalled: bool) -> GripperGoalOutcome:
        """Classify a terminal status (``succeeded``, ``aborted``, ``canceled``) and result flags."""
        if status == 'canceled':
            return GripperGoalOutcome.CANCELED
        if stalled:
            return GripperGoalOutcome.STALLED
        if status == 'succeeded':
            return GripperGoalOutcome.REACHED if reached_goal else GripperGoalOutcome.SUCCEEDED
        return GripperGoalOutcome.ABORTED
