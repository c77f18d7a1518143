"""The released LIBERO evaluator's model-side preprocessing (JPEG round trip, 90 % centre crop resized back) and
the perception node's model -> source pixel mapping once a crop is in the chain: a feature found in the model
image maps back onto the source pixel it came from."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from molmoact_ros.cores.perception import ModelImageConfig
from molmoact_ros.cores.perception import model_image as core_model_image
from molmoact_ros.robot.geometry import (apply_affine, center_crop_affine, center_crop_box,
                                         model_pixels_to_model_space, model_trace_to_source_pixels)
from molmoact_ros.ros.image import ImageFormatError, center_crop_resize, jpeg_round_trip


def test_crop_box_is_the_evaluators():
    # run_libero_eval.py crop_and_resize_pil at 0.9 on its 256 px frames: int(256 * sqrt(0.9)) = 242, from 7.
    assert center_crop_box(256, 256, 0.9) == (7, 7, 242, 242)
    assert center_crop_box(320, 240, 1.0) == (0, 0, 320, 240)
    assert center_crop_box(320, 240, 0.25) == (80, 60, 160, 120)
    for bad in (0.0, 1.5, -0.1, math.nan):
        with pytest.raises(ValueError):
            center_crop_box(256, 256, bad)


def test_crop_resize_matches_a_pil_crop_then_bilinear_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = center_crop_resize(img, 0.9)
    expected = np.asarray(Image.fromarray(img).crop((7, 7, 249, 249)).resize((256, 256), Image.BILINEAR))
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert center_crop_resize(img, 1.0) is img
    # the centre pixel stays the centre pixel (within the resize's interpolation)
    np.testing.assert_allclose(apply_affine(center_crop_affine(256, 256, 0.9), [127.5, 127.5]), [127.5, 127.5])


def test_jpeg_round_trip_is_lossy_but_close_and_checks_its_input():
    yy, xx = np.mgrid[0:64, 0:96]
    img = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).astype(np.uint8)
    out = jpeg_round_trip(img, 95)
    assert out.shape == img.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - img.astype(int))
    assert 0 < err.max() and err.mean() < 2.0  # changed (JPEG), but barely at quality 95
    assert np.abs(jpeg_round_trip(img, 10).astype(int) - img.astype(int)).mean() > err.mean()
    with pytest.raises(ValueError):
        jpeg_round_trip(img, 0)
    with pytest.raises(ImageFormatError):
        jpeg_round_trip(img[..., 0], 95)


def model_image(params, rgb):
    """The perception node's model image: its core (cores/perception.py) with these node parameters."""
    return core_model_image(rgb, ModelImageConfig(**params))


def _dot_image(w, h, u, v):
    img = np.zeros((h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[((xx - u) ** 2 + (yy - v) ** 2) <= 4.5 ** 2] = 255
    return img


def _centroid(img):
    weight = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(256, 256, 0), (320, 240, 256), (640, 480, 256), (256, 256, 336)]),
       st.sampled_from([0.9, 0.81, 0.6, 1.0]), st.floats(0.25, 0.75), st.floats(0.25, 0.75),
       st.sampled_from([0, 95]))
def test_a_feature_in_the_model_image_maps_back_to_its_source_pixel(size, fraction, fu, fv, quality):
    w, h, max_side = size
    u, v = fu * (w - 1), fv * (h - 1)
    params = {'max_image_side_px': max_side, 'resize_method': 'area', 'jpeg_quality': quality,
              'center_crop_area_fraction': fraction}
    model_rgb, affine = model_image(params, _dot_image(w, h, u, v))
    mh, mw = model_rgb.shape[:2]
    if max_side and max(w, h) > max_side:
        assert max(mw, mh) == max_side
    else:
        assert (mw, mh) == (w, h)
    if fraction == 1.0 and not (max_side and max(w, h) > max_side):
        assert affine is None  # nothing moved: the model image is the source
        affine = np.eye(3)
    # What the trace planner does: the model's point (model space 0..255) -> source pixels.
    point_model_space = model_pixels_to_model_space(_centroid(model_rgb), mw, mh)
    back = model_trace_to_source_pixels(point_model_space, mw, mh, affine)
    scale = max(w / mw, h / mh) / math.sqrt(fraction)  # one model pixel in source pixels
    assert np.linalg.norm(back - [u, v]) <= 0.35 * scale + 0.35, (back, (u, v))


def test_the_crop_enlarges_the_view_about_the_centre():
    """With the crop, a feature off-centre lies further from the centre in the model image (by 1/sqrt(0.9))."""
    rgb = _dot_image(256, 256, 200.0, 60.0)
    plain, _ = model_image({'max_image_side_px': 0, 'resize_method': 'area', 'jpeg_quality': 0,
                            'center_crop_area_fraction': 1.0}, rgb)
    cropped, affine = model_image({'max_image_side_px': 0, 'resize_method': 'area', 'jpeg_quality': 0,
                                   'center_crop_area_fraction': 0.9}, rgb)
    c0, c1 = _centroid(plain) - 127.5, _centroid(cropped) - 127.5
    np.testing.assert_allclose(c1 / c0, 256 / 242, rtol=0.01)
    np.testing.assert_allclose(apply_affine(affine, _centroid(cropped)), [200.0, 60.0], atol=0.3)
