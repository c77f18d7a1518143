"""MolmoAct training labels from an arm's synchronised steps (ROS-free, NumPy).

* **Model image**: the camera frame resized the way the perception stage does it (longer side at most
  ``max_image_side_px``, area downscale), with the model-pixel -> source-pixel affine (:func:`model_image`).
* **Trace**: the end effector's future path in the first image, in MolmoAct's 0..255 model space. MolmoAct's
  data pipeline (``preprocess/action_reasoning_data.py``) takes, for each frame, the gripper's points from
  that frame to the end of the episode, drops the frames where no point was found, and keeps them all when
  there are at most ``line_length`` = 5, else 5 picked at ``linspace(0, m - 1, 5)`` truncated to integers;
  the first point is the current one. Here the point of a frame is the TCP (from the recorded pose or the
  joint states' forward kinematics) projected through the camera model; a point behind the camera or
  outside the image counts as not found (:func:`project_points`, :func:`subsample_line`).
* **Actions**: the end effector's delta between consecutive steps in the robot profile's delta frame and
  rotation convention: the inverse of :func:`molmoact_ros.robot.execution.build_timeline`
  (:func:`ee_deltas`), then the gripper's target (:func:`gripper_raw_value`). Step i's action moves the arm
  from step i's pose to step i+1's; a chunk of H steps from step i holds actions i..i+H-1, and near the
  end of the episode the last action is repeated (MolmoAct's ``chunk_actions``) (:func:`action_chunks`).
  Or, where the recording holds the chunks that were commanded (``ActionChunk``: a teleoperator's or a
  scripted expert's), each commanded chunk labels the step of the observation it was computed from
  (:func:`commanded_chunks`): what the arm was told to do, not what it did while it lagged behind.
* **Answer**: the full answer text in the released grammar, checked by parsing it back (:func:`answer_text`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from transforms3d.axangles import mat2axangle
from transforms3d.euler import mat2euler

from ..reasoning import grammar
from ..reasoning.action_space import RotationConvention, bins_to_normalized, normalized_to_bins
from ..robot.execution import ActionScale, DeltaFrame, GripperMapping, GripperMode
from ..robot.geometry import (CameraIntrinsics, MODEL_SPACE_MAX, project, resize_affine,
                              source_pixels_to_model_space)

__all__ = ['LINE_LENGTH', 'AnswerMismatch', 'model_image_size', 'model_image', 'project_points',
           'subsample_line', 'trace_for_step', 'traces', 'ee_deltas', 'gripper_raw_value', 'action_chunks',
           'commanded_chunks', 'own_path_from', 'answer_text', 'check_answer']

#: Trace points per frame in MolmoAct's data (``--line-length 5``).
LINE_LENGTH = grammar.MAX_TRACE_POINTS


class AnswerMismatch(ValueError):
    """The formatted answer does not parse back to the values it was made from."""


# --- image -----------------------------------------------------------------------------------------

def model_image_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) of the model image: unchanged when the longer side fits, else scaled down to it."""
    if not max_side or max(width, height) <= max_side:
        return int(width), int(height)
    scale = max_side / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


def model_image(rgb: np.ndarray, max_side: int, method: str = 'area') -> tuple[np.ndarray, np.ndarray]:
    """(model image, 3x3 model-pixel -> source-pixel affine), as the perception node prepares a frame."""
    from ..ros.image import downscale
    h, w = rgb.shape[:2]
    mw, mh = model_image_size(w, h, max_side)
    if (mw, mh) == (w, h):
        return rgb, np.eye(3)
    return downscale(rgb, (mw, mh), method), resize_affine(mw, mh, w, h)


# --- trace -----------------------------------------------------------------------------------------

def project_points(points_base: np.ndarray, camera_pose: np.ndarray, intrinsics: CameraIntrinsics,
                   model_w: int, model_h: int, model_to_source: np.ndarray) -> np.ndarray:
    """Base-frame points (N, 3) -> float model-space points (N, 2) (x column, y row, 0..255 scale).

    ``camera_pose``: base -> camera optical frame (4x4) at the image's time. Rows are NaN where the point
    is behind the camera.
    """
    pts = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
    inv = np.linalg.inv(np.asarray(camera_pose, dtype=np.float64))
    cam = pts @ inv[:3, :3].T + inv[:3, 3]
    uv = project(cam, intrinsics)
    out = np.full((len(pts), 2), np.nan)
    ok = np.all(np.isfinite(uv), axis=1)
    if ok.any():
        out[ok] = source_pixels_to_model_space(uv[ok], model_w, model_h, model_to_source)
    return out


