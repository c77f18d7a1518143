"""Trajectory steering, the drawing part: trace points <-> pixels and the training-time trace draw.

MolmoAct's trajectory-conditioned mode (prompt "(c)": "Notice that the trajectory of the end effector is
annotated on the first image ...") was trained on images with the trace drawn on them. This module
reproduces that draw so a user trace can steer the actions. Facts from AllenAI's released code
(github.com/allenai/molmoact at 622ad08, ``olmo/data/image_preprocessor.py``, ``load_image``, called from
``olmo/models/molmo/model_preprocessor.py`` on the first image only, before any resizing):

- trace points are ``[x, y]`` in 0..255 model units, x the column and y the row;
- scale: ``pts = float32(points) * float32([(W - 1) / 255, (H - 1) / 255])``, then ``np.rint`` (round
  half to even) to int, then clip x to 0..W-1 and y to 0..H-1, in that order;
- a trace with fewer than 2 points (or of a wrong shape) is skipped: **nothing is drawn**;
- one ``cv2.line`` per consecutive pair, colour (0, 255, 255) on the RGB array (cyan), thickness 2,
  ``cv2.LINE_AA``; consecutive duplicate points are **not** skipped (``cv2.line`` of a zero-length
  segment draws a dot).

The released SimplerEnv policy maps points the same way for its visualisation (``scale_pt``:
``int(round(x / 255 * (W - 1)))``). The steering demo drew user traces with thickness 3; the training
draw, the default here, uses 2.

ROS-free; needs numpy and OpenCV (headless).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

#: Largest trace coordinate in model units (the model writes integers in [0, 256)).
TRACE_MODEL_MAX = 255
#: The training draw's colour, in the order of the RGB array it is drawn on: cyan.
TRACE_COLOR_RGB = (0, 255, 255)
#: The training draw's line thickness in pixels.
TRACE_THICKNESS_PX = 2
#: Fewer points than this draw nothing (as the training draw).
MIN_POINTS_TO_DRAW = 2


def _check_size(width: int, height: int) -> None:
    for name, value in (('width', width), ('height', height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _as_points(points: Any, what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 2)
    if array.shape[-1] != 2:
        raise ValueError(f'{what} must have shape (..., 2) as [x, y], got shape {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{what} must be finite, got {array.tolist()}')
    return array


def model_to_pixels(points_0_255: Any, width: int, height: int) -> np.ndarray:
    """Trace points in 0..255 model units -> integer pixel ``[column, row]``, shape (..., 2), int64.

    Exactly the training draw: ``rint(float32(v) * float32((W - 1) / 255))`` for x (columns), the same
    with H for y (rows), then clipped into the image. So 0 -> 0 and 255 -> W - 1 (H - 1).
    """
    _check_size(width, height)
    points = _as_points(points_0_255, 'trace points')
    scale = np.array([(width - 1) / 255.0, (height - 1) / 255.0], dtype=np.float32)
    pixels = np.rint(points.astype(np.float32) * scale).astype(np.int64)
    pixels[..., 0] = np.clip(pixels[..., 0], 0, width - 1)
    pixels[..., 1] = np.clip(pixels[..., 1], 0, height - 1)
    return pixels


def pixels_to_model(points_px: Any, width: int, height: int) -> np.ndarray:
    """Pixel ``[column, row]`` -> trace points in model units: ``rint(px * 255 / (W - 1))`` clipped to
    0..255, shape (..., 2), int64 (a 1-pixel-wide or -high image maps to 0 on that axis).

    Inverse of :func:`model_to_pixels`: ``pixels_to_model(model_to_pixels(v))`` is ``v`` for images at
    least 256 pixels on each side; ``model_to_pixels(pixels_to_model(px))`` is ``px`` for images at most
    256 pixels on each side.
    """
    _check_size(width, height)
    points = _as_points(points_px, 'pixel points')
    scale = np.array([255.0 / (size - 1) if size > 1 else 0.0 for size in (width, height)])
    return np.clip(np.rint(points * scale), 0, TRACE_MODEL_MAX).astype(np.int64)


def draw_trace(image_rgb_uint8: np.ndarray, points_0_255: Any, thickness: int = TRACE_THICKNESS_PX,
               color: tuple[int, int, int] = TRACE_COLOR_RGB) -> np.ndarray:
    """Draw a trace as MolmoAct's training did; returns a new (H, W, 3) uint8 RGB image.

    ``points_0_255`` is an (N, 2) list of ``[x, y]`` in model units (as the model writes them). Points
    are mapped with :func:`model_to_pixels` and joined segment by segment with ``cv2.line`` (anti-aliased,
    ``thickness`` px, ``color`` in the image's channel order). With fewer than 2 points nothing is drawn
    (an unchanged copy is returned), as in training. The input image is not modified.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}')
    if isinstance(thickness, bool) or not isinstance(thickness, (int, np.integer)) or thickness < 1:
        raise ValueError(f'thickness must be a positive integer, got {thickness!r}')
    color = tuple(int(c) for c in color)
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
        raise ValueError(f'color must be 3 integers in 0..255, got {color!r}')
    points = _as_points(points_0_255, 'trace points')
    if points.ndim != 2:
        raise ValueError(f'trace points must have shape (N, 2), got shape {points.shape}')
    out = np.ascontiguousarray(image).copy()
    if len(points) < MIN_POINTS_TO_DRAW:
        return out
    height, width = out.shape[:2]
    pixels = model_to_pixels(points, width, height)
    for start, end in zip(pixels[:-1], pixels[1:]):
        cv2.line(out, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), color,
                 thickness=int(thickness), lineType=cv2.LINE_AA)
    return out


