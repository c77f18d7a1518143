"""launch/molmoact.launch.py end to end: its launch description and the actions it builds.

Where launch_ros is importable (a ROS 2 machine) this uses the real launch API. Here it is not installable,
so the test installs a *recording stand-in* for the handful of launch / launch_ros names the file uses (each
records its keyword arguments); it checks the file's own wiring (arguments declared, every process built
from ``launch_args.node_descriptions`` with its parameters and remaps, lifecycle bring-up with autostart or
event handlers, RViz) and nothing about launch itself.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from molmoact_ros.ros.launch_args import LAUNCH_ARGUMENTS, node_descriptions, resolve

LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'molmoact.launch.py'


def real_launch_available():
    try:
        import launch_ros.actions  # noqa: F401
        from launch import LaunchContext  # noqa: F401
    except ImportError:
        return False
    return True


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stand_in(monkeypatch, *, autostart: bool):
    mods = {}

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
        monkeypatch.setitem(sys.modules, name, m)
        return m

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    node_cls = type('Node', (Recorded,), {})
    if autostart:
        def lifecycle_init(self, *args, autostart=False, **kwargs):
            Recorded.__init__(self, *args, autostart=autostart, **kwargs)
        lifecycle_cls = type('LifecycleNode', (Recorded,), {'__init__': lifecycle_init})
    else:
        lifecycle_cls = type('LifecycleNode', (Recorded,), {})
    names = ['LogInfo', 'EmitEvent', 'RegisterEventHandler', 'DeclareLaunchArgument', 'OpaqueFunction']
    module('launch', LaunchDescription=type('LaunchDescription', (Recorded,), {}))
    module('launch.actions', **{n: type(n, (Recorded,), {}) for n in names})
    module('launch.substitutions', LaunchConfiguration=LaunchConfiguration)
    module('launch.event_handlers', OnProcessStart=type('OnProcessStart', (Recorded,), {}))
    module('launch.events', matches_action=lambda action: ('matches', action))
    module('launch_ros')
    module('launch_ros.actions', Node=node_cls, LifecycleNode=lifecycle_cls)
    module('launch_ros.event_handlers', OnStateTransition=type('OnStateTransition', (Recorded,), {}))
    module('launch_ros.events')
    module('launch_ros.events.lifecycle', ChangeState=type('ChangeState', (Recorded,), {}))
    return mods


def _load():
    spec = importlib.util.spec_from_file_location('molmoact_launch_under_test', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(overrides):
    values = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    values.update(overrides)
    if real_launch_available():  # pragma: no cover - on ROS machines
        from launch import LaunchContext
        context = LaunchContext()
        context.launch_configurations.update(values)
        return context
    return types.SimpleNamespace(launch_configurations=values)


def _processes(actions):
    """(kind, kwargs) of the processes among the actions (Node / LifecycleNode)."""
    out = []
    for a in actions:
        kind = type(a).__name__
        if kind in ('Node', 'LifecycleNode'):
            out.append((kind, a.kwargs if hasattr(a, 'kwargs') else None))
    return out


@pytest.fixture(params=[True, False], ids=['autostart', 'event_handlers'])
def launch_module(request, monkeypatch):
    if not real_launch_available():
        _stand_in(monkeypatch, autostart=request.param)
    return _load(), request.param


def test_description_declares_every_argument(launch_module):
    module, _ = launch_module
    description = module.generate_launch_description()
    entities = description.args[0] if description.args else description.kwargs.get('initial_entities')
    declared = [e for e in entities if type(e).__name__ == 'DeclareLaunchArgument']
    names = [e.args[0] if e.args else e.kwargs.get('name') for e in declared]
    assert names == [a.name for a in LAUNCH_ARGUMENTS]
    assert any(type(e).__name__ == 'OpaqueFunction' for e in entities)


@pytest.mark.parametrize('overrides', [
    {},
    {'layout': 'multi_process', 'namespace': 'arm1', 'camera_image_topic': '/cam/image', 'rviz': 'true'},
    {'robot': 'ur5e', 'model': 'allenai/MolmoAct-7B-D-0812', 'quantization': '4bit', 'use_sim_time': 'true'},
])
def test_actions_follow_the_node_descriptions(launch_module, overrides):
    module, autostart = launch_module
    actions = module._launch_setup(_context(overrides))
    config = resolve(_context(overrides).launch_configurations)
    expected = node_descriptions(config, default_params_file=str(module.PARAMS_FILE),
                                 robot_profiles_dir=str(module.ROBOT_PROFILES_DIR))
    processes = _processes(actions)
    if real_launch_available():  # pragma: no cover - on ROS machines: the real classes, counts only
        assert len(processes) == len(expected) + (1 if config.rviz else 0)
        return
    rviz = [kw for kind, kw in processes if kw.get('executable') == 'rviz2']
    pipeline = [(kind, kw) for kind, kw in processes if kw.get('executable') != 'rviz2']
    assert len(pipeline) == len(expected)
    for (kind, kw), description in zip(pipeline, expected):
        want = description.launch_kwargs()
        if description.lifecycle and autostart:
            want['autostart'] = True
        assert kw == want
        assert kind == ('LifecycleNode' if description.lifecycle else 'Node')
        if description.lifecycle and not autostart:
            # configure on process start, activate after configuring -> inactive
            handlers = [a for a in actions if type(a).__name__ == 'RegisterEventHandler']
            assert len(handlers) == 2 * sum(d.lifecycle for d in expected)
    assert len(rviz) == (1 if config.rviz else 0)
    if rviz:
        assert rviz[0]['arguments'][-1] == str(module.RVIZ_CONFIG)
