"""One recorded episode -> synchronised steps at the robot profile's step period (ROS-free).

Steps are laid every ``step_period_s`` from the first camera frame inside the window where every needed
stream has samples. The robot's state at each step (joint state, end-effector and camera poses, gripper) is
interpolated at the step's time (linear, rotations by slerp), which needs a sample within the state tolerance
(but for a camera pose that never changes: a fixed camera's pose holds between samples),
so the actions between consecutive steps are exact ``step_period_s`` deltas whatever the camera does. Each step
shows the camera frame nearest to its time and the aligned depth nearest to that frame (depth tolerance). A
step with no frame within the image tolerance (a camera that dropped frames, e.g. a simulator rendering on a
loaded CPU), or whose frame has no depth within the depth tolerance, keeps its state for the actions around it
but is no example (``has_frame`` false; ``steps_without_depth`` counts the latter). So is a step whose
nearest state sample is beyond the state tolerance but inside a gap of at most ``max_state_gap_s`` (a recorder
or simulator that paused under load): its state is interpolated across the gap for the actions and traces
around it (``steps_without_state`` counts them). A longer gap, a step outside a state stream, or no step with
a frame at all, is an :class:`~.recording.EpisodeError` naming the topic ("unsynchronized stamps").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from transforms3d.quaternions import mat2quat, quat2mat

from ..robot.geometry import CameraIntrinsics
from .config import SyncConfig
from .recording import EpisodeError, RawEpisode, Stream

__all__ = ['EpisodeSteps', 'synchronize', 'interpolate_pose']


@dataclass
class EpisodeSteps:
    """Synchronised steps of one episode (N steps)."""

    name: str
    stamps: np.ndarray            # (N,) s, the steps' times (every step_period_s from the first frame)
    frame_stamps: np.ndarray      # (N,) s, the stamps of the frames shown at each step
    has_frame: np.ndarray         # (N,) bool: a frame within the image tolerance of the step's time, with depth
    images: np.ndarray            # (N, H, W, 3) uint8
    depths: np.ndarray            # (N, H, W) float32 m (NaN: no depth)
    intrinsics: CameraIntrinsics
    camera_poses: np.ndarray      # (N, 4, 4) base -> camera optical
    ee_poses: np.ndarray          # (N, 4, 4) base -> ee (TCP)
    joint_positions: Optional[np.ndarray]   # (N, J) of the profile's joints, when recorded
    gripper_state: np.ndarray     # (N,) the gripper's finger position (or command) at each step
    gripper_command: np.ndarray   # (N,) the gripper target in force over step i -> i+1
    instruction: str
    succeeded: Optional[bool]
    ee_source: str                # 'pose' or 'fk'
    steps_without_depth: int = 0  # steps whose frame had no depth within the depth tolerance (no examples)
    steps_without_state: int = 0  # steps with a frame whose state was bridged across a gap (no examples)

    def __len__(self) -> int:
        return len(self.stamps)


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(d, 1.0))
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / s


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, t: float) -> np.ndarray:
    """Pose between two 4x4 poses: position linear, rotation slerp (t in [0, 1])."""
    if t <= 0:
        return np.array(T0, dtype=np.float64)
    if t >= 1:
        return np.array(T1, dtype=np.float64)
    q = _slerp(mat2quat(T0[:3, :3]), mat2quat(T1[:3, :3]), t)
    out = np.eye(4)
    out[:3, :3] = quat2mat(q)
    out[:3, 3] = (1 - t) * T0[:3, 3] + t * T1[:3, 3]
    return out


def _nearest(stamps: np.ndarray, t: float) -> tuple[int, float]:
    """The index of the sample nearest ``t`` in sorted ``stamps`` and its distance (s)."""
    j = int(np.searchsorted(stamps, t))
    best = min((c for c in (j - 1, j) if 0 <= c < len(stamps)), key=lambda c: abs(stamps[c] - t))
    return best, float(abs(stamps[best] - t))


def _bracket(stream: Stream, t: float, tol: float, episode: str, what: str,
            max_gap: float = 0.0) -> tuple[int, int, float, bool]:
    """Samples around ``t``, the interpolation weight, and whether the nearest lies within ``tol``; beyond it
    ``t`` must lie between two samples at most ``max_gap`` apart (then False: interpolated across a gap)."""
    st = stream.stamps
    j = int(np.searchsorted(st, t))
    i0, i1 = max(j - 1, 0), min(j, len(st) - 1)
    nearest = min(abs(st[i0] - t), abs(st[i1] - t))
    synced = nearest <= tol
    if not synced and not (st[i0] <= t <= st[i1] and st[i1] - st[i0] <= max_gap):
        raise EpisodeError(episode, stream.topic, f'unsynchronized stamps: no {what} sample within {tol:.3f} s '
                           f'of the frame at {t:.3f} s (nearest {nearest:.3f} s away; gaps up to {max_gap:.3f} s '
                           'are bridged)')
    if i0 == i1 or st[i1] <= st[i0]:
        return i0, i0, 0.0, synced
    return i0, i1, float(np.clip((t - st[i0]) / (st[i1] - st[i0]), 0.0, 1.0)), synced


def synchronize(raw: RawEpisode, *, step_period_s: float, sync: SyncConfig, joint_names: tuple,
                gripper_joint: str, fk: Optional[Callable[[np.ndarray], np.ndarray]], ee_source: str = 'auto',
                instruction: Optional[str] = None, max_steps: Optional[int] = None) -> EpisodeSteps:
    """Lay the steps of ``raw`` (see the module docstring). ``fk``: joint positions (of ``joint_names``)
    -> 4x4 TCP pose, for ``ee_source`` 'fk' (or 'auto' without an ee pose stream)."""
    ep = raw.name
    use_fk = ee_source == 'fk' or (ee_source == 'auto' and raw.ee_pose is None)
    if use_fk and fk is None:
        raise EpisodeError(ep, raw.topics.get('ee_pose', 'ee_pose'),
                           'missing: no end-effector pose topic (or TF base -> ee) and no kinematics for FK')
    if raw.camera_pose is None:
        raise EpisodeError(ep, raw.topics.get('camera_pose', 'camera_pose'),
                           'missing: no camera pose (PoseStamped topic or TF base -> camera frame)')
    text = instruction or raw.instruction or raw.task_instruction
    if not text:
        raise EpisodeError(ep, raw.topics.get('instruction', 'instruction'),
                           'missing: no instruction (topic, task state, or --instruction)')
    needed = [raw.images, raw.depths, raw.joint_states, raw.camera_pose] + ([] if use_fk else [raw.ee_pose])
    state_tol = float(sync.state_tolerance_s)
    start = max(s.stamps[0] for s in needed[1:]) - state_tol
    end = min(s.stamps[-1] for s in needed[1:]) + state_tol
    img = raw.images
    in_window = np.flatnonzero((img.stamps >= start) & (img.stamps <= end))
    if in_window.size == 0:
        raise EpisodeError(ep, img.topic, 'unsynchronized stamps: no camera frame while the other streams '
                           f'have samples ({start:.3f} .. {end:.3f} s)')
    t0, t_last = img.stamps[in_window[0]], img.stamps[in_window[-1]]
    n_steps = int(math.floor((t_last - t0) / step_period_s + 1e-6)) + 1
    if max_steps:
        n_steps = min(n_steps, int(max_steps))
    img_tol = sync.image_tolerance(step_period_s)
    frames, has_frame, worst = [], [], 0.0
    for k in range(n_steps):
        t = t0 + k * step_period_s
        best, gap = _nearest(img.stamps, t)
        has_frame.append(gap <= img_tol)
        worst = max(worst, gap)
        frames.append(best)
    has_frame = np.asarray(has_frame, dtype=bool)
    if not has_frame.any():
        raise EpisodeError(ep, img.topic, f'unsynchronized stamps: no camera frame within {img_tol:.3f} s of any '
                           f'step (nearest {worst:.3f} s away)')
    stamps = t0 + step_period_s * np.arange(n_steps)
    frame_stamps = img.stamps[frames]
    images = np.stack([img.values[f] for f in frames])
    h, w = images.shape[1:3]
    # Depth: the nearest to each shown frame, within the depth tolerance. A frame without one (a depth
    # message lost on a loaded machine) is no example, as a step without a frame; its depth is NaN.
    depths, depth_tol, missing_depth, worst_depth = [], float(sync.depth_tolerance_s), 0, 0.0
    for k, t in enumerate(frame_stamps):
        near, gap = _nearest(raw.depths.stamps, t)
        if gap > depth_tol:
            worst_depth = max(worst_depth, gap)
            if has_frame[k]:
                missing_depth += 1
            has_frame[k] = False
            depths.append(np.full((h, w), np.nan, dtype=np.float32))
            continue
        d = raw.depths.values[near]
        if d.shape != (h, w):
            raise EpisodeError(ep, raw.depths.topic, f'depth is {d.shape[1]}x{d.shape[0]}, the image {w}x{h}: '
                               'not aligned')
        depths.append(d)
    if not has_frame.any():
        raise EpisodeError(ep, raw.depths.topic, f'unsynchronized stamps: no depth sample within {depth_tol:.3f} s '
                           f'of any frame (nearest {worst_depth:.3f} s away)')
    # Camera model: the camera_info nearest the first frame (must match the image size).
    k_mat, ci_w, ci_h = raw.camera_info.values[int(np.argmin(np.abs(raw.camera_info.stamps - stamps[0])))]
    if (ci_w, ci_h) != (w, h):
        raise EpisodeError(ep, raw.camera_info.topic, f'camera_info is for {ci_w}x{ci_h}, the images are {w}x{h}')
    intrinsics = CameraIntrinsics.from_k(k_mat.reshape(-1).tolist(), w, h)

    max_gap = max(float(sync.max_state_gap_s), state_tol)
    in_gap = np.zeros(n_steps, dtype=bool)   # a state stream bridged across a gap at this step: no example

    def poses(stream: Stream) -> np.ndarray:
        out = []
        for k, t in enumerate(stamps):
            i0, i1, a, synced = _bracket(stream, t, state_tol, ep, 'pose', max_gap)
            in_gap[k] |= not synced
            out.append(interpolate_pose(stream.values[i0], stream.values[i1], a))
        return np.stack(out)

    first_camera_pose = raw.camera_pose.values[0]
    if all(np.allclose(v, first_camera_pose, atol=1e-9) for v in raw.camera_pose.values):
        # A fixed camera: its pose holds between samples, however far apart (a simulator whose pose stream
        # paused while it rendered under load lost 10 % of its episodes to this check).
        camera_poses = np.repeat(np.asarray(first_camera_pose, dtype=np.float64)[None], len(stamps), axis=0)
    else:
        camera_poses = poses(raw.camera_pose)
    js = raw.joint_states
    joints = []
    fingers = []
    for k, t in enumerate(stamps):
        i0, i1, a, synced = _bracket(js, t, state_tol, ep, 'joint state', max_gap)
        in_gap[k] |= not synced
        s0, s1 = js.values[i0], js.values[i1]
        missing = [n for n in (*joint_names, gripper_joint) if n and (n not in s0 or n not in s1)]
        if missing and (use_fk or gripper_joint in missing):
            raise EpisodeError(ep, js.topic, f'missing joints {missing} in the joint state at {t:.3f} s')
        if joint_names and not [n for n in joint_names if n not in s0 or n not in s1]:
            joints.append([(1 - a) * s0[n] + a * s1[n] for n in joint_names])
        fingers.append((1 - a) * s0[gripper_joint] + a * s1[gripper_joint] if gripper_joint else 0.0)
    joint_positions = np.asarray(joints, dtype=np.float64) if len(joints) == len(stamps) else None
    if joint_positions is not None and not np.all(np.isfinite(joint_positions)):
        raise EpisodeError(ep, js.topic, 'joint positions are not finite')
    if use_fk:
        if joint_positions is None:
            raise EpisodeError(ep, js.topic, f'missing arm joints {list(joint_names)} for forward kinematics')
        ee_poses = np.stack([fk(q) for q in joint_positions])
    else:
        ee_poses = poses(raw.ee_pose)
    for name, arr, topic in (('end-effector', ee_poses, raw.ee_pose.topic if not use_fk else js.topic),
                             ('camera', camera_poses, raw.camera_pose.topic)):
        if not np.all(np.isfinite(arr)):
            raise EpisodeError(ep, topic, f'NaN {name} pose')
    gripper_state = np.asarray(fingers, dtype=np.float64)
    if not np.all(np.isfinite(gripper_state)):
        raise EpisodeError(ep, js.topic, f'{gripper_joint} is not finite')
    # The gripper target over step i -> i+1: the last command sent by then, else the state reached.
    command = np.empty(len(stamps))
    gc = raw.gripper_command
    for i in range(len(stamps)):
        t_next = stamps[min(i + 1, len(stamps) - 1)]
        if gc is not None:
            j = int(np.searchsorted(gc.stamps, t_next, side='right')) - 1
            if j >= 0:
                command[i] = gc.values[j]
                continue
        command[i] = gripper_state[min(i + 1, len(stamps) - 1)]
    if not np.all(np.isfinite(command)):
        raise EpisodeError(ep, gc.topic if gc is not None else js.topic, 'gripper command is not finite')
    without_state = int(np.count_nonzero(has_frame & in_gap))
    has_frame = has_frame & ~in_gap
    if not has_frame.any():
        raise EpisodeError(ep, js.topic, f'unsynchronized stamps: no step with a state sample within {state_tol:.3f} '
                           's and a frame')
    return EpisodeSteps(name=ep, stamps=stamps, frame_stamps=frame_stamps, has_frame=has_frame, images=images,
                        depths=np.stack(depths), intrinsics=intrinsics, camera_poses=camera_poses, ee_poses=ee_poses,
                        joint_positions=joint_positions, gripper_state=gripper_state, gripper_command=command,
                        instruction=text, succeeded=raw.succeeded, ee_source='fk' if use_fk else 'pose',
                        steps_without_depth=missing_depth, steps_without_state=without_state)
