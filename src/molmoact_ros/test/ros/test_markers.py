"""RViz trace markers: stable ns/ids, replacement, NaN handling, DELETEALL, label, colours, field types."""

import math
import os

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from visualization_msgs.msg import Marker, MarkerArray

from molmoact_ros.ros import markers as mk
from molmoact_ros.ros.markers import (DEFAULT_NS, ID_ARROW, ID_LABEL, ID_LINE, ID_POINTS, LABEL_MAX_CHARS,
                                      MARKER_IDS, SOURCE_COLORS, delete_all, trace_markers)

PTS = np.array([[0.1, 0.0, 0.5], [0.2, 0.05, 0.5], [0.3, 0.1, 0.55], [0.35, 0.1, 0.6]])
STAMP = Time(sec=12, nanosec=345)


def _by_id(arr):
    return {m.id: m for m in arr.markers}


def _rgba(c):
    return (c.r, c.g, c.b, c.a)


def test_field_checks_are_on_under_the_test_runner():
    # scripts/test.sh and the root conftest turn it on; generated messages then reject wrong field types.
    assert os.environ.get('ROS_PYTHON_CHECK_FIELDS') == '1'
    with pytest.raises(AssertionError):
        Marker().id = 1.5


def test_full_trace_layout():
    arr = trace_markers(PTS, 'camera_color_optical_frame', STAMP, 'pick up the cup', lifetime_s=2.5)
    assert isinstance(arr, MarkerArray)
    by = _by_id(arr)
    assert sorted(by) == list(MARKER_IDS)
    assert {m.ns for m in arr.markers} == {DEFAULT_NS}
    assert all(m.action == Marker.ADD for m in arr.markers)
    assert all(m.frame_locked is False for m in arr.markers)
    assert all(m.header.frame_id == 'camera_color_optical_frame' and m.header.stamp == STAMP for m in arr.markers)
    assert all((m.lifetime.sec, m.lifetime.nanosec) == (2, 500_000_000) for m in arr.markers)
    line, pts, arrow, label = by[ID_LINE], by[ID_POINTS], by[ID_ARROW], by[ID_LABEL]
    assert line.type == Marker.LINE_STRIP and len(line.points) == 4 and line.scale.x == pytest.approx(0.005)
    assert [(p.x, p.y, p.z) for p in line.points] == [tuple(p) for p in PTS]
    assert pts.type == Marker.SPHERE_LIST and len(pts.points) == len(pts.colors) == 4
    assert pts.scale.x == pts.scale.y == pts.scale.z == pytest.approx(0.015)
    assert _rgba(pts.colors[0]) == mk.FIRST_POINT_COLOR != _rgba(pts.colors[1])
    assert arrow.type == Marker.ARROW and len(arrow.points) == 2
    tip = arrow.points[1]
    assert (tip.x, tip.y, tip.z) == tuple(PTS[-1])
    direction = np.array([tip.x - arrow.points[0].x, tip.y - arrow.points[0].y, tip.z - arrow.points[0].z])
    last = PTS[-1] - PTS[-2]
    assert np.allclose(direction / np.linalg.norm(direction), last / np.linalg.norm(last))
    assert label.type == Marker.TEXT_VIEW_FACING and label.text == 'pick up the cup'
    # optical frame: "above" is -y
    assert label.pose.position.y < PTS[0][1] and label.pose.position.x == PTS[0][0]
    assert all(m.pose.orientation.w == 1.0 for m in arr.markers)


def test_label_above_in_a_base_frame_is_plus_z_and_offset_overrides():
    lab = _by_id(trace_markers(PTS, 'base_link', None, 'x'))[ID_LABEL]
    assert lab.pose.position.z > PTS[0][2] and lab.pose.position.y == PTS[0][1]
    lab = _by_id(trace_markers(PTS, 'base_link', None, 'x', text_offset_m=(0.1, 0, 0)))[ID_LABEL]
    assert lab.pose.position.x == pytest.approx(PTS[0][0] + 0.1)


def test_replacement_semantics_same_ns_ids_and_types():
    a = trace_markers(PTS, 'world', STAMP, 'first')
    b = trace_markers(PTS[::-1] + 1.0, 'world', STAMP, 'second', source='edited')
    assert [(m.ns, m.id, m.type, m.action) for m in a.markers] == [(m.ns, m.id, m.type, m.action) for m in b.markers]
    assert _by_id(b)[ID_LABEL].text.endswith('second')
    custom = trace_markers(PTS, 'world', STAMP, 'x', ns='other')
    assert {m.ns for m in custom.markers} == {'other'}


def test_nan_points_are_skipped():
    pts = PTS.copy()
    pts[1, 2] = np.nan
    pts[2, 0] = np.inf
    by = _by_id(trace_markers(pts, 'world', STAMP, 'x'))
    assert len(by[ID_LINE].points) == 2 and len(by[ID_POINTS].points) == 2
    assert all(math.isfinite(v) for p in by[ID_LINE].points for v in (p.x, p.y, p.z))


