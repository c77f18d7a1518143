"""launch/molmoact.launch.py, config/molmoact_params.yaml and config/molmoact.rviz against the node tables."""

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from molmoact_ros.nodes.base import BASE_PARAMETERS
from molmoact_ros.nodes.command_sink import CommandSinkNode
from molmoact_ros.nodes.engine_provider import ENGINE_PARAMETERS
from molmoact_ros.nodes.action_decoder import ActionDecoderNode
from molmoact_ros.nodes.perception import PerceptionNode
from molmoact_ros.nodes.stage_base import STAGE_PARAMETERS
from molmoact_ros.nodes.trace_planner import TracePlannerNode
from molmoact_ros.ros import topics as T
from molmoact_ros.ros.launch_args import INPUT_REMAPS, LAUNCH_ARGUMENTS, TOPICS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'molmoact.launch.py'
PARAMS = ROOT / 'config' / 'molmoact_params.yaml'
RVIZ = ROOT / 'config' / 'molmoact.rviz'

SHARED = {p.name: p for p in (*BASE_PARAMETERS, *ENGINE_PARAMETERS, *STAGE_PARAMETERS)}
NODE_TABLES = {'perception': {**SHARED, **{p.name: p for p in PerceptionNode.PARAMETERS}},
               'trace_planner': {**SHARED, **{p.name: p for p in getattr(TracePlannerNode, 'PARAMETERS', ())}},
               'action_decoder': {**SHARED, **{p.name: p for p in ActionDecoderNode.PARAMETERS}},
               # the sink holds no engine: only the base parameters are shared
               'command_sink': {**{p.name: p for p in BASE_PARAMETERS},
                                **{p.name: p for p in CommandSinkNode.PARAMETERS}}}


def _load_launch_module():
    spec = importlib.util.spec_from_file_location('molmoact_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_imports_only_stdlib_at_module_level():
    tree = ast.parse(LAUNCH_FILE.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split('.')[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split('.')[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names <= {'inspect', 'pathlib', '__future__'}, names
    module = _load_launch_module()
    assert callable(module.generate_launch_description)
    assert module.PARAMS_FILE == PARAMS and module.RVIZ_CONFIG == RVIZ


def test_generate_launch_description_needs_launch():
    module = _load_launch_module()
    try:  # (the repository's launch/ folder is importable as an empty namespace package: not launch)
        from launch import LaunchDescription  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='launch'):
            module.generate_launch_description()
    else:  # pragma: no cover - where launch is installed
        assert module.generate_launch_description() is not None


def test_autostart_detection():
    module = _load_launch_module()

    class Old:
        def __init__(self, *, name, namespace, **kwargs):
            pass

    class New(Old):
        def __init__(self, *, name, namespace, autostart=False, **kwargs):
            super().__init__(name=name, namespace=namespace)

    class Mixin(New):  # autostart declared on a base class only
        pass

    assert not module.supports_autostart(Old)
    assert module.supports_autostart(New) and module.supports_autostart(Mixin)


def _params():
    return yaml.safe_load(PARAMS.read_text())


def _matches(pattern, namespace, node):
    """rcl's wildcard match of a parameter file key against /namespace/node."""
    regex = '^' + re.escape(pattern).replace(r'/\*\*', '(/[^/]+)*').replace(r'\*', '[^/]+') + '$'
    return re.match(regex, f'{namespace}/{node}'.replace('//', '/')) is not None


def test_params_file_names_types_and_defaults():
    data = _params()
    assert all(k.startswith('/**') for k in data), 'use wildcard keys so the file works under any namespace'
    seen = {node: {} for node in NODE_TABLES}
    for key, section in data.items():
        params = section['ros__parameters']
        targets = [node for node in NODE_TABLES if _matches(key, '/some/ns', node) or _matches(key, '', node)]
        assert targets, f'{key} matches no pipeline node'
        for name, value in params.items():
            tables = [NODE_TABLES[node] for node in targets]
            assert any(name in t for t in tables), f'{key}: unknown parameter {name}'
            for node in targets:
                spec = NODE_TABLES[node].get(name)
                if spec is None:
                    continue
                assert type(value) is type(spec.default), f'{name}: {value!r} vs default {spec.default!r}'
                assert value == spec.default, f'{name}: {value!r} != default {spec.default!r}'
                seen[node][name] = value
    for node, table in NODE_TABLES.items():  # every parameter of every node is in the file
        assert set(seen[node]) == set(table), (node, set(table) - set(seen[node]))


def test_params_file_comments_every_parameter():
    lines = PARAMS.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^ {4}([a-z_]+):', line)
        if m:
            assert lines[i - 1].lstrip().startswith('#'), f'{m.group(1)} has no comment'


def _displays():
    return yaml.safe_load(RVIZ.read_text())['Visualization Manager']['Displays']


def test_rviz_config_displays_and_topics():
    rviz = yaml.safe_load(RVIZ.read_text())
    assert rviz['Visualization Manager']['Global Options']['Fixed Frame'] == 'base_link'
    by_class = {}
    for display in _displays():
        by_class.setdefault(display['Class'], []).append(display)
    images = sorted(d['Topic']['Value'] for d in by_class['rviz_default_plugins/Image'])
    assert images == ['image', 'trace_image']
    assert [d['Topic']['Value'] for d in by_class['rviz_default_plugins/MarkerArray']] == ['trace_markers']
    (robot,) = by_class['rviz_default_plugins/RobotModel']
    assert robot['Description Source'] == 'Topic' and robot['Description Topic']['Value'] == 'robot_description'
    assert 'rviz_default_plugins/TF' in by_class
    for topic in (*images, 'trace_markers'):
        assert topic in TOPICS and not topic.startswith('/')  # relative: follows the namespace


def test_topic_table_matches_the_nodes():
    """The launch file's topic table, its input remaps and its argument defaults come from ros/topics.py, the
    module the nodes subscribe and publish with (tests/test_topics.py checks the nodes' wiring against it)."""
    assert TOPICS is T.TOPICS
    for node, io in T.NODE_TOPICS.items():
        for topic in io['publishes']:
            assert TOPICS[topic] == node, topic
        assert set(io['subscribes']) <= set(TOPICS), node
    assert {topic for topic, publisher in TOPICS.items() if publisher == ''} <= {
        t for io in T.NODE_TOPICS.values() for t in io['subscribes']}
    defaults = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    for arg_name, (topic, _nodes) in INPUT_REMAPS.items():
        assert topic in TOPICS and not topic.startswith('/')
        assert defaults[arg_name].lstrip('/') == topic, arg_name