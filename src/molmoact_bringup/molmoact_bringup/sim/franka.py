"""Franka Emika Panda facts the simulated arm shares with the robot description (ROS-free, NumPy only).

Names follow Franka's ``franka_description`` (and the suite's ``urdf/panda.urdf``): the arm's base frame
is ``panda_link0``, the flange ``panda_link8`` is 0.107 m along link 7's z axis, the hand
``panda_hand`` is the flange turned by -45 deg about z, and the tool centre point ``panda_hand_tcp``
is 0.1034 m along the hand's z axis (between the fingertips). Finger joints are prismatic, 0 (closed)
to 0.04 m (open) each; ``panda_finger_joint2`` mirrors joint 1.

Rigid transforms are 4x4 homogeneous float64 arrays; :class:`Pose` is the frozen form handed to callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

__all__ = [
    'BASE_FRAME',
    'HAND_FRAME',
    'TCP_FRAME',
    'ARM_JOINT_NAMES',
    'FINGER_JOINT_NAMES',
    'JOINT_NAMES',
    'FLANGE_OFFSET_M',
    'HAND_YAW_RAD',
    'TCP_OFFSET_M',
    'FINGER_MAX_M',
    'READY_POSITIONS_RAD',
    'Pose',
    'translation',
    'rotation_z',
    'link7_to_hand',
    'hand_to_tcp',
    'rotation_to_quaternion_xyzw',
    'OPTICAL_FROM_MUJOCO_CAMERA',
]

BASE_FRAME = 'panda_link0'
HAND_FRAME = 'panda_hand'
TCP_FRAME = 'panda_hand_tcp'
ARM_JOINT_NAMES: Tuple[str, ...] = tuple(f'panda_joint{i}' for i in range(1, 8))
FINGER_JOINT_NAMES: Tuple[str, ...] = ('panda_finger_joint1', 'panda_finger_joint2')
JOINT_NAMES: Tuple[str, ...] = ARM_JOINT_NAMES + FINGER_JOINT_NAMES

FLANGE_OFFSET_M = 0.107      # link 7 -> flange (panda_link8), along z
HAND_YAW_RAD = -math.pi / 4  # flange -> hand, about z
TCP_OFFSET_M = 0.1034        # hand -> TCP, along z
FINGER_MAX_M = 0.04          # travel of each finger (the gripper opens to 0.08 m)

#: A pose over the table with the gripper pointing down (the hand ~0.19 m above the base, 0.44 m in
#: front of it; the TCP ~0.2 m above the table top of the simulated scene).
READY_POSITIONS_RAD: Tuple[float, ...] = (0.0, 0.196, 0.0, -2.618, 0.0, 2.942, 0.785)

#: MuJoCo cameras look along their -z with y up; the ROS optical frame (REP 103 ``*_optical_frame``)
#: looks along +z with x right and y down: the same x, y and z negated.
OPTICAL_FROM_MUJOCO_CAMERA = np.diag([1.0, -1.0, -1.0])


def translation(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def rotation_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    t = np.eye(4)
    t[:2, :2] = ((c, -s), (s, c))
    return t


def link7_to_hand() -> np.ndarray:
    """``panda_link7`` -> ``panda_hand`` (through the flange)."""
    return translation(0.0, 0.0, FLANGE_OFFSET_M) @ rotation_z(HAND_YAW_RAD)


def hand_to_tcp() -> np.ndarray:
    """``panda_hand`` -> ``panda_hand_tcp``."""
    return translation(0.0, 0.0, TCP_OFFSET_M)


def rotation_to_quaternion_xyzw(r: np.ndarray) -> Tuple[float, float, float, float]:
    """A rotation matrix as a unit quaternion (x, y, z, w) with w >= 0 (ROS message order)."""
    m = np.asarray(r, dtype=np.float64)[:3, :3]
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)


@dataclass(frozen=True)
class Pose:
    """A frame's pose in ``parent_frame``: ``matrix`` maps the frame's coordinates into the parent's."""

    parent_frame: str
    child_frame: str
    matrix: np.ndarray  # 4x4 homogeneous, float64

    @property
    def translation_m(self) -> np.ndarray:
        return self.matrix[:3, 3].copy()

    @property
    def rotation(self) -> np.ndarray:
        return self.matrix[:3, :3].copy()

    @property
    def quaternion_xyzw(self) -> Tuple[float, float, float, float]:
        return rotation_to_quaternion_xyzw(self.matrix[:3, :3])
