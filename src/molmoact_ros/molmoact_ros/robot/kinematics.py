"""Arm kinematics from a URDF string (Pinocchio): FK of the end effector, damped-least-squares IK, limits.

ROS-free. Built from the XML a robot publishes as ``robot_description`` (or a file's text), so the sink
solves IK on exactly the model the controllers use.

Typical use (a command sink)::

    kin = ArmKinematics.from_urdf(urdf_xml, base_frame='panda_link0', ee_frame='panda_hand_tcp',
                                  joint_names=profile.joint_names)
    q = kin.joint_vector(joint_state.name, joint_state.position)   # reorder a JointState
    T_base_ee = kin.fk(q)                                           # 4x4, metres
    result = kin.ik(T_target, q)                                    # seeded from the current joints
    if result.converged:
        command(result.q)

Conventions
-----------
- Poses are 4x4 homogeneous transforms (numpy float64) of the end-effector frame expressed in the base
  frame (``T_base_ee``); translations in metres.
- ``joint_names`` selects the controlled joints, in the order of every joint vector this module takes
  or returns (the controller's order). Every other joint of the URDF (fingers, a second arm) is locked
  at ``locked_positions`` (default: 0 clipped into its limits). Only 1-DoF revolute and prismatic joints
  can be controlled (a URDF ``continuous`` joint has no position limits and is refused).
- Joint limits (:class:`JointLimits`) come from the URDF ``<limit>`` tags: positions in rad (m for
  prismatic joints), velocities in rad/s (m/s).

IK
--
:meth:`ArmKinematics.ik` is a damped-least-squares iteration on the 6-D pose error (position error
and rotation error, the rotation vector of ``R_target R^T``, both in the base frame's axes) with the
frame Jacobian in the same axes: ``dq = J^T (J J^T + lambda^2 I)^-1 e``. The damping is adapted
Levenberg-Marquardt style: a step that does not lower the error is rejected and lambda raised tenfold,
an accepted one lowers it again, so the error never grows from the seed. Each step is capped (``max_step_rad``) and the joints are clamped into
their position limits, so a solution never leaves them; when the target needs a joint beyond a limit
(or lies out of reach) the iteration stalls and reports ``converged=False`` with the remaining error.
``IkOptions.rotation_weight_m_per_rad`` trades orientation error against position error (metres per
radian), so an arm with fewer than six joints (the 5-DoF WidowX 250) can still get close in position
(``0`` solves position only).

IK backends
-----------
:class:`ArmKinematics` is the default :class:`IkSolver`. Where moveit_py is installed, :class:`MoveItPyIk`
solves with the planning group's kinematics plugin instead (``make_ik_solver`` / ``select_ik_backend``
pick it per the command sink's ``ik_backend`` parameter: ``auto`` | ``pinocchio`` | ``moveit_py``, falling
back to Pinocchio with the reason where moveit_py is absent or cannot be set up). FK, joint limits and the
safety clamps always use this module's Pinocchio model. The moveit_py path is UNVERIFIED on a real MoveIt
install (tested against a recording stand-in of the moveit_py API).

Timing: :class:`IkResult` carries ``solve_time_s`` (``time.perf_counter``); ``bench/ik_bench.py``
prints the figures (Panda, one action step seeded from the previous one: about 0.2 ms median, 2
iterations, on this project's shared 2-core CPU).
"""

from __future__ import annotations

import enum
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from .safety import JointLimits

try:
    import pinocchio as pin
except ImportError as error:  # pragma: no cover - setup.sh installs it (PyPI package `pin`)
    raise ImportError(
        'molmoact_ros.robot.kinematics needs Pinocchio: pip install pin (see requirements.txt)') from error

__all__ = [
    'KinematicsError',
    'JointLimits',
    'IkOptions',
    'IkResult',
    'ArmKinematics',
    'pose_error',
    'IkSolver',
    'IkBackend',
    'IkSelection',
    'select_ik_backend',
    'moveit_py_import_error',
    'MoveItPyIk',
    'make_ik_solver',
]


