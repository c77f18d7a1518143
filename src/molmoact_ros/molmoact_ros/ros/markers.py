"""RViz markers for a lifted (3D) end-effector trace: pure functions, no node code.

RViz cannot draw ``visualization_msgs/ImageMarker`` (notes: ros2-anchors TL;DR 7), so the trace is shown
two ways: an annotated camera image (:mod:`.overlay`, ROS-free) and, when the trace
could be lifted to 3D (``TrajectoryTrace.points_3d``), the markers built here, in ``points_3d_frame_id``
(the camera's ``*_optical`` frame or the robot base frame).

One trace = one :class:`~visualization_msgs.msg.MarkerArray` with **stable namespace and ids**, all
``ADD``: publishing the next trace replaces the previous one in RViz (same ns/id = same marker).

===  ==================  =========================================================================
id   type                what
===  ==================  =========================================================================
0    LINE_STRIP          the path through the finite points (needs >= 2 of them)
1    SPHERE_LIST         every finite point; the first (current end-effector position) in white
2    ARROW               a short arrow ending at the last point, along the last non-zero segment
3    TEXT_VIEW_FACING    the instruction (one line, <= 60 characters), above the first point
===  ==================  =========================================================================

Points with a NaN or infinite coordinate (no depth there, ray parallel to the table, ...) are skipped.
When too few finite points remain for a marker, that marker's id is sent with action ``DELETE`` in the
same array, so nothing of the previous trace lingers: with 1 finite point only the sphere and the label
are drawn (line and arrow deleted); with 0 finite points all four ids are deleted. With 2+ finite
points whose last segments all have zero length, the arrow is deleted.

Colours by ``source``: model = cyan, edited = orange, external = magenta (:data:`SOURCE_COLORS`).
On deactivate, publish :func:`delete_all`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from .sync import split_seconds

__all__ = [
    'DEFAULT_NS',
    'ID_LINE',
    'ID_POINTS',
    'ID_ARROW',
    'ID_LABEL',
    'MARKER_IDS',
    'LABEL_MAX_CHARS',
    'SOURCE_COLORS',
    'FIRST_POINT_COLOR',
    'source_name',
    'trace_markers',
    'delete_all',
]

DEFAULT_NS = 'molmoact_trace'
ID_LINE, ID_POINTS, ID_ARROW, ID_LABEL = 0, 1, 2, 3
MARKER_IDS = (ID_LINE, ID_POINTS, ID_ARROW, ID_LABEL)
LABEL_MAX_CHARS = 60

Rgba = Tuple[float, float, float, float]
#: Trace colour (RGBA, 0..1) per source; matches :data:`molmoact_ros.ros.overlay.SOURCE_COLORS_RGB`.
SOURCE_COLORS: dict = {
    'model': (0.0, 1.0, 1.0, 1.0),     # cyan, the colour MolmoAct's training draw uses
    'edited': (1.0, 0.55, 0.0, 1.0),   # orange
    'external': (1.0, 0.0, 1.0, 1.0),  # magenta
}
#: Colour of the first point (the current end-effector position).
FIRST_POINT_COLOR: Rgba = (1.0, 1.0, 1.0, 1.0)

# TrajectoryTrace.SOURCE_* values (kept literal so this module needs no molmoact_msgs import).
_SOURCE_BY_INT = {0: 'model', 1: 'edited', 2: 'external'}


def source_name(source: Union[str, int]) -> str:
    """'model' | 'edited' | 'external' from that name or from ``TrajectoryTrace.SOURCE_*`` (0, 1, 2)."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        if int(source) in _SOURCE_BY_INT:
            return _SOURCE_BY_INT[int(source)]
    elif isinstance(source, str) and source.strip().lower() in SOURCE_COLORS:
        return source.strip().lower()
    raise ValueError(f"source must be 'model', 'edited', 'external' or 0/1/2, got {source!r}")


def _color(rgba: Sequence[float]) -> ColorRGBA:
    vals = [float(c) for c in rgba]
    if len(vals) != 4 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in vals):
        raise ValueError(f'a colour must be 4 numbers (r, g, b, a) in 0..1, got {tuple(rgba)!r}')
    return ColorRGBA(r=vals[0], g=vals[1], b=vals[2], a=vals[3])


def _point(p: Sequence[float]) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _duration(seconds: float) -> Duration:
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f'lifetime_s must be finite and >= 0 (0 = forever), got {seconds!r}')
    sec, nanosec = split_seconds(s)
    return Duration(sec=sec, nanosec=nanosec)


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f'{name} must be a finite positive number of metres, got {value!r}')
    return v


