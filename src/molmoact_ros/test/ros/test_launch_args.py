"""molmoact_ros.ros.launch_args: the launch file's argument handling (no launch needed)."""

import pytest

from molmoact_ros.nodes.command_sink import SINK_CHOICES, CommandSinkNode
from molmoact_ros.nodes.engine_provider import ENGINE_PARAMETERS
from molmoact_ros.robot.profiles import load_profile, profiles_dir
from molmoact_ros.ros import launch_args as la
from molmoact_ros.ros.launch_args import LaunchArgumentError, node_descriptions, resolve, rviz_description

EXPECTED_ARGS = {'robot', 'model', 'dtype', 'quantization', 'namespace', 'camera_image_topic', 'camera_info_topic',
                 'wrist_image_topic', 'aligned_depth_topic', 'instruction_topic', 'clicked_point_topic', 'params_file', 'use_sim_time', 'rviz', 'layout',
                 'log_level', 'execute', 'sink'}


def test_argument_table():
    names = [a.name for a in la.LAUNCH_ARGUMENTS]
    assert set(names) == EXPECTED_ARGS and len(names) == len(set(names))
    assert all(a.description.strip() and isinstance(a.default, str) for a in la.LAUNCH_ARGUMENTS)
    assert all(not a.choices or a.default in a.choices for a in la.LAUNCH_ARGUMENTS)
    d = la.defaults()
    assert d['robot'] == 'sim_panda' and d['layout'] == 'single_process' and d['rviz'] == 'false'
    engine = {p.name: p for p in ENGINE_PARAMETERS}
    for name in ('model', 'dtype', 'quantization'):  # launch defaults = node defaults
        assert d[name] == engine[name].default
    sink = {p.name: p for p in CommandSinkNode.PARAMETERS}
    assert la.SINK_CHOICES == SINK_CHOICES == sink['sink'].choices and d['sink'] == sink['sink'].default
    assert la.parse_bool(d['execute']) is sink['execution_enabled'].default is False
    assert d['robot'] == sink['robot_profile'].default
    resolve({})  # the defaults are valid


def _sink_checks(sink, *, namespace='', profile='sim_panda', sink_mode='profile', execute=False,
                 params_file='/share/params.yaml', sim_time=False, log_level='info'):
    assert (sink.package, sink.executable, sink.name, sink.namespace) == ('molmoact_ros', 'command_sink',
                                                                          'command_sink', namespace)
    assert sink.lifecycle and sink.ros_arguments == ['--log-level', log_level]
    assert sink.parameters == [params_file, {'robot_profile': profile, 'sink': sink_mode,
                                             'execution_enabled': execute, 'use_sim_time': sim_time}]


def test_single_process_defaults():
    config = resolve({})
    node, sink = node_descriptions(config, default_params_file='/share/params.yaml')
    _sink_checks(sink)
    assert (node.package, node.executable, node.name, node.namespace) == ('molmoact_ros', 'pipeline', None, '')
    assert node.parameters == ['/share/params.yaml', {'model': 'tiny', 'dtype': 'bfloat16', 'quantization': 'none',
                                                      'use_sim_time': False}]
    # RViz's Publish Point tool publishes on the absolute /clicked_point
    assert node.remappings == [('clicked_point', '/clicked_point')]
    assert node.ros_arguments == ['--log-level', 'info'] and not node.lifecycle
    kwargs = node.launch_kwargs()
    assert 'name' not in kwargs and kwargs['executable'] == 'pipeline' and kwargs['output'] == 'screen'
    assert rviz_description(config, '/x.rviz') is None


def test_multi_process_nodes_and_remaps(tmp_path):
    (tmp_path / 'ur5e.yaml').write_text((profiles_dir() / 'ur5e.yaml').read_text())
    ur5e = load_profile('ur5e').pipeline_parameters()
    config = resolve({'layout': 'multi_process', 'namespace': 'arm1', 'robot': 'ur5e',
                      'camera_image_topic': '/camera/color/image_raw', 'camera_info_topic': 'camera_info',
                      'instruction_topic': '/task', 'params_file': '/my.yaml', 'use_sim_time': 'True',
                      'model': 'allenai/MolmoAct-7B-D-0812', 'quantization': '4bit', 'log_level': 'DEBUG',
                      'execute': 'true', 'sink': 'servo_pose'})
    nodes = node_descriptions(config, default_params_file='/share/params.yaml', robot_profiles_dir=str(tmp_path))
    _sink_checks(nodes.pop(), namespace='arm1', profile=str(tmp_path / 'ur5e.yaml'), sink_mode='servo_pose',
                 execute=True, params_file='/my.yaml', sim_time=True, log_level='debug')
    assert [(n.executable, n.name) for n in nodes] == [
        ('perception_node', 'perception'), ('trace_planner_node', 'trace_planner'),
        ('action_decoder_node', 'action_decoder')]
    assert all(n.lifecycle and n.namespace == 'arm1' for n in nodes)
    assert nodes[0].remappings == [('image', '/camera/color/image_raw'), ('instruction', '/task')]
    assert nodes[1].remappings == [('clicked_point', '/clicked_point')] and nodes[2].remappings == []
    for n in nodes:
        # params_file, then the profile's pipeline parameters (a dict: a profile is no ROS params file)
        assert n.parameters[0] == '/my.yaml' and n.parameters[1] == ur5e
        assert set(ur5e) == {'unnorm_key', 'step_period_s', 'delta_frame_id'}
        assert n.parameters[2] == {'model': 'allenai/MolmoAct-7B-D-0812', 'dtype': 'bfloat16', 'quantization': '4bit',
                                   'use_sim_time': True}
        assert n.ros_arguments == ['--log-level', 'debug'] and n.launch_kwargs()['name'] == n.name
    # the lists are independent copies
    nodes[0].parameters.append('x')
    assert 'x' not in nodes[1].parameters


