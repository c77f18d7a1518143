"""Match side inputs (aligned depth, wrist view) to a camera frame by stamp, without message_filters.

ROS-free: stamps are float seconds. ``message_filters.ApproximateTimeSynchronizer`` needs every input to
arrive before it emits anything; the perception node must keep working with the RGB stream alone, so it
keeps a short buffer of each side input and asks for the one nearest to the frame's stamp.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any, Deque, Optional, Tuple


class StampBuffer:
    """The last ``size`` messages of one topic, looked up by nearest stamp within a tolerance."""

    def __init__(self, size: int = 8, tolerance_s: float = 0.05):
        if size < 1 or tolerance_s < 0:
            raise ValueError('size must be >= 1 and tolerance_s >= 0')
        self.tolerance_s = float(tolerance_s)
        self._items: Deque[Tuple[float, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, stamp_s: float, item: Any) -> None:
        with self._lock:
            self._items.append((float(stamp_s), item))

    def nearest(self, stamp_s: float) -> Optional[Any]:
        """The item whose stamp is closest to ``stamp_s`` if within the tolerance, else None."""
        with self._lock:
            if not self._items:
                return None
            best = min(self._items, key=lambda pair: abs(pair[0] - stamp_s))
        return best[1] if abs(best[0] - stamp_s) <= self.tolerance_s else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time (or Duration) -> seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def split_seconds(seconds: float) -> Tuple[int, int]:
    """Non-negative seconds -> (sec, nanosec) of a builtin_interfaces Time / Duration, nanoseconds rounded
    (a fraction that rounds up to a whole second carries into ``sec``)."""
    sec = int(math.floor(seconds))
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return sec, nanosec
