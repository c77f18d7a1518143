"""The command sink's chunk intake: action chunks (plain values) in, what the sink does with them out.

ROS-free and handed the time (``now_s``: seconds of the sink's clock, the same for every call; nothing
here reads a clock, and nothing assumes the clock is large: "never happened" is ``None``, not 0 s). The
node (``nodes/command_sink.py``) converts messages into :class:`ChunkIn` / joint-state values, calls
this core under its lock, and publishes what it returns. :class:`ChunkIntake` owns the
:class:`~molmoact_ros.robot.safety.SafetyGovernor` and, once kinematics exist, the
:class:`~molmoact_ros.robot.executor.ArmExecutor` (read ``robot/executor.py`` for what a tick does).

A chunk (:meth:`ChunkIntake.chunk`), in this order:

1. no kinematics yet -> ``NOT_READY`` (dropped);
2. ``action_dim`` other than 7, a step with another number of values, an unknown rotation convention
   -> ``REJECTED`` (counted, an error, and the arm halts ``invalid_action``: a model that emits a
   malformed chunk is not trusted with the rest of the current one either);
3. ``plan_only`` -> ``PLAN_ONLY`` (counted; the model is alive, the chunk is not for the arm);
4. a non-finite stamp, or a stamp more than ``max_action_age_s`` ahead of the sink's clock -> ``REJECTED``
   (counted, a bounded error; no halt: a clock problem, not a corrupt command). Such a chunk is never held;
5. no steps, a non-positive or non-finite step period, non-finite values, or a delta frame that is neither
   the base nor the end-effector frame -> ``REJECTED`` with a halt (before the chunk could wait for an anchor);
6. the anchor (the end-effector pose at the observation):

   - a valid ``observation_pose``: it must be in the base frame with a finite position and a finite unit
     quaternion (norm within 1e-3 of 1), else ``REJECTED`` with a halt (a corrupt newer command for the
     arm means stop: the running chunk is flushed and the arm holds);
   - otherwise the FK pose of the joint state nearest the stamp (within ``anchor_tolerance_s``). None yet,
     and one may still come (no joint state newer than stamp + tolerance, and the stamp not older than
     ``max_action_age_s``) -> ``PENDING``: retried on every tick, the newest such chunk wins; otherwise
     ``DROPPED`` (an error);
7. deltas -> timeline (``robot.execution.build_timeline``); non-finite or overflowing -> ``REJECTED`` with
   a halt;
8. the timeline goes to the executor: ``ACCEPTED`` (now the current chunk; its constraints tighten the
   governor's step limits while it runs) or ``REFUSED`` (too old, out of order, expired, or halted).

A pending chunk is discarded by every halt (disable, deactivate, e-stop, stale camera, stalled model,
a rejected chunk: the governor's flush hook) and by a newer chunk that is accepted or becomes pending
itself: what arrived later wins, and nothing held can fire after a halt.

Every chunk therefore ends counted in :attr:`ChunkIntake.counts` (one per terminal decision), or is the one
pending chunk, or was discarded (:attr:`ChunkIntake.pending_discarded`). Every error text quotes input
through :func:`~molmoact_ros.cores.quoting.quote` (bounded).

The control tick (:meth:`ChunkIntake.tick`): retry the pending chunk, tighten the limits for the current
chunk, tick the executor with the measured joints (none when older than ``joint_state_timeout_s``), and
decide the Servo keep-alive: MoveIt Servo drops commands older than its ``incoming_command_timeout``, so a
twist is re-sent every tick while its step lasts and then stopped with one zero twist, and a pose target
(or hold pose) is re-sent every tick until the next one, for at most ``servo_pose_keepalive_s`` after its
step's end.

Its figures (counts per decision, rejection, halt cause, clamp kind, queue offer): :meth:`ChunkIntake.figures`,
a frozen :class:`~molmoact_ros.cores.sink_figures.SinkFigures` that /diagnostics and the demo read.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from ..reasoning.action_space import RotationConvention
from ..robot.execution import (DeltaFrame, ExecutionQueue, InvalidChunkError, OfferResult, PoseHistory,
                               build_timeline)
from ..robot.executor import (ArmExecutor, Command, HoldCommand, PoseCommand, SinkMode,
                              TwistCommand)
from ..robot.safety import HaltCause, SafetyGovernor
from .quoting import bound, quote
from .sink_figures import ExecutionFigures, IntakeFigures, SafetyFigures, SinkFigures

if TYPE_CHECKING:
    from ..robot.kinematics import ArmKinematics, IkSolver
    from ..robot.profiles import RobotProfile

__all__ = [
    'ACTION_DIM',
    'SINK_CHOICES',
    'IK_BACKENDS',
    'CommandSinkConfig',
    'ObservationPose',
    'StepIn',
    'ChunkIn',
    'Intake',
    'Rejection',
    'IntakeDecision',
    'KeepAlive',
    'Resend',
    'SinkTick',
    'ChunkIntake',
]

#: Values per step the sink executes: 3 translation, 3 rotation, 1 gripper.
ACTION_DIM = 7
#: Values of the ``sink`` parameter.
SINK_CHOICES = ('profile', 'joint_trajectory', 'servo_twist', 'servo_pose', 'none')
#: Values of ``ik_backend`` (robot.kinematics.IkBackend; spelled out so that this module does not import Pinocchio).
IK_BACKENDS = ('auto', 'pinocchio', 'moveit_py')
#: Largest deviation of an observation quaternion's norm from 1 (as ``ros.transforms.pose_to_matrix``).
QUATERNION_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CommandSinkConfig:
    """The command sink's parameters (the node's ``ParamSpec``s take their defaults from here: one default
    per parameter). Read once at configure: a parameter set later applies from the next configure."""

    robot_profile: str = 'sim_panda'
    sink: str = 'profile'
    execution_enabled: bool = False
    control_rate_hz: float = 50.0
    camera_topic: str = 'image'
    arm_controller: str = ''
    servo_twist_topic: str = ''
    servo_pose_topic: str = ''
    robot_description_source: str = 'topic'
    anchor_tolerance_s: float = 0.1
    joint_state_timeout_s: float = 0.5
    hold_time_s: float = 0.05
    servo_pose_keepalive_s: float = 0.5
    ik_backend: str = 'auto'
    ik_planning_group: str = ''
    ik_timeout_s: float = 0.0
    moveit_py_node_name: str = 'molmoact_moveit_py'
    moveit_py_params_file: str = ''

    def __post_init__(self) -> None:
        for name in ('anchor_tolerance_s', 'joint_state_timeout_s', 'servo_pose_keepalive_s', 'hold_time_s',
                     'control_rate_hz'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and name in ('anchor_tolerance_s', 'joint_state_timeout_s',
                                                             'control_rate_hz')):
                raise ValueError(f'CommandSinkConfig.{name}: invalid value {value!r}')
            object.__setattr__(self, name, float(value))
        if self.sink not in SINK_CHOICES:
            raise ValueError(f'CommandSinkConfig.sink must be one of {SINK_CHOICES}, got {quote(self.sink)}')

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> 'CommandSinkConfig':
        """From a mapping of parameter values (the node's ``params``) holding every field."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def mode(self, profile: 'RobotProfile') -> SinkMode:
        """The sink mode: the parameter, or the profile's ``sink.mode`` for ``profile``."""
        return profile.sink.mode if self.sink == 'profile' else SinkMode(self.sink)


@dataclass(frozen=True)
class ObservationPose:
    """``ActionChunk.observation_pose`` (only when ``observation_pose_valid``): position and quaternion."""

    frame_id: str
    position: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]


