"""Read one episode's MCAP recording (ROS 2 cdr channels) into NumPy streams, without ROS.

The recording is what ``ros2 bag record`` (storage mcap), the demo (``demo_output/recording.mcap``) or the
evaluator write: channels with message encoding ``cdr`` and ``ros2msg`` schemas. Messages are decoded with
``mcap_ros2`` (its dynamic CDR decoder; no rclpy). Stamps are the messages' ``header.stamp`` where they have
one that is set, else the recording's log time.

:func:`read_episode` returns a :class:`RawEpisode`; anything missing or malformed raises
:class:`EpisodeError` naming the episode and the topic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..reasoning.action_space import RotationConvention
from ..ros.image import ImageFormatError, depth_to_meters, to_rgb8
from .config import TopicConfig

__all__ = ['EpisodeError', 'Stream', 'RawEpisode', 'CommandedChunk', 'resolve_topics', 'read_episode',
           'pose_to_matrix', 'quaternion_to_matrix']


class EpisodeError(ValueError):
    """An episode that cannot be turned into examples: ``episode`` and ``topic`` say where, ``reason`` what."""

    def __init__(self, episode: str, topic: str, reason: str) -> None:
        self.episode, self.topic, self.reason = str(episode), str(topic), str(reason)
        where = f'topic {self.topic}' if self.topic else 'episode'
        super().__init__(f'episode {self.episode}: {where}: {self.reason}')


@dataclass
class Stream:
    """Samples of one topic: ``stamps`` (s, sorted) and one value per stamp."""

    topic: str
    stamps: np.ndarray
    values: list

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class RawEpisode:
    """The decoded streams of one recording (streams that were not recorded are None)."""

    name: str
    path: Path
    topics: Dict[str, str]                      # role -> resolved topic name
    images: Stream                              # (H, W, 3) uint8
    depths: Stream                              # (H, W) float32 m, NaN invalid
    camera_info: Stream                         # (K 3x3, width, height)
    joint_states: Stream                        # dict name -> position
    ee_pose: Optional[Stream] = None            # 4x4 base -> ee
    camera_pose: Optional[Stream] = None        # 4x4 base -> camera optical
    gripper_command: Optional[Stream] = None    # float
    action_chunks: Optional[Stream] = None      # CommandedChunk, stamped with its observation's time
    executed_chunks: Optional[Stream] = None    # CommandedChunk that drove the arm, where not action_chunks
    instruction: Optional[str] = None
    succeeded: Optional[bool] = None
    task_instruction: Optional[str] = None
    frames: Dict[str, str] = field(default_factory=dict)   # base / ee / camera frame ids seen


@dataclass(frozen=True)
class CommandedChunk:
    """One recorded ``ActionChunk``: ``actions`` (H, 7) = translation (m), rotation (rad, per
    ``rotation_convention``) in ``delta_frame_id``, raw gripper value; one step every ``step_period_s``."""

    actions: np.ndarray
    step_period_s: float
    rotation_convention: str
    delta_frame_id: str


#: ActionChunk.rotation_convention (ROTATION_RPY, ROTATION_AXIS_ANGLE) -> the suite's convention (the message
#: constants themselves are in ros/sink_messages.py, which needs the ROS message package; this reader does not).
_ROTATION_CONVENTIONS = {0: RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW.value,
                         1: RotationConvention.ROTATION_VECTOR.value}


def _decode_action_chunk(msg: Any) -> CommandedChunk:
    steps = list(msg.steps)
    if not steps:
        raise ValueError('the action chunk has no steps')
    actions = np.array([[s.translation_m.x, s.translation_m.y, s.translation_m.z, s.rotation_rad.x,
                         s.rotation_rad.y, s.rotation_rad.z, s.gripper] for s in steps], dtype=np.float64)
    if not np.all(np.isfinite(actions)):
        raise ValueError('the action chunk holds non-finite values')
    period = float(msg.step_period_s)
    if not (math.isfinite(period) and period > 0):
        raise ValueError(f'step_period_s must be > 0, got {period}')
    convention = _ROTATION_CONVENTIONS.get(int(msg.rotation_convention))
    if convention is None:
        raise ValueError(f'unknown rotation_convention {int(msg.rotation_convention)}')
    return CommandedChunk(actions, period, convention, str(msg.delta_frame_id).lstrip('/'))


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a (x, y, z, w) quaternion (normalised first; a zero quaternion is an error)."""
    q = np.array([w, x, y, z], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f'quaternion ({x}, {y}, {z}, {w}) is not a rotation')
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def pose_to_matrix(position: Any, orientation: Any) -> np.ndarray:
    """4x4 transform of a geometry_msgs Point/Vector3 + Quaternion (NaN anywhere: ValueError)."""
    p = np.array([float(position.x), float(position.y), float(position.z)])
    qv = (float(orientation.x), float(orientation.y), float(orientation.z), float(orientation.w))
    if not (np.all(np.isfinite(p)) and all(math.isfinite(v) for v in qv)):
        raise ValueError(f'pose is not finite: position {p.tolist()}, orientation {list(qv)}')
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(*qv)
    t[:3, 3] = p
    return t


