"""Safety limits and the safety governor of arm execution (pure Python: NumPy + transforms3d, no clocks).

Every command that leaves a sink passes through a :class:`SafetyGovernor`. It is a plain state machine:
time is passed in (``now_s``, any monotonic clock in seconds, the same for every call), nothing here
reads a clock, sleeps or talks to ROS, so every behaviour is unit- and property-testable.

States and gates (checked by :meth:`SafetyGovernor.gate`, first match wins)
-------------------------------------------------------------------------
1. **e-stop** (:meth:`~SafetyGovernor.e_stop`): latched; only :meth:`~SafetyGovernor.reset_e_stop`
   clears it, and execution then stays disabled until :meth:`~SafetyGovernor.enable`.
2. **disabled**: execution is off until enabled (the initial state). :meth:`~SafetyGovernor.disable`
   and :meth:`~SafetyGovernor.deactivate` (lifecycle deactivate) both switch it off; the cause is kept
   (``disabled`` or ``deactivated``).
3. **stale camera**: no camera frame seen within ``camera_timeout_s`` (or none yet):
   :meth:`~SafetyGovernor.camera_seen` feeds it.
4. **stalled model**: no model output within ``model_timeout_s`` (or none yet):
   :meth:`~SafetyGovernor.model_seen` feeds it (the executor calls it on every chunk that arrives).

Per-step checks raise the other causes: ``action_too_old`` (:meth:`~SafetyGovernor.check_action_lag`),
``invalid_action`` (a non-finite target), ``ik_failure`` and ``no_robot_state`` (raised by the
executor through :meth:`~SafetyGovernor.halt`).

Every halt (a gate that closes, or a per-step failure) does the same three things at once: counts the
cause, calls every flush hook (the executor registers its queue's ``flush``, so no queued step can fire
when execution resumes), and raises a hold request that :meth:`~SafetyGovernor.consume_hold_request`
hands to the sink exactly once (the sink then sends a hold: the arm stops where it is).

Clamps (each counts per limit in :attr:`SafetyGovernor.clip_counts`)
--------------------------------------------------------------------
- :meth:`~SafetyGovernor.clamp_ee_step`: a target end-effector pose (4x4, base frame) against the
  previously commanded pose: the target position is projected into the workspace box, then the
  translation step is scaled to ``max_step_translation_m`` and the rotation step (angle of
  ``R_prev^T R_target``) to ``max_step_rotation_rad`` about the same axis. Guarantee: the returned pose
  is within both step limits of the previous pose, and inside the box whenever the previous pose was
  (from a previous pose outside the box it moves towards the box, never further out).
- :meth:`~SafetyGovernor.clamp_gripper`: into [gripper_min, gripper_max]; NaN gives None (keep).
- :meth:`~SafetyGovernor.clamp_joints`: into the URDF position limits (less a margin), then the whole
  joint step is scaled down uniformly (direction kept) so that no joint exceeds
  ``max_joint_velocity_scale * velocity_max * dt_s``.
- :meth:`~SafetyGovernor.clamp_joint_step`: :meth:`~SafetyGovernor.clamp_joints`, then the
  end-effector limits re-checked on the pose the clamped joints reach (forward kinematics passed in),
  halving the joint step until they hold, so joint commands obey the Cartesian limits too.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from transforms3d.axangles import axangle2mat

__all__ = [
    'HaltCause',
    'ClipKind',
    'JointLimits',
    'SafetyLimits',
    'EeStepDecision',
    'JointDecision',
    'SafetyDiagnostics',
    'SafetyGovernor',
    'rotation_angle',
    'rotation_vector',
]


class HaltCause(str, enum.Enum):
    """Why motion stopped. The first four are gates (persist until cleared); the rest are per step."""

    E_STOP = 'e_stop'
    DISABLED = 'disabled'
    DEACTIVATED = 'deactivated'
    STALE_CAMERA = 'stale_camera'
    STALLED_MODEL = 'stalled_model'
    ACTION_TOO_OLD = 'action_too_old'
    INVALID_ACTION = 'invalid_action'
    IK_FAILURE = 'ik_failure'
    NO_ROBOT_STATE = 'no_robot_state'


class ClipKind(str, enum.Enum):
    """Which limit a clamp enforced."""

    STEP_TRANSLATION = 'step_translation'
    STEP_ROTATION = 'step_rotation'
    WORKSPACE = 'workspace'
    GRIPPER = 'gripper'
    JOINT_POSITION = 'joint_position'
    JOINT_VELOCITY = 'joint_velocity'


@dataclass(frozen=True)
class JointLimits:
    """Position and velocity limits of the controlled joints, in :attr:`names` order.

    Revolute joints: rad and rad/s; prismatic joints: m and m/s. Arrays are read-only float64.
    ``molmoact_ros.robot.kinematics.ArmKinematics.limits`` reads them from the URDF.
    """

    names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in ('position_min', 'position_max', 'velocity_max'):
            array = np.array(getattr(self, name), dtype=np.float64)
            if array.shape != (n,):
                raise ValueError(f'JointLimits.{name} must have {n} values, got shape {array.shape}')
            if not np.all(np.isfinite(array)):
                raise ValueError(f'JointLimits.{name} must be finite, got {array.tolist()}')
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, 'names', tuple(self.names))
        bad = [self.names[i] for i in np.flatnonzero(self.position_min > self.position_max)]
        if bad:
            raise ValueError(f'JointLimits: lower limit above upper limit for joints {bad}')
        bad = [self.names[i] for i in np.flatnonzero(self.velocity_max <= 0.0)]
        if bad:
            raise ValueError(f'JointLimits: velocity limit must be positive for joints {bad}')

    def clip(self, q: Sequence[float]) -> np.ndarray:
        """``q`` clamped into [position_min, position_max] (a new float64 array)."""
        return np.clip(np.asarray(q, dtype=np.float64), self.position_min, self.position_max)

    def contains(self, q: Sequence[float], tolerance: float = 0.0) -> bool:
        """True when every position lies within its limits (widened by ``tolerance``)."""
        q = np.asarray(q, dtype=np.float64)
        return bool(np.all(q >= self.position_min - tolerance) and np.all(q <= self.position_max + tolerance))


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f'SafetyLimits.{name} must be a positive number, got {value!r}')
    return value


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f'SafetyLimits.{name} must be three numbers [x, y, z], got {values!r}') from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f'SafetyLimits.{name} must be three finite numbers [x, y, z], got {values!r}')
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class SafetyLimits:
    """The limits a governor enforces. Lengths in m, angles in rad, times in s; poses in the base frame."""

    #: Largest end-effector translation between consecutive commands.
    max_step_translation_m: float
    #: Largest end-effector rotation angle between consecutive commands.
    max_step_rotation_rad: float
    #: Workspace box of the end-effector position, in the base frame.
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    #: Range of the gripper command (in the command's units, e.g. finger width in m).
    gripper_min: float
    gripper_max: float
    #: A step executed more than this after its planned time (observation stamp + i * period) is dropped.
    max_action_age_s: float
    #: Motion halts when no camera frame arrived within this time.
    camera_timeout_s: float
    #: Motion halts when no model output arrived within this time.
    model_timeout_s: float
    #: Fraction (0, 1] of the URDF joint velocity limits a joint command may use.
    max_joint_velocity_scale: float = 1.0
    #: Joint position targets keep this far inside the URDF limits (rad or m).
    joint_position_margin: float = 0.0
    #: Joint limits (normally from the URDF); None disables the joint clamps.
    joint_limits: JointLimits | None = None

    def __post_init__(self) -> None:
        for name in ('max_step_translation_m', 'max_step_rotation_rad', 'max_action_age_s',
                     'camera_timeout_s', 'model_timeout_s', 'max_joint_velocity_scale'):
            object.__setattr__(self, name, _positive(getattr(self, name), name))
        if self.max_step_rotation_rad > math.pi:
            raise ValueError('SafetyLimits.max_step_rotation_rad must be <= pi, '
                             f'got {self.max_step_rotation_rad!r}')
        if self.max_joint_velocity_scale > 1.0:
            raise ValueError('SafetyLimits.max_joint_velocity_scale must be in (0, 1], '
                             f'got {self.max_joint_velocity_scale!r}')
        lo = _triple(self.workspace_min_m, 'workspace_min_m')
        hi = _triple(self.workspace_max_m, 'workspace_max_m')
        if any(a > b for a, b in zip(lo, hi)):
            raise ValueError(f'SafetyLimits: workspace_min_m {list(lo)} must be <= workspace_max_m {list(hi)}')
        object.__setattr__(self, 'workspace_min_m', lo)
        object.__setattr__(self, 'workspace_max_m', hi)
        for name in ('gripper_min', 'gripper_max', 'joint_position_margin'):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f'SafetyLimits.{name} must be finite, got {value!r}')
            object.__setattr__(self, name, value)
        if self.gripper_min > self.gripper_max:
            raise ValueError(f'SafetyLimits: gripper_min {self.gripper_min} > gripper_max {self.gripper_max}')
        if self.joint_position_margin < 0.0:
            raise ValueError(f'SafetyLimits.joint_position_margin must be >= 0, got {self.joint_position_margin}')
        if self.joint_limits is not None and not isinstance(self.joint_limits, JointLimits):
            raise TypeError('SafetyLimits.joint_limits must be a JointLimits or None')

    def with_joint_limits(self, joint_limits: JointLimits | None) -> 'SafetyLimits':
        """A copy with the given joint limits (e.g. read from the robot_description URDF)."""
        from dataclasses import replace
        return replace(self, joint_limits=joint_limits)

    def effective_joint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint position bounds after the margin (a range narrower than twice the margin keeps its centre)."""
        if self.joint_limits is None:
            raise ValueError('no joint limits configured')
        lo, hi = self.joint_limits.position_min, self.joint_limits.position_max
        margin = np.minimum(self.joint_position_margin, (hi - lo) / 2.0)
        return lo + margin, hi - margin

    def in_workspace(self, position_m: Sequence[float], tolerance_m: float = 0.0) -> bool:
        """True when a position lies inside the workspace box (widened by ``tolerance_m``)."""
        p = np.asarray(position_m, dtype=np.float64)
        return bool(np.all(p >= np.asarray(self.workspace_min_m) - tolerance_m)
                    and np.all(p <= np.asarray(self.workspace_max_m) + tolerance_m))


