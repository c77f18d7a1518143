"""Camera geometry: intrinsics, pixel affines, model space, back-projection, depth sampling, table plane."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from transforms3d.euler import euler2mat

from molmoact_ros.robot import geometry as g
from molmoact_ros.robot.geometry import CameraIntrinsics

CAM = CameraIntrinsics(fx=600.0, fy=610.0, cx=319.5, cy=239.5, width=640, height=480)

finite = st.floats(-1e3, 1e3, allow_nan=False)
sizes = st.integers(1, 4096)


# ---------------------------------------------------------------- intrinsics

def test_from_k_and_validation():
    cam = CameraIntrinsics.from_k([600, 0, 319.5, 0, 610, 239.5, 0, 0, 1], 640, 480)
    assert cam == CAM
    assert cam.k == (600.0, 0.0, 319.5, 0.0, 610.0, 239.5, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(cam.matrix, np.reshape(cam.k, (3, 3)))
    assert CameraIntrinsics.from_k(np.reshape(cam.k, (3, 3)), 640, 480) == cam
    with pytest.raises(ValueError, match='not calibrated'):
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)
    with pytest.raises(ValueError, match='skew'):
        CameraIntrinsics.from_k([600, 1, 319.5, 0, 610, 239.5, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match='not a camera matrix'):
        CameraIntrinsics.from_k([600, 0, 319.5, 0, 610, 239.5, 0, 0, 2], 640, 480)
    with pytest.raises(ValueError, match='9 elements'):
        CameraIntrinsics.from_k([600, 0, 319.5], 640, 480)
    with pytest.raises(ValueError, match='non-finite'):
        CameraIntrinsics.from_k([np.nan, 0, 319.5, 0, 610, 239.5, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match='focal lengths must be positive'):
        CameraIntrinsics(fx=-1, fy=1, cx=0, cy=0, width=2, height=2)
    with pytest.raises(ValueError, match='width must be a positive integer'):
        CameraIntrinsics(fx=1, fy=1, cx=0, cy=0, width=0, height=2)
    with pytest.raises(ValueError, match='height must be a positive integer'):
        CameraIntrinsics(fx=1, fy=1, cx=0, cy=0, width=2, height=2.5)
    with pytest.raises(ValueError, match='cx must be finite'):
        CameraIntrinsics(fx=1, fy=1, cx=math.inf, cy=0, width=2, height=2)
    with pytest.raises(Exception):
        CAM.fx = 1.0  # frozen


def test_scaled_uses_the_half_pixel_convention():
    half = CAM.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == 300.0 and half.fy == 305.0
    # the optical centre of a 640x480 image (319.5, 239.5) stays the centre of the 320x240 image
    assert (half.cx, half.cy) == (159.5, 119.5)
    assert CAM.resized(320, 240) == half
    with pytest.raises(ValueError, match='positive'):
        CAM.scaled(0.0)


@settings(max_examples=60, deadline=None)
@given(w=sizes, h=sizes, w2=sizes, h2=sizes, x=finite, y=finite, z=st.floats(0.05, 50))
def test_resized_intrinsics_agree_with_the_resize_affine(w, h, w2, h2, x, y, z):
    cam = CameraIntrinsics(fx=500, fy=450, cx=w / 2 - 3, cy=h / 3, width=w, height=h)
    small = cam.resized(w2, h2)
    assert (small.width, small.height) == (w2, h2)
    p = np.array([x, y, z])
    # a 3D point projects to the resize of its projection in the original image
    np.testing.assert_allclose(g.project(p, small),
                               g.apply_affine(g.resize_affine(w, h, w2, h2), g.project(p, cam)),
                               rtol=1e-9, atol=1e-6)


# ---------------------------------------------------------------- affines

@settings(max_examples=60, deadline=None)
@given(w=sizes, h=sizes, w2=sizes, h2=sizes)
def test_resize_affine_maps_image_corners_to_corners(w, h, w2, h2):
    m = g.resize_affine(w, h, w2, h2)
    edges = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    want = np.array([[-0.5, -0.5], [w2 - 0.5, -0.5], [-0.5, h2 - 0.5], [w2 - 0.5, h2 - 0.5]])
    np.testing.assert_allclose(g.apply_affine(m, edges), want, atol=1e-9 * max(w2, h2))
    # the image centre stays the centre
    np.testing.assert_allclose(g.apply_affine(m, [(w - 1) / 2, (h - 1) / 2]), [(w2 - 1) / 2, (h2 - 1) / 2],
                               atol=1e-9 * max(w2, h2))
    # inverse and composition
    back = g.resize_affine(w2, h2, w, h)
    np.testing.assert_allclose(g.invert_affine(m), back, atol=1e-12 * max(w, h, w2, h2))
    np.testing.assert_allclose(g.compose_affine(m, back), np.eye(3), atol=1e-12 * max(w, h, w2, h2))


def test_resize_affine_matches_cv2_resize():
    """The affine predicts where a feature lands after cv2.resize (INTER_AREA and INTER_LINEAR)."""
    import cv2
    vs, us = np.mgrid[0:480, 0:640]
    centre = (204.3, 104.7)
    img = np.exp(-((us - centre[0]) ** 2 + (vs - centre[1]) ** 2) / (2 * 8.0 ** 2)).astype(np.float32)
    for size, interp in (((320, 240), cv2.INTER_AREA), ((378, 378), cv2.INTER_LINEAR), ((1280, 960), cv2.INTER_LINEAR)):
        out = cv2.resize(img, size, interpolation=interp)
        vs, us = np.mgrid[0:out.shape[0], 0:out.shape[1]]
        centroid = np.array([(us * out).sum(), (vs * out).sum()]) / out.sum()
        want = g.apply_affine(g.resize_affine(640, 480, *size), centre)
        np.testing.assert_allclose(centroid, want, atol=0.01)
        naive = np.array(centre) * (size[0] / 640, size[1] / 480)  # u' = u * s: off by 0.5 (s - 1)
        assert np.abs(naive - centroid).max() > 0.1


def test_affine_helpers_validate_and_compose_in_order():
    crop = g.crop_affine(100, 50)
    resize = g.resize_affine(256, 256, 512, 512)
    m = g.compose_affine(resize, crop)  # resize first, then move into the full image
    np.testing.assert_allclose(g.apply_affine(m, [0, 0]), g.apply_affine(crop, g.apply_affine(resize, [0, 0])))
    assert g.apply_affine(m, [[1.0, 2.0]]).shape == (1, 2)
    assert g.apply_affine(m, np.empty((0, 2))).shape == (0, 2)
    assert g.affine_to_list(m) == [float(x) for x in m.ravel()] and len(g.affine_to_list(m)) == 9
    np.testing.assert_array_equal(g.as_affine(g.affine_to_list(m)), m)
    np.testing.assert_array_equal(g.identity_affine(), np.eye(3))
    np.testing.assert_array_equal(g.compose_affine(), np.eye(3))
    with pytest.raises(ValueError, match='bottom row'):
        g.as_affine([1, 0, 0, 0, 1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match='9 numbers'):
        g.as_affine([1, 0, 0])
    with pytest.raises(ValueError, match='non-finite'):
        g.as_affine([1, 0, np.nan, 0, 1, 0, 0, 0, 1])
    with pytest.raises(ValueError, match='singular'):
        g.invert_affine([1, 2, 0, 2, 4, 0, 0, 0, 1])
    with pytest.raises(ValueError, match=r'shape \(2,\) or \(N, 2\)'):
        g.apply_affine(np.eye(3), [1, 2, 3])
    with pytest.raises(ValueError, match='positive integer'):
        g.resize_affine(0, 10, 10, 10)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.floats(-10, 10), min_size=6, max_size=6), uv=st.tuples(finite, finite))
def test_invert_affine_round_trips(a, uv):
    m = np.array([[a[0], a[1], a[2] * 50], [a[3], a[4], a[5] * 50], [0, 0, 1]])
    if abs(np.linalg.det(m[:2, :2])) < 1e-2:
        return
    np.testing.assert_allclose(g.apply_affine(g.invert_affine(m), g.apply_affine(m, uv)), uv,
                               rtol=1e-6, atol=1e-6 * (1 + np.abs(m).max() / abs(np.linalg.det(m[:2, :2]))))


# ---------------------------------------------------------------- model space

def test_model_space_corners():
    # identity preprocessing: model-space corners are the corner pixel centres of the source
    corners = np.array([[0, 0], [255, 0], [0, 255], [255, 255]])
    np.testing.assert_allclose(g.model_trace_to_source_pixels(corners, 640, 480, np.eye(3)),
                               [[0, 0], [639, 0], [0, 479], [639, 479]])
    np.testing.assert_allclose(g.model_space_to_model_pixels([255, 255], 378, 378), [377, 377])
    np.testing.assert_allclose(g.model_space_to_model_pixels([128, 0], 256, 256), [128, 0])


@settings(max_examples=60, deadline=None)
@given(mw=st.integers(2, 2048), mh=st.integers(2, 2048), sw=sizes, sh=sizes)
def test_model_space_corners_map_to_the_source_corner_regions(mw, mh, sw, sh):
    """Model image = a resize of the source: model-space corners land on the centres of the corner
    model pixels, i.e. half a model pixel inside the source image's outer edges."""
    m2s = g.affine_to_list(g.resize_affine(mw, mh, sw, sh))
    corners = np.array([[0, 0], [255, 0], [0, 255], [255, 255]])
    got = g.model_trace_to_source_pixels(corners, mw, mh, m2s)
    hx, hy = 0.5 * sw / mw, 0.5 * sh / mh  # half a model pixel, in source pixels
    want = np.array([[-0.5 + hx, -0.5 + hy], [sw - 0.5 - hx, -0.5 + hy],
                     [-0.5 + hx, sh - 0.5 - hy], [sw - 0.5 - hx, sh - 0.5 - hy]])
    np.testing.assert_allclose(got, want, atol=1e-9 * max(sw, sh))
    # same size: exactly the source's corner pixel centres
    if (mw, mh) == (sw, sh):
        np.testing.assert_allclose(got, [[0, 0], [sw - 1, 0], [0, sh - 1], [sw - 1, sh - 1]], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(pts=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=5),
       mw=st.integers(2, 1024), mh=st.integers(2, 1024), sw=sizes, sh=sizes,
       x0=st.integers(0, 500), y0=st.integers(0, 500))
