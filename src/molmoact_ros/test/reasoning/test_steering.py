"""Trace pixel mapping and the training-time trace draw (reasoning/steering.py)."""

from fractions import Fraction

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.reasoning import steering as S

CYAN = (0, 255, 255)


def exact_pixel(v, size):
    """round(v * (size - 1) / 255) in exact arithmetic (ties cannot occur: 2 v (size-1) is even)."""
    return round(Fraction(v) * (size - 1) / 255)


# --- Pixel mapping ---------------------------------------------------------------------------------

@pytest.mark.parametrize('width, height', [(256, 256), (640, 480), (224, 224), (1, 1), (2, 3), (1920, 1080)])
def test_ends_map_to_the_first_and_last_pixel(width, height):
    px = S.model_to_pixels([[0, 0], [255, 255]], width, height)
    assert px.tolist() == [[0, 0], [width - 1, height - 1]]
    assert px.dtype == np.int64


def test_hand_computed_points():
    # 128 * 639 / 255 = 320.75 -> 321 ; 100 * 479 / 255 = 187.84 -> 188
    assert S.model_to_pixels([128, 100], 640, 480).tolist() == [321, 188]
    assert S.model_to_pixels([[17, 200]], 256, 256).tolist() == [[17, 200]]  # identity at 256
    # out of range model values are clipped after scaling, as in training
    assert S.model_to_pixels([[-10, 300]], 640, 480).tolist() == [[0, 479]]
    # 321 * 255 / 639 = 128.1 -> 128
    assert S.pixels_to_model([[321, 188], [639, 479], [-5, 5000]], 640, 480).tolist() == [
        [128, 100], [255, 255], [0, 255]]
    assert S.pixels_to_model([[0, 0]], 1, 1).tolist() == [[0, 0]]
    assert S.model_to_pixels([], 10, 10).shape == (0, 2)


def test_mapping_input_checks():
    with pytest.raises(ValueError):
        S.model_to_pixels([[1, 2, 3]], 10, 10)
    with pytest.raises(ValueError):
        S.model_to_pixels([[1, np.nan]], 10, 10)
    for size in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            S.model_to_pixels([[1, 2]], size, 10)


sizes = st.integers(1, 4096)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), sizes, sizes)
def test_float32_mapping_equals_exact_rounding(x, y, width, height):
    assert S.model_to_pixels([x, y], width, height).tolist() == [exact_pixel(x, width),
                                                                 exact_pixel(y, height)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(256, 4096), st.integers(256, 4096))
def test_model_pixel_model_round_trip_on_large_images(x, y, width, height):
    px = S.model_to_pixels([x, y], width, height)
    assert S.pixels_to_model(px, width, height).tolist() == [x, y]


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 256), st.integers(1, 256))
def test_pixel_model_pixel_round_trip_on_small_images(data, width, height):
    px = [data.draw(st.integers(0, width - 1)), data.draw(st.integers(0, height - 1))]
    assert S.model_to_pixels(S.pixels_to_model(px, width, height), width, height).tolist() == px


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), sizes)
def test_mapping_is_monotone_and_in_range(a, b, size):
    lo, hi = sorted((a, b))
    p_lo, p_hi = S.model_to_pixels([[lo, lo], [hi, hi]], size, size)[:, 0]
    assert 0 <= p_lo <= p_hi <= size - 1
    m = S.pixels_to_model([[p_lo, 0], [p_hi, 0]], size, size)[:, 0]
    assert 0 <= m[0] <= m[1] <= 255


# --- Drawing ---------------------------------------------------------------------------------------

def distance_to_polyline(width, height, pixels):
    """Distance of every pixel centre to the polyline through ``pixels`` (integer [x, y])."""
    yy, xx = np.mgrid[0:height, 0:width]
    p = np.stack([xx, yy], axis=-1).astype(float)
    best = np.full((height, width), np.inf)
    for a, b in zip(pixels[:-1], pixels[1:]):
        a, b = np.asarray(a, float), np.asarray(b, float)
        ab = b - a
        length2 = ab @ ab
        t = np.zeros((height, width)) if length2 == 0 else np.clip(((p - a) @ ab) / length2, 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (a + t[..., None] * ab), axis=-1))
    return best