class ClickedTrace:
    """Collects points clicked one at a time (RViz's Publish Point tool) into an edited trace.

    Points are source-image pixels ``(u, v)``. A trace is complete when ``max_points`` points were
    clicked, or ``pause_s`` seconds after the last click (with at least one point): ``add`` and ``poll``
    return the completed points and start a new trace. Clicks that do not land on the image are refused
    (ValueError) and do not disturb the points collected so far. Time is passed in (seconds, monotonic).
    """

    def __init__(self, max_points: int = 5, pause_s: float = 2.0):
        if not 1 <= int(max_points) <= 5:
            raise ValueError(f'a trace has 1..5 points, got max_points={max_points}')
        if not pause_s > 0:
            raise ValueError(f'pause_s must be > 0, got {pause_s}')
        self.max_points, self.pause_s = int(max_points), float(pause_s)
        self.points: list[tuple[float, float]] = []
        self.request_id = ''
        self._last_s = 0.0

    def add(self, uv: tuple[float, float], width: int, height: int, now_s: float,
            request_id: str = '') -> list[tuple[float, float]] | None:
        """Add a click on a ``width`` x ``height`` source image; the completed trace when this click ends one.

        Clicks that belong to another request than the points collected so far start a new trace."""
        u, v = float(uv[0]), float(uv[1])
        if not (np.isfinite(u) and np.isfinite(v)):
            raise ValueError('the clicked point does not project onto the image (behind the camera or not finite)')
        if not (-0.5 <= u <= width - 0.5 and -0.5 <= v <= height - 0.5):
            raise ValueError(f'the clicked point projects to pixel ({u:.1f}, {v:.1f}), outside the '
                             f'{width}x{height} image')
        if request_id != self.request_id:
            self.points, self.request_id = [], request_id
        self.points.append((u, v))
        self._last_s = float(now_s)
        if len(self.points) >= self.max_points:
            return self._take()
        return None

    def poll(self, now_s: float) -> list[tuple[float, float]] | None:
        """The collected points once ``pause_s`` passed since the last click, else None."""
        if self.points and float(now_s) - self._last_s >= self.pause_s:
            return self._take()
        return None

    def _take(self) -> list[tuple[float, float]]:
        points, self.points = self.points, []
        return points

    def clear(self) -> None:
        self.points, self.request_id = [], ''
