"""molmoact_ros.reasoning.steering.ClickedTrace: RViz clicks collected into an edited trace."""

import math

import pytest

from molmoact_ros.reasoning.steering import ClickedTrace


def test_completes_at_max_points():
    c = ClickedTrace(max_points=3, pause_s=2.0)
    assert c.add((1, 2), 640, 480, 0.0, 'r') is None
    assert c.add((3, 4), 640, 480, 0.5, 'r') is None
    assert c.add((5, 6), 640, 480, 1.0, 'r') == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
    assert c.points == [] and c.poll(100.0) is None


def test_completes_after_a_pause():
    c = ClickedTrace(max_points=5, pause_s=2.0)
    c.add((10, 10), 64, 48, 0.0, 'r')
    c.add((20, 20), 64, 48, 1.0, 'r')
    assert c.poll(2.9) is None
    assert c.poll(3.0) == [(10.0, 10.0), (20.0, 20.0)] and c.poll(10.0) is None


def test_bad_clicks_are_refused_and_keep_the_points():
    c = ClickedTrace(max_points=2, pause_s=1.0)
    c.add((1, 1), 64, 48, 0.0, 'r')
    for uv in [(math.nan, 1.0), (64.0, 1.0), (1.0, -1.0)]:
        with pytest.raises(ValueError, match='image|camera'):
            c.add(uv, 64, 48, 0.1, 'r')
    assert c.points == [(1.0, 1.0)]
    assert c.add((63.5, 47.5), 64, 48, 0.2, 'r') == [(1.0, 1.0), (63.5, 47.5)]


def test_a_new_request_starts_a_new_trace():
    c = ClickedTrace(max_points=2)
    c.add((1, 1), 64, 48, 0.0, 'r1')
    assert c.add((2, 2), 64, 48, 0.1, 'r2') is None and c.points == [(2.0, 2.0)] and c.request_id == 'r2'


@pytest.mark.parametrize('kwargs', [dict(max_points=0), dict(max_points=6), dict(pause_s=0.0)])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        ClickedTrace(**kwargs)