def rotation_angle(R: np.ndarray) -> float:
    """Angle (rad, 0..pi) of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Rotation vector (unit axis * angle, angle in 0..pi) of a rotation matrix, in its own axes."""
    angle = rotation_angle(R)
    if angle < 1e-12:
        return np.zeros(3)
    if angle > math.pi - 1e-6:
        # Near pi the antisymmetric part vanishes: the axis is the eigenvector of eigenvalue 1
        # (its sign does not matter at pi).
        w, v = np.linalg.eigh((R + R.T) / 2.0)
        return v[:, int(np.argmax(w))] * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return axis / np.linalg.norm(axis) * angle


@dataclass(frozen=True)
class EeStepDecision:
    """Outcome of :meth:`SafetyGovernor.clamp_ee_step`: a safe pose, or None with the halt cause."""

    pose: np.ndarray | None
    clipped: frozenset[ClipKind]
    halt: HaltCause | None = None


@dataclass(frozen=True)
class JointDecision:
    """Outcome of :meth:`SafetyGovernor.clamp_joints`: joint targets within position and velocity limits."""

    positions: np.ndarray
    clipped: frozenset[ClipKind]


@dataclass(frozen=True)
class SafetyDiagnostics:
    """A snapshot of the governor for diagnostics (counts since construction)."""

    enabled: bool
    e_stopped: bool
    halted_cause: HaltCause | None
    last_halt_cause: HaltCause | None
    last_halt_time_s: float | None
    halt_counts: Mapping[HaltCause, int]
    clip_counts: Mapping[ClipKind, int]
    steps_passed: int


