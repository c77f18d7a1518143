"""Garbage-collector tuning for long-running node processes (ROS-free).

CPython's cyclic collector stops every thread of the process while it scans a generation, and a full
(generation-2) collection scans every tracked object. A process that has imported torch and transformers
and built a model holds hundreds of thousands of them: the test suite's process, at ~700k objects, measured
full collections of 0.2-0.36 s (``gc.callbacks``; 44 pauses over 30 ms in one run). During such a pause no
callback runs: a 50 Hz control tick, the camera subscription and the joint-state subscription of a command
sink hosted in the same process all stall, and the safety gates rightly halt the arm (stale camera, no robot
state).

Nearly all of those objects are created once, at start-up (modules, the model, the nodes) and live until
exit. :func:`freeze_startup_heap` collects once and then moves every surviving object to the permanent
generation (``gc.freeze``), which later collections do not scan; the objects a running pipeline creates are
still collected as before. Environment ``MOLMOACT_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import os

ENV = 'MOLMOACT_GC_FREEZE'


def freeze_enabled(environ=os.environ) -> bool:
    """False only when ``$MOLMOACT_GC_FREEZE`` is 0/false/no/off (any other value, or unset: True)."""
    return environ.get(ENV, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def freeze_startup_heap(environ=os.environ) -> int:
    """Collect garbage once, then exempt every surviving object from later collections.

    Call after the expensive start-up (imports, model load, node configuration). Calling it again freezes
    what was created since. Returns the number of objects in the permanent generation (0 when disabled)."""
    if not freeze_enabled(environ):
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
