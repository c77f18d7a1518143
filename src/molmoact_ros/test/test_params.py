"""Typed parameter declarations: specs validate themselves; rclpy enforces ranges and choices."""

import math

import pytest
import rclpy
from hypothesis import given, strategies as st
from rclpy.parameter import Parameter

from molmoact_ros.ros.params import ParamSpec, declare_parameters


def test_specs_reject_missing_description_range_or_bad_default():
    with pytest.raises(ValueError, match='description'):
        ParamSpec('x', 1.0, '  ', min_value=0.0, max_value=2.0)
    with pytest.raises(ValueError, match='needs a range'):
        ParamSpec('x', 1.0, 'a float')
    with pytest.raises(ValueError, match='outside'):
        ParamSpec('x', 3.0, 'a float', min_value=0.0, max_value=2.0)
    with pytest.raises(ValueError, match='both'):
        ParamSpec('x', 1.0, 'a float', min_value=0.0)
    with pytest.raises(ValueError, match='not in'):
        ParamSpec('mode', 'fast', 'a mode', choices=('a', 'b'))
    with pytest.raises(ValueError, match='integer bounds'):
        ParamSpec('n', 1, 'an int', min_value=0.5, max_value=2)


@given(lo=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), value=st.floats(allow_nan=True, allow_infinity=True))
def test_check_accepts_exactly_the_finite_values_in_range(lo, width, value):
    spec = ParamSpec('x', lo, 'a float', min_value=lo, max_value=lo + width)
    ok = spec.check(value) is None
    assert ok == (math.isfinite(value) and lo <= value <= lo + width)


@pytest.fixture
def node():
    rclpy.init()
    n = rclpy.create_node('params_under_test')
    yield n
    n.destroy_node()
    rclpy.shutdown()


def test_declared_parameters_carry_description_and_range_and_reject_bad_sets(node):
    specs = [ParamSpec('rate_hz', 10.0, 'Rate of the loop (Hz).', min_value=0.1, max_value=100.0),
             ParamSpec('depth', 5, 'Queue depth (messages).', min_value=1, max_value=100),
             ParamSpec('mode', 'dry_run', 'Command sink.', choices=('dry_run', 'joint_trajectory')),
             ParamSpec('names', ['a', 'b'], 'Joint names.')]
    values = declare_parameters(node, specs)
    assert values == {'rate_hz': 10.0, 'depth': 5, 'mode': 'dry_run', 'names': ['a', 'b']}
    desc = node.describe_parameter('rate_hz')
    assert desc.description == 'Rate of the loop (Hz).'
    assert (desc.floating_point_range[0].from_value, desc.floating_point_range[0].to_value) == (0.1, 100.0)
    assert node.describe_parameter('depth').integer_range[0].to_value == 100
    assert 'dry_run' in node.describe_parameter('mode').additional_constraints

    results = node.set_parameters([Parameter('rate_hz', value=500.0), Parameter('mode', value='fly'),
                                   Parameter('depth', value=7)])
    assert [r.successful for r in results] == [False, False, True]
    assert 'one of' in results[1].reason
    assert node.get_parameter('rate_hz').value == 10.0 and node.get_parameter('mode').value == 'dry_run'


def test_invalid_override_is_refused_at_declaration():
    rclpy.init()
    try:
        n = rclpy.create_node('override_under_test',
                              parameter_overrides=[Parameter('mode', value='fly')])
        with pytest.raises(ValueError, match='invalid parameter override'):
            declare_parameters(n, [ParamSpec('mode', 'dry_run', 'Command sink.', choices=('dry_run',))])
        n.destroy_node()
    finally:
        rclpy.shutdown()


def _other(spec):
    """A valid value of ``spec`` other than its default."""
    d = spec.default
    if isinstance(d, bool):
        return not d
    if spec.choices:
        return next(c for c in spec.choices if c != d)
    if isinstance(d, str):
        return d + 'x'
    return type(d)(spec.max_value if spec.max_value != d else spec.min_value)


def _node_configs():
    from molmoact_ros.cores.action_decoding import ActionDecodingConfig
    from molmoact_ros.cores.chunk_intake import CommandSinkConfig
    from molmoact_ros.cores.perception import PerceptionConfig
    from molmoact_ros.cores.trace_planning import TracePlanningConfig
    from molmoact_ros.nodes.action_decoder import ActionDecoderNode
    from molmoact_ros.nodes.command_sink import CommandSinkNode
    from molmoact_ros.nodes.perception import PerceptionNode
    from molmoact_ros.nodes.trace_planner import TracePlannerNode
    return [(PerceptionNode, PerceptionConfig), (TracePlannerNode, TracePlanningConfig),
            (ActionDecoderNode, ActionDecodingConfig), (CommandSinkNode, CommandSinkConfig)]


@pytest.mark.parametrize('index', range(4))
def test_each_node_parameter_has_its_one_default_in_the_nodes_config(index):
    """Every parameter a node declares itself (beyond the shared base, engine and stage ones) lives in its
    config dataclass, whose field default is the ParamSpec's default: one default per parameter."""
    node_cls, config_cls = _node_configs()[index]
    defaults = {spec.name: spec.default for spec in node_cls.PARAMETERS}
    assert config_cls.from_params(defaults) == config_cls()
    for spec in node_cls.PARAMETERS:   # and each one reaches the config
        changed = config_cls.from_params({**defaults, spec.name: _other(spec)})
        assert changed != config_cls(), spec.name
