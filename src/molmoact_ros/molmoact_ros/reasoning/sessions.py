"""Live requests of the staged engine: one KV cache per request, bounded in count, age and memory.

A request (one observation + one instruction) lives from its perception stage until its action stage
finishes, it is released, or a bound evicts it. Each stage continues from the cache the previous stage
left, so the three stages together cost what one generation costs. The store never grows without bound:
at most ``max_sessions`` live requests, none older than ``max_age_s``, and the sum of their KV-cache
bytes at most ``max_cache_bytes`` (the least recently used go first).

ROS-free; torch only to measure cache tensors.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional


class SessionError(KeyError):
    """A request id is unknown (never created, released, or evicted); the message says which."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else 'unknown request'


def cache_bytes(cache: Any) -> int:
    """Bytes held by a transformers Cache (or any object exposing tensors through ``layers``)."""
    if cache is None:
        return 0
    total = 0
    for layer in getattr(cache, 'layers', ()):
        for name in ('keys', 'values'):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, 'element_size'):
                total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class Session:
    """State of one live request. ``token_ids`` is everything the model has seen (prompt + answer so far);
    ``marks`` records the answer length at the end of each stage (e.g. 'depth', 'trace')."""

    request_id: str
    instruction: str
    prompt_ids: List[int]
    cache: Any = None
    answer_ids: List[int] = field(default_factory=list)
    marks: Dict[str, int] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    created_s: float = field(default_factory=time.monotonic)
    used_s: float = field(default_factory=time.monotonic)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)

    def memory_bytes(self) -> int:
        return cache_bytes(self.cache)


#: How many of the newest requests keep their KV cache: the one default of ``SessionLimits.max_sessions`` and
#: of the nodes' ``retained_requests`` parameter (each retained request holds one KV cache in memory).
RETAINED_REQUESTS = 2


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on live requests."""

    max_sessions: int = RETAINED_REQUESTS
    max_age_s: float = 120.0
    max_cache_bytes: int = 8 * 2**30

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_age_s <= 0 or self.max_cache_bytes <= 0:
            raise ValueError(f'invalid session limits {self}')


class SessionStore:
    """Thread-safe LRU store of :class:`Session` with count, age and memory bounds.

    ``clock`` is injectable for tests. ``on_evict(session, reason)`` is called for every eviction.
    """

    def __init__(self, limits: SessionLimits = SessionLimits(), clock: Callable[[], float] = time.monotonic,
                 on_evict: Optional[Callable[[Session, str], None]] = None):
        self.limits = limits
        self._clock = clock
        self._on_evict = on_evict
        self._sessions: 'OrderedDict[str, Session]' = OrderedDict()
        self._lock = threading.RLock()
        self.evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._sessions

    def ids(self) -> List[str]:
        with self._lock:
            return list(self._sessions)

    def add(self, session: Session) -> Session:
        """Insert (or replace) a session, then enforce the bounds (the new one is kept if it alone fits)."""
        with self._lock:
            now = self._clock()
            session.created_s = session.used_s = now
            self._sessions.pop(session.request_id, None)
            self._sessions[session.request_id] = session
            self._enforce(keep=session.request_id)
            return session

    def get(self, request_id: str) -> Session:
        """The live session of ``request_id`` (marks it most recently used). Raises SessionError."""
        with self._lock:
            self._expire()
            session = self._sessions.get(request_id)
            if session is None:
                raise SessionError(f'request {request_id!r} is not live (unknown, released, or evicted after '
                                   f'{self.limits.max_age_s:.0f} s / {self.limits.max_sessions} live requests / '
                                   f'{self.limits.max_cache_bytes} cache bytes)')
            session.used_s = self._clock()
            self._sessions.move_to_end(request_id)
            return session

    def touch(self, request_id: str) -> None:
        """Re-check the bounds after a session's cache grew."""
        with self._lock:
            self._enforce(keep=request_id)

    def release(self, request_id: str) -> bool:
        """Drop a session (its cache memory is freed). False when it was not live."""
        with self._lock:
            return self._sessions.pop(request_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(s.memory_bytes() for s in self._sessions.values())

    # -- bounds -----------------------------------------------------------------------------------
    def _evict(self, request_id: str, reason: str) -> None:
        session = self._sessions.pop(request_id)
        self.evictions += 1
        if self._on_evict is not None:
            self._on_evict(session, reason)

    def _expire(self) -> None:
        now = self._clock()
        for rid, session in list(self._sessions.items()):
            if now - session.created_s > self.limits.max_age_s:
                self._evict(rid, 'age')

    def _enforce(self, keep: Optional[str] = None) -> None:
        self._expire()
        while len(self._sessions) > self.limits.max_sessions:
            oldest = next(rid for rid in self._sessions if rid != keep)
            self._evict(oldest, 'count')
        while self.memory_bytes() > self.limits.max_cache_bytes:
            victims = [rid for rid in self._sessions if rid != keep]
            if not victims:
                break  # the kept session alone exceeds the budget: it stays until released or aged out
            self._evict(victims[0], 'memory')
