"""The scene options of the simulated arm and the LIBERO facts, without LIBERO or ROS: defaults per scene,
refused combinations, the evaluator's image orientation, finding LIBERO's interpreter, the export cache key."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from molmoact_bringup.sim import libero_task as lt
from molmoact_bringup.sim.scene import orient, resolve_scene


def test_lift_defaults_are_the_workspace_camera_at_320x240_without_wrist_view():
    s = resolve_scene('lift')
    assert (s.camera, s.wrist_camera, s.width_px, s.height_px) == ('workspace', '', 320, 240)
    assert (s.render_reflections, s.render_multisamples, s.publishes_camera_info) == (False, 0, True)


def test_libero_defaults_are_the_evaluators_views_rendered_as_libero_renders():
    s = resolve_scene('libero')
    assert (s.camera, s.wrist_camera, s.width_px, s.height_px) == ('agentview', 'robot0_eye_in_hand', 256, 256)
    assert (s.render_reflections, s.render_multisamples) == (True, 4)
    assert resolve_scene('libero', orientation='libero_eval').publishes_camera_info is False
    s = resolve_scene('libero', camera='frontview', wrist_camera='', width_px=128, height_px=96)
    assert (s.camera, s.wrist_camera, s.width_px, s.height_px) == ('frontview', '', 128, 96)


@pytest.mark.parametrize('kwargs, message', [
    (dict(scene='kitchen'), "scene must be 'lift' or 'libero'"),
    (dict(scene='libero', camera='workspace'), "no 'workspace' camera"),
    (dict(scene='lift', wrist_camera='workspace'), "not 'workspace'"),
    (dict(scene='libero', camera='agentview', wrist_camera='agentview'), 'the same camera'),
    (dict(scene='lift', orientation='flipped'), 'image_orientation must be one of'),
])
def test_combinations_that_cannot_work_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_scene(**kwargs)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_libero_eval_view_is_the_evaluators_180_degree_turn_of_robosuites_opengl_frame(gl_frame):
    # robosuite 1.4 returns frames bottom row first; the evaluator feeds the model img[::-1, ::-1].
    upright = gl_frame[::-1]
    assert np.array_equal(lt.libero_eval_view(upright), gl_frame[::-1, ::-1])
    assert np.array_equal(orient(upright, 'libero_eval'), gl_frame[::-1, ::-1])
    assert orient(upright, 'camera') is upright
    assert np.array_equal(lt.libero_eval_view(lt.libero_eval_view(upright)), upright)


def test_libero_eval_view_mirrors_left_and_right_only():
    img = np.zeros((2, 3), np.uint8)
    img[0, 0] = 1  # top left
    out = lt.libero_eval_view(img)
    assert out[0, 2] == 1 and out.sum() == 1
    with pytest.raises(ValueError):
        lt.libero_eval_view(np.zeros(3))


def test_the_released_evaluators_norm_stats_keys_and_step_budgets():
    assert lt.LiberoTaskSpec('libero_spatial').unnorm_key == 'libero_spatial_no_noops_modified'
    assert lt.LiberoTaskSpec('libero_10').unnorm_key == 'libero_10_no_noops_modified'
    assert lt.LiberoTaskSpec('libero_90').unnorm_key is None
    assert lt.LiberoTaskSpec('libero_spatial_lan').unnorm_key is None
    assert {k: v.max_steps for k, v in lt.SUITES.items()} == {
        'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300, 'libero_10': 520, 'libero_90': 400}
    assert lt.OSC_POSE_OUTPUT_MAX == (0.05, 0.05, 0.05, 0.5, 0.5, 0.5)


@pytest.mark.parametrize('kwargs', [dict(suite=''), dict(suite='../etc'), dict(task_id=-1), dict(init_state=True),
                                    dict(wait_steps=1.5), dict(resolution_px=8)])
def test_task_spec_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        lt.LiberoTaskSpec(**kwargs)


def _fake_python(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\n')
    path.chmod(0o755)
    return path


def test_libero_python_is_found_explicitly_by_environment_or_in_the_workspace(tmp_path):
    explicit = _fake_python(tmp_path / 'a' / 'python')
    env_py = _fake_python(tmp_path / 'b' / 'python')
    ws = tmp_path / 'ws'
    venv_py = _fake_python(ws / '.venv-libero' / 'bin' / 'python')
    deep = ws / 'install' / 'pkg' / 'lib' / 'x.py'
    deep.parent.mkdir(parents=True)
    env = {'MOLMOACT_LIBERO_PYTHON': str(env_py)}
    assert lt.find_libero_python(str(explicit), env, deep) == explicit
    assert lt.find_libero_python('', env, deep) == env_py
    assert lt.find_libero_python('', {}, deep) == venv_py


def test_missing_libero_says_how_to_install_it(tmp_path):
    with pytest.raises(lt.LiberoUnavailable, match='scripts/setup_libero.sh'):
        lt.find_libero_python('', {}, tmp_path / 'nowhere' / 'x.py')
    with pytest.raises(lt.LiberoUnavailable, match='does not exist'):
        lt.find_libero_python(str(tmp_path / 'missing' / 'python'), {}, tmp_path)
    with pytest.raises(lt.LiberoUnavailable, match='setup_libero.sh'):
        lt.find_libero_python('', {'MOLMOACT_LIBERO_PYTHON': str(tmp_path / 'nope')}, tmp_path)


def test_export_failure_carries_the_exporters_error(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "ModuleNotFoundError: No module named libero" >&2\nexit 1\n')
    fake.chmod(0o755)
    with pytest.raises(lt.LiberoExportError, match='No module named libero'):
        lt.export_task(lt.LiberoTaskSpec(), fake, tmp_path / 'out')


def test_cache_folder_is_keyed_by_task_and_interpreter(tmp_path):
    env = {'MOLMOACT_LIBERO_CACHE': str(tmp_path / 'c')}
    assert lt.cache_root(env) == tmp_path / 'c'
    assert lt.cache_root({'XDG_CACHE_HOME': str(tmp_path)}) == tmp_path / 'molmoact_ros' / 'libero'
    a = lt.cache_dir(lt.LiberoTaskSpec('libero_goal', 3, 1), Path('/x/python'), tmp_path)
    assert a.parent == tmp_path and a.name.startswith('libero_goal-t3-i1-w10-r256-')
    assert a != lt.cache_dir(lt.LiberoTaskSpec('libero_goal', 3, 2), Path('/x/python'), tmp_path)
    assert a != lt.cache_dir(lt.LiberoTaskSpec('libero_goal', 3, 1), Path('/y/python'), tmp_path)
    assert a == lt.cache_dir(lt.LiberoTaskSpec('libero_goal', 3, 1), Path('/x/python'), tmp_path)
    assert os.access(lt.EXPORTER, os.R_OK)
