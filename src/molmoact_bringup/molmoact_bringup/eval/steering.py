"""Steering trials of the ``lift`` scene, ROS-free: where an edited trace sends the arm, the trace a person
would draw there, and how close the end effector came.

A trial moves the task's goal: a *virtual cube* ``offset`` (``min_offset_m``..``max_offset_m``, seeded
direction) away from the real cube on the table, inside the region the scene places cubes in. The edited
trace is the path a demonstration would take to it: from the end effector now, over the virtual cube at
``approach_height_m``, down to its centre, up ``lift_height_m`` (the expert's heights, so the trace looks like
the ones the model was trained on). Waypoints the end effector has reached (within ``reached_m``) drop out of
later traces. The trial's measure is the end effector's closest approach to the trace's end point (the
lifted point), against the same distance when the trace is not edited.

Points are 3-vectors in the arm's base frame (m); pixels are (column, row) of the source camera image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from molmoact_ros.robot.geometry import CameraIntrinsics, project

__all__ = ['SteeringConfig', 'SteeringTarget', 'SteeringTrial', 'steering_target', 'to_pixels']


@dataclass(frozen=True)
class SteeringConfig:
    """Distances in metres."""

    min_offset_m: float = 0.10
    max_offset_m: float = 0.15
    #: Half-width of the square (about the table's centre) the virtual cube stays in: the scene's largest
    #: cube placement range (sim.task.CubeRandomization.MAX_XY_RANGE_M), in view and in reach.
    region_half_width_m: float = 0.15
    approach_height_m: float = 0.08
    lift_height_m: float = 0.15
    reached_m: float = 0.02
    success_m: float = 0.03

    def __post_init__(self):
        for name in ('min_offset_m', 'max_offset_m', 'region_half_width_m', 'approach_height_m', 'lift_height_m',
                     'reached_m', 'success_m'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be finite and > 0, got {value!r}')
        if self.max_offset_m < self.min_offset_m:
            raise ValueError('max_offset_m must be >= min_offset_m')


@dataclass(frozen=True)
class SteeringTarget:
    """The virtual cube's centre and the waypoints of its trace (above it, at it, lifted: the end point)."""

    cube_m: np.ndarray
    offset_m: float
    waypoints_m: tuple

    @property
    def end_m(self) -> np.ndarray:
        return self.waypoints_m[-1]


def steering_target(cube_m: Sequence[float], table_centre_m: Sequence[float], seed: int,
                    config: SteeringConfig = SteeringConfig()) -> SteeringTarget:
    """The virtual cube of trial ``seed``: ``offset`` uniform in the configured range, the direction the first of
    64 seeded draws that keeps it inside the region; ValueError when none does (a cube in a corner with a
    region too small for the offset)."""
    cube = np.asarray(cube_m, dtype=np.float64).reshape(3)
    centre = np.asarray(table_centre_m, dtype=np.float64).reshape(-1)[:2]
    rng = np.random.default_rng([int(seed), 7])
    for _ in range(64):
        offset = float(rng.uniform(config.min_offset_m, config.max_offset_m))
        angle = float(rng.uniform(-math.pi, math.pi))
        xy = cube[:2] + offset * np.array([math.cos(angle), math.sin(angle)])
        if np.all(np.abs(xy - centre) <= config.region_half_width_m):
            target = np.array([xy[0], xy[1], cube[2]])
            above = target + [0.0, 0.0, config.approach_height_m]
            lifted = target + [0.0, 0.0, config.lift_height_m]
            return SteeringTarget(target, offset, (above, target.copy(), lifted))
    raise ValueError(f'no virtual cube {config.min_offset_m}-{config.max_offset_m} m from the cube at '
                     f'{cube[:2].round(3).tolist()} stays within {config.region_half_width_m} m of the table centre')


@dataclass
class SteeringTrial:
    """One episode's steering: the next trace to draw and the closest approach so far."""

    target: SteeringTarget
    config: SteeringConfig = field(default_factory=SteeringConfig)
    next_waypoint: int = 0
    closest_m: float = math.inf

    def observe(self, ee_m: Sequence[float]) -> None:
        """An end-effector position: the closest approach to the end point, and which waypoints are reached."""
        ee = np.asarray(ee_m, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(ee)):
            return
        self.closest_m = min(self.closest_m, float(np.linalg.norm(ee - self.target.end_m)))
        while self.next_waypoint < len(self.target.waypoints_m) - 1 and \
                np.linalg.norm(ee - self.target.waypoints_m[self.next_waypoint]) <= self.config.reached_m:
            self.next_waypoint += 1

    def trace_m(self, ee_m: Sequence[float]) -> np.ndarray:
        """The trace to draw now (K, 3): the end effector, then the waypoints not reached yet (2..4 points)."""
        ee = np.asarray(ee_m, dtype=np.float64).reshape(1, 3)
        return np.vstack([ee, *self.target.waypoints_m[self.next_waypoint:]])

    @property
    def steered(self) -> bool:
        """The end effector came within ``success_m`` of the end point."""
        return self.closest_m < self.config.success_m


def to_pixels(points_m: np.ndarray, camera_pose: np.ndarray, intrinsics: CameraIntrinsics) -> Optional[List[tuple]]:
    """Base-frame points -> source pixels (column, row) through the camera (``camera_pose``: base -> optical
    frame, 4x4); None when a point is behind the camera or outside the image."""
    pts = np.asarray(points_m, dtype=np.float64).reshape(-1, 3)
    inv = np.linalg.inv(np.asarray(camera_pose, dtype=np.float64))
    uv = project(pts @ inv[:3, :3].T + inv[:3, 3], intrinsics)
    if not np.all(np.isfinite(uv)):
        return None
    if np.any(uv < 0) or np.any(uv[:, 0] > intrinsics.width - 1) or np.any(uv[:, 1] > intrinsics.height - 1):
        return None
    return [(float(u), float(v)) for u, v in uv]
