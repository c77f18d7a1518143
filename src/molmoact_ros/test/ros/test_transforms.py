"""molmoact_ros.ros.transforms: poses, fixed transforms, tf2-less lookups."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from transforms3d.euler import euler2mat

from molmoact_ros.ros.transforms import (TransformLookup, matrix_to_pose, parse_pose_text, pose_to_matrix,
                                         tf2_available)

angles = st.floats(-3.1, 3.1, allow_nan=False)
coords = st.floats(-5, 5, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(angles, angles, angles, coords, coords, coords)
def test_pose_roundtrip(r, p, y, x, yy, z):
    m = np.eye(4)
    m[:3, :3] = euler2mat(r, p, y)
    m[:3, 3] = (x, yy, z)
    xyz, q = matrix_to_pose(m)
    assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-9
    np.testing.assert_allclose(pose_to_matrix(xyz, q), m, atol=1e-9)


def test_quaternion_order_is_ros_xyzw():
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45) maps x to y
    m = pose_to_matrix((1, 2, 3), (0, 0, np.sqrt(0.5), np.sqrt(0.5)))
    np.testing.assert_allclose(m[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(m[:3, 3], [1, 2, 3])


@pytest.mark.parametrize('text', ['1 2 3', '1 2 3 0 0 0 2', 'a b c d e f g', '1 2 3 nan 0 0 1'])
def test_bad_pose_text(text):
    with pytest.raises(ValueError):
        parse_pose_text(text)


def test_pose_text():
    assert parse_pose_text('  ') is None
    np.testing.assert_allclose(parse_pose_text('0.1, 0.2, 0.3, 0, 0, 0, 1')[:3, 3], [0.1, 0.2, 0.3])


def test_lookup_fixed_inverse_identity_and_missing():
    lookup = TransformLookup(None)
    assert not lookup.uses_tf2
    m = pose_to_matrix((1, 0, 0.5), (0, 0, np.sqrt(0.5), np.sqrt(0.5)))
    lookup.set_fixed('base', 'camera', m)
    np.testing.assert_allclose(lookup.lookup('base', 'camera'), m)
    np.testing.assert_allclose(lookup.lookup('camera', 'base') @ m, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(lookup.lookup('x', 'x'), np.eye(4))
    with pytest.raises(LookupError, match='tf2_ros is not installed' if not tf2_available() else 'no transform'):
        lookup.lookup('base', 'world')
    with pytest.raises(ValueError):
        lookup.set_fixed('', 'camera', m)
