"""Task success and episode bookkeeping of the simulated arm, ROS-free (NumPy only, no clocks).

``sim_arm`` judges from its privileged state whether the task is done and publishes the result as
``molmoact_msgs/TaskState``; everything that decides is here and is handed the time and the object poses,
so it is unit- and property-testable without MuJoCo or ROS:

- :class:`CubeRandomization`: the ``lift`` scene's seeded cube placement, an (x, y) offset uniform in
  +-``xy_range_m`` around the table's centre and a yaw uniform in +-``yaw_range_rad``, a pure function of
  the seed (``numpy.random.default_rng(seed)``; the same seed gives the same pose on any machine).
  robosuite's own Lift samples +-0.03 m (and any yaw); the defaults here (+-0.10 m, +-pi) are wider, still on
  the table, inside ``sim_panda.yaml``'s workspace box, reachable top-down and in the workspace camera's view
  (checked by tests).
- :class:`LiftSuccess`: the ``lift`` rule. Success holds while the cube's centre has been at least
  ``lift_height_m`` above its **resting** height (its centre height when the episode began) for at least
  ``hold_s`` of simulation time. robosuite's ``Lift._check_success`` asks for the centre above the **table
  top** + 0.04 m; the cube's centre rests ~0.02 m (its half size) above the table top, so this rule with the
  default 0.04 m is stricter by that half size (0.060-0.062 m above the table top instead of 0.04 m) and
  adds the hold. Every state this rule calls a success, robosuite's calls one too (tested on recorded
  states); the converse does not hold between 0.04 m and ~0.061 m above the table top.
- :class:`GoalSuccess`: a rule decided elsewhere (the ``libero`` scene's goal predicates): it is handed the
  verdict and its reason and adds nothing but the bookkeeping.
- :class:`TaskMonitor`: the episode (number, seed, ``-1`` = the last seed + 1; the ``libero`` scene's seeds
  are the task's official initial states 0..n-1), ``succeeded`` / the time of the first success, change
  detection (what must be published at once) and the bounded reason.

Times are seconds of simulation time since the episode's reset, passed in by the caller; "not yet" is
``None`` (never 0: a time of 0 is a real time, the episode's start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

__all__ = ['MAX_REASON_CHARS', 'MAX_SEED', 'TIME_TOLERANCE_S', 'ObjectPose', 'CubePlacement', 'CubeRandomization', 'Verdict',
           'SuccessRule', 'LiftSuccess', 'GoalSuccess', 'TaskStatus', 'TaskMonitor', 'bound_reason', 'check_seed',
           'yaw_quaternion_xyzw']

#: Longest ``reason`` published (characters; longer ones are cut, ending with '...').
MAX_REASON_CHARS = 500
#: Slack of time comparisons (s): simulation time is a sum of float steps (0.7 - 0.2 < 0.5 in binary).
TIME_TOLERANCE_S = 1e-9
#: Largest seed (TaskState.seed is an int64; -1 is "the next one").
MAX_SEED = 2**63 - 1


def bound_reason(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (ending in '...' when cut)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return text[:max(0, limit - 3)] + '...'


def check_seed(seed, low: int = 0, high: int = MAX_SEED, what: str = 'seed') -> int:
    """``seed`` as an int in [low, high]; ValueError saying why otherwise (bool, float, out of range), the
    seed called ``what`` (e.g. 'official initial state')."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f'{what} must be an integer, got {seed!r}')
    seed = int(seed)
    if not low <= seed <= high:
        raise ValueError(f'{what} {seed} out of range [{low}, {high}]')
    return seed


def yaw_quaternion_xyzw(yaw_rad: float) -> Tuple[float, float, float, float]:
    """The rotation by ``yaw_rad`` about +z as a unit quaternion (x, y, z, w)."""
    return (0.0, 0.0, math.sin(yaw_rad / 2.0), math.cos(yaw_rad / 2.0))


@dataclass(frozen=True)
class ObjectPose:
    """An object's pose in the arm's base frame: position (m) and unit quaternion (x, y, z, w)."""

    name: str
    position_m: Tuple[float, float, float]
    quaternion_xyzw: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.position_m)) and np.all(np.isfinite(self.quaternion_xyzw)))


@dataclass(frozen=True)
class CubePlacement:
    """Where an episode puts the cube: offset (m) from the table's centre along the base frame's x and y, and
    the yaw (rad) about the vertical."""

    dx_m: float
    dy_m: float
    yaw_rad: float


