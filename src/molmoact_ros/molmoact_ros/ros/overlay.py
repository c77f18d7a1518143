"""The annotated camera image a person watches: trace, instruction, depth codes and timings drawn on a copy.

RViz cannot draw ``visualization_msgs/ImageMarker`` (notes: ros2-anchors TL;DR 7), so the planner
publishes the source image with the trace drawn on it (view it with RViz's Image display or
rqt_image_view) next to the 3D markers of :mod:`.markers`.

ROS-free (NumPy + OpenCV headless); the node converts the result with :func:`.image.numpy_to_image`.

This is a *display* draw, not the training draw of :func:`molmoact_ros.reasoning.steering.draw_trace`
(which must stay exactly as MolmoAct was trained and is what the model sees when steering): points are
drawn at sub-pixel precision in source pixels, with the start marked and an arrowhead at the end.

Layout (every element scales with the image's shorter side; nothing is drawn where it does not fit):

- the trace: anti-aliased polyline (2 px up to a 959 px short side, thicker above), colour by source
  (:data:`SOURCE_COLORS_RGB`: model cyan, edited orange, external magenta); a filled circle with a dark
  rim at the first point (the current end-effector position); a filled arrowhead at the last point, along
  the last segment of non-zero length. Points with NaN/inf coordinates are skipped; segments are clipped
  to the image, so points outside it never crash the draw;
- the instruction on a darkened band across the top (one line, ASCII only: other characters become '?',
  cut with '...' to fit); edited/external traces are prefixed ``[edited]`` / ``[external]``;
- optional depth codes (100 values in 0..127, MolmoAct's 10x10 grid) as a grey nearest-upscaled thumbnail
  (grey = 2 x code, as :func:`molmoact_ros.reasoning.depth.depth_code_image`) at the top right, below the
  band, with a white frame; skipped when the image is too small to hold it;
- optional stage timings (``{'perception': 812.0, 'planning': 95.3}`` in milliseconds) on a darkened band
  across the bottom.

The text bands may cover at most a third of the image height: on tiny images (below 66 px high
for the timings, 33 px for the instruction) they are left out so the trace stays visible.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ['SOURCE_COLORS_RGB', 'RIM_COLOR_RGB', 'TEXT_COLOR_RGB', 'BAND_DARKEN', 'ascii_safe',
           'trace_thickness', 'annotate']

Rgb = Tuple[int, int, int]
#: Trace colour (RGB uint8) per source; matches :data:`molmoact_ros.ros.markers.SOURCE_COLORS`.
SOURCE_COLORS_RGB: dict = {'model': (0, 255, 255), 'edited': (255, 140, 0), 'external': (255, 0, 255)}
RIM_COLOR_RGB: Rgb = (20, 20, 20)
TEXT_COLOR_RGB: Rgb = (255, 255, 255)
#: Factor the pixels under a text band are multiplied by (0.4 = 60 % black overlay).
BAND_DARKEN = 0.4

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SOURCE_BY_INT = {0: 'model', 1: 'edited', 2: 'external'}
_MAX_TEXT_CHARS = 300
_DEPTH_GRID = 10
_DEPTH_MAX_CODE = 127


def ascii_safe(text: str) -> str:
    """One line of printable ASCII (what cv2's Hershey fonts draw): whitespace runs -> ' ', others -> '?'."""
    text = ' '.join(str(text).split())
    return ''.join(c if 32 <= ord(c) < 127 else '?' for c in text)


def trace_thickness(width: int, height: int) -> int:
    """Trace line thickness in px: 2, growing by 1 for every further 480 px of the shorter side."""
    return max(2, min(int(width), int(height)) // 480 + 1)


def _source(source: Union[str, int]) -> str:
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool) and int(source) in _SOURCE_BY_INT:
        return _SOURCE_BY_INT[int(source)]
    if isinstance(source, str) and source.strip().lower() in SOURCE_COLORS_RGB:
        return source.strip().lower()
    raise ValueError(f"source must be 'model', 'edited', 'external' or 0/1/2, got {source!r}")


def _fixed(p) -> Tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _clip_segment(p0: np.ndarray, p1: np.ndarray, lo: float, hi_x: float, hi_y: float):
    """Liang-Barsky: the part of segment p0-p1 inside [lo, hi_x] x [lo, hi_y], or None."""
    d = p1 - p0
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], p0[0] - lo), (d[0], hi_x - p0[0]), (-d[1], p0[1] - lo), (d[1], hi_y - p0[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return p0 + t0 * d, p0 + t1 * d


def _fit(text: str, width_px: int, scale: float, thick: int) -> str:
    """``text`` cut (with '...') so that it is at most ``width_px`` wide; '' if not even '...' fits."""
    text = text[:_MAX_TEXT_CHARS]
    if cv2.getTextSize(text, _FONT, scale, thick)[0][0] <= width_px:
        return text
    lo, hi = 0, len(text)  # longest prefix n with prefix + '...' fitting: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cv2.getTextSize(text[:mid].rstrip() + '...', _FONT, scale, thick)[0][0] <= width_px:
            lo = mid
        else:
            hi = mid - 1
    out = text[:lo].rstrip() + '...'
    return out if cv2.getTextSize(out, _FONT, scale, thick)[0][0] <= width_px else ''


def _band_height(text_px: int) -> int:
    return text_px + 2 * max(2, text_px // 3)


def _text_band(out: np.ndarray, text: str, top: bool, text_px: int) -> int:
    """Darken a band at the top or bottom and write ``text`` on it; returns the band's height."""
    h, w = out.shape[:2]
    pad = max(2, text_px // 3)
    band = min(h, _band_height(text_px))
    rows = slice(0, band) if top else slice(h - band, h)
    out[rows] = (out[rows].astype(np.float32) * BAND_DARKEN).astype(np.uint8)
    thick = max(1, text_px // 16)
    scale = cv2.getFontScaleFromHeight(_FONT, text_px, thick)
    fitted = _fit(text, w - 2 * pad, scale, thick)
    if fitted:
        baseline_y = (0 if top else h - band) + pad + text_px
        cv2.putText(out, fitted, (pad, baseline_y), _FONT, scale, TEXT_COLOR_RGB, thick, cv2.LINE_AA)
    return band


def _depth_grid(depth_codes) -> np.ndarray:
    codes = np.asarray(depth_codes)
    if codes.size != _DEPTH_GRID * _DEPTH_GRID:
        raise ValueError(f'depth_codes must hold {_DEPTH_GRID * _DEPTH_GRID} codes, got shape {codes.shape}')
    codes = codes.reshape(_DEPTH_GRID, _DEPTH_GRID)
    if not np.issubdtype(codes.dtype, np.number) or not np.all(np.isfinite(codes)) \
            or codes.min() < 0 or codes.max() > _DEPTH_MAX_CODE or np.any(codes != np.round(codes)):
        raise ValueError(f'depth codes must be integers in 0..{_DEPTH_MAX_CODE}')
    return (codes.astype(np.int64) * 2).astype(np.uint8)


def _stage_text(stage_ms: Mapping[str, float]) -> str:
    parts = []
    for name, value in stage_ms.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        parts.append(f'{name} {v:.0f} ms' if math.isfinite(v) else f'{name} ? ms')
    return '  '.join(parts)


def annotate(image_rgb_uint8: np.ndarray, trace_points_px, instruction: str = '', source: Union[str, int] = 'model',
             depth_codes=None, stage_ms: Optional[Mapping[str, float]] = None) -> np.ndarray:
    """A new (H, W, 3) uint8 RGB image: the input with trace, instruction and extras drawn (module docstring).

    ``trace_points_px``: (N, 2) float ``[u, v]`` source-image pixels (``TracePoint.u_px/v_px``: pixel
    centres at integers), first = current end-effector position; N may be 0 or 1 (then only the circle).
    ``source``: 'model' | 'edited' | 'external' or ``TrajectoryTrace.SOURCE_*``.
    ``depth_codes``: None or 100 integers in 0..127. ``stage_ms``: None or {stage name: milliseconds}.
    The input image is never modified. Raises ValueError for a wrong image, point array or depth codes.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}')
    src = _source(source)
    pts = np.asarray([] if trace_points_px is None else trace_points_px, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f'trace_points_px must have shape (N, 2), got {pts.shape}')
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    grey = None if depth_codes is None else _depth_grid(depth_codes)

    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    short = min(h, w)
    color = SOURCE_COLORS_RGB[src]
    t = trace_thickness(w, h)
    margin = 4.0 * t + 8.0  # drawing area beyond the image, so clipped lines still reach the border

    # The trace: polyline, then arrowhead, then the start circle on top.
    lo, hi_x, hi_y = -margin, w - 1 + margin, h - 1 + margin
    for a, b in zip(pts[:-1], pts[1:]):
        seg = _clip_segment(a, b, lo, hi_x, hi_y)
        if seg is not None:
            cv2.line(out, _fixed(seg[0]), _fixed(seg[1]), color, t, cv2.LINE_AA, _SHIFT)
    if len(pts) >= 2:
        tip = pts[-1]
        for prev in pts[-2::-1]:
            d = tip - prev
            length = float(np.hypot(d[0], d[1]))
            if length > 1e-6:
                head = 3.0 * t + 5.0
                if lo - head <= tip[0] <= hi_x + head and lo - head <= tip[1] <= hi_y + head:
                    u = d / length
                    n = np.array([-u[1], u[0]])
                    back = tip - u * head
                    tri = np.array([_fixed(tip), _fixed(back + n * head * 0.55), _fixed(back - n * head * 0.55)],
                                   dtype=np.int32)
                    cv2.fillPoly(out, [tri], color, cv2.LINE_AA, _SHIFT)
                break
    if len(pts) >= 1:
        r = 2.0 * t + 2.0
        c = pts[0]
        if -r <= c[0] <= w - 1 + r and -r <= c[1] <= h - 1 + r:
            cv2.circle(out, _fixed(c), int(round((r + 1) * _ONE)), RIM_COLOR_RGB, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(out, _fixed(c), int(round(r * _ONE)), color, -1, cv2.LINE_AA, _SHIFT)

    # Text bands (drawn after the trace so the text stays readable over it).
    text_px = max(7, min(48, int(round(short * 0.04))))
    label = ascii_safe(instruction)
    if src != 'model':
        label = f'[{src}] {label}'
    timing_px = max(7, int(round(text_px * 0.8)))
    # On tiny images the bands would hide the trace: they may cover at most a third of the height
    # (the timing band goes first, then the instruction band).
    top_band = bottom_band = 0
    if _band_height(text_px) <= h / 3:
        top_band = _text_band(out, label, True, text_px)
        if stage_ms and top_band + _band_height(timing_px) <= h / 3:
            bottom_band = _text_band(out, ascii_safe(_stage_text(stage_ms)), False, timing_px)

    # Depth-code thumbnail, top right below the instruction band.
    if grey is not None:
        cell = max(1, min(16, short // 40))
        size = cell * _DEPTH_GRID
        gap = max(1, t)
        x0, y0 = w - gap - 1 - size, top_band + gap + 1
        if x0 >= 1 and y0 + size + gap + 1 <= h - bottom_band:
            thumb = np.repeat(np.repeat(grey, cell, axis=0), cell, axis=1)
            out[y0:y0 + size, x0:x0 + size] = thumb[:, :, None]
            cv2.rectangle(out, (x0 - 1, y0 - 1), (x0 + size, y0 + size), TEXT_COLOR_RGB, 1)
    return out
