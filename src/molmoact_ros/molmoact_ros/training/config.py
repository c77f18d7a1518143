"""Settings of the dataset builder: which recorded topics hold what, and how steps are matched (ROS-free).

A YAML file (``build_dataset --topics topics.yaml``) holds any subset of :class:`TopicConfig`'s fields::

    namespace: /demo                # prefix of the relative names below; omit it to find the topics by
                                    #   name suffix (a recording of one arm under any namespace)
    image: image                    # sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)
    depth: aligned_depth            # sensor_msgs/Image 32FC1 (m) or 16UC1 (mm), aligned with `image`
    camera_info: camera_info        # sensor_msgs/CameraInfo of `image`
    joint_states: joint_states      # sensor_msgs/JointState (arm joints; the gripper's finger joint)
    ee_pose: sim_arm/ee_pose        # geometry_msgs/PoseStamped of the end effector in the base frame
    camera_pose: sim_arm/camera_pose  # geometry_msgs/PoseStamped of the camera's optical frame in the base frame
    tf: [tf, tf_static]             # tf2_msgs/TFMessage: base -> camera / base -> ee when the poses above are absent
    gripper_command: gripper_controller/commands   # std_msgs/Float64MultiArray (optional)
    gripper_joint: panda_finger_joint1
    instruction: instruction        # std_msgs/String (optional: the task state's or --instruction)
    task_state: sim_arm/task_state  # molmoact_msgs/TaskState (success flag; optional)
    action_chunk: action_chunk      # molmoact_msgs/ActionChunk: the chunks commanded (optional; the labels
                                    #   of build_dataset --actions commanded); several, comma-separated, by
                                    #   preference: expert/action_chunk,action_chunk (DAgger runs and demos)
    executed_chunk: action_chunk    # the chunks that drove the arm; where action_chunk resolves to another
                                    #   topic (an expert's labels), a step is an example only once every chunk
                                    #   executed from it on is its label (its trace is then the labeller's path)
    ee_source: auto                 # auto | pose | fk (forward kinematics of joint_states)

A name that starts with ``/`` is absolute. ``''`` disables an optional topic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import yaml

__all__ = ['TopicConfig', 'SyncConfig', 'ConfigError', 'load_topic_config']


class ConfigError(ValueError):
    """A topics file or setting that cannot be used; the message names the key."""


EE_SOURCES = ('auto', 'pose', 'fk')


@dataclass(frozen=True)
class TopicConfig:
    """Topic names of one arm's recordings (see the module docstring)."""

    namespace: Optional[str] = None
    image: str = 'image'
    depth: str = 'aligned_depth'
    camera_info: str = 'camera_info'
    joint_states: str = 'joint_states'
    ee_pose: str = 'sim_arm/ee_pose'
    camera_pose: str = 'sim_arm/camera_pose'
    tf: Tuple[str, ...] = ('tf', 'tf_static')
    gripper_command: str = 'gripper_controller/commands'
    gripper_joint: str = 'panda_finger_joint1'
    instruction: str = 'instruction'
    task_state: str = 'sim_arm/task_state'
    action_chunk: str = 'action_chunk'
    executed_chunk: str = 'action_chunk'
    ee_source: str = 'auto'

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == 'namespace':
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f'topics: namespace must be a string, got {value!r}')
            elif f.name == 'tf':
                if isinstance(value, str):
                    value = (value,) if value else ()
                if not all(isinstance(v, str) for v in value):
                    raise ConfigError(f'topics: tf must be a list of topic names, got {value!r}')
                object.__setattr__(self, 'tf', tuple(v for v in value if v))
            elif not isinstance(value, str):
                raise ConfigError(f'topics: {f.name} must be a string, got {value!r}')
        for required in ('image', 'depth', 'camera_info', 'joint_states'):
            if not getattr(self, required):
                raise ConfigError(f'topics: {required} is required')
        if self.ee_source not in EE_SOURCES:
            raise ConfigError(f'topics: ee_source must be one of {EE_SOURCES}, got {self.ee_source!r}')

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = '<mapping>') -> 'TopicConfig':
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f'{source}: expected a mapping of topic settings, got {type(data).__name__}')
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f'{source}: unknown keys {unknown}; known: {sorted(names)}')
        try:
            return cls(**dict(data))
        except ConfigError as error:
            raise ConfigError(f'{source}: {error}') from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out['tf'] = list(self.tf)
        return out


@dataclass(frozen=True)
class SyncConfig:
    """How recorded streams are matched to the steps (seconds).

    ``image_tolerance_s``: largest gap between a step's time (a multiple of the step period from the first
    frame) and the camera frame used for it; ``None``: half a step period. ``depth_tolerance_s``: between a
    frame and its aligned depth. ``state_tolerance_s``: between a step's time and the nearest joint state /
    pose sample (states are interpolated between the two samples around it). 0.1 s: the simulated arm's
    50 Hz state stream pauses while it renders a camera frame (50-80 ms on a loaded 2-core CPU).
    ``max_state_gap_s``: a step farther than that from every state sample, but inside a gap of at most this
    long between two samples, is interpolated across it and is no example (a longer gap ends the episode).
    """

    image_tolerance_s: Optional[float] = None
    depth_tolerance_s: float = 0.02
    state_tolerance_s: float = 0.1
    max_state_gap_s: float = 1.0

    def image_tolerance(self, step_period_s: float) -> float:
        return 0.5 * step_period_s if self.image_tolerance_s is None else float(self.image_tolerance_s)


def load_topic_config(path: str | Path | None) -> TopicConfig:
    """A :class:`TopicConfig` from a YAML file (None: the defaults, the simulated arm's names)."""
    if path is None:
        return TopicConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'topics file {str(path)!r} does not exist')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as error:
        raise ConfigError(f'{path}: not valid YAML: {error}') from None
    return TopicConfig.from_mapping(data, source=str(path))