@dataclass(frozen=True)
class CubeRandomization:
    """The ``lift`` scene's seeded cube placement: offsets uniform in [-xy_range_m, xy_range_m] on x and y
    (independently), yaw uniform in [-yaw_range_rad, yaw_range_rad]. A range of 0 fixes that coordinate (the
    table's centre, yaw 0)."""

    xy_range_m: float = 0.10
    yaw_range_rad: float = math.pi

    #: Largest xy range accepted (m): beyond it the cube leaves the camera's view or the arm's easy reach.
    MAX_XY_RANGE_M = 0.15

    def __post_init__(self) -> None:
        xy, yaw = self.xy_range_m, self.yaw_range_rad
        if not (isinstance(xy, (int, float)) and math.isfinite(xy) and 0.0 <= xy <= self.MAX_XY_RANGE_M):
            raise ValueError(f'cube xy range must be in [0, {self.MAX_XY_RANGE_M}] m, got {xy!r}')
        if not (isinstance(yaw, (int, float)) and math.isfinite(yaw) and 0.0 <= yaw <= math.pi):
            raise ValueError(f'cube yaw range must be in [0, pi] rad, got {yaw!r}')

    def sample(self, seed: int) -> CubePlacement:
        """The placement of ``seed`` (an integer >= 0): the same seed always gives the same placement."""
        rng = np.random.default_rng(check_seed(seed))
        u = rng.uniform(-1.0, 1.0, size=3)
        return CubePlacement(dx_m=float(u[0] * self.xy_range_m), dy_m=float(u[1] * self.xy_range_m),
                             yaw_rad=float(u[2] * self.yaw_range_rad))


@dataclass(frozen=True)
class Verdict:
    """A rule's judgement: whether the success predicate holds now, and why (with the numbers)."""

    success: bool
    reason: str


class SuccessRule(Protocol):
    """A scene's success predicate (stateful: a hold time needs the past). ``start`` begins an episode with
    the objects' poses at its reset; ``judge`` is called with non-decreasing times."""

    def start(self, poses: Mapping[str, ObjectPose]) -> None: ...

    def judge(self, time_s: float, poses: Mapping[str, ObjectPose]) -> Verdict: ...


class LiftSuccess:
    """The ``lift`` scene's rule: the object ``name``'s centre at least ``lift_height_m`` above its height at
    the episode's start, held for at least ``hold_s`` (simulation time).

    The hold is measured between judged samples: from the first sample at or above the height to the
    current one; a sample below it restarts the count. Sampled at the node's tick (50 Hz by default), the
    hold is therefore never over-estimated (at most one tick under)."""

    def __init__(self, name: str = 'cube', lift_height_m: float = 0.04, hold_s: float = 0.5):
        if not (math.isfinite(lift_height_m) and lift_height_m > 0.0):
            raise ValueError(f'lift_height_m must be a positive number, got {lift_height_m!r}')
        if not (math.isfinite(hold_s) and hold_s >= 0.0):
            raise ValueError(f'hold_s must be a number >= 0, got {hold_s!r}')
        self.name = name
        self.lift_height_m = float(lift_height_m)
        self.hold_s = float(hold_s)
        self.rest_z_m: Optional[float] = None
        self._above_since_s: Optional[float] = None

    def start(self, poses: Mapping[str, ObjectPose]) -> None:
        pose = poses.get(self.name)
        if pose is None or not pose.finite:
            raise ValueError(f'the lift rule needs a finite starting pose of {self.name!r}, got {pose!r}')
        self.rest_z_m = float(pose.position_m[2])
        self._above_since_s = None

    def judge(self, time_s: float, poses: Mapping[str, ObjectPose]) -> Verdict:
        if self.rest_z_m is None:
            raise RuntimeError('LiftSuccess.judge before start')
        pose = poses.get(self.name)
        if pose is None or not pose.finite:
            self._above_since_s = None
            return Verdict(False, f'{self.name} pose unknown or not finite ({pose!r})')
        height = float(pose.position_m[2]) - self.rest_z_m
        need = f'{self.lift_height_m:.3f} m'
        if height < self.lift_height_m:
            self._above_since_s = None
            return Verdict(False, f'{self.name} {height:.3f} m above rest (< {need})')
        if self._above_since_s is None:
            self._above_since_s = float(time_s)
        held = float(time_s) - self._above_since_s
        ok = held >= self.hold_s - TIME_TOLERANCE_S
        return Verdict(ok, f'{self.name} {height:.3f} m above rest (>= {need}) for {held:.2f} s '
                           f'({">=" if ok else "<"} {self.hold_s:.2f} s)')


class GoalSuccess:
    """A rule whose verdict is decided elsewhere (the ``libero`` scene's BDDL goal, evaluated on the MuJoCo
    state): :meth:`set` hands it the verdict before each :meth:`judge`."""

    def __init__(self) -> None:
        self._verdict = Verdict(False, 'not judged yet')

    def start(self, poses: Mapping[str, ObjectPose]) -> None:
        self._verdict = Verdict(False, 'not judged yet')

    def set(self, success: bool, reason: str) -> None:
        self._verdict = Verdict(bool(success), str(reason))

    def judge(self, time_s: float, poses: Mapping[str, ObjectPose]) -> Verdict:
        return self._verdict


