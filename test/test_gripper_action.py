"""The command sink's control_msgs/action/GripperCommand client against a fake GripperActionController.

control_msgs has no PyPI wheel, so this test builds a *test-only* interface package
(``test/fixtures/control_msgs_gripper``: the package name ``control_msgs`` with only the GripperCommand
message and action, same field layout as ros-controls/control_msgs) with plain CMake into a private install
space under ``build/test_fixtures/`` (cached by the fixture's content; about 20-25 s on two cores the first
time). The project's own build never sees it: colcon is given ``--base-paths src`` and the fixture carries
COLCON_IGNORE, and nothing sources the private install space, so it can never shadow a user's real
control_msgs. The sink then runs in a subprocess (``suite_helpers/gripper_action_scenario.py``) whose
environment puts that install space first; the subprocess writes a JSON record of the goals the fake server
received, cancels and results, and this test asserts on it.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'test' / 'fixtures' / 'control_msgs_gripper'
SCENARIO = ROOT / 'test' / 'suite_helpers' / 'gripper_action_scenario.py'
OPEN, CLOSED, MAX_EFFORT = 0.04, 0.0, 25.0


def _fixture_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(FIXTURE.rglob('*')):
        if path.is_file():
            digest.update(path.relative_to(FIXTURE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _build_env() -> dict:
    env = dict(os.environ)
    prefix = sys.prefix  # the venv: CMake and ament find the ROS wheels' packages there (as scripts/build.sh)
    env['CMAKE_PREFIX_PATH'] = prefix + (os.pathsep + env['CMAKE_PREFIX_PATH'] if env.get('CMAKE_PREFIX_PATH') else '')
    env['AMENT_PREFIX_PATH'] = prefix + (os.pathsep + env['AMENT_PREFIX_PATH'] if env.get('AMENT_PREFIX_PATH') else '')
    return env


@pytest.fixture(scope='module')
def control_msgs_prefix():
    """Install prefix of the test-only control_msgs (built once per fixture content)."""
    assert (FIXTURE / 'COLCON_IGNORE').is_file(), 'the fixture must stay invisible to colcon'
    base = ROOT / 'build' / 'test_fixtures' / f'control_msgs_{_fixture_hash()}'
    prefix = base / 'install'
    marker = prefix / 'share' / 'control_msgs' / 'package.xml'
    if not marker.is_file():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        env = _build_env()
        steps = [['cmake', '-S', str(FIXTURE), '-B', str(base / 'build'), f'-DCMAKE_INSTALL_PREFIX={prefix}',
                  '-DBUILD_TESTING=OFF', f'-DPython3_EXECUTABLE={sys.executable}'],
                 ['cmake', '--build', str(base / 'build'), '-j2'],
                 ['cmake', '--install', str(base / 'build')]]
        for step in steps:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f'{" ".join(step)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    assert marker.is_file()
    return prefix


def _run_env(prefix: Path) -> dict:
    env = dict(os.environ)
    site = next(prefix.glob('lib/python3*/site-packages'))

    def front(name, value):
        env[name] = str(value) + (os.pathsep + env[name] if env.get(name) else '')
    front('PYTHONPATH', site)
    front('PYTHONPATH', ROOT / 'test')
    front('LD_LIBRARY_PATH', prefix / 'lib')
    front('AMENT_PREFIX_PATH', prefix)
    return env


def test_the_project_install_space_has_no_control_msgs():
    # The normal build (scripts/build.sh: colcon --base-paths src) must never install the fixture.
    assert not (ROOT / 'install' / 'control_msgs').exists()
    assert not any((ROOT / 'install').glob('*/share/control_msgs'))
    assert FIXTURE.parent.parent.name == 'test' and 'src' not in FIXTURE.relative_to(ROOT).parts
    # Even a colcon crawl that includes test/ skips it (COLCON_IGNORE).
    colcon = Path(sys.executable).with_name('colcon')
    listed = subprocess.run([str(colcon), 'list', '--names-only', '--base-paths', 'src', 'test'], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == ['molmoact_bringup', 'molmoact_msgs', 'molmoact_ros']


@pytest.fixture(scope='module')
def record(control_msgs_prefix, tmp_path_factory):
    out = tmp_path_factory.mktemp('gripper') / 'record.json'
    done = subprocess.run([sys.executable, str(SCENARIO), str(out)], env=_run_env(control_msgs_prefix),
                          capture_output=True, text=True, timeout=120)
    assert out.is_file(), f'scenario wrote nothing (rc {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}'
    data = json.loads(out.read_text())
    assert data.get('ok'), f'{data.get("error")}\n{done.stderr[-4000:]}'
    assert done.returncode == 0
    assert data['escaped'] == [], ''.join(data['escaped'])  # no callback raised out of the executor
    data['log'] = done.stderr + done.stdout
    return data


def _positions(snapshot):
    return [g['position'] for g in snapshot['goals']]


def test_nothing_while_disabled(record):
    assert record['disabled']['goals'] == [] and record['disabled']['cancels'] == 0


def test_one_goal_per_change_with_the_profile_effort(record):
    # Four steps saying "open" (raw 0.9 > 0.5 -> 0.04): one goal, max_effort from the profile.
    assert _positions(record['open']) == [OPEN]
    assert record['open']['goals'][0]['max_effort'] == MAX_EFFORT
    assert record['open']['goals'][0]['status'] == 'succeeded'
    assert record['open']['position'] == pytest.approx(OPEN)
    # open, close x3, open x3: goals only on the two changes.
    assert _positions(record['changes']) == [OPEN, CLOSED, OPEN]
    assert all(g['max_effort'] == MAX_EFFORT for g in record['changes']['goals'])
    assert all(g['status'] == 'succeeded' for g in record['changes']['goals'])


def test_e_stop_cancels_the_goal_in_flight_and_resume_resends_nothing(record):
    stop = record['e_stop']
    assert _positions(stop) == [OPEN, CLOSED, OPEN, CLOSED]
    assert stop['cancels'] == 1 and stop['goals'][-1]['status'] == 'canceled'
    held = stop['goals'][-1]['result_position']
    assert CLOSED < held < OPEN  # stopped part way (the fake moves 0.01/s) and holds there
    assert record['e_stop_later']['position'] == pytest.approx(held)
    resumed = record['resumed']
    assert _positions(resumed) == _positions(stop) and resumed['cancels'] == 1  # nothing re-sent on resume
    assert resumed['position'] == pytest.approx(held)
    # The next chunk's own command goes out (closed again: the halt forgot the last target).
    after = record['after']
    assert _positions(after) == _positions(stop) + [CLOSED]
    assert after['goals'][-1]['status'] == 'succeeded' and after['position'] == pytest.approx(CLOSED)


def test_deactivate_cancels_the_goal_in_flight(record):
    last = record['deactivated']
    assert _positions(last)[-1] == OPEN and last['goals'][-1]['status'] == 'canceled'
    assert last['cancels'] == 2


def test_results_are_logged_and_counted(record):
    counts = record['tracker_counts']
    assert counts['reached'] == 4 and counts['canceled'] == 2 and counts['rejected'] == 0
    diag = record['diagnostics']
    assert diag['gripper goals sent'] == '6' and diag['gripper goals canceled'] == '2'
    assert 'gripper goal 0.04: reached' in record['log'] and 'gripper goal 0.0: canceled' in record['log']
    assert [r[1] for r in record['results']] == ['reached', 'reached', 'reached', 'canceled', 'reached',
                                                 'canceled']
