"""Argument handling of ``launch/molmoact.launch.py``, ROS-free so that it is unit-tested without launch.

The launch file declares :data:`LAUNCH_ARGUMENTS`, resolves them to strings, and hands them to
:func:`resolve` (validation, typed :class:`LaunchConfig`) and :func:`node_descriptions` (what to start,
as plain :class:`NodeDescription` dataclasses that map one to one onto ``launch_ros.actions.Node`` /
``LifecycleNode`` keyword arguments). Nothing here imports launch, launch_ros or rclpy.

Parameter precedence on the pipeline nodes (later wins): ``params_file`` (default: the installed
``config/molmoact_params.yaml``), then the robot profile's pipeline parameters (``unnorm_key``,
``step_period_s``, ``delta_frame_id`` from ``config/robots/<robot>.yaml`` when that profile exists:
:meth:`~molmoact_ros.robot.profiles.RobotProfile.pipeline_parameters`; a profile is not a ROS parameter
file), then the launch arguments ``model``, ``dtype``, ``quantization`` and ``use_sim_time``.

The command sink (``command_sink``, a lifecycle node in both layouts: it needs no engine and stays
responsive while the model runs) gets ``params_file``, then ``robot_profile`` (the profile's path, or the
robot name when the profile is not in ``robot_profiles_dir``), ``sink``, ``execution_enabled`` (launch
argument ``execute``) and ``use_sim_time``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..nodes.engine_provider import ENGINE_PARAMETERS
from ..robot.profiles import ProfileError, load_profile
from . import topics as T
from .topics import TOPICS  # noqa: F401 - re-exported (the pipeline's topics -> publishing node)

__all__ = [
    'LaunchArgument', 'LaunchArgumentError', 'LaunchConfig', 'NodeDescription', 'LAUNCH_ARGUMENTS', 'LAYOUTS',
    'LOG_LEVELS', 'PACKAGE', 'STAGE_NODES', 'INPUT_REMAPS', 'TOPICS', 'defaults', 'parse_bool', 'resolve',
    'node_descriptions', 'rviz_description', 'robot_profile_file', 'SINK_NODE', 'SINK_CHOICES', 'sink_description',
]

PACKAGE = 'molmoact_ros'
LAYOUTS = ('single_process', 'multi_process')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
_ENGINE = {p.name: p for p in ENGINE_PARAMETERS}
DTYPES = _ENGINE['dtype'].choices
QUANTIZATIONS = _ENGINE['quantization'].choices

#: (node name, executable) of the three stages, in bring-up order (multi_process layout).
STAGE_NODES: Tuple[Tuple[str, str], ...] = (
    ('perception', 'perception_node'),
    ('trace_planner', 'trace_planner_node'),
    ('action_decoder', 'action_decoder_node'),
)
SINGLE_PROCESS_EXECUTABLE = 'pipeline'
#: (node name, executable) of the command sink.
SINK_NODE: Tuple[str, str] = ('command_sink', 'command_sink')
#: Values of the sink launch argument (the sink node's ``sink`` parameter).
SINK_CHOICES: Tuple[str, ...] = ('profile', 'joint_trajectory', 'servo_twist', 'servo_pose', 'none')

#: launch argument -> (the node's relative input topic, the nodes that subscribe to it).
INPUT_REMAPS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    'camera_image_topic': (T.IMAGE, ('perception', 'rviz2', 'command_sink')),
    'camera_info_topic': (T.CAMERA_INFO, ('perception',)),
    'wrist_image_topic': (T.WRIST_IMAGE, ('perception',)),
    'aligned_depth_topic': (T.ALIGNED_DEPTH, ('perception',)),
    'instruction_topic': (T.INSTRUCTION, ('perception',)),
    'clicked_point_topic': (T.CLICKED_POINT, ('trace_planner',)),
}


class LaunchArgumentError(ValueError):
    """A launch argument has a value that cannot be used; the message names the argument."""


@dataclass(frozen=True)
class LaunchArgument:
    """One ``DeclareLaunchArgument``: name, default (a string, as launch passes it) and description."""

    name: str
    default: str
    description: str
    choices: Tuple[str, ...] = ()


LAUNCH_ARGUMENTS: Tuple[LaunchArgument, ...] = (
    LaunchArgument('robot', 'sim_panda', 'Robot profile name: loads config/robots/<robot>.yaml (installed with '
                   'molmoact_bringup) before params_file when that profile exists.'),
    LaunchArgument('model', 'tiny', 'MolmoAct checkpoint: a local directory, a Hugging Face hub id (e.g. '
                   'allenai/MolmoAct-7B-D-0812) or "tiny" (random-weight structural test model, offline). '
                   'Overrides params_file.'),
    LaunchArgument('dtype', 'bfloat16', 'Weights dtype. Overrides params_file.', DTYPES),
    LaunchArgument('quantization', 'none', 'bitsandbytes quantization of the LLM. Overrides params_file.',
                   QUANTIZATIONS),
    LaunchArgument('namespace', '', 'Namespace of every node (empty: the enclosing namespace).'),
    LaunchArgument('camera_image_topic', T.IMAGE, 'Camera image topic (sensor_msgs/Image) fed to perception.'),
    LaunchArgument('camera_info_topic', T.CAMERA_INFO, 'CameraInfo topic of the camera image.'),
    LaunchArgument('wrist_image_topic', T.WRIST_IMAGE, 'Wrist camera image topic (used when use_wrist_image).'),
    LaunchArgument('aligned_depth_topic', T.ALIGNED_DEPTH, 'Depth image aligned with the camera image (used when '
                   'use_aligned_depth).'),
    LaunchArgument('instruction_topic', T.INSTRUCTION, 'Instruction topic (std_msgs/String, latched).'),
    LaunchArgument('clicked_point_topic', '/' + T.CLICKED_POINT, 'Topic of RViz\'s Publish Point tool '
                   '(geometry_msgs/PointStamped): clicked points become an edited trace.'),
    LaunchArgument('params_file', '', 'Node parameters YAML (empty: the installed config/molmoact_params.yaml).'),
    LaunchArgument('use_sim_time', 'false', 'Use /clock (simulation time) in every node.', ('true', 'false')),
    LaunchArgument('rviz', 'false', 'Start RViz2 with config/molmoact.rviz.', ('true', 'false')),
    LaunchArgument('layout', 'single_process', 'single_process: one process, one engine, KV-cache handoff '
                   '(brings its nodes up itself); multi_process: one lifecycle node per process, brought up '
                   'by launch.', LAYOUTS),
    LaunchArgument('log_level', 'info', 'Log level of the pipeline nodes.', LOG_LEVELS),
    LaunchArgument('execute', 'false', 'Let the command sink move the arm from activation on (its '
                   'execution_enabled); false: it starts disabled until its ~/enable service is called.',
                   ('true', 'false')),
    LaunchArgument('sink', 'profile', 'How the command sink moves the arm: profile (the robot profile\'s '
                   'sink.mode), joint_trajectory, servo_twist, servo_pose or none (dry run).', SINK_CHOICES),
)


def defaults() -> Dict[str, str]:
    """Every launch argument at its default value."""
    return {a.name: a.default for a in LAUNCH_ARGUMENTS}


@dataclass(frozen=True)
class LaunchConfig:
    """The resolved, validated launch arguments."""

    robot: str
    model: str
    dtype: str
    quantization: str
    namespace: str
    topics: Dict[str, str]          # launch argument (e.g. camera_image_topic) -> topic name
    params_file: str
    use_sim_time: bool
    rviz: bool
    layout: str
    log_level: str
    execute: bool = False
    sink: str = 'profile'


@dataclass
class NodeDescription:
    """What to start: maps onto launch_ros ``Node`` / ``LifecycleNode`` keyword arguments.

    ``name`` is None for the single-process runner: it hosts several nodes, and a ``__node`` remap would
    give all of them the same name. ``parameters`` holds YAML file paths and dicts, later entries winning.
    """

    package: str
    executable: str
    name: Optional[str]
    namespace: str
    parameters: List[Any] = field(default_factory=list)
    remappings: List[Tuple[str, str]] = field(default_factory=list)
    arguments: List[str] = field(default_factory=list)
    ros_arguments: List[str] = field(default_factory=list)
    lifecycle: bool = False

    def launch_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``launch_ros.actions.Node`` (and ``LifecycleNode``, which needs name and
        namespace), with ``output='screen'``."""
        kwargs: Dict[str, Any] = dict(package=self.package, executable=self.executable, namespace=self.namespace,
                                      parameters=list(self.parameters), remappings=list(self.remappings),
                                      arguments=list(self.arguments), ros_arguments=list(self.ros_arguments),
                                      output='screen')
        if self.name is not None:
            kwargs['name'] = self.name
        return kwargs


