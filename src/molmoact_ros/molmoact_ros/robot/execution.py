"""Action chunks -> timelines of absolute end-effector targets; the execution queue; gripper mapping.

ROS-free (NumPy + transforms3d).

Timeline of a chunk (:func:`build_timeline`)
-------------------------------------------
MolmoAct emits H steps of end-effector deltas ``[dx, dy, dz, r0, r1, r2, gripper]``. A command sink
turns them into absolute target poses **anchored to the observation pose** (the end-effector pose
when the image the model saw was taken, ``ActionChunk.observation_pose``), never to the pose when the
chunk arrives: the arm kept moving during inference, and re-anchoring on the arrival pose would add the
motion made meanwhile a second time.

The deltas are cumulative: step i is applied to the target of step i-1 (step 0 to the observation
pose ``T_0``). With ``D_i`` the delta as a 4x4 (rotation ``dR_i``, translation ``dp_i``):

- ``delta_frame = base`` (the base frame's axes, the usual OXE / robosuite convention): the position
  moves by ``dp_i`` in base axes and the orientation turns by ``dR_i`` about base axes through the
  end-effector origin: ``p_i = p_{i-1} + dp_i``, ``R_i = dR_i R_{i-1}``.
- ``delta_frame = tool`` (the end-effector's own axes): ``T_i = T_{i-1} D_i``, i.e.
  ``p_i = p_{i-1} + R_{i-1} dp_i``, ``R_i = R_{i-1} dR_i``.

Rotation deltas (``RotationConvention`` of ``reasoning.action_space``):
``euler_sxyz_roll_pitch_yaw`` -> ``transforms3d.euler.euler2mat(r, p, y, 'sxyz')`` (static x, then y,
then z; the released evaluators' reading); ``rotation_vector`` -> axis * angle. ``unspecified`` is
refused.

Action units (:class:`ActionScale`): a checkpoint whose actions are controller inputs rather than SI
deltas (LIBERO's robosuite ``OSC_POSE`` inputs in [-1, 1]: 1 unit = 0.05 m and 0.5 rad per step) has its
per-step translation multiplied by ``translation_m_per_unit`` and its rotation by ``rotation_rad_per_unit``
(after an optional clip to ``[-clip_units, clip_units]``, as robosuite clips its inputs) before the deltas
are integrated; for a rotation vector that scales the angle about the same axis. The default is the
identity (the deltas are already metres and radians). Scaling is the first thing :func:`build_timeline`
does, so the safety limits (step sizes, workspace) apply to the scaled, metric targets.

Times: step i is due from ``start_s(i) = t0 + i * step_period_s`` to ``end_s(i) = start_s(i) +
step_period_s`` (its target should be reached by ``end_s``), where ``t0`` is the observation stamp
(start mode ``observation``, the ``ActionChunk`` contract: steps whose time has passed when the chunk
arrives are skipped) or the arrival time (start mode ``arrival``: every step runs, late by the
inference latency). A step's *lag* is how long after its planned time ``stamp + i * period`` it runs;
the safety governor drops steps whose lag exceeds ``max_action_age_s``.

Queue (:class:`ExecutionQueue`)
------------------------------
Holds the current timeline. :meth:`~ExecutionQueue.offer` drops a chunk older than
``max_action_age_s`` at arrival, or whose observation precedes the current one's (out of order), and
otherwise *replaces* the current chunk (multi-rate execution: a newer chunk, anchored to its own
observation, always wins). :meth:`~ExecutionQueue.pop_due` hands out each due step once (the newest
due step; older unissued ones are skipped and counted). :meth:`~ExecutionQueue.flush` empties it (the
governor calls it on every halt).

Gripper (:class:`GripperMapping`)
--------------------------------
The model's last action dimension is left raw (a bin centre in [-1, 1]; about 0.004 / 0.996 for
datasets whose gripper is 0/1). The released evaluators binarize it (WidowX: ``g > 0.5`` -> open;
LIBERO: sign after mapping to [-1, 1]); a profile can also map it linearly.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat

from ..reasoning.action_space import ActionChunkValues, RotationConvention

__all__ = [
    'DeltaFrame',
    'StartMode',
    'InvalidChunkError',
    'ActionScale',
    'TimelineStep',
    'ChunkTimeline',
    'build_timeline',
    'timeline_from_chunk',
    'delta_rotation',
    'OfferResult',
    'ExecutionQueue',
    'GripperMode',
    'GripperMapping',
    'PoseHistory',
]


class DeltaFrame(str, enum.Enum):
    """Axes in which a chunk's deltas are expressed (see the module docstring)."""

    BASE = 'base'
    TOOL = 'tool'


