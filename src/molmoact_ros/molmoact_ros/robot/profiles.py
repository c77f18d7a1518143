"""Robot profiles: what the command sink needs to know about one arm, loaded and validated from YAML.

ROS-free (PyYAML). Profiles live in ``config/robots/<name>.yaml`` (installed into
``share/molmoact_bringup/config/robots``); the launch argument ``robot:=<name>`` picks one.

    profile = load_profile('sim_panda')          # a name from list_profiles(), or a path to a YAML file
    profile.joint_names, profile.frames.ee, profile.safety, profile.gripper, profile.sink.mode

Schema (every key is required unless marked optional; unknown keys are errors, so typos surface)::

    name: sim_panda                       # must match the file name
    description: text                     # optional
    urdf_file: urdf/panda.urdf            # optional: a URDF shipped in molmoact_bringup (for offline use;
                                          #   on a robot the sink reads robot_description)
    joint_names: [j1, ...]                # controlled joints, in the arm controller's order
    frames: {base: ..., ee: ..., camera: ...}
    delta_frame: base | tool              # axes of the model's deltas (execution.DeltaFrame)
    rotation_convention: euler_sxyz_roll_pitch_yaw | rotation_vector   # how the sink reads rotation deltas
                                          #   (the checkpoint's training data decides; the engine cannot know)
    norm_stats_key: molmoact              # unnorm key of the checkpoint's norm stats
    step_period_s: 0.1                    # seconds per action step (1 / the dataset's control rate)
    start_mode: observation | arrival     # where a chunk's timeline starts (execution.StartMode)
    action_scale:                         # optional (default: the identity, deltas already in m and rad):
      translation_m_per_unit: 1.0         #   metres per unit of the model's translation (e.g. LIBERO 0.05)
      rotation_rad_per_unit: 1.0          #   radians per unit of its rotation (e.g. LIBERO 0.5)
      clip_units: 1.0                     #   optional: clip each component to [-clip, clip] units first
    sink:
      mode: joint_trajectory | servo_twist | servo_pose | none
      arm_controller: name                # ros2_control controller (JointTrajectoryController)
      servo_node: name                    # optional, default servo_node (MoveIt Servo's node name)
      gripper_controller: name            # '' when there is none
      gripper_controller_type: jtc | forward | gripper_action | none
      gripper_joint_names: [..]           # joints the gripper controller takes ([] for gripper_action)
      gripper_joint_multipliers: [..]     # optional: per joint factor on the gripper command (mirrored fingers)
      gripper_max_effort: 0.0             # optional (gripper_action only): GripperCommand command.max_effort
                                          #   (default 0.0; the position GripperActionController ignores it)
      moveit_planning_group: panda_arm    # optional: MoveIt planning group for moveit_py IK (ik_backend)
    gripper: {mode: binarize | linear, threshold, invert, open_command, closed_command, raw_min?, raw_max?}
    safety: {max_step_translation_m, max_step_rotation_rad, workspace_min_m: [x,y,z],
             workspace_max_m: [x,y,z], gripper_min, gripper_max, max_action_age_s, camera_timeout_s,
             model_timeout_s, max_joint_velocity_scale?, joint_position_margin?}

Joint position and velocity limits are not in the profile: they come from the URDF
(``SafetyLimits.with_joint_limits(ArmKinematics.limits)``).

Topic and action names derived from a profile are relative (no leading '/'), so they resolve in the
sink's namespace: :attr:`SinkConfig.joint_trajectory_topic`, :attr:`SinkConfig.twist_topic`, ...
"""

from __future__ import annotations

import enum
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..reasoning.action_space import RotationConvention
from .execution import ActionScale, DeltaFrame, GripperMapping, GripperMode, StartMode
from .executor import SinkMode
from .safety import SafetyLimits

__all__ = [
    'ProfileError',
    'GripperControllerType',
    'RobotFrames',
    'SinkConfig',
    'RobotProfile',
    'profiles_dir',
    'list_profiles',
    'load_profile',
    'profile_from_mapping',
    'resolve_urdf_file',
]

#: Environment variable naming a directory of profiles (overrides the installed and source ones).
PROFILES_DIR_ENV = 'MOLMOACT_ROBOT_PROFILES'
_RELATIVE = Path('config') / 'robots'


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


