"""Robot profiles: the four shipped ones load and are consistent; bad YAML gives clear errors."""

import copy

import numpy as np
import pytest
import yaml

from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.execution import DeltaFrame, GripperMode, StartMode
from molmoact_ros.robot.executor import SinkMode
from molmoact_ros.robot.kinematics import ArmKinematics
from molmoact_ros.robot.profiles import (GripperControllerType, ProfileError, list_profiles, load_profile,
                                         profile_from_mapping, profiles_dir, resolve_urdf_file)

SHIPPED = ['fr3_droid', 'libero_panda', 'sim_panda', 'ur5e', 'widowx250_bridge']
# LIBERO's checkpoints read rotation deltas as rotation vectors (robosuite OSC_POSE); the others as RPY.
AXIS_ANGLE = {'libero_panda'}


def test_the_shipped_profiles_load():
    assert list_profiles() == SHIPPED
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.rotation_convention is (RotationConvention.ROTATION_VECTOR if name in AXIS_ANGLE else
                                               RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW)
        assert profile.delta_frame is DeltaFrame.BASE
        assert profile.safety.in_workspace(np.add(profile.safety.workspace_min_m, profile.safety.workspace_max_m) / 2)
        for topic in (profile.sink.joint_trajectory_topic, profile.sink.twist_topic, profile.sink.pose_topic):
            assert not topic.startswith('/')
        assert profile.safety.gripper_min <= profile.gripper.open_command <= profile.safety.gripper_max


def test_profile_facts():
    sim = load_profile('sim_panda')
    assert sim.norm_stats_key == 'molmoact'
    assert sim.sink.mode is SinkMode.JOINT_TRAJECTORY
    assert sim.sink.joint_trajectory_topic == 'joint_trajectory_controller/joint_trajectory'
    assert sim.sink.gripper_target == 'gripper_controller/commands'  # the simulated arm's topics
    assert sim.start_mode is StartMode.OBSERVATION and sim.control_rate_hz == pytest.approx(10.0)
    assert load_profile('widowx250_bridge').norm_stats_key == 'bridge_orig'
    assert load_profile('widowx250_bridge').step_period_s == pytest.approx(0.2)  # Bridge: 5 Hz
    assert load_profile('widowx250_bridge').sink.gripper_joint_multipliers == (1.0, -1.0)
    fr3 = load_profile('fr3_droid')
    assert fr3.joint_names == tuple(f'fr3_joint{i}' for i in range(1, 8))
    assert fr3.frames.base == 'fr3_link0' and fr3.sink.gripper_target == 'franka_gripper/gripper_action'
    ur = load_profile('ur5e')
    assert ur.joint_names[0] == 'shoulder_pan_joint' and ur.joint_names[-1] == 'wrist_3_joint'
    assert ur.sink.gripper_controller_type is GripperControllerType.GRIPPER_ACTION
    assert ur.sink.gripper_target == 'robotiq_gripper_controller/gripper_cmd'
    assert ur.gripper.mode is GripperMode.BINARIZE
    # MoveIt planning groups (moveit_py IK) and GripperCommand efforts
    assert [load_profile(n).sink.moveit_planning_group for n in SHIPPED] == [
        'fr3_arm', 'panda_arm', 'panda_arm', 'ur_manipulator', 'interbotix_arm']
    assert fr3.sink.gripper_max_effort == 40.0 and ur.sink.gripper_max_effort == 0.0
    assert sim.sink.gripper_max_effort == 0.0  # not a gripper_action controller: unused


def test_optional_sink_keys_default(good):
    data = copy.deepcopy(good)
    del data['sink']['moveit_planning_group']
    profile = profile_from_mapping(data)
    assert profile.sink.moveit_planning_group == '' and profile.sink.gripper_max_effort == 0.0


def test_pipeline_parameters():
    assert load_profile('widowx250_bridge').pipeline_parameters() == {
        'unnorm_key': 'bridge_orig', 'step_period_s': 0.2, 'delta_frame_id': 'wx250s/base_link'}
    sim = load_profile('sim_panda')
    tool = profile_from_mapping({**yaml.safe_load((profiles_dir() / 'sim_panda.yaml').read_text()),
                                 'delta_frame': 'tool'})
    assert sim.delta_frame_id == 'panda_link0' and tool.delta_frame_id == 'panda_hand_tcp'


def test_sim_panda_matches_the_shipped_urdf():
    sim = load_profile('sim_panda')
    path = resolve_urdf_file(sim)
    kin = ArmKinematics.from_urdf_file(str(path), base_frame=sim.frames.base, ee_frame=sim.frames.ee,
                                       joint_names=sim.joint_names)
    assert kin.dof == 7
    assert set(sim.sink.gripper_joint_names) <= {'panda_finger_joint1', 'panda_finger_joint2'}
    limits = sim.safety.with_joint_limits(kin.limits)
    home = kin.fk(np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398]))
    assert limits.in_workspace(home[:3, 3])
    with pytest.raises(ProfileError, match='names no urdf_file'):
        resolve_urdf_file(load_profile('ur5e'))