_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')
_TOPIC_RE = re.compile(r'^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')
_NS_RE = re.compile(r'^/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*)?$')
_ROBOT_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')


def parse_bool(text: str, name: str = 'value') -> bool:
    """'true'/'false' (also 1/0, yes/no, on/off; any case) -> bool; anything else is an error."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LaunchArgumentError(f'launch argument {name}:={text!r} is not a boolean (use true or false)')


def _choice(values: Mapping[str, str], arg: LaunchArgument) -> str:
    value = str(values[arg.name]).strip()
    if value not in arg.choices:
        raise LaunchArgumentError(f'launch argument {arg.name}:={value!r} is not one of {", ".join(arg.choices)}')
    return value


def resolve(values: Mapping[str, str]) -> LaunchConfig:
    """Validate resolved launch-argument strings (missing ones take their defaults) -> :class:`LaunchConfig`.

    Raises :class:`LaunchArgumentError` naming the argument: unknown arguments, unknown layout / dtype /
    quantization / log level, bad booleans, an empty model or robot, malformed namespace or topic names.
    """
    unknown = sorted(set(values) - {a.name for a in LAUNCH_ARGUMENTS})
    if unknown:
        raise LaunchArgumentError(f'unknown launch argument(s): {", ".join(unknown)}')
    merged = {**defaults(), **{k: str(v) for k, v in values.items()}}
    args = {a.name: a for a in LAUNCH_ARGUMENTS}

    model = merged['model'].strip()
    if not model:
        raise LaunchArgumentError('launch argument model is empty: give a checkpoint directory, a hub id or "tiny"')
    robot = merged['robot'].strip()
    if not _ROBOT_RE.match(robot):
        raise LaunchArgumentError(f'launch argument robot:={robot!r} is not a profile name (letters, digits, _ . -)')
    namespace = merged['namespace'].strip()
    namespace = '' if namespace == '/' else namespace
    if not _NS_RE.match(namespace):
        raise LaunchArgumentError(f'launch argument namespace:={namespace!r} is not a valid ROS namespace')
    topics = {}
    for arg_name in INPUT_REMAPS:
        topic = merged[arg_name].strip()
        if not _TOPIC_RE.match(topic):
            raise LaunchArgumentError(f'launch argument {arg_name}:={topic!r} is not a valid ROS topic name')
        topics[arg_name] = topic
    log_level = merged['log_level'].strip().lower()
    if log_level not in LOG_LEVELS:
        raise LaunchArgumentError(f'launch argument log_level:={merged["log_level"]!r} is not one of '
                                  f'{", ".join(LOG_LEVELS)}')
    return LaunchConfig(
        robot=robot, model=model,
        dtype=_choice(merged, args['dtype']), quantization=_choice(merged, args['quantization']),
        namespace=namespace, topics=topics,
        params_file=merged['params_file'].strip(),
        use_sim_time=parse_bool(merged['use_sim_time'], 'use_sim_time'),
        rviz=parse_bool(merged['rviz'], 'rviz'),
        layout=_choice(merged, args['layout']), log_level=log_level,
        execute=parse_bool(merged['execute'], 'execute'), sink=_choice(merged, args['sink']))


def robot_profile_file(robot: str, profiles_dir: Optional[str]) -> Optional[str]:
    """``<profiles_dir>/<robot>.yaml`` when it exists, else None (profiles are optional)."""
    if not profiles_dir:
        return None
    path = Path(profiles_dir) / f'{robot}.yaml'
    return str(path) if path.is_file() else None


def _remaps(config: LaunchConfig, node: str) -> List[Tuple[str, str]]:
    """Input remaps of ``node``, only for topics the user changed from the node's own name."""
    out = []
    for arg_name, (topic, nodes) in INPUT_REMAPS.items():
        target = config.topics[arg_name]
        if node in nodes and target != topic:
            out.append((topic, target))
    return out


