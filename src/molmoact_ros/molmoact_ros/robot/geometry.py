"""Camera geometry for lifting MolmoAct's 2D traces: intrinsics, pixel affines, back-projection, planes.

ROS-free (NumPy only). Units: pixels and metres; angles never appear.

Pixel convention (the one of OpenCV, ROS ``CameraInfo`` and ``TracePoint.u_px/v_px``)
------------------------------------------------------------------------------------
``u`` is the column, ``v`` the row; **pixel centres sit at integer coordinates**, the top-left pixel's
centre is (0, 0), so an image of width W spans u in [-0.5, W - 0.5] edge to edge.

Two different mappings meet here, each fixed by what it describes:

1. **Model space -> model-image pixels** (MolmoAct's own convention, fixed by its training labels):
   a trace value v in 0..255 maps to ``v * (W - 1) / 255``: 0 and 255 land on the centres of the first
   and last pixel ("align corners"). :func:`model_space_to_model_pixels`.

2. **An image resize** (model image <-> source image; intrinsics of a resized image): cv2.resize (any
   interpolation), PIL, ``torch.nn.functional.interpolate(align_corners=False)`` and MolmoAct's own
   image processor all map the image *rectangle* onto the image rectangle: edges [-0.5, W - 0.5] onto
   [-0.5, W' - 0.5]. With pixel centres at integers that is

       u' = (u + 0.5) * s - 0.5,    s = W' / W        (and likewise for v)

   which is what :func:`resize_affine` and :meth:`CameraIntrinsics.scaled` use
   (``fx' = fx * s``, ``cx' = (cx + 0.5) * s - 0.5``). The alternative ``u' = u * s`` is the same
   resize written for a pixel-*corner* convention (centres at u + 0.5); applied to integer-centre
   coordinates it shifts every point by ``0.5 * (s - 1)`` px and sends the image's corner edges
   (-0.5, W - 0.5) to (-0.5 s, (W - 0.5) s) instead of (-0.5, W' - 0.5), so it disagrees with the
   pixels a resize produces (image_proc's resize node scales cx that way: 0.25 px off at s = 1/2).
   Example: after a 2x downscale, model pixel 0 is the average of source pixels 0 and 1, whose centre
   is source u = 0.5, which is what this convention gives (``u * s`` would give 0).

   Consequently, model-space 0 maps to the centre of the first *model* pixel, which in source pixels
   is ``0.5 * S - 0.5`` (S = source/model scale), not source pixel 0: model-space corners land on the
   corner model pixels' centres, inside the source image by half a model pixel less half a source
   pixel, and corner edges map onto corner edges exactly.

3D frames: the camera's optical frame (REP 103 ``*_optical``): x right, y down, z forward.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    'MODEL_SPACE_MAX',
    'CameraIntrinsics',
    'as_affine',
    'identity_affine',
    'resize_affine',
    'crop_affine',
    'center_crop_box',
    'center_crop_affine',
    'apply_affine',
    'invert_affine',
    'compose_affine',
    'affine_to_list',
    'model_space_to_model_pixels',
    'model_pixels_to_model_space',
    'model_trace_to_source_pixels',
    'source_pixels_to_model_space',
    'project',
    'pixel_rays',
    'backproject',
    'sample_depth',
    'as_transform',
    'transform_points',
    'ray_plane_intersection',
]

#: Largest model-space coordinate of a MolmoAct trace point (points are integers in 0..255).
MODEL_SPACE_MAX = 255


# --------------------------------------------------------------------------------------------------
# Intrinsics


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a number, got {value!r}') from None
    if not math.isfinite(v):
        raise ValueError(f'{name} must be finite, got {v}')
    return v


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image: focal lengths and principal point in pixels, size in pixels.

    Distortion is not modelled: use the rectified image's calibration (or a camera whose distortion
    is negligible at the accuracy needed).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ('fx', 'fy', 'cx', 'cy'):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f'focal lengths must be positive, got fx={self.fx}, fy={self.fy}')
        object.__setattr__(self, 'width', _positive_int('width', self.width))
        object.__setattr__(self, 'height', _positive_int('height', self.height))

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int, *, atol: float = 1e-9) -> CameraIntrinsics:
        """From ``CameraInfo.k`` (3x3 row-major: ``[fx, 0, cx, 0, fy, cy, 0, 0, 1]``) and the image size.

        Raises ValueError for an all-zero K (uncalibrated camera), skew, or a bottom row other than
        (0, 0, 1).
        """
        m = np.asarray(k, dtype=np.float64)
        if m.size != 9:
            raise ValueError(f'K must have 9 elements (3x3 row-major), got shape {m.shape}')
        m = m.reshape(3, 3)
        if not np.all(np.isfinite(m)):
            raise ValueError(f'K has non-finite entries: {m.ravel().tolist()}')
        if not np.any(m):
            raise ValueError('K is all zeros: the camera is not calibrated (CameraInfo.k unset)')
        if abs(m[0, 1]) > atol:
            raise ValueError(f'K has skew K[0][1]={m[0, 1]}; skewed cameras are not supported')
        if abs(m[1, 0]) > atol or np.any(np.abs(m[2] - (0.0, 0.0, 1.0)) > atol):
            raise ValueError(f'K is not a camera matrix [fx 0 cx; 0 fy cy; 0 0 1]: {m.ravel().tolist()}')
        return cls(fx=m[0, 0], fy=m[1, 1], cx=m[0, 2], cy=m[1, 2], width=width, height=height)

    @property
    def k(self) -> tuple[float, ...]:
        """Row-major K, as ``CameraInfo.k`` holds it."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    @property
    def matrix(self) -> np.ndarray:
        """K as a 3x3 array."""
        return np.array(self.k, dtype=np.float64).reshape(3, 3)

    def scaled(self, sx: float, sy: float | None = None) -> CameraIntrinsics:
        """Intrinsics of this image resized by ``sx`` (columns) and ``sy`` (rows, default ``sx``).

        Half-pixel convention (see the module docstring): ``fx' = fx * sx``,
        ``cx' = (cx + 0.5) * sx - 0.5``; the size becomes ``round(width * sx)``. Prefer
        :meth:`resized` when the new size is known: it uses the exact ratio.
        """
        sy = sx if sy is None else sy
        sx, sy = _finite('sx', sx), _finite('sy', sy)
        if sx <= 0 or sy <= 0:
            raise ValueError(f'scale factors must be positive, got sx={sx}, sy={sy}')
        w, h = max(1, round(self.width * sx)), max(1, round(self.height * sy))
        return CameraIntrinsics(fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                                cy=(self.cy + 0.5) * sy - 0.5, width=w, height=h)

    def resized(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of this image resized (corner edges to corner edges) to ``width`` x ``height``."""
        width, height = _positive_int('width', width), _positive_int('height', height)
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                                cy=(self.cy + 0.5) * sy - 0.5, width=width, height=height)


# --------------------------------------------------------------------------------------------------
# 2D affine maps between images (PerceptionTokens.model_to_source: 3x3 homogeneous, row-major)


def as_affine(m: Iterable[float] | np.ndarray, *, atol: float = 1e-9) -> np.ndarray:
    """A 3x3 float64 affine from 9 row-major numbers or a 3x3 array; bottom row must be (0, 0, 1)."""
    a = np.asarray(m, dtype=np.float64)
    if a.size != 9:
        raise ValueError(f'an affine transform needs 9 numbers (3x3 row-major), got shape {a.shape}')
    a = a.reshape(3, 3)
    if not np.all(np.isfinite(a)):
        raise ValueError(f'affine transform has non-finite entries: {a.ravel().tolist()}')
    if np.any(np.abs(a[2] - (0.0, 0.0, 1.0)) > atol):
        raise ValueError(f'not an affine transform: bottom row {a[2].tolist()} != [0, 0, 1]')
    return a


def identity_affine() -> np.ndarray:
    """The identity (no preprocessing between source and model image)."""
    return np.eye(3)


def resize_affine(src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """Maps a pixel of a ``src_w`` x ``src_h`` image to the same point of its resize to ``dst_w`` x ``dst_h``.

    Half-pixel convention: ``u' = (u + 0.5) * dst_w / src_w - 0.5`` (image edges onto image edges, as
    cv2.resize and PIL do). For ``model_to_source`` when the model image is a resize of the source:
    ``resize_affine(model_w, model_h, source_w, source_h)``.
    """
    src_w, src_h = _positive_int('src_w', src_w), _positive_int('src_h', src_h)
    dst_w, dst_h = _positive_int('dst_w', dst_w), _positive_int('dst_h', dst_h)
    sx, sy = dst_w / src_w, dst_h / src_h
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def crop_affine(x0: float, y0: float) -> np.ndarray:
    """Maps a pixel of a crop whose top-left pixel is pixel (x0, y0) of the full image to the full image."""
    return np.array([[1.0, 0.0, _finite('x0', x0)], [0.0, 1.0, _finite('y0', y0)], [0.0, 0.0, 1.0]])


def center_crop_box(width: int, height: int, area_fraction: float) -> tuple[int, int, int, int]:
    """``(left, top, crop_w, crop_h)`` of the centred crop holding ``area_fraction`` of a ``width`` x
    ``height`` image, as the released LIBERO evaluator cuts it: sides ``int(side * sqrt(fraction))``,
    offsets ``(side - crop) // 2`` (256 px at 0.9: a 242 px crop from pixel 7)."""
    width, height = _positive_int('width', width), _positive_int('height', height)
    fraction = _finite('area_fraction', area_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'area_fraction must lie in (0, 1], got {fraction!r}')
    rel = math.sqrt(fraction)
    crop_w, crop_h = max(1, int(width * rel)), max(1, int(height * rel))
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def center_crop_affine(width: int, height: int, area_fraction: float) -> np.ndarray:
    """Maps a pixel of the centred crop (:func:`center_crop_box`) resized back to ``width`` x ``height`` to
    the same point of the uncropped image: ``compose_affine(resize_affine(width, height, crop_w, crop_h),
    crop_affine(left, top))``."""
    left, top, crop_w, crop_h = center_crop_box(width, height, area_fraction)
    return compose_affine(resize_affine(width, height, crop_w, crop_h), crop_affine(left, top))