def _round_visible(model_pts: np.ndarray) -> list[Optional[tuple[int, int]]]:
    """Round model-space points to integers; None where not finite or outside 0..255 (not in the image)."""
    out: list[Optional[tuple[int, int]]] = []
    for x, y in np.asarray(model_pts, dtype=np.float64).reshape(-1, 2):
        if not (math.isfinite(x) and math.isfinite(y)):
            out.append(None)
            continue
        xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        out.append((xi, yi) if 0 <= xi <= MODEL_SPACE_MAX and 0 <= yi <= MODEL_SPACE_MAX else None)
    return out


def subsample_line(points: Sequence[Optional[tuple[int, int]]], k: int = LINE_LENGTH) -> list[tuple[int, int]]:
    """MolmoAct's line subsampling: the found points (None dropped) when there are at most ``k``, else the
    ``k`` at indices ``int(linspace(0, m - 1, k))``; [] when none was found."""
    valid = [p for p in points if p is not None]
    m = len(valid)
    if m <= k:
        return list(valid)
    idx = np.linspace(0, m - 1, num=k).astype(int)
    return [valid[j] for j in idx]


def trace_for_step(model_pts_rounded: Sequence[Optional[tuple[int, int]]], step: int,
                   k: int = LINE_LENGTH) -> list[tuple[int, int]]:
    """The trace of ``step``: :func:`subsample_line` of the points from ``step`` to the episode's end.

    The trace starts at the current point only when it is visible; with the current point hidden the
    release starts at the next visible one (its None filter), and so does this.
    """
    return subsample_line(model_pts_rounded[step:], k)


def traces(points_base: np.ndarray, camera_poses: np.ndarray, intrinsics: CameraIntrinsics,
           model_w: int, model_h: int, model_to_source: np.ndarray, k: int = LINE_LENGTH) -> list:
    """The trace of every step: TCP points (N, 3) of steps i..N-1 projected with step i's camera pose
    (``camera_poses`` (N, 4, 4); a trace is drawn in the current image), rounded, subsampled."""
    pts = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
    cams = np.asarray(camera_poses, dtype=np.float64)
    fixed = bool(np.allclose(cams, cams[0], atol=1e-9))
    if fixed:
        rounded = _round_visible(project_points(pts, cams[0], intrinsics, model_w, model_h, model_to_source))
        return [trace_for_step(rounded, i, k) for i in range(len(pts))]
    out = []
    for i in range(len(pts)):
        rounded = _round_visible(project_points(pts[i:], cams[i], intrinsics, model_w, model_h, model_to_source))
        out.append(subsample_line(rounded, k))
    return out


# --- actions ---------------------------------------------------------------------------------------

def _rotation_to_vector(R: np.ndarray, convention: RotationConvention) -> np.ndarray:
    if convention is RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW:
        return np.array(mat2euler(R, 'sxyz'))
    if convention is RotationConvention.ROTATION_VECTOR:
        axis, angle = mat2axangle(R, unit_thresh=1e-5)
        if angle > math.pi:
            angle, axis = 2 * math.pi - angle, -axis
        return np.asarray(axis) * angle
    raise ValueError(f'rotation convention {convention.value!r} cannot be written; set the robot profile\'s '
                     'rotation_convention')


def ee_deltas(poses: np.ndarray, delta_frame: DeltaFrame | str, rotation_convention: RotationConvention | str,
              action_scale: Optional[ActionScale] = None) -> np.ndarray:
    """(N, 4, 4) end-effector poses (base frame) -> (N-1, 6) deltas [dx, dy, dz, r0, r1, r2] that
    :func:`~molmoact_ros.robot.execution.build_timeline` integrates back into poses 1..N-1 from pose 0.

    ``delta_frame`` ``base``: ``dp = p1 - p0``, ``dR = R1 R0^T``; ``tool``: ``dp = R0^T (p1 - p0)``,
    ``dR = R0^T R1``. Rotations per ``rotation_convention``; values divided by ``action_scale``'s units.
    """
    T = np.asarray(poses, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) < 2:
        raise ValueError(f'expected (N >= 2, 4, 4) poses, got {T.shape}')
    if not np.all(np.isfinite(T)):
        raise ValueError('poses hold non-finite values')
    frame = DeltaFrame(delta_frame)
    conv = RotationConvention(rotation_convention)
    out = np.empty((len(T) - 1, 6))
    for i in range(len(T) - 1):
        R0, R1 = T[i, :3, :3], T[i + 1, :3, :3]
        dp = T[i + 1, :3, 3] - T[i, :3, 3]
        if frame is DeltaFrame.BASE:
            dR = R1 @ R0.T
        else:
            dp = R0.T @ dp
            dR = R0.T @ R1
        out[i, :3] = dp
        out[i, 3:] = _rotation_to_vector(dR, conv)
    if action_scale is not None and not action_scale.is_identity:
        out[:, :3] /= action_scale.translation_m_per_unit
        out[:, 3:] /= action_scale.rotation_rad_per_unit
    return out


