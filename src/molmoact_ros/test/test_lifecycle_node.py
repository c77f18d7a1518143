"""A MolmoActLifecycleNode walks configure -> activate -> deactivate -> cleanup -> shutdown, driven by
LifecycleClient, in one process and across processes; it publishes only while active, reports its
state on ~/status, and survives bad input."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from molmoact_msgs.msg import NodeStatus
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import Int32, String

from molmoact_ros.nodes.base import STATUS_QOS
from molmoact_ros.ros.lifecycle import LifecycleClient, LifecycleError, bring_up, walk
from pkg_helpers.counter_node import CounterNode

HERE = Path(__file__).resolve().parent
LIMIT_S = 20.0


def wait_for(predicate, timeout=LIMIT_S, period=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class Observer:
    """Manager-side node recording the counter's ~/count and ~/status."""

    def __init__(self, target):
        self.node = rclpy.create_node('observer')
        self.counts, self.statuses = [], []
        self.node.create_subscription(Int32, f'/{target}/count', lambda m: self.counts.append(m.data), 50)
        self.node.create_subscription(NodeStatus, f'/{target}/status', self.statuses.append, STATUS_QOS)
        self.input = self.node.create_publisher(String, f'/{target}/input', 10)

    def quiet_for(self, seconds):
        """True when no count arrives for `seconds`."""
        before = len(self.counts)
        time.sleep(seconds)
        return len(self.counts) == before

    def last_status(self):
        return self.statuses[-1] if self.statuses else None


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def in_process(ros):
    """A counter node and an observer spun by a multi-threaded executor in a background thread."""
    made = []

    def make(name):
        counter = CounterNode(name)
        obs = Observer(name)
        client = LifecycleClient(obs.node, name, spinning=True, timeout_s=LIMIT_S)
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(counter)
        executor.add_node(obs.node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        made.append((executor, spin, counter, obs))
        return counter, obs, client

    yield make
    for executor, spin, counter, obs in made:
        executor.shutdown()
        spin.join(timeout=10)  # join before rclpy.shutdown (see notes: abort otherwise)
        counter.destroy_node()
        obs.node.destroy_node()


def test_transitions_in_one_process(in_process):
    counter, obs, client = in_process('counter')
    client.wait_for_services()
    assert client.get_state()[1] == 'unconfigured'
    with pytest.raises(LifecycleError, match="'activate' not available in state 'unconfigured'"):
        client.change_state('activate')

    r = client.change_state('configure')
    assert (r.success, r.state_after) == (True, 'inactive')
    assert wait_for(lambda: obs.last_status() is not None and obs.last_status().lifecycle_label == 'inactive')
    assert obs.quiet_for(0.3) and obs.counts == []  # inactive: the lifecycle publisher is off
    obs.input.publish(String(data='ignored while inactive'))
    assert wait_for(lambda: counter.inputs_dropped == 1)

    r = client.change_state('activate')
    assert (r.success, r.state_after) == (True, 'active')
    assert wait_for(lambda: len(obs.counts) >= 3)
    assert wait_for(lambda: obs.last_status().lifecycle_state == NodeStatus().lifecycle_state + 3)

    # bad input: recorded, shown on ~/status, node keeps running and keeps publishing
    obs.input.publish(String(data='bad'))
    assert wait_for(lambda: counter.errors == 1)
    assert wait_for(lambda: 'bad input' in obs.last_status().last_error)
    n = len(obs.counts)
    assert wait_for(lambda: len(obs.counts) > n + 2)
    obs.input.publish(String(data='good'))
    assert wait_for(lambda: obs.last_status().requests_completed == 1)
    assert obs.last_status().execution_enabled is False  # no node but a sink may ever say True

    r = client.change_state('deactivate')
    assert (r.success, r.state_after) == (True, 'inactive')
    time.sleep(0.1)  # let in-flight messages land
    assert obs.quiet_for(0.4), 'published while inactive'

    assert client.change_state('cleanup').state_after == 'unconfigured'
    assert client.change_state('shutdown').state_after == 'finalized'
    assert wait_for(lambda: obs.last_status().lifecycle_label == 'finalized')
    assert counter.lifecycle_label == 'finalized'


def test_reconfigure_after_cleanup_resets_counters(in_process):
    counter, obs, client = in_process('counter2')
    bring_up([client])
    obs.input.publish(String(data='bad'))
    assert wait_for(lambda: counter.errors == 1)
    results = walk([client], ['deactivate', 'cleanup', 'configure', 'activate', 'deactivate',
                              'activate', 'deactivate', 'cleanup', 'shutdown'])
    assert [r.state_after for r in results] == ['inactive', 'unconfigured', 'inactive', 'active',
                                                'inactive', 'active', 'inactive', 'unconfigured',
                                                'finalized']
    assert counter.errors == 0 and counter.last_error == ''  # configure starts afresh


def test_transitions_across_processes(ros):
    env = dict(os.environ)
    env['PYTHONPATH'] = str(HERE) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.Popen([sys.executable, str(HERE / 'pkg_helpers' / 'counter_node.py'),
                             'remote_counter', str(LIMIT_S * 3)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    obs = Observer('remote_counter')
    try:
        client = LifecycleClient(obs.node, '/remote_counter', timeout_s=LIMIT_S)
        results = bring_up([client])
        assert [(r.transition, r.state_after) for r in results] == [('configure', 'inactive'),
                                                                    ('activate', 'active')]
        end = time.monotonic() + LIMIT_S
        while len(obs.counts) < 3 and time.monotonic() < end:
            rclpy.spin_once(obs.node, timeout_sec=0.05)
        assert len(obs.counts) >= 3, 'no counts from the active remote node'
        results = walk([client], ['deactivate', 'cleanup', 'shutdown'])
        assert [r.state_after for r in results] == ['inactive', 'unconfigured', 'finalized']
        assert proc.wait(timeout=LIMIT_S) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        obs.node.destroy_node()


def test_error_texts_are_bounded(ros):
    """Issue 15: an error echoing a 100 KB request id was a 100 KB line on ~/status, re-published every period."""
    node = CounterNode('bounded')
    try:
        node.record_error(f'request {"x" * 100_000!r} failed')
        assert node.errors == 1 and len(node.last_error) < 1100 and node.last_error.endswith('chars)')
        assert node.build_status().last_error == node.last_error
    finally:
        node.destroy_node()


def test_recording_an_error_after_the_context_shut_down_does_not_raise():
    """SIGINT / SIGTERM shuts the context down under running worker threads; the error one of them records
    then cannot be published, and must not kill the thread (an evaluate run hung on exactly that)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = CounterNode('late', context=context)
    try:
        rclpy.shutdown(context=context)
        node.record_error('the goal was cut off')
        assert node.errors == 1 and node.last_error == 'the goal was cut off'
    finally:
        node.destroy_node()
