"""Run one lifecycle node alone: ``ros2 run molmoact_ros <node> [--autostart] --ros-args ...``.

The node spins on a :class:`~rclpy.executors.SingleThreadedExecutor` in a thread of its own (its callbacks
are short; rclpy's MultiThreadedExecutor starved the sink's 50 Hz tick on a 2-core machine). Without
``--autostart`` it waits unconfigured for a lifecycle manager; with it, it is configured and activated
here. On SIGINT or SIGTERM it is deactivated (a command sink sends its hold while its publishers are still
on), cleaned up and destroyed, and rclpy shuts down.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from rclpy.lifecycle import TransitionCallbackReturn


def run_alone(make_node: Callable, argv: Optional[Sequence[str]] = None, *, label: str) -> int:
    """Run ``make_node(cli_args=argv)`` until SIGINT/SIGTERM; 1 if ``--autostart`` bring-up failed, else 0.
    ``label`` names the node in the log ('<label> active')."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    argv = list(sys.argv if argv is None else argv)
    autostart = '--autostart' in argv
    if autostart:
        argv.remove('--autostart')
    rclpy.init(args=argv)
    node = make_node(cli_args=argv)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    spinner = threading.Thread(target=lambda: _spin(executor, ExternalShutdownException), daemon=True)
    spinner.start()
    code = 0
    try:
        if autostart:
            if (node.trigger_configure() != TransitionCallbackReturn.SUCCESS
                    or node.trigger_activate() != TransitionCallbackReturn.SUCCESS):
                node.get_logger().error(f'bring-up failed: {node.last_error}')
                code = 1
                stop.set()
            else:
                node.get_logger().info(f'{label} active')
        while not stop.wait(0.2):
            pass
    finally:
        # Deactivate first: a command sink's hold goes out while the publishers are still on.
        if node.lifecycle_label == 'active':
            node.trigger_deactivate()
        if node.lifecycle_label == 'inactive':
            node.trigger_cleanup()
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def _spin(executor, external_shutdown) -> None:
    try:
        executor.spin()
    except external_shutdown:
        pass
