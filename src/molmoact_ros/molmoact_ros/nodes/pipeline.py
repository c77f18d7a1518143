"""Run the pipeline's lifecycle nodes: all three in one process (one engine, KV-cache handoff), or one
(``Pipeline`` can also host the engine-free ``command_sink``; its executable is
``molmoact_ros.nodes.command_sink:main``, which does not import the model stack).

    ros2 run molmoact_ros pipeline --ros-args -p model:=allenai/MolmoAct-7B-D-0812 ...
    ros2 run molmoact_ros perception_node [--autostart] --ros-args ...

The one-process runner configures and activates its nodes in order through their lifecycle services
(so it works where launch_ros is absent), spins them on a multi-threaded executor, and on Ctrl-C or
SIGTERM deactivates, cleans up and shuts them down before exiting. A single-stage executable leaves its
node unconfigured for a lifecycle manager (launch_ros, nav2_lifecycle_manager with bond_timeout 0.0)
unless given ``--autostart``.

The executables (:mod:`.entry`) cap glibc's malloc arenas at 2 before importing the model stack
(``MOLMOACT_MALLOC_ARENA_MAX``; 0 keeps glibc's default): see :mod:`molmoact_ros.ros.memory`.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

from ..ros.lifecycle import LifecycleClient, LifecycleError, bring_up, walk
from ..ros.memory import limit_malloc_arenas
from .engine_provider import EngineProvider
from .command_sink import CommandSinkNode
from .action_decoder import ActionDecoderNode
from .perception import PerceptionNode
from .trace_planner import TracePlannerNode

#: Nodes the runner can host. The command sink needs no engine (it never acquires one).
STAGES = {'perception': PerceptionNode, 'trace_planner': TracePlannerNode, 'action_decoder': ActionDecoderNode,
          'command_sink': CommandSinkNode}
#: What ``pipeline`` runs: the three model stages (the sink is started on its own, see the launch file).
PIPELINE_STAGES = ('perception', 'trace_planner', 'action_decoder')


class Pipeline:
    """The three stage nodes (or a subset) on one executor, sharing one engine."""

    def __init__(self, stages=PIPELINE_STAGES, provider: Optional[EngineProvider] = None, args=None,
                 num_threads: int = 1):
        self.provider = provider or EngineProvider()
        self.nodes = [STAGES[name](name, provider=self.provider, cli_args=args) for name in stages]
        self.manager = rclpy.create_node('molmoact_pipeline_manager', cli_args=args)
        # Single-threaded by default: the stages' model work runs on their worker threads and goals on threads
        # of their own, so executor callbacks are short; rclpy's MultiThreadedExecutor added ~2 ms per step
        # (bench/ros_bench.py) and, on a 2-core machine, starved timers next to busy callbacks.
        self.executor = (SingleThreadedExecutor() if num_threads <= 1
                         else MultiThreadedExecutor(num_threads=num_threads))
        for node in [*self.nodes, self.manager]:
            self.executor.add_node(node)
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self.clients = [LifecycleClient(self.manager, node.get_fully_qualified_name(), spinning=True,
                                        timeout_s=600.0) for node in self.nodes]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        # rclpy re-raises an exception escaping a callback out of spin(): report it and keep spinning, so one
        # bad callback never silently stops every node of the process (lifecycle services included).
        while not self._stopping:
            try:
                self.executor.spin()
                return
            except ExternalShutdownException:
                return
            except Exception as exc:  # noqa: BLE001
                if self._stopping or not self.manager.context.ok():
                    return
                self.manager.get_logger().error(f'executor: {type(exc).__name__}: {exc} (still spinning)')

    def bring_up(self):
        """Configure all nodes, then activate all (raises LifecycleError naming the failing node)."""
        return bring_up(self.clients)

    def bring_down(self) -> List:
        results = []
        for transition in ('deactivate', 'cleanup', 'shutdown'):
            for client, node in zip(self.clients, self.nodes):
                label = node.lifecycle_label
                allowed = {'deactivate': ('active',), 'cleanup': ('inactive',),
                           'shutdown': ('unconfigured', 'inactive', 'active')}[transition]
                if label in allowed:
                    try:
                        results.extend(walk([client], [transition]))
                    except LifecycleError as exc:
                        node.get_logger().error(str(exc))
        return results

    def stop(self) -> None:
        self._stopping = True
        self.executor.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)  # before rclpy.shutdown, or the process may abort
        for node in self.nodes:  # stage nodes: cleanup did this, unless a signal shut the context down first
            stop_workers = getattr(node, 'stop_workers', None)   # (a hosted command_sink has no worker)
            if stop_workers is not None:
                stop_workers()
        for node in [*self.nodes, self.manager]:
            node.destroy_node()


def _run(stages, argv, autostart: bool = True) -> int:
    limit_malloc_arenas()  # a no-op repeat when started through nodes/entry.py (the executables)
    argv = list(argv)
    if '--autostart' in argv:
        argv.remove('--autostart')
        autostart = True
    threads = 1  # --executor-threads N: a MultiThreadedExecutor with N threads instead (N > 1)
    for arg in [a for a in argv if a.startswith('--executor-threads=')]:
        argv.remove(arg)
        threads = int(arg.split('=', 1)[1])
    rclpy.init(args=argv)
    pipeline = Pipeline(stages, args=argv, num_threads=threads)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pipeline.start()
    code = 0
    try:
        if autostart:
            pipeline.bring_up()
            pipeline.manager.get_logger().info(f'molmoact pipeline active: {", ".join(stages)}')
        while not stop.wait(0.5):
            pass
    except LifecycleError as exc:
        pipeline.manager.get_logger().error(f'bring-up failed: {exc}')
        code = 1
    finally:
        pipeline.bring_down()
        pipeline.stop()
        rclpy.try_shutdown()
    return code


def main(argv=None) -> int:
    """All three stages in one process."""
    return _run(PIPELINE_STAGES, sys.argv if argv is None else argv)


def perception_main(argv=None) -> int:
    return _run(('perception',), sys.argv if argv is None else argv, autostart=False)


def planner_main(argv=None) -> int:
    return _run(('trace_planner',), sys.argv if argv is None else argv, autostart=False)


def action_main(argv=None) -> int:
    return _run(('action_decoder',), sys.argv if argv is None else argv, autostart=False)


if __name__ == '__main__':
    sys.exit(main())
