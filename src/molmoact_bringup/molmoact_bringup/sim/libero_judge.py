"""LIBERO's own success check on the suite's MuJoCo states: run with the LIBERO environment's Python, not the suite's.

    <libero python> libero_judge.py --suite libero_spatial --task-id 0

The simulated arm's ``libero`` scene steps LIBERO's compiled scene in the suite's MuJoCo (same model, same
``qpos`` / ``qvel`` layout). To judge success exactly as LIBERO does, this helper keeps the task's LIBERO
environment (built as the exporter builds it) and, for every state it is handed, copies ``qpos`` and
``qvel`` into LIBERO's simulation, runs ``forward`` (positions and contacts), LIBERO's state update
(``_post_process``: e.g. a stove's on/off) and then the task's BDDL goal: each goal predicate
(``_eval_predicate``: On, In, Open, Close, TurnOn, TurnOff, ...) and LIBERO's ``_check_success`` (their
conjunction, the released evaluator's ``done``).

Protocol: JSON lines. After start-up it writes ``{"ready": true, "goal": [...], "objects": {name: body},
"nq": ..., "nv": ...}``; then for each input line ``{"qpos": [...], "qvel": [...]}`` one line
``{"success": bool, "predicates": [bool, ...]}`` (in the goal's order); ``{"quit": true}`` or end of input
stops it. Errors: ``{"error": "..."}``.

Self-contained on purpose (standard library, NumPy and LIBERO only): it must not import the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _write(obj) -> None:
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--suite', required=True)
    p.add_argument('--task-id', type=int, required=True)
    args = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'osmesa')
    if os.environ['MUJOCO_GL'] in ('osmesa', 'egl'):
        os.environ.setdefault('PYOPENGL_PLATFORM', os.environ['MUJOCO_GL'])
    # LIBERO prints notices on stdout: keep stdout for the protocol.
    protocol, sys.stdout = sys.stdout, sys.stderr
    import numpy as np
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suites = benchmark.get_benchmark_dict()
    if args.suite not in suites:
        sys.stdout = protocol
        _write({'error': f'unknown suite {args.suite!r}; known: {sorted(suites)}'})
        return 2
    suite = suites[args.suite]()
    if not 0 <= args.task_id < suite.n_tasks:
        sys.stdout = protocol
        _write({'error': f'suite {args.suite} has tasks 0..{suite.n_tasks - 1}, not {args.task_id}'})
        return 2
    task = suite.get_task(args.task_id)
    bddl = os.path.join(get_libero_path('bddl_files'), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=16, camera_widths=16)
    try:
        env.seed(0)
        env.reset()
        inner = env.env
        sim = inner.sim
        goal = [list(s) for s in inner.parsed_problem['goal_state']]
        names = sorted({n for s in goal for n in s[1:]})
        objects = {}
        for n in names:
            if n in inner.obj_body_id:
                objects[n] = sim.model.body_id2name(inner.obj_body_id[n])
        nq, nv = int(sim.model.nq), int(sim.model.nv)
        sys.stdout = protocol
        _write({'ready': True, 'goal': goal, 'objects': objects, 'nq': nq, 'nv': nv})
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if req.get('quit'):
                    break
                qpos = np.asarray(req['qpos'], dtype=np.float64)
                qvel = np.asarray(req['qvel'], dtype=np.float64)
                if qpos.shape != (nq,) or qvel.shape != (nv,):
                    raise ValueError(f'qpos/qvel must have {nq}/{nv} values, got {qpos.shape}/{qvel.shape}')
                sim.data.qpos[:] = qpos
                sim.data.qvel[:] = qvel
                sim.forward()
                inner._post_process()
                predicates = [bool(inner._eval_predicate(s)) for s in goal]
                _write({'success': bool(inner._check_success()), 'predicates': predicates})
            except Exception as e:  # noqa: BLE001  (answer and go on)
                _write({'error': f'{type(e).__name__}: {e}'})
    finally:
        env.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