@pytest.mark.parametrize('n_finite', [0, 1])
def test_too_few_points_delete_what_cannot_be_drawn(n_finite):
    pts = np.full((3, 3), np.nan)
    pts[:n_finite] = PTS[:n_finite]
    arr = trace_markers(pts, 'world', STAMP, 'x')
    by = _by_id(arr)
    assert sorted(by) == list(MARKER_IDS)  # every id present: ADD or DELETE, nothing of the old trace lingers
    assert by[ID_LINE].action == Marker.DELETE and by[ID_ARROW].action == Marker.DELETE
    want = Marker.ADD if n_finite else Marker.DELETE
    assert by[ID_POINTS].action == want and by[ID_LABEL].action == want
    if n_finite:
        assert len(by[ID_POINTS].points) == 1
    assert trace_markers(np.zeros((0, 3)), 'world').markers[0].action == Marker.DELETE
    assert trace_markers([], 'world').markers[0].action == Marker.DELETE


def test_zero_length_last_segment_uses_previous_direction_or_deletes_arrow():
    pts = np.vstack([PTS, PTS[-1]])
    arrow = _by_id(trace_markers(pts, 'world'))[ID_ARROW]
    assert arrow.action == Marker.ADD and arrow.points[1].x == PTS[-1][0]
    same = np.repeat(PTS[:1], 3, axis=0)
    assert _by_id(trace_markers(same, 'world'))[ID_ARROW].action == Marker.DELETE


def test_label_truncation_and_one_line():
    long = 'put the red block ' * 10
    text = _by_id(trace_markers(PTS, 'world', None, long))[ID_LABEL].text
    assert len(text) <= LABEL_MAX_CHARS and text.endswith('...') and text.startswith('put the red block')
    assert _by_id(trace_markers(PTS, 'world', None, 'a\nb\t c'))[ID_LABEL].text == 'a b c'
    text = _by_id(trace_markers(PTS, 'world', None, 'é' * 80, source='edited'))[ID_LABEL].text
    assert text.startswith('[edited] ') and len(text) <= LABEL_MAX_CHARS


@pytest.mark.parametrize('source,name', [('model', 'model'), ('edited', 'edited'), ('external', 'external'),
                                         (0, 'model'), (1, 'edited'), (2, 'external'), ('Edited', 'edited')])
def test_colours_per_source(source, name):
    by = _by_id(trace_markers(PTS, 'world', None, 'x', source=source))
    want = SOURCE_COLORS[name]
    assert _rgba(by[ID_LINE].color) == pytest.approx(want)
    assert [_rgba(c) for c in by[ID_POINTS].colors[1:]] == [pytest.approx(want)] * 3


def test_model_and_edited_colours_differ_and_explicit_colour_wins():
    assert SOURCE_COLORS['model'] != SOURCE_COLORS['edited']
    assert SOURCE_COLORS['model'] == (0.0, 1.0, 1.0, 1.0)
    by = _by_id(trace_markers(PTS, 'world', source='edited', color=(0, 1, 0, 0.5)))
    assert _rgba(by[ID_LINE].color) == (0.0, 1.0, 0.0, 0.5)


def test_lifetime_zero_is_forever_and_bad_arguments_raise():
    m = trace_markers(PTS, 'world', lifetime_s=0).markers[0]
    assert (m.lifetime.sec, m.lifetime.nanosec) == (0, 0)
    m = trace_markers(PTS, 'world', lifetime_s=1.9999999999).markers[0]
    assert (m.lifetime.sec, m.lifetime.nanosec) == (2, 0)
    for kwargs in ({'lifetime_s': -1}, {'lifetime_s': float('nan')}, {'source': 'nope'}, {'source': 3},
                   {'line_width_m': 0}, {'color': (2, 0, 0, 1)}, {'color': (1, 0, 0)}):
        with pytest.raises(ValueError):
            trace_markers(PTS, 'world', **kwargs)
    with pytest.raises(ValueError):
        trace_markers(PTS[:, :2], 'world')
    with pytest.raises(ValueError):
        trace_markers(PTS, '')


def test_delete_all():
    arr = delete_all()
    assert len(arr.markers) == 1
    m = arr.markers[0]
    assert m.action == Marker.DELETEALL and m.ns == '' and m.header.frame_id == ''
    m = delete_all(ns=DEFAULT_NS, frame_id='world').markers[0]
    assert m.action == Marker.DELETEALL and m.ns == DEFAULT_NS and m.header.frame_id == 'world'


def test_messages_serialize():
    from rclpy.serialization import deserialize_message, serialize_message
    for arr in (trace_markers(PTS, 'world', STAMP, 'pick ünïcode', source=1), delete_all('molmoact_trace')):
        data = serialize_message(arr)
        back = deserialize_message(data, MarkerArray)
        # Colours are float32, so compare after one round trip (then stable), field by field: not the bytes,
        # whose CDR alignment padding is not zeroed by the serializer (CI: one run differed in a pad byte).
        assert deserialize_message(serialize_message(back), MarkerArray) == back
        assert len(serialize_message(back)) == len(data)
        assert [(m.ns, m.id, m.type, m.action, m.text) for m in back.markers] == \
            [(m.ns, m.id, m.type, m.action, m.text) for m in arr.markers]
