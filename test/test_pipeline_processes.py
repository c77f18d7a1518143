"""The stages in separate processes (the installed executables): perception in one process, planner and
action decoder in another; the later stages rebuild each request from the messages (stateless handoff)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from molmoact_ros.model.tiny import save_tiny_checkpoint
from molmoact_ros.ros.image import numpy_to_image

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / 'install' / 'molmoact_ros' / 'lib' / 'molmoact_ros'
from molmoact_ros.ros.topics import LATCHED
LIMIT_S = 120.0


def start(executable, tiny, *extra, threads=1):
    # --executor-threads: the one stage that spins rclpy's MultiThreadedExecutor (the others: single-threaded)
    args = [str(BIN / executable), '--autostart', f'--executor-threads={threads}', '--ros-args', '-r', '__ns:=/cell',
            '-p', f'model:={tiny}', '-p', 'max_free_tokens:=3', '-p', 'max_image_side_px:=64', *extra]
    return subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_stages_in_separate_processes(tmp_path):
    tiny = save_tiny_checkpoint(tmp_path / 'tiny')
    procs = [start('perception_node', tiny), start('trace_planner_node', tiny, threads=2),
             start('action_decoder_node', tiny)]
    rclpy.init()
    node = rclpy.create_node('probe', namespace='/cell')
    got = {'p': [], 't': [], 'a': []}
    node.create_subscription(PerceptionTokens, 'perception_tokens', got['p'].append, 10)
    node.create_subscription(TrajectoryTrace, 'trajectory_trace', got['t'].append, 10)
    node.create_subscription(ActionChunk, 'action_chunk', got['a'].append, 10)
    camera = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    instruction = node.create_publisher(String, 'instruction', LATCHED)
    frame = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    try:
        instruction.publish(String(data='open the drawer'))
        end = time.monotonic() + LIMIT_S
        last = 0.0
        while not got['a'] and time.monotonic() < end and all(p.poll() is None for p in procs):
            if time.monotonic() - last > 0.2:
                instruction.publish(String(data='open the drawer'))  # robust to late discovery
                msg = numpy_to_image(frame, 'rgb8')
                msg.header.frame_id = 'cam_optical'
                msg.header.stamp = node.get_clock().now().to_msg()
                camera.publish(msg)
                last = time.monotonic()
            rclpy.spin_once(node, timeout_sec=0.05)
        assert got['a'], f'no action chunk (perception {len(got["p"])}, traces {len(got["t"])}); outputs:\n' + '\n'.join(
            (p.kill(), p.communicate(timeout=10)[0][-2000:])[1] for p in procs)
        a = got['a'][0]
        t = next(x for x in got['t'] if x.request_id == a.request_id)
        p = next(x for x in got['p'] if x.request_id == a.request_id)
        assert not t.timing.cache_reused and not a.timing.cache_reused  # rebuilt from the messages
        assert t.answer_text.startswith(p.answer_text) and len(a.steps) == 1
    finally:
        for proc in procs:
            proc.send_signal(2)  # SIGINT: deactivate, clean up, shut down
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    assert all(proc.returncode == 0 for proc in procs), [proc.returncode for proc in procs]
