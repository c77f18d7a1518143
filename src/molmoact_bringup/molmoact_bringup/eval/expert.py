"""The scripted expert of the ``lift`` scene: action chunks planned from the simulator's privileged state.

ROS-free (NumPy + transforms3d), handed the time. It plays two roles: the upper bound of an evaluation (what
a perfect perception would reach through the same command sink) and the demonstrator whose episodes become
training data. It sees what a real arm's stack also sees (the end-effector pose, the gripper opening) plus
the one privileged fact a model must infer from the image: the cube's pose.

Each call to :meth:`LiftExpert.act` returns one chunk of ``horizon`` steps in the sink's action format:
per-step end-effector deltas in the arm's base frame (translation in m; rotation as static-xyz roll, pitch,
yaw in rad, the ``euler_sxyz_roll_pitch_yaw`` convention; ``R_i = dR_i R_{i-1}`` about the TCP) and a raw
gripper value (1.0 open, 0.0 closed: the ``binarize`` reading of the profiles, ``> 0.5`` = open). The chunk
moves the TCP toward the phase's target at no more than ``max_step_m`` / ``max_step_rad`` per step, so
the sink's safety clamps never have to cut it.

Phases (the state decides, with two memories: the cube's resting height and when the gripper closed):

``approach``  gripper open, the TCP above the cube (``approach_height_m`` over its centre), fingers turned
              to the nearest pair of the cube's faces (the cube's yaw modulo 90 deg) when ``align_yaw``, else
              the tool's orientation kept as it is, translation only (the Panda's fingers open to 8 cm, and a
              4 cm cube turns into the grasp at any yaw, with the rest pose's 7 deg tilt too: 20/20 lifts on
              seeds 1000-1019; the demonstrations of the bundled model use it: the yaw of a cube ~14 px wide is
              barely visible to a small model, and rotation deltas a model gets wrong tilt the gripper);
``descend``   once above it (within ``xy_tolerance_m`` and ``yaw_tolerance_rad``): down to the cube's
              centre height (``grasp_offset_m``);
``grasp``     once there (within ``grasp_tolerance_m``): close and hold still for ``close_s``;
``lift``      the TCP up to ``lift_height_m`` above the grasp height, gripper closed.

If the cube slips (more than ``lost_distance_m`` from the TCP while grasping or lifting) the expert opens and
starts over from ``approach``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from transforms3d.euler import mat2euler

__all__ = ['Phase', 'LiftExpertConfig', 'ExpertObservation', 'ExpertChunk', 'LiftExpert', 'top_down_rotation',
           'wrap_quarter_turn', 'DetourConfig', 'Detour', 'sample_detour', 'DetouringExpert', 'takeover_queries']

GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0


class Phase(str, enum.Enum):
    APPROACH = 'approach'
    DESCEND = 'descend'
    GRASP = 'grasp'
    LIFT = 'lift'


@dataclass(frozen=True)
class LiftExpertConfig:
    """Tuning of the scripted expert (metres, radians, seconds)."""

    horizon: int = 8
    step_period_s: float = 0.1
    max_step_m: float = 0.02
    max_step_rad: float = 0.1
    approach_height_m: float = 0.08
    grasp_offset_m: float = 0.0
    lift_height_m: float = 0.15
    xy_tolerance_m: float = 0.008
    yaw_tolerance_rad: float = 0.06
    grasp_tolerance_m: float = 0.008
    close_s: float = 0.8
    lost_distance_m: float = 0.05
    align_yaw: bool = True

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError(f'horizon must be >= 1, got {self.horizon}')
        for name in ('step_period_s', 'max_step_m', 'max_step_rad', 'approach_height_m', 'lift_height_m',
                     'xy_tolerance_m', 'yaw_tolerance_rad', 'grasp_tolerance_m', 'close_s', 'lost_distance_m'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be finite and > 0, got {value!r}')


@dataclass(frozen=True)
class ExpertObservation:
    """What the expert is handed: poses are 4x4 in the arm's base frame (m)."""

    ee_pose: np.ndarray
    cube_pose: np.ndarray


@dataclass(frozen=True)
class ExpertChunk:
    """One chunk: ``translation_m`` (H, 3), ``rotation_rad`` (H, 3) roll/pitch/yaw deltas, ``gripper`` (H,)."""

    translation_m: np.ndarray
    rotation_rad: np.ndarray
    gripper: np.ndarray
    phase: Phase


def wrap_quarter_turn(angle_rad: float) -> float:
    """``angle_rad`` wrapped to [-pi/4, pi/4) (a cube's faces repeat every 90 deg)."""
    return (float(angle_rad) + math.pi / 4) % (math.pi / 2) - math.pi / 4


def _wrap(angle_rad: float) -> float:
    return (float(angle_rad) + math.pi) % (2 * math.pi) - math.pi