def _as_points(uv: np.ndarray | Sequence, dim: int, name: str) -> tuple[np.ndarray, bool]:
    """(N, dim) float64 from (dim,) or (N, dim); the flag says whether the input was a single point."""
    a = np.asarray(uv, dtype=np.float64)
    if a.ndim == 1 and a.shape[0] == dim:
        return a[None, :], True
    if a.ndim == 2 and a.shape[1] == dim:
        return a, False
    if a.ndim == 1 and a.shape[0] == 0:
        return a.reshape(0, dim), False
    raise ValueError(f'{name} must have shape ({dim},) or (N, {dim}), got {a.shape}')


def apply_affine(m: np.ndarray | Sequence[float], uv: np.ndarray | Sequence) -> np.ndarray:
    """Apply a 3x3 affine to pixels ``uv`` ((2,) or (N, 2)); returns the same shape, float64."""
    a = as_affine(m)
    pts, single = _as_points(uv, 2, 'uv')
    out = pts @ a[:2, :2].T + a[:2, 2]
    return out[0] if single else out


def invert_affine(m: np.ndarray | Sequence[float]) -> np.ndarray:
    """The inverse affine (e.g. source -> model image from ``model_to_source``)."""
    a = as_affine(m)
    lin = a[:2, :2]
    det = float(np.linalg.det(lin))
    if not math.isfinite(det) or abs(det) < 1e-12 * max(1.0, float(np.abs(lin).max()) ** 2):
        raise ValueError(f'affine transform is singular (det={det}): {a.ravel().tolist()}')
    inv_lin = np.linalg.inv(lin)
    out = np.eye(3)
    out[:2, :2] = inv_lin
    out[:2, 2] = -inv_lin @ a[:2, 2]
    return out