@dataclass(frozen=True)
class StepIn:
    """One ``ActionStep``: its deltas, gripper value and how many raw ``values`` it carried."""

    translation_m: tuple[float, float, float]
    rotation_rad: tuple[float, float, float]
    gripper: float
    n_values: int = ACTION_DIM


@dataclass(frozen=True)
class ChunkIn:
    """An ``ActionChunk`` as plain values (the node converts the message)."""

    request_id: str
    #: Header stamp (the observation's time) on the sink's clock, s.
    stamp_s: float
    steps: tuple[StepIn, ...]
    step_period_s: float
    action_dim: int = ACTION_DIM
    #: The message's rotation convention: None when its code is unknown (``rotation_code`` says which).
    rotation_convention: Optional[RotationConvention] = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW
    rotation_code: int = 0
    delta_frame_id: str = ''
    observation_pose: Optional[ObservationPose] = None
    plan_only: bool = False
    #: ExecutionConstraints: tighter per-step limits (0 or non-finite: none).
    max_translation_m_per_step: float = 0.0
    max_rotation_rad_per_step: float = 0.0


class Intake(str, enum.Enum):
    """What became of a chunk (see the module docstring)."""

    ACCEPTED = 'accepted'      # submitted: now the current chunk
    REFUSED = 'refused'        # submitted, refused by the queue (too old, out of order, expired) or halted
    PLAN_ONLY = 'plan_only'
    PENDING = 'pending'        # waiting for the joint state at its stamp (not terminal)
    REJECTED = 'rejected'      # malformed or from the future: counted in rejected chunks, an error
    DROPPED = 'dropped'        # could not be anchored in time: an error
    NOT_READY = 'not_ready'    # no kinematics yet


