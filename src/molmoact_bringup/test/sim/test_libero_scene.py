"""The simulated arm's ``libero`` scene, without ROS: a LIBERO task exported from LIBERO's own environment
(``.venv-libero``, made by scripts/setup_libero.sh) and stepped in the suite's MuJoCo.

Checked against LIBERO itself: the exporter stores the frames LIBERO's environment rendered at the exported
state, and the suite's renderer must reproduce them; the released evaluator's input (``img[::-1, ::-1]`` of
LIBERO's frame) must be what ``libero_eval`` orientation gives.
"""

import numpy as np
import pytest

from molmoact_bringup.sim import franka
from molmoact_bringup.sim.libero_task import (LiberoTaskSpec, cache_dir, cache_root, find_libero_python,
                                              libero_eval_view)
from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig
from molmoact_bringup.sim.scene import resolve_scene
from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, TrajectoryPoint

TASK = LiberoTaskSpec('libero_spatial', 0, 0)
LANGUAGE = 'pick up the black bowl between the plate and the ramekin and place it on the plate'


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """An export cache without TASK in it: the default cache when TASK has not been exported there yet (the
    cold export then also serves the later LIBERO tests, ~30 s saved on a fresh machine), else a new one."""
    root = cache_root()
    if not cache_dir(TASK, find_libero_python(), root).exists():
        return root
    return tmp_path_factory.mktemp('libero_cache')


@pytest.fixture(scope='module')
def sim(cache):
    # A cold export into an empty cache (LIBERO's environment builds the task), then the suite's simulator.
    mp = pytest.MonkeyPatch()
    mp.setenv('MOLMOACT_LIBERO_CACHE', str(cache))
    s = resolve_scene('libero')
    config = SimConfig(scene='libero', libero=TASK, camera=s.camera, wrist_camera=s.wrist_camera,
                       image_width_px=s.width_px, image_height_px=s.height_px,
                       render_reflections=s.render_reflections, render_multisamples=s.render_multisamples)
    try:
        with PandaSim(config) as sim:
            assert sim.libero_task.path.parent == cache
            yield sim
    finally:
        mp.undo()


def test_the_export_holds_the_task_as_libero_defines_it(sim):
    task = sim.libero_task
    meta = task.meta
    assert task.language == LANGUAGE
    assert (meta['suite'], meta['task_id'], meta['init_state'], meta['n_tasks'], meta['n_init_states']) == \
        ('libero_spatial', 0, 0, 10, 50)
    assert meta['versions']['robosuite'] == '1.4.0' and meta['versions']['mujoco'] == '3.3.7'
    assert meta['controller']['type'] == 'OSC_POSE' and meta['control_freq_hz'] == 20.0
    assert meta['controller']['output_max'] == [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]
    assert {'agentview', 'robot0_eye_in_hand'} <= set(meta['cameras'])
    assert task.state['agentview_image'].shape == (256, 256, 3)
    assert str(find_libero_python()).endswith('.venv-libero/bin/python')


def test_the_suites_render_reproduces_libero_own_frames(sim):
    sim.reset()
    own = sim.render().rgb
    wrist = sim.render_wrist()
    for ours, theirs in ((own, sim.libero_task.state['agentview_image']),
                         (wrist, sim.libero_task.state['wrist_image'])):
        assert ours.shape == (256, 256, 3) and ours.std() > 20
        diff = np.abs(ours.astype(int) - theirs[::-1].astype(int)).max(axis=-1)  # LIBERO's: bottom row first
        assert diff.mean() < 0.5 and (diff > 20).mean() < 1e-3, (diff.mean(), (diff > 20).mean())
    # What the released evaluator feeds the checkpoint: LIBERO's frame turned 180 degrees.
    evaluator = sim.libero_task.state['agentview_image'][::-1, ::-1]
    diff = np.abs(libero_eval_view(own).astype(int) - evaluator.astype(int)).max(axis=-1)
    assert diff.mean() < 0.5
    # ... which is not the upright view (the scene is not left-right symmetric).
    assert np.abs(own.astype(int) - evaluator.astype(int)).mean() > 10


def test_the_task_state_is_restored_and_held(sim):
    sim.reset()
    st = sim.libero_task.state
    assert np.array_equal(sim.data.qpos, st['qpos'])
    q0 = sim.arm_positions_rad
    sim.step_for(0.5)
    assert np.abs(sim.arm_positions_rad - q0).max() < 2e-3   # held by the joint controller
    # Objects rest on the table (the exporter let them settle with LIBERO's 10 no-op steps).
    assert np.abs(sim.data.qvel).max() < 0.05


def test_the_arm_follows_a_joint_trajectory_and_the_gripper_closes(sim):
    sim.reset()
    q0 = sim.arm_positions_rad
    target = q0 + np.array([0.15, -0.1, 0.0, 0.1, 0.0, 0.0, 0.2])
    sim.command_trajectory(JointTrajectoryCommand(franka.ARM_JOINT_NAMES, (TrajectoryPoint(1.0, tuple(target)),), 0.0))
    sim.step_for(1.6)
    assert np.abs(sim.arm_positions_rad - target).max() < 1e-3
    ee = sim.ee_pose().translation_m
    assert 0.2 < ee[0] < 0.8 and abs(ee[1]) < 0.4   # in front of the base, over LIBERO's table
    sim.set_gripper(0.0)
    sim.step_for(1.0)
    fingers = sim.joint_state().positions[7:]
    assert np.all(fingers < 0.005), fingers
    frame = sim.render()
    assert np.isfinite(frame.depth_m).mean() > 0.99 and 0.3 < float(np.median(frame.depth_m)) < 3.0


def test_a_camera_the_scene_lacks_is_refused(cache):
    with pytest.raises(ValueError, match='no workspace camera'):
        SimConfig(scene='libero')