def test_model_space_source_round_trip(pts, mw, mh, sw, sh, x0, y0):
    m2s = g.compose_affine(g.resize_affine(mw, mh, sw, sh), g.crop_affine(x0, y0))
    src = g.model_trace_to_source_pixels(pts, mw, mh, m2s)
    back = g.source_pixels_to_model_space(src, mw, mh, m2s)
    np.testing.assert_allclose(back, np.array(pts, dtype=float), atol=1e-6)
    np.testing.assert_array_equal(np.rint(back).astype(int), np.array(pts))


def test_model_space_validation():
    with pytest.raises(ValueError, match=r'\[0, 255\]'):
        g.model_space_to_model_pixels([256, 0], 10, 10)
    with pytest.raises(ValueError, match=r'\[0, 255\]'):
        g.model_space_to_model_pixels([[-1, 0]], 10, 10)
    with pytest.raises(ValueError, match=r'\[0, 255\]'):
        g.model_space_to_model_pixels([np.nan, 0], 10, 10)
    with pytest.raises(ValueError, match='model_w'):
        g.model_space_to_model_pixels([1, 1], 0, 10)
    with pytest.raises(ValueError, match='at least 2x2'):
        g.model_pixels_to_model_space([0, 0], 1, 10)
    # a 1-pixel-wide model image: every column is pixel 0
    np.testing.assert_array_equal(g.model_space_to_model_pixels([255, 255], 1, 11), [0, 10])


