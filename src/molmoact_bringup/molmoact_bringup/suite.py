"""The whole suite on the simulated arm, as a user runs it, in named steps: what ``demo`` and ``evaluate``
share.

:class:`SuiteSession` starts ``sim_arm`` in a process of its own (namespace ``config.namespace``), hosts in
this process on one executor the pipeline's three stage nodes (optional: the scripted policy needs none),
the command sink (robot profile, execution enabled) and a probe node for the caller's subscriptions, and
brings them up, bounded in time at every step::

    with SuiteSession(config) as suite:      # start(): sim process, rclpy, nodes, executor
        suite.wait_for_sim()                 # first image and joint state
        suite.bring_up()                     # lifecycle: configure + activate pipeline and sink
        suite.run_goal(...)                  # one ExecuteInstruction goal, bounded
    # close(): bring down, stop the executor, stop the sim process (SIGINT, then SIGKILL)

Nothing here decides anything about a task; the caller watches topics through :attr:`SuiteSession.probe`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

__all__ = ['SuiteConfig', 'SuiteSession', 'wait_until', 'ros_parameter_args', 'GOAL_OUTCOMES']

#: ExecuteInstruction result outcomes by value (molmoact_msgs/action/ExecuteInstruction).
GOAL_OUTCOMES = {0: 'completed', 1: 'canceled', 2: 'timed_out', 3: 'failed', 4: 'rejected'}


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passed; its last value."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())


def die_with_parent() -> None:
    """``preexec_fn`` of a child process: on Linux the kernel sends it SIGTERM when this process dies, however it
    dies (SIGKILL included), so a simulator started in its own session is never left running on its own (it was:
    an ``evaluate`` stopped from outside left ``sim_arm`` rendering at 60 % CPU for 40 minutes). A no-op elsewhere."""
    if sys.platform.startswith('linux'):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def ros_parameter_args(parameters: Dict[str, object]) -> List[str]:
    """``{'a': True, 'b': 2}`` -> ``['-p', 'a:=true', '-p', 'b:=2']``."""
    out: List[str] = []
    for key, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out += ['-p', f'{key}:={text}']
    return out


@dataclass
class SuiteConfig:
    """What to start. ``*_parameters`` are ROS parameters of each part (name -> value)."""

    namespace: str = '/demo'
    output: Path = Path('demo_output')
    sim_parameters: Dict[str, object] = field(default_factory=dict)
    pipeline_parameters: Dict[str, object] = field(default_factory=dict)
    sink_parameters: Dict[str, object] = field(default_factory=dict)
    profile_path: Optional[Path] = None
    with_pipeline: bool = True
    with_sink: bool = True
    sim_log_name: str = 'sim_arm.log'
    probe_name: str = 'suite'

    def __post_init__(self):
        if not self.namespace.startswith('/'):
            self.namespace = '/' + self.namespace


def load_sink_class():
    """The command sink class and '' , or None and why it cannot be imported."""
    try:
        from molmoact_ros.nodes.command_sink import CommandSinkNode
    except ImportError as exc:
        return None, f'{type(exc).__name__}: {exc}'
    return CommandSinkNode, ''


class SuiteSession:
    """The running suite (see module docstring). Use as a context manager, or call :meth:`start` and
    :meth:`close` yourself."""

    def __init__(self, config: SuiteConfig):
        self.config = config
        self.sim: Optional[subprocess.Popen] = None
        self.pipeline = None
        self.sink = None
        self.sink_missing = ''
        self.probe = None
        self._sim_log = None
        self._rclpy_started = False

    @property
    def sim_log_path(self) -> Path:
        return Path(self.config.output) / self.config.sim_log_name

    # -- steps ----------------------------------------------------------------------------------------------
    def start(self) -> 'SuiteSession':
        """Start the simulator process and create this process's nodes (nothing is configured yet)."""
        import rclpy

        from molmoact_ros.nodes.pipeline import PIPELINE_STAGES, Pipeline
        from molmoact_ros.ros.dds import apply_loopback_dds_env

        apply_loopback_dds_env()  # nothing leaves loopback, whoever started us
        cfg = self.config
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
        self._sim_log = self.sim_log_path.open('w')
        cmd = [sys.executable, '-m', 'molmoact_bringup.sim_arm_node', '--ros-args', '-r', f'__ns:={cfg.namespace}',
               *ros_parameter_args(cfg.sim_parameters)]
        self.sim = subprocess.Popen(cmd, stdout=self._sim_log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent)
        rclpy.init()
        self._rclpy_started = True
        ns_args = ['--ros-args', '-r', f'__ns:={cfg.namespace}']
        # The pipeline object owns the executor and the lifecycle manager even when it hosts no stage node.
        self.pipeline = Pipeline(args=ns_args + ros_parameter_args(cfg.pipeline_parameters),
                                 stages=PIPELINE_STAGES if cfg.with_pipeline else ())
        if cfg.with_sink:
            sink_cls, self.sink_missing = load_sink_class()
            if sink_cls is not None:
                params = dict(cfg.sink_parameters)
                if cfg.profile_path is not None:
                    params.setdefault('robot_profile', str(cfg.profile_path))
                params.setdefault('execution_enabled', True)
                self.sink = sink_cls('command_sink', cli_args=ns_args + ros_parameter_args(params))
                self.pipeline.executor.add_node(self.sink)
        else:
            self.sink_missing = 'not started'
        self.probe = rclpy.create_node(cfg.probe_name, namespace=cfg.namespace)
        self.pipeline.executor.add_node(self.probe)
        return self

    def spin(self) -> None:
        """Start spinning the executor on its thread (subscriptions of the probe start receiving)."""
        self.pipeline.start()

    def sim_alive(self) -> bool:
        return self.sim is not None and self.sim.poll() is None

    def wait_for_sim(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``ready()`` (e.g. an image and a joint state arrived); RuntimeError naming the log."""
        ok = wait_until(lambda: ready() or not self.sim_alive(), timeout_s)
        if not ok or not self.sim_alive():
            why = 'exited' if not self.sim_alive() else f'sent nothing within {timeout_s:g} s'
            raise RuntimeError(f'the simulated arm {why} (see {self.sim_log_path})')

    def bring_up(self, timeout_s: float = 60.0) -> None:
        """Configure and activate the stage nodes and the sink."""
        from molmoact_ros.ros.lifecycle import LifecycleClient, bring_up
        if self.config.with_pipeline:
            self.pipeline.bring_up()
        if self.sink is not None:
            bring_up([LifecycleClient(self.pipeline.manager, self.sink.get_fully_qualified_name(), spinning=True,
                                      timeout_s=timeout_s)])

    def run_goal(self, client, instruction: str, max_steps: int, timeout_s: float,
                 stop: Optional[Callable[[], bool]] = None, poll_s: float = 0.05) -> dict:
        """Send one ExecuteInstruction goal (execute) and wait for its result, bounded by ``timeout_s`` + 10 s.

        ``stop()``: polled while the goal runs; when it holds, the goal is cancelled (e.g. the task
        succeeded) and the result is awaited. Returns outcome, reason, steps_completed, stopped and (when a
        result came) last_request_id."""
        import rclpy
        from molmoact_msgs.action import ExecuteInstruction
        goal = ExecuteInstruction.Goal(instruction=instruction, max_steps=int(max_steps), timeout_s=float(timeout_s),
                                       execute=True)
        future = client.send_goal_async(goal)
        if not wait_until(lambda: future.done() or not rclpy.ok(), 30.0) or not future.done() \
                or not future.result().accepted:
            return {'outcome': 'rejected', 'reason': 'the execute_instruction goal was not accepted',
                    'steps_completed': 0, 'stopped': False}
        handle = future.result()
        result_future = handle.get_result_async()
        stopped = False
        end = time.monotonic() + timeout_s + 10.0
        while not result_future.done() and time.monotonic() < end:
            if not rclpy.ok():
                # SIGINT / SIGTERM shut the context down: no result can come any more (the goal ran on until
                # its timeout, minutes, before this returned).
                return {'outcome': 'interrupted', 'reason': 'ROS was shut down (a signal) while the goal ran',
                        'steps_completed': 0, 'stopped': stopped}
            if not stopped and stop is not None and stop():
                stopped = True
                handle.cancel_goal_async()
                end = min(end, time.monotonic() + 10.0)
            time.sleep(poll_s)
        if not result_future.done():
            return {'outcome': 'no_result', 'reason': f'no result within {timeout_s + 10:g} s', 'steps_completed': 0,
                    'stopped': stopped}
        r = result_future.result().result
        return {'outcome': GOAL_OUTCOMES.get(r.outcome, str(r.outcome)), 'reason': r.reason,
                'steps_completed': int(r.steps_completed), 'stopped': stopped,
                'last_request_id': str(r.last_request_id)}

    def node_counters(self) -> Dict[str, dict]:
        nodes = list(self.pipeline.nodes) if self.pipeline is not None and self.config.with_pipeline else []
        if self.sink is not None:
            nodes.append(self.sink)
        return {n.get_name(): {'inputs_received': n.inputs_received, 'inputs_dropped': n.inputs_dropped,
                               'errors': n.errors, 'last_error': n.last_error} for n in nodes}

    def close(self) -> None:
        """Bring everything down and stop the simulator (bounded: SIGINT, then SIGKILL after 10 s)."""
        import rclpy
        try:
            if rclpy.ok():
                self._bring_down()
            # else a signal shut the context down: no lifecycle service can be called and nothing published
            # any more (each try failed: 'rcl node's context is invalid'); the sink stops sending with the
            # executor, and the simulator is stopped below.
            if self.pipeline is not None:
                for node in (self.probe, self.sink):
                    if node is not None:
                        self.pipeline.executor.remove_node(node)
                self.pipeline.stop()
            for node in (self.probe, self.sink):
                if node is not None:
                    node.destroy_node()
        finally:
            if self._rclpy_started:
                rclpy.try_shutdown()
            self._stop_sim()

    def _bring_down(self) -> None:
        """Deactivate and clean up the sink, then the stage nodes, through their lifecycle services (failures
        are reported, not raised: everything else still has to stop)."""
        from molmoact_ros.ros.lifecycle import LifecycleClient, walk
        if self.sink is not None and self.sink.lifecycle_label == 'active':
            try:
                walk([LifecycleClient(self.pipeline.manager, self.sink.get_fully_qualified_name(), spinning=True)],
                     ['deactivate', 'cleanup'])
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                print(f'suite: command sink bring-down: {exc}', file=sys.stderr)
        if self.pipeline is not None and self.config.with_pipeline:
            try:
                self.pipeline.bring_down()
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                print(f'suite: pipeline bring-down: {exc}', file=sys.stderr)

    def _stop_sim(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            os.killpg(self.sim.pid, signal.SIGINT)
            try:
                self.sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.sim.pid, signal.SIGKILL)
                self.sim.wait()
        if self._sim_log is not None:
            self._sim_log.close()
            self._sim_log = None

    def __enter__(self) -> 'SuiteSession':
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