class SafetyGovernor:
    """The state machine of the module docstring. Construct with the limits; execution starts disabled."""

    def __init__(self, limits: SafetyLimits) -> None:
        if not isinstance(limits, SafetyLimits):
            raise TypeError('SafetyGovernor needs a SafetyLimits')
        self.limits = limits
        self._enabled = False
        self._e_stopped = False
        self._off_cause = HaltCause.DISABLED
        self._last_camera_s: float | None = None
        self._last_model_s: float | None = None
        self._halted_cause: HaltCause | None = HaltCause.DISABLED  # motion is stopped at start
        # The gate that was closed at the last check (per-step halts do not set it).
        self._gate_cause: HaltCause | None = HaltCause.DISABLED
        self._hold_requested = False
        self._flush_hooks: list[Callable[[], None]] = []
        self.halt_counts: dict[HaltCause, int] = {cause: 0 for cause in HaltCause}
        self.clip_counts: dict[ClipKind, int] = {kind: 0 for kind in ClipKind}
        self.last_halt_cause: HaltCause | None = None
        self.last_halt_time_s: float | None = None
        self.steps_passed = 0

    # ------------------------------------------------------------------ state

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def e_stopped(self) -> bool:
        return self._e_stopped

    @property
    def halted_cause(self) -> HaltCause | None:
        """The cause of the current halt, or None while motion is allowed (as of the last gate)."""
        return self._halted_cause

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on every halt (e.g. the execution queue's ``flush``)."""
        self._flush_hooks.append(hook)

    def enable(self, now_s: float) -> bool:
        """Turn execution on. Refused (returns False) while the e-stop is latched."""
        if self._e_stopped:
            return False
        self._enabled = True
        return True

    def disable(self, now_s: float, cause: HaltCause = HaltCause.DISABLED) -> None:
        """Turn execution off and halt at once (flush + hold)."""
        self._enabled = False
        self._off_cause = cause
        self._gate_cause = self.blocking_cause(now_s)
        self.halt(cause, now_s)

    def deactivate(self, now_s: float) -> None:
        """Lifecycle deactivate: :meth:`disable` with cause ``deactivated``; re-enable after activation."""
        self.disable(now_s, HaltCause.DEACTIVATED)

    def e_stop(self, now_s: float) -> None:
        """Latch the e-stop: disable and halt at once. Only :meth:`reset_e_stop` clears the latch."""
        self._e_stopped = True
        self._enabled = False
        self._off_cause = HaltCause.E_STOP
        self._gate_cause = HaltCause.E_STOP
        self.halt(HaltCause.E_STOP, now_s)

    def reset_e_stop(self, now_s: float) -> None:
        """Clear the e-stop latch. Execution stays disabled until :meth:`enable`."""
        self._e_stopped = False
        if self._off_cause is HaltCause.E_STOP:
            self._off_cause = HaltCause.DISABLED
        if self._gate_cause is HaltCause.E_STOP:  # still stopped (disabled): no new halt
            self._gate_cause = self.blocking_cause(now_s)
            self._halted_cause = self._gate_cause

    def camera_seen(self, now_s: float) -> None:
        """A camera frame arrived at ``now_s`` (receive time, on the governor's clock)."""
        self._last_camera_s = float(now_s)

    def model_seen(self, now_s: float) -> None:
        """The model produced output at ``now_s`` (e.g. an action chunk arrived)."""
        self._last_model_s = float(now_s)

    # ------------------------------------------------------------------ gates and halts

    def blocking_cause(self, now_s: float) -> HaltCause | None:
        """The gate that blocks motion at ``now_s`` (None when all are open); changes nothing."""
        lim = self.limits
        if self._e_stopped:
            return HaltCause.E_STOP
        if not self._enabled:
            return self._off_cause
        if self._last_camera_s is None or now_s - self._last_camera_s > lim.camera_timeout_s:
            return HaltCause.STALE_CAMERA
        if self._last_model_s is None or now_s - self._last_model_s > lim.model_timeout_s:
            return HaltCause.STALLED_MODEL
        return None

    def gate(self, now_s: float) -> HaltCause | None:
        """Check the gates; a gate that newly closes halts (flush + hold). Returns the blocking cause.

        "Newly" means: open at the last check, or closed for another cause (e.g. disabled, then the
        camera goes stale while disabled is cleared in between). A per-step halt in between does not
        count as a closed gate, so a gate closing after it still flushes what was queued since.
        """
        cause = self.blocking_cause(now_s)
        if cause is None:
            self._halted_cause = None
        elif cause != self._gate_cause:
            self.halt(cause, now_s)
        else:
            self._halted_cause = cause
        self._gate_cause = cause
        return cause

    def halt(self, cause: HaltCause, now_s: float) -> None:
        """Halt now: count the cause, flush every queue (hooks), request a hold from the sink."""
        cause = HaltCause(cause)
        self.halt_counts[cause] += 1
        self.last_halt_cause = cause
        self.last_halt_time_s = float(now_s)
        self._halted_cause = cause
        self._hold_requested = True
        for hook in self._flush_hooks:
            hook()

    def consume_hold_request(self) -> bool:
        """True once after each halt (or burst of halts): the sink must send a hold now."""
        requested, self._hold_requested = self._hold_requested, False
        return requested

    def check_action_lag(self, lag_s: float, now_s: float) -> bool:
        """False (and halt ``action_too_old``) when a step runs more than max_action_age_s after its plan."""
        if not math.isfinite(lag_s) or lag_s > self.limits.max_action_age_s:
            self.halt(HaltCause.ACTION_TOO_OLD, now_s)
            return False
        return True

    # ------------------------------------------------------------------ clamps

    def _count(self, clipped: set[ClipKind]) -> frozenset[ClipKind]:
        for kind in clipped:
            self.clip_counts[kind] += 1
        return frozenset(clipped)

    def clamp_ee_step(self, target: np.ndarray, previous: np.ndarray, now_s: float) -> EeStepDecision:
        """Clamp a target end-effector pose against the previously commanded pose (both 4x4, base frame).

        A non-finite or malformed target halts with ``invalid_action``; a non-finite previous pose
        halts with ``no_robot_state``.
        """
        target = np.asarray(target, dtype=np.float64)
        previous = np.asarray(previous, dtype=np.float64)
        if previous.shape != (4, 4) or not np.all(np.isfinite(previous)):
            self.halt(HaltCause.NO_ROBOT_STATE, now_s)
            return EeStepDecision(None, frozenset(), HaltCause.NO_ROBOT_STATE)
        if target.shape != (4, 4) or not np.all(np.isfinite(target)) or not _is_rotation(target[:3, :3]):
            self.halt(HaltCause.INVALID_ACTION, now_s)
            return EeStepDecision(None, frozenset(), HaltCause.INVALID_ACTION)
        lim = self.limits
        clipped: set[ClipKind] = set()
        # Workspace box first (a projection onto a convex set: never moves further from a point inside it).
        lo, hi = np.asarray(lim.workspace_min_m), np.asarray(lim.workspace_max_m)
        p = np.clip(target[:3, 3], lo, hi)
        if not np.array_equal(p, target[:3, 3]):
            clipped.add(ClipKind.WORKSPACE)
        # Translation step.
        p_prev = previous[:3, 3]
        step = p - p_prev
        distance = float(np.linalg.norm(step))
        if distance > lim.max_step_translation_m:
            scale = lim.max_step_translation_m / distance
            p = p_prev + step * scale
            # Rounding (large coordinates) must never land above the limit: shrink until it holds.
            shrink = 1e-12
            while np.linalg.norm(p - p_prev) > lim.max_step_translation_m:
                if shrink > 1.0:  # coordinates so large that no step is representable: stay
                    p = p_prev.copy()
                    break
                scale *= 1.0 - shrink
                shrink *= 4.0
                p = p_prev + step * scale
            clipped.add(ClipKind.STEP_TRANSLATION)
        # Rotation step, about the same axis.
        R_prev = _orthonormalize(previous[:3, :3])
        R_rel = R_prev.T @ _orthonormalize(target[:3, :3])
        if rotation_angle(R_rel) > lim.max_step_rotation_rad:
            rotvec = rotation_vector(R_rel)
            angle = float(np.linalg.norm(rotvec))
            R_rel = axangle2mat(rotvec / angle, lim.max_step_rotation_rad * (1.0 - 1e-9), is_normalized=True)
            clipped.add(ClipKind.STEP_ROTATION)
        pose = np.eye(4)
        pose[:3, :3] = R_prev @ R_rel
        pose[:3, 3] = p
        self.steps_passed += 1
        return EeStepDecision(pose, self._count(clipped))

    def clamp_gripper(self, value: float | None) -> float | None:
        """The gripper command clamped into [gripper_min, gripper_max]; None for None or NaN (keep)."""
        if value is None:
            return None
        value = float(value)
        if math.isnan(value):
            return None
        out = min(max(value, self.limits.gripper_min), self.limits.gripper_max)
        if out != value:
            self._count({ClipKind.GRIPPER})
        return out

    def clamp_joints(self, target: Sequence[float], previous: Sequence[float], dt_s: float) -> JointDecision:
        """Joint targets within the position limits (less the margin) and reachable from ``previous``
        in ``dt_s`` at ``max_joint_velocity_scale`` of the velocity limits.

        ``previous`` is the last commanded (or measured) joints; it is clipped into the limits first,
        so a measured state a hair outside a limit never pulls a target out. Raises ValueError on
        non-finite input, a wrong length or no joint limits (callers halt on that).
        """
        lim = self.limits
        if lim.joint_limits is None:
            raise ValueError('clamp_joints needs SafetyLimits.joint_limits')
        n = len(lim.joint_limits.names)
        q = np.asarray(target, dtype=np.float64)
        q_prev = np.asarray(previous, dtype=np.float64)
        if q.shape != (n,) or q_prev.shape != (n,):
            raise ValueError(f'expected {n} joint values, got shapes {q.shape} and {q_prev.shape}')
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(q_prev))):
            raise ValueError('joint values must be finite')
        dt_s = float(dt_s)
        if not (math.isfinite(dt_s) and dt_s > 0.0):
            raise ValueError(f'dt_s must be positive, got {dt_s!r}')
        lo, hi = lim.effective_joint_bounds()
        clipped: set[ClipKind] = set()
        q_clipped = np.clip(q, lo, hi)
        if not np.array_equal(q_clipped, q):
            clipped.add(ClipKind.JOINT_POSITION)
        q_prev = np.clip(q_prev, lo, hi)
        dq = q_clipped - q_prev
        max_dq = lim.joint_limits.velocity_max * lim.max_joint_velocity_scale * dt_s
        ratio = float(np.max(np.abs(dq) / max_dq))
        if ratio > 1.0:
            dq = dq / ratio * (1.0 - 1e-9)
            clipped.add(ClipKind.JOINT_VELOCITY)
        # q_prev and q_clipped lie in the box [lo, hi], so does every point between them.
        out = np.clip(q_prev + dq, lo, hi)
        return JointDecision(out, self._count(clipped))

    def clamp_joint_step(self, target: Sequence[float], previous: Sequence[float], dt_s: float,
                         fk: Callable[[np.ndarray], np.ndarray]) -> JointDecision:
        """:meth:`clamp_joints`, then the end-effector limits on the pose the joints actually reach.

        The joint clamps move the end effector off the (already clamped) Cartesian target, so the pose
        ``fk(q)`` is checked against ``fk(previous clipped)``: step translation, step rotation and the
        workspace box (or, from outside the box, no further from it). When it fails, the joint step is
        halved until it passes (the previous joints themselves always pass), and the failed limits are
        counted. ``fk`` maps joints to the 4x4 end-effector pose in the base frame.
        """
        decision = self.clamp_joints(target, previous, dt_s)
        lo, hi = self.effective_bounds_or_raise()
        q_prev = np.clip(np.asarray(previous, dtype=np.float64), lo, hi)
        pose_prev = np.asarray(fk(q_prev), dtype=np.float64)
        dq = decision.positions - q_prev
        failed: set[ClipKind] = set()
        scale = 1.0
        for _ in range(30):
            q = q_prev + scale * dq
            why = self._ee_violations(np.asarray(fk(q), dtype=np.float64), pose_prev)
            if not why:
                break
            failed |= why
            scale *= 0.5
        else:
            q = q_prev
        if not failed:
            return decision
        return JointDecision(q, decision.clipped | self._count(failed))

    def effective_bounds_or_raise(self) -> tuple[np.ndarray, np.ndarray]:
        return self.limits.effective_joint_bounds()

    def _ee_violations(self, pose: np.ndarray, previous: np.ndarray) -> set[ClipKind]:
        lim = self.limits
        why: set[ClipKind] = set()
        if np.linalg.norm(pose[:3, 3] - previous[:3, 3]) > lim.max_step_translation_m:
            why.add(ClipKind.STEP_TRANSLATION)
        if rotation_angle(previous[:3, :3].T @ pose[:3, :3]) > lim.max_step_rotation_rad:
            why.add(ClipKind.STEP_ROTATION)
        if _box_distance(pose[:3, 3], lim) > _box_distance(previous[:3, 3], lim):
            why.add(ClipKind.WORKSPACE)
        return why

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self) -> SafetyDiagnostics:
        """Counts and state for a diagnostics message."""
        return SafetyDiagnostics(
            enabled=self._enabled, e_stopped=self._e_stopped, halted_cause=self._halted_cause,
            last_halt_cause=self.last_halt_cause, last_halt_time_s=self.last_halt_time_s,
            halt_counts=dict(self.halt_counts), clip_counts=dict(self.clip_counts),
            steps_passed=self.steps_passed)


def _box_distance(p: np.ndarray, limits: SafetyLimits) -> float:
    """Distance (m) from a point to the workspace box (0 inside)."""
    lo, hi = np.asarray(limits.workspace_min_m), np.asarray(limits.workspace_max_m)
    return float(np.linalg.norm(p - np.clip(p, lo, hi)))


def _is_rotation(R: np.ndarray, tolerance: float = 1e-6) -> bool:
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tolerance) and np.linalg.det(R) > 0.0)


def _orthonormalize(R: np.ndarray) -> np.ndarray:
    """The nearest rotation matrix (removes rounding drift of composed rotations)."""
    u, _, vt = np.linalg.svd(R)
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] = -u[:, -1]
        R = u @ vt
    return R
