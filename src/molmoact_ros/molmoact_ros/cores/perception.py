"""The perception stage's decisions, ROS-free: the instruction it acts on, which query runs next (a goal's or
the instruction topic's, on which frame: :class:`~molmoact_ros.cores.intake.FrameIntake`), and the model image
made from a camera frame (JPEG round trip, resize, centre crop, and the model -> source pixel mapping).

Handed the time (monotonic seconds, any start value) and plain values; the node converts messages and
publishes what it is told. Goals themselves are :class:`~molmoact_ros.cores.goal_runs.GoalRuns`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..model.processing import build_prompt
from ..reasoning.goals import GoalBounds, GoalRun
from ..robot.geometry import center_crop_affine, compose_affine, resize_affine
from ..ros.image import RESIZE_METHODS, center_crop_resize, downscale, jpeg_round_trip
from .goal_runs import GoalRuns
from .intake import Admission, FrameIntake, IntakeConfig
from .quoting import quote


@dataclass(frozen=True)
class ModelImageConfig:
    """How a camera frame becomes the model's image (node parameters of the same names)."""

    max_image_side_px: int = 336
    resize_method: str = 'fast_area'
    jpeg_quality: int = 0
    center_crop_area_fraction: float = 1.0

    def __post_init__(self):
        if self.max_image_side_px < 0:
            raise ValueError(f'max_image_side_px must be >= 0, got {self.max_image_side_px}')
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(f'resize_method must be one of {RESIZE_METHODS}, got {quote(self.resize_method)}')
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 0..100, got {self.jpeg_quality}')
        if not (math.isfinite(self.center_crop_area_fraction) and 0 < self.center_crop_area_fraction <= 1):
            raise ValueError(f'center_crop_area_fraction must be in (0, 1], got {self.center_crop_area_fraction}')


def resize_to_limit(rgb: np.ndarray, config: ModelImageConfig) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """``rgb`` with its longer side at most ``max_image_side_px`` (and the new (w, h)), or as is and None."""
    limit = int(config.max_image_side_px)
    h, w = rgb.shape[:2]
    if not limit or max(h, w) <= limit:
        return rgb, None
    scale = limit / max(h, w)
    nw, nh = max(2, round(w * scale)), max(2, round(h * scale))
    return downscale(rgb, (nw, nh), config.resize_method), (nw, nh)