class StartMode(str, enum.Enum):
    """Where a chunk's timeline starts: the observation stamp (default) or the chunk's arrival."""

    OBSERVATION = 'observation'
    ARRIVAL = 'arrival'


class InvalidChunkError(ValueError):
    """A chunk that cannot be executed (non-finite values, bad shapes, unknown rotation convention)."""


@dataclass(frozen=True)
class ActionScale:
    """Model action units -> metres and radians (see the module docstring); identity by default.

    ``clip_units``: when set, each translation and rotation component is first clipped to
    ``[-clip_units, clip_units]`` (robosuite's controllers clip their inputs to [-1, 1]).
    """

    translation_m_per_unit: float = 1.0
    rotation_rad_per_unit: float = 1.0
    clip_units: float | None = None

    def __post_init__(self) -> None:
        for name in ('translation_m_per_unit', 'rotation_rad_per_unit', 'clip_units'):
            value = getattr(self, name)
            if value is None and name == 'clip_units':
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value <= 0):
                raise ValueError(f'ActionScale.{name} must be a positive finite number, got {value!r}')
            object.__setattr__(self, name, float(value))

    @property
    def is_identity(self) -> bool:
        return self.translation_m_per_unit == 1.0 and self.rotation_rad_per_unit == 1.0 and self.clip_units is None

    def apply(self, translation: Any, rotation: Any) -> tuple[np.ndarray, np.ndarray]:
        """(translation_m, rotation_rad) of per-step deltas given in model units (arrays of any equal shape)."""
        dp = np.asarray(translation, dtype=np.float64)
        dr = np.asarray(rotation, dtype=np.float64)
        if self.clip_units is not None:
            dp = np.clip(dp, -self.clip_units, self.clip_units)
            dr = np.clip(dr, -self.clip_units, self.clip_units)
        with np.errstate(over='ignore'):  # an overflow to inf is refused by build_timeline
            return dp * self.translation_m_per_unit, dr * self.rotation_rad_per_unit


def delta_rotation(rotation_rad: Sequence[float], convention: RotationConvention | str) -> np.ndarray:
    """3x3 rotation matrix of one rotation delta read per ``convention``."""
    r = np.asarray(rotation_rad, dtype=np.float64)
    convention = RotationConvention(convention)
    if convention is RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW:
        return euler2mat(r[0], r[1], r[2], 'sxyz')
    if convention is RotationConvention.ROTATION_VECTOR:
        largest = float(np.max(np.abs(r)))
        if not math.isfinite(largest):
            raise InvalidChunkError(f'rotation vector {r.tolist()} is not finite')
        if largest < 1e-300:
            return np.eye(3)
        unit = r / largest
        norm = float(np.linalg.norm(unit))
        # Scaled first, so that a huge vector cannot overflow to an infinite angle.
        return axangle2mat(unit / norm, largest * norm, is_normalized=True)
    raise InvalidChunkError(f'rotation convention {convention.value!r} cannot be executed; set the '
                            "robot profile's rotation_convention")


@dataclass(frozen=True)
class TimelineStep:
    """One step of a timeline, as the queue hands it out."""

    index: int
    #: Absolute target pose of the end effector (4x4, base frame, metres).
    pose: np.ndarray
    #: The model's raw gripper value for this step (map it with a :class:`GripperMapping`).
    gripper_raw: float
    #: When the step is due and when its target should be reached (s, the sink's clock).
    start_s: float
    end_s: float
    #: The chunk's step period (s), exact: ``end_s - start_s`` of clock values near 1.8e9 s is off by up to
    #: about 2.4e-7 s (their float spacing), which would loosen every bound derived from the period.
    period_s: float
    #: Planned time of the step on the observation timeline: observation stamp + index * period.
    planned_s: float
    observation_stamp_s: float
    request_id: str

    def lag_s(self, now_s: float) -> float:
        """How long after its planned time the step runs at ``now_s`` (the governor's action age)."""
        return now_s - self.planned_s

    def age_s(self, now_s: float) -> float:
        """Age of the observation behind the step at ``now_s`` (diagnostics: action age at execution)."""
        return now_s - self.observation_stamp_s


