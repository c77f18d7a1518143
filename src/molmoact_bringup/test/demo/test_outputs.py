"""The demo's summary checks and image files (ROS-free)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from molmoact_bringup.demo.outputs import (JointLimit, joint_limits_from_urdf, latency_stats, max_displacement,
                                           range_check, write_gif, write_png)
from molmoact_bringup.sim_arm_node import find_urdf

URDF = """<robot name="r">
  <link name="a"/><link name="b"/><link name="c"/><link name="d"/>
  <joint name="rev" type="revolute"><parent link="a"/><child link="b"/>
    <limit lower="-1.5" upper="0.5" velocity="1" effort="1"/></joint>
  <joint name="slide" type="prismatic"><parent link="b"/><child link="c"/>
    <limit lower="0" upper="0.04" velocity="1" effort="1"/></joint>
  <joint name="spin" type="continuous"><parent link="c"/><child link="d"/></joint>
  <joint name="weld" type="fixed"><parent link="c"/><child link="d"/></joint>
</robot>"""


def test_joint_limits_from_urdf():
    assert joint_limits_from_urdf(URDF) == {'rev': JointLimit(-1.5, 0.5), 'slide': JointLimit(0.0, 0.04)}


def test_panda_urdf_limits():
    limits = joint_limits_from_urdf(find_urdf('').read_text())
    assert len(limits) == 9 and limits['panda_joint4'] == JointLimit(-3.0718, -0.0698)
    assert limits['panda_finger_joint1'] == JointLimit(0.0, 0.04)


def test_range_check_flags_outside_and_non_finite_and_ignores_unlimited():
    limits = joint_limits_from_urdf(URDF)
    ok = range_check([{'rev': 0.0, 'slide': 0.02, 'spin': 99.0}, {'rev': 0.5, 'slide': 0.0}], limits)
    assert ok['ok'] and ok['samples'] == 2 and ok['worst_margin'] == 0.0
    bad = range_check([{'rev': 0.6}], limits)
    assert not bad['ok'] and bad['violations'][0]['joint'] == 'rev' and bad['worst_margin'] == pytest.approx(-0.1)
    assert range_check([{'rev': 0.5005}], limits)['ok']  # within the tolerance
    assert not range_check([{'slide': math.nan}], limits)['ok']
    assert range_check([], limits) == {'ok': True, 'samples': 0, 'violations': [], 'worst_margin': None}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=30))
def test_range_check_agrees_with_a_plain_comparison(values):
    limits = {'rev': JointLimit(-1.5, 0.5)}
    result = range_check([{'rev': v} for v in values], limits, tolerance=0.0)
    assert result['ok'] == all(-1.5 <= v <= 0.5 for v in values)
    assert result['worst_margin'] == pytest.approx(min(min(v + 1.5, 0.5 - v) for v in values))


def test_max_displacement():
    samples = [{'a': 1.0, 'b': 0.0}, {'a': 1.2, 'b': -0.5}, {'a': 0.9, 'b': -0.1}]
    d = max_displacement(samples, ['a', 'b', 'c'])
    assert d['per_joint'] == pytest.approx({'a': 0.2, 'b': 0.5}) and d['max_abs'] == pytest.approx(0.5)
    assert max_displacement([], ['a']) == {'per_joint': {}, 'max_abs': 0.0}


def test_latency_stats():
    assert latency_stats([1.0, 3.0, 2.0]) == {'count': 3, 'mean_s': 2.0, 'median_s': 2.0, 'max_s': 3.0}
    assert latency_stats([])['count'] == 0 and latency_stats([])['mean_s'] is None


def test_gif_and_png(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
    assert write_gif(frames, tmp_path / 'a.gif', fps=5) == 4
    with Image.open(tmp_path / 'a.gif') as im:
        assert im.n_frames == 4 and im.size == (32, 24) and im.info['duration'] == 200
    write_png(frames[-1], tmp_path / 'f.png')
    with Image.open(tmp_path / 'f.png') as im:
        assert np.array_equal(np.asarray(im.convert('RGB')), frames[-1])
    with pytest.raises(ValueError):
        write_gif([], tmp_path / 'b.gif')
    with pytest.raises(ValueError):
        write_gif([frames[0], frames[0][:10]], tmp_path / 'c.gif')
