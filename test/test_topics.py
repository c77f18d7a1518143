"""ros/topics.py against the nodes' real wiring: each stage node, configured over a stand-in engine (no model is
loaded), subscribes and publishes exactly the topics ros/topics.py lists for it, with the module's QoS."""

from types import SimpleNamespace

import pytest

rclpy = pytest.importorskip('rclpy')

from molmoact_ros.ros import topics as T  # noqa: E402


class _Provider:
    def acquire(self, settings):
        return SimpleNamespace(model_id='stand-in', sessions={})

    def release(self):
        pass


@pytest.fixture(scope='module')
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.mark.parametrize('node_name', list(T.NODE_TOPICS))
def test_each_node_uses_the_topics_of_the_module(ros, node_name):
    from molmoact_ros.nodes.pipeline import STAGES
    params = [rclpy.parameter.Parameter('use_aligned_depth', value=True),
              rclpy.parameter.Parameter('use_wrist_image', value=True),
              rclpy.parameter.Parameter('multi_rate_hz', value=1.0)]
    params = [p for p in params if p.name in {s.name for s in STAGES[node_name].PARAMETERS}]
    node = STAGES[node_name](node_name, provider=_Provider(), parameter_overrides=params)
    try:
        from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
        assert node.on_configure(LifecycleState(0, 'configuring')) == TransitionCallbackReturn.SUCCESS
        subs = {s.topic_name.lstrip('/') for s in node.subscriptions}
        pubs = {p.topic_name.lstrip('/') for p in node.publishers}
        assert set(T.NODE_TOPICS[node_name]['subscribes']) <= subs, subs
        assert set(T.NODE_TOPICS[node_name]['publishes']) <= pubs, pubs
        assert f'{node_name}/status' in pubs and T.DIAGNOSTICS.lstrip('/') in pubs
        wired = {t for t in subs | pubs if t in T.TOPICS}
        expected = set(T.NODE_TOPICS[node_name]['subscribes']) | set(T.NODE_TOPICS[node_name]['publishes'])
        assert wired == expected
    finally:
        node.release_resources()
        node.destroy_node()


def test_qos_profiles_are_built_once():
    from rclpy.qos import DurabilityPolicy
    assert T.LATCHED is T.LATCHED and T.LATCHED.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert T.LATCHED.depth == 1 and T.RELIABLE.depth == 10