class Rejection(str, enum.Enum):
    """Why a chunk was rejected (diagnostics: ``rejected chunks <reason>``)."""

    INVALID = 'invalid'                          # shape, convention, delta frame, non-finite deltas
    FROM_FUTURE = 'from_future'                  # stamped more than max_action_age_s ahead (or not finite)
    OBSERVATION_POSE = 'observation_pose'        # not in the base frame, non-finite, not a unit quaternion


@dataclass(frozen=True)
class IntakeDecision:
    """The decision on one chunk. ``error``: a bounded text for the node's error record ('' for none)."""

    intake: Intake
    chunk: ChunkIn
    error: str = ''
    rejection: Optional[Rejection] = None
    offer: Optional[OfferResult] = None
    #: The chunk halted the arm (``invalid_action``: the queue was flushed, a hold follows).
    halted: bool = False

    @property
    def dropped(self) -> bool:
        """Counts as a dropped input on ~/status (chunks refused while halted are expected: not counted)."""
        if self.intake is Intake.REFUSED:
            return self.offer is not OfferResult.HALTED
        return self.intake in (Intake.DROPPED, Intake.NOT_READY)


class KeepAlive(str, enum.Enum):
    TWIST = 'twist'            # re-send the twist (re-stamped)
    ZERO_TWIST = 'zero_twist'  # the step's time is over: one zero twist
    POSE = 'pose'              # re-send the pose target (re-stamped)


@dataclass(frozen=True)
class Resend:
    """A Servo keep-alive message to publish this tick."""

    kind: KeepAlive
    twist: Optional[TwistCommand] = None
    pose: Optional[np.ndarray] = None


@dataclass(frozen=True)
class SinkTick:
    """What one control tick (or deactivate) publishes."""

    command: Optional[Command] = None
    #: A Servo keep-alive, only when ``command`` is None.
    resend: Optional[Resend] = None
    #: Gripper value for a topic gripper controller: the command's, when it changed (None: send nothing).
    gripper_changed: Optional[float] = None
    #: The decision on the pending chunk retried this tick (None: nothing was pending).
    intake: Optional[IntakeDecision] = None


@dataclass
class _Limits:
    translation_m: float
    rotation_rad: float