def top_down_rotation(finger_axis_angle_rad: float) -> np.ndarray:
    """The TCP orientation pointing straight down (tool z = -base z) with the fingers' closing axis (tool y)
    at ``finger_axis_angle_rad`` from the base x axis."""
    y = np.array([math.cos(finger_axis_angle_rad), math.sin(finger_axis_angle_rad), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    x = np.cross(y, z)
    return np.column_stack([x, y, z])


def _finger_axis_angle(R: np.ndarray) -> float:
    return math.atan2(R[1, 1], R[0, 1])


def _cube_yaw(R: np.ndarray) -> float:
    return math.atan2(R[1, 0], R[0, 0])


def _rotation_vector(R: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if math.pi - angle < 1e-6:
        # 180 deg: the axis from the symmetric part.
        axis = np.sqrt(np.clip((np.diag(R) + 1.0) / 2.0, 0.0, None))
        axis *= np.sign(np.array([1.0, R[0, 1] + R[1, 0] or 1.0, R[0, 2] + R[2, 0] or 1.0]))
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * math.sin(angle))
    return axis * angle


def _axis_angle_matrix(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


class LiftExpert:
    """The phase machine of the module docstring. Call :meth:`reset` at the start of every episode."""

    def __init__(self, config: LiftExpertConfig = LiftExpertConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.phase = Phase.APPROACH
        self._rest_z: Optional[float] = None
        self._grasp_started_s: Optional[float] = None
        self._grasp_z: Optional[float] = None

    def _targets(self, ee: np.ndarray, cube: np.ndarray, now_s: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(target position, target rotation, gripper) for the current phase; advances the phase."""
        cfg = self.config
        p, R = ee[:3, 3], ee[:3, :3]
        c = cube[:3, 3]
        if self._rest_z is None:
            self._rest_z = float(c[2])
        # Fingers across the nearest pair of faces: the smallest turn from the current finger axis.
        if cfg.align_yaw:
            current = _finger_axis_angle(R)
            turn = wrap_quarter_turn(_cube_yaw(cube[:3, :3]) - current)
            R_goal = top_down_rotation(current + turn)
        else:  # translation only: the tool keeps its orientation
            turn, R_goal = 0.0, R
        grasp_z = float(c[2]) + cfg.grasp_offset_m
        above = np.array([c[0], c[1], grasp_z + cfg.approach_height_m])

        if self.phase in (Phase.GRASP, Phase.LIFT) and np.linalg.norm(c - p) > cfg.lost_distance_m:
            self.phase, self._grasp_started_s, self._grasp_z = Phase.APPROACH, None, None
        xy_error = float(np.linalg.norm(c[:2] - p[:2]))
        yaw_error = abs(turn)
        if self.phase is Phase.APPROACH:
            if xy_error <= cfg.xy_tolerance_m and yaw_error <= cfg.yaw_tolerance_rad \
                    and p[2] <= above[2] + cfg.grasp_tolerance_m:
                self.phase = Phase.DESCEND
        if self.phase is Phase.DESCEND:
            if xy_error > 2.5 * cfg.xy_tolerance_m:
                self.phase = Phase.APPROACH  # drifted off (the cube was pushed): line up again
            elif np.linalg.norm(np.array([c[0], c[1], grasp_z]) - p) <= cfg.grasp_tolerance_m:
                self.phase, self._grasp_started_s, self._grasp_z = Phase.GRASP, float(now_s), float(p[2])
        if self.phase is Phase.GRASP and float(now_s) - self._grasp_started_s >= cfg.close_s:
            self.phase = Phase.LIFT

        if self.phase is Phase.APPROACH:
            # Rise first when low (never drag the fingers through the cube), then across.
            target = above if p[2] >= grasp_z + 0.5 * cfg.approach_height_m else np.array([p[0], p[1], above[2]])
            return target, R_goal, GRIPPER_OPEN
        if self.phase is Phase.DESCEND:
            return np.array([c[0], c[1], grasp_z]), R_goal, GRIPPER_OPEN
        if self.phase is Phase.GRASP:
            return p.copy(), R, GRIPPER_CLOSED
        top = np.array([p[0], p[1], self._grasp_z + cfg.lift_height_m])
        return top, R, GRIPPER_CLOSED

    def act(self, obs: ExpertObservation, now_s: float) -> ExpertChunk:
        """The next chunk from the observed end-effector and cube poses at ``now_s``."""
        ee = np.asarray(obs.ee_pose, dtype=float)
        cube = np.asarray(obs.cube_pose, dtype=float)
        if ee.shape != (4, 4) or cube.shape != (4, 4) or not (np.all(np.isfinite(ee)) and np.all(np.isfinite(cube))):
            raise ValueError('the expert needs finite 4x4 end-effector and cube poses')
        cfg = self.config
        target_p, target_R, gripper = self._targets(ee, cube, now_s)
        p, R = ee[:3, 3].copy(), ee[:3, :3].copy()
        dps, drs = np.zeros((cfg.horizon, 3)), np.zeros((cfg.horizon, 3))
        for i in range(cfg.horizon):
            dp = target_p - p
            dist = float(np.linalg.norm(dp))
            if dist > cfg.max_step_m:
                dp *= cfg.max_step_m / dist
            rv = _rotation_vector(target_R @ R.T)
            angle = float(np.linalg.norm(rv))
            if angle > cfg.max_step_rad:
                rv *= cfg.max_step_rad / angle
            dR = _axis_angle_matrix(rv)
            dps[i] = dp
            drs[i] = mat2euler(dR, 'sxyz')
            p, R = p + dp, dR @ R
        return ExpertChunk(dps, drs, np.full(cfg.horizon, gripper), self.phase)


@dataclass(frozen=True)
class DetourConfig:
    """Noise injection into demonstrations (DART, Laskey et al. 2017): in a ``probability`` share of the
    episodes the arm is driven for a while by an expert that believes the cube is elsewhere (its xy shifted by
    ``min_offset_m``..``max_offset_m`` in a random direction, from ``0..max_start_s`` for
    ``min_duration_s``..``max_duration_s`` of the episode), while every observation is labelled by the expert
    that knows where the cube is. The labels then show how to recover from the states a learner drifts into
    (beside the cube, low, gripper closed on nothing), at the scripted expert's speed rather than the model's."""

    probability: float = 0.0
    min_offset_m: float = 0.03
    max_offset_m: float = 0.10
    max_start_s: float = 2.0
    min_duration_s: float = 1.0
    max_duration_s: float = 5.0

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f'probability must be within [0, 1], got {self.probability!r}')
        if not 0.0 <= self.min_offset_m <= self.max_offset_m <= 0.5:
            raise ValueError('detour offsets must satisfy 0 <= min_offset_m <= max_offset_m <= 0.5 m, got '
                             f'{self.min_offset_m!r}, {self.max_offset_m!r}')
        if not 0.0 <= self.max_start_s <= 600.0:
            raise ValueError(f'max_start_s must be within [0, 600] s, got {self.max_start_s!r}')
        if not 0.0 < self.min_duration_s <= self.max_duration_s <= 600.0:
            raise ValueError('detour durations must satisfy 0 < min_duration_s <= max_duration_s <= 600 s, got '
                             f'{self.min_duration_s!r}, {self.max_duration_s!r}')


@dataclass(frozen=True)
class Detour:
    """One episode's detour: the acting expert's cube is shifted by ``offset_m`` (base frame, m; z = 0) while
    ``start_s <= elapsed < end_s`` (seconds since the episode started)."""

    offset_m: tuple[float, float, float]
    start_s: float
    end_s: float

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= float(elapsed_s) < self.end_s


def sample_detour(config: DetourConfig, rng: np.random.Generator) -> Optional[Detour]:
    """The detour of one episode, or None (the episode is a plain demonstration); reproducible from ``rng``."""
    if config.probability <= 0.0 or rng.random() >= config.probability:
        return None
    angle = rng.uniform(-math.pi, math.pi)
    r = rng.uniform(config.min_offset_m, config.max_offset_m)
    start = rng.uniform(0.0, config.max_start_s)
    duration = rng.uniform(config.min_duration_s, config.max_duration_s)
    return Detour((r * math.cos(angle), r * math.sin(angle), 0.0), start, start + duration)


class DetouringExpert:
    """Two :class:`LiftExpert` s on one episode: ``label`` (the true cube) labels every observation; ``actor``
    (the cube shifted by the detour's offset) drives the arm while the detour is active; outside it the label
    is also what drives the arm. Without a detour it is the plain expert."""

    def __init__(self, config: LiftExpertConfig = LiftExpertConfig(), detour: Optional[Detour] = None):
        self.config = config
        self.label = LiftExpert(config)
        self.actor = LiftExpert(config)
        self.detour = detour

    def reset(self, detour: Optional[Detour] = None) -> None:
        self.label.reset()
        self.actor.reset()
        self.detour = detour

    def act(self, obs: ExpertObservation, now_s: float, elapsed_s: float) -> tuple[ExpertChunk, ExpertChunk]:
        """(the chunk to execute, the expert's label of ``obs``) at ``elapsed_s`` into the episode."""
        label = self.label.act(obs, now_s)
        if self.detour is None or not self.detour.active(elapsed_s):
            return label, label
        cube = np.array(obs.cube_pose, dtype=float)
        cube[:3, 3] += np.asarray(self.detour.offset_m, dtype=float)
        return self.actor.act(ExpertObservation(obs.ee_pose, cube), now_s), label


def takeover_queries(seed: int, max_queries: int) -> int:
    """How many model queries an ``--takeover-after`` episode runs before the expert takes over: uniform in
    1..``max_queries``, reproducible from the episode's seed (so a set of episodes covers early and late
    states of the learner)."""
    if max_queries < 1:
        raise ValueError(f'max_queries must be >= 1, got {max_queries}')
    return int(np.random.default_rng([int(seed), 0x7A4E]).integers(1, max_queries + 1))
