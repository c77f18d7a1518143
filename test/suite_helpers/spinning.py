"""Spinning a test rig's executor so that one failing callback cannot silently stop the rig."""

import traceback

import rclpy
from rclpy.exceptions import InvalidHandle


def spin_recording(executor, escaped: list) -> None:
    """``executor.spin()`` on until shutdown, appending the traceback of every exception that escapes a callback.

    rclpy re-raises such an exception out of ``spin()``: a plain spin thread then ends and every later test of a
    module-scoped rig fails for no reason of its own (seen in CI). Tests assert ``escaped`` stays empty instead.
    An InvalidHandle (a callback already dispatched for an entity that a transition, e.g. cleanup, destroyed
    meanwhile: an rclpy race that nodes cannot prevent) is not a failure; the pipeline's runner spins on too.
    """
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle:
            continue
        except Exception:  # noqa: BLE001 - recorded for the test that was running
            if not rclpy.ok():
                return
            escaped.append(traceback.format_exc())


def wait_until(predicate, timeout_s: float, poll_s: float = 0.002) -> bool:
    """Whether ``predicate()`` came true within ``timeout_s`` (a generous bound for a loaded machine, never a
    decision about speed: the decisions are tested on the ROS-free cores with the time handed in). Polls the
    rig's state, which the executor thread changes, every ``poll_s``."""
    import threading
    import time
    idle = threading.Event()  # never set: its wait is the poll interval
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= end:
            return bool(predicate())
        idle.wait(poll_s)
    return True
