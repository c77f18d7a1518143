"""The simulated arm's scene options resolved to concrete settings, ROS-free (what ``sim_arm`` does with its
``scene``, ``camera``, ``wrist_camera``, ``image_width`` / ``image_height`` and ``image_orientation``).

- ``lift`` (default): the workspace camera, 320x240, no wrist camera, the fast CPU render settings.
- ``libero``: LIBERO's evaluator views: ``agentview`` and the wrist camera ``robot0_eye_in_hand`` at
  256x256, rendered as LIBERO renders them (4x multisampling, reflections, shadows: the rendered frame then
  matches the one LIBERO's own environment returns).

``image_orientation``: ``camera`` publishes the true camera view (top row first; CameraInfo, aligned depth
and TF describe it); ``libero_eval`` publishes what the released LIBERO evaluator feeds a checkpoint, the
view rotated 180 degrees from robosuite's OpenGL-order frame, i.e. mirrored left to right. A mirrored image
has no pinhole model with positive focal lengths, so in ``libero_eval`` no ``camera_info`` is published
and the depth image is mirrored alike (pixel-aligned with ``image``, but not for 3D use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .libero_task import AGENT_CAMERA, EVAL_RESOLUTION_PX, WRIST_CAMERA, libero_eval_view

__all__ = ['ORIENTATIONS', 'AUTO', 'SceneSettings', 'resolve_scene', 'orient']

ORIENTATIONS = ('camera', 'libero_eval')
AUTO = 'auto'
_LIFT_SIZE_PX = (320, 240)


@dataclass(frozen=True)
class SceneSettings:
    scene: str
    camera: str
    wrist_camera: str          # '' : none
    width_px: int
    height_px: int
    orientation: str
    render_reflections: bool
    render_multisamples: int
    publishes_camera_info: bool


def resolve_scene(scene: str, camera: str = AUTO, wrist_camera: str = AUTO, width_px: int = 0,
                  height_px: int = 0, orientation: str = 'camera') -> SceneSettings:
    """``auto`` / 0 replaced by the scene's defaults; ValueError for a combination that cannot work."""
    if scene not in ('lift', 'libero'):
        raise ValueError(f"scene must be 'lift' or 'libero', got {scene!r}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f'image_orientation must be one of {ORIENTATIONS}, got {orientation!r}')
    libero = scene == 'libero'
    if camera == AUTO:
        camera = AGENT_CAMERA if libero else 'workspace'
    if libero and camera == 'workspace':
        raise ValueError("the libero scene has no 'workspace' camera: use one of its own (LIBERO's evaluator "
                         "renders 'agentview')")
    if wrist_camera == AUTO:
        wrist_camera = WRIST_CAMERA if libero else ''
    if wrist_camera == 'workspace':
        raise ValueError("wrist_camera must be one of the scene's own cameras, not 'workspace'")
    if wrist_camera and wrist_camera == camera:
        raise ValueError(f'wrist_camera and camera are the same camera ({camera!r})')
    default_w, default_h = (EVAL_RESOLUTION_PX, EVAL_RESOLUTION_PX) if libero else _LIFT_SIZE_PX
    width_px = int(width_px) or default_w
    height_px = int(height_px) or default_h
    return SceneSettings(scene=scene, camera=camera, wrist_camera=wrist_camera, width_px=width_px,
                         height_px=height_px, orientation=orientation, render_reflections=libero,
                         render_multisamples=4 if libero else 0,
                         publishes_camera_info=orientation == 'camera')


def orient(image: Optional[np.ndarray], orientation: str) -> Optional[np.ndarray]:
    """An upright image (top row first) in the published orientation."""
    if image is None or orientation == 'camera':
        return image
    if orientation == 'libero_eval':
        return libero_eval_view(image)
    raise ValueError(f'image_orientation must be one of {ORIENTATIONS}, got {orientation!r}')
