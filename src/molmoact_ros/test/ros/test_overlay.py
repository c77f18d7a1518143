"""Annotated trace image (ROS-free): shape, input untouched, trace colour, start circle, text bands, edge cases."""

import numpy as np
import pytest

from molmoact_ros.ros.overlay import (BAND_DARKEN, SOURCE_COLORS_RGB, annotate, ascii_safe, trace_thickness)

GREY = 128
PTS = np.array([[100.0, 300.0], [200.0, 250.0], [300.0, 250.0], [400.0, 200.0]])


def _img(h=480, w=640, value=GREY):
    return np.full((h, w, 3), value, np.uint8)


def _near(out, p, color, radius=1):
    """Some pixel within ``radius`` of point p has exactly ``color``."""
    x, y = int(round(p[0])), int(round(p[1]))
    patch = out[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].reshape(-1, 3)
    return bool(np.any(np.all(patch == np.array(color, np.uint8), axis=1)))


def test_shape_dtype_and_input_untouched():
    img = _img()
    img[::7, ::5] = 17
    before = img.copy()
    out = annotate(img, PTS, 'pick up the cup', depth_codes=np.arange(100) % 128, stage_ms={'planning': 95.0})
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    assert not np.shares_memory(out, img)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize('source', ['model', 'edited', 'external', 0, 1])
def test_trace_pixels_have_the_source_colour(source):
    name = {0: 'model', 1: 'edited'}.get(source, source)
    out = annotate(_img(), PTS, 'x', source=source)
    color = SOURCE_COLORS_RGB[name]
    mids = (PTS[:-1] + PTS[1:]) / 2
    for m in mids:
        assert _near(out, m, color), m
    # away from the trace the image is unchanged
    assert np.all(out[400:, 500:] == GREY)


def test_model_and_edited_differ():
    assert SOURCE_COLORS_RGB['model'] == (0, 255, 255)
    a, b = annotate(_img(), PTS, 'x'), annotate(_img(), PTS, 'x', source='edited')
    assert not _near(b, PTS[1] + (PTS[2] - PTS[1]) / 2, SOURCE_COLORS_RGB['model'])
    assert not np.array_equal(a, b)


def test_first_point_circle_and_arrowhead():
    out = annotate(_img(), PTS, 'x')
    color = np.array(SOURCE_COLORS_RGB['model'], np.uint8)
    t = trace_thickness(640, 480)
    x, y = PTS[0].astype(int)
    r = int(2 * t + 2) - 1
    # the filled disc: all pixels within r-1 of the first point are the trace colour, in every direction
    for dx, dy in ((r - 1, 0), (-(r - 1), 0), (0, r - 1), (0, -(r - 1))):
        assert np.all(out[y + dy, x + dx] == color)
    # dark rim just outside the disc on the side away from the line
    assert out[y + r + 2, x].max() < GREY
    # arrowhead: filled triangle just behind the tip, wider than the line
    tip, prev = PTS[-1], PTS[-2]
    u = (tip - prev) / np.linalg.norm(tip - prev)
    n = np.array([-u[1], u[0]])
    behind = tip - u * (3 * t + 5) * 0.8
    assert _near(out, behind + n * 3, color, 0) and _near(out, behind - n * 3, color, 0)
    # plain line (no arrowhead) is not that wide at a segment middle
    mid = (PTS[1] + PTS[2]) / 2
    assert not _near(out, mid + np.array([0, 4]), color, 0)


def test_text_band_at_top_darkens_and_has_text():
    img = _img(value=200)
    out = annotate(img, PTS, 'pick up the red block')
    assert out[:30].max() >= 240  # white (anti-aliased) text on the band
    # the rows above the text: darkened by BAND_DARKEN everywhere
    assert np.all(out[:3] == int(200 * BAND_DARKEN))
    assert np.mean(out[:30] == int(200 * BAND_DARKEN)) > 0.5
    assert np.all(out[240:260, 600:] == 200)  # far from band and trace: untouched


