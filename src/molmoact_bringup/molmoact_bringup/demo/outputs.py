"""The demo's files and checks, ROS-free: the animated GIF and final PNG, URDF joint limits, and the facts
of ``summary.json`` (per-stage latency, joint range check, how far the arm moved).

Joint samples are ``{joint name: position}`` dicts (rad for revolute joints, m for prismatic ones), one per
``sensor_msgs/JointState`` or per commanded trajectory point.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ['JointLimit', 'joint_limits_from_urdf', 'range_check', 'max_displacement', 'latency_stats',
           'write_gif', 'write_png']


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float


def joint_limits_from_urdf(urdf_xml: str) -> Dict[str, JointLimit]:
    """Position limits of the URDF's revolute and prismatic joints (continuous, fixed and others have none)."""
    root = ET.fromstring(urdf_xml)
    out: Dict[str, JointLimit] = {}
    for joint in root.iter('joint'):
        if joint.get('type') not in ('revolute', 'prismatic'):
            continue
        limit = joint.find('limit')
        if limit is None or limit.get('lower') is None or limit.get('upper') is None:
            continue
        out[joint.get('name')] = JointLimit(float(limit.get('lower')), float(limit.get('upper')))
    return out


def range_check(samples: Iterable[Mapping[str, float]], limits: Mapping[str, JointLimit],
                tolerance: float = 1e-3) -> dict:
    """Whether every sampled position of a limited joint lies within its limits (+- ``tolerance``; the
    physics lets a joint pass its limit by a hair). Joints without a limit are ignored; a non-finite
    position counts as a violation. Returns ``{'ok', 'samples', 'violations': [...], 'worst_margin'}``
    where a margin is the distance to the nearer limit (negative: outside)."""
    count = 0
    violations: List[dict] = []
    worst: Optional[float] = None
    for sample in samples:
        count += 1
        for name, value in sample.items():
            lim = limits.get(name)
            if lim is None:
                continue
            value = float(value)
            margin = min(value - lim.lower, lim.upper - value) if math.isfinite(value) else -math.inf
            worst = margin if worst is None else min(worst, margin)
            if margin < -tolerance and len(violations) < 20:
                violations.append({'joint': name, 'position': value, 'lower': lim.lower, 'upper': lim.upper})
    return {'ok': not violations, 'samples': count, 'violations': violations,
            'worst_margin': None if worst is None else (worst if math.isfinite(worst) else float('-inf'))}


def max_displacement(samples: Sequence[Mapping[str, float]], joints: Sequence[str]) -> dict:
    """Largest |q(t) - q(first sample)| over the samples, per joint and overall (``max_abs``)."""
    per_joint: Dict[str, float] = {}
    if samples:
        first = samples[0]
        for name in joints:
            vals = [float(s[name]) for s in samples if name in s]
            if name in first and vals:
                per_joint[name] = float(max(abs(v - float(first[name])) for v in vals))
    return {'per_joint': per_joint, 'max_abs': max(per_joint.values(), default=0.0)}


def latency_stats(values_s: Sequence[float]) -> dict:
    """count, mean, median, max (s) of a latency list; None values for an empty list."""
    arr = np.asarray([float(v) for v in values_s], dtype=np.float64)
    if arr.size == 0:
        return {'count': 0, 'mean_s': None, 'median_s': None, 'max_s': None}
    return {'count': int(arr.size), 'mean_s': round(float(arr.mean()), 4),
            'median_s': round(float(np.median(arr)), 4), 'max_s': round(float(arr.max()), 4)}


def write_gif(frames: Sequence[np.ndarray], path: Path, fps: float = 5.0) -> int:
    """An animated, looping GIF of RGB uint8 frames (all one size); returns the number of frames written.
    ValueError for no frames or mixed sizes."""
    from PIL import Image
    if not frames:
        raise ValueError('no frames to write')
    shape = np.asarray(frames[0]).shape
    images = []
    for frame in frames:
        arr = np.asarray(frame)
        if arr.shape != shape or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f'frames must be RGB uint8 of one size, got {arr.shape} {arr.dtype} after {shape}')
        images.append(Image.fromarray(arr, 'RGB'))
    duration_ms = max(20, int(round(1000.0 / fps)))
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                   optimize=False)
    return len(images)


def write_png(frame: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(np.asarray(frame, dtype=np.uint8), 'RGB').save(path)
