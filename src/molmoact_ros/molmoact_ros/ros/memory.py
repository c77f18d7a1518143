"""Process memory tuning for the model-hosting executables (ROS-free).

glibc's malloc gives each thread that contends for the heap an arena of its own (up to 8 per core) and keeps
freed memory in them. A process where several threads (stage workers, executor threads) allocate and free
model-sized tensors therefore holds far more memory than the same work on one thread: ``bench/ros_bench.py``
measured +80 MiB of peak RSS for the three-node process on a 0.3 B model (231 vs 152 MiB above the engine
alone). Capping the number of arenas removes most of it; the stage threads take turns on one engine, so
they rarely contend for malloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

#: mallopt parameter number of M_ARENA_MAX in glibc's malloc.h.
M_ARENA_MAX = -8
#: Default cap (environment MOLMOACT_MALLOC_ARENA_MAX; 0 leaves glibc's default).
DEFAULT_ARENAS = 2
ENV = 'MOLMOACT_MALLOC_ARENA_MAX'


def arena_cap_from_env(environ=os.environ) -> int:
    """The cap to apply: ``$MOLMOACT_MALLOC_ARENA_MAX`` (0 = none) or :data:`DEFAULT_ARENAS`.
    ``MALLOC_ARENA_MAX`` set in the environment (glibc's own knob) wins: then nothing is applied."""
    if environ.get('MALLOC_ARENA_MAX'):
        return 0
    text = environ.get(ENV, '').strip()
    if not text:
        return DEFAULT_ARENAS
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f'{ENV} must be a non-negative integer, got {text!r}') from None
    if value < 0:
        raise ValueError(f'{ENV} must be a non-negative integer, got {value}')
    return value


def limit_malloc_arenas(cap: Optional[int] = None) -> bool:
    """Cap glibc malloc arenas for this process (call early, before threads start). Returns True when
    applied; False with cap 0, on a non-glibc libc, or when mallopt refuses."""
    cap = arena_cap_from_env() if cap is None else int(cap)
    if cap <= 0:
        return False
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, cap))