def test_load_by_path_and_env_directory(tmp_path, monkeypatch):
    data = yaml.safe_load((profiles_dir() / 'sim_panda.yaml').read_text())
    data['name'] = 'my_arm'
    path = tmp_path / 'my_arm.yaml'
    path.write_text(yaml.safe_dump(data))
    assert load_profile(str(path)).name == 'my_arm'
    monkeypatch.setenv('MOLMOACT_ROBOT_PROFILES', str(tmp_path))
    assert list_profiles() == ['my_arm']
    assert load_profile('my_arm').source == str(path)


@pytest.fixture()
def good():
    return yaml.safe_load((profiles_dir() / 'sim_panda.yaml').read_text())


def _set(data, dotted, value):
    *parents, last = dotted.split('.')
    for key in parents:
        data = data[key]
    if value is KeyError:
        del data[last]
    else:
        data[last] = value


@pytest.mark.parametrize('key, value, message', [
    ('joint_names', KeyError, r"missing keys \['joint_names'\]"),
    ('safety.max_step_translation_m', KeyError, r"safety: missing keys \['max_step_translation_m'\]"),
    ('sink.arm_controler', 'x', r"sink: unknown keys \['arm_controler'\]"),
    ('step_period_s', 'fast', r"step_period_s: expected a finite number, got 'fast'"),
    ('step_period_s', -0.1, 'step_period_s: must be positive'),
    ('delta_frame', 'world', r"delta_frame: expected one of \['base', 'tool'\], got 'world'"),
    ('rotation_convention', 'unspecified', "rotation_convention: expected one of"),
    ('sink.mode', 'teleport', 'sink.mode: expected one of'),
    ('sink.arm_controller', '/panda_arm_controller', 'must be a relative name'),
    ('joint_names', ['a', 'a'], 'joint_names: duplicate names'),
    ('joint_names', [], 'joint_names: expected a non-empty list'),
    ('frames.ee', 'panda hand', "frames.ee: 'panda hand' is not a valid ROS name"),
    ('safety.workspace_min_m', [0, 0], r'safety.workspace_min_m: expected a list of 3 numbers'),
    ('safety.workspace_min_m', [1.0, 0.0, 0.0], 'workspace_min_m .* must be <= workspace_max_m'),
    ('safety.max_joint_velocity_scale', 2.0, r'max_joint_velocity_scale must be in \(0, 1\]'),
    ('gripper.open_command', 0.08, r'gripper.open_command: 0.08 lies outside safety gripper range'),
    ('gripper.invert', 'no', 'gripper.invert: expected true or false'),
    ('gripper.raw_min', 2.0, 'gripper: GripperMapping: raw_min'),
    ('sink.gripper_joint_names', [], 'a forward gripper controller needs its joint names'),
    ('sink.gripper_joint_multipliers', [1.0, -1.0], r'expected a list of 1 numbers'),
    ('name', 'other', "name: 'other' does not match the file name 'sim_panda'"),
    ('sink.gripper_max_effort', 10.0, 'sink.gripper_max_effort: applies only to gripper_controller_type '
                                      'gripper_action'),
    ('sink.moveit_planning_group', 'panda arm', "sink.moveit_planning_group: 'panda arm' is not a valid ROS name"),
])
def test_bad_profiles_give_clear_errors(good, key, value, message):
    data = copy.deepcopy(good)
    _set(data, key, value)
    with pytest.raises(ProfileError, match=message) as info:
        profile_from_mapping(data, source='sim_panda.yaml', expected_name='sim_panda')
    assert str(info.value).startswith('sim_panda.yaml: ')


def test_gripper_action_effort_must_be_non_negative(good):
    data = copy.deepcopy(good)
    data['sink'].update({'gripper_controller_type': 'gripper_action', 'gripper_joint_names': [],
                         'gripper_max_effort': -1.0})
    with pytest.raises(ProfileError, match='sink.gripper_max_effort: must be >= 0'):
        profile_from_mapping(data, source='sim_panda.yaml')
    data['sink']['gripper_max_effort'] = 12.5
    profile = profile_from_mapping(data, source='sim_panda.yaml')
    assert profile.sink.gripper_max_effort == 12.5
    assert profile.sink.gripper_target == 'gripper_controller/gripper_cmd'


def test_file_level_errors(tmp_path):
    with pytest.raises(ProfileError, match=r"unknown robot profile 'kuka'; available: \['fr3_droid'"):
        load_profile('kuka')
    bad = tmp_path / 'broken.yaml'
    bad.write_text('name: [unclosed\n')
    with pytest.raises(ProfileError, match='broken.yaml: not valid YAML'):
        load_profile(str(bad))
    empty = tmp_path / 'empty.yaml'
    empty.write_text('')
    with pytest.raises(ProfileError, match='empty.yaml: expected a mapping, got NoneType'):
        load_profile(str(empty))
    with pytest.raises(ProfileError, match='does not exist'):
        load_profile(str(tmp_path / 'missing.yaml'))