def _stamp_s(msg: Any, log_time_ns: int) -> float:
    header = getattr(msg, 'header', None)
    stamp = getattr(header, 'stamp', None) if header is not None else None
    if stamp is not None:
        sec, nsec = int(getattr(stamp, 'sec', 0)), int(getattr(stamp, 'nanosec', 0))
        if sec or nsec:
            return sec + nsec * 1e-9
    return log_time_ns * 1e-9


def resolve_topics(available: Sequence[str], config: TopicConfig) -> Dict[str, str]:
    """Role -> topic name in the recording, for every configured role whose topic is there.

    With ``config.namespace`` set, relative names are prefixed by it. Without, a relative name matches the
    topic ``/name`` or the only topic ending in ``/name`` (several: the first in sorted order whose namespace
    also holds the image topic). ``action_chunk`` may name several topics, comma-separated, by preference;
    ``executed_chunk`` is resolved only where it is another topic than the ``action_chunk`` found.
    """
    available = sorted(set(available))
    roles = {k: getattr(config, k) for k in ('image', 'depth', 'camera_info', 'joint_states', 'ee_pose',
                                              'camera_pose', 'gripper_command', 'instruction', 'task_state',
                                              'action_chunk', 'executed_chunk')}
    for i, name in enumerate(config.tf):
        roles[f'tf{i}'] = name

    def candidates(name: str) -> List[str]:
        if not name:
            return []
        if name.startswith('/'):
            return [name] if name in available else []
        if config.namespace is not None:
            ns = config.namespace.strip('/')
            full = f'/{ns}/{name}' if ns else f'/{name}'
            return [full] if full in available else []
        return [t for t in available if t == '/' + name or t.endswith('/' + name)]

    image = candidates(roles['image'])
    prefix = image[0][:-len(roles['image'])] if len(image) == 1 else None
    out: Dict[str, str] = {}
    for role, names in roles.items():
        # ``action_chunk`` may list topics by preference ("expert/action_chunk,action_chunk"): the first present.
        for name in (n.strip() for n in names.split(',')) if role == 'action_chunk' else (names,):
            found = candidates(name)
            if len(found) > 1 and prefix is not None:
                found = [t for t in found if t == prefix + name] or found
            if found:
                out[role] = found[0]
                break
    if out.get('executed_chunk') == out.get('action_chunk'):
        out.pop('executed_chunk', None)   # the labels are what drove the arm
    elif 'action_chunk' not in out:
        out.pop('executed_chunk', None)
    return out


def _decode_image(msg: Any) -> np.ndarray:
    return np.array(to_rgb8(msg), dtype=np.uint8, copy=True)


def _decode_depth(msg: Any) -> np.ndarray:
    return depth_to_meters(msg)


def _decode_camera_info(msg: Any) -> Tuple[np.ndarray, int, int]:
    k = np.asarray(list(msg.k), dtype=np.float64)
    if k.shape != (9,) or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        raise ValueError(f'camera_info K is not a pinhole matrix: {k.tolist()}')
    return k.reshape(3, 3), int(msg.width), int(msg.height)


