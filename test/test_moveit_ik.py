"""moveit_py IK (robot/kinematics.MoveItPyIk, make_ik_solver) and the command sink's ``ik_backend``.

moveit_py is not installable here, so like test_launch_file.py this installs a *recording stand-in* of the
few moveit_py names the adapter uses, with the signatures of MoveIt 2 Jazzy / Kilted's bindings
(``moveit_py/moveit/core/robot_state.pyi`` and its pybind11 definitions): ``moveit.planning.MoveItPy(
node_name=..., name_space=..., launch_params_filepaths=..., config_dict=..., provide_planning_service=...,
remappings=...)`` with ``get_robot_model()``; ``RobotModel.has_joint_model_group`` /
``get_joint_model_group`` / ``joint_model_group_names``; ``JointModelGroup.active_joint_model_names``;
``moveit.core.robot_state.RobotState(robot_model)`` with the ``joint_positions`` dict property,
``update()``, ``set_to_default_values()``, ``get_frame_transform(frame_id)`` and
``set_from_ik(joint_model_group_name, geometry_pose, tip_name, timeout=0.0)``. The stand-in's "kinematics
plugin" is Pinocchio on the same URDF, and its model frame is *not* the profile's base frame, so the
adapter's frame handling is exercised. It checks the adapter's side of the contract (names, frames, types,
order); it says nothing about MoveIt itself: the moveit_py path is unverified on a real install.
"""

import sys
import threading
import time
import types

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Pose
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from transforms3d.euler import euler2mat
from transforms3d.quaternions import quat2mat

from molmoact_ros.nodes.command_sink import CommandSinkNode
from molmoact_ros.robot.kinematics import (ArmKinematics, IkBackend, KinematicsError, MoveItPyIk,
                                           make_ik_solver, pose_error)

from suite_helpers.spinning import spin_recording
from test_command_sink import (ANCHOR_TOLERANCE_S, ARM, KIN, PROFILE, Q0, URDF, Arm, _profile, duration_s, ee,
                               wait_for)

#: The stand-in's model frame ('world') is offset and turned from the profile's base frame (panda_link0).
T_WORLD_BASE = np.eye(4)
T_WORLD_BASE[:3, :3] = euler2mat(0.0, 0.0, 0.5)
T_WORLD_BASE[:3, 3] = [0.3, -0.2, 0.1]
FINGERS = ['panda_finger_joint1', 'panda_finger_joint2']


class Log:
    def __init__(self):
        self.calls = []

    def __call__(self, name, **kwargs):
        self.calls.append((name, kwargs))

    def named(self, name):
        return [kw for n, kw in self.calls if n == name]


def _pose_to_matrix(pose):
    T = np.eye(4)
    T[:3, :3] = quat2mat([pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z])
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


def stand_in(monkeypatch, *, groups=None, solver_tip='panda_hand_tcp', fail_ik=False):
    """Install moveit, moveit.planning, moveit.core, moveit.core.robot_state; return the call log."""
    log = Log()
    groups = {'panda_arm': list(ARM)} if groups is None else groups
    solver = ArmKinematics.from_urdf(URDF, base_frame='panda_link0', ee_frame=solver_tip, joint_names=ARM)

    class JointModelGroup:
        def __init__(self, name, joints):
            self.name, self.active_joint_model_names = name, list(joints)

    class RobotModel:
        model_frame = 'world'

        @property
        def joint_model_group_names(self):
            return list(groups)

        def has_joint_model_group(self, joint_model_group_name):
            return joint_model_group_name in groups

        def get_joint_model_group(self, joint_model_group_name):
            return JointModelGroup(joint_model_group_name, groups[joint_model_group_name])

    class RobotState:
        def __init__(self, robot_model):
            assert isinstance(robot_model, RobotModel)
            # variables in the model's order (fingers first: not the profile's order)
            self._values = {name: 0.0 for name in FINGERS + list(reversed(ARM))}
            self.dirty = False
            log('RobotState')

        @property
        def joint_positions(self):
            return dict(self._values)

        @joint_positions.setter
        def joint_positions(self, values):
            for name, value in values.items():
                if name not in self._values:
                    raise KeyError(name)
                self._values[name] = float(value)
            self.dirty = True

        def update(self, force=False, type='all'):  # noqa: A002 - the binding's keyword name
            self.dirty = False

        def set_to_default_values(self):
            for name in self._values:
                self._values[name] = 0.0
            self.dirty = True

        def get_frame_transform(self, frame_id):
            assert not self.dirty, 'get_frame_transform on a dirty state (call update() first)'
            assert frame_id == 'panda_link0', frame_id
            return T_WORLD_BASE.copy()

        def set_from_ik(self, joint_model_group_name, geometry_pose, tip_name, timeout=0.0):
            assert not self.dirty, 'set_from_ik seeded from a dirty state'
            assert type(geometry_pose) is Pose, type(geometry_pose)  # pybind converts only a Pose message
            assert joint_model_group_name in groups and tip_name == 'panda_hand_tcp'
            T_world = _pose_to_matrix(geometry_pose)
            seed = np.array([self._values[n] for n in ARM])
            log('set_from_ik', group=joint_model_group_name, tip=tip_name, timeout=timeout, pose_world=T_world,
                seed=seed)
            if fail_ik:
                return False
            result = solver.ik(np.linalg.inv(T_WORLD_BASE) @ T_world, seed)
            for name, value in zip(ARM, result.q):
                self._values[name] = float(value)
            self.dirty = True
            return bool(result.converged)

    class MoveItPy:
        def __init__(self, node_name='moveit_py', name_space='', launch_params_filepaths=None,
                     config_dict=None, provide_planning_service=True, remappings=None):
            log('MoveItPy', node_name=node_name, launch_params_filepaths=launch_params_filepaths)
            self._model = RobotModel()

        def get_robot_model(self):
            return self._model

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    module('moveit')
    module('moveit.planning', MoveItPy=MoveItPy)
    module('moveit.core')
    module('moveit.core.robot_state', RobotState=RobotState)
    return log


