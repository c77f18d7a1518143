"""IK backend selection (auto | pinocchio | moveit_py with fallback) and the executor's IkSolver seam."""

import numpy as np
import pytest

from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.execution import DeltaFrame, ExecutionQueue, GripperMapping, build_timeline
from molmoact_ros.robot.executor import ArmExecutor, JointCommand, SinkMode
from molmoact_ros.robot.kinematics import IkBackend, IkResult, make_ik_solver, select_ik_backend
from molmoact_ros.robot.safety import HaltCause, SafetyGovernor, SafetyLimits

from robot_test_data import PANDA_READY


class Importer:
    """import_module stand-in: names in ``present`` import (to a marker), everything else fails."""

    def __init__(self, present=(), error=ImportError):
        self.present, self.error, self.calls = set(present), error, []

    def __call__(self, name):
        self.calls.append(name)
        if name in self.present:
            return object()
        raise self.error(f'No module named {name!r}')


MOVEIT = ('moveit.planning', 'moveit.core.robot_state')


@pytest.mark.parametrize('requested', ['auto', 'moveit_py', IkBackend.AUTO])
def test_moveit_py_when_importable_and_a_group_is_named(requested):
    sel = select_ik_backend(requested, planning_group='panda_arm', import_module=Importer(MOVEIT))
    assert sel.backend is IkBackend.MOVEIT_PY and not sel.fell_back and 'panda_arm' in sel.reason


def test_pinocchio_when_asked_imports_nothing():
    importer = Importer(MOVEIT)
    sel = select_ik_backend('pinocchio', planning_group='panda_arm', import_module=importer)
    assert sel.backend is IkBackend.PINOCCHIO and importer.calls == [] and not sel.fell_back


@pytest.mark.parametrize('error', [ImportError, OSError])  # absent, or a broken install (missing .so)
def test_falls_back_to_pinocchio_with_the_reason_when_moveit_py_is_absent(error):
    auto = select_ik_backend('auto', planning_group='panda_arm', import_module=Importer(error=error))
    assert auto.backend is IkBackend.PINOCCHIO and not auto.fell_back
    assert 'moveit_py is not importable' in auto.reason and error.__name__ in auto.reason
    explicit = select_ik_backend('moveit_py', planning_group='panda_arm', import_module=Importer(error=error))
    assert explicit.backend is IkBackend.PINOCCHIO and explicit.fell_back
    assert explicit.describe().startswith('pinocchio (moveit_py is not importable')


def test_no_planning_group_means_pinocchio_before_any_import():
    importer = Importer(MOVEIT)
    sel = select_ik_backend('moveit_py', planning_group='', import_module=importer)
    assert sel.backend is IkBackend.PINOCCHIO and sel.fell_back and importer.calls == []
    assert 'moveit_planning_group' in sel.reason


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        select_ik_backend('kdl', planning_group='x')


def test_make_ik_solver_returns_the_pinocchio_kinematics_on_fallback(panda_kin):
    solver, sel = make_ik_solver('auto', panda_kin, planning_group='panda_arm', import_module=Importer())
    assert solver is panda_kin and sel.backend is IkBackend.PINOCCHIO


class RecordingSolver:
    """An IkSolver that answers with Pinocchio and records each call (the executor's seam)."""

    def __init__(self, kin, converge=True):
        self.kin, self.converge, self.calls = kin, converge, []

    def ik(self, target, q_seed):
        self.calls.append((np.array(target), np.array(q_seed)))
        result = self.kin.ik(target, q_seed)
        if self.converge:
            return result
        return IkResult(q=result.q, converged=False, position_error_m=1.0, rotation_error_rad=1.0, iterations=1)


LIMITS = SafetyLimits(max_step_translation_m=0.03, max_step_rotation_rad=0.15,
                      workspace_min_m=(0.1, -0.6, 0.0), workspace_max_m=(0.8, 0.6, 0.8),
                      gripper_min=0.0, gripper_max=0.04, max_action_age_s=1.0, camera_timeout_s=0.5,
                      model_timeout_s=5.0)


def _executor(kin, solver):
    limits = LIMITS.with_joint_limits(kin.limits)
    executor = ArmExecutor(mode=SinkMode.JOINT_TRAJECTORY, governor=SafetyGovernor(limits),
                           queue=ExecutionQueue(limits.max_action_age_s), gripper=GripperMapping(),
                           kinematics=kin, ik_solver=solver)
    executor.governor.enable(0.0)
    executor.governor.camera_seen(0.0)
    timeline = build_timeline(np.tile([0.01, 0.0, 0.0], (3, 1)), np.zeros((3, 3)), [1.0] * 3,
                              observation_pose=kin.fk(PANDA_READY), observation_stamp_s=0.0, step_period_s=0.1,
                              delta_frame=DeltaFrame.BASE,
                              rotation_convention=RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW)
    executor.submit(timeline, 0.0)
    return executor, timeline


def test_the_executor_solves_ik_with_the_injected_solver(panda_kin):
    solver = RecordingSolver(panda_kin)
    executor, timeline = _executor(panda_kin, solver)
    q, commands = PANDA_READY, []
    for t in (0.001, 0.101, 0.201):  # step k runs from k * 0.1 s
        executor.governor.camera_seen(t)
        command = executor.tick(t, joint_positions=q).command
        assert isinstance(command, JointCommand)
        commands.append(command)
        q = command.positions
    assert len(solver.calls) == 3
    for (target, seed), pose in zip(solver.calls, timeline.poses):
        assert np.allclose(target, pose)
    assert np.allclose(solver.calls[0][1], PANDA_READY)          # seeded from the measured joints ...
    assert np.allclose(solver.calls[1][1], commands[0].positions)  # ... then from the last command
    assert np.allclose(panda_kin.fk(commands[-1].positions), timeline.poses[-1], atol=1e-4)


def test_a_solver_that_does_not_converge_halts_with_ik_failure(panda_kin):
    executor, _ = _executor(panda_kin, RecordingSolver(panda_kin, converge=False))
    executor.governor.camera_seen(0.001)
    result = executor.tick(0.001, joint_positions=PANDA_READY)
    assert result.halt_cause is HaltCause.IK_FAILURE
    assert result.command.joint_positions is not None  # the hold at the measured joints
    assert executor.diagnostics().ik_failures == 1