def read_episode(path: str | Path, config: TopicConfig, *, name: Optional[str] = None,
                 base_frame: str = '', ee_frame: str = '', camera_frame: str = '') -> RawEpisode:
    """Decode one MCAP episode (raises :class:`EpisodeError` naming the topic for anything unusable)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = Path(path)
    episode = name or path.stem
    try:
        handle = path.open('rb')
    except OSError as error:
        raise EpisodeError(episode, '', f'cannot open {path}: {error}') from None
    with handle:
        try:
            reader = make_reader(handle, decoder_factories=[DecoderFactory()])
            summary = reader.get_summary()
            if summary is not None:
                available = [c.topic for c in summary.channels.values()]
            else:
                available = sorted({c.topic for _, c, _ in reader.iter_messages()})
                handle.seek(0)
                reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        except Exception as error:  # noqa: BLE001 - mcap raises several kinds for a broken file
            raise EpisodeError(episode, '', f'not a readable MCAP file: {error}') from None
        topics = resolve_topics(available, config)
        for role in ('image', 'depth', 'camera_info', 'joint_states'):
            if role not in topics:
                wanted = getattr(config, role)
                raise EpisodeError(episode, wanted, f'missing: no {role} topic {wanted!r} in the recording '
                                   f'(it has {len(available)} topics: {", ".join(available[:12])})')
        by_topic = {t: r for r, t in topics.items()}
        raw: Dict[str, Tuple[List[float], list]] = {r: ([], []) for r in topics}
        tf_samples: Dict[Tuple[str, str], Tuple[List[float], list]] = {}
        try:
            iterator = reader.iter_decoded_messages(topics=sorted(by_topic))
            for schema, channel, message, msg in iterator:
                role = by_topic[channel.topic]
                stamp = _stamp_s(msg, message.log_time)
                try:
                    if role == 'image':
                        value = _decode_image(msg)
                    elif role == 'depth':
                        value = _decode_depth(msg)
                    elif role == 'camera_info':
                        value = _decode_camera_info(msg)
                    elif role == 'joint_states':
                        names = list(msg.name)
                        pos = [float(v) for v in msg.position]
                        if len(pos) != len(names):
                            raise ValueError(f'{len(names)} names but {len(pos)} positions')
                        value = dict(zip(names, pos))
                    elif role in ('ee_pose', 'camera_pose'):
                        value = pose_to_matrix(msg.pose.position, msg.pose.orientation)
                        raw.setdefault(role + '_frame', ([], []))[1].append(str(msg.header.frame_id))
                    elif role == 'gripper_command':
                        data = list(msg.data)
                        if not data:
                            continue
                        value = float(data[0])
                    elif role == 'instruction':
                        value = str(msg.data)
                    elif role == 'task_state':
                        value = (bool(msg.succeeded), str(msg.instruction))
                    elif role in ('action_chunk', 'executed_chunk'):
                        value = _decode_action_chunk(msg)
                    elif role.startswith('tf'):
                        for ts in msg.transforms:
                            key = (str(ts.header.frame_id).lstrip('/'), str(ts.child_frame_id).lstrip('/'))
                            tr = ts.transform
                            t_stamp = _stamp_s(ts, message.log_time)
                            lst = tf_samples.setdefault(key, ([], []))
                            lst[0].append(t_stamp)
                            lst[1].append(pose_to_matrix(tr.translation, tr.rotation))
                        continue
                    else:  # pragma: no cover - every role is handled above
                        continue
                except (ImageFormatError, ValueError, AttributeError, TypeError) as error:
                    raise EpisodeError(episode, channel.topic, f'message at {stamp:.3f} s: {error}') from None
                raw[role][0].append(stamp)
                raw[role][1].append(value)
        except EpisodeError:
            raise
        except Exception as error:  # noqa: BLE001 - a truncated file or an undecodable schema
            raise EpisodeError(episode, '', f'reading failed: {type(error).__name__}: {error}') from None

    def stream(role: str) -> Optional[Stream]:
        if role not in topics or not raw[role][1]:
            return None
        stamps = np.asarray(raw[role][0], dtype=np.float64)
        order = np.argsort(stamps, kind='stable')
        return Stream(topics[role], stamps[order], [raw[role][1][i] for i in order])

    streams = {r: stream(r) for r in ('image', 'depth', 'camera_info', 'joint_states')}
    for role, s in streams.items():
        if s is None:
            raise EpisodeError(episode, topics[role], 'missing: the topic has no messages')
    ee = stream('ee_pose')
    cam = stream('camera_pose')
    # Poses from TF where the pose topics are absent (direct base -> frame transforms only).
    if cam is None and camera_frame and (base_frame, camera_frame) in tf_samples:
        st, vals = tf_samples[(base_frame, camera_frame)]
        order = np.argsort(st, kind='stable')
        cam = Stream('tf', np.asarray(st)[order], [vals[i] for i in order])
    if ee is None and ee_frame and (base_frame, ee_frame) in tf_samples:
        st, vals = tf_samples[(base_frame, ee_frame)]
        order = np.argsort(st, kind='stable')
        ee = Stream('tf', np.asarray(st)[order], [vals[i] for i in order])
    instruction = None
    if 'instruction' in topics and raw['instruction'][1]:
        instruction = raw['instruction'][1][-1].strip() or None
    succeeded = task_instruction = None
    if 'task_state' in topics and raw['task_state'][1]:
        succeeded = any(v[0] for v in raw['task_state'][1])
        task_instruction = raw['task_state'][1][-1][1].strip() or None
    frames = {}
    for role in ('ee_pose', 'camera_pose'):
        ids = raw.get(role + '_frame', ([], []))[1]
        if ids:
            frames[role] = ids[-1]
    return RawEpisode(name=episode, path=path, topics=topics, images=streams['image'], depths=streams['depth'],
                      camera_info=streams['camera_info'], joint_states=streams['joint_states'], ee_pose=ee,
                      camera_pose=cam, gripper_command=stream('gripper_command'),
                      action_chunks=stream('action_chunk'), executed_chunks=stream('executed_chunk'),
                      instruction=instruction,
                      succeeded=succeeded, task_instruction=task_instruction, frames=frames)
