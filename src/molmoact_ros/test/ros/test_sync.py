"""Nearest-stamp matching of side inputs."""

import pytest
from hypothesis import given, strategies as st

from molmoact_ros.ros.sync import StampBuffer


def test_nearest_within_tolerance_only():
    buf = StampBuffer(size=3, tolerance_s=0.05)
    assert buf.nearest(1.0) is None
    for t in (1.0, 1.1, 1.2, 1.3):
        buf.add(t, f'd{t}')
    assert len(buf) == 3  # the oldest (1.0) fell out
    assert buf.nearest(1.12) == 'd1.1' and buf.nearest(1.29) == 'd1.3'
    assert buf.nearest(1.0) is None and buf.nearest(1.5) is None
    with pytest.raises(ValueError):
        StampBuffer(size=0)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=8), st.floats(0, 100))
def test_returns_the_closest_stamp(stamps, query):
    buf = StampBuffer(size=8, tolerance_s=1e9)
    for t in stamps:
        buf.add(t, t)
    assert abs(buf.nearest(query) - query) == min(abs(t - query) for t in stamps)
