"""The action decoder's decisions, ROS-free: how a trace is acted on (the model's own trace, or an edited
one, resuming the request from its perception message where the engine no longer holds it), and multi-rate
execution: which camera frame is acted on next with the newest trace, and when to stop.

Multi-rate (``multi_rate_hz`` > 0): on every tick the newest frame, if it is new, is acted on with the newest
trace whose perception message was seen, until that trace's observation is older than
``multi_rate_max_trace_age_s``. "No frame acted on yet" is its own state (None), not a stamp of 0: a
simulated clock starts at 0.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from .quoting import quote
from .recent import Recent

#: A stamp as (sec, nanosec), the identity of a frame.
Stamp = Tuple[int, int]


@dataclass(frozen=True)
class ActionDecodingConfig:
    """One field per node parameter (the node's ParamSpec defaults)."""

    step_period_s: float = 0.1
    delta_frame_id: str = 'base_link'
    multi_rate_hz: float = 0.0
    multi_rate_max_trace_age_s: float = 10.0

    def __post_init__(self):
        for name in ('step_period_s', 'multi_rate_max_trace_age_s'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f'{name} must be finite and > 0, got {getattr(self, name)!r}')
        if not (math.isfinite(self.multi_rate_hz) and self.multi_rate_hz >= 0):
            raise ValueError(f'multi_rate_hz must be finite and >= 0, got {self.multi_rate_hz!r}')

    @property
    def multi_rate(self) -> bool:
        return self.multi_rate_hz > 0.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> 'ActionDecodingConfig':
        return cls(**{name: type(getattr(cls, name))(params[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ActPlan:
    """How to act on a trace: ``resume`` names the stage to rebuild the request at ('trace': the model's trace
    is reused; 'depth': the edited trace replaces it) or is None when the engine holds the request;
    ``use_trace_points``: act on the message's points (an edit) rather than the model's own trace."""

    resume: Optional[str]
    use_trace_points: bool


def plan_act(model_trace: bool, engine_holds_request: bool) -> ActPlan:
    """See :class:`ActPlan`."""
    resume = None if engine_holds_request else ('trace' if model_trace else 'depth')
    return ActPlan(resume, not model_trace)


@dataclass(frozen=True)
class MultiRateStep:
    """Act now on ``frame`` with ``trace`` (its perception ``perception``), as request ``request_id``."""

    frame: Any
    trace: Any
    perception: Any
    request_id: str


class ActionDecoding:
    """Perception messages of the newest requests and the multi-rate state. Thread-safe (frames and traces
    arrive on other threads than the tick)."""

    def __init__(self, config: ActionDecodingConfig = ActionDecodingConfig()):
        self.config = config
        self.perceptions = Recent()
        self._lock = threading.Lock()
        self._frame: Optional[Tuple[Any, Stamp]] = None
        self._trace: Optional[Tuple[Any, str, float, bool]] = None  # (msg, request id, stamp s, has points)
        self._last_stamp: Optional[Stamp] = None   # the frame acted on last; None: none yet
        self._count = 0
        #: Chunks made at the multi-rate.
        self.multi_rate_chunks = 0

    def on_perception(self, request_id: str, msg: Any) -> None:
        self.perceptions.put(request_id, msg)

    def perception_for(self, request_id: str) -> Any:
        """The request's perception message; ValueError (bounded) when it was not seen."""
        msg = self.perceptions.get(request_id)
        if msg is None:
            raise ValueError(f'request {quote(request_id)}: no perception message seen, cannot rebuild it')
        return msg

    def on_frame(self, frame: Any, stamp: Stamp) -> None:
        with self._lock:
            self._frame = (frame, (int(stamp[0]), int(stamp[1])))

    def on_trace(self, trace: Any, request_id: str, stamp_s: float, has_points: bool) -> None:
        with self._lock:
            self._trace = (trace, request_id, float(stamp_s), bool(has_points))

    def tick(self, now_s: float) -> Optional[MultiRateStep]:
        """The multi-rate step to run now, or None: no frame or trace yet, the frame was acted on already,
        the trace's perception was not seen or it has no points, or the trace is too old (``now_s``: the
        clock the stamps are in)."""
        with self._lock:
            frame, trace = self._frame, self._trace
        if frame is None or trace is None:
            return None
        (frame_msg, stamp), (trace_msg, request_id, trace_stamp_s, has_points) = frame, trace
        perception = self.perceptions.get(request_id)
        if stamp == self._last_stamp or perception is None or not has_points:
            return None
        if float(now_s) - trace_stamp_s > self.config.multi_rate_max_trace_age_s:
            return None
        self._last_stamp = stamp
        self._count += 1
        return MultiRateStep(frame_msg, trace_msg, perception, f'{request_id}-mr{self._count}')

    def reset(self) -> None:
        self.perceptions.clear()
        with self._lock:
            self._frame = self._trace = None
        self._last_stamp = None