@dataclass(frozen=True)
class TaskStatus:
    """Everything a ``molmoact_msgs/TaskState`` carries, plain (``first_success_s`` None = not yet; the
    message writes -1)."""

    scene: str
    task: str
    instruction: str
    episode: int
    seed: int
    success: bool
    succeeded: bool
    first_success_s: Optional[float]
    reason: str
    time_s: float
    objects: Tuple[ObjectPose, ...] = field(default_factory=tuple)


class TaskMonitor:
    """Episodes and their success, for one scene and task.

    ``begin(seed, time_s, poses)`` starts an episode (the first is episode 0, each later one adds 1);
    ``update(time_s, poses)`` judges and returns the status and whether ``success`` or the episode changed
    since the last status handed out (what the node publishes at once). ``next_seed(-1)`` is the last seed
    + 1; other seeds are checked against [min_seed, max_seed] (ValueError with the reason; nothing changes).
    ``seed_name`` is what a seed is in the reasons (the libero scene: 'official initial state', whose range
    is the task's 0..n-1: -1 after the last one is refused, as is any index past it).
    """

    def __init__(self, scene: str, task: str, instruction: str, rule: SuccessRule, *, min_seed: int = 0,
                 max_seed: int = MAX_SEED, seed_name: str = 'seed'):
        if not min_seed <= max_seed:
            raise ValueError(f'min_seed {min_seed} > max_seed {max_seed}')
        self.seed_name = str(seed_name)
        self.scene, self.task, self.instruction = str(scene), str(task), str(instruction)
        self.rule = rule
        self.min_seed, self.max_seed = int(min_seed), int(max_seed)
        self.episode: Optional[int] = None     # None before the first begin()
        self.seed: Optional[int] = None
        self._start_s = 0.0
        self._last_s: Optional[float] = None
        self._first_success_s: Optional[float] = None
        self._last_status: Optional[TaskStatus] = None
        self._announced: Optional[Tuple[int, bool]] = None

    def next_seed(self, requested: int = -1) -> int:
        """The seed an episode asked for with ``requested`` gets: -1 = the last + 1 (the first episode's
        seed when none ran yet is an error: give one); else ``requested`` if in range. ValueError otherwise."""
        what = self.seed_name
        if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
            raise ValueError(f'{what} must be an integer, got {requested!r}')
        if int(requested) == -1:
            if self.seed is None:
                raise ValueError(f'no episode yet: the first episode needs an explicit {what}')
            if self.seed + 1 > self.max_seed:
                raise ValueError(f'the next {what} {self.seed + 1} is out of range [{self.min_seed}, '
                                 f'{self.max_seed}] (-1 after the last one)')
            return self.seed + 1
        return check_seed(requested, self.min_seed, self.max_seed, what)

    def begin(self, seed: int, time_s: float, poses: Mapping[str, ObjectPose]) -> TaskStatus:
        """Start a new episode with ``seed`` at ``time_s`` (the objects at ``poses``) and judge it once."""
        seed = check_seed(seed, self.min_seed, self.max_seed, self.seed_name)
        _check_time(time_s)
        self.rule.start(poses)
        self.episode = 0 if self.episode is None else self.episode + 1
        self.seed = seed
        self._start_s = float(time_s)
        self._last_s = None
        self._first_success_s = None
        self._last_status = None
        return self.update(time_s, poses)[0]

    def update(self, time_s: float, poses: Mapping[str, ObjectPose]) -> Tuple[TaskStatus, bool]:
        """Judge at ``time_s`` (non-decreasing within an episode). Returns (status, changed): ``changed`` is
        True when ``success`` or the episode differs from the last status this returned as changed."""
        if self.episode is None:
            raise RuntimeError('TaskMonitor.update before begin')
        _check_time(time_s)
        if self._last_s is not None and time_s < self._last_s:
            raise ValueError(f'time went back from {self._last_s} s to {time_s} s within episode {self.episode}')
        self._last_s = float(time_s)
        verdict = self.rule.judge(time_s, poses)
        since_start = float(time_s) - self._start_s
        if verdict.success and self._first_success_s is None:
            self._first_success_s = since_start
        status = TaskStatus(
            scene=self.scene, task=self.task, instruction=self.instruction, episode=self.episode,
            seed=self.seed, success=verdict.success, succeeded=self._first_success_s is not None,
            first_success_s=self._first_success_s, reason=bound_reason(verdict.reason), time_s=float(time_s),
            objects=tuple(poses.values()))
        key = (status.episode, status.success)
        changed = key != self._announced
        self._announced = key
        self._last_status = status
        return status, changed

    @property
    def status(self) -> Optional[TaskStatus]:
        """The last status judged (None before the first episode)."""
        return self._last_status


def _check_time(time_s) -> None:
    if isinstance(time_s, bool) or not isinstance(time_s, (int, float, np.floating)) or not math.isfinite(time_s):
        raise ValueError(f'time must be a finite number of seconds, got {time_s!r}')


def poses_by_name(poses: Sequence[ObjectPose]) -> Mapping[str, ObjectPose]:
    """``poses`` keyed by name (insertion order kept: the message's order)."""
    return {p.name: p for p in poses}
