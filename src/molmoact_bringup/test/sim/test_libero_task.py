"""The libero scene's success: the task's BDDL goal judged by LIBERO (libero_judge.py in .venv-libero) on the
suite's MuJoCo states, checked against LIBERO's own ``_check_success`` reached the official way (a fresh
environment, ``set_init_state`` of the flattened state) on the same states: initial, the bowl on the
plate (settled by the physics), held above it, beside it."""

import json
import os
import subprocess

import mujoco
import numpy as np
import pytest

from molmoact_bringup.sim.libero_task import LiberoJudge, LiberoTaskSpec, find_libero_python
from molmoact_bringup.sim.panda_sim import PandaSim, SimConfig

TASK = LiberoTaskSpec('libero_spatial', 0, 0)   # pick up the black bowl between the plate and the ramekin ...

# LIBERO's own check, the released evaluator's way: a fresh environment, set_init_state(flattened state).
REFERENCE = r'''
import json, os, sys
import numpy as np
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
suite, task_id, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
task = benchmark.get_benchmark_dict()[suite]().get_task(task_id)
env = OffScreenRenderEnv(bddl_file_name=os.path.join(get_libero_path('bddl_files'), task.problem_folder,
                         task.bddl_file), camera_heights=16, camera_widths=16)
env.seed(0)
env.reset()
out = []
for state in np.load(path)['states']:
    env.set_init_state(state)
    out.append(bool(env.check_success()))
env.close()
print('RESULT ' + json.dumps(out))
'''


@pytest.fixture(scope='module')
def sim():
    with PandaSim(SimConfig(scene='libero', libero=TASK, camera='agentview', image_width_px=32,
                            image_height_px=32)) as s:
        yield s


@pytest.fixture(scope='module')
def judge():
    with LiberoJudge(TASK.suite, TASK.task_id) as j:
        yield j


def free_qadr(sim, body):
    b = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, body)
    j = int(sim.model.body_jntadr[b])
    assert sim.model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
    return int(sim.model.jnt_qposadr[j]), int(sim.model.jnt_dofadr[j])


def reference_check(states, tmp_path):
    path = tmp_path / 'states.npz'
    np.savez(path, states=np.asarray(states))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.setdefault('MUJOCO_GL', 'osmesa')
    env.setdefault('PYOPENGL_PLATFORM', env['MUJOCO_GL'])
    proc = subprocess.run([str(find_libero_python()), '-c', REFERENCE, TASK.suite, str(TASK.task_id), str(path)],
                          capture_output=True, text=True, timeout=300, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len('RESULT '):])


def test_goal_judged_by_libero_agrees_with_libero_check_success(sim, judge, tmp_path):
    assert judge.goal == [('on', 'akita_black_bowl_1', 'plate_1')]
    assert judge.objects == {'akita_black_bowl_1': 'akita_black_bowl_1_main', 'plate_1': 'plate_1_main'}
    assert (judge.nq, judge.nv) == (sim.model.nq, sim.model.nv)
    bowl_q, bowl_v = free_qadr(sim, 'akita_black_bowl_1_main')
    plate = sim.data.xpos[mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, 'plate_1_main')].copy()
    m, d = sim.model, sim.data

    def bowl_at(xyz, settle_s):
        d.qpos[bowl_q:bowl_q + 3] = xyz
        d.qpos[bowl_q + 3:bowl_q + 7] = (1.0, 0.0, 0.0, 0.0)
        d.qvel[bowl_v:bowl_v + 6] = 0.0
        mujoco.mj_forward(m, d)
        if settle_s:
            sim.step_for(settle_s)

    states, names, ours = [], [], []

    def record(name):
        flat = np.concatenate([[d.time], d.qpos, d.qvel])
        states.append(flat)
        names.append(name)
        ours.append(judge.judge(d.qpos, d.qvel))

    sim.reset()
    record('initial')
    bowl_at(plate + (0.0, 0.0, 0.05), 1.0)
    record('on the plate (dropped and settled)')
    bowl_at(plate + (0.0, 0.0, 0.15), 0.0)
    record('above the plate, not touching')
    bowl_at(plate + (0.12, 0.0, 0.05), 1.0)
    record('beside the plate')
    theirs = reference_check(states, tmp_path)
    assert [o.success for o in ours] == theirs, list(zip(names, [o.reason for o in ours], theirs))
    assert theirs == [False, True, False, False], list(zip(names, theirs))
    assert ours[1].reason == 'goal holds: on(akita_black_bowl_1, plate_1): true'
    assert ours[0].reason == 'goal not reached: on(akita_black_bowl_1, plate_1): false'
    sim.reset()


def test_a_bad_state_is_an_error_and_the_judge_goes_on(judge):
    from molmoact_bringup.sim.libero_task import LiberoExportError
    with pytest.raises(LiberoExportError, match='qpos/qvel must have'):
        judge.judge([0.0] * 3, [0.0] * 3)
    assert judge.judge(np.zeros(judge.nq), np.zeros(judge.nv)).predicates[0][0] == judge.goal[0]