def _label(instruction: str, source: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    text = ' '.join(str(instruction).split())  # one line: newlines and runs of blanks -> one space
    if source != 'model':
        text = f'[{source}] {text}'
    if len(text) > max_chars:
        text = text[:max_chars - 3].rstrip() + '...'
    return text


def _is_optical(frame_id: str) -> bool:
    return 'optical' in frame_id.rsplit('/', 1)[-1]


def trace_markers(points_3d, frame_id: str, stamp: Optional[Time] = None, instruction: str = '', *,
                  ns: str = DEFAULT_NS, lifetime_s: float = 0.0, color: Optional[Sequence[float]] = None,
                  line_width_m: float = 0.005, point_scale_m: float = 0.015, text_height_m: float = 0.03,
                  source: Union[str, int] = 'model', text_offset_m: Optional[Sequence[float]] = None
                  ) -> MarkerArray:
    """The markers of one lifted trace (see the module docstring for ids, NaN handling and replacement).

    ``points_3d``: (N, 3) metres in ``frame_id``, first = current end-effector position (N may be 0).
    ``stamp``: the observation's stamp (``TrajectoryTrace.header.stamp``; None = zero, "latest tf").
    ``lifetime_s``: seconds RViz keeps the markers without a new message; 0 = forever.
    ``color``: RGBA in 0..1 for line, points, arrow and label; None = by ``source``
    (:data:`SOURCE_COLORS`). The first point is always :data:`FIRST_POINT_COLOR`.
    ``source``: 'model' | 'edited' | 'external' or ``TrajectoryTrace.SOURCE_*``; non-model labels are
    prefixed ``[edited]`` / ``[external]``.
    ``text_offset_m``: label position relative to the first point; None = "up" by 2 point scales plus
    the text height: -y in an optical frame (frame name containing 'optical', y down, REP 103), +z
    otherwise. ``frame_locked`` is False on every marker.
    """
    if not isinstance(frame_id, str) or not frame_id:
        raise ValueError(f'frame_id must be a non-empty string, got {frame_id!r}')
    src = source_name(source)
    pts = np.asarray(points_3d, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f'points_3d must have shape (N, 3), got {pts.shape}')
    line_width = _positive('line_width_m', line_width_m)
    point_scale = _positive('point_scale_m', point_scale_m)
    text_height = _positive('text_height_m', text_height_m)
    lifetime = _duration(lifetime_s)
    rgba = _color(SOURCE_COLORS[src] if color is None else color)
    first_rgba = _color(FIRST_POINT_COLOR)
    stamp = Time() if stamp is None else stamp

    finite = pts[np.all(np.isfinite(pts), axis=1)]
    n = len(finite)

    def base(marker_id: int, marker_type: int) -> Marker:
        m = Marker()
        m.header.frame_id = frame_id
        m.header.stamp = stamp
        m.ns = ns
        m.id = marker_id
        m.type = marker_type
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.lifetime = lifetime
        m.frame_locked = False
        m.color = rgba
        return m

    def deleted(marker_id: int, marker_type: int) -> Marker:
        m = base(marker_id, marker_type)
        m.action = Marker.DELETE
        return m

    markers = []
    # 0: the path.
    if n >= 2:
        line = base(ID_LINE, Marker.LINE_STRIP)
        line.scale.x = line_width
        line.points = [_point(p) for p in finite]
        markers.append(line)
    else:
        markers.append(deleted(ID_LINE, Marker.LINE_STRIP))
    # 1: the points, the first in its own colour.
    if n >= 1:
        spheres = base(ID_POINTS, Marker.SPHERE_LIST)
        spheres.scale = Vector3(x=point_scale, y=point_scale, z=point_scale)
        spheres.points = [_point(p) for p in finite]
        spheres.colors = [first_rgba] + [rgba] * (n - 1)
        markers.append(spheres)
    else:
        markers.append(deleted(ID_POINTS, Marker.SPHERE_LIST))
    # 2: direction at the end: a short arrow along the last segment of non-zero length.
    arrow_made = False
    if n >= 2:
        end = finite[-1]
        for prev in finite[-2::-1]:
            seg = end - prev
            length = float(np.linalg.norm(seg))
            if length > 1e-9:
                arrow_len = min(length, 3.0 * point_scale)
                arrow = base(ID_ARROW, Marker.ARROW)
                # ARROW from two points: scale.x shaft diameter, scale.y head diameter, scale.z head length.
                arrow.scale = Vector3(x=line_width, y=max(point_scale, 2.0 * line_width),
                                      z=min(arrow_len, 1.5 * point_scale))
                arrow.points = [_point(end - seg / length * arrow_len), _point(end)]
                markers.append(arrow)
                arrow_made = True
                break
    if not arrow_made:
        markers.append(deleted(ID_ARROW, Marker.ARROW))
    # 3: the instruction above the first point.
    if n >= 1:
        label = base(ID_LABEL, Marker.TEXT_VIEW_FACING)
        if text_offset_m is None:
            up = 2.0 * point_scale + text_height
            offset = (0.0, -up, 0.0) if _is_optical(frame_id) else (0.0, 0.0, up)
        else:
            offset = tuple(float(v) for v in text_offset_m)
            if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
                raise ValueError(f'text_offset_m must be 3 finite numbers, got {text_offset_m!r}')
        label.pose.position = _point(finite[0] + np.asarray(offset))
        label.scale.z = text_height  # TEXT_VIEW_FACING: only z (the height of a capital letter) is used
        label.text = _label(instruction, src)
        markers.append(label)
    else:
        markers.append(deleted(ID_LABEL, Marker.TEXT_VIEW_FACING))
    return MarkerArray(markers=markers)


def delete_all(ns: Optional[str] = None, frame_id: str = '') -> MarkerArray:
    """One ``DELETEALL`` marker: clears this display's markers (publish it on deactivate).

    ``ns``: None or '' clears every marker of the display; a name clears only that namespace (rviz2's
    ``MarkerCommon::processMessage``: DELETEALL with a non-empty ns calls ``deleteMarkersInNamespace``;
    older consumers may ignore ns and clear everything).
    """
    m = Marker()
    m.header.frame_id = frame_id
    m.ns = '' if ns is None else ns
    m.id = 0
    m.action = Marker.DELETEALL
    m.pose.orientation.w = 1.0
    return MarkerArray(markers=[m])