@dataclass(frozen=True)
class ChunkTimeline:
    """Absolute targets of one chunk (see :func:`build_timeline`). Arrays are read-only."""

    request_id: str
    observation_stamp_s: float
    step_period_s: float
    observation_pose: np.ndarray
    #: (H, 4, 4) target poses in the base frame.
    poses: np.ndarray
    #: (H,) raw gripper values.
    gripper_raw: np.ndarray
    delta_frame: DeltaFrame
    rotation_convention: RotationConvention

    def __len__(self) -> int:
        return int(self.poses.shape[0])

    @property
    def duration_s(self) -> float:
        return len(self) * self.step_period_s


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def build_timeline(translation_m: Any, rotation_rad: Any, gripper: Any, *, observation_pose: Any,
                   observation_stamp_s: float, step_period_s: float,
                   delta_frame: DeltaFrame | str = DeltaFrame.BASE,
                   rotation_convention: RotationConvention | str = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW,
                   request_id: str = '', action_scale: ActionScale | None = None) -> ChunkTimeline:
    """Cumulative absolute targets from per-step deltas (shapes (H, 3), (H, 3), (H,)).

    ``action_scale``: the deltas' units (:class:`ActionScale`; None: already metres and radians).

    ``observation_pose``: 4x4 end-effector pose in the base frame at ``observation_stamp_s``.
    Raises :class:`InvalidChunkError` for anything that cannot be executed safely: non-finite input
    or targets, mismatched shapes, a non-positive period, an unspecified rotation convention.
    """
    try:
        dp = np.asarray(translation_m, dtype=np.float64)
        dr = np.asarray(rotation_rad, dtype=np.float64)
        g = np.asarray(gripper, dtype=np.float64).reshape(-1)
        T0 = np.asarray(observation_pose, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidChunkError(f'chunk values are not numeric: {error}') from None
    if dp.ndim != 2 or dp.shape[1] != 3 or dr.shape != dp.shape or g.shape != (dp.shape[0],) or dp.shape[0] == 0:
        raise InvalidChunkError(f'expected translation (H, 3), rotation (H, 3), gripper (H,) with H >= 1; '
                                f'got {dp.shape}, {dr.shape}, {g.shape}')
    if T0.shape != (4, 4) or not np.all(np.isfinite(T0)):
        raise InvalidChunkError('observation_pose must be a finite 4x4 transform')
    if not (math.isfinite(step_period_s) and step_period_s > 0):
        raise InvalidChunkError(f'step_period_s must be positive, got {step_period_s!r}')
    if not math.isfinite(observation_stamp_s):
        raise InvalidChunkError(f'observation_stamp_s must be finite, got {observation_stamp_s!r}')
    if not (np.all(np.isfinite(dp)) and np.all(np.isfinite(dr)) and np.all(np.isfinite(g))):
        raise InvalidChunkError('chunk holds non-finite values')
    if action_scale is not None and not action_scale.is_identity:
        dp, dr = action_scale.apply(dp, dr)
        if not (np.all(np.isfinite(dp)) and np.all(np.isfinite(dr))):
            raise InvalidChunkError('scaled chunk deltas overflow to non-finite values')
    delta_frame = DeltaFrame(delta_frame)
    rotation_convention = RotationConvention(rotation_convention)
    poses = np.empty((dp.shape[0], 4, 4))
    p = T0[:3, 3].copy()
    R = T0[:3, :3].copy()
    with np.errstate(over='ignore', invalid='ignore'):  # overflow is detected below
        for i in range(dp.shape[0]):
            dR = delta_rotation(dr[i], rotation_convention)
            if delta_frame is DeltaFrame.BASE:
                p = p + dp[i]
                R = dR @ R
            else:
                p = p + R @ dp[i]
                R = R @ dR
            poses[i] = np.eye(4)
            poses[i, :3, :3] = R
            poses[i, :3, 3] = p
    if not np.all(np.isfinite(poses)):
        raise InvalidChunkError('chunk deltas overflow to non-finite targets')
    return ChunkTimeline(request_id=str(request_id), observation_stamp_s=float(observation_stamp_s),
                         step_period_s=float(step_period_s), observation_pose=_read_only(T0.copy()),
                         poses=_read_only(poses), gripper_raw=_read_only(g.copy()),
                         delta_frame=delta_frame, rotation_convention=rotation_convention)


def timeline_from_chunk(chunk: ActionChunkValues, **kwargs: Any) -> ChunkTimeline:
    """:func:`build_timeline` on an ``ActionChunkValues`` (its rotation convention unless one is given)."""
    kwargs.setdefault('rotation_convention', chunk.rotation_convention)
    return build_timeline(chunk.translation_m, chunk.rotation_rad, chunk.gripper, **kwargs)


class OfferResult(str, enum.Enum):
    """What :meth:`ExecutionQueue.offer` did with a chunk."""

    ACCEPTED = 'accepted'          # now the current chunk (replacing any older one)
    TOO_OLD = 'too_old'            # observation older than max_action_age_s at arrival
    FROM_FUTURE = 'from_future'    # observation stamp more than max_action_age_s ahead of now (clock skew)
    OUT_OF_ORDER = 'out_of_order'  # its observation precedes the current chunk's
    EXPIRED = 'expired'            # every step's time has already passed
    HALTED = 'halted'              # execution is halted (disabled, e-stop, stale input): nothing is queued


class ExecutionQueue:
    """The current chunk's timeline and which of its steps have been handed out (see module docstring)."""

    def __init__(self, max_action_age_s: float, start_mode: StartMode | str = StartMode.OBSERVATION) -> None:
        if not (math.isfinite(max_action_age_s) and max_action_age_s > 0):
            raise ValueError(f'max_action_age_s must be positive, got {max_action_age_s!r}')
        self.max_action_age_s = float(max_action_age_s)
        self.start_mode = StartMode(start_mode)
        self._timeline: ChunkTimeline | None = None
        self._t0 = 0.0
        self._next_index = 0
        #: Counters for diagnostics.
        self.offers: dict[OfferResult, int] = {result: 0 for result in OfferResult}
        self.skipped_steps = 0
        self.flushes = 0

    @property
    def timeline(self) -> ChunkTimeline | None:
        """The current chunk's timeline (None when empty)."""
        return self._timeline

    def offer(self, timeline: ChunkTimeline, now_s: float) -> OfferResult:
        """Take a new chunk at arrival time ``now_s`` (see :class:`OfferResult`)."""
        age = now_s - timeline.observation_stamp_s
        if age > self.max_action_age_s:
            result = OfferResult.TOO_OLD
        elif -age > self.max_action_age_s:
            result = OfferResult.FROM_FUTURE
        elif self._timeline is not None and timeline.observation_stamp_s < self._timeline.observation_stamp_s:
            result = OfferResult.OUT_OF_ORDER
        else:
            t0 = timeline.observation_stamp_s if self.start_mode is StartMode.OBSERVATION else float(now_s)
            if t0 + timeline.duration_s <= now_s:
                result = OfferResult.EXPIRED
            else:
                result = OfferResult.ACCEPTED
                self._timeline = timeline
                self._t0 = t0
                self._next_index = 0
        self.offers[result] += 1
        return result

    def _step(self, index: int) -> TimelineStep:
        tl = self._timeline
        assert tl is not None
        start = self._t0 + index * tl.step_period_s
        return TimelineStep(index=index, pose=tl.poses[index], gripper_raw=float(tl.gripper_raw[index]),
                            start_s=start, end_s=start + tl.step_period_s, period_s=tl.step_period_s,
                            planned_s=tl.observation_stamp_s + index * tl.step_period_s,
                            observation_stamp_s=tl.observation_stamp_s, request_id=tl.request_id)

    def _due_index(self, now_s: float) -> int | None:
        tl = self._timeline
        if tl is None or now_s < self._t0:
            return None
        # (+1e-9: a tick exactly on a step boundary belongs to the new step despite rounding.)
        index = int(math.floor((now_s - self._t0) / tl.step_period_s + 1e-9))
        return index if index < len(tl) else None

    def step_at(self, now_s: float) -> TimelineStep | None:
        """The step whose window [start_s, end_s) holds ``now_s`` (None before, after or when empty)."""
        index = self._due_index(now_s)
        return None if index is None else self._step(index)

    def pop_due(self, now_s: float) -> TimelineStep | None:
        """The newest due step not handed out yet (each step at most once); None when there is none.

        Older steps that were never handed out are skipped (counted in :attr:`skipped_steps`): their
        targets are superseded by the newer, absolute one. When the chunk's last window has passed, the
        chunk is dropped.
        """
        tl = self._timeline
        if tl is None:
            return None
        if now_s >= self._t0 + tl.duration_s:
            self.skipped_steps += len(tl) - self._next_index
            self._timeline = None
            return None
        index = self._due_index(now_s)
        if index is None or index < self._next_index:
            return None
        self.skipped_steps += index - self._next_index
        self._next_index = index + 1
        return self._step(index)

    @property
    def finished(self) -> bool:
        """True when there is no chunk or all its steps were handed out."""
        return self._timeline is None or self._next_index >= len(self._timeline)

    def flush(self) -> None:
        """Drop the current chunk and every step not yet handed out."""
        if self._timeline is not None:
            self.flushes += 1
        self._timeline = None
        self._next_index = 0


class GripperMode(str, enum.Enum):
    BINARIZE = 'binarize'
    LINEAR = 'linear'


@dataclass(frozen=True)
class GripperMapping:
    """The model's raw gripper value -> a gripper command (e.g. a finger position in m).

    ``binarize``: open when ``raw > threshold`` (``raw < threshold`` with ``invert``), else closed.
    ``linear``: ``raw`` in [raw_min, raw_max] (clipped) maps onto [closed_command, open_command]
    (reversed with ``invert``). "Open" follows the released data: a high raw value means open for
    Bridge (WidowX) and LIBERO; set ``invert`` for a robot fine-tuned the other way. NaN maps to None.
    """

    mode: GripperMode = GripperMode.BINARIZE
    threshold: float = 0.5
    invert: bool = False
    open_command: float = 1.0
    closed_command: float = 0.0
    raw_min: float = -1.0
    raw_max: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, 'mode', GripperMode(self.mode))
        for name in ('threshold', 'open_command', 'closed_command', 'raw_min', 'raw_max'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'GripperMapping.{name} must be a finite number, got {value!r}')
            object.__setattr__(self, name, float(value))
        if not isinstance(self.invert, bool):
            raise ValueError(f'GripperMapping.invert must be true or false, got {self.invert!r}')
        if self.raw_min >= self.raw_max:
            raise ValueError(f'GripperMapping: raw_min {self.raw_min} must be < raw_max {self.raw_max}')

    def __call__(self, raw: float) -> float | None:
        raw = float(raw)
        if math.isnan(raw):
            return None
        if self.mode is GripperMode.BINARIZE:
            is_open = raw > self.threshold if not self.invert else raw < self.threshold
            return self.open_command if is_open else self.closed_command
        x = (min(max(raw, self.raw_min), self.raw_max) - self.raw_min) / (self.raw_max - self.raw_min)
        if self.invert:
            x = 1.0 - x
        return self.closed_command + x * (self.open_command - self.closed_command)


@dataclass
class PoseHistory:
    """Recent end-effector poses, to anchor a chunk whose message carries no valid observation pose.

    :meth:`add` poses as the state arrives (stamped on the same clock as the observations);
    :meth:`at` gives the sample nearest to a stamp, or None when none lies within ``tolerance_s``.
    """

    horizon_s: float = 5.0
    _samples: deque = field(default_factory=deque, repr=False)

    def add(self, stamp_s: float, pose: np.ndarray) -> None:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError('pose must be a finite 4x4 transform')
        if self._samples and stamp_s < self._samples[-1][0]:
            return  # out of order: ignore
        self._samples.append((float(stamp_s), pose.copy()))
        while self._samples and self._samples[0][0] < stamp_s - self.horizon_s:
            self._samples.popleft()

    def at(self, stamp_s: float, tolerance_s: float) -> np.ndarray | None:
        best = None
        for t, pose in self._samples:
            gap = abs(t - stamp_s)
            if gap <= tolerance_s and (best is None or gap < best[0]):
                best = (gap, pose)
        return None if best is None else best[1].copy()