def _profile_parameters(profile_file: Optional[str]) -> Optional[Dict[str, Any]]:
    """The pipeline parameters of the profile at ``profile_file`` (None without one); a bad profile is a
    :class:`LaunchArgumentError` naming the file and key."""
    if not profile_file:
        return None
    try:
        return load_profile(profile_file).pipeline_parameters()
    except ProfileError as error:
        raise LaunchArgumentError(f'launch argument robot: {error}') from None


def _parameters(config: LaunchConfig, default_params_file: Optional[str],
                profile_params: Optional[Dict[str, Any]]) -> List[Any]:
    params: List[Any] = []
    params_file = config.params_file or default_params_file
    if params_file:
        params.append(params_file)
    if profile_params:
        params.append(dict(profile_params))
    params.append({'model': config.model, 'dtype': config.dtype, 'quantization': config.quantization,
                   'use_sim_time': config.use_sim_time})
    return params


def sink_description(config: LaunchConfig, *, default_params_file: Optional[str] = None,
                     profile_file: Optional[str] = None) -> NodeDescription:
    """The command sink: a lifecycle node (launch brings it up) in the pipeline's namespace."""
    params: List[Any] = []
    params_file = config.params_file or default_params_file
    if params_file:
        params.append(params_file)
    params.append({'robot_profile': profile_file or config.robot, 'sink': config.sink,
                   'execution_enabled': config.execute, 'use_sim_time': config.use_sim_time})
    name, executable = SINK_NODE
    return NodeDescription(PACKAGE, executable, name, config.namespace, params, _remaps(config, name), [],
                           ['--log-level', config.log_level], lifecycle=True)


