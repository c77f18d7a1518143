"""Offline demo: the whole pipeline on a synthetic camera, no robot, no GPU, no download.

    install/molmoact_ros/lib/molmoact_ros/demo [--steps N] [--output DIR] [--model tiny|PATH|HUB_ID]

Starts the three stage nodes in one process (the ``pipeline`` layout), publishes a rendered tabletop scene
as the camera and an instruction, and lets the pipeline run ``--steps`` perceive -> plan -> act cycles.
It writes the annotated views (PNG), every message of the run as JSON lines, and a summary (steps,
per-stage latency, drops, errors) to the output folder and prints where they are.

With the default ``--model tiny`` the model is the random-weight *structural* test model: the traces and
actions it produces are well-formed but meaningless. Point ``--model`` at a real checkpoint on a GPU
machine to see MolmoAct itself. (A simulated arm that executes the actions is a later addition.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def render_scene(width: int = 320, height: int = 240, t: float = 0.0) -> np.ndarray:
    """A simple synthetic tabletop (RGB uint8): wall, table, a red block, a blue bowl, a gripper."""
    import cv2
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (205, 210, 215)
    table_top = int(height * 0.45)
    img[table_top:] = (150, 110, 70)
    cv2.rectangle(img, (int(width * 0.2), int(height * 0.6)), (int(width * 0.3), int(height * 0.72)),
                  (200, 30, 30), -1)
    cv2.ellipse(img, (int(width * 0.7), int(height * 0.68)), (int(width * 0.09), int(height * 0.05)), 0, 0, 360,
                (40, 60, 190), -1)
    gx = int(width * (0.45 + 0.05 * np.sin(t)))
    cv2.rectangle(img, (gx - 12, int(height * 0.2)), (gx + 12, int(height * 0.3)), (60, 60, 60), -1)
    return img


def _summarise(kind: str, msg) -> dict:
    base = {'kind': kind, 'request_id': msg.request_id, 'stamp': msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9}
    if kind == 'perception_tokens':
        base.update(depth_codes=list(msg.depth_codes), total_s=msg.timing.total_s, prefill_tokens=msg.timing.prefill_tokens)
    elif kind == 'trajectory_trace':
        base.update(points_model=[(p.x_model, p.y_model) for p in msg.points],
                    points_px=[(round(p.u_px, 1), round(p.v_px, 1)) for p in msg.points], source=msg.source,
                    revision=msg.revision, total_s=msg.timing.total_s)
    elif kind == 'action_chunk':
        base.update(steps=[{'translation_m': [s.translation_m.x, s.translation_m.y, s.translation_m.z],
                            'rotation_rad': [s.rotation_rad.x, s.rotation_rad.y, s.rotation_rad.z],
                            'gripper': s.gripper} for s in msg.steps],
                    unnorm_key=msg.unnorm_key, total_s=msg.timing.total_s)
    return base


def run(steps: int, output: Path, model: str, instruction: str, timeout_s: float = 600.0) -> dict:
    import rclpy
    from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ..ros.image import image_to_numpy, numpy_to_image
    from .pipeline import Pipeline

    output.mkdir(parents=True, exist_ok=True)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    rclpy.init()
    pipeline = Pipeline(args=['--ros-args', '-r', '__ns:=/demo', '-p', f'model:={model}',
                              '-p', 'max_free_tokens:=16', '-p', 'max_image_side_px:=256'])
    probe = rclpy.create_node('demo_camera', namespace='/demo')
    pipeline.executor.add_node(probe)
    log = (output / 'messages.jsonl').open('w')
    got = {'perception_tokens': [], 'trajectory_trace': [], 'action_chunk': [], 'trace_image': []}

    def record(kind):
        def cb(msg):
            got[kind].append(msg)
            if kind != 'trace_image':
                log.write(json.dumps(_summarise(kind, msg)) + '\n')
        return cb

    for kind, typ in (('perception_tokens', PerceptionTokens), ('trajectory_trace', TrajectoryTrace),
                      ('action_chunk', ActionChunk), ('trace_image', Image)):
        probe.create_subscription(typ, kind, record(kind), 10)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    instruction_pub = probe.create_publisher(String, 'instruction', latched)
    start = time.monotonic()

    def publish_frame():
        msg = numpy_to_image(render_scene(t=time.monotonic() - start), 'rgb8')
        msg.header.stamp = probe.get_clock().now().to_msg()
        msg.header.frame_id = 'camera_color_optical_frame'
        camera.publish(msg)

    probe.create_timer(1 / 15, publish_frame)  # a 15 Hz camera
    pipeline.start()
    summary = {'model': model, 'instruction': instruction, 'steps_requested': steps,
               'structural_model': model == 'tiny'}
    try:
        pipeline.bring_up()
        instruction_pub.publish(String(data=instruction))
        deadline = time.monotonic() + timeout_s
        while len(got['action_chunk']) < steps and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # let the last annotated image arrive
        import cv2
        for i, img in enumerate(got['trace_image'][:steps]):
            cv2.imwrite(str(output / f'trace_{i:03d}.png'), cv2.cvtColor(np.asarray(image_to_numpy(img)),
                                                                          cv2.COLOR_RGB2BGR))
        nodes = {n.get_name(): n for n in pipeline.nodes}
        summary.update(
            steps_completed=len(got['action_chunk']),
            wall_s=round(time.monotonic() - start, 2),
            stage_latency_s={kind: [round(m.timing.total_s, 4) for m in got[kind]]
                             for kind in ('perception_tokens', 'trajectory_trace', 'action_chunk')},
            frames_dropped=nodes['perception'].inputs_dropped,
            errors={name: node.errors for name, node in nodes.items()},
            last_errors={name: node.last_error for name, node in nodes.items() if node.last_error},
            files=sorted(p.name for p in output.iterdir()))
    finally:
        pipeline.bring_down()
        pipeline.executor.remove_node(probe)
        probe.destroy_node()
        pipeline.stop()
        rclpy.try_shutdown()
        log.close()
    (output / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='MolmoAct pipeline on a synthetic camera (offline).')
    parser.add_argument('--steps', type=int, default=3, help='perceive -> plan -> act cycles to run')
    parser.add_argument('--output', type=Path, default=Path('out/demo'))
    parser.add_argument('--model', default='tiny', help='tiny (random-weight structural model), a checkpoint '
                        'directory or a hub id')
    parser.add_argument('--instruction', default='put the red block in the blue bowl')
    parser.add_argument('--timeout', type=float, default=600.0)
    args = parser.parse_args(argv)
    summary = run(args.steps, args.output, args.model, args.instruction, args.timeout)
    print(f"demo: {summary['steps_completed']}/{args.steps} steps in {summary['wall_s']} s; "
          f"outputs in {args.output.resolve()}: {', '.join(summary['files'])}")
    if summary['structural_model']:
        print('demo: model "tiny" has random weights (a structural test model): its traces and actions are '
              'well-formed but meaningless')
    return 0 if summary['steps_completed'] >= args.steps else 1


if __name__ == '__main__':
    sys.exit(main())
