"""A simulated Franka Panda on a table (robosuite 1.5 "Lift" scene, MuJoCo 3.3), ROS-free.

The scene (table, red cube, Panda with its parallel gripper on a pedestal) is built by robosuite; the
simulation is then stepped directly on MuJoCo, without robosuite's controllers:

- **Arm**: a joint-space computed-torque PD at every physics step (default 2 ms), the way a
  position-controlled arm behaves: ``tau = M(q) (kp (q* - q) + kd (qd* - qd)) + bias(q, qd)``,
  clipped to the actuators' torque limits (80 N m on joints 1-5, 12 N m on joints 6-7, as in
  the model). The setpoint ``(q*, qd*)`` comes from a :class:`JointTrajectoryFollower` sampled at every
  physics step, clamped to the joint limits; with the default gains (natural frequency 30 rad/s,
  critically damped) the arm lags a linear trajectory by < 10 mrad (at its velocity steps) and
  settles on its last point to < 0.2 mrad. Air drag is off (see :class:`PandaSim`).
- **Gripper**: MuJoCo position servos on the two finger slides (force-limited); the command is the
  opening of each finger in metres, 0 (closed) .. 0.04 (open).
- **Task** (``lift``): the cube is placed at every :meth:`PandaSim.reset` from a seed
  (:class:`~.task.CubeRandomization`: +-``cube_xy_range_m`` around the table's centre, yaw in
  +-``cube_yaw_range_rad``; defaults +-0.10 m and +-pi, wider than robosuite's own +-0.03 m), resting on the
  table top; :meth:`PandaSim.cube_pose` is what :class:`~.task.LiftSuccess` judges and
  :meth:`PandaSim.robosuite_lift_success` is robosuite's own rule on the same state (the reference).
- **Scene** (``SimConfig.scene``): ``lift`` (default; robosuite 1.5.2's Lift, built here) or ``libero``: one
  LIBERO task (suite, task id, official initial state), built in LIBERO's own environment and loaded here as
  compiled MJCF (:mod:`.libero_task`); the same arm, controllers and cameras, LIBERO's objects and views.
- **Camera**: one fixed camera rendered offscreen (OSMesa on the CPU by default) into RGB and metric
  depth along the optical axis (REP 118 32FC1 metres; from a flat-shaded pass, exact to ~1e-6 m),
  with pinhole intrinsics from its vertical field of view (square pixels, centred principal point). The default camera ``workspace`` is added to the scene, attached to the arm's base,
  looking at the table in front of the arm from ``camera_position_m`` towards ``camera_target_m``.
  robosuite's own cameras (``agentview``, ``frontview``, ``sideview``, ``birdview``,
  ``robot0_eye_in_hand``) can be chosen instead (in the ``libero`` scene only the scene's cameras exist;
  LIBERO's evaluator uses ``agentview``). A second camera (``wrist_camera``, e.g. ``robot0_eye_in_hand``)
  renders RGB alongside.

Every pose is expressed in the arm's base frame ``panda_link0`` (robosuite's ``robot0_link0`` body),
never in MuJoCo's world frame. robosuite's link frames are Franka's (checked by a test against the
suite's URDF); the hand and TCP are computed from link 7 with Franka's flange constants
(:mod:`.franka`), so they agree with ``robot_description`` (robosuite's hand body sits 0.5 mm lower).

Rendering uses the OpenGL backend named by ``MUJOCO_GL``: this module sets ``MUJOCO_GL=osmesa`` and
``PYOPENGL_PLATFORM=osmesa`` unless they are already set (``egl`` is the choice on a GPU machine), and
creates its context with that backend's class whatever the order of imports. Not thread-safe: use
one instance from one thread at a time (the GL context is made current on every render).

Rendering is single-sample (no anti-aliasing) by default: that halves the CPU render time and keeps
depth and segmentation edges exact.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

# The OpenGL backend: OSMesa (software, CPU) unless MUJOCO_GL names another (egl on a GPU machine).
_GL_BACKEND = os.environ.setdefault('MUJOCO_GL', 'osmesa').strip().lower()
if _GL_BACKEND in ('osmesa', 'egl'):
    os.environ.setdefault('PYOPENGL_PLATFORM', _GL_BACKEND)

import numpy as np  # noqa: E402

from molmoact_ros.robot.geometry import CameraIntrinsics  # noqa: E402

from .franka import (ARM_JOINT_NAMES, BASE_FRAME, FINGER_MAX_M,  # noqa: E402
                     JOINT_NAMES, OPTICAL_FROM_MUJOCO_CAMERA, READY_POSITIONS_RAD, TCP_FRAME, Pose,
                     hand_to_tcp, link7_to_hand, rotation_to_quaternion_xyzw, rotation_z)
from .libero_task import LiberoTaskSpec, load_task  # noqa: E402
from .task import CubePlacement, CubeRandomization, ObjectPose, check_seed  # noqa: E402
from .trajectory import JointTrajectoryCommand, JointTrajectoryFollower, Setpoint  # noqa: E402

__all__ = ['SimConfig', 'CameraFrame', 'JointStateSample', 'PandaSim', 'WORKSPACE_CAMERA',
           'ROBOSUITE_CAMERAS', 'SCENES', 'LIFT_CUBE_BODY', 'LIFT_OBJECT']

#: The camera this module adds to the scene (attached to the arm's base).
WORKSPACE_CAMERA = 'workspace'
#: Cameras robosuite's Lift scene has.
ROBOSUITE_CAMERAS = ('agentview', 'frontview', 'sideview', 'birdview', 'robot0_eye_in_hand')
#: The scenes: robosuite 1.5.2's Lift (built here), a LIBERO task (exported from LIBERO's environment).
SCENES = ('lift', 'libero')
#: The lift scene's cube: robosuite's body, and the name it has in TaskState.
LIFT_CUBE_BODY = 'cube_main'
LIFT_OBJECT = 'cube'
# robosuite draws the cube's size (half sizes 0.020-0.022 m) from the environment's generator when it builds
# the scene: built with a fixed seed, the cube is the same in every process (half sizes 21.3 x 20.5 x
# 20.1 mm), and an episode's scene depends on the episode's seed only.
_LIFT_BUILD_SEED = 0

# robosuite's names in its Panda model (robot 0, its default gripper).
_RS_BASE_BODY = 'robot0_link0'
_RS_LINK7_BODY = 'robot0_link7'
_RS_ARM_JOINTS = tuple(f'robot0_joint{i}' for i in range(1, 8))
_RS_ARM_ACTUATORS = tuple(f'robot0_torq_j{i}' for i in range(1, 8))
_RS_FINGER_JOINTS = ('gripper0_right_finger_joint1', 'gripper0_right_finger_joint2')
_RS_FINGER_ACTUATORS = ('gripper0_right_gripper_finger_joint1', 'gripper0_right_gripper_finger_joint2')
# robosuite 1.4 (LIBERO's) names its Panda gripper's joints without the arm side.
_RS14_FINGER_JOINTS = ('gripper0_finger_joint1', 'gripper0_finger_joint2')
_RS14_FINGER_ACTUATORS = ('gripper0_gripper_finger_joint1', 'gripper0_gripper_finger_joint2')
_RS_FINGER_SIGNS = (1.0, -1.0)  # robosuite's second finger slides along -y: Franka's joint 2 = -q

# robosuite's notices at import and make time that say nothing about this use (no private macro file,
# optional robot models, mink IK for humanoids, controller config path).
_QUIET = ('private macro file', 'setup_macros.py', 'robosuite_models', 'mink-based whole-body IK',
          'Loading controller configuration')


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(q in msg for q in _QUIET)


logging.getLogger('robosuite_logs').addFilter(_QuietFilter())

import mujoco  # noqa: E402

# The context class of the chosen backend, named explicitly: mujoco.GLContext is fixed when mujoco is
# first imported, which may have happened before this module set MUJOCO_GL.
_GL_HELP = ('CPU rendering needs the OSMesa library (Debian/Ubuntu: apt-get install libosmesa6; '
            'scripts/setup.sh installs it when run as root); a GPU machine can use MUJOCO_GL=egl')
try:
    if _GL_BACKEND == 'osmesa':
        from mujoco.osmesa import GLContext as _GLContext  # noqa: E402
    elif _GL_BACKEND == 'egl':
        from mujoco.egl import GLContext as _GLContext  # noqa: E402
    else:
        _GLContext = mujoco.GLContext
except Exception as e:  # the library is missing or PyOpenGL was set up for another platform
    raise ImportError(f'MuJoCo rendering backend {_GL_BACKEND!r} unavailable ({e}). {_GL_HELP}') from e
import robosuite  # noqa: E402,F401  (registers environments)
from robosuite.environments.manipulation.lift import Lift  # noqa: E402
from robosuite.utils.mjcf_utils import find_elements, new_element  # noqa: E402


@dataclass(frozen=True)
class SimConfig:
    """Settings of the simulated arm. Units in names; poses in the base frame ``panda_link0``."""

    image_width_px: int = 320
    image_height_px: int = 240
    camera: str = WORKSPACE_CAMERA
    # Framed on the cube's reach (table centre +-0.10 m) and the gripper's path: the 4 cm cube ~14 px wide in the
    # 320x240 image (was ~8 px from (1.6, -0.5, 0.7) towards (0.35, 0, 0.15), too small for a small model's view).
    camera_position_m: Tuple[float, float, float] = (1.15, -0.35, 0.5)
    camera_target_m: Tuple[float, float, float] = (0.5, 0.0, 0.0)
    camera_fovy_deg: float = 45.0       # the workspace camera's vertical field of view
    camera_frame: str = 'sim_camera_color_optical_frame'
    seed: int = 0                       # cube placement of the first episode (lift)
    # lift: the cube's seeded placement around the table's centre (robosuite's own Lift: +-0.03 m, any yaw)
    cube_xy_range_m: float = 0.10
    cube_yaw_range_rad: float = math.pi
    position_gain_per_s2: float = 900.0  # kp: (natural frequency)^2
    velocity_gain_per_s: float = 60.0    # kd: 2 * zeta * natural frequency
    initial_positions_rad: Tuple[float, ...] = READY_POSITIONS_RAD
    render_reflections: bool = False     # the floor/table reflection pass doubles CPU render time
    render_shadows: bool = True
    # Multisample anti-aliasing of the RGB pass. Off by default: with software rendering 4x doubles
    # the cost, and blended edge pixels would also blur the depth / segmentation pass at object borders.
    render_multisamples: int = 0
    scene: str = 'lift'
    libero: LiberoTaskSpec = LiberoTaskSpec()  # the task of the libero scene
    libero_python: str = ''             # LIBERO's interpreter ('' : found by libero_task.find_libero_python)
    wrist_camera: str = ''              # a second camera rendered (RGB) with the first; '' : none

    def __post_init__(self) -> None:
        if self.scene not in SCENES:
            raise ValueError(f'scene must be one of {SCENES}, got {self.scene!r}')
        if self.scene == 'libero' and self.camera == WORKSPACE_CAMERA:
            raise ValueError('the libero scene has no workspace camera: choose one of its cameras (LIBERO\'s '
                             'evaluator renders agentview)')
        if not isinstance(self.libero, LiberoTaskSpec):
            raise ValueError(f'libero must be a LiberoTaskSpec, got {self.libero!r}')
        if self.wrist_camera and self.wrist_camera == WORKSPACE_CAMERA:
            raise ValueError('wrist_camera must name one of the scene\'s own cameras')
        for name in ('image_width_px', 'image_height_px'):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or not 16 <= int(v) <= 4096:
                raise ValueError(f'{name} must be an integer in [16, 4096], got {v!r}')
        for name in ('camera_position_m', 'camera_target_m'):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (3,) or not np.all(np.isfinite(v)):
                raise ValueError(f'{name} must be 3 finite numbers, got {getattr(self, name)!r}')
        if np.linalg.norm(np.subtract(self.camera_target_m, self.camera_position_m)) < 1e-3:
            raise ValueError('camera_target_m must differ from camera_position_m')
        if not 1.0 <= float(self.camera_fovy_deg) <= 170.0:
            raise ValueError(f'camera_fovy_deg must be in [1, 170], got {self.camera_fovy_deg}')
        if not (self.position_gain_per_s2 > 0 and self.velocity_gain_per_s >= 0):
            raise ValueError('position_gain_per_s2 must be > 0 and velocity_gain_per_s >= 0')
        if len(self.initial_positions_rad) != len(ARM_JOINT_NAMES):
            raise ValueError(f'initial_positions_rad needs {len(ARM_JOINT_NAMES)} values')
        if not self.camera_frame:
            raise ValueError('camera_frame must be a frame name')
        CubeRandomization(self.cube_xy_range_m, self.cube_yaw_range_rad)  # ValueError when out of range
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got {self.seed!r}')
        if self.render_multisamples not in (0, 2, 4, 8):
            raise ValueError(f'render_multisamples must be 0, 2, 4 or 8, got {self.render_multisamples!r}')


@dataclass(frozen=True)
class CameraFrame:
    """One rendered view: ``rgb`` (H, W, 3) uint8, ``depth_m`` (H, W) float32 metres along the optical
    axis (+inf where nothing was hit), rendered at simulation time ``time_s``."""

    rgb: np.ndarray
    depth_m: np.ndarray
    time_s: float


@dataclass(frozen=True)
class JointStateSample:
    """``sensor_msgs/JointState`` content: names (arm then fingers), rad / m, rad/s / m/s, N m / N."""

    names: Tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    efforts: np.ndarray
    time_s: float


def _look_at_rotation(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (columns = axes in the parent) of a MuJoCo camera at ``position`` looking at ``target``
    (camera -z forward, y as close to the parent's +z as the view allows)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0])
    if abs(float(forward @ up)) > 0.999:  # looking straight up or down: pick x as "up"
        up = np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    cam_y = np.cross(-forward, right)
    return np.column_stack([right, cam_y, -forward])


class _SimLift(Lift):
    """robosuite's Lift scene plus a camera attached to the arm's base (when asked for)."""

    def __init__(self, *args, extra_camera: Optional[dict] = None, **kwargs):
        self._extra_camera = extra_camera
        super().__init__(*args, **kwargs)

    def _load_model(self):
        super()._load_model()
        if self._extra_camera is None:
            return
        base = find_elements(root=self.model.worldbody, tags='body', attribs={'name': _RS_BASE_BODY},
                             return_first=True)
        if base is None:
            raise RuntimeError(f'robosuite model has no body {_RS_BASE_BODY!r}')
        base.append(new_element(tag='camera', **self._extra_camera))


def _require_id(model, objtype, name: str) -> int:
    i = mujoco.mj_name2id(model, objtype, name)
    if i < 0:
        raise RuntimeError(f'the simulated scene has no {objtype.name[6:].lower()} named {name!r}')
    return i


class _OffscreenCamera:
    """Offscreen RGB + depth (+ segmentation) rendering of one fixed MuJoCo camera."""

    def __init__(self, model, camera_id: int, width: int, height: int, *, reflections: bool,
                 shadows: bool, multisamples: int):
        self._model = model
        self.width, self.height = width, height
        # The offscreen buffer must hold the image.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        model.vis.quality.offsamples = int(multisamples)
        self._gl = _GLContext(width, height)
        self._gl.make_current()
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        # Read depth as 1 at the near plane .. 0 at the far plane (MuJoCo renders reversed-Z): float
        # precision then stays good far from the camera.
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=10000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(reflections)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
        self._option = mujoco.MjvOption()
        self._option.geomgroup[0] = 0  # robosuite: group 0 = collision geoms, group 1 = visual meshes
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._perturb = mujoco.MjvPerturb()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._depth = np.empty((height, width), dtype=np.float32)
        extent = float(model.stat.extent)
        self.near_m = float(model.vis.map.znear) * extent
        self.far_m = float(model.vis.map.zfar) * extent

    def _draw(self, data, segmentation: bool) -> None:
        self._gl.make_current()
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = int(segmentation)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = int(segmentation)
        mujoco.mjv_updateScene(self._model, data, self._option, self._perturb, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._con)

    def render(self, data, *, rgb: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
        """Returns (rgb or None, depth in metres, geom ids): a shaded pass for RGB, then a flat-colour
        segmentation pass whose depth buffer gives the depth. (The shaded pass's depth lies a few
        millimetres in front of the true surfaces; the segmentation pass's is exact, checked by a test
        against ray-plane intersections with the table.)"""
        out_rgb = None
        if rgb:
            self._draw(data, segmentation=False)
            mujoco.mjr_readPixels(self._rgb, None, self._rect, self._con)
            out_rgb = np.ascontiguousarray(self._rgb[::-1])  # OpenGL rows run bottom-up
        self._draw(data, segmentation=True)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, self._con)
        return out_rgb, self._depth_m(self._depth[::-1]), self._geom_ids(self._rgb[::-1])

    def render_rgb(self, data) -> np.ndarray:
        """The shaded pass only (no depth / segmentation pass): RGB, top row first."""
        self._draw(data, segmentation=False)
        mujoco.mjr_readPixels(self._rgb, None, self._rect, self._con)
        return np.ascontiguousarray(self._rgb[::-1])

    def _depth_m(self, z_buffer: np.ndarray) -> np.ndarray:
        # Depth is read reversed (readDepthMap ZEROFAR): 1 at the near plane, 0 at the far plane and
        # where nothing was drawn. Inverting the perspective projection gives the distance along the
        # optical axis, D = far * near / (z * (far - near) + near) = d / (z + c) below. The projection
        # MuJoCo hands to OpenGL holds float32 coefficients; rounding c and d the same way brings D
        # from ~5e-6 m to ~3e-7 m of the true distance.
        z = z_buffer.astype(np.float64)
        n, f = np.float32(self.near_m), np.float32(self.far_m)
        c_gl = -(f + n) / (f - n)                    # OpenGL frustum matrix entries (float32)
        d_gl = -(np.float32(2.0) * f * n) / (f - n)
        c = float(np.float32(-0.5) * c_gl - np.float32(0.5))   # the same, reversed-Z
        d = float(np.float32(-0.5) * d_gl)
        depth = d / (z + c)
        depth[z <= 0.0] = np.inf
        return depth.astype(np.float32)

    def _geom_ids(self, seg_rgb: np.ndarray) -> np.ndarray:
        """(H, W) int32 MuJoCo geom id per pixel of a segmentation render, -1 where no geom."""
        img = seg_rgb.astype(np.int64)
        code = img[..., 0] + (img[..., 1] << 8) + (img[..., 2] << 16)  # scene segid + 1, 0 = none
        lut = np.full(self._scene.ngeom + 1, -1, dtype=np.int32)
        for k in range(self._scene.ngeom):
            g = self._scene.geoms[k]
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = g.objid
        code[(code < 0) | (code > self._scene.ngeom)] = 0
        return lut[code]

    def close(self) -> None:
        if self._con is not None:
            self._gl.make_current()
            self._con.free()
            self._con = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None


class PandaSim:
    """The simulated arm: build, reset, command (trajectories, gripper), step, observe, render."""

    def __init__(self, config: SimConfig = SimConfig(), log=None):
        """``log``: a callable for progress notes (the libero scene's first export takes tens of seconds)."""
        self.config = config
        self._env = None
        self.libero_task = None  # the ExportedTask of the libero scene
        if config.scene == 'libero':
            # Exported from LIBERO's environment (cached); LiberoUnavailable / LiberoExportError otherwise.
            self.libero_task = load_task(config.libero, config.libero_python, log=log)
            self._model = mujoco.MjModel.from_xml_string(self.libero_task.xml)
            self._data = mujoco.MjData(self._model)
            finger_joints, finger_actuators = _RS14_FINGER_JOINTS, _RS14_FINGER_ACTUATORS
        else:
            extra = None
            if config.camera == WORKSPACE_CAMERA:
                pos = np.asarray(config.camera_position_m, dtype=np.float64)
                rot = _look_at_rotation(pos, np.asarray(config.camera_target_m, dtype=np.float64))
                quat = np.empty(4)
                mujoco.mju_mat2Quat(quat, rot.reshape(-1))
                extra = dict(name=WORKSPACE_CAMERA, pos=pos, quat=quat, fovy=float(config.camera_fovy_deg),
                             mode='fixed')
            self._env = _SimLift(
                robots='Panda', extra_camera=extra, has_renderer=False, has_offscreen_renderer=False,
                use_camera_obs=False, use_object_obs=True, hard_reset=False, ignore_done=True,
                initialization_noise=None, seed=_LIFT_BUILD_SEED, horizon=1_000_000)
            self._model = self._env.sim.model._model
            self._data = self._env.sim.data._data
            finger_joints, finger_actuators = _RS_FINGER_JOINTS, _RS_FINGER_ACTUATORS
        m = self._model
        # No air: robosuite's scene sets air density and viscosity, and MuJoCo's inertia-box drag model
        # then turns the gripper's bodies (10 g fingertips with 0.01 kg m^2 placeholder inertias, i.e.
        # 2.5 m "boxes") into ~12 N m of drag on joint 7 at 1.5 rad/s.
        m.opt.density = 0.0
        m.opt.viscosity = 0.0
        J, A, B = mujoco.mjtObj.mjOBJ_JOINT, mujoco.mjtObj.mjOBJ_ACTUATOR, mujoco.mjtObj.mjOBJ_BODY
        arm_j = [_require_id(m, J, n) for n in _RS_ARM_JOINTS]
        fin_j = [_require_id(m, J, n) for n in finger_joints]
        self._arm_qadr = np.array([m.jnt_qposadr[j] for j in arm_j])
        self._arm_dadr = np.array([m.jnt_dofadr[j] for j in arm_j])
        self._fin_qadr = np.array([m.jnt_qposadr[j] for j in fin_j])
        self._fin_dadr = np.array([m.jnt_dofadr[j] for j in fin_j])
        self._arm_act = np.array([_require_id(m, A, n) for n in _RS_ARM_ACTUATORS])
        self._fin_act = np.array([_require_id(m, A, n) for n in finger_actuators])
        self._arm_lower = m.jnt_range[arm_j, 0].copy()
        self._arm_upper = m.jnt_range[arm_j, 1].copy()
        self._torque_lo = m.actuator_ctrlrange[self._arm_act, 0].copy()
        self._torque_hi = m.actuator_ctrlrange[self._arm_act, 1].copy()
        self._base_body = _require_id(m, B, _RS_BASE_BODY)
        self._link7_body = _require_id(m, B, _RS_LINK7_BODY)
        self.cube_randomization = CubeRandomization(config.cube_xy_range_m, config.cube_yaw_range_rad)
        # The seed of the current episode: lift, its cube placement; libero, its official initial state.
        self.seed = int(config.seed) if self.libero_task is None else self.libero_task.check_init_state(
            int(config.libero.init_state))
        self.cube_placement: Optional[CubePlacement] = None
        if self._env is not None:  # lift: the cube (a free body) and the table top it rests on
            self._cube_body = _require_id(m, B, LIFT_CUBE_BODY)
            cube_joint = int(m.body_jntadr[self._cube_body])
            if cube_joint < 0 or m.jnt_type[cube_joint] != mujoco.mjtJoint.mjJNT_FREE:
                raise RuntimeError(f'the cube {LIFT_CUBE_BODY!r} is not a free body')
            self._cube_qadr = int(m.jnt_qposadr[cube_joint])
            self._cube_dadr = int(m.jnt_dofadr[cube_joint])
            geoms = [g for g in np.flatnonzero(m.geom_bodyid == self._cube_body)
                     if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX and m.geom_contype[g]]
            if not geoms:
                raise RuntimeError(f'the cube {LIFT_CUBE_BODY!r} has no colliding box geom')
            self.cube_half_size_m = tuple(float(v) for v in m.geom_size[geoms[0]])
            self._table_top_site = _require_id(m, mujoco.mjtObj.mjOBJ_SITE, 'table_top')
        cam_ids = []
        for cam_name in (config.camera, config.wrist_camera):
            if not cam_name:
                continue
            cam_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam_name)
            if cam_id < 0:
                names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(m.ncam)]
                self._close_env()
                raise ValueError(f'unknown camera {cam_name!r}; the {config.scene} scene has {names}')
            cam_ids.append(cam_id)
        cam_id = cam_ids[0]
        self._cam_id = cam_id
        if self.libero_task is not None:  # the initial state's settled arm pose (reset sets it per state)
            qpos = self.libero_task.initial_state(self.seed)['qpos']
            self._initial_arm_rad = tuple(float(v) for v in qpos[self._arm_qadr])
        else:
            self._initial_arm_rad = tuple(config.initial_positions_rad)
        self._acc = np.zeros(m.nv)
        self._macc = np.zeros(m.nv)
        self._gripper_m = FINGER_MAX_M
        self._follower = JointTrajectoryFollower(ARM_JOINT_NAMES, self._initial_arm_rad)
        self._camera = None
        self._wrist = None
        try:
            self._camera = _OffscreenCamera(m, cam_id, config.image_width_px, config.image_height_px,
                                            reflections=config.render_reflections,
                                            shadows=config.render_shadows,
                                            multisamples=config.render_multisamples)
            if config.wrist_camera:
                self._wrist = _OffscreenCamera(m, cam_ids[1], config.image_width_px, config.image_height_px,
                                               reflections=config.render_reflections,
                                               shadows=config.render_shadows,
                                               multisamples=config.render_multisamples)
        except Exception as e:
            if self._camera is not None:
                self._camera.close()
            self._close_env()
            raise RuntimeError(f'offscreen rendering with MUJOCO_GL={_GL_BACKEND} failed: {e}. {_GL_HELP}') from e
        fovy = math.radians(float(m.cam_fovy[cam_id]))
        f = (config.image_height_px / 2.0) / math.tan(fovy / 2.0)
        # Square pixels; the principal point is the image centre (pixel centres at integers).
        self.intrinsics = CameraIntrinsics(fx=f, fy=f, cx=(config.image_width_px - 1) / 2.0,
                                           cy=(config.image_height_px - 1) / 2.0,
                                           width=config.image_width_px, height=config.image_height_px)
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    def reset(self, seed: Optional[int] = None) -> None:
        """Put the arm at its initial pose (lift: ``initial_positions_rad``) with the gripper open, place the
        objects and set the simulation time to 0; any trajectory is dropped.

        ``lift``: the cube is placed from ``seed`` (default: the current episode's, at first
        ``SimConfig.seed``) by :class:`~.task.CubeRandomization` (``cube_xy_range_m`` around the table's centre,
        ``cube_yaw_range_rad``), resting on the table top; the same seed gives the same scene.

        ``libero``: ``seed`` is the task's official initial state (default: the current episode's, at first
        ``LiberoTaskSpec.init_state``): the whole MuJoCo state becomes the one LIBERO's environment holds after
        the released evaluator's ``reset()``, ``set_init_state`` of that state and its no-op wait steps
        (objects settled, the arm where LIBERO's controller left it: that pose is then the one held), as the
        export stored it (no LIBERO call: ~1 ms). ValueError for a state the task does not have (nothing
        changes)."""
        m, d = self._model, self._data
        if self.libero_task is not None:
            seed = self.seed if seed is None else self.libero_task.check_init_state(seed)
            st = self.libero_task.initial_state(seed)
            mujoco.mj_resetData(m, d)
            d.qpos[:], d.qvel[:] = st['qpos'], st['qvel']
            if m.na:
                d.act[:] = st['act']
            if m.nmocap:
                d.mocap_pos[:], d.mocap_quat[:] = st['mocap_pos'], st['mocap_quat']
            self.seed = seed
            self._initial_arm_rad = tuple(float(v) for v in st['qpos'][self._arm_qadr])
        else:
            seed = self.seed if seed is None else check_seed(seed)
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
            self._env.reset()
            d.qpos[self._arm_qadr] = self._initial_arm_rad
            d.qvel[self._arm_dadr] = 0.0
            d.qpos[self._fin_qadr] = np.multiply(_RS_FINGER_SIGNS, FINGER_MAX_M)
            d.qvel[self._fin_dadr] = 0.0
            mujoco.mj_forward(m, d)
            self.seed = seed
            self.place_cube(self.cube_randomization.sample(seed))
        d.ctrl[:] = 0.0
        d.time = 0.0
        mujoco.mj_forward(m, d)
        self._follower.hold(self._initial_arm_rad)
        self.set_gripper(FINGER_MAX_M)

    # ------------------------------------------------------------------ the lift scene's cube

    @property
    def table_top_m(self) -> np.ndarray:
        """lift: the centre of the table's top surface in the base frame."""
        self._require_lift()
        return self.site_position_m('table_top')

    def place_cube(self, placement: CubePlacement) -> None:
        """lift: put the cube at rest on the table top, ``placement`` from the table's centre (base frame x, y
        and yaw about the vertical), with zero velocity. The arm and the time are left as they are."""
        self._require_lift()
        top = self.table_top_m
        base_pose = rotation_z(float(placement.yaw_rad))
        base_pose[:3, 3] = (top[0] + placement.dx_m, top[1] + placement.dy_m, top[2] + self.cube_half_size_m[2])
        self.set_cube_pose(base_pose)
        self.cube_placement = placement

    def set_cube_pose(self, pose: np.ndarray) -> None:
        """lift: put the cube's centre at ``pose`` (4x4, base frame), at rest (for tests and scripted states)."""
        self._require_lift()
        m, d = self._model, self._data
        world = np.linalg.inv(self._base_from_world()) @ np.asarray(pose, dtype=np.float64)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(world[:3, :3]).reshape(-1))
        a, v = self._cube_qadr, self._cube_dadr
        d.qpos[a:a + 3] = world[:3, 3]
        d.qpos[a + 3:a + 7] = quat
        d.qvel[v:v + 6] = 0.0
        mujoco.mj_forward(m, d)

    def cube_pose(self) -> ObjectPose:
        """lift: the cube's pose (its centre) in the base frame, named ``cube``."""
        self._require_lift()
        t = self.body_pose(LIFT_CUBE_BODY)
        return ObjectPose(LIFT_OBJECT, tuple(float(v) for v in t[:3, 3]), rotation_to_quaternion_xyzw(t[:3, :3]))

    def robosuite_lift_success(self) -> bool:
        """lift: robosuite's own success check of its Lift task on the current state (the reference)."""
        self._require_lift()
        return bool(self._env._check_success())

    def _require_lift(self) -> None:
        if self._env is None:
            raise RuntimeError('only the lift scene has the cube')

    def _close_env(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def close(self) -> None:
        for cam in (self._camera, self._wrist):
            if cam is not None:
                cam.close()
        self._camera = self._wrist = None
        self._close_env()

    def __enter__(self) -> PandaSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def model(self):
        """The MuJoCo model (read it; changing it changes the simulation)."""
        return self._model

    @property
    def data(self):
        return self._data

    @property
    def time_s(self) -> float:
        """Simulation time since the last reset."""
        return float(self._data.time)

    @property
    def physics_step_s(self) -> float:
        return float(self._model.opt.timestep)

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return JOINT_NAMES

    @property
    def arm_limits_rad(self) -> Tuple[np.ndarray, np.ndarray]:
        """Lower and upper position limits of panda_joint1..7."""
        return self._arm_lower.copy(), self._arm_upper.copy()

    @property
    def arm_positions_rad(self) -> np.ndarray:
        return self._data.qpos[self._arm_qadr].copy()

    @property
    def gripper_command_m(self) -> float:
        return self._gripper_m

    @property
    def follower(self) -> JointTrajectoryFollower:
        return self._follower

    # ------------------------------------------------------------------ commands

    def command_trajectory(self, command: JointTrajectoryCommand, clock_s: Optional[float] = None) -> int:
        """Hand a trajectory to the arm's follower (``clock_s``: the controller clock now; default the
        simulation time). Returns the points kept; raises TrajectoryRejected with the reason."""
        return self._follower.accept(command, self.time_s if clock_s is None else clock_s)

    def set_gripper(self, position_m: float) -> float:
        """Command each finger's opening in metres (0 closed .. 0.04 open; clamped). Returns the value
        used. NaN is refused (ValueError)."""
        v = float(position_m)
        if not math.isfinite(v):
            raise ValueError(f'gripper position must be finite, got {position_m!r}')
        v = min(max(v, 0.0), FINGER_MAX_M)
        self._gripper_m = v
        self._data.ctrl[self._fin_act] = np.multiply(_RS_FINGER_SIGNS, v)
        return v

    def step(self, n_steps: int = 1, clock_s: Optional[float] = None) -> Setpoint:
        """Advance ``n_steps`` physics steps. The follower is sampled at ``clock_s + k * dt`` (its clock;
        default: the simulation time) before step k. Returns the last setpoint used."""
        m, d = self._model, self._data
        dt = self.physics_step_s
        t0 = self.time_s if clock_s is None else float(clock_s)
        kp, kd = self.config.position_gain_per_s2, self.config.velocity_gain_per_s
        sp = None
        for k in range(int(n_steps)):
            mujoco.mj_step1(m, d)
            sp = self._follower.sample(t0 + k * dt)
            q_ref = np.clip(sp.positions_rad, self._arm_lower, self._arm_upper)
            q = d.qpos[self._arm_qadr]
            qd = d.qvel[self._arm_dadr]
            self._acc[self._arm_dadr] = kp * (q_ref - q) + kd * (sp.velocities_rad_s - qd)
            mujoco.mj_mulM(m, d, self._macc, self._acc)
            tau = self._macc[self._arm_dadr] + d.qfrc_bias[self._arm_dadr]
            d.ctrl[self._arm_act] = np.clip(tau, self._torque_lo, self._torque_hi)
            mujoco.mj_step2(m, d)
        if sp is None:
            sp = self._follower.sample(t0)
        return sp

    def step_for(self, duration_s: float, clock_s: Optional[float] = None) -> int:
        """Advance by ``duration_s`` (rounded to whole physics steps); returns the steps taken."""
        n = max(0, int(round(float(duration_s) / self.physics_step_s)))
        self.step(n, clock_s)
        return n

    # ------------------------------------------------------------------ observations

    def joint_state(self) -> JointStateSample:
        d = self._data
        signs = np.asarray(_RS_FINGER_SIGNS)
        pos = np.concatenate([d.qpos[self._arm_qadr], d.qpos[self._fin_qadr] * signs])
        vel = np.concatenate([d.qvel[self._arm_dadr], d.qvel[self._fin_dadr] * signs])
        eff = np.concatenate([d.actuator_force[self._arm_act], d.actuator_force[self._fin_act] * signs])
        return JointStateSample(JOINT_NAMES, pos, vel, eff, self.time_s)

    def _world_pose(self, xpos, xmat) -> np.ndarray:
        t = np.eye(4)
        t[:3, :3] = np.asarray(xmat).reshape(3, 3)
        t[:3, 3] = xpos
        return t

    def _base_from_world(self) -> np.ndarray:
        d = self._data
        return np.linalg.inv(self._world_pose(d.xpos[self._base_body], d.xmat[self._base_body]))

    def link7_pose(self) -> np.ndarray:
        d = self._data
        return self._base_from_world() @ self._world_pose(d.xpos[self._link7_body], d.xmat[self._link7_body])

    def ee_pose(self) -> Pose:
        """``panda_link0`` -> ``panda_hand_tcp`` (the tool centre point between the fingertips)."""
        return Pose(BASE_FRAME, TCP_FRAME, self.link7_pose() @ link7_to_hand() @ hand_to_tcp())

    def camera_pose(self) -> Pose:
        """``panda_link0`` -> the camera's optical frame (z forward, x right, y down)."""
        d = self._data
        cam = self._world_pose(d.cam_xpos[self._cam_id], d.cam_xmat[self._cam_id])
        cam[:3, :3] = cam[:3, :3] @ OPTICAL_FROM_MUJOCO_CAMERA
        return Pose(BASE_FRAME, self.config.camera_frame, self._base_from_world() @ cam)

    def body_pose(self, body_name: str) -> np.ndarray:
        """A MuJoCo body's pose in the base frame (4x4)."""
        i = _require_id(self._model, mujoco.mjtObj.mjOBJ_BODY, body_name)
        d = self._data
        return self._base_from_world() @ self._world_pose(d.xpos[i], d.xmat[i])

    def site_position_m(self, site_name: str) -> np.ndarray:
        """A MuJoCo site's position in the base frame."""
        i = _require_id(self._model, mujoco.mjtObj.mjOBJ_SITE, site_name)
        p = np.append(self._data.site_xpos[i], 1.0)
        return (self._base_from_world() @ p)[:3]

    def render(self) -> CameraFrame:
        """RGB and metric depth of the configured camera at the current state."""
        if self._camera is None:
            raise RuntimeError('the simulator is closed')
        rgb, depth, _ = self._camera.render(self._data)
        return CameraFrame(rgb=rgb, depth_m=depth, time_s=self.time_s)

    @property
    def has_wrist_camera(self) -> bool:
        return self._wrist is not None

    def render_wrist(self) -> np.ndarray:
        """RGB (upright, H x W x 3 uint8) of ``wrist_camera`` at the current state."""
        if self._wrist is None:
            raise RuntimeError('no wrist_camera configured' if self._camera is not None else 'the simulator is closed')
        return self._wrist.render_rgb(self._data)

    def render_segmentation(self) -> np.ndarray:
        """(H, W) MuJoCo geom id seen at each pixel (-1: none): for tests and labelling."""
        if self._camera is None:
            raise RuntimeError('the simulator is closed')
        return self._camera.render(self._data, rgb=False)[2]

    def geom_ids_of_bodies(self, body_names: Sequence[str]) -> np.ndarray:
        """Ids of the geoms attached to the named bodies."""
        ids = [_require_id(self._model, mujoco.mjtObj.mjOBJ_BODY, b) for b in body_names]
        return np.flatnonzero(np.isin(self._model.geom_bodyid, ids))
