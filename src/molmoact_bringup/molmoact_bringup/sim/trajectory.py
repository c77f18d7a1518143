"""Joint trajectory following with the semantics of ros2_control's joint_trajectory_controller (topic
interface ``<controller>/joint_trajectory``). ROS-free: NumPy only, time passed in by the caller.

What a trajectory does (as the JTC does it; ros2_controllers ``joint_trajectory_controller`` docs):

- **Start time**: ``start_time_s`` is the message's ``header.stamp`` in the controller's clock; 0 means
  "now" (the time the trajectory is accepted). Each point is due at ``start_time_s + time_from_start``.
- **Replacement**: a new trajectory replaces the current one at once. The setpoint moves from where it
  is at that moment (position and velocity of the current setpoint) to the first point that is not in
  the past. Points due before "now" are dropped; a trajectory whose points are all in the past is
  rejected. A point due exactly now is kept (the setpoint jumps to it: that is what a zero
  ``time_from_start`` with a zero stamp asks for).
- **Interpolation**: positions only -> linear in time between points (constant velocity per segment);
  positions and velocities on every point -> cubic Hermite (position and velocity continuous).
- **End**: after the last point the setpoint holds the last position with zero velocity.
- **Cancel**: a trajectory with no points stops the current one; the setpoint holds where it is.
- **Rejection** (:class:`TrajectoryRejected`, with the reason; the current trajectory continues):
  unknown, duplicate or missing joint names (partial goals are not allowed, as with the JTC's default
  ``allow_partial_joints_goal: false``), a point whose ``positions`` (or non-empty ``velocities``)
  do not match the joints, NaN / infinite values, negative or non-increasing ``time_from_start``,
  velocities on some points but not all, a non-zero velocity on the last point (the JTC's default
  ``allow_nonzero_velocity_at_trajectory_end: false``), or every point in the past.

Joint limits are not this module's business: the arm (or the simulator) clamps what it is given.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'TrajectoryPoint',
    'JointTrajectoryCommand',
    'Setpoint',
    'TrajectoryRejected',
    'JointTrajectoryFollower',
]


class TrajectoryRejected(ValueError):
    """A trajectory the follower will not execute; ``str(e)`` says why."""


@dataclass(frozen=True)
class TrajectoryPoint:
    """One waypoint: joint positions (rad) due ``time_from_start_s`` after the trajectory's start.

    ``velocities_rad_s`` is empty (positions only: linear interpolation) or one value per joint.
    """

    time_from_start_s: float
    positions_rad: Tuple[float, ...]
    velocities_rad_s: Tuple[float, ...] = ()


@dataclass(frozen=True)
class JointTrajectoryCommand:
    """A ``trajectory_msgs/JointTrajectory`` in plain data.

    ``start_time_s``: the header stamp in seconds of the controller's clock; 0 means "start now".
    ``joint_names`` give the order of every point's values (any order of the controller's joints).
    """

    joint_names: Tuple[str, ...]
    points: Tuple[TrajectoryPoint, ...]
    start_time_s: float = 0.0


@dataclass(frozen=True)
class Setpoint:
    """The commanded state at one instant, in the follower's joint order."""

    positions_rad: np.ndarray
    velocities_rad_s: np.ndarray


@dataclass
class _Plan:
    times_s: np.ndarray                 # (K,) absolute knot times, strictly increasing; knot 0 = anchor
    positions_rad: np.ndarray           # (K, n)
    velocities_rad_s: Optional[np.ndarray] = None  # (K, n) for cubic Hermite; None for linear
    kept_points: int = 0
    dropped_points: int = 0