class GripperControllerType(str, enum.Enum):
    """How the gripper is commanded."""

    #: joint_trajectory_controller: ``<controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory).
    JTC = 'jtc'
    #: forward_command_controller: ``<controller>/commands`` (std_msgs/Float64MultiArray).
    FORWARD = 'forward'
    #: control_msgs/action/GripperCommand at ``<controller>/gripper_cmd`` (GripperActionController)
    #: or a driver's own server (franka_gripper: ``franka_gripper/gripper_action``).
    GRIPPER_ACTION = 'gripper_action'
    #: No gripper.
    NONE = 'none'


@dataclass(frozen=True)
class RobotFrames:
    """TF frame ids: the robot base (deltas and workspace), the end effector (TCP), the camera."""

    base: str
    ee: str
    camera: str


@dataclass(frozen=True)
class SinkConfig:
    """Defaults of the command sink for this robot. Names are relative (they resolve in the namespace)."""

    mode: SinkMode
    arm_controller: str
    gripper_controller: str
    gripper_controller_type: GripperControllerType
    gripper_joint_names: tuple[str, ...]
    gripper_joint_multipliers: tuple[float, ...]
    servo_node: str = 'servo_node'
    #: GripperCommand goals' ``command.max_effort`` (gripper_action controllers only).
    gripper_max_effort: float = 0.0
    #: MoveIt planning group whose kinematics plugin solves IK with moveit_py ('' = none: Pinocchio).
    moveit_planning_group: str = ''

    @property
    def joint_trajectory_topic(self) -> str:
        """``<arm_controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory)."""
        return f'{self.arm_controller}/joint_trajectory'

    @property
    def follow_joint_trajectory_action(self) -> str:
        """``<arm_controller>/follow_joint_trajectory`` (control_msgs/action/FollowJointTrajectory)."""
        return f'{self.arm_controller}/follow_joint_trajectory'

    @property
    def twist_topic(self) -> str:
        """MoveIt Servo's ``<servo_node>/delta_twist_cmds`` (geometry_msgs/TwistStamped)."""
        return f'{self.servo_node}/delta_twist_cmds'

    @property
    def pose_topic(self) -> str:
        """MoveIt Servo's ``<servo_node>/pose_target_cmds`` (geometry_msgs/PoseStamped)."""
        return f'{self.servo_node}/pose_target_cmds'

    @property
    def gripper_target(self) -> str | None:
        """The gripper's topic or action name for its controller type (None without a gripper)."""
        kind = self.gripper_controller_type
        if kind is GripperControllerType.NONE:
            return None
        if kind is GripperControllerType.JTC:
            return f'{self.gripper_controller}/joint_trajectory'
        if kind is GripperControllerType.FORWARD:
            return f'{self.gripper_controller}/commands'
        return self.gripper_controller if '/' in self.gripper_controller else f'{self.gripper_controller}/gripper_cmd'


@dataclass(frozen=True)
class RobotProfile:
    """One robot's profile (see the module docstring for the YAML schema)."""

    name: str
    description: str
    urdf_file: str | None
    joint_names: tuple[str, ...]
    frames: RobotFrames
    delta_frame: DeltaFrame
    rotation_convention: RotationConvention
    norm_stats_key: str
    step_period_s: float
    start_mode: StartMode
    sink: SinkConfig
    gripper: GripperMapping
    safety: SafetyLimits
    #: Units of the model's deltas (execution.ActionScale; identity: metres and radians).
    action_scale: ActionScale = ActionScale()
    #: Where the profile was loaded from (messages only).
    source: str = ''

    @property
    def control_rate_hz(self) -> float:
        """Action steps per second (1 / step_period_s)."""
        return 1.0 / self.step_period_s

    @property
    def delta_frame_id(self) -> str:
        """The TF frame of the deltas: the base frame or the end-effector frame, per :attr:`delta_frame`."""
        return self.frames.base if self.delta_frame is DeltaFrame.BASE else self.frames.ee

    def pipeline_parameters(self) -> dict[str, Any]:
        """Parameter overrides this profile implies for the pipeline nodes (names of
        ``config/molmoact_params.yaml``): ``unnorm_key``, ``step_period_s``, ``delta_frame_id``.

        A profile file is not a ROS parameter file; a launch file passes this dict (and the profile's
        path to the sink) instead.
        """
        return {'unnorm_key': self.norm_stats_key, 'step_period_s': self.step_period_s,
                'delta_frame_id': self.delta_frame_id}