def gripper_raw_value(command: float, mapping: GripperMapping) -> float:
    """The model's raw gripper value (in [-1, 1]) whose decoded bin maps back to ``command`` through the
    profile's :class:`GripperMapping` (binarize: 1.0 open / 0.0 closed, or -1.0 closed when the threshold
    needs it; ``invert`` swaps them; linear: the inverse of the linear map). Raises ValueError when no raw
    value round-trips."""
    command = float(command)
    if not math.isfinite(command):
        raise ValueError(f'gripper command {command!r} is not finite')
    lo, hi = mapping.closed_command, mapping.open_command
    frac = 0.0 if hi == lo else (command - lo) / (hi - lo)
    if mapping.mode is GripperMode.LINEAR:
        x = min(max(frac, 0.0), 1.0)
        if mapping.invert:
            x = 1.0 - x
        return float(np.clip(mapping.raw_min + x * (mapping.raw_max - mapping.raw_min), -1.0, 1.0))
    is_open = frac > 0.5
    want = hi if is_open else lo
    options = (1.0, 0.0, -1.0) if is_open != mapping.invert else (0.0, -1.0, 1.0)
    for raw in options:
        centre = float(bins_to_normalized(normalized_to_bins(raw)))
        if mapping(centre) == want:
            return raw
    raise ValueError(f'no raw gripper value in [-1, 1] maps to {want} with {mapping}')