# ---------------------------------------------------------------- projection

@settings(max_examples=100, deadline=None)
@given(u=st.floats(-200, 840), v=st.floats(-200, 680), z=st.floats(0.01, 100))
def test_project_backproject_round_trip(u, v, z):
    p = g.backproject([u, v], z, CAM)
    assert p.shape == (3,) and math.isclose(p[2], z)
    np.testing.assert_allclose(g.project(p, CAM), [u, v], rtol=1e-9, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(x=finite, y=finite, z=st.floats(0.01, 100))
def test_backproject_project_round_trip(x, y, z):
    p = np.array([x, y, z])
    np.testing.assert_allclose(g.backproject(g.project(p, CAM), z, CAM), p, rtol=1e-9, atol=1e-6)


def test_backproject_invalid_depth_and_shapes():
    uv = np.array([[319.5, 239.5], [0, 0], [10, 10], [20, 20], [np.nan, 3], [5, 5]])
    depth = np.array([1.0, 0.0, -1.0, np.nan, 2.0, np.inf])
    out = g.backproject(uv, depth, CAM)
    assert out.shape == (6, 3)
    np.testing.assert_allclose(out[0], [0, 0, 1])
    assert np.isnan(out[1:]).all()
    np.testing.assert_allclose(g.backproject(uv[:1], 2.0, CAM), [[0, 0, 2]])  # scalar depth broadcasts
    assert g.backproject(np.empty((0, 2)), np.empty(0), CAM).shape == (0, 3)
    with pytest.raises(ValueError, match='depth_m'):
        g.backproject(uv, [1.0, 2.0], CAM)
    assert np.isnan(g.project([0, 0, 0], CAM)).all() and np.isnan(g.project([0, 0, -1], CAM)).all()
    np.testing.assert_allclose(g.pixel_rays([CAM.cx + CAM.fx, CAM.cy], CAM), [1, 0, 1])


# ---------------------------------------------------------------- depth sampling

def test_sample_depth_median_ignores_invalid_and_edges():
    depth = np.full((6, 8), 2.0, np.float32)
    depth[2, 3] = 100.0                       # an outlier is voted down by the median
    depth[0, :] = np.nan
    depth[1, :] = 0.0                         # raw "no return"
    uv = np.array([[3.2, 2.4],                # nearest pixel (3, 2): window 5x5, median 2.0
                   [0.0, 0.0],                # window clipped to the image, rows 0-1 invalid -> 2.0 below
                   [-0.6, 2.0],               # nearest pixel outside the image -> NaN
                   [7.49, 5.49],              # last pixel
                   [np.nan, 1.0]])
    got = g.sample_depth(depth, uv, window=2)
    np.testing.assert_allclose(got, [2.0, 2.0, np.nan, 2.0, np.nan])
    assert g.sample_depth(depth, [3, 2], window=0) == 100.0     # a single pixel
    assert np.isnan(g.sample_depth(depth, [3, 0], window=1))    # only NaN and 0 in reach
    assert g.sample_depth(depth, [3.2, 2.4]).shape == ()
    assert g.sample_depth(depth, np.empty((0, 2))).shape == (0,)
    vals = np.arange(1, 10, dtype=np.float64).reshape(3, 3)
    assert g.sample_depth(vals, [1, 1], window=1) == 5.0
    with pytest.raises(ValueError, match='window'):
        g.sample_depth(depth, [1, 1], window=-1)
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        g.sample_depth(np.zeros((2, 2, 1)), [1, 1])


@settings(max_examples=50, deadline=None)
@given(u=st.floats(-3, 12), v=st.floats(-3, 9), window=st.integers(0, 3))
def test_sample_depth_matches_a_plain_loop(u, v, window):
    depth = np.random.default_rng(3).uniform(0.2, 3.0, (7, 10))
    depth[::3, ::2] = np.nan
    got = g.sample_depth(depth, [u, v], window)
    cu, cv = math.floor(u + 0.5), math.floor(v + 0.5)
    if not (0 <= cu < 10 and 0 <= cv < 7):
        assert np.isnan(got)
        return
    win = depth[max(0, cv - window):cv + window + 1, max(0, cu - window):cu + window + 1]
    win = win[np.isfinite(win)]
    if win.size == 0:
        assert np.isnan(got)
    else:
        assert got == np.median(win)


# ---------------------------------------------------------------- table plane

def _looking_down(height):
    """Camera optical frame `height` m above the base origin, looking straight down, image x along base -y."""
    t = np.eye(4)
    # optical z (forward) = base -z, optical x (right) = base -y, optical y (down) = base -x
    t[:3, :3] = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], dtype=float)
    t[:3, 3] = [0.4, 0.0, height]
    return t


