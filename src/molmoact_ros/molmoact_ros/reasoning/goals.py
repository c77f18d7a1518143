"""The run of one ExecuteInstruction goal: validation, bounds, step accounting and outcome (no ROS).

A goal asks the pipeline to run ``max_steps`` model queries (perceive -> plan -> act) on an instruction
within ``timeout_s``. The perception node owns the goal: it starts one query at a time while the goal
allows it, and follows the goal's requests downstream through the trace and action-chunk topics (by
request id), so the same accounting works when the three stages run in separate processes.

Everything here takes the time as an argument (monotonic seconds); nothing reads a clock.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..model.processing import build_prompt


class Outcome(enum.IntEnum):
    """Values of ExecuteInstruction.Result.outcome."""

    COMPLETED = 0
    CANCELED = 1
    TIMED_OUT = 2
    FAILED = 3
    REJECTED = 4


class Stage(str, enum.Enum):
    """The stage a goal's current query is in (the StageTiming.STAGE_* strings)."""

    PERCEPTION = 'perception'
    PLANNING = 'planning'
    ACTION = 'action'


class GoalRejected(ValueError):
    """The goal cannot run; the message says why."""


@dataclass(frozen=True)
class GoalBounds:
    """The node's bounds on goals: what 0 means, and the most a goal may ask for."""

    default_max_steps: int = 20
    max_steps_limit: int = 10_000
    default_timeout_s: float = 300.0
    max_timeout_s: float = 86_400.0

    def __post_init__(self):
        if not 1 <= self.default_max_steps <= self.max_steps_limit:
            raise ValueError('need 1 <= default_max_steps <= max_steps_limit')
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError('need 0 < default_timeout_s <= max_timeout_s')


@dataclass(frozen=True)
class GoalSpec:
    """A validated goal. Step limits of 0 mean "no extra limit" (the command sink's limits apply)."""

    instruction: str
    max_steps: int
    timeout_s: float
    execute: bool
    max_translation_m_per_step: float
    max_rotation_rad_per_step: float


def resolve_goal(instruction: str, max_steps: int, timeout_s: float, execute: bool,
                 max_translation_m_per_step: float = 0.0, max_rotation_rad_per_step: float = 0.0,
                 bounds: GoalBounds = GoalBounds()) -> GoalSpec:
    """Validate a goal's fields and apply the node's bounds. Raises :class:`GoalRejected` with the reason.

    The instruction is whitespace-normalised and checked like an instruction topic message (non-empty,
    fits the model's prompt). ``max_steps`` 0 and ``timeout_s`` 0 take the node's defaults; larger values
    than the node's limits are rejected rather than silently cut, so the client knows what will run.
    """
    text = ' '.join(str(instruction).split())
    try:
        build_prompt(text)
    except ValueError as exc:
        raise GoalRejected(f'instruction rejected: {exc}') from None
    steps = int(max_steps)
    if steps < 0 or steps > bounds.max_steps_limit:
        raise GoalRejected(f'max_steps {steps} is outside 0..{bounds.max_steps_limit}')
    timeout = float(timeout_s)
    if not math.isfinite(timeout) or timeout < 0 or timeout > bounds.max_timeout_s:
        raise GoalRejected(f'timeout_s {timeout_s} is outside 0..{bounds.max_timeout_s:g} s')
    limits = []
    for name, value in (('max_translation_m_per_step', max_translation_m_per_step),
                        ('max_rotation_rad_per_step', max_rotation_rad_per_step)):
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise GoalRejected(f'{name} must be a finite number >= 0 (0: the node\'s limit), got {value}')
        limits.append(value)
    return GoalSpec(text, steps or bounds.default_max_steps, timeout or bounds.default_timeout_s, bool(execute),
                    limits[0], limits[1])


@dataclass
class GoalProgress:
    """What feedback reports: the 1-based query number, its request id and the stage it is in."""

    step: int
    request_id: str
    stage: Stage


@dataclass
class GoalRun:
    """Step accounting of one goal. Thread-safe: callbacks of several threads report into it.

    A query *starts* when the perception node begins it (``on_started``), moves to planning when its
    perception tokens are out (``on_perceived``), to action when its trace arrives (``on_trace``) and
    completes when its action chunk arrives (``on_chunk``). Messages of other requests are ignored.
    """

    spec: GoalSpec
    started_at_s: float
    goal_id: str = ''
    request_ids: List[str] = field(default_factory=list)
    completed: int = 0
    stage: Stage = Stage.PERCEPTION
    failure: str = ''
    preempted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: bool = True

    # -- reports from the pipeline ----------------------------------------------------------------
    def may_start(self) -> bool:
        """Whether the perception node may start another query for this goal: one at a time, at most
        ``max_steps``, none after the goal stopped."""
        with self._lock:
            idle = len(self.request_ids) == self.completed
            return idle and len(self.request_ids) < self.spec.max_steps and not self.failure and not self.preempted

    def on_started(self, request_id: str) -> None:
        with self._lock:
            self.request_ids.append(request_id)
            self.stage = Stage.PERCEPTION
            self._changed = True

    def _current(self, request_id: str) -> bool:
        return bool(self.request_ids) and request_id == self.request_ids[-1] and self.completed < len(self.request_ids)

    def on_perceived(self, request_id: str) -> bool:
        with self._lock:
            if not self._current(request_id):
                return False
            self.stage, self._changed = Stage.PLANNING, True
            return True

    def on_trace(self, request_id: str) -> bool:
        with self._lock:
            if not self._current(request_id):
                return False
            self.stage, self._changed = Stage.ACTION, True
            return True

    def on_chunk(self, request_id: str) -> bool:
        with self._lock:
            if not self._current(request_id):
                return False
            self.completed += 1
            self._changed = True
            return True

    def fail(self, reason: str) -> None:
        with self._lock:
            if not self.failure:
                self.failure = reason

    def preempt(self) -> None:
        with self._lock:
            self.preempted = True

    # -- what the goal's executor asks --------------------------------------------------------------
    def take_progress(self) -> Optional[GoalProgress]:
        """The progress since the last call, or None when nothing changed."""
        with self._lock:
            if not self._changed or not self.request_ids:
                return None
            self._changed = False
            return GoalProgress(len(self.request_ids), self.request_ids[-1], self.stage)

    def outcome(self, now_s: float, *, cancel_requested: bool = False,
                node_active: bool = True) -> Optional[Tuple[Outcome, str]]:
        """(outcome, reason) once the goal is over, else None. Order: cancel, preemption, failure,
        node no longer active, completion, timeout."""
        with self._lock:
            if cancel_requested:
                return Outcome.CANCELED, 'cancelled by the client'
            if self.preempted:
                return Outcome.CANCELED, 'preempted by a newer goal'
            if self.failure:
                return Outcome.FAILED, self.failure
            if not node_active:
                return Outcome.FAILED, 'the perception node was deactivated'
            if self.completed >= self.spec.max_steps:
                return Outcome.COMPLETED, ''
            if now_s - self.started_at_s >= self.spec.timeout_s:
                return Outcome.TIMED_OUT, (f'{self.completed} of {self.spec.max_steps} queries completed in '
                                           f'{self.spec.timeout_s:g} s')
            return None

    @property
    def last_request_id(self) -> str:
        with self._lock:
            return self.request_ids[-1] if self.request_ids else ''