def action_chunks(actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) per-step actions -> ((M, H, D) chunks, (M,) number of padded steps per chunk): chunk i holds
    actions i..i+H-1, the last action repeated past the end (MolmoAct's ``chunk_actions``)."""
    a = np.asarray(actions)
    m = len(a)
    if m == 0:
        raise ValueError('no actions')
    idx = np.arange(m)[:, None] + np.arange(horizon)[None, :]
    padded = np.maximum(idx - (m - 1), 0).max(axis=1)
    return a[np.minimum(idx, m - 1)], padded


def commanded_chunks(step_stamps: np.ndarray, chunk_stamps: np.ndarray, chunks: Sequence[np.ndarray],
                     horizon: int, tolerance_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Commanded chunks -> per-step labels: ((N, H, D) chunks, NaN where none; (N,) padded steps; (N,) bool).

    A chunk labels the step whose time is nearest its stamp (its observation's time), when within
    ``tolerance_s``; a step claimed by several keeps the nearest (the later on a tie). A chunk longer than
    ``horizon`` is cut to its first ``horizon`` steps; a shorter one is padded by repeating its last step
    (as :func:`action_chunks` pads at an episode's end), and the padding is counted.
    """
    t = np.asarray(step_stamps, dtype=np.float64)
    if len(chunks) != len(chunk_stamps):
        raise ValueError(f'{len(chunk_stamps)} stamps for {len(chunks)} chunks')
    if horizon < 1:
        raise ValueError(f'horizon must be >= 1, got {horizon}')
    dims = {np.asarray(c).shape[1] for c in chunks if np.asarray(c).ndim == 2}
    dim = dims.pop() if len(dims) == 1 else (7 if not dims else None)
    if dim is None or any(np.asarray(c).ndim != 2 or len(c) == 0 for c in chunks):
        raise ValueError('commanded chunks must be non-empty (steps, dims) arrays of one width')
    out = np.full((len(t), horizon, dim), np.nan)
    padding = np.zeros(len(t), dtype=np.int64)
    best = np.full(len(t), np.inf)
    for stamp, chunk in zip(np.asarray(chunk_stamps, dtype=np.float64), chunks):
        if len(t) == 0:
            break
        i = int(np.argmin(np.abs(t - stamp)))
        gap = abs(float(t[i]) - float(stamp))
        if gap > tolerance_s or gap > best[i]:
            continue
        c = np.asarray(chunk, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError(f'the chunk at {stamp:.3f} s holds non-finite values')
        idx = np.minimum(np.arange(horizon), len(c) - 1)
        out[i], padding[i], best[i] = c[idx], max(horizon - len(c), 0), gap
    return out, padding, np.isfinite(best)


def own_path_from(step_stamps: np.ndarray, label_stamps: np.ndarray, labels: Sequence[np.ndarray],
                  executed_stamps: np.ndarray, executed: Sequence[np.ndarray], tolerance_s: float,
                  atol: float = 1e-9) -> np.ndarray:
    """(N,) bool: whether the path the arm took from each step to the episode's end is the labeller's own.

    With labels from another topic than the chunks that drove the arm (a DAgger run, demonstrations with
    detours), a step's trace (the end effector's path from it to the end) shows the labeller's plan only when
    every chunk executed from then on is the label of its observation (same stamp within ``tolerance_s``, same
    values within ``atol``). After the last executed chunk that is not (a "foreign" one), the steps from the
    next executed chunk's stamp (less ``tolerance_s``) on are True; the arm still runs the foreign chunk
    before that. No foreign chunk: all True; nothing executed after the last foreign one: all False.
    """
    t = np.asarray(step_stamps, dtype=np.float64)
    ls = np.asarray(label_stamps, dtype=np.float64)
    es = np.asarray(executed_stamps, dtype=np.float64)
    order = np.argsort(es, kind='stable')
    foreign = np.zeros(len(es), dtype=bool)
    for k in order:
        same = False
        if len(ls):
            j = int(np.argmin(np.abs(ls - es[k])))
            a, b = np.asarray(labels[j], dtype=np.float64), np.asarray(executed[k], dtype=np.float64)
            same = abs(ls[j] - es[k]) <= tolerance_s and a.shape == b.shape and np.allclose(a, b, rtol=0.0,
                                                                                             atol=atol)
        foreign[k] = not same
    if not foreign.any():
        return np.ones(len(t), dtype=bool)
    sorted_foreign = foreign[order]
    last = int(np.flatnonzero(sorted_foreign)[-1])
    if last == len(order) - 1:
        return np.zeros(len(t), dtype=bool)
    return t >= es[order[last + 1]] - tolerance_s


# --- answer ----------------------------------------------------------------------------------------

def answer_text(template: grammar.AnswerTemplate, depth_codes: Sequence[int], trace: Sequence[Sequence[int]],
                bins: np.ndarray) -> str:
    """The answer in ``template``'s grammar, checked by parsing it back (:func:`check_answer`)."""
    bins = np.asarray(bins, dtype=np.int64)
    text = template.format([list(map(int, row)) for row in bins], depth_codes=[int(c) for c in depth_codes],
                           trace_points=[[int(x), int(y)] for x, y in trace], nested=True)
    check_answer(text, template, depth_codes, trace, bins)
    return text


def check_answer(text: str, template: grammar.AnswerTemplate, depth_codes: Sequence[int],
                 trace: Sequence[Sequence[int]], bins: np.ndarray) -> grammar.ParsedAnswer:
    """Parse ``text`` with the project's parser and compare with the values; :class:`AnswerMismatch` if not."""
    bins = np.asarray(bins, dtype=np.int64)
    parts = tuple(p for p, present in (('depth', bool(template.depth_sentence)),
                                       ('trace', bool(template.trace_sentences)), ('actions', True)) if present)
    parsed = grammar.parse_answer(text, bins.shape[1], horizon=bins.shape[0], parts=parts)
    if parsed.errors:
        raise AnswerMismatch(f'answer does not parse: {"; ".join(map(str, parsed.errors))}')
    if 'depth' in parts and tuple(parsed.depth.codes) != tuple(int(c) for c in depth_codes):
        raise AnswerMismatch('depth codes parse back differently')
    if 'trace' in parts:
        want = tuple((int(x), int(y)) for x, y in trace)
        got = [t.points for t in parsed.traces]
        if len(got) != len(template.trace_sentences) or any(g != want for g in got):
            raise AnswerMismatch(f'trace parses back as {got}, expected {want}')
    if np.asarray(parsed.actions.bins).tolist() != bins.tolist():
        raise AnswerMismatch('action bins parse back differently')
    return parsed