def test_ray_plane_camera_looking_down_at_a_table():
    cam = CameraIntrinsics(fx=500, fy=500, cx=320, cy=240, width=640, height=480)
    t = _looking_down(1.0)
    table_z = 0.2                                  # table 0.2 m above the base, camera 0.8 m above it
    uv = np.array([[320, 240], [320 + 250, 240], [320, 240 + 100]])
    got = g.ray_plane_intersection(uv, cam, t, [0, 0, table_z], [0, 0, 1])
    # centre: straight below; 250 px right at 0.8 m depth = 0.4 m along optical x = base -y
    np.testing.assert_allclose(got, [[0.4, 0.0, 0.2], [0.4, -0.4, 0.2], [0.4 - 0.16, 0.0, 0.2]], atol=1e-12)
    # the same answer as back-projecting with the known depth and transforming to the base
    depth = 0.8
    np.testing.assert_allclose(got, g.transform_points(t, g.backproject(uv, depth, cam)), atol=1e-12)
    # normal orientation and length do not matter
    np.testing.assert_allclose(g.ray_plane_intersection(uv, cam, t, [5, 5, table_z], [0, 0, -3]), got, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(roll=st.floats(-0.6, 0.6), pitch=st.floats(-0.6, 0.6), yaw=st.floats(-3, 3),
       u=st.floats(0, 639), v=st.floats(0, 479), h=st.floats(0.3, 2.0))
def test_ray_plane_hits_lie_on_the_plane_and_project_back(roll, pitch, yaw, u, v, h):
    t = _looking_down(h)
    t[:3, :3] = euler2mat(roll, pitch, yaw) @ t[:3, :3]
    hit = g.ray_plane_intersection([u, v], CAM, t, [0, 0, 0], [0, 0, 1])
    if np.isnan(hit).any():
        return  # possible only for steep tilts: the ray points above the horizon
    assert abs(hit[2]) < 1e-9
    in_cam = g.transform_points(np.linalg.inv(t), hit)
    np.testing.assert_allclose(g.project(in_cam, CAM), [u, v], atol=1e-6)


def test_ray_plane_parallel_behind_and_invalid():
    cam = CameraIntrinsics(fx=500, fy=500, cx=320, cy=240, width=640, height=480)
    t = _looking_down(1.0)
    # a vertical plane y = -5 (base), parallel to the optical axis: the centre ray never meets it; a ray
    # to the right of the image (optical +x = base -y) meets it, one to the left would meet it behind
    got = g.ray_plane_intersection([[320, 240], [400, 240], [240, 240]], cam, t, [0, -5, 0], [0, 1, 0])
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all()
    np.testing.assert_allclose(got[1], [0.4, -5.0, 1.0 - 5.0 / (80 / 500)], atol=1e-9)
    # the table above the camera: hits are behind it
    assert np.isnan(g.ray_plane_intersection([320, 240], cam, t, [0, 0, 2.0], [0, 0, 1])).all()
    # camera exactly on the plane
    assert np.isnan(g.ray_plane_intersection([320, 240], cam, t, [0, 0, 1.0], [0, 0, 1])).all()
    assert np.isnan(g.ray_plane_intersection([np.nan, 240], cam, t, [0, 0, 0], [0, 0, 1])).all()
    with pytest.raises(ValueError, match='plane_normal'):
        g.ray_plane_intersection([320, 240], cam, t, [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match='plane_point'):
        g.ray_plane_intersection([320, 240], cam, t, [0, 0], [0, 0, 1])
    bad = t.copy()
    bad[:3, :3] *= 2
    with pytest.raises(ValueError, match='orthonormal'):
        g.ray_plane_intersection([320, 240], cam, bad, [0, 0, 0], [0, 0, 1])
    mirror = t.copy()
    mirror[:3, 0] *= -1
    with pytest.raises(ValueError, match='det'):
        g.as_transform(mirror)
    with pytest.raises(ValueError, match='4x4'):
        g.as_transform(np.eye(3))
    with pytest.raises(ValueError, match='bottom row'):
        g.as_transform(np.vstack([t[:3], [0, 0, 1, 1]]))