def compose_affine(*transforms: np.ndarray | Sequence[float]) -> np.ndarray:
    """One affine applying ``transforms`` in the order given: ``compose_affine(a, b)(p) = b(a(p))``.

    Example: model image = resize of a crop of the source ->
    ``model_to_source = compose_affine(resize_affine(mw, mh, crop_w, crop_h), crop_affine(x0, y0))``.
    """
    out = np.eye(3)
    for t in transforms:
        out = as_affine(t) @ out
    return out


def affine_to_list(m: np.ndarray | Sequence[float]) -> list[float]:
    """9 row-major floats, as ``PerceptionTokens.model_to_source`` holds them."""
    return [float(x) for x in as_affine(m).ravel()]


# --------------------------------------------------------------------------------------------------
# Model space (0..255) <-> pixels


def _model_size(model_w: int, model_h: int) -> tuple[int, int]:
    return _positive_int('model_w', model_w), _positive_int('model_h', model_h)


def model_space_to_model_pixels(points_0_255: np.ndarray | Sequence, model_w: int, model_h: int) -> np.ndarray:
    """MolmoAct model space (x column, y row, 0..255) -> model-image pixels: ``v * (W - 1) / 255``.

    Raises ValueError for non-finite points or points outside [0, 255].
    """
    model_w, model_h = _model_size(model_w, model_h)
    pts, single = _as_points(points_0_255, 2, 'points_0_255')
    if not np.all(np.isfinite(pts)) or np.any(pts < 0) or np.any(pts > MODEL_SPACE_MAX):
        raise ValueError(f'model-space points must lie in [0, {MODEL_SPACE_MAX}], got {pts.tolist()}')
    out = pts * (np.array([model_w - 1, model_h - 1], dtype=np.float64) / MODEL_SPACE_MAX)
    return out[0] if single else out


