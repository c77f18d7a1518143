"""Small synthetic episodes for the dataset-builder tests: the simulated Panda (ROS-free) driven along a
joint trajectory, its topics written through the demo's McapRecorder with the same names and types as
``sim_arm`` publishes (CDR via mcap_ros2, ros2msg schemas from the installed .msg files).

``record_sim_episode`` takes faults to inject (a topic left out, a NaN pose, a depth stamp offset), so the
bad-input tests use the same recordings as the good ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np

from molmoact_bringup.demo.msgdefs import schema_text
from molmoact_bringup.demo.recording import McapRecorder
from mcap_ros2._dynamic import serialize_dynamic

TYPES = {
    'image': 'sensor_msgs/msg/Image', 'aligned_depth': 'sensor_msgs/msg/Image',
    'camera_info': 'sensor_msgs/msg/CameraInfo', 'joint_states': 'sensor_msgs/msg/JointState',
    'sim_arm/ee_pose': 'geometry_msgs/msg/PoseStamped', 'sim_arm/camera_pose': 'geometry_msgs/msg/PoseStamped',
    'instruction': 'std_msgs/msg/String', 'sim_arm/task_state': 'molmoact_msgs/msg/TaskState',
    'gripper_controller/commands': 'std_msgs/msg/Float64MultiArray',
    'action_chunk': 'molmoact_msgs/msg/ActionChunk', 'expert/action_chunk': 'molmoact_msgs/msg/ActionChunk',
}


class TopicWriter:
    """Encode dict messages with mcap_ros2 and append them through a McapRecorder."""

    def __init__(self, path: Path, namespace: str = '/demo', skip: Iterable[str] = ()):
        self.rec = McapRecorder(Path(path))
        self.ns = namespace.rstrip('/')
        self.skip = set(skip)
        self.enc: Dict[str, object] = {}
        for rel, type_name in TYPES.items():
            if rel in self.skip:
                continue
            schema = schema_text(type_name)
            self.enc[rel] = serialize_dynamic(type_name, schema)[type_name]
            self.rec.add_topic(f'{self.ns}/{rel}', type_name, schema)

    def write(self, rel: str, stamp_s: float, msg: dict) -> None:
        if rel in self.skip:
            return
        self.rec.write(f'{self.ns}/{rel}', self.enc[rel](msg), log_time_ns=int(round(stamp_s * 1e9)))

    def close(self) -> None:
        self.rec.close()


def _stamp(t: float) -> dict:
    sec = int(math.floor(t))
    return {'sec': sec, 'nanosec': int(round((t - sec) * 1e9)) % 1_000_000_000}


def _header(t: float, frame: str) -> dict:
    return {'stamp': _stamp(t), 'frame_id': frame}


def _pose(T: np.ndarray) -> dict:
    from transforms3d.quaternions import mat2quat
    w, x, y, z = mat2quat(T[:3, :3])
    p = T[:3, 3]
    return {'position': {'x': float(p[0]), 'y': float(p[1]), 'z': float(p[2])},
            'orientation': {'x': float(x), 'y': float(y), 'z': float(z), 'w': float(w)}}


def commanded_actions(frame: int, steps: int) -> np.ndarray:
    """The (steps, 7) commanded chunk recorded with ``frame``: distinct, known values per frame and step."""
    j = np.arange(steps)[:, None]
    a = np.concatenate([0.001 * (frame + 1) + 0.0001 * j + [[0.0, 0.002, -0.003]],
                        0.01 * (frame + 1) - 0.001 * j + [[0.0, 0.02, -0.03]], np.ones((steps, 1))], axis=1)
    a[:, 6] = 1.0 if frame < 4 else 0.0
    return a


def _write_chunk(w: 'TopicWriter', t: float, frame: int, spec: 'EpisodeSpec') -> np.ndarray:
    from types import SimpleNamespace  # a step has a field named ``values``: a dict's method of that name hides it
    a = commanded_actions(frame, spec.chunk_steps)

    def write(topic, actions):
        steps = [SimpleNamespace(translation_m={'x': r[0], 'y': r[1], 'z': r[2]},
                                 rotation_rad={'x': r[3], 'y': r[4], 'z': r[5]},
                                 gripper=float(r[6]), values=[], normalized=[], bins=b'') for r in actions.tolist()]
        w.write(topic, t, {'header': _header(t, 'sim_camera_color_optical_frame'), 'steps': steps,
                           'step_period_s': 0.1, 'action_dim': 7, 'rotation_convention': spec.chunk_convention,
                           'delta_frame_id': 'panda_link0', 'model_id': 'test'})
    if spec.expert_labels:
        # The label on expert/action_chunk; what drove the arm on action_chunk: another chunk before
        # frame ``foreign_until`` (a detour, or a learner), the label itself from then on.
        write('expert/action_chunk', a)
        write('action_chunk', a + [0.005, 0, 0, 0, 0, 0, 0] if frame < spec.foreign_until else a)
    else:
        write('action_chunk', a)
    return a


@dataclass
class EpisodeSpec:
    steps: int = 12                     # camera frames (one per 0.1 s)
    seed: int = 0
    instruction: str = 'lift the red cube'
    succeeded: bool = True
    skip_topics: tuple = ()
    nan_pose_at: Optional[int] = None   # frame index whose ee pose is NaN
    depth_offset_s: float = 0.0         # depth stamps shifted by this
    drop_frames_at: tuple = ()          # frame indices whose image and depth are not recorded
    drop_depth_at: tuple = ()           # frame indices whose depth alone is not recorded
    drop_camera_pose_at: tuple = ()     # frame indices whose camera pose samples are not recorded
    drop_joint_states_at: tuple = ()    # frame indices whose joint state and ee pose samples are not recorded
    camera_drift_m: float = 0.0         # the recorded camera pose moves this far along x per frame
    joint_delta_rad: tuple = (0.35, 0.25, -0.2, -0.3, 0.2, 0.25, 0.3)
    close_gripper_at: Optional[int] = 6
    chunk_every: int = 0                # > 0: an ActionChunk stamped with every chunk_every-th frame's time
    chunk_offset_s: float = 0.0         # the chunks' stamps shifted by this from their frames'
    chunk_steps: int = 4                # steps per commanded chunk
    chunk_convention: int = 0           # ActionChunk.rotation_convention of the commanded chunks
    expert_labels: bool = False         # the chunks also on expert/action_chunk (the labels)
    foreign_until: int = 0              # with expert_labels: the executed chunks of frames before it differ
    truth: dict = field(default_factory=dict)   # filled: per-frame TCP poses, camera pose, sim intrinsics


def record_sim_episode(sim, path: Path, spec: EpisodeSpec, namespace: str = '/demo', t0: float = 100.0) -> EpisodeSpec:
    """Drive ``sim`` (a PandaSim) for ``spec.steps`` camera frames and record them to ``path``."""
    from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, TrajectoryPoint
    from molmoact_bringup.sim.franka import ARM_JOINT_NAMES

    sim.reset(seed=spec.seed)
    period = 0.1
    q0 = sim.arm_positions_rad
    q1 = q0 + np.asarray(spec.joint_delta_rad)
    duration = period * (spec.steps - 1)
    sim.command_trajectory(JointTrajectoryCommand(ARM_JOINT_NAMES, (
        TrajectoryPoint(duration, tuple(float(v) for v in q1)),)))
    w = TopicWriter(path, namespace, skip=spec.skip_topics)
    cam_frame = sim.config.camera_frame
    k = sim.intrinsics
    w.write('instruction', t0, {'data': spec.instruction})
    tcp, cams, images, chunks = [], [], [], {}
    for i in range(spec.steps):
        if spec.close_gripper_at is not None and i == spec.close_gripper_at:
            sim.set_gripper(0.0)
            w.write('gripper_controller/commands', t0 + i * period - 0.01, {'layout': {'dim': [], 'data_offset': 0},
                                                                              'data': [0.0]})
        for half in (0, 1):  # joint states and poses at 20 Hz, camera at 10 Hz
            t = t0 + i * period + half * period / 2
            js = sim.joint_state()
            if i not in spec.drop_joint_states_at:
                w.write('joint_states', t, {'header': _header(t, ''), 'name': list(js.names),
                                            'position': js.positions.tolist(), 'velocity': js.velocities.tolist(),
                                            'effort': js.efforts.tolist()})
            ee = sim.ee_pose().matrix.copy()
            if spec.nan_pose_at is not None and i == spec.nan_pose_at and half == 0:
                ee[0, 3] = float('nan')
            if i not in spec.drop_joint_states_at:
                w.write('sim_arm/ee_pose', t, {'header': _header(t, 'panda_link0'), 'pose': _pose(ee)})
            if i not in spec.drop_camera_pose_at:
                cam_pose = sim.camera_pose().matrix.copy()
                cam_pose[0, 3] += spec.camera_drift_m * i
                w.write('sim_arm/camera_pose', t, {'header': _header(t, 'panda_link0'), 'pose': _pose(cam_pose)})
            if half == 0 and i in spec.drop_frames_at:
                tcp.append(sim.ee_pose().matrix.copy())
                cams.append(sim.camera_pose().matrix.copy())
                images.append(None)
            elif half == 0:
                frame = sim.render()
                h, wd = frame.rgb.shape[:2]
                header = _header(t, cam_frame)
                w.write('image', t, {'header': header, 'height': h, 'width': wd, 'encoding': 'rgb8',
                                     'is_bigendian': 0, 'step': wd * 3, 'data': frame.rgb.tobytes()})
                td = t + spec.depth_offset_s
                if i not in spec.drop_depth_at:
                    w.write('aligned_depth', td, {'header': _header(td, cam_frame), 'height': h, 'width': wd,
                                                  'encoding': '32FC1', 'is_bigendian': 0, 'step': wd * 4,
                                                  'data': frame.depth_m.astype(np.float32).tobytes()})
                w.write('camera_info', t, {'header': header, 'height': h, 'width': wd, 'distortion_model': 'plumb_bob',
                                           'd': [0.0] * 5, 'k': [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
                                           'r': [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                                           'p': [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
                                           'binning_x': 0, 'binning_y': 0,
                                           'roi': {'x_offset': 0, 'y_offset': 0, 'height': 0, 'width': 0,
                                                   'do_rectify': False}})
                tcp.append(sim.ee_pose().matrix.copy())
                cams.append(sim.camera_pose().matrix.copy())
                images.append(frame.rgb)
                if spec.chunk_every and i % spec.chunk_every == 0:
                    chunks[i] = _write_chunk(w, t + spec.chunk_offset_s, i, spec)
            sim.step_for(period / 2)
    tend = t0 + spec.steps * period
    w.write('sim_arm/task_state', tend, {
        'header': _header(tend, 'panda_link0'), 'scene': 'lift', 'task': 'lift', 'instruction': spec.instruction,
        'episode': 0, 'seed': spec.seed, 'success': spec.succeeded, 'succeeded': spec.succeeded,
        'first_success_s': 1.0 if spec.succeeded else -1.0, 'reason': 'synthetic', 'object_names': [],
        'object_poses': []})
    w.close()
    spec.truth = {'tcp': np.stack(tcp), 'camera': np.stack(cams), 'intrinsics': k, 'images': images,
                  'chunks': chunks}
    return spec