class KinematicsError(ValueError):
    """A URDF, frame or joint selection that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class IkOptions:
    """Settings of :meth:`ArmKinematics.ik`. Defaults suit a 7-DoF arm stepping a few cm per call."""

    #: Converged when the position error is below this (m).
    position_tolerance_m: float = 1e-4
    #: Converged when the rotation error angle is below this (rad).
    rotation_tolerance_rad: float = 1e-3
    #: Iteration cap.
    max_iterations: int = 100
    #: Damping lambda of the least-squares step (in the units of the weighted error).
    damping: float = 1e-3
    #: Largest change of any joint in one iteration (rad or m); bigger steps are scaled down.
    max_step_rad: float = 0.2
    #: Weight of the rotation error against the position error (m per rad); 0 solves position only.
    rotation_weight_m_per_rad: float = 1.0

    def __post_init__(self) -> None:
        for name in ('position_tolerance_m', 'rotation_tolerance_rad', 'damping', 'max_step_rad'):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f'IkOptions.{name} must be a positive number, got {value!r}')
        if not (np.isfinite(self.rotation_weight_m_per_rad) and self.rotation_weight_m_per_rad >= 0):
            raise ValueError('IkOptions.rotation_weight_m_per_rad must be >= 0, '
                             f'got {self.rotation_weight_m_per_rad!r}')
        if int(self.max_iterations) < 1:
            raise ValueError(f'IkOptions.max_iterations must be >= 1, got {self.max_iterations!r}')


@dataclass(frozen=True)
class IkResult:
    """Outcome of one IK solve. ``q`` is always within the joint position limits (even when not converged)."""

    q: np.ndarray
    converged: bool
    #: Remaining end-effector position error (m) and rotation error angle (rad) at ``q``.
    position_error_m: float
    rotation_error_rad: float
    iterations: int
    #: Wall time of the solve (s, ``time.perf_counter``).
    solve_time_s: float = field(default=0.0, compare=False)


def _as_pose(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f'{what} must be a 4x4 homogeneous transform, got shape {T.shape}')
    if not np.all(np.isfinite(T)):
        raise ValueError(f'{what} must be finite')
    return T


def pose_error(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(position distance in m, rotation angle in rad) between two 4x4 poses."""
    T_a = np.asarray(T_a, dtype=np.float64)
    T_b = np.asarray(T_b, dtype=np.float64)
    position = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    R = T_a[:3, :3].T @ T_b[:3, :3]
    cos_angle = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return position, float(np.arccos(cos_angle))


