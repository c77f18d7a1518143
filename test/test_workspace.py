"""The workspace layout: manifests, colcon discovery in both layouts, pinned requirements, CI wiring."""

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]
COLCON = shutil.which('colcon')
EXPECTED = {
    'molmoact_msgs': 'ros.ament_cmake',
    'molmoact_ros': 'ros.ament_python',
    'molmoact_bringup': 'ros.ament_cmake',
}


def colcon_list(*base_paths, cwd=ROOT):
    assert COLCON, 'colcon not found: run scripts/setup.sh (or source scripts/ros_env.sh)'
    out = subprocess.run([COLCON, 'list', '--base-paths', *map(str, base_paths)], cwd=cwd,
                         capture_output=True, text=True, check=True).stdout
    return {name: typ.strip('()') for name, _path, typ in (line.split('\t') for line in out.splitlines())}


def test_manifests_parse_and_name_their_build_types():
    root = parse_package(str(ROOT / 'package.xml'))
    assert root.name == 'molmoact'
    assert {d.name for d in root.exec_depends} >= set(EXPECTED)
    for name, typ in EXPECTED.items():
        pkg = parse_package(str(ROOT / 'src' / name / 'package.xml'))
        assert pkg.name == name
        assert pkg.get_build_type() == typ.split('.', 1)[1]
    assert 'rosidl_interface_packages' in {g.name for g in parse_package(
        str(ROOT / 'src' / 'molmoact_msgs' / 'package.xml')).member_of_groups}


def test_colcon_finds_the_three_packages_with_base_path_src():
    assert colcon_list('src') == EXPECTED
    # The root manifest hides src/ from a plain crawl: exactly the trap the scripts avoid.
    assert set(colcon_list('.')) == {'molmoact'}
    assert colcon_list('src', '.') == {**EXPECTED, 'molmoact': 'ros.ament_cmake'}


def test_colcon_finds_the_packages_when_cloned_into_another_workspace(tmp_path):
    """README "Building inside another workspace": the repository sits in <ws>/src/molmoact."""
    ws_src = tmp_path / 'ws' / 'src'
    ws_src.mkdir(parents=True)
    (ws_src / 'molmoact').symlink_to(ROOT, target_is_directory=True)
    (ws_src / 'other_pkg').mkdir()
    (ws_src / 'other_pkg' / 'package.xml').write_text(
        (ROOT / 'src' / 'molmoact_bringup' / 'package.xml').read_text().replace(
            '<name>molmoact_bringup</name>', '<name>other_pkg</name>'))
    found = colcon_list('src', 'src/molmoact/src', cwd=tmp_path / 'ws')
    assert found == {**EXPECTED, 'other_pkg': 'ros.ament_cmake', 'molmoact': 'ros.ament_cmake'}
    assert 'molmoact_ros' not in colcon_list('src', cwd=tmp_path / 'ws')  # the crawl alone misses it


def _requirement_lines(name):
    for line in (ROOT / name).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            yield line


@pytest.mark.parametrize('name', ['requirements.txt', 'requirements-test.txt', 'requirements-ros-wheels.txt'])
def test_requirements_are_pinned(name):
    allowed_ranges = {'setuptools'}  # torch needs >=77.0.3, colcon-core needs <80
    for req in _requirement_lines(name):
        pkg = re.split(r'[=<>!~ ]', req, 1)[0].lower()
        assert pkg != 'torch', 'torch is installed by scripts/setup.sh (machine-specific build)'
        if pkg not in allowed_ranges:
            assert re.fullmatch(r'[A-Za-z0-9_.\-\[\]]+==[\w.+]+', req), f'{name}: {req!r} is not pinned'


def test_numpy_is_left_to_the_ros_install_in_requirements_txt():
    pkgs = {re.split(r'[=<>!~ ]', r, 1)[0].lower() for r in _requirement_lines('requirements.txt')}
    assert 'numpy' not in pkgs
    assert 'numpy==' in (ROOT / 'requirements-ros-wheels.txt').read_text()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'exec ./scripts/test.sh' in ci
    assert os.access(ROOT / '.ci' / 'run', os.X_OK)
    readme = (ROOT / 'README.md').read_text()
    commands = re.findall(r'```(?:bash|sh)?\n(.*?)```', readme, re.S)
    assert len(commands) >= 2
    assert 'scripts/test.sh' in commands[1]  # the second command of the README is the test command


def test_fix_cmake_paths_rewrites_wheel_build_paths_idempotently():
    spec = importlib.util.spec_from_file_location('fix_cmake_paths', ROOT / 'scripts' / 'fix_cmake_paths.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    original = ('set(_IMPORT "/opt/python/cp311-cp311/include/python3.11;'
                '/tmp/build/lib/python3.11/site-packages/numpy/_core/include")')
    once = mod.rewrite(original, '/venv/include/python3.11', '/venv/site-packages/numpy/core/include')
    assert once == 'set(_IMPORT "/venv/include/python3.11;/venv/site-packages/numpy/core/include")'
    # numpy 1 -> 2 (or back): an already rewritten path is rewritten again
    twice = mod.rewrite(once, '/venv/include/python3.11', '/venv/site-packages/numpy/_core/include')
    assert twice.endswith('/venv/site-packages/numpy/_core/include")')
    assert mod.rewrite(twice, '/venv/include/python3.11', '/venv/site-packages/numpy/_core/include') == twice