class ChunkIntake:
    """See the module docstring. Not thread-safe: the node calls it under its lock."""

    def __init__(self, config: CommandSinkConfig, profile: 'RobotProfile') -> None:
        self.config = config
        self.profile = profile
        self.mode = config.mode(profile)
        #: The one read of the profile's max_action_age_s: the queue, the anchor history and the intake's
        #: time checks use this value (the governor checks step lag against the same limits object).
        self.max_action_age_s = float(profile.safety.max_action_age_s)
        self.base_limits = profile.safety
        self.governor = SafetyGovernor(profile.safety)
        self.governor.add_flush_hook(self._on_halt)
        # Anchor poses are kept as long as a chunk may be executed (max_action_age_s), at least 5 s.
        self.history = PoseHistory(horizon_s=max(5.0, self.max_action_age_s + config.anchor_tolerance_s))
        self.executor: Optional[ArmExecutor] = None
        self.kinematics: Optional['ArmKinematics'] = None
        #: (receive time on the sink's clock, q in kinematics order) of the newest joint state; None: none yet.
        self.last_joint_state: Optional[tuple[float, np.ndarray]] = None
        self._state_stamp_s: Optional[float] = None   # newest joint-state stamp in the history
        self._pending: Optional[ChunkIn] = None
        self._constraints: dict[str, _Limits] = {}    # request_id -> tighter limits of the current chunk
        self._twist: Optional[tuple[TwistCommand, float]] = None   # (twist, until) being re-sent
        self._pose_target: Optional[tuple[np.ndarray, float]] = None   # (pose, until) being re-sent
        self._last_gripper: Optional[float] = None
        #: Terminal decisions per kind, rejections per reason, pending chunks discarded (halt or newer chunk).
        self.counts: dict[Intake, int] = {kind: 0 for kind in Intake if kind is not Intake.PENDING}
        self.rejections: dict[Rejection, int] = {reason: 0 for reason in Rejection}
        self.pending_discarded = 0

    # ------------------------------------------------------------------ state

    @property
    def pending(self) -> Optional[ChunkIn]:
        """The chunk waiting for the joint state at its stamp (None when none)."""
        return self._pending

    @property
    def rejected_chunks(self) -> int:
        return self.counts[Intake.REJECTED]

    @property
    def plan_only_chunks(self) -> int:
        return self.counts[Intake.PLAN_ONLY]

    def _on_halt(self) -> None:
        """Every halt (the governor's flush hook): nothing held may fire later."""
        if self._pending is not None:
            self._pending = None
            self.pending_discarded += 1

    def kinematics_ready(self, kinematics: 'ArmKinematics', ik_solver: 'IkSolver | None' = None) -> None:
        """Kinematics from a (new) robot_description: the governor gets its joint limits, the executor starts."""
        self.kinematics = kinematics
        self.base_limits = self.profile.safety.with_joint_limits(kinematics.limits)
        self.governor.limits = self.base_limits
        if self.executor is None:
            self.executor = ArmExecutor(mode=self.mode, governor=self.governor,
                                        queue=ExecutionQueue(self.max_action_age_s, self.profile.start_mode),
                                        gripper=self.profile.gripper, kinematics=kinematics, ik_solver=ik_solver)
        else:
            self.executor.kinematics = kinematics
            self.executor.ik_solver = ik_solver

    # ------------------------------------------------------------------ inputs

    def joint_state(self, now_s: float, stamp_s: float, names: Sequence[str],
                    positions: Sequence[float]) -> str:
        """A joint state received at ``now_s``, stamped ``stamp_s`` (0: unstamped, taken as ``now_s``).

        Ignored before kinematics exist, without the controlled joints (e.g. a gripper-only state), with a
        non-finite stamp, or with non-finite positions of controlled joints. Returns an error text ('' for
        none) for a malformed one: names and positions of different lengths, or non-finite controlled-joint
        positions (a sensor fault: refused and counted; the last good state stays and ages out).
        """
        kin = self.kinematics
        if kin is None:
            return ''
        try:
            q = kin.joint_vector(list(names), list(positions))
        except KeyError:
            return ''
        except (ValueError, TypeError) as exc:
            return bound(f'joint state ignored: {quote(str(exc))}')
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            return ''
        stamp_s = stamp_s if stamp_s > 0.0 else now_s
        if not np.all(np.isfinite(q)):
            return bound(f'joint state ignored: non-finite positions of controlled joints {quote(q.tolist())}')
        self.last_joint_state = (now_s, q)
        self.history.add(stamp_s, kin.fk(kin.limits.clip(q)))
        self._state_stamp_s = stamp_s if self._state_stamp_s is None else max(self._state_stamp_s, stamp_s)
        return ''

    def measured_q(self, now_s: float) -> Optional[np.ndarray]:
        """The newest joint state's positions, unless older than ``joint_state_timeout_s``."""
        state = self.last_joint_state
        if state is None or now_s - state[0] > self.config.joint_state_timeout_s:
            return None
        return state[1]

    def chunk(self, chunk: ChunkIn, now_s: float) -> IntakeDecision:
        """An action chunk arrived at ``now_s`` (see the module docstring). Never raises."""
        try:
            decision = self._decide(chunk, now_s)
        except Exception as exc:  # noqa: BLE001 - a chunk that breaks an assumption is rejected, not raised
            decision = self._reject(chunk, now_s, Rejection.INVALID,
                                    f'invalid action chunk {quote(chunk.request_id)}: {type(exc).__name__}: '
                                    f'{quote(str(exc))}')
        return self._settle(decision)

    def _settle(self, decision: IntakeDecision) -> IntakeDecision:
        if decision.intake is Intake.PENDING:
            if self._pending is not None and self._pending is not decision.chunk:
                self.pending_discarded += 1
            self._pending = decision.chunk
            return decision
        self.counts[decision.intake] += 1
        if decision.rejection is not None:
            self.rejections[decision.rejection] += 1
        if decision.intake is Intake.ACCEPTED and self._pending is not None:
            self._pending = None        # a newer chunk won
            self.pending_discarded += 1
        return decision

    def _reject(self, chunk: ChunkIn, now_s: float, reason: Rejection, error: str,
                halt: bool = True) -> IntakeDecision:
        if halt:
            self.governor.halt(HaltCause.INVALID_ACTION, now_s)
        return IntakeDecision(Intake.REJECTED, chunk, bound(error), rejection=reason, halted=halt)

    def _decide(self, chunk: ChunkIn, now_s: float) -> IntakeDecision:
        rid = quote(chunk.request_id)
        if self.executor is None:
            return IntakeDecision(Intake.NOT_READY, chunk)
        counts = {int(s.n_values) for s in chunk.steps}
        if chunk.action_dim != ACTION_DIM or not counts <= {0, ACTION_DIM}:
            return self._reject(chunk, now_s, Rejection.INVALID,
                                f'invalid action chunk {rid}: action_dim {quote(chunk.action_dim)} (steps with '
                                f'{quote(sorted(counts))} values); this sink executes {ACTION_DIM}-D actions')
        if chunk.rotation_convention is None:
            return self._reject(chunk, now_s, Rejection.INVALID,
                                f'invalid action chunk {rid}: unknown rotation_convention '
                                f'{quote(chunk.rotation_code)}')
        if chunk.plan_only:
            self.governor.model_seen(now_s)  # the model is alive; its chunk is not for the arm
            return IntakeDecision(Intake.PLAN_ONLY, chunk)
        stamp = float(chunk.stamp_s)
        if not math.isfinite(stamp) or stamp - now_s > self.max_action_age_s:
            ahead = f'{stamp - now_s:.3f} s' if math.isfinite(stamp) else quote(stamp)
            return self._reject(chunk, now_s, Rejection.FROM_FUTURE,
                                f'action chunk {rid} rejected: stamped {ahead} ahead of the sink\'s clock, more '
                                f'than max_action_age_s ({self.max_action_age_s:g} s): clock skew between the '
                                'pipeline and the sink?', halt=False)
        try:
            self._check_values(chunk)
            delta_frame = self._delta_frame(chunk.delta_frame_id)
        except InvalidChunkError as exc:
            return self._reject(chunk, now_s, Rejection.INVALID, f'invalid action chunk {rid}: {exc}')
        if chunk.observation_pose is not None:
            try:
                anchor = self._observation_pose(chunk.observation_pose)
            except InvalidChunkError as exc:
                return self._reject(chunk, now_s, Rejection.OBSERVATION_POSE, f'invalid action chunk {rid}: {exc}')
        else:
            anchor = self.history.at(stamp, self.config.anchor_tolerance_s)
            if anchor is None:
                if self._state_may_come(stamp, now_s):
                    self.governor.model_seen(now_s)  # the model is alive (as for a chunk submitted at once)
                    return IntakeDecision(Intake.PENDING, chunk)
                newest = 'none' if self._state_stamp_s is None else f'{self._state_stamp_s:.3f}'
                return IntakeDecision(Intake.DROPPED, chunk, bound(
                    f'action chunk {rid} dropped: no joint state within {self.config.anchor_tolerance_s:g} s of '
                    f'the chunk\'s observation stamp {stamp:.3f} to anchor it (newest joint state: {newest})'))
        try:
            # The robot profile says how this robot's checkpoint reads its rotation deltas (the engine stamps
            # its own default on the message: it cannot know the training data's convention).
            timeline = build_timeline(
                [s.translation_m for s in chunk.steps], [s.rotation_rad for s in chunk.steps],
                [s.gripper for s in chunk.steps], observation_pose=anchor, observation_stamp_s=stamp,
                step_period_s=chunk.step_period_s, delta_frame=delta_frame,
                rotation_convention=self.profile.rotation_convention, request_id=chunk.request_id,
                action_scale=self.profile.action_scale)
        except InvalidChunkError as exc:
            return self._reject(chunk, now_s, Rejection.INVALID,
                                f'invalid action chunk {rid}: {exc}')
        offer = self.executor.submit(timeline, now_s)
        if offer is OfferResult.ACCEPTED:
            self._constraints = {chunk.request_id: _Limits(float(chunk.max_translation_m_per_step),
                                                           float(chunk.max_rotation_rad_per_step))}
            return IntakeDecision(Intake.ACCEPTED, chunk, offer=offer)
        # too old, out of order, expired, from the future: a pipeline problem (/diagnostics warns).
        # Chunks refused while halted (disabled, e-stop) are expected: counted as 'chunks halted'.
        return IntakeDecision(Intake.REFUSED, chunk, offer=offer)

    @staticmethod
    def _check_values(chunk: ChunkIn) -> None:
        """What makes a chunk unexecutable whatever its anchor (checked before it may wait for one)."""
        period = float(chunk.step_period_s)
        if not (math.isfinite(period) and period > 0):
            raise InvalidChunkError(f'step_period_s must be positive, got {quote(period)}')
        if not chunk.steps:
            raise InvalidChunkError('the chunk has no steps')
        for s in chunk.steps:
            if not all(math.isfinite(float(v)) for v in (*s.translation_m, *s.rotation_rad, s.gripper)):
                raise InvalidChunkError('chunk holds non-finite values')

    def _observation_pose(self, pose: ObservationPose) -> np.ndarray:
        base = self.profile.frames.base
        if pose.frame_id and pose.frame_id != base:
            raise InvalidChunkError(f'observation_pose is in {quote(pose.frame_id)}, not the base frame {base!r}')
        try:
            p = np.asarray(pose.position, dtype=np.float64).reshape(-1)
            q = np.asarray(pose.orientation_xyzw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidChunkError('observation_pose is not numeric') from None
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InvalidChunkError(f'observation_pose position {quote(p.tolist())} is not 3 finite values')
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise InvalidChunkError(f'observation_pose orientation (x, y, z, w) {quote(q.tolist())} is not '
                                    '4 finite values')
        with np.errstate(over='ignore'):
            norm = float(np.linalg.norm(q))
        if not (math.isfinite(norm) and abs(norm - 1.0) <= QUATERNION_NORM_TOLERANCE):
            raise InvalidChunkError(f'observation_pose orientation (x, y, z, w) {quote(q.tolist())} is not a unit '
                                    f'quaternion (norm {norm:.4g})')
        from transforms3d.quaternions import quat2mat
        m = np.eye(4)
        m[:3, :3] = quat2mat(np.array([q[3], q[0], q[1], q[2]]) / norm)
        m[:3, 3] = p
        return m

    def _state_may_come(self, stamp_s: float, now_s: float) -> bool:
        """Whether a joint state near ``stamp_s`` may still arrive (joint states lag the chunk)."""
        newest = self._state_stamp_s
        return ((newest is None or newest < stamp_s + self.config.anchor_tolerance_s)
                and now_s - stamp_s <= self.max_action_age_s)

    def _delta_frame(self, frame_id: str) -> DeltaFrame:
        frames = self.profile.frames
        if not frame_id:
            return self.profile.delta_frame
        if frame_id == frames.base:
            return DeltaFrame.BASE
        if frame_id == frames.ee:
            return DeltaFrame.TOOL
        raise InvalidChunkError(f'delta_frame_id {quote(frame_id)} is neither the base frame {frames.base!r} nor '
                                f'the end-effector frame {frames.ee!r} of robot profile {self.profile.name!r}')

    # ------------------------------------------------------------------ the control tick

    def current_limits(self):
        """The governor's limits for the current chunk: the profile's, tightened by its constraints."""
        limits = self.base_limits
        timeline = self.executor.queue.timeline if self.executor is not None else None
        c = self._constraints.get(timeline.request_id) if timeline is not None else None
        if c is not None:
            changes = {}
            if math.isfinite(c.translation_m) and 0.0 < c.translation_m < limits.max_step_translation_m:
                changes['max_step_translation_m'] = c.translation_m
            if math.isfinite(c.rotation_rad) and 0.0 < c.rotation_rad < limits.max_step_rotation_rad:
                changes['max_step_rotation_rad'] = c.rotation_rad
            if changes:
                limits = replace(limits, **changes)
        return limits

    def tick(self, now_s: float) -> SinkTick:
        """One control cycle at ``now_s``."""
        if self.executor is None:
            if self.governor.gate(now_s) is not None and self.governor.consume_hold_request():
                return self._after(HoldCommand(self.governor.last_halt_cause), now_s)
            return SinkTick()
        retried = None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            retried = self.chunk(pending, now_s)
        self.governor.limits = self.current_limits()
        command = self.executor.tick(now_s, joint_positions=self.measured_q(now_s)).command
        if command is not None:
            return replace(self._after(command, now_s), intake=retried)
        return SinkTick(resend=self._keep_alive(now_s), intake=retried)

    def deactivate(self, now_s: float) -> SinkTick:
        """Lifecycle deactivate: disable execution; returns the hold to send while publishers are still on."""
        self.governor.deactivate(now_s)
        if self.executor is not None:
            command = self.executor.tick(now_s, joint_positions=self.measured_q(now_s)).command
            return self._after(command, now_s) if command is not None else SinkTick()
        if self.governor.consume_hold_request():
            return self._after(HoldCommand(self.governor.last_halt_cause), now_s)
        return SinkTick()

    def _after(self, command: Command, now_s: float) -> SinkTick:
        """Keep-alive and gripper bookkeeping of a command about to be published."""
        keepalive = self.config.servo_pose_keepalive_s
        if isinstance(command, HoldCommand):
            self._twist = None
            self._pose_target = None
            if self.mode is SinkMode.SERVO_POSE and command.pose is not None:
                self._pose_target = (command.pose, now_s + keepalive)
            return SinkTick(command)
        if isinstance(command, TwistCommand):
            self._twist = (command, now_s + command.duration_s)
        elif isinstance(command, PoseCommand) and self.mode is SinkMode.SERVO_POSE:
            self._pose_target = (command.pose, now_s + command.time_from_start_s + keepalive)
        gripper = command.gripper
        changed = None
        if gripper is not None and gripper != self._last_gripper:
            changed = gripper
            self._last_gripper = gripper
        return SinkTick(command, gripper_changed=changed)

    def _keep_alive(self, now_s: float) -> Optional[Resend]:
        if self._twist is not None:
            twist, until = self._twist
            if now_s < until:
                return Resend(KeepAlive.TWIST, twist=twist)
            self._twist = None  # the step's time is over: stop (Servo would time out anyway)
            return Resend(KeepAlive.ZERO_TWIST)
        if self._pose_target is not None:
            pose, until = self._pose_target
            if now_s <= until:
                return Resend(KeepAlive.POSE, pose=pose)
            self._pose_target = None  # Servo's staleness check brings it to a smooth halt at the target
        return None

    # ------------------------------------------------------------------ diagnostics

    def figures(self, **node_figures: Any) -> SinkFigures:
        """The sink's figures: the governor's, the executor's (once kinematics exist) and the intake's own;
        ``node_figures`` are the :class:`SinkFigures` fields only the node knows (commands sent, tick times...)."""
        d = self.governor.diagnostics()
        safety = SafetyFigures(
            e_stopped=d.e_stopped, halted_cause=d.halted_cause.value if d.halted_cause else '',
            last_halt_cause=d.last_halt_cause.value if d.last_halt_cause else '',
            halts={cause.value: n for cause, n in d.halt_counts.items()},
            clamps={kind.value: n for kind, n in d.clip_counts.items()})
        execution = None
        if self.executor is not None:
            e = self.executor.diagnostics()
            execution = ExecutionFigures(
                action_age_s=e.last_age_s, action_age_max_s=e.max_age_s, action_lag_s=e.last_lag_s,
                skipped_steps=e.skipped_steps, ik_failures=e.ik_failures, ik_time_s=e.last_ik_time_s,
                chunks=dict(e.offers))
        intake = IntakeFigures(rejected={reason.value: n for reason, n in self.rejections.items()},
                               pending_chunk=self._pending is not None, pending_discarded=self.pending_discarded)
        return SinkFigures(robot_profile=self.profile.name, sink_mode=self.mode.value,
                           kinematics_ready=self.kinematics is not None, plan_only_chunks=self.plan_only_chunks,
                           rejected_chunks=self.rejected_chunks, safety=safety, execution=execution, intake=intake,
                           **node_figures)