class ArmKinematics:
    """Forward and inverse kinematics of one kinematic chain of a URDF (see the module docstring)."""

    def __init__(self, model: 'pin.Model', *, base_frame: str, ee_frame: str,
                 joint_names: Sequence[str], options: IkOptions | None = None) -> None:
        """Use :meth:`from_urdf`; this takes an already reduced Pinocchio model."""
        self._model = model
        self._data = model.createData()
        self.options = options or IkOptions()
        for frame in (base_frame, ee_frame):
            if not model.existFrame(frame):
                names = sorted({f.name for f in model.frames})
                raise KinematicsError(f'frame {frame!r} is not in the URDF; its frames are {names}')
        self.base_frame = base_frame
        self.ee_frame = ee_frame
        self._base_id = model.getFrameId(base_frame)
        self._ee_id = model.getFrameId(ee_frame)
        self.joint_names = tuple(joint_names)
        # The reduced model holds exactly the controlled joints; map them to the caller's order.
        index_of = {}
        for joint_id in range(1, model.njoints):
            index_of[model.names[joint_id]] = model.joints[joint_id].idx_q
        self._q_index = np.array([index_of[name] for name in self.joint_names], dtype=np.int64)
        self._q_identity = model.nq == self.dof and bool(np.all(self._q_index == np.arange(self.dof)))
        self.limits = JointLimits(
            names=self.joint_names,
            position_min=np.asarray(model.lowerPositionLimit)[self._q_index],
            position_max=np.asarray(model.upperPositionLimit)[self._q_index],
            velocity_max=np.asarray(model.velocityLimit)[self._q_index])
        # Base frame placement in the model root (constant: the base precedes the controlled joints,
        # checked below).
        self._T_root_base = self._frame_in_root(self._base_id, np.zeros(model.nq))
        q_probe = (self.limits.position_min + self.limits.position_max) / 2.0 + 0.1
        if not np.allclose(self._frame_in_root(self._base_id, self._to_model_q(q_probe)), self._T_root_base):
            raise KinematicsError(f'base frame {base_frame!r} moves with the controlled joints')
        self._T_base_root = np.linalg.inv(self._T_root_base)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_urdf(cls, urdf_xml: str, *, base_frame: str, ee_frame: str,
                  joint_names: Sequence[str] | None = None,
                  locked_positions: Mapping[str, float] | None = None,
                  options: IkOptions | None = None) -> 'ArmKinematics':
        """Build from URDF text (a ``robot_description`` string, not a path).

        ``joint_names``: the controlled joints in the controller's order; default: every revolute or
        prismatic joint of the URDF in tree order (mimic joints included, so give the names for a URDF
        with fingers). ``locked_positions``: values for the joints that are locked (default 0, clipped
        into their limits). Raises :class:`KinematicsError` with a clear message on a bad URDF, an
        unknown frame or joint, or a joint that cannot be controlled.
        """
        if not isinstance(urdf_xml, str) or '<robot' not in urdf_xml:
            raise KinematicsError('expected URDF XML text (a robot_description string) with a <robot> element')
        try:
            full = pin.buildModelFromXML(urdf_xml)
        except Exception as error:  # pinocchio raises ValueError / RuntimeError on parse errors
            raise KinematicsError(f'cannot parse the URDF: {error}') from error
        all_joints = [full.names[i] for i in range(1, full.njoints)]
        if joint_names is None:
            joint_names = [full.names[i] for i in range(1, full.njoints) if full.joints[i].nq == 1]
        joint_names = list(joint_names)
        if len(set(joint_names)) != len(joint_names):
            raise KinematicsError(f'joint_names has duplicates: {joint_names}')
        if not joint_names:
            raise KinematicsError('no joints to control')
        for name in joint_names:
            if not full.existJointName(name):
                raise KinematicsError(f'joint {name!r} is not a movable joint of the URDF; '
                                      f'its movable joints are {all_joints}')
            joint = full.joints[full.getJointId(name)]
            if joint.nq != 1 or joint.nv != 1:
                raise KinematicsError(
                    f'joint {name!r} ({joint.shortname()}) is not a 1-DoF revolute or prismatic joint '
                    '(continuous joints have no position limits; give the URDF revolute limits)')
        locked_positions = dict(locked_positions or {})
        unknown = sorted(set(locked_positions) - set(all_joints))
        if unknown:
            raise KinematicsError(f'locked_positions names joints not in the URDF: {unknown}')
        q_ref = np.zeros(full.nq)
        lock_ids = []
        for joint_id in range(1, full.njoints):
            name = full.names[joint_id]
            if name in joint_names:
                continue
            lock_ids.append(joint_id)
            joint = full.joints[joint_id]
            if joint.nq == 1:
                lo, hi = full.lowerPositionLimit[joint.idx_q], full.upperPositionLimit[joint.idx_q]
                q_ref[joint.idx_q] = np.clip(float(locked_positions.get(name, 0.0)), lo, hi)
            else:  # e.g. a continuous joint (cos, sin): its neutral configuration
                q_ref[joint.idx_q:joint.idx_q + joint.nq] = pin.neutral(full)[joint.idx_q:joint.idx_q + joint.nq]
        model = pin.buildReducedModel(full, lock_ids, q_ref) if lock_ids else full
        return cls(model, base_frame=base_frame, ee_frame=ee_frame, joint_names=joint_names,
                   options=options)

    @classmethod
    def from_urdf_file(cls, path: str, **kwargs) -> 'ArmKinematics':
        """:meth:`from_urdf` on a file's text."""
        with open(path, encoding='utf-8') as handle:
            return cls.from_urdf(handle.read(), **kwargs)

    # ------------------------------------------------------------------ joint vectors

    @property
    def dof(self) -> int:
        """Number of controlled joints."""
        return len(self.joint_names)

    def joint_vector(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        """Controlled-joint positions in :attr:`joint_names` order from a JointState-like (names, positions).

        Extra names are ignored; a missing controlled joint raises ``KeyError``.
        """
        if len(names) != len(positions):
            raise ValueError(f'{len(names)} joint names but {len(positions)} positions')
        lookup = dict(zip(names, positions))
        missing = [name for name in self.joint_names if name not in lookup]
        if missing:
            raise KeyError(f'joint state lacks controlled joints {missing}')
        return np.array([float(lookup[name]) for name in self.joint_names], dtype=np.float64)

    def _check_q(self, q: np.ndarray, what: str = 'joint positions') -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.dof,):
            raise ValueError(f'{what} must have {self.dof} values ({self.joint_names}), got shape {q.shape}')
        if not np.all(np.isfinite(q)):
            raise ValueError(f'{what} must be finite, got {q.tolist()}')
        return q

    def _to_model_q(self, q: np.ndarray) -> np.ndarray:
        if self._q_identity:
            return q
        q_model = np.zeros(self._model.nq)
        q_model[self._q_index] = q
        return q_model

    # ------------------------------------------------------------------ forward kinematics

    def _frame_in_root(self, frame_id: int, q_model: np.ndarray) -> np.ndarray:
        pin.forwardKinematics(self._model, self._data, q_model)
        return np.array(pin.updateFramePlacement(self._model, self._data, frame_id).homogeneous)

    def fk(self, q: Sequence[float], frame: str | None = None) -> np.ndarray:
        """Pose (4x4) of ``frame`` (default: the end effector) in the base frame at joints ``q``."""
        q = self._check_q(q)
        frame_id = self._ee_id if frame is None else self._frame_id(frame)
        return self._T_base_root @ self._frame_in_root(frame_id, self._to_model_q(q))

    def _frame_id(self, frame: str) -> int:
        if not self._model.existFrame(frame):
            raise KinematicsError(f'frame {frame!r} is not in the URDF')
        return self._model.getFrameId(frame)

    # ------------------------------------------------------------------ inverse kinematics

    def ik(self, target: np.ndarray, q_seed: Sequence[float], options: IkOptions | None = None) -> IkResult:
        """Joints that put the end effector at ``target`` (4x4 in the base frame), starting from ``q_seed``.

        The seed is clamped into the limits first; every iterate stays inside them, and the weighted
        error never exceeds the seed's. ``converged`` per the options' tolerances.
        """
        start = time.perf_counter()
        opts = options or self.options
        T_target = self._T_root_base @ _as_pose(target, 'IK target')
        p_target = T_target[:3, 3]
        R_target = T_target[:3, :3]
        lo, hi = self.limits.position_min, self.limits.position_max
        w = opts.rotation_weight_m_per_rad
        eye = np.eye(6 if w > 0.0 else 3)
        model, data, ee = self._model, self._data, self._ee_id

        def evaluate(q):
            """Weighted error vector, its norm, the errors and the (weighted) Jacobian at q."""
            pin.computeJointJacobians(model, data, self._to_model_q(q))
            placement = pin.updateFramePlacement(model, data, ee)
            e_pos = p_target - placement.translation
            e_rot = pin.log3(R_target @ placement.rotation.T)
            J = pin.getFrameJacobian(model, data, ee, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
            if not self._q_identity:
                J = J[:, self._q_index]
            if w == 0.0:
                e, J_e = e_pos, J[:3]
            else:
                e = np.concatenate([e_pos, w * e_rot])
                J_e = np.vstack([J[:3], w * J[3:]])
            return e, float(np.linalg.norm(e)), float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot)), J_e

        def done(pos_err, rot_err):
            return pos_err <= opts.position_tolerance_m and (w == 0.0 or rot_err <= opts.rotation_tolerance_rad)

        q = self.limits.clip(self._check_q(q_seed, 'IK seed'))
        e, score, pos_err, rot_err, J_e = evaluate(q)
        # Levenberg-Marquardt: a step that does not lower the error is rejected and the damping raised;
        # an accepted step lowers the damping again (never below the configured one).
        damping = opts.damping
        iterations = 0
        while not done(pos_err, rot_err) and iterations < opts.max_iterations:
            iterations += 1
            dq = J_e.T @ np.linalg.solve(J_e @ J_e.T + damping * damping * eye, e)
            largest = float(np.max(np.abs(dq)))
            if largest > opts.max_step_rad:
                dq *= opts.max_step_rad / largest
            q_try = np.clip(q + dq, lo, hi)
            trial = evaluate(q_try)
            if trial[1] < score:
                q, (e, score, pos_err, rot_err, J_e) = q_try, trial
                damping = max(opts.damping, damping * 0.5)
            else:
                damping *= 10.0
                if damping > 1e6:  # no step lowers the error any more (a limit or a local minimum)
                    break
        converged = done(pos_err, rot_err)
        q_best = q
        if w == 0.0:
            rot_err = pose_error(self.fk(q_best), target)[1]
        return IkResult(q=q_best, converged=bool(converged), position_error_m=pos_err,
                        rotation_error_rad=rot_err, iterations=iterations,
                        solve_time_s=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------
# IK backends: Pinocchio (above) or moveit_py, behind one interface

class IkSolver(Protocol):
    """What :class:`~molmoact_ros.robot.executor.ArmExecutor` needs from an IK solver.

    ``ik(target, q_seed)``: joints (in the kinematics' ``joint_names`` order, within the position limits)
    that put the end effector at ``target`` (4x4, base frame), starting from ``q_seed``.
    :class:`ArmKinematics` is one; :class:`MoveItPyIk` another.
    """

    def ik(self, target: np.ndarray, q_seed: Sequence[float]) -> IkResult: ...


class IkBackend(str, enum.Enum):
    """The ``ik_backend`` parameter of the command sink."""

    #: moveit_py where it is importable and the robot profile names a planning group, else Pinocchio.
    AUTO = 'auto'
    PINOCCHIO = 'pinocchio'
    #: moveit_py; falls back to Pinocchio (with the reason logged) where it cannot be used.
    MOVEIT_PY = 'moveit_py'


@dataclass(frozen=True)
class IkSelection:
    """Which backend solves IK and why (``reason`` is logged and shown in diagnostics)."""

    requested: IkBackend
    backend: IkBackend
    reason: str

    @property
    def fell_back(self) -> bool:
        """moveit_py was asked for explicitly and Pinocchio is used instead."""
        return self.requested is IkBackend.MOVEIT_PY and self.backend is IkBackend.PINOCCHIO

    def describe(self) -> str:
        return f'{self.backend.value} ({self.reason})'


def moveit_py_import_error(import_module: Callable[[str], Any] = importlib.import_module) -> str | None:
    """None when ``moveit.planning`` and ``moveit.core.robot_state`` import, else why not."""
    try:
        import_module('moveit.planning')
        import_module('moveit.core.robot_state')
    except Exception as error:  # ImportError, or a broken install (missing shared library, ...)
        return f'moveit_py is not importable ({type(error).__name__}: {error})'
    return None


def select_ik_backend(requested: IkBackend | str, *, planning_group: str,
                      import_module: Callable[[str], Any] = importlib.import_module) -> IkSelection:
    """Decide the IK backend before anything is built (no MoveItPy is created here)."""
    requested = IkBackend(requested)
    if requested is IkBackend.PINOCCHIO:
        return IkSelection(requested, IkBackend.PINOCCHIO, 'ik_backend is pinocchio')
    if not planning_group:
        return IkSelection(requested, IkBackend.PINOCCHIO,
                           'no MoveIt planning group: set the profile\'s sink.moveit_planning_group '
                           'or the ik_planning_group parameter')
    problem = moveit_py_import_error(import_module)
    if problem is not None:
        return IkSelection(requested, IkBackend.PINOCCHIO, problem)
    return IkSelection(requested, IkBackend.MOVEIT_PY, f'moveit_py, planning group {planning_group!r}')


def _pose_msg(T: np.ndarray):
    """A geometry_msgs/Pose of a 4x4 transform (what moveit_py's set_from_ik takes)."""
    from geometry_msgs.msg import Pose  # only where moveit_py runs, i.e. on a ROS install
    from transforms3d.quaternions import mat2quat
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    w, x, y, z = mat2quat(T[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(x), float(y), float(z), float(w))
    return pose


class MoveItPyIk:
    """IK through moveit_py (``RobotState.set_from_ik`` with the group's kinematics plugin).

    Uses the moveit_py API as of MoveIt 2 Jazzy / Kilted (``moveit_py/moveit/core/robot_state.pyi`` and its
    pybind11 bindings): ``RobotState(robot_model)``, the ``joint_positions`` property (a dict of variable
    name -> position; assigning a dict sets those variables), ``update()``,
    ``get_frame_transform(frame_id)`` (4x4 of ``frame_id`` in the model frame), and
    ``set_from_ik(joint_model_group_name, geometry_pose, tip_name, timeout=0.0) -> bool`` (pose in the
    model frame; timeout 0 = the group's kinematics.yaml timeout). UNVERIFIED on a real MoveIt install:
    this project's machines have no moveit_py; the tests drive it through a recording stand-in of that API.

    Targets arrive in the profile's base frame; they are moved into the model frame with the base frame's
    transform. The solution is read back by joint name (so the group's joint order does not matter), clipped
    into the URDF limits, and checked with Pinocchio's FK of the same ``robot_description``: a solution
    that misses the target by more than ``position_tolerance_m`` / ``rotation_tolerance_rad`` (e.g. a
    tip link that is not the profile's end-effector frame) counts as not converged, so the executor halts
    with ``ik_failure`` instead of commanding it.
    """

    def __init__(self, robot_state: Any, kinematics: ArmKinematics, *, planning_group: str,
                 timeout_s: float = 0.0, position_tolerance_m: float = 1e-3,
                 rotation_tolerance_rad: float = 1e-2, pose_factory: Callable[[np.ndarray], Any] = _pose_msg,
                 moveit: Any = None) -> None:
        if not (np.isfinite(timeout_s) and timeout_s >= 0.0):
            raise ValueError(f'timeout_s must be >= 0, got {timeout_s!r}')
        self._state = robot_state
        self.kinematics = kinematics
        self.planning_group = planning_group
        self.timeout_s = float(timeout_s)
        self.position_tolerance_m = float(position_tolerance_m)
        self.rotation_tolerance_rad = float(rotation_tolerance_rad)
        self._pose = pose_factory
        self.moveit = moveit  # the MoveItPy instance that owns the model (kept alive with the adapter)
        variables = set(robot_state.joint_positions)
        missing = [name for name in kinematics.joint_names if name not in variables]
        if missing:
            raise KinematicsError(f'the MoveIt robot model lacks the profile\'s joints {missing}')

    @classmethod
    def create(cls, kinematics: ArmKinematics, *, planning_group: str, node_name: str = 'molmoact_moveit_py',
               params_file: str = '', timeout_s: float = 0.0,
               import_module: Callable[[str], Any] = importlib.import_module, **kwargs) -> 'MoveItPyIk':
        """Start MoveItPy (its own rclcpp node and executor) and build the adapter on its robot model.

        ``params_file``: a ROS parameter file for MoveItPy's node (robot_description,
        robot_description_semantic, robot_description_kinematics, ...); empty: MoveItPy's default, the
        ``--params-file`` arguments of the process. Raises :class:`KinematicsError` when the model has no
        such group or lacks the profile's joints.
        """
        planning = import_module('moveit.planning')
        robot_state_module = import_module('moveit.core.robot_state')
        options = {'node_name': node_name}
        if params_file:
            options['launch_params_filepaths'] = [params_file]
        moveit = planning.MoveItPy(**options)
        model = moveit.get_robot_model()
        if not model.has_joint_model_group(planning_group):
            raise KinematicsError(f'the MoveIt robot model has no planning group {planning_group!r}; its groups '
                                  f'are {list(model.joint_model_group_names)}')
        group = model.get_joint_model_group(planning_group)
        active = list(group.active_joint_model_names)
        outside = [name for name in kinematics.joint_names if name not in active]
        if outside:
            raise KinematicsError(f'planning group {planning_group!r} (joints {active}) does not hold the '
                                  f'profile\'s joints {outside}')
        state = robot_state_module.RobotState(model)
        state.set_to_default_values()
        state.update()
        return cls(state, kinematics, planning_group=planning_group, timeout_s=timeout_s, moveit=moveit,
                   **kwargs)

    def ik(self, target: np.ndarray, q_seed: Sequence[float]) -> IkResult:
        start = time.perf_counter()
        kin = self.kinematics
        target = _as_pose(target, 'IK target')
        seed = kin.limits.clip(kin._check_q(q_seed, 'IK seed'))
        state = self._state
        state.joint_positions = {name: float(v) for name, v in zip(kin.joint_names, seed)}
        state.update()
        T_model_base = np.asarray(state.get_frame_transform(kin.base_frame), dtype=np.float64)
        found = bool(state.set_from_ik(self.planning_group, self._pose(T_model_base @ target),
                                       kin.ee_frame, self.timeout_s))
        state.update()
        positions = state.joint_positions
        q = np.array([float(positions[name]) for name in kin.joint_names], dtype=np.float64)
        if not np.all(np.isfinite(q)):
            found, q = False, seed
        q = kin.limits.clip(q)
        position_error, rotation_error = pose_error(kin.fk(q), target)
        converged = (found and position_error <= self.position_tolerance_m
                     and rotation_error <= self.rotation_tolerance_rad)
        return IkResult(q=q, converged=bool(converged), position_error_m=position_error,
                        rotation_error_rad=rotation_error, iterations=1,
                        solve_time_s=time.perf_counter() - start)


def make_ik_solver(requested: IkBackend | str, kinematics: ArmKinematics, *, planning_group: str,
                   timeout_s: float = 0.0, node_name: str = 'molmoact_moveit_py', params_file: str = '',
                   import_module: Callable[[str], Any] = importlib.import_module,
                   existing: MoveItPyIk | None = None) -> tuple[IkSolver, IkSelection]:
    """The IK solver for ``requested``: a :class:`MoveItPyIk`, or ``kinematics`` itself (Pinocchio).

    Falls back to Pinocchio, with the reason in the returned :class:`IkSelection`, where moveit_py is
    absent, no planning group is named, or MoveItPy / the group cannot be set up. ``existing``: a
    MoveItPyIk from an earlier call (e.g. before robot_description was re-published) whose MoveItPy is
    reused with the new kinematics instead of starting a second one.
    """
    selection = select_ik_backend(requested, planning_group=planning_group, import_module=import_module)
    if selection.backend is IkBackend.PINOCCHIO:
        return kinematics, selection
    try:
        if existing is not None and existing.planning_group == planning_group:
            solver = MoveItPyIk(existing._state, kinematics, planning_group=planning_group, timeout_s=timeout_s,
                                moveit=existing.moveit)
        else:
            solver = MoveItPyIk.create(kinematics, planning_group=planning_group, node_name=node_name,
                                       params_file=params_file, timeout_s=timeout_s,
                                       import_module=import_module)
    except Exception as error:  # noqa: BLE001 - any MoveItPy set-up failure falls back, with the reason
        return kinematics, IkSelection(selection.requested, IkBackend.PINOCCHIO,
                                       f'moveit_py set-up failed ({type(error).__name__}: {error})')
    return solver, selection