def node_descriptions(config: LaunchConfig, *, default_params_file: Optional[str] = None,
                      robot_profiles_dir: Optional[str] = None) -> List[NodeDescription]:
    """The pipeline's processes for ``config.layout``, then the command sink.

    single_process: the ``pipeline`` executable (it configures and activates its three nodes itself);
    multi_process: one lifecycle node per stage, for launch to bring up (``lifecycle=True``). Both end with
    the ``command_sink`` lifecycle node (:func:`sink_description`).
    """
    profile = robot_profile_file(config.robot, robot_profiles_dir)
    params = _parameters(config, default_params_file, _profile_parameters(profile))
    sink = sink_description(config, default_params_file=default_params_file, profile_file=profile)
    ros_arguments = ['--log-level', config.log_level]
    if config.layout == 'single_process':
        remaps = []
        for node, _ in STAGE_NODES:  # one process: remaps are process-wide; collect each once
            for remap in _remaps(config, node):
                if remap not in remaps:
                    remaps.append(remap)
        return [NodeDescription(PACKAGE, SINGLE_PROCESS_EXECUTABLE, None, config.namespace, list(params), remaps,
                                [], list(ros_arguments), lifecycle=False), sink]
    if config.layout == 'multi_process':
        return [*(NodeDescription(PACKAGE, executable, node, config.namespace, list(params), _remaps(config, node),
                                  [], list(ros_arguments), lifecycle=True)
                  for node, executable in STAGE_NODES), sink]
    raise LaunchArgumentError(f'unknown layout {config.layout!r} (one of {", ".join(LAYOUTS)})')


def rviz_description(config: LaunchConfig, rviz_config: str) -> Optional[NodeDescription]:
    """RViz2 in the pipeline's namespace (the config's relative topics resolve there), or None when
    ``rviz`` is false."""
    if not config.rviz:
        return None
    return NodeDescription('rviz2', 'rviz2', 'rviz2', config.namespace, [{'use_sim_time': config.use_sim_time}],
                           _remaps(config, 'rviz2'), ['-d', rviz_config], [])