def model_image(rgb: np.ndarray, config: ModelImageConfig) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(model image, model pixels -> source pixels affine or None): JPEG round trip, resize, centre crop."""
    h, w = rgb.shape[:2]
    if config.jpeg_quality:
        rgb = jpeg_round_trip(rgb, config.jpeg_quality)
    resized, size = resize_to_limit(rgb, config)
    affine = None if size is None else resize_affine(size[0], size[1], w, h)
    fraction = float(config.center_crop_area_fraction)
    if fraction < 1.0:
        crop = center_crop_affine(resized.shape[1], resized.shape[0], fraction)
        resized = center_crop_resize(resized, fraction)
        affine = crop if affine is None else compose_affine(crop, affine)
    return resized, affine


def normalize_instruction(text: str) -> str:
    """The instruction, whitespace-normalised and checked as the engine checks it (ValueError: why not)."""
    text = ' '.join(str(text).split())
    try:
        build_prompt(text)
    except ValueError as exc:
        raise ValueError(f'instruction rejected: {exc}') from None
    return text


@dataclass(frozen=True)
class PerceptionWiring:
    """Which side inputs and outputs the perception node wires at configure (read once, like the intake)."""

    use_wrist_image: bool = False
    use_aligned_depth: bool = False
    #: Largest stamp difference between a frame and its aligned depth / wrist image, s.
    sync_tolerance_s: float = 0.05
    publish_depth_image: bool = True
    depth_decoder_path: str = ''

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sync_tolerance_s) and self.sync_tolerance_s >= 0):
            raise ValueError(f'sync_tolerance_s must be finite and >= 0, got {self.sync_tolerance_s!r}')


@dataclass(frozen=True)
class PerceptionConfig:
    """The perception node's settings, one field per node parameter (the node's ParamSpec defaults)."""

    image: ModelImageConfig = ModelImageConfig()
    intake: IntakeConfig = IntakeConfig()
    goals: GoalBounds = GoalBounds()
    wiring: PerceptionWiring = PerceptionWiring()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> 'PerceptionConfig':
        return cls(
            image=ModelImageConfig(max_image_side_px=int(params['max_image_side_px']),
                                   resize_method=str(params['resize_method']),
                                   jpeg_quality=int(params['jpeg_quality']),
                                   center_crop_area_fraction=float(params['center_crop_area_fraction'])),
            intake=IntakeConfig(min_period_s=float(params['min_period_s']),
                                max_frame_age_s=float(params['max_frame_age_s'])),
            goals=GoalBounds(default_max_steps=int(params['goal_default_max_steps']),
                             default_timeout_s=float(params['goal_default_timeout_s'])),
            wiring=PerceptionWiring(use_wrist_image=bool(params['use_wrist_image']),
                                    use_aligned_depth=bool(params['use_aligned_depth']),
                                    sync_tolerance_s=float(params['sync_tolerance_s']),
                                    publish_depth_image=bool(params['publish_depth_image']),
                                    depth_decoder_path=str(params['depth_decoder_path'])))


@dataclass(frozen=True)
class Query:
    """A query to run now: the frame, the instruction, and the goal it belongs to (None: the topic's)."""

    frame: Any
    instruction: str
    goal: Optional[GoalRun]


class PerceptionCore:
    """Which query runs next: a running goal's (one at a time, up to its steps) or else the instruction
    topic's, on the newest frame within the rate limit. A goal replaces the topic's instruction: when it
    ends nothing runs until the next instruction. A bad instruction clears the previous one (never keep
    acting on it). Counts: ``superseded`` and ``too_old`` frames (the intake)."""

    def __init__(self, config: PerceptionConfig = PerceptionConfig()):
        self.config = config
        self.intake = FrameIntake(config.intake)
        self.goals = GoalRuns(config.goals, on_start=self._forget_instruction)
        self.instruction = ''

    def _forget_instruction(self) -> None:
        self.instruction = ''

    def set_instruction(self, text: str) -> str:
        """Act on ``text`` from now on (normalised); ValueError (and no instruction) when it is unusable."""
        try:
            self.instruction = normalize_instruction(text)
        except ValueError:
            self.instruction = ''
            raise
        return self.instruction

    def offer_frame(self, frame: Any, now_s: float) -> bool:
        """Keep ``frame`` as the newest; True when it superseded an unused one (a dropped input)."""
        return self.intake.offer(frame, now_s)

    def next_query(self, now_s: float) -> Tuple[Optional[Query], Admission]:
        """The query to start now (None: nothing), and the intake's decision (FRAME_TOO_OLD: a frame was
        dropped)."""
        goal = self.goals.current
        if goal is not None:
            if not goal.may_start():
                return None, Admission.NO_INSTRUCTION
            instruction = goal.spec.instruction
        else:
            instruction = self.instruction
        taken = self.intake.take(now_s, has_instruction=bool(instruction))
        if taken.admission is not Admission.RUN:
            return None, taken.admission
        return Query(taken.frame, instruction, goal), taken.admission

    def model_image(self, rgb: np.ndarray):
        return model_image(rgb, self.config.image)

    def follow(self, config: PerceptionConfig) -> None:
        """Take new model-image and goal settings (parameters set while running); the intake and the wiring
        keep theirs (read at configure)."""
        self.config = PerceptionConfig(config.image, self.config.intake, config.goals, self.config.wiring)
        self.goals.bounds = config.goals

    def reset(self, reason: str = 'the perception node was cleaned up') -> None:
        """Forget frames and the rate limit's history; a running goal fails with ``reason``."""
        self.intake.reset()
        self.goals.fail_current(reason)