def test_draw_matches_segment_by_segment_cv2_lines_on_hand_computed_pixels():
    image = np.full((480, 640, 3), 40, np.uint8)
    out = S.draw_trace(image, [[0, 0], [128, 100], [255, 255]])
    expected = image.copy()
    # 128 -> 321, 100 -> 188 (see test_hand_computed_points); 255 -> 639 / 479
    cv2.line(expected, (0, 0), (321, 188), CYAN, thickness=2, lineType=cv2.LINE_AA)
    cv2.line(expected, (321, 188), (639, 479), CYAN, thickness=2, lineType=cv2.LINE_AA)
    assert np.array_equal(out, expected)
    assert (image == 40).all()  # input untouched


def test_colour_is_cyan_in_rgb_order_in_segment_interiors():
    image = np.zeros((96, 128, 3), np.uint8)
    out = S.draw_trace(image, [[10, 20], [240, 20], [240, 230]])
    px = S.model_to_pixels([[10, 20], [240, 20], [240, 230]], 128, 96)
    d = distance_to_polyline(128, 96, px)
    on_line = d <= 0.5
    assert on_line.sum() > 100
    assert (out[on_line] == CYAN).all()  # R = 0, G = B = 255
    assert (out[..., 0] == 0).all()  # the red channel is never touched


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 96), st.integers(2, 96),
       st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=2, max_size=5))
def test_draw_changes_only_pixels_near_the_segments(width, height, points):
    image = np.zeros((height, width, 3), np.uint8)
    out = S.draw_trace(image, points)
    d = distance_to_polyline(width, height, S.model_to_pixels(points, width, height))
    changed = out.any(axis=-1)
    assert changed.any()
    assert d[changed].max() <= S.TRACE_THICKNESS_PX / 2 + 1.75
    assert (out[d <= 0.5] == CYAN).all()


@pytest.mark.parametrize('points', [[], [[100, 100]]])
def test_fewer_than_two_points_draw_nothing(points):
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = S.draw_trace(image, points)
    assert np.array_equal(out, image) and out is not image


def test_repeated_point_draws_a_dot_like_cv2_line():
    image = np.zeros((64, 64, 3), np.uint8)
    out = S.draw_trace(image, [[128, 128], [128, 128]])
    changed = np.argwhere(out.any(axis=-1))
    assert 0 < len(changed) <= 25
    assert np.abs(changed - [32, 32]).max() <= 2  # rows and columns around 128 * 63 / 255 = 31.6 -> 32
    assert tuple(out[32, 32]) == CYAN


def test_thickness_colour_and_input_checks():
    image = np.zeros((64, 64, 3), np.uint8)
    thick = S.draw_trace(image, [[0, 128], [255, 128]], thickness=5, color=(255, 0, 0))
    thin = S.draw_trace(image, [[0, 128], [255, 128]], thickness=1, color=(255, 0, 0))
    assert thick.any(axis=-1).sum() > thin.any(axis=-1).sum()
    assert (thick[..., 1:] == 0).all()
    for bad_image in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))):
        with pytest.raises(ValueError, match='uint8'):
            S.draw_trace(bad_image, [[0, 0], [1, 1]])
    with pytest.raises(ValueError):
        S.draw_trace(image, [[0, 0], [1, 1]], thickness=0)
    with pytest.raises(ValueError):
        S.draw_trace(image, [[0, 0], [1, 1]], color=(0, 256, 0))
    with pytest.raises(ValueError):
        S.draw_trace(image, [[[0, 0], [1, 1]]])
    readonly = np.zeros((16, 16, 3), np.uint8)
    readonly.setflags(write=False)
    assert S.draw_trace(readonly, [[0, 0], [255, 255]]).any()
