"""Messages and a service of molmoact_msgs cross a process boundary intact (DDS on loopback)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from geometry_msgs.msg import Point32
from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
from molmoact_msgs.srv import EditTrace
from std_msgs.msg import String
from suite_helpers import samples

HERE = Path(__file__).resolve().parent
from molmoact_ros.ros.topics import LATCHED
LIMIT_S = 30.0


@pytest.fixture
def publisher_process():
    env = dict(os.environ)
    env['PYTHONPATH'] = str(HERE) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.Popen([sys.executable, str(HERE / 'suite_helpers' / 'publish_samples.py'), str(LIMIT_S)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_messages_and_service_round_trip_between_processes(publisher_process):
    rclpy.init()
    node = rclpy.create_node('roundtrip_subscriber')
    try:
        got = {}
        for key, typ in (('perception', PerceptionTokens), ('trace', TrajectoryTrace), ('actions', ActionChunk)):
            node.create_subscription(typ, f'roundtrip/{key}', lambda m, k=key: got.__setitem__(k, m), LATCHED)
        client = node.create_client(EditTrace, 'roundtrip/edit_trace')
        deadline = time.monotonic() + LIMIT_S
        while len(got) < 3 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert set(got) == {'perception', 'trace', 'actions'}, (
            f'received only {sorted(got)}; publisher said: {publisher_process.stdout.read() if publisher_process.poll() is not None else "(running)"}')

        # Field-by-field equality with the same samples built here (images, arrays, strings, constants).
        assert got['perception'] == samples.perception()
        assert got['trace'] == samples.trace()
        assert got['actions'] == samples.actions()
        p = got['perception']
        assert len(p.depth_codes) == p.depth_rows * p.depth_cols == 100
        assert max(p.depth_codes) <= 127
        assert len(p.image.data) == p.image.height * p.image.step == 256 * 256 * 3
        assert len(got['actions'].steps) == 8 and len(got['actions'].steps[0].bins) == 7
        assert got['actions'].action_text.startswith('[[ðŁİĳ')  # non-ASCII token strings survive

        assert client.wait_for_service(timeout_sec=LIMIT_S)
        req = EditTrace.Request(request_id='req-7', coordinates=EditTrace.Request.COORDS_MODEL,
                                points=[Point32(x=10.0, y=20.0), Point32(x=30.0, y=40.0)], act=True)
        future = client.call_async(req)
        rclpy.spin_until_future_complete(node, future, timeout_sec=LIMIT_S)
        assert future.done(), 'EditTrace call did not complete'
        res = future.result()
        assert res.success and res.message == '2 points for req-7'
        assert res.trace.request_id == 'req-7' and len(res.trace.points) == 3

        ack = node.create_publisher(String, 'roundtrip/ack', LATCHED)
        ack.publish(String(data='ok'))
        end = time.monotonic() + LIMIT_S
        while publisher_process.poll() is None and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert publisher_process.returncode == 0
    finally:
        node.destroy_node()
        rclpy.shutdown()
