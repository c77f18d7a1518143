"""The trace planner's decisions, ROS-free: how a trace is lifted to 3D (aligned depth, else the table plane,
else markers along the camera rays), and edits (service, topic, clicked points): which request they edit,
their points in model space, their revision, with bounded error texts.

The node hands in plain values: pixel coordinates, a depth image in metres, a callable that looks the
camera -> table transform up (raising LookupError), and :class:`PerceptionRef` for each request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..reasoning.engine import check_trace_points
from ..robot.geometry import (CameraIntrinsics, backproject, ray_plane_intersection, sample_depth,
                              source_pixels_to_model_space)
from ..ros.transforms import parse_pose_text
from .quoting import quote
from .recent import MAX_REMEMBERED_REQUESTS, Recent


@dataclass(frozen=True)
class TracePlanningConfig:
    """One field per node parameter (the node's ParamSpec defaults)."""

    marker_fallback_depth_m: float = 1.0
    table_plane_frame: str = ''
    table_plane_height_m: float = 0.0
    #: "x y z qx qy qz qw" of the camera in the table frame ('' : tf2); parsed into ``camera_pose``.
    camera_pose_in_table_frame: str = ''
    clicked_trace_points: int = 5
    clicked_pause_s: float = 2.0
    #: Seconds RViz keeps the trace markers without a new trace (0: until replaced or deleted).
    marker_lifetime_s: float = 0.0
    publish_trace_image: bool = True

    @property
    def camera_pose(self) -> Optional[np.ndarray]:
        """The fixed 4x4 camera -> table pose, or None (ValueError when the text is malformed)."""
        return parse_pose_text(self.camera_pose_in_table_frame)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> 'TracePlanningConfig':
        return cls(**{name: type(getattr(cls, name))(params[name]) for name in cls.__dataclass_fields__})


class LiftMethod(enum.Enum):
    NONE = 'none'
    ALIGNED_DEPTH = 'aligned_depth'
    TABLE_PLANE = 'table_plane'


@dataclass(frozen=True)
class Lift:
    """The trace's 3D points (None: not lifted) and where its markers go (None: no markers).
    ``in_table_frame``: points and markers are in ``table_plane_frame``, else in the camera's frame."""

    method: LiftMethod = LiftMethod.NONE
    points: Optional[np.ndarray] = None
    marker_points: Optional[np.ndarray] = None
    in_table_frame: bool = False
    error: str = ''


def plan_lift(uv: np.ndarray, intrinsics: Optional[CameraIntrinsics], depth_m: Optional[np.ndarray],
              camera_to_table: Callable[[], np.ndarray], config: TracePlanningConfig) -> Lift:
    """Aligned depth when the observation has it (markers there even where some depth is missing), else the
    table plane (when ``table_plane_frame`` is set and the transform is known), else markers at
    ``marker_fallback_depth_m`` along the rays. Nothing without a calibration. ``error``: why a table lift
    was skipped."""
    if intrinsics is None:
        return Lift()
    if depth_m is not None:
        points = backproject(uv, sample_depth(depth_m, uv), intrinsics)
        if np.isfinite(points).all():
            return Lift(LiftMethod.ALIGNED_DEPTH, points, points)
        return Lift(marker_points=points)
    error = ''
    if config.table_plane_frame:
        try:
            pose = config.camera_pose
            lifted = ray_plane_intersection(uv, intrinsics, camera_to_table() if pose is None else pose,
                                            (0.0, 0.0, config.table_plane_height_m), (0.0, 0.0, 1.0))
        except LookupError as exc:
            lifted, error = None, f'table-plane lift skipped: {exc}'
        if lifted is not None and np.isfinite(lifted).all():
            return Lift(LiftMethod.TABLE_PLANE, lifted, lifted, in_table_frame=True)
    if config.marker_fallback_depth_m > 0:
        return Lift(marker_points=backproject(uv, np.full(len(uv), config.marker_fallback_depth_m), intrinsics),
                    error=error)
    return Lift(error=error)


@dataclass(frozen=True)
class PerceptionRef:
    """What edits need of a request's perception message (kept with it)."""

    request_id: str
    image_size: Tuple[int, int]
    model_to_source: Sequence[float]
    msg: Any = None


@dataclass(frozen=True)
class Edit:
    """An accepted edit: the perception it edits, its model-space points and its revision."""

    perception: PerceptionRef
    points: list
    revision: int


class TracePlanning:
    """The planner's memory of the newest requests and the revisions of their traces."""

    def __init__(self, config: TracePlanningConfig = TracePlanningConfig(), limit: int = MAX_REMEMBERED_REQUESTS):
        self.config = config
        self.limit = limit
        self.perceptions = Recent(limit)
        self.revisions = Recent(limit)
        self.latest = ''

    def on_perception(self, ref: PerceptionRef) -> None:
        self.perceptions.put(ref.request_id, ref)
        self.latest = ref.request_id

    def planned(self, request_id: str) -> None:
        """The model's trace of ``request_id`` is revision 0."""
        self.revisions.put(request_id, 0)

    def lookup(self, request_id: str) -> PerceptionRef:
        """The request (the latest when ``request_id`` is empty); ValueError with a bounded text otherwise."""
        ref = self.perceptions.get(request_id or self.latest)
        if ref is None:
            raise ValueError(f'unknown request {quote(request_id)} (the planner keeps the last {self.limit} '
                             f'requests)')
        return ref

    def to_model_space(self, request_id: str, points: Sequence[Tuple[float, float]], source_pixels: bool) -> list:
        """Edit points in model space (0..255, clipped after about a model pixel of slack); ValueError."""
        pts = [(float(x), float(y)) for x, y in points]
        if not all(np.isfinite(v) for p in pts for v in p):
            raise ValueError('trace coordinates must be finite numbers')
        if source_pixels:
            ref = self.lookup(request_id)
            model = source_pixels_to_model_space(np.asarray(pts), ref.image_size[0], ref.image_size[1],
                                                 ref.model_to_source)
            pts = np.atleast_2d(model).tolist()
        # Model-space 0 and 255 are the centres of the first and last model pixels: the source image's edges
        # lie up to about one model pixel beyond them, so allow that much before clipping.
        if any(v < -2.0 or v > 257.0 for p in pts for v in p):
            raise ValueError(f'trace points outside the image: {quote(pts)}')
        return [(int(round(min(max(x, 0), 255))), int(round(min(max(y, 0), 255)))) for x, y in pts]

    def edit(self, request_id: str, points_model) -> Edit:
        """Validate an edit (ValueError with the reason) and give it the request's next revision."""
        ref = self.lookup(request_id)
        points = check_trace_points(points_model)
        revision = self.revisions.get(ref.request_id, 0) + 1
        self.revisions.put(ref.request_id, revision)
        return Edit(ref, points, revision)

    def camera_from(self, source: str, lookup: Callable[[], np.ndarray]) -> np.ndarray:
        """4x4 mapping points of frame ``source`` into the camera frame: the fixed pose's inverse for the
        table frame, else ``lookup()`` (tf2; LookupError)."""
        pose = self.config.camera_pose
        if pose is not None and self.config.table_plane_frame and source == self.config.table_plane_frame:
            return np.linalg.inv(pose)
        return lookup()

    def clear(self) -> None:
        self.perceptions.clear()
        self.revisions.clear()
        self.latest = ''