# ---------------------------------------------------------------------------------------------------
# Validation helpers: each takes the dotted key path for its message.

class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ProfileError:
        return ProfileError(f'{self.source}: {key}: {message}' if key else f'{self.source}: {message}')

    def mapping(self, value: Any, key: str, required: set[str], optional: set[str] = frozenset()) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(key, f'expected a mapping, got {type(value).__name__}')
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(key, f'missing keys {missing}')
        unknown = sorted(set(value) - required - set(optional))
        if unknown:
            raise self.fail(key, f'unknown keys {unknown} (allowed: {sorted(required | set(optional))})')
        return value

    def string(self, value: Any, key: str, *, allow_empty: bool = False) -> str:
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            raise self.fail(key, f'expected a non-empty string, got {value!r}')
        return value

    def name(self, value: Any, key: str, *, allow_empty: bool = False) -> str:
        """A ROS name (frame, joint, controller): no spaces; controller/topic names must be relative."""
        text = self.string(value, key, allow_empty=allow_empty)
        if text and not re.fullmatch(r'[A-Za-z0-9_/~.-]+', text):
            raise self.fail(key, f'{text!r} is not a valid ROS name')
        return text

    def relative(self, value: Any, key: str, *, allow_empty: bool = False) -> str:
        text = self.name(value, key, allow_empty=allow_empty)
        if text.startswith('/'):
            raise self.fail(key, f'{text!r} must be a relative name (no leading "/"), so that it '
                                 'resolves in the node\'s namespace')
        return text

    def number(self, value: Any, key: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(key, f'expected a finite number, got {value!r}')
        if positive and value <= 0:
            raise self.fail(key, f'must be positive, got {value!r}')
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f'expected true or false, got {value!r}')
        return value

    def string_list(self, value: Any, key: str, *, allow_empty: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise self.fail(key, f'expected a {"" if allow_empty else "non-empty "}list of names, got {value!r}')
        out = tuple(self.name(v, f'{key}[{i}]') for i, v in enumerate(value))
        if len(set(out)) != len(out):
            raise self.fail(key, f'duplicate names in {list(out)}')
        return out

    def number_list(self, value: Any, key: str, length: int | None = None) -> tuple[float, ...]:
        if not isinstance(value, list) or (length is not None and len(value) != length):
            what = f'a list of {length} numbers' if length else 'a list of numbers'
            raise self.fail(key, f'expected {what}, got {value!r}')
        return tuple(self.number(v, f'{key}[{i}]') for i, v in enumerate(value))

    def choice(self, value: Any, key: str, enum_type: type[enum.Enum], exclude: tuple = ()) -> Any:
        allowed = [m.value for m in enum_type if m not in exclude]
        if value not in allowed:
            raise self.fail(key, f'expected one of {allowed}, got {value!r}')
        return enum_type(value)


_TOP_REQUIRED = {'name', 'joint_names', 'frames', 'delta_frame', 'rotation_convention', 'norm_stats_key',
                 'step_period_s', 'start_mode', 'sink', 'gripper', 'safety'}
_TOP_OPTIONAL = {'description', 'urdf_file', 'action_scale'}
_SAFETY_REQUIRED = {'max_step_translation_m', 'max_step_rotation_rad', 'workspace_min_m', 'workspace_max_m',
                    'gripper_min', 'gripper_max', 'max_action_age_s', 'camera_timeout_s', 'model_timeout_s'}
_SAFETY_OPTIONAL = {'max_joint_velocity_scale', 'joint_position_margin'}


def profile_from_mapping(data: Any, source: str = '<mapping>', expected_name: str | None = None) -> RobotProfile:
    """Validate a parsed YAML mapping into a :class:`RobotProfile` (ProfileError on any problem)."""
    r = _Reader(source)
    data = r.mapping(data, '', _TOP_REQUIRED, _TOP_OPTIONAL)
    name = r.name(data['name'], 'name')
    if expected_name is not None and name != expected_name:
        raise r.fail('name', f'{name!r} does not match the file name {expected_name!r}')
    description = r.string(data.get('description', ''), 'description', allow_empty=True)
    urdf_file = data.get('urdf_file')
    if urdf_file is not None:
        urdf_file = r.string(urdf_file, 'urdf_file')
    joint_names = r.string_list(data['joint_names'], 'joint_names')
    frames_map = r.mapping(data['frames'], 'frames', {'base', 'ee', 'camera'})
    frames = RobotFrames(base=r.name(frames_map['base'], 'frames.base'),
                         ee=r.name(frames_map['ee'], 'frames.ee'),
                         camera=r.name(frames_map['camera'], 'frames.camera'))
    delta_frame = r.choice(data['delta_frame'], 'delta_frame', DeltaFrame)
    rotation_convention = r.choice(data['rotation_convention'], 'rotation_convention', RotationConvention,
                                   exclude=(RotationConvention.UNSPECIFIED,))
    norm_stats_key = r.string(data['norm_stats_key'], 'norm_stats_key')
    step_period_s = r.number(data['step_period_s'], 'step_period_s', positive=True)
    start_mode = r.choice(data['start_mode'], 'start_mode', StartMode)
    action_scale = ActionScale()
    if 'action_scale' in data:
        a = r.mapping(data['action_scale'], 'action_scale', {'translation_m_per_unit', 'rotation_rad_per_unit'},
                      {'clip_units'})
        clip = a.get('clip_units')
        action_scale = ActionScale(
            translation_m_per_unit=r.number(a['translation_m_per_unit'], 'action_scale.translation_m_per_unit',
                                            positive=True),
            rotation_rad_per_unit=r.number(a['rotation_rad_per_unit'], 'action_scale.rotation_rad_per_unit',
                                           positive=True),
            clip_units=None if clip is None else r.number(clip, 'action_scale.clip_units', positive=True))

    sink_map = r.mapping(data['sink'], 'sink',
                         {'mode', 'arm_controller', 'gripper_controller', 'gripper_controller_type',
                          'gripper_joint_names'}, {'servo_node', 'gripper_joint_multipliers',
                                                   'gripper_max_effort', 'moveit_planning_group'})
    gripper_type = r.choice(sink_map['gripper_controller_type'], 'sink.gripper_controller_type',
                            GripperControllerType)
    gripper_joints = r.string_list(sink_map['gripper_joint_names'], 'sink.gripper_joint_names', allow_empty=True)
    if gripper_type in (GripperControllerType.JTC, GripperControllerType.FORWARD) and not gripper_joints:
        raise r.fail('sink.gripper_joint_names', f'a {gripper_type.value} gripper controller needs its joint names')
    multipliers = sink_map.get('gripper_joint_multipliers')
    multipliers = (tuple(1.0 for _ in gripper_joints) if multipliers is None else
                   r.number_list(multipliers, 'sink.gripper_joint_multipliers', len(gripper_joints)))
    gripper_controller = r.relative(sink_map['gripper_controller'], 'sink.gripper_controller',
                                    allow_empty=gripper_type is GripperControllerType.NONE)
    max_effort = 0.0
    if 'gripper_max_effort' in sink_map:
        if gripper_type is not GripperControllerType.GRIPPER_ACTION:
            raise r.fail('sink.gripper_max_effort', 'applies only to gripper_controller_type gripper_action')
        max_effort = r.number(sink_map['gripper_max_effort'], 'sink.gripper_max_effort')
        if max_effort < 0.0:
            raise r.fail('sink.gripper_max_effort', f'must be >= 0, got {max_effort!r}')
    planning_group = r.name(sink_map.get('moveit_planning_group', ''), 'sink.moveit_planning_group',
                            allow_empty=True)
    sink = SinkConfig(
        mode=r.choice(sink_map['mode'], 'sink.mode', SinkMode),
        arm_controller=r.relative(sink_map['arm_controller'], 'sink.arm_controller'),
        gripper_controller=gripper_controller, gripper_controller_type=gripper_type,
        gripper_joint_names=gripper_joints, gripper_joint_multipliers=multipliers,
        servo_node=r.relative(sink_map.get('servo_node', 'servo_node'), 'sink.servo_node'),
        gripper_max_effort=max_effort, moveit_planning_group=planning_group)

    g = r.mapping(data['gripper'], 'gripper', {'mode', 'threshold', 'invert', 'open_command', 'closed_command'},
                  {'raw_min', 'raw_max'})
    try:
        gripper = GripperMapping(
            mode=r.choice(g['mode'], 'gripper.mode', GripperMode),
            threshold=r.number(g['threshold'], 'gripper.threshold'),
            invert=r.boolean(g['invert'], 'gripper.invert'),
            open_command=r.number(g['open_command'], 'gripper.open_command'),
            closed_command=r.number(g['closed_command'], 'gripper.closed_command'),
            raw_min=r.number(g.get('raw_min', -1.0), 'gripper.raw_min'),
            raw_max=r.number(g.get('raw_max', 1.0), 'gripper.raw_max'))
    except ValueError as error:
        if isinstance(error, ProfileError):
            raise
        raise r.fail('gripper', str(error)) from None

    s = r.mapping(data['safety'], 'safety', _SAFETY_REQUIRED, _SAFETY_OPTIONAL)
    values = {}
    for key in sorted(_SAFETY_REQUIRED | _SAFETY_OPTIONAL):
        if key not in s:
            continue
        if key.startswith('workspace_'):
            values[key] = r.number_list(s[key], f'safety.{key}', 3)
        else:
            values[key] = r.number(s[key], f'safety.{key}')
    try:
        safety = SafetyLimits(**values)
    except ValueError as error:
        raise r.fail('safety', str(error)) from None
    for command in ('open_command', 'closed_command'):
        value = getattr(gripper, command)
        if not safety.gripper_min <= value <= safety.gripper_max:
            raise r.fail(f'gripper.{command}', f'{value} lies outside safety gripper range '
                                               f'[{safety.gripper_min}, {safety.gripper_max}]')
    return RobotProfile(name=name, description=description, urdf_file=urdf_file, joint_names=joint_names,
                        frames=frames, delta_frame=delta_frame, rotation_convention=rotation_convention,
                        norm_stats_key=norm_stats_key, step_period_s=step_period_s, start_mode=start_mode,
                        sink=sink, gripper=gripper, safety=safety, action_scale=action_scale, source=source)


# ---------------------------------------------------------------------------------------------------
# Finding and loading

def _share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('molmoact_bringup'))
    except Exception:  # ament_index absent, or the package is not installed: use the source tree
        return None