class JointTrajectoryFollower:
    """Turns accepted trajectories into a setpoint at any time ``now_s`` (seconds of the caller's clock).

    ``joint_names``: the controller's joints, in the order of :class:`Setpoint` arrays.
    ``initial_positions_rad``: the setpoint held until the first trajectory arrives (the arm's state).
    """

    def __init__(self, joint_names: Sequence[str], initial_positions_rad: Sequence[float]):
        names = tuple(str(n) for n in joint_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f'joint_names must be non-empty and unique, got {list(names)}')
        self._names = names
        self._index = {n: i for i, n in enumerate(names)}
        hold = self._finite_vector(initial_positions_rad, 'initial_positions_rad')
        self._plan: Optional[_Plan] = None
        self._hold_rad = hold

    # ------------------------------------------------------------------ queries

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return self._names

    def is_moving(self, now_s: float) -> bool:
        """True while a trajectory has points still ahead of ``now_s``."""
        return self._plan is not None and float(now_s) < self._plan.times_s[-1]

    def end_time_s(self) -> Optional[float]:
        """When the current trajectory's last point is due (None when holding)."""
        return None if self._plan is None else float(self._plan.times_s[-1])

    def sample(self, now_s: float) -> Setpoint:
        """The setpoint at ``now_s``: interpolated on the current trajectory, or the held position.
        A pure function of ``now_s`` between commands (times before the trajectory's acceptance give
        the position it started from)."""
        t = float(now_s)
        plan = self._plan
        n = len(self._names)
        if plan is None:
            return Setpoint(self._hold_rad.copy(), np.zeros(n))
        times = plan.times_s
        if t >= times[-1]:  # finished: hold the last point
            return Setpoint(plan.positions_rad[-1].copy(), np.zeros(n))
        if t <= times[0]:
            vel = plan.velocities_rad_s[0].copy() if plan.velocities_rad_s is not None else np.zeros(n)
            return Setpoint(plan.positions_rad[0].copy(), vel)
        i = bisect.bisect_right(times, t) - 1
        t0, t1 = times[i], times[i + 1]
        h = t1 - t0
        s = (t - t0) / h
        p0, p1 = plan.positions_rad[i], plan.positions_rad[i + 1]
        if plan.velocities_rad_s is None:
            return Setpoint(p0 + (p1 - p0) * s, (p1 - p0) / h)
        v0, v1 = plan.velocities_rad_s[i], plan.velocities_rad_s[i + 1]
        # Cubic Hermite basis on s in [0, 1] and their derivatives (d/dt = d/ds / h).
        s2, s3 = s * s, s * s * s
        h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
        d00, d10, d01, d11 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, -6 * s2 + 6 * s, 3 * s2 - 2 * s
        pos = h00 * p0 + h10 * h * v0 + h01 * p1 + h11 * h * v1
        vel = (d00 * p0 + d01 * p1) / h + d10 * v0 + d11 * v1
        return Setpoint(pos, vel)

    # ------------------------------------------------------------------ commands

    def hold(self, positions_rad: Sequence[float]) -> None:
        """Drop any trajectory and hold ``positions_rad`` (e.g. after a reset of the arm)."""
        self._hold_rad = self._finite_vector(positions_rad, 'positions_rad')
        self._plan = None

    def accept(self, command: JointTrajectoryCommand, now_s: float) -> int:
        """Validate ``command`` and make it the current trajectory from ``now_s``.

        Returns the number of points kept (0 for a cancel: no points). Raises
        :class:`TrajectoryRejected` with the reason; the current trajectory then continues unchanged.
        """
        now = float(now_s)
        if not math.isfinite(now):
            raise ValueError(f'now_s must be finite, got {now_s!r}')
        current = self.sample(now)
        if len(command.points) == 0:
            # Empty trajectory: stop and hold the current setpoint (as the JTC does on its topic).
            self._hold_rad = current.positions_rad
            self._plan = None
            return 0

        order = self._joint_order(command.joint_names)
        start = float(command.start_time_s)
        if not math.isfinite(start) or start < 0:
            raise TrajectoryRejected(f'header stamp must be a finite time >= 0, got {start}')
        if start == 0.0:
            start = now
        n = len(self._names)
        with_velocities = [len(p.velocities_rad_s) > 0 for p in command.points]
        if any(with_velocities) and not all(with_velocities):
            raise TrajectoryRejected('velocities must be given on every point or on none')
        cubic = all(with_velocities)

        times, positions, velocities = [], [], []
        previous = -math.inf
        for k, point in enumerate(command.points):
            tfs = float(point.time_from_start_s)
            if not math.isfinite(tfs) or tfs < 0:
                raise TrajectoryRejected(f'point {k}: time_from_start must be finite and >= 0, got {tfs}')
            if tfs <= previous:
                raise TrajectoryRejected(
                    f'point {k}: time_from_start {tfs} s is not after the previous point\'s {previous} s '
                    '(times must increase strictly)')
            previous = tfs
            pos = self._point_vector(point.positions_rad, len(order), k, 'positions')
            positions.append(pos[order])
            if cubic:
                vel = self._point_vector(point.velocities_rad_s, len(order), k, 'velocities')
                velocities.append(vel[order])
            times.append(start + tfs)
        if cubic and np.any(velocities[-1] != 0.0):
            raise TrajectoryRejected(
                'the last point has a non-zero velocity; the arm would not stop at the end '
                '(allow_nonzero_velocity_at_trajectory_end is false)')

        keep = [k for k, t in enumerate(times) if t >= now]
        if not keep:
            raise TrajectoryRejected(
                f'every point is in the past (last due at {times[-1]:.3f} s, now {now:.3f} s)')
        first = keep[0]
        knot_times = [now] + [times[k] for k in keep]
        knot_pos = [current.positions_rad] + [positions[k] for k in keep]
        if knot_times[1] == now:  # first point due exactly now: start on it
            knot_times, knot_pos = knot_times[1:], knot_pos[1:]
        plan = _Plan(times_s=np.asarray(knot_times, dtype=np.float64),
                     positions_rad=np.asarray(knot_pos, dtype=np.float64).reshape(-1, n),
                     kept_points=len(keep), dropped_points=first)
        if cubic:
            knot_vel = [current.velocities_rad_s] + [velocities[k] for k in keep]
            if len(knot_vel) > len(knot_times):
                knot_vel = knot_vel[1:]
            plan.velocities_rad_s = np.asarray(knot_vel, dtype=np.float64).reshape(-1, n)
        if len(plan.times_s) == 1:
            # A single point due now: go there and hold.
            self._hold_rad = plan.positions_rad[0].copy()
            self._plan = None
        else:
            self._plan = plan
        return len(keep)

    # ------------------------------------------------------------------ helpers

    def _joint_order(self, joint_names: Sequence[str]) -> np.ndarray:
        """Index array mapping the message's order to the follower's order (validates names)."""
        names = [str(n) for n in joint_names]
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise TrajectoryRejected(
                f'unknown joint(s) {unknown}; this controller commands {list(self._names)}')
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise TrajectoryRejected(f'duplicate joint name(s) {dup}')
        missing = [n for n in self._names if n not in names]
        if missing:
            raise TrajectoryRejected(
                f'missing joint(s) {missing}: partial goals are not allowed, give all of {list(self._names)}')
        # position in message for each follower joint
        where = {n: i for i, n in enumerate(names)}
        return np.array([where[n] for n in self._names], dtype=np.intp)

    @staticmethod
    def _point_vector(values: Sequence[float], count: int, k: int, what: str) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
        if a.size != count:
            raise TrajectoryRejected(f'point {k}: {a.size} {what} for {count} joints')
        if not np.all(np.isfinite(a)):
            raise TrajectoryRejected(f'point {k}: {what} contain NaN or infinity: {a.tolist()}')
        return a

    def _finite_vector(self, values: Sequence[float], what: str) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
        if a.size != len(self._names) or not np.all(np.isfinite(a)):
            raise ValueError(f'{what}: expected {len(self._names)} finite values, got {list(a)}')
        return a.copy()
