"""In-process stage handoff: worker threads, local delivery of messages, and duplicate suppression.

ROS-free plumbing for the stage nodes (:mod:`molmoact_ros.nodes.stage_base`), in the spirit of rclcpp's
intra-process communication:

* :class:`StageWorker`: each stage node runs its model work on a thread of its own, fed by its
  subscription callbacks (which only enqueue). Model work never occupies the executor.
* Run-to-completion handoff: a result handed over locally *from a worker thread* does not wake the next
  stage's thread; it is deferred (:meth:`StageWorker.defer`) and runs on the same thread right after the
  current work item returns, with the receiving stage's error handling (:meth:`StageWorker.run_here`).
  The stages share one engine and run one after another anyway, and waking another thread cost 1-4 ms per
  handoff on a 2-core machine (the woken thread waits for the GIL behind the executor thread, which is
  busy taking the DDS copies of the same message; measured with timestamps in the pipeline process).
* :class:`LocalBus`: when the stages share a process, a stage that publishes a result also hands the same
  message object to the subscribers of that topic in this process (matched by the *resolved* topic name,
  so namespaces and remapping apply). The message still goes out over DDS for every other subscriber
  (RViz, recorders, a sink in another process).
* :class:`SeenKeys`: a subscriber in the same process then receives each message twice (locally and over
  DDS); it handles whichever comes first and ignores the other.

Messages handed over locally are shared, not copied: receivers must treat them as read-only.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Dict, Hashable, List, Optional, Tuple

_LOG = logging.getLogger(__name__)


_CURRENT = threading.local()


class StageWorker:
    """One thread running a node's work items in submission order.

    ``submit(fn, *args)`` queues a call (at most ``max_pending``; beyond that the oldest pending call is
    dropped and counted in :attr:`dropped`). ``idle`` (optional) is called after every wake-up and at least
    every ``idle_period_s`` (e.g. "start an inference if a frame is waiting"); :meth:`wake` runs it now.
    An exception in a call goes to ``on_error(fn_name, exc)`` and the worker goes on.
    """

    def __init__(self, name: str, *, on_error: Callable[[str, BaseException], None],
                 idle: Optional[Callable[[], None]] = None, idle_period_s: float = 0.1, max_pending: int = 32):
        if idle_period_s <= 0 or max_pending < 1:
            raise ValueError('idle_period_s must be > 0 and max_pending >= 1')
        self.name = name
        self._on_error = on_error
        self._idle = idle
        self._idle_period_s = float(idle_period_s)
        self._max_pending = int(max_pending)
        self._pending: collections.deque = collections.deque()
        self._deferred: collections.deque = collections.deque()  # touched only by this worker's thread
        self._cv = threading.Condition()
        self._woken = False
        self._running = True
        self.dropped = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._running and self._thread.is_alive()

    def submit(self, fn: Callable, *args) -> None:
        with self._cv:
            if not self._running:
                return
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append((fn, args))
            self._cv.notify()

    @staticmethod
    def current() -> Optional['StageWorker']:
        """The worker whose thread is calling (None on any other thread)."""
        return getattr(_CURRENT, 'worker', None)

    def defer(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on this worker's thread as soon as the current work item (or idle call)
        returns, before the next queued item. Only from this worker's own thread (see :meth:`current`)."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError(f'{self.name}: defer() is only for calls made on the worker\'s own thread')
        self._deferred.append((fn, args))

    def run_here(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` now, on the calling thread, with this worker's error handling (as if it were
        one of its work items); nothing once the worker has stopped."""
        if not self._running:
            return
        self._run(fn, args)
        self.completed += 1

    def wake(self) -> None:
        with self._cv:
            self._woken = True
            self._cv.notify()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop after the call in progress (pending calls are discarded). True when the thread ended."""
        with self._cv:
            self._running = False
            self._pending.clear()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive() or threading.current_thread() is self._thread

    def _run(self, fn: Callable, args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - report and keep the worker alive
            name = getattr(fn, '__name__', repr(fn))
            try:
                self._on_error(name, exc)
            except Exception:  # noqa: BLE001 - e.g. the node's context shut down under the report
                _LOG.exception('%s: the error handler failed on %s (%s)', self.name, name, exc)

    def _drain_deferred(self) -> None:
        # Runs even when stopping: a deferred call hands a result to another stage, which has marked it
        # as received (it ignores the DDS copy) and would otherwise never see it.
        while self._deferred:
            fn, args = self._deferred.popleft()
            self._run(fn, args)

    def _loop(self) -> None:
        _CURRENT.worker = self
        while True:
            with self._cv:
                if self._running and not self._pending and not self._woken:
                    self._cv.wait(self._idle_period_s)
                if not self._running:
                    return
                item = self._pending.popleft() if self._pending else None
                self._woken = False
            if item is not None:
                self._run(*item)
                self.completed += 1
                self._drain_deferred()
            if self._idle is not None and self._running:
                self._run(self._idle, ())
                self._drain_deferred()


class LocalBus:
    """Process-local delivery of published messages to subscribers of the same resolved topic name.

    ``scope`` separates independent ROS contexts in one process (pass the context's id)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: Dict[Tuple[Hashable, str], List[Tuple[int, Callable]]] = {}
        self._next = 0

    def subscribe(self, scope: Hashable, topic: str, callback: Callable) -> Tuple[Hashable, str, int]:
        with self._lock:
            self._next += 1
            self._subs.setdefault((scope, topic), []).append((self._next, callback))
            return (scope, topic, self._next)

    def unsubscribe(self, token: Tuple[Hashable, str, int]) -> None:
        scope, topic, number = token
        with self._lock:
            subs = [s for s in self._subs.get((scope, topic), []) if s[0] != number]
            if subs:
                self._subs[(scope, topic)] = subs
            else:
                self._subs.pop((scope, topic), None)

    def subscribers(self, scope: Hashable, topic: str) -> int:
        with self._lock:
            return len(self._subs.get((scope, topic), ()))

    def deliver(self, scope: Hashable, topic: str, msg) -> int:
        """Call every local subscriber of ``topic`` with ``msg`` (in this thread); returns how many."""
        with self._lock:
            callbacks = [cb for _, cb in self._subs.get((scope, topic), ())]
        for callback in callbacks:
            callback(msg)
        return len(callbacks)


class SeenKeys:
    """Thread-safe "first time?" test over the last ``capacity`` keys."""

    def __init__(self, capacity: int = 64):
        if capacity < 1:
            raise ValueError('capacity must be >= 1')
        self._capacity = capacity
        self._keys: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.duplicates = 0

    def first(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._keys:
                self.duplicates += 1
                return False
            self._keys[key] = None
            while len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
            return True

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


#: The process's bus (all stage nodes of a process share it, like the engine).
PROCESS_BUS = LocalBus()