def test_single_process_collects_remaps_once_and_rviz():
    config = resolve({'camera_image_topic': 'cam/image', 'wrist_image_topic': '/wrist/image', 'rviz': '1',
                      'namespace': '/'})
    node, sink = node_descriptions(config)
    assert node.remappings == [('image', 'cam/image'), ('wrist_image', '/wrist/image'),
                               ('clicked_point', '/clicked_point')]
    assert sink.remappings == [('image', 'cam/image')]  # the sink watches the same camera
    assert node.namespace == '' and node.parameters[-1]['use_sim_time'] is False and len(node.parameters) == 1
    rviz = rviz_description(config, '/share/molmoact.rviz')
    assert (rviz.package, rviz.executable, rviz.arguments) == ('rviz2', 'rviz2', ['-d', '/share/molmoact.rviz'])
    assert rviz.remappings == [('image', 'cam/image')]  # the Image display follows the camera remap


def test_missing_robot_profile_is_skipped(tmp_path):
    assert la.robot_profile_file('sim_panda', str(tmp_path)) is None
    assert la.robot_profile_file('sim_panda', None) is None
    node, sink = node_descriptions(resolve({}), robot_profiles_dir=str(tmp_path))
    assert len(node.parameters) == 1
    assert sink.parameters[0]['robot_profile'] == 'sim_panda'  # the sink looks the name up itself


def test_installed_profile_parameters_reach_the_pipeline():
    node, sink = node_descriptions(resolve({}), default_params_file='/p.yaml', robot_profiles_dir=str(profiles_dir()))
    assert node.parameters[1] == {'unnorm_key': 'molmoact', 'step_period_s': 0.1, 'delta_frame_id': 'panda_link0'}
    assert sink.parameters[1]['robot_profile'] == str(profiles_dir() / 'sim_panda.yaml')


def test_bad_profile_is_a_launch_error(tmp_path):
    (tmp_path / 'sim_panda.yaml').write_text('name: sim_panda\n')
    with pytest.raises(LaunchArgumentError, match='robot.*missing keys'):
        node_descriptions(resolve({}), robot_profiles_dir=str(tmp_path))


@pytest.mark.parametrize('values, words', [
    ({'layout': 'two_process'}, ['layout', 'single_process', 'multi_process']),
    ({'use_sim_time': 'maybe'}, ['use_sim_time', 'boolean']),
    ({'rviz': ''}, ['rviz', 'boolean']),
    ({'model': '  '}, ['model', 'empty']),
    ({'dtype': 'int8'}, ['dtype', 'bfloat16']),
    ({'quantization': '2bit'}, ['quantization']),
    ({'log_level': 'verbose'}, ['log_level']),
    ({'namespace': 'bad ns'}, ['namespace']),
    ({'namespace': 'arm1/'}, ['namespace']),
    ({'camera_image_topic': ''}, ['camera_image_topic']),
    ({'instruction_topic': '/a//b'}, ['instruction_topic']),
    ({'robot': '../etc'}, ['robot']),
    ({'robto': 'x'}, ['unknown', 'robto']),
    ({'execute': 'sometimes'}, ['execute', 'boolean']),
    ({'sink': 'moveit'}, ['sink', 'servo_twist']),
])
def test_validation_errors(values, words):
    with pytest.raises(LaunchArgumentError) as info:
        resolve(values)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize('text, value', [('true', True), ('True', True), ('1', True), ('yes', True),
                                         ('false', False), ('FALSE', False), ('0', False), (' off ', False)])
def test_parse_bool(text, value):
    assert la.parse_bool(text, 'x') is value


def test_unknown_layout_in_config():
    config = resolve({})
    object.__setattr__(config, 'layout', 'nope')
    with pytest.raises(LaunchArgumentError, match='layout'):
        node_descriptions(config)