def absent(monkeypatch):
    for name in ('moveit', 'moveit.planning', 'moveit.core', 'moveit.core.robot_state'):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def _target(dx=0.02, dz=-0.01, yaw=0.1):
    T = KIN.fk(np.array(Q0))
    T[:3, 3] += [dx, 0.0, dz]
    T[:3, :3] = euler2mat(0.0, 0.0, yaw) @ T[:3, :3]
    return T


def test_adapter_solves_in_the_model_frame_and_reads_back_by_name(monkeypatch):
    log = stand_in(monkeypatch)
    solver = MoveItPyIk.create(KIN, planning_group='panda_arm', node_name='ik_node', params_file='/p.yaml',
                               timeout_s=0.02)
    assert log.named('MoveItPy') == [{'node_name': 'ik_node', 'launch_params_filepaths': ['/p.yaml']}]
    target = _target()
    result = solver.ik(target, Q0)
    assert result.converged
    position, rotation = pose_error(KIN.fk(result.q), target)
    assert position < 1e-3 and rotation < 1e-2
    (call,) = log.named('set_from_ik')
    assert call['group'] == 'panda_arm' and call['tip'] == 'panda_hand_tcp' and call['timeout'] == 0.02
    assert np.allclose(call['pose_world'], T_WORLD_BASE @ target, atol=1e-9)  # base -> model frame
    assert np.allclose(call['seed'], Q0)                                     # seeded by joint name
    assert np.all(result.q >= KIN.limits.position_min) and np.all(result.q <= KIN.limits.position_max)


def test_default_params_file_is_left_to_moveit_py(monkeypatch):
    log = stand_in(monkeypatch)
    MoveItPyIk.create(KIN, planning_group='panda_arm')
    assert log.named('MoveItPy') == [{'node_name': 'molmoact_moveit_py', 'launch_params_filepaths': None}]


def test_no_solution_is_not_converged(monkeypatch):
    stand_in(monkeypatch, fail_ik=True)
    solver = MoveItPyIk.create(KIN, planning_group='panda_arm')
    result = solver.ik(_target(), Q0)
    assert not result.converged
    assert np.allclose(result.q, KIN.limits.clip(np.array(Q0)))


def test_a_solution_for_another_tip_fails_the_pinocchio_check(monkeypatch):
    # The stand-in's plugin solves for panda_link8 instead of the TCP (a misconfigured group / tip):
    # the solution misses the target by the hand's length, so it does not count as converged.
    stand_in(monkeypatch, solver_tip='panda_link8')
    result = MoveItPyIk.create(KIN, planning_group='panda_arm').ik(_target(), Q0)
    assert not result.converged and result.position_error_m > 0.05


@pytest.mark.parametrize('groups, message', [
    ({'manipulator': list(ARM)}, 'no planning group'),
    ({'panda_arm': list(ARM[:6])}, 'does not hold'),
])
def test_set_up_problems_raise_and_make_ik_solver_falls_back(monkeypatch, groups, message):
    stand_in(monkeypatch, groups=groups)
    with pytest.raises(KinematicsError, match=message):
        MoveItPyIk.create(KIN, planning_group='panda_arm')
    solver, selection = make_ik_solver('moveit_py', KIN, planning_group='panda_arm')
    assert solver is KIN and selection.backend is IkBackend.PINOCCHIO and selection.fell_back
    assert 'moveit_py set-up failed' in selection.reason and message in selection.reason


def test_auto_picks_moveit_py_and_reuses_its_instance(monkeypatch):
    log = stand_in(monkeypatch)
    solver, selection = make_ik_solver('auto', KIN, planning_group='panda_arm')
    assert isinstance(solver, MoveItPyIk) and selection.backend is IkBackend.MOVEIT_PY
    again, _ = make_ik_solver('auto', KIN, planning_group='panda_arm', existing=solver)
    assert isinstance(again, MoveItPyIk) and again.moveit is solver.moveit
    assert len(log.named('MoveItPy')) == 1  # a re-published robot_description starts no second MoveItPy
    pinocchio, selection = make_ik_solver('pinocchio', KIN, planning_group='panda_arm')
    assert pinocchio is KIN and len(log.named('MoveItPy')) == 1


