"""Frame intake and inference admission for the perception stage: which camera frame runs next, and when.

ROS-free and handed the time (``now_s``: seconds of any monotonic clock, the same for every call). Nothing
here assumes the clock is large: a robot computer that has just booted has a monotonic clock near zero,
so "never ran" is its own state (``None``), not a time of 0 s. (A rate limit kept as ``last_run = 0.0``
refuses every request during the machine's first ``min_period_s`` seconds of uptime: with
``min_period_s`` = 3600 a freshly booted machine ran nothing for an hour.)

Rules, in the order :meth:`FrameIntake.take` applies them:

1. no instruction -> nothing runs (the frame stays, the newest one wins);
2. the last inference started less than ``min_period_s`` ago -> nothing runs yet (the frame stays);
   the first inference after start-up or :meth:`FrameIntake.reset` is never rate-limited;
3. no frame -> nothing runs;
4. the frame is older than ``max_frame_age_s`` (arrival to now) -> it is dropped and counted;
5. otherwise the frame is taken and the inference's start time is remembered.

A frame replaced by a newer one before it was taken is counted as superseded.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class IntakeConfig:
    """Rate limit and frame freshness of the perception stage (node parameters of the same names)."""

    #: Minimum seconds between the starts of two inferences (0: as fast as the model runs).
    min_period_s: float = 0.0
    #: Frames older than this (seconds since arrival) when inference would start are dropped.
    max_frame_age_s: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.min_period_s) and self.min_period_s >= 0):
            raise ValueError(f'min_period_s must be finite and >= 0, got {self.min_period_s!r}')
        if not (math.isfinite(self.max_frame_age_s) and self.max_frame_age_s > 0):
            raise ValueError(f'max_frame_age_s must be finite and > 0, got {self.max_frame_age_s!r}')


class Admission(enum.Enum):
    """What :meth:`FrameIntake.take` decided."""

    RUN = 'run'
    NO_INSTRUCTION = 'no_instruction'
    RATE_LIMITED = 'rate_limited'
    NO_FRAME = 'no_frame'
    FRAME_TOO_OLD = 'frame_too_old'


@dataclass(frozen=True)
class Taken:
    """The decision, and the frame to run on when it is RUN (None otherwise)."""

    admission: Admission
    frame: Any = None
    arrived_s: Optional[float] = None


class FrameIntake:
    """Keeps the newest camera frame and decides when the next inference starts (see module docstring).

    Thread-safe: frames arrive on the executor's thread, inference is admitted on the stage's worker.
    """

    def __init__(self, config: IntakeConfig = IntakeConfig()):
        self.config = config
        self._lock = threading.Lock()
        self._frame: Optional[tuple[Any, float]] = None
        self._last_start_s: Optional[float] = None
        #: Frames replaced by a newer one before inference took them.
        self.superseded = 0
        #: Frames dropped because they were older than ``max_frame_age_s`` when inference would start.
        self.too_old = 0

    @property
    def last_start_s(self) -> Optional[float]:
        """When the last admitted inference started (None: none since start-up or the last reset)."""
        return self._last_start_s

    @property
    def has_frame(self) -> bool:
        return self._frame is not None

    def offer(self, frame: Any, now_s: float) -> bool:
        """Keep ``frame`` (arrived at ``now_s``) as the newest; True when it replaced an unused frame."""
        with self._lock:
            replaced = self._frame is not None
            if replaced:
                self.superseded += 1
            self._frame = (frame, float(now_s))
        return replaced

    def rate_limited(self, now_s: float) -> bool:
        """True while the last inference started less than ``min_period_s`` before ``now_s``."""
        last = self._last_start_s
        return last is not None and float(now_s) - last < self.config.min_period_s

    def take(self, now_s: float, has_instruction: bool) -> Taken:
        """Decide whether an inference starts now, and on which frame (see module docstring)."""
        now_s = float(now_s)
        if not has_instruction:
            return Taken(Admission.NO_INSTRUCTION)
        if self.rate_limited(now_s):
            return Taken(Admission.RATE_LIMITED)
        with self._lock:
            pending, self._frame = self._frame, None
        if pending is None:
            return Taken(Admission.NO_FRAME)
        frame, arrived_s = pending
        if now_s - arrived_s > self.config.max_frame_age_s:
            self.too_old += 1
            return Taken(Admission.FRAME_TOO_OLD, arrived_s=arrived_s)
        self._last_start_s = now_s
        return Taken(Admission.RUN, frame, arrived_s)

    def reset(self) -> None:
        """Forget the pending frame and the rate limit's history (deactivate / cleanup)."""
        with self._lock:
            self._frame = None
        self._last_start_s = None
