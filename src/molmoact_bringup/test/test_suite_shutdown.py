"""A signal (SIGINT / SIGTERM) shuts rclpy's context down under a running evaluation. Found on a takeover run: the
main thread went on waiting for the goal's result (it cannot come any more) until the goal's timeout, minutes,
and the bring-down then raised on the dead context, so no results.json was written."""

import rclpy
from rclpy.task import Future

from molmoact_bringup.suite import SuiteConfig, SuiteSession


class _Handle:
    accepted = True

    def __init__(self):
        self.cancelled = False
        self.result_future = Future()  # never completes: the action server's context is gone

    def get_result_async(self):
        return self.result_future

    def cancel_goal_async(self):
        self.cancelled = True


class _Client:
    def __init__(self):
        self.handle = _Handle()

    def send_goal_async(self, goal):
        future = Future()
        future.set_result(self.handle)
        return future


def test_run_goal_returns_interrupted_once_the_context_is_shut_down(tmp_path):
    assert not rclpy.ok()  # no context: as after the signal handler's shutdown
    session = SuiteSession(SuiteConfig(output=str(tmp_path)))
    # Before the fix this waited timeout_s + 10 s and returned 'no_result'.
    result = session.run_goal(_Client(), 'pick up the red cube', 1, timeout_s=0.5)
    assert result['outcome'] == 'interrupted' and result['steps_completed'] == 0
    assert 'shut down' in result['reason']


def test_close_after_the_context_is_shut_down_stops_without_raising(tmp_path):
    """The stage nodes (unconfigured) in their executor, then the signal: close() must not try lifecycle services
    on the dead context (it raised 'rcl node's context is invalid' and results.json was never written)."""
    from molmoact_ros.nodes.pipeline import PIPELINE_STAGES, Pipeline
    session = SuiteSession(SuiteConfig(output=str(tmp_path), namespace='/shutdown_test'))
    rclpy.init()
    session._rclpy_started = True
    session.pipeline = Pipeline(args=['--ros-args', '-r', '__ns:=/shutdown_test'], stages=PIPELINE_STAGES)
    session.probe = rclpy.create_node('probe', namespace='/shutdown_test')
    session.pipeline.executor.add_node(session.probe)
    session.spin()
    rclpy.shutdown()
    session.close()
    assert not rclpy.ok()


def test_close_after_the_signal_waits_for_a_stage_call_in_progress(tmp_path):
    """A signal skips the lifecycle bring-down, which is what stopped the stage workers: a worker still inside the
    model when the interpreter ended was killed there and the process aborted (rc 134, 'terminate called without
    an active exception', seen in gdb in torch's linear). close() now stops the workers after their call."""
    import threading

    from molmoact_ros.nodes.pipeline import PIPELINE_STAGES, Pipeline
    from molmoact_ros.ros.handoff import StageWorker
    session = SuiteSession(SuiteConfig(output=str(tmp_path), namespace='/shutdown_test2'))
    rclpy.init()
    session._rclpy_started = True
    session.pipeline = Pipeline(args=['--ros-args', '-r', '__ns:=/shutdown_test2'], stages=PIPELINE_STAGES)
    node = session.pipeline.nodes[0]
    node._worker = worker = StageWorker('busy', on_error=lambda name, exc: None)
    started, finished = threading.Event(), []

    def model_call():  # stands for a forward pass: long enough that close() reaches the join while it runs
        started.set()
        threading.Event().wait(0.5)
        finished.append(True)

    worker.submit(model_call)
    assert started.wait(30.0)
    session.spin()
    rclpy.shutdown()
    session.close()
    assert finished == [True] and not worker.running