# ---------------------------------------------------------------------------------------------------
# The command sink with ik_backend


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.escaped = []  # tracebacks of callback exceptions (each test asserts none)
    thread = threading.Thread(target=spin_recording, args=(executor, executor.escaped), daemon=True)
    thread.start()
    yield executor
    executor.shutdown()
    thread.join(timeout=10)
    rclpy.shutdown()


def _run_sink(ros, tmp_path, ns, backend):
    from rclpy.lifecycle import TransitionCallbackReturn as R
    arm = Arm(ns)
    sink = CommandSinkNode(namespace=ns, parameter_overrides=[
        # camera timeout 2 s (not the sink tests' 0.3 s): this test is about IK, and a busy executor on a loaded
        # 2-core machine can delay the fake camera's frames by more than 0.3 s, halting the chunk
        Parameter('robot_profile', value=_profile(tmp_path, camera_timeout_s=2.0)),
        Parameter('ik_backend', value=backend),
        Parameter('ik_timeout_s', value=0.01), Parameter('execution_enabled', value=True),
        Parameter('anchor_tolerance_s', value=ANCHOR_TOLERANCE_S)])
    for node in (arm.node, sink):
        ros.add_node(node)
    try:
        assert sink.trigger_configure() == R.SUCCESS and sink.trigger_activate() == R.SUCCESS
        assert wait_for(lambda: sink.kinematics is not None and sink._q is not None)
        # the camera gate open (frames seen) before the chunk: only the model gate (no chunk yet) may be shut
        assert wait_for(lambda: getattr(sink.governor.diagnostics().halted_cause, 'value', None)
                        in (None, 'stalled_model'))
        time.sleep(0.3)
        start = ee(arm.q())
        before = arm.n_traj()
        # 1 cm per 0.3 s: slow enough that no joint-velocity clip depends on how fast a loaded machine runs the
        # fake arm (this test is about which IK solves the steps, not about speed)
        arm.chunk(dx=0.01, steps=5, period=0.3, request_id='ik')
        # Each of the 5 steps is sent, or skipped when its whole period passed before a control tick picked it
        # up (counted, never sent late: CI saw 2 of 5 sent on a loaded machine); at least one is sent.
        assert wait_for(lambda: sink.commands_sent + sink.arm_executor.diagnostics().skipped_steps >= 5, 10.0), (
            sink.commands_sent, sink.last_error, sink.governor.diagnostics())
        sent = sink.commands_sent
        assert sent + sink.arm_executor.diagnostics().skipped_steps == 5 and sent >= 1
        hold_s = float(sink.params['hold_time_s'])  # a hold (e.g. a halt between tests) is no step

        def step_trajs():
            return [t for t in arm.trajs_since(before)
                    if t.points and abs(duration_s(t.points[0].time_from_start) - hold_s) > 1e-6]

        assert wait_for(lambda: len(step_trajs()) >= sent, 10.0)
        steps = step_trajs()
        assert len(steps) == sent
        targets = np.array([ee(np.array(t.points[0].positions)) for t in steps])
        diag = dict(sink.diagnostic_values())
        assert sink.trigger_deactivate() == R.SUCCESS and sink.trigger_cleanup() == R.SUCCESS
        return start, targets, diag
    finally:
        for node in (arm.node, sink):
            ros.remove_node(node)
            node.destroy_node()
        assert ros.escaped == [], ''.join(ros.escaped)  # no callback raised out of the executor


def _follows(start, targets):
    """Each commanded end-effector target is the start + k cm along x, k rising within 1..5 (skipped steps
    leave gaps), on the line through the start."""
    k = (targets[:, 0] - start[0]) / 0.01
    return (len(k) >= 1 and np.allclose(k, np.round(k), atol=0.2) and np.all(np.diff(np.round(k)) > 0)
            and 1 <= round(k[0]) and round(k[-1]) <= 5 and np.allclose(targets[:, 1:], start[1:], atol=2e-3))


def test_sink_solves_ik_with_moveit_py_where_importable(ros, tmp_path, monkeypatch):
    log = stand_in(monkeypatch)
    start, targets, diag = _run_sink(ros, tmp_path, '/ik_moveit', 'moveit_py')
    assert diag['ik backend'] == "moveit_py (moveit_py, planning group 'panda_arm')"  # the profile's group
    calls = log.named('set_from_ik')
    assert len(calls) == int(diag['commands sent']) >= 1 and all(c['timeout'] == 0.01 for c in calls)
    assert _follows(start, targets), targets - start


def test_sink_falls_back_to_pinocchio_with_the_reason(ros, tmp_path, monkeypatch):
    absent(monkeypatch)
    start, targets, diag = _run_sink(ros, tmp_path, '/ik_fallback', 'moveit_py')
    assert diag['ik backend'].startswith('pinocchio (moveit_py is not importable')
    assert _follows(start, targets), targets - start
