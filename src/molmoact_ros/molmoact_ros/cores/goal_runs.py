"""The ExecuteInstruction goals of the perception stage, ROS-free: one goal runs at a time (a newer one
preempts it), its queries are followed downstream by request id, and each step of the goal's executor says
what to report (feedback) and whether the goal is over (outcome, and how the action server ends it).

The node's goal thread only converts: ``start`` on a new goal, then ``step`` until it returns an end, with
a short wait between steps. Handed the time (monotonic seconds, any start value: a goal started at
``now_s`` = 0.0 on a freshly booted machine times out ``timeout_s`` later, not at once).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from ..reasoning.goals import GoalBounds, GoalProgress, GoalRejected, GoalRun, GoalSpec, Outcome, resolve_goal
from .quoting import bound


class Ending(enum.Enum):
    """How the action server ends a goal (rclpy ServerGoalHandle.succeed / canceled / abort)."""

    SUCCEED = 'succeed'
    CANCELED = 'canceled'
    ABORT = 'abort'


def ending(outcome: Outcome, cancel_requested: bool) -> Ending:
    """COMPLETED succeeds; a cancellation the client asked for is CANCELED; anything else aborts (a
    preempted goal's client did not ask to cancel)."""
    if outcome == Outcome.COMPLETED:
        return Ending.SUCCEED
    if outcome == Outcome.CANCELED and cancel_requested:
        return Ending.CANCELED
    return Ending.ABORT


@dataclass(frozen=True)
class GoalStep:
    """What one step of a goal's executor yields: feedback to publish (with the latest trace / chunk of
    the goal's current query), and the end once the goal is over."""

    progress: Optional[GoalProgress] = None
    latest: Dict[str, Any] = field(default_factory=dict)
    outcome: Optional[Tuple[Outcome, str]] = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None


class GoalRuns:
    """The current goal of the perception stage and the latest trace / chunk of its queries. Thread-safe:
    goals start on their own threads, trace and chunk messages arrive on the executor's."""

    def __init__(self, bounds: GoalBounds = GoalBounds(), on_start: Optional[Callable[[], None]] = None):
        self.bounds = bounds
        self._on_start = on_start
        self._lock = threading.Lock()
        self._current: Optional[GoalRun] = None
        self._latest: Dict[str, Any] = {}

    @property
    def current(self) -> Optional[GoalRun]:
        return self._current

    def resolve(self, instruction: str, max_steps: int, timeout_s: float, execute: bool,
                max_translation_m_per_step: float = 0.0, max_rotation_rad_per_step: float = 0.0) -> GoalSpec:
        """The goal's validated spec; :class:`GoalRejected` with a bounded reason otherwise."""
        try:
            return resolve_goal(instruction, max_steps, timeout_s, execute, max_translation_m_per_step,
                                max_rotation_rad_per_step, self.bounds)
        except GoalRejected as exc:
            raise GoalRejected(bound(str(exc), 400)) from None

    def start(self, spec: GoalSpec, now_s: float, goal_id: str = '') -> GoalRun:
        """Make ``spec`` the running goal from ``now_s`` (a running one is preempted); the instruction
        topic's instruction is forgotten (``on_start``): nothing runs after the goal until a new one."""
        run = GoalRun(spec, float(now_s), goal_id=goal_id)
        with self._lock:
            if self._current is not None:
                self._current.preempt()
            self._current, self._latest = run, {}
        if self._on_start is not None:
            self._on_start()
        return run

    def on_trace(self, request_id: str, msg: Any) -> bool:
        """A trace on the trace topic: kept for feedback when it is the current query's."""
        return self._report('trace', request_id, msg, lambda run: run.on_trace(request_id))

    def on_chunk(self, request_id: str, msg: Any) -> bool:
        """An action chunk: completes the current query when it is its chunk."""
        return self._report('chunk', request_id, msg, lambda run: run.on_chunk(request_id))

    def _report(self, kind: str, request_id: str, msg: Any, accept: Callable[[GoalRun], bool]) -> bool:
        with self._lock:
            if self._current is not None and accept(self._current):
                self._latest[kind] = msg
                return True
        return False

    def step(self, run: GoalRun, now_s: float, *, cancel_requested: bool, node_active: bool) -> GoalStep:
        """Progress to report since the last step, and the goal's end once it is over (then it is no
        longer the current goal)."""
        progress = run.take_progress()
        latest = {}
        if progress is not None:
            with self._lock:
                latest = dict(self._latest) if self._current is run else {}
        outcome = run.outcome(float(now_s), cancel_requested=cancel_requested, node_active=node_active)
        if outcome is not None:
            with self._lock:
                if self._current is run:
                    self._current = None
        return GoalStep(progress, latest, outcome)

    def fail_current(self, reason: str) -> None:
        """The running goal (if any) fails with ``reason`` and is no longer current."""
        with self._lock:
            if self._current is not None:
                self._current.fail(reason)
            self._current = None


GoalRuns.ending = staticmethod(ending)