def model_pixels_to_model_space(uv: np.ndarray | Sequence, model_w: int, model_h: int) -> np.ndarray:
    """Model-image pixels -> model space (float, not rounded or clipped): ``u * 255 / (W - 1)``."""
    model_w, model_h = _model_size(model_w, model_h)
    if model_w < 2 or model_h < 2:
        raise ValueError(f'model image must be at least 2x2 to invert model space, got {model_w}x{model_h}')
    pts, single = _as_points(uv, 2, 'uv')
    out = pts * (MODEL_SPACE_MAX / np.array([model_w - 1, model_h - 1], dtype=np.float64))
    return out[0] if single else out


def model_trace_to_source_pixels(points_0_255: np.ndarray | Sequence, model_w: int, model_h: int,
                                 model_to_source: np.ndarray | Sequence[float]) -> np.ndarray:
    """Trace points in model space -> model-image pixels (``v * (W - 1) / 255``) -> source pixels.

    ``model_to_source``: ``PerceptionTokens.model_to_source`` (9 row-major numbers or 3x3).
    Returns float64 (N, 2) (or (2,) for one point): ``TracePoint.u_px, v_px``.
    """
    return apply_affine(model_to_source, model_space_to_model_pixels(points_0_255, model_w, model_h))


def source_pixels_to_model_space(uv: np.ndarray | Sequence, model_w: int, model_h: int,
                                 model_to_source: np.ndarray | Sequence[float]) -> np.ndarray:
    """Source pixels -> model space (float, not rounded or clipped): the inverse of
    :func:`model_trace_to_source_pixels`, for traces edited in source pixels. Round and check the
    range [0, 255] before writing them into a ``TracePoint``."""
    return model_pixels_to_model_space(apply_affine(invert_affine(model_to_source), uv), model_w, model_h)


# --------------------------------------------------------------------------------------------------
# Projection and back-projection (optical frame: x right, y down, z forward)


