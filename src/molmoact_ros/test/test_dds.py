"""Loopback-only DDS settings (pure Python)."""

import xml.etree.ElementTree as ET

from hypothesis import given, strategies as st

from molmoact_ros.ros import dds

NS = {'d': 'http://www.eprosima.com'}


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_domain_ids_stay_in_the_safe_range(seed):
    assert dds.DOMAIN_ID_MIN <= dds.pick_domain_id(seed) <= dds.DOMAIN_ID_MAX


def test_env_forces_discovery_range_and_profile_but_keeps_chosen_domain():
    env = dds.loopback_dds_env({'ROS_DOMAIN_ID': '42', 'ROS_LOCALHOST_ONLY': '0',
                                'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'})
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert env['ROS_DOMAIN_ID'] == '42'
    assert 'ROS_LOCALHOST_ONLY' not in env
    assert env['RMW_IMPLEMENTATION'] == 'rmw_fastrtps_cpp'
    assert dds.is_loopback_only(env)
    assert not dds.is_loopback_only({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'})


def test_env_without_domain_gets_one():
    env = dds.loopback_dds_env({}, domain_id=1234)
    assert env['ROS_DOMAIN_ID'] == str(dds.pick_domain_id(1234))


def test_profile_allows_only_loopback_udp_and_disables_builtin_transports():
    root = ET.parse(dds.find_profile()).getroot()
    participant = root.find('.//d:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    assert participant.find('.//d:useBuiltinTransports', NS).text.strip() == 'false'
    descriptors = {d.find('d:transport_id', NS).text: d for d in root.findall('.//d:transport_descriptor', NS)}
    used = [t.text for t in participant.findall('.//d:userTransports/d:transport_id', NS)]
    assert used and set(used) <= set(descriptors)
    for tid in used:
        d = descriptors[tid]
        kind = d.find('d:type', NS).text
        assert kind in ('SHM', 'UDPv4')
        if kind == 'UDPv4':
            allowed = [a.text for a in d.findall('.//d:interfaceWhiteList/d:address', NS)]
            assert allowed == ['127.0.0.1']
        else:
            assert int(d.find('d:segment_size', NS).text) >= 16 * 1024 * 1024
    peers = [a.text for a in participant.findall('.//d:initialPeersList//d:address', NS)]
    assert peers == ['127.0.0.1']
