"""Transforms between frames: tf2 where installed, fixed calibrations given as parameters otherwise.

tf2_ros (and tf2_msgs) are not installable from PyPI, so on a machine without a ROS 2 install a node
cannot listen to /tf. :class:`TransformLookup` uses a tf2 buffer when ``tf2_ros`` imports and always
accepts fixed transforms (a camera bolted to the table, calibrated once), which take precedence.

Conventions: ``lookup(target, source)`` returns the 4x4 matrix that maps points expressed in ``source``
to ``target`` (tf2's ``lookup_transform(target, source, t)``), i.e. the pose of ``source`` in ``target``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from transforms3d.quaternions import mat2quat, quat2mat

from ..robot.geometry import as_transform


def pose_to_matrix(xyz: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """Translation (m) + unit quaternion in ROS order (x, y, z, w) -> 4x4 rigid transform."""
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
    t = np.asarray(xyz, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or t.shape != (3,) or not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise ValueError('a pose needs 3 finite translation values and 4 finite quaternion values')
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > 1e-3:
        raise ValueError(f'quaternion (x, y, z, w) = {q.tolist()} is not unit length (norm {norm:.4f})')
    m = np.eye(4)
    m[:3, :3] = quat2mat(np.array([q[3], q[0], q[1], q[2]]) / norm)
    m[:3, 3] = t
    return m


def matrix_to_pose(m: np.ndarray) -> Tuple[Tuple[float, float, float], Tuple[float, float, float, float]]:
    """4x4 rigid transform -> (xyz, quaternion x, y, z, w) with w >= 0."""
    a = as_transform(m)
    w, x, y, z = mat2quat(a[:3, :3])
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    return (float(a[0, 3]), float(a[1, 3]), float(a[2, 3])), (float(x), float(y), float(z), float(w))


def parse_pose_text(text: str) -> Optional[np.ndarray]:
    """"x y z qx qy qz qw" (spaces or commas) -> 4x4; '' -> None; ValueError with the reason otherwise."""
    text = text.replace(',', ' ').strip()
    if not text:
        return None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise ValueError(f'a pose is 7 numbers "x y z qx qy qz qw", got {text!r}') from None
    if len(values) != 7:
        raise ValueError(f'a pose is 7 numbers "x y z qx qy qz qw", got {len(values)}')
    return pose_to_matrix(values[:3], values[3:])


def transform_msg_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    t, r = transform.translation, transform.rotation
    return pose_to_matrix((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def pose_msg_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    p, r = pose.position, pose.orientation
    return pose_to_matrix((p.x, p.y, p.z), (r.x, r.y, r.z, r.w))


def tf2_available() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


class TransformLookup:
    """Fixed transforms first, then tf2 (when installed and ``use_tf2``)."""

    def __init__(self, node=None, *, use_tf2: bool = True):
        self._fixed: Dict[Tuple[str, str], np.ndarray] = {}
        self._buffer = None
        self._listener = None
        if node is not None and use_tf2 and tf2_available():
            import tf2_ros
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node)

    @property
    def uses_tf2(self) -> bool:
        return self._buffer is not None

    def set_fixed(self, target: str, source: str, matrix: np.ndarray) -> None:
        """Declare that ``matrix`` maps ``source`` points to ``target`` (the pose of source in target)."""
        if not target or not source:
            raise ValueError('a fixed transform needs both frame names')
        self._fixed[(target, source)] = as_transform(matrix)

    def lookup(self, target: str, source: str, stamp=None) -> np.ndarray:
        """4x4 mapping ``source`` points into ``target``; LookupError with the reason when unknown.

        ``stamp`` (builtin_interfaces/Time) asks tf2 for that time; None asks for the latest."""
        if not target or not source:
            raise LookupError(f'frame names must not be empty (target {target!r}, source {source!r})')
        if target == source:
            return np.eye(4)
        if (target, source) in self._fixed:
            return self._fixed[(target, source)].copy()
        if (source, target) in self._fixed:
            return np.linalg.inv(self._fixed[(source, target)])
        if self._buffer is None:
            raise LookupError(f'no transform from {source!r} to {target!r}: tf2_ros is not installed and no fixed '
                              'transform was given for this pair')
        from rclpy.time import Time
        try:
            when = Time() if stamp is None else Time.from_msg(stamp)
            msg = self._buffer.lookup_transform(target, source, when)
        except Exception as exc:  # noqa: BLE001 - tf2 raises several exception types
            raise LookupError(f'no transform from {source!r} to {target!r}: {type(exc).__name__}: {exc}') from None
        return transform_msg_to_matrix(msg.transform)
