"""Who runs next on the one engine of a process (ROS-free).

The three stages of a process share one engine and take turns on it. With a plain lock, the stage that asks
again first wins: a perception stage fed by a 30 Hz camera asks again the moment it finishes, and the
planner and the decoder of its previous request (and a person's edited trace) could wait for many frames;
their requests' caches are then evicted. :class:`PriorityRLock` serves waiting threads by priority instead:
acting (2) before planning (1) before perceiving (0), so a request goes through all its stages before the next
frame is perceived, the freshest actions come out first, and steering edits are answered at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Iterator

#: Stage priorities (larger runs first among waiting threads).
PERCEIVE, PLAN, ACT = 0, 1, 2


class PriorityRLock:
    """A reentrant lock whose waiters acquire it highest priority first (ties: any order).

    A thread holding the lock may acquire it again at any priority (reentrant). ``with lock:`` acquires at
    priority 0; ``with lock.hold(p):`` at priority ``p``.
    """

    def __init__(self):
        self._cv = threading.Condition(threading.Lock())
        self._owner = None
        self._depth = 0
        self._waiting: Counter = Counter()

    def acquire(self, priority: int = 0) -> None:
        me = threading.get_ident()
        with self._cv:
            if self._owner == me:
                self._depth += 1
                return
            self._waiting[priority] += 1
            try:
                while self._owner is not None or any(n and p > priority for p, n in self._waiting.items()):
                    self._cv.wait()
            finally:
                self._waiting[priority] -= 1
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cv:
            if self._owner != threading.get_ident():
                raise RuntimeError('release of a PriorityRLock not held by this thread')
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cv.notify_all()

    @contextlib.contextmanager
    def hold(self, priority: int = 0) -> Iterator[None]:
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def __enter__(self):
        self.acquire(0)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._owner is not None

    def waiting(self, priority: int) -> int:
        with self._cv:
            return self._waiting[priority]