def project(points: np.ndarray | Sequence, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Optical-frame points (m) -> pixels ``u = fx x / z + cx``; NaN where z <= 0 or not finite."""
    pts, single = _as_points(points, 3, 'points')
    z = pts[:, 2]
    ok = np.isfinite(pts).all(axis=1) & (z > 0)
    zs = np.where(ok, z, 1.0)
    out = np.stack([intrinsics.fx * pts[:, 0] / zs + intrinsics.cx,
                    intrinsics.fy * pts[:, 1] / zs + intrinsics.cy], axis=1)
    out[~ok] = np.nan
    return out[0] if single else out


def pixel_rays(uv: np.ndarray | Sequence, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Ray directions through pixels in the optical frame, scaled so that z = 1."""
    pts, single = _as_points(uv, 2, 'uv')
    out = np.stack([(pts[:, 0] - intrinsics.cx) / intrinsics.fx,
                    (pts[:, 1] - intrinsics.cy) / intrinsics.fy,
                    np.ones(len(pts))], axis=1)
    return out[0] if single else out


def backproject(uv: np.ndarray | Sequence, depth_m: float | np.ndarray | Sequence,
                intrinsics: CameraIntrinsics) -> np.ndarray:
    """Pixels + depth (z along the optical axis, m) -> optical-frame points (N, 3) (or (3,)).

    ``depth_m``: a scalar or one value per pixel. Rows are NaN where the depth is not finite or
    <= 0, or the pixel is not finite.
    """
    pts, single = _as_points(uv, 2, 'uv')
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim > 1 or (depth.ndim == 1 and depth.shape[0] != len(pts)):
        raise ValueError(f'depth_m must be a scalar or have shape ({len(pts)},), got {depth.shape}')
    depth = np.broadcast_to(depth, (len(pts),))
    out = pixel_rays(pts, intrinsics) * depth[:, None]
    bad = ~(np.isfinite(depth) & (depth > 0)) | ~np.isfinite(pts).all(axis=1)
    out[bad] = np.nan
    return out[0] if single else out


def sample_depth(depth_image_m: np.ndarray, uv: np.ndarray | Sequence, window: int = 2) -> np.ndarray:
    """Robust depth (m) at pixels: the median of the valid values in a (2*window+1)^2 neighbourhood.

    The neighbourhood is centred on the pixel nearest to ``uv`` and clipped to the image. Valid means
    finite and > 0 (so raw 0 = "no return" is ignored too). NaN where the nearest pixel lies outside
    the image, ``uv`` is not finite, or no value in the window is valid. Returns (N,) (or a 0-d array
    for one point), float64.
    """
    depth = np.asarray(depth_image_m)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f'depth_image_m must be a non-empty (H, W) array, got shape {depth.shape}')
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise ValueError(f'window must be a non-negative integer (half-size), got {window!r}')
    window = int(window)
    pts, single = _as_points(uv, 2, 'uv')
    h, w = depth.shape
    finite = np.isfinite(pts).all(axis=1)
    centre = np.floor(np.where(finite[:, None], pts, 0.0) + 0.5).astype(np.int64)
    inside = finite & (centre[:, 0] >= 0) & (centre[:, 0] < w) & (centre[:, 1] >= 0) & (centre[:, 1] < h)
    offs = np.arange(-window, window + 1)
    rows = centre[:, 1, None, None] + offs[None, :, None]      # (N, k, 1)
    cols = centre[:, 0, None, None] + offs[None, None, :]      # (N, 1, k)
    in_img = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & inside[:, None, None]
    vals = depth[np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)].astype(np.float64)
    vals = np.where(in_img & np.isfinite(vals) & (vals > 0), vals, np.nan).reshape(len(pts), offs.size ** 2)
    if vals.shape[0] == 0:
        return np.empty(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN windows -> NaN, as documented
        out = np.nanmedian(vals, axis=1)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------------
# Rigid transforms and the table-plane lift


def as_transform(t: np.ndarray | Sequence, *, atol: float = 1e-6) -> np.ndarray:
    """A 4x4 float64 rigid transform; ValueError unless the rotation is orthonormal (det +1) and the
    bottom row is (0, 0, 0, 1)."""
    a = np.asarray(t, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f'a rigid transform must be 4x4, got shape {a.shape}')
    if not np.all(np.isfinite(a)):
        raise ValueError('rigid transform has non-finite entries')
    if np.any(np.abs(a[3] - (0.0, 0.0, 0.0, 1.0)) > atol):
        raise ValueError(f'not a rigid transform: bottom row {a[3].tolist()} != [0, 0, 0, 1]')
    r = a[:3, :3]
    if np.any(np.abs(r @ r.T - np.eye(3)) > atol) or np.linalg.det(r) < 0:
        raise ValueError('not a rigid transform: the rotation block is not orthonormal with det +1')
    return a


def transform_points(t: np.ndarray | Sequence, points: np.ndarray | Sequence) -> np.ndarray:
    """Apply a 4x4 rigid transform to points (3,) or (N, 3)."""
    a = as_transform(t)
    pts, single = _as_points(points, 3, 'points')
    out = pts @ a[:3, :3].T + a[:3, 3]
    return out[0] if single else out


def ray_plane_intersection(uv: np.ndarray | Sequence, intrinsics: CameraIntrinsics,
                           camera_to_base: np.ndarray | Sequence, plane_point: Sequence[float],
                           plane_normal: Sequence[float], *, parallel_eps: float = 1e-9) -> np.ndarray:
    """Where the camera rays through ``uv`` meet a plane (e.g. the table): points (N, 3) in the base frame.

    ``camera_to_base``: the 4x4 pose of the camera's optical frame in the base frame (maps optical-frame
    points to base-frame points; tf2 ``lookup_transform(base, camera_optical, t)``). ``plane_point``
    and ``plane_normal`` in the base frame (m; the normal need not be unit length). Rows are NaN where
    the ray is parallel to the plane, the hit is behind the camera (or at its centre), or ``uv`` is not
    finite.
    """
    t = as_transform(camera_to_base)
    p0 = np.asarray(plane_point, dtype=np.float64).reshape(-1)
    n = np.asarray(plane_normal, dtype=np.float64).reshape(-1)
    if p0.shape != (3,) or not np.all(np.isfinite(p0)):
        raise ValueError(f'plane_point must be 3 finite numbers, got {plane_point!r}')
    norm = float(np.linalg.norm(n)) if n.shape == (3,) else 0.0
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f'plane_normal must be 3 finite numbers, not all zero, got {plane_normal!r}')
    n = n / norm
    pts, single = _as_points(uv, 2, 'uv')
    d = pixel_rays(pts, intrinsics) @ t[:3, :3].T                # ray directions in the base frame
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    origin = t[:3, 3]
    denom = d @ n
    ok = np.isfinite(denom) & (np.abs(denom) > parallel_eps)
    s = np.where(ok, float((p0 - origin) @ n) / np.where(ok, denom, 1.0), np.nan)
    ok &= s > 0
    out = origin + d * np.where(ok, s, np.nan)[:, None]
    out[~ok] = np.nan
    return out[0] if single else out