def test_timing_band_at_bottom_only_when_given():
    a = annotate(_img(value=200), PTS, 'x')
    b = annotate(_img(value=200), PTS, 'x', stage_ms={'perception': 812.4, 'planning': float('nan'), 'bad': 'x'})
    assert np.all(a[-3:] == 200)
    assert np.mean(b[-3:] == 80) > 0.9 and b[-25:].max() >= 240


def test_ascii_safe():
    assert ascii_safe('grab the café\nmug — now') == 'grab the caf? mug ? now'
    assert ascii_safe('') == ''
    out = annotate(_img(), PTS, '把杯子拿起来 ' * 50)  # long non-ASCII: no crash, still one band
    assert out.shape == (480, 640, 3)


def test_depth_thumbnail_top_right():
    codes = np.full(100, 127)
    codes[:10] = 0  # first row black
    out = annotate(_img(), np.zeros((0, 2)), 'x', depth_codes=codes.reshape(10, 10))
    right = out[:, -140:]
    assert np.any(np.all(right == 254, axis=2)) and np.any(np.all(right == 0, axis=2))
    with pytest.raises(ValueError):
        annotate(_img(), PTS, 'x', depth_codes=np.arange(99))
    with pytest.raises(ValueError):
        annotate(_img(), PTS, 'x', depth_codes=np.full(100, 128))


def test_one_point_and_empty_traces():
    color = SOURCE_COLORS_RGB['model']
    out = annotate(_img(), [[320.0, 240.0]], 'x')
    assert _near(out, (320, 240), color, 0)
    out = annotate(_img(), [], 'x')
    assert not np.any(np.all(out == np.array(color, np.uint8), axis=2))
    out = annotate(_img(), None, 'x')
    assert out.shape == (480, 640, 3)


def test_nan_and_outside_points():
    color = SOURCE_COLORS_RGB['model']
    pts = [[100, 300], [np.nan, 5], [-5000, 240], [1e12, -1e12], [320, 400]]
    out = annotate(_img(), pts, 'x')
    assert out.shape == (480, 640, 3)
    # segment from (100, 300) towards (-5000, 240) leaves the image at the left edge, clipped but drawn
    assert _near(out, (50, 300 - 60 * 50 / 5100), color)
    out = annotate(_img(), [[-100.0, -100.0], [-50.0, -80.0]], 'x')  # completely outside
    assert not np.any(np.all(out[40:] == np.array(color, np.uint8), axis=2))


@pytest.mark.parametrize('h,w', [(1, 1), (8, 8), (32, 32), (32, 400), (2160, 3840)])
def test_tiny_and_big_images(h, w):
    pts = np.array([[0, 0], [w / 2, h / 2], [w - 1, h - 1]], float)
    out = annotate(_img(h, w), pts, 'move left ' * 20, source='edited', depth_codes=np.zeros(100),
                   stage_ms={'action': 1234.5})
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_bad_inputs():
    for img in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)):
        with pytest.raises(ValueError):
            annotate(img, PTS, 'x')
    with pytest.raises(ValueError):
        annotate(_img(), np.zeros((3, 3)), 'x')
    with pytest.raises(ValueError):
        annotate(_img(), PTS, 'x', source='bogus')


def test_non_contiguous_input():
    img = np.ascontiguousarray(_img(480, 1280))[:, ::2]
    out = annotate(img, PTS, 'x')
    assert out.shape == (480, 640, 3) and out.flags.c_contiguous


def test_overlay_imports_no_ros():
    import subprocess
    import sys
    code = ('import sys, molmoact_ros.ros.overlay; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("rclpy", "visualization_msgs", "sensor_msgs", "torch")]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=20)


def test_tiny_image_keeps_the_trace_visible():
    color = np.array(SOURCE_COLORS_RGB['model'], np.uint8)
    out = annotate(_img(24, 24), [[3.0, 20.0], [20.0, 4.0]], 'long instruction', stage_ms={'a': 1.0})
    assert np.all(out[:3, :6] == GREY) and np.all(out[-3:, -6:] == GREY)  # no band at top or bottom
    assert np.all(out[12, 11] == color) or np.all(out[12, 12] == color)
