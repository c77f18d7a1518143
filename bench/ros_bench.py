#!/usr/bin/env python3
"""ROS overhead of the pipeline and the memory of the three-node process (one run, loopback DDS).

1. Overhead per step: a 640x480 rgb8 frame is published, the pipeline runs perception -> trace -> actions,
   and the bench takes, per step, the time from publishing the frame to receiving its ActionChunk minus the
   engine's time for the three stages (their StageTiming.total_s: image preprocessing, prefill, decoding,
   parsing). What is left is ROS and node work: transport, image conversion and resizing, message building,
   handoff between the stages, scheduling. One frame is in flight at a time. Target <= 10 ms.
   Headline (unprefixed) figures: the ``pipeline`` executable in its own process, as users run it, with the
   camera and the receiver in the bench's process (as a camera driver and a command sink are). Figures
   prefixed ``in_process_probe_``: the nodes and the probe on one executor in one process.
2. Memory: peak RSS (VmHWM) of the pipeline executable (three lifecycle nodes, one process) after N steps,
   versus a plain Python process that loads the same engine and runs the same N steps with no ROS at all.
   Target <= 1.1x: the nodes share one engine (one copy of the weights). By default the model is a
   random-weight MolmoAct of about 0.3 B parameters (``--memory-model medium``) so that, as with the real
   7B, the weights dominate; ``tiny`` measures the 90 MB structural model, where Python/ROS libraries
   dominate instead.

    . scripts/ros_env.sh && python bench/ros_bench.py [--steps 10] [--layout both|process|inproc] [--memory-model medium|tiny]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def overhead(steps: int, tiny_dir: Path, layout: str, executor_threads: int = 1):
    """Per step: (seconds from publishing the frame to receiving its chunk, the three stages' StageTiming).

    ``layout`` ``process``: the ``pipeline`` executable in its own process (as users run it), the camera and
    the receiver in this one (as a camera driver and a command sink are). ``inproc``: the pipeline's nodes
    and the probe on one executor in this process (the probe's own work then adds to the pipeline's).
    """
    import rclpy
    from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from molmoact_ros.model.tiny import is_tiny_checkpoint, save_tiny_checkpoint
    from molmoact_ros.ros.image import numpy_to_image
    from molmoact_ros.ros.topics import LATCHED

    os.environ['MOLMOACT_TINY_DIR'] = str(tiny_dir)
    if not is_tiny_checkpoint(tiny_dir):
        save_tiny_checkpoint(tiny_dir)
    pipeline_args = ['-p', f'model:={tiny_dir}', '-p', 'max_free_tokens:=3', '-p', 'status_period_s:=1.0']
    rclpy.init()
    proc = pipeline = None
    if layout == 'process':
        exe = ROOT / 'install' / 'molmoact_ros' / 'lib' / 'molmoact_ros' / 'pipeline'
        proc = subprocess.Popen([str(exe), f'--executor-threads={executor_threads}', '--ros-args', *pipeline_args,
                                 '-r', '__ns:=/bench'],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = rclpy.create_node('bench_probe', namespace='/bench')
        executor = SingleThreadedExecutor()
        executor.add_node(probe)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
    else:
        from molmoact_ros.nodes.pipeline import Pipeline
        pipeline = Pipeline(args=['--ros-args', *pipeline_args])
        pipeline.start()
        probe = rclpy.create_node('bench_probe')
        pipeline.executor.add_node(probe)
    chunks, timings, arrived = [], {}, threading.Event()

    def on_chunk(msg):
        chunks.append((time.perf_counter(), msg))
        arrived.set()

    def on_stage(msg):
        timings.setdefault(msg.request_id, {})[msg.timing.stage] = msg.timing

    probe.create_subscription(ActionChunk, 'action_chunk', on_chunk, 10)
    probe.create_subscription(PerceptionTokens, 'perception_tokens', on_stage, 10)
    probe.create_subscription(TrajectoryTrace, 'trajectory_trace', on_stage, 10)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    info = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
    instruction = probe.create_publisher(String, 'instruction', LATCHED)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    results = []

    def send(i):
        msg = numpy_to_image(frames[i % len(frames)], 'rgb8')
        msg.header.stamp = probe.get_clock().now().to_msg()
        msg.header.frame_id = 'camera_color_optical_frame'
        info.publish(CameraInfo(header=msg.header, width=640, height=480,
                                k=[500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]))
        sent = time.perf_counter()
        camera.publish(msg)
        return sent

    try:
        if pipeline is not None:
            pipeline.bring_up()
        instruction.publish(String(data='put the red block in the bowl'))
        # Wait for the pipeline to come up (the separate process loads the model): a frame every 2 s until
        # the first chunk comes back (bounded).
        deadline = time.monotonic() + 300
        while not chunks and time.monotonic() < deadline and (proc is None or proc.poll() is None):
            send(0)
            arrived.wait(2.0)
        if not chunks:
            raise RuntimeError('the pipeline produced no action chunk within 300 s')
        time.sleep(1.0)
        for i in range(steps + 2):  # two warm-up steps
            arrived.clear()
            n = len(chunks)
            sent = send(i)
            if not arrived.wait(120) or len(chunks) <= n:
                raise RuntimeError('no action chunk within 120 s')
            received, chunk = chunks[n]
            time.sleep(0.3)  # let the pipeline go idle: one frame in flight at a time
            stages = dict(timings.get(chunk.request_id, {}), action=chunk.timing)
            if i >= 2 and len(stages) == 3:
                results.append((received - sent, stages))
    finally:
        if pipeline is not None:
            pipeline.bring_down()
            pipeline.stop()
        else:
            executor.shutdown()
            spinner.join(timeout=10)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        probe.destroy_node()
        rclpy.shutdown()
    return results


def summarize(results, name: str):
    e2e = np.array([dt for dt, _ in results])
    engine = np.array([sum(t.total_s for t in st.values()) for _, st in results])
    compute = np.array([sum(t.prefill_s + t.decode_s for t in st.values()) for _, st in results])
    ros = e2e - engine
    return [f'{name}steps_measured: {len(results)}',
            f'{name}step_latency_640x480_median: {np.median(e2e) * 1e3:.1f} ms',
            f'{name}engine_time_per_step_median: {np.median(engine) * 1e3:.1f} ms',
            f'{name}model_compute_per_step_median: {np.median(compute) * 1e3:.1f} ms',
            f'{name}outside_model_compute_per_step_median: {np.median(e2e - compute) * 1e3:.1f} ms',
            f'{name}ros_overhead_per_step_median: {np.median(ros) * 1e3:.1f} ms',
            f'{name}ros_overhead_per_step_p90: {np.percentile(ros, 90) * 1e3:.1f} ms']


ENGINE_ONLY = textwrap.dedent('''
    import sys, time, numpy as np, torch
    sys.path.insert(0, {src!r})
    from molmoact_ros.nodes.engine_provider import EngineProvider, ENGINE_PARAMETERS
    settings = {{p.name: p.default for p in ENGINE_PARAMETERS}}
    settings.update(model={model!r}, dtype='float32', max_free_tokens=3)
    engine = EngineProvider().acquire(settings)
    from molmoact_ros.reasoning.engine import Observation
    import cv2
    rng = np.random.default_rng(0)
    for i in range({steps}):
        frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        small = cv2.resize(frame, (336, 252), interpolation=cv2.INTER_AREA)
        engine.run(Observation(small), 'put the red block in the bowl')
    print('HWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
''')


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    raise RuntimeError('no VmHWM')


def memory(steps: int, model_dir: str):
    src = str(ROOT / 'src' / 'molmoact_ros')
    out = subprocess.run([sys.executable, '-c', ENGINE_ONLY.format(src=src, model=model_dir, steps=steps)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    engine_kb = int(out.stdout.split('HWM')[1].split()[0])

    import rclpy
    from molmoact_msgs.msg import ActionChunk
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from molmoact_ros.ros.topics import LATCHED
    from molmoact_ros.ros.image import numpy_to_image

    exe = ROOT / 'install' / 'molmoact_ros' / 'lib' / 'molmoact_ros' / 'pipeline'
    proc = subprocess.Popen([str(exe), '--ros-args', '-p', f'model:={model_dir}', '-p', 'dtype:=float32',
                             '-p', 'max_free_tokens:=3', '-r', '__ns:=/mem'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node('bench_mem_probe', namespace='/mem')
    got = []
    node.create_subscription(ActionChunk, 'action_chunk', got.append, 10)
    camera = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    node.create_publisher(String, 'instruction', LATCHED).publish(String(data='put the red block in the bowl'))
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 1800
    try:
        while len(got) < steps and time.monotonic() < deadline and proc.poll() is None:
            # a frame every 3 s until a chunk comes back (the pipeline may still be loading; the
            # perception node keeps only the newest frame, so extra frames are simply superseded)
            n = len(got)
            camera.publish(numpy_to_image(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), 'rgb8'))
            until = time.monotonic() + 3.0
            while len(got) == n and time.monotonic() < until and proc.poll() is None:
                rclpy.spin_once(node, timeout_sec=0.05)
        if len(got) < steps:
            raise RuntimeError(f'pipeline produced {len(got)} of {steps} chunks')
        pipeline_kb = vm_hwm_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        node.destroy_node()
        rclpy.shutdown()
    return engine_kb, pipeline_kb


def build_model(kind: str, folder: Path) -> str:
    from molmoact_ros.model.tiny import TinySpec, save_tiny_checkpoint
    spec = TinySpec() if kind == 'tiny' else TinySpec(vit_width=256, vit_layers=6, vit_heads=4, llm_width=1024,
                                                      llm_layers=6, llm_heads=8, llm_kv_heads=4, mlp=2816)
    return str(save_tiny_checkpoint(folder / kind, spec=spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--memory-model', choices=('medium', 'tiny'), default='medium')
    parser.add_argument('--skip-memory', action='store_true')
    parser.add_argument('--layout', choices=('process', 'inproc', 'both', 'none'), default='both',
                        help='where the camera and the receiver run (see overhead()); both: print both, the '
                             'separate-process figures last, unprefixed; none: memory only')
    parser.add_argument('--compare-executor', action='store_true',
                        help='also run the pipeline process on a 4-thread MultiThreadedExecutor (its default before '
                             'the fourth session) and print its figures (prefix multithreaded_executor_) and the ratio')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines = []
        if args.layout in ('inproc', 'both'):
            lines += summarize(overhead(args.steps, tmp / 'tiny', 'inproc'), 'in_process_probe_')
        if args.compare_executor:
            multi = overhead(args.steps, tmp / 'tiny', 'process', executor_threads=4)
            lines += summarize(multi, 'multithreaded_executor_')
        if args.layout in ('process', 'both'):
            single = overhead(args.steps, tmp / 'tiny', 'process')
            lines += summarize(single, '')
            if args.compare_executor:
                ros = [np.median([dt - sum(t.total_s for t in st.values()) for dt, st in rs]) for rs in (single, multi)]
                lines.append(f'ros_overhead_single_over_multithreaded_executor: {ros[0] / ros[1]:.3f} x')
        if not args.skip_memory:
            model_dir = build_model(args.memory_model, tmp)
            engine_kb, pipeline_kb = memory(max(3, args.steps // 2), model_dir)
            lines += [f'memory_model: {args.memory_model}',
                      f'engine_alone_peak_rss: {engine_kb / 1024:.0f} MiB',
                      f'pipeline_three_nodes_peak_rss: {pipeline_kb / 1024:.0f} MiB',
                      f'pipeline_extra_rss: {(pipeline_kb - engine_kb) / 1024:.0f} MiB',
                      f'pipeline_over_engine_rss: {pipeline_kb / engine_kb:.3f} x',
                      # an estimate, not a measurement: the same extra memory next to a 7B engine in bf16
                      # (about 15.2 GiB of weights + runtime; the extra is ROS, the nodes and the retained
                      # sessions, whose KV caches grow with the model: about 35 MiB more per retained request,
                      # 2 by default: node parameter retained_requests)
                      f'estimate_7b_bf16_pipeline_over_engine_rss: '
                      f'{(15.2 * 1024 + (pipeline_kb - engine_kb) / 1024 + 70) / (15.2 * 1024):.3f} x']
        print('\n'.join(lines))


if __name__ == '__main__':
    main()