def profiles_dir() -> Path:
    """Directory of the profiles: $MOLMOACT_ROBOT_PROFILES, else the installed molmoact_bringup share,
    else the source checkout's ``config/robots`` (searched upwards from this file)."""
    looked = []
    env = os.environ.get(PROFILES_DIR_ENV)
    if env:
        return Path(env)
    share = _share_dir()
    if share is not None:
        candidate = share / _RELATIVE
        looked.append(candidate)
        if candidate.is_dir():
            return candidate
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / _RELATIVE
        looked.append(candidate)
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError('robot profiles not found; looked at: ' + ', '.join(map(str, looked)))


def list_profiles(directory: str | Path | None = None) -> list[str]:
    """Names of the profiles in ``directory`` (default :func:`profiles_dir`), sorted."""
    root = Path(directory) if directory is not None else profiles_dir()
    return sorted(p.stem for p in root.glob('*.yaml'))


def load_profile(name_or_path: str | Path, directory: str | Path | None = None) -> RobotProfile:
    """Load a profile by name (``config/robots/<name>.yaml``) or from a YAML file path."""
    text = str(name_or_path)
    if text.endswith(('.yaml', '.yml')) or os.sep in text:
        path = Path(text)
    else:
        root = Path(directory) if directory is not None else profiles_dir()
        path = root / f'{text}.yaml'
        if not path.is_file():
            raise ProfileError(f'unknown robot profile {text!r}; available: {list_profiles(root)} (in {root})')
    if not path.is_file():
        raise ProfileError(f'robot profile file {str(path)!r} does not exist')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as error:
        raise ProfileError(f'{path}: not valid YAML: {error}') from None
    return profile_from_mapping(data, source=str(path), expected_name=path.stem)


def resolve_urdf_file(profile: RobotProfile) -> Path:
    """Absolute path of ``profile.urdf_file`` (in the molmoact_bringup share, or the source tree)."""
    if not profile.urdf_file:
        raise ProfileError(f'{profile.source}: profile {profile.name!r} names no urdf_file; '
                           'read the robot_description instead')
    looked = []
    share = _share_dir()
    roots = ([share] if share is not None else []) + [
        parent / 'src' / 'molmoact_bringup' for parent in Path(__file__).resolve().parents]
    for root in roots:
        candidate = root / profile.urdf_file
        looked.append(candidate)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f'URDF {profile.urdf_file!r} of profile {profile.name!r} not found; looked at: '
                            + ', '.join(map(str, looked[:4])))
