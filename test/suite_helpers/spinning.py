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
