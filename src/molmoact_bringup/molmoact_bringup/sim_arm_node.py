"""``sim_arm``: the simulated Panda (:mod:`molmoact_bringup.sim.panda_sim`) as a ROS 2 node that looks
like a real arm with a fixed RGB-D camera and ros2_control controllers.

Publishes (relative names; frames ``panda_link0`` = the arm's base, ``panda_hand_tcp`` = the TCP):

=============================  ==========================================================================
``image``                      sensor_msgs/Image rgb8, frame ``camera_frame`` (optical: z forward, x right,
                               y down), at ``camera_rate_hz``
``wrist_image``                sensor_msgs/Image rgb8 of ``wrist_camera`` (when there is one: the libero
                               scene's default), same size and stamp as ``image``
``aligned_depth``              sensor_msgs/Image 32FC1, metres along the optical axis, same size, frame and
                               stamp as ``image`` (+inf where nothing was hit)
``camera_info``                sensor_msgs/CameraInfo of ``image`` (pinhole from the camera's field of view,
                               no distortion), same stamp
``joint_states``               sensor_msgs/JointState: panda_joint1..7 (rad, rad/s, N m) and
                               panda_finger_joint1..2 (m, m/s, N), at ``rate_hz``
``robot_description``          std_msgs/String, the URDF, latched (transient local) like robot_state_publisher
``tf``                         tf2_msgs/TFMessage (only where tf2_msgs is installed): ``panda_link0`` ->
                               ``camera_frame`` and (``publish_ee_tf``) ``panda_link0`` -> ``panda_hand_tcp``
``~/camera_pose``              geometry_msgs/PoseStamped: the camera's optical frame in ``panda_link0``
``~/ee_pose``                  geometry_msgs/PoseStamped: ``panda_hand_tcp`` in ``panda_link0``
``~/task_description``         std_msgs/String, latched, libero scene only: the task's language instruction
``~/task_state``               molmoact_msgs/TaskState, latched (reliable, transient local, depth 1): the
                               simulator's own success judgement (:mod:`molmoact_bringup.sim.task`), the
                               episode and its seed, and the judged objects' poses in ``panda_link0``;
                               published at once on every change of ``success`` or the episode, and with
                               every image (``camera_rate_hz``). Judged every tick, in simulation time
                               (libero: LIBERO's own check, a round trip to its process, with every image)
``/clock``                     rosgraph_msgs/Clock, only with ``use_sim_time:=true`` (the simulator is then
                               the clock: every stamp is simulation time)
=============================  ==========================================================================

Subscribes, as ros2_control controllers do:

- ``<controller_name>/joint_trajectory`` (trajectory_msgs/JointTrajectory): joint_trajectory_controller
  semantics (:mod:`molmoact_bringup.sim.trajectory`): all seven arm joints in any order, points timed
  by ``time_from_start`` from ``header.stamp`` (0 = now), linear interpolation (cubic with
  velocities), a new trajectory replaces the current one, the last point is held, an empty one stops;
  invalid trajectories are rejected with a logged reason.
- ``<gripper_controller_name>/commands`` (std_msgs/Float64MultiArray, one value): the position of
  ``panda_finger_joint1`` in metres, 0.0 (closed) .. 0.04 (open; the gripper's opening is twice it),
  as a forward_command_controller on the finger joint takes it; out-of-range values are clamped.

Services:

- ``~/reset_episode`` (molmoact_msgs/ResetEpisode): a new episode without restarting the node: the arm
  back at its home configuration, the gripper open, the follower's trajectory dropped, the simulation time
  0 and the objects placed again from ``seed`` (-1: the last seed + 1); the episode counter adds 1 and the
  response carries the new TaskState. A seed out of range is refused (``success`` false, the reason in
  ``message``, nothing changed). In the libero scene the seed is the task's official initial state,
  0..n-1 (LIBERO's 50 per task; -1: the next, refused after the last one), as the released LIBERO evaluator
  starts episode i from initial state i: the whole scene becomes the state LIBERO's environment holds after
  ``set_init_state`` of it and the evaluator's 10 no-op wait steps (objects settled, the arm and gripper as
  LIBERO leaves them, that arm pose then held), copied from the export, which carries every initial state
  settled that way (no LIBERO call, no restart; the first episode is ``libero_init_state``).

Task success (``~/task_state``): ``lift``: the cube's centre at least ``lift_height_m`` above its resting
height (its height when the episode began) for ``hold_s`` of simulation time. robosuite's own Lift rule
(centre above the table top + 0.04 m) is the reference: the cube's centre rests ~0.02 m above the table
top, so this rule is stricter by that much, plus the hold; every success of it is one of robosuite's (tested on
recorded states). The cube is placed from the episode's seed, uniformly within +-``cube_xy_range_m`` of
the table's centre and +-``cube_yaw_range_rad`` of yaw (defaults +-0.10 m and +-pi, wider than robosuite's
+-0.03 m; the whole +-0.15 m range allowed is on the table, in the workspace box of ``sim_panda.yaml``,
reachable top-down and in the workspace camera's view); the same seed gives the same scene.

Scenes (``scene``): ``lift`` (default), robosuite's Lift with a red cube; ``libero``, one LIBERO task
(``libero_suite``, ``libero_task_id``, ``libero_init_state``) built in LIBERO's own environment
(``scripts/setup_libero.sh``) and stepped here, with LIBERO's cameras (``agentview`` + wrist, 256x256)
and, with ``image_orientation:=libero_eval``, the images as the released LIBERO evaluator feeds a checkpoint
(see :mod:`molmoact_bringup.sim.scene`). Without LIBERO installed the node stops with an error that says
how to install it.

Time: by default the simulator runs in step with the wall clock and stamps with the node's (system)
time. With ``use_sim_time:=true`` it publishes ``/clock`` and advances ``1 / rate_hz`` of simulated
time per tick at ``real_time_factor`` times real time; other nodes started with ``use_sim_time:=true``
then share its clock (stamps of incoming trajectories are read in that clock).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Pose as PoseMsg, PoseStamped, TransformStamped
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from trajectory_msgs.msg import JointTrajectory

from molmoact_msgs.msg import TaskState
from molmoact_msgs.srv import ResetEpisode
from molmoact_ros.ros.image import numpy_to_image
from molmoact_ros.ros.params import ParamSpec, declare_parameters
from molmoact_ros.ros.topics import LATCHED

from .sim.franka import BASE_FRAME, Pose, rotation_to_quaternion_xyzw
from .sim.task import GoalSuccess, LiftSuccess, ObjectPose, TaskMonitor, TaskStatus
from .sim.trajectory import JointTrajectoryCommand, TrajectoryPoint, TrajectoryRejected

try:  # tf2_msgs is part of every ROS install but not of the PyPI wheel set
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

PACKAGE = 'molmoact_bringup'
LIFT_INSTRUCTION = 'pick up the red cube'
CAMERAS = ('auto', 'workspace', 'agentview', 'frontview', 'sideview', 'birdview', 'robot0_eye_in_hand',
           'galleryview', 'robot0_robotview')

PARAMS = (
    ParamSpec('rate_hz', 50.0, 'Simulation tick rate: joint_states, tf and poses are published every tick '
              '(Hz)', 1.0, 500.0, read_only=True),
    ParamSpec('camera_rate_hz', 10.0, 'Rate of image, aligned_depth and camera_info (Hz); 0 publishes no '
              'images (rendering is the costly part on a CPU)', 0.0, 60.0, read_only=True),
    ParamSpec('scene', 'lift', 'The scene: lift (robosuite\'s Lift: table, red cube) or libero (one LIBERO task; '
              'needs scripts/setup_libero.sh)', choices=('lift', 'libero'), read_only=True),
    ParamSpec('libero_suite', 'libero_spatial', 'LIBERO suite of the libero scene (libero_spatial, libero_object, '
              'libero_goal, libero_10, libero_90, ...)', read_only=True),
    ParamSpec('libero_task_id', 0, 'Task of the suite (0-based, the suite\'s order)', 0, 999, read_only=True),
    ParamSpec('libero_init_state', 0, 'Official initial state of the first episode (index; ~/reset_episode '
              'picks the next ones)', 0, 999, read_only=True),
    ParamSpec('libero_python', '', 'Python of LIBERO\'s environment (empty: $MOLMOACT_LIBERO_PYTHON, else '
              '.venv-libero of the workspace)', read_only=True),
    ParamSpec('image_width', 0, 'Rendered image width (px; 0: the scene\'s, 320 lift, 256 libero)', 0, 1920,
              read_only=True),
    ParamSpec('image_height', 0, 'Rendered image height (px; 0: the scene\'s, 240 lift, 256 libero)', 0, 1080,
              read_only=True),
    ParamSpec('camera', 'auto', 'Which camera renders: auto (workspace in lift, agentview in libero), workspace '
              '(lift only: fixed, in front of the arm, on the arm\'s base) or one of the scene\'s cameras',
              choices=CAMERAS, read_only=True),
    ParamSpec('wrist_camera', 'auto', 'Second camera published on wrist_image: auto (robot0_eye_in_hand in '
              'libero, none in lift), none, or one of the scene\'s cameras', choices=CAMERAS[:1] + ('none',)
              + CAMERAS[2:], read_only=True),
    ParamSpec('image_orientation', 'camera', 'camera: the true camera view (camera_info, depth and TF describe '
              'it); libero_eval: as the released LIBERO evaluator feeds the model (180 deg from robosuite\'s '
              'OpenGL-order frame = mirrored left-right; no camera_info then)', choices=('camera', 'libero_eval'),
              read_only=True),
    ParamSpec('camera_fovy_deg', 45.0, 'Vertical field of view of the workspace camera (deg)', 10.0, 120.0,
              read_only=True),
    ParamSpec('camera_position_m', [1.15, -0.35, 0.5], 'Workspace camera position [x, y, z] in panda_link0 (m)',
              read_only=True),
    ParamSpec('camera_target_m', [0.5, 0.0, 0.0], 'Point the workspace camera looks at [x, y, z] in '
              'panda_link0 (m); the image\'s x axis stays horizontal', read_only=True),
    ParamSpec('camera_frame', 'sim_camera_color_optical_frame', 'frame_id of the images and camera_info '
              '(the camera\'s optical frame: z forward, x right, y down)', read_only=True),
    ParamSpec('controller_name', 'joint_trajectory_controller', 'The arm controller\'s name: trajectories '
              'arrive on <controller_name>/joint_trajectory', read_only=True),
    ParamSpec('gripper_controller_name', 'gripper_controller', 'The gripper controller\'s name: commands '
              'arrive on <gripper_controller_name>/commands', read_only=True),
    ParamSpec('real_time_factor', 1.0, 'With use_sim_time: simulated seconds per wall-clock second', 0.1,
              20.0, read_only=True),
    ParamSpec('seed', 0, 'Seed of the first episode\'s scene (lift: cube position and yaw); '
              '~/reset_episode picks the next ones', 0, 2**31 - 1, read_only=True),
    ParamSpec('cube_xy_range_m', 0.10, 'lift: the cube is placed uniformly within +- this of the table\'s centre '
              'along x and y of panda_link0 (m; robosuite\'s own Lift: 0.03)', 0.0, 0.15, read_only=True),
    ParamSpec('cube_yaw_range_rad', math.pi, 'lift: the cube\'s yaw is uniform within +- this (rad)', 0.0,
              math.pi, read_only=True),
    ParamSpec('lift_height_m', 0.04, 'lift: success needs the cube\'s centre this far above its resting height '
              '(m)', 0.005, 0.3, read_only=True),
    ParamSpec('hold_s', 0.5, 'lift: ... held there for this long (simulation time, s; 0: at once)', 0.0, 10.0,
              read_only=True),
    ParamSpec('max_steps', 0, 'Stop after this many ticks (0: run until shut down)', 0, 10**9,
              read_only=True),
    ParamSpec('publish_ee_tf', True, 'Publish panda_link0 -> panda_hand_tcp on tf (turn off when '
              'robot_state_publisher publishes the arm from robot_description and joint_states)',
              read_only=True),
    ParamSpec('robot_description_file', '', 'URDF published on robot_description; empty: the package\'s '
              'urdf/panda.urdf', read_only=True),
    ParamSpec('render_shadows', True, 'Render shadows (costs CPU time with software rendering)',
              read_only=True),
)

SENSOR = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # reliable serves best-effort readers too
STATE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TF = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
MAX_CATCH_UP_S = 0.25  # wall-clock mode: at most this much simulated time per tick


def find_urdf(explicit: str = '') -> Optional[Path]:
    """The URDF to publish: ``explicit`` when given, else the installed or source ``urdf/panda.urdf``."""
    if explicit:
        return Path(explicit)
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / 'urdf' / 'panda.urdf')
    except Exception:  # not installed (source tree use)
        pass
    candidates.append(Path(__file__).resolve().parents[1] / 'urdf' / 'panda.urdf')
    return next((c for c in candidates if c.is_file()), None)


def stamp_of(seconds: float) -> TimeMsg:
    sec = math.floor(seconds)
    return TimeMsg(sec=int(sec), nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def seconds_of(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def trajectory_command(msg: JointTrajectory) -> JointTrajectoryCommand:
    """trajectory_msgs/JointTrajectory -> the follower's plain data (accelerations are ignored)."""
    points = tuple(
        TrajectoryPoint(time_from_start_s=p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
                        positions_rad=tuple(p.positions), velocities_rad_s=tuple(p.velocities))
        for p in msg.points)
    return JointTrajectoryCommand(joint_names=tuple(msg.joint_names), points=points,
                                  start_time_s=seconds_of(msg.header.stamp))


def pose_stamped(pose: Pose, stamp: TimeMsg) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, pose.parent_frame
    t, q = pose.translation_m, pose.quaternion_xyzw
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in t)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = q
    return msg


def transform_stamped(pose: Pose, stamp: TimeMsg) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, pose.parent_frame, pose.child_frame
    t, q = pose.translation_m, pose.quaternion_xyzw
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in t)
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = q
    return msg


def task_state_msg(status: TaskStatus, stamp: TimeMsg, frame_id: str = BASE_FRAME) -> TaskState:
    """The plain :class:`TaskStatus` as a molmoact_msgs/TaskState (first_success_s -1 before the first)."""
    msg = TaskState()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.scene, msg.task, msg.instruction = status.scene, status.task, status.instruction
    msg.episode, msg.seed = int(status.episode), int(status.seed)
    msg.success, msg.succeeded = bool(status.success), bool(status.succeeded)
    msg.first_success_s = -1.0 if status.first_success_s is None else float(status.first_success_s)
    msg.reason = status.reason
    msg.object_names = [o.name for o in status.objects]
    poses = []
    for o in status.objects:
        p = PoseMsg()
        p.position.x, p.position.y, p.position.z = (float(v) for v in o.position_m)
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in o.quaternion_xyzw)
        poses.append(p)
    msg.object_poses = poses
    return msg


def camera_info(sim, header: Header) -> CameraInfo:
    k = sim.intrinsics
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = k.width, k.height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in k.k]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


class SimArmNode(Node):
    """The simulated arm's ROS shell: parameters -> :class:`PandaSim`, ticks, messages in and out."""

    def __init__(self, **kwargs):
        super().__init__('sim_arm', **kwargs)
        p = declare_parameters(self, PARAMS)
        self.params = p
        self.sim_time = bool(self.get_parameter('use_sim_time').value)
        from .sim.libero_task import LiberoTaskSpec
        from .sim.panda_sim import PandaSim, SimConfig  # MuJoCo + OpenGL: loaded with the node
        from .sim.scene import resolve_scene
        wrist = '' if p['wrist_camera'] == 'none' else p['wrist_camera']
        self.scene = resolve_scene(p['scene'], p['camera'], wrist, p['image_width'], p['image_height'],
                                   p['image_orientation'])
        sc = self.scene
        self.sim = PandaSim(SimConfig(
            image_width_px=sc.width_px, image_height_px=sc.height_px, camera=sc.camera,
            camera_fovy_deg=p['camera_fovy_deg'], camera_frame=p['camera_frame'], seed=p['seed'],
            cube_xy_range_m=p['cube_xy_range_m'], cube_yaw_range_rad=p['cube_yaw_range_rad'],
            camera_position_m=tuple(p['camera_position_m']), camera_target_m=tuple(p['camera_target_m']),
            render_shadows=p['render_shadows'], render_reflections=sc.render_reflections,
            render_multisamples=sc.render_multisamples, scene=sc.scene, wrist_camera=sc.wrist_camera,
            libero=LiberoTaskSpec(p['libero_suite'], p['libero_task_id'], p['libero_init_state']),
            libero_python=p['libero_python']), log=self.get_logger().info)
        self.rejected = 0
        self.ticks = 0
        self.done = False
        self._steps_per_tick = max(1, round(1.0 / p['rate_hz'] / self.sim.physics_step_s))
        self._residual_s = 0.0
        self._last_clock_s: Optional[float] = None
        self._next_image_s: Optional[float] = None
        # With use_sim_time the clock is the simulation time, which a reset sets back to 0: /clock goes on
        # from where it was (the time of the episodes before this one is added).
        self._clock_offset_s = 0.0

        self.pub_image = self.create_publisher(Image, 'image', SENSOR)
        self.pub_depth = self.create_publisher(Image, 'aligned_depth', SENSOR)
        self.pub_info = self.create_publisher(CameraInfo, 'camera_info', SENSOR) if sc.publishes_camera_info else None
        self.pub_wrist = self.create_publisher(Image, 'wrist_image', SENSOR) if self.sim.has_wrist_camera else None
        self.pub_joints = self.create_publisher(JointState, 'joint_states', STATE)
        self.pub_description = self.create_publisher(String, 'robot_description', LATCHED)
        self.pub_camera_pose = self.create_publisher(PoseStamped, '~/camera_pose', STATE)
        self.pub_ee_pose = self.create_publisher(PoseStamped, '~/ee_pose', STATE)
        self.pub_tf = self.create_publisher(TFMessage, 'tf', TF) if TFMessage is not None else None
        self.pub_clock = self.create_publisher(ClockMsg, '/clock', STATE) if self.sim_time else None
        self.create_subscription(JointTrajectory, f'{p["controller_name"]}/joint_trajectory',
                                 self._on_trajectory, 10)
        self.create_subscription(Float64MultiArray, f'{p["gripper_controller_name"]}/commands',
                                 self._on_gripper, 10)

        urdf = find_urdf(p['robot_description_file'])
        if urdf is not None and urdf.is_file():
            self.pub_description.publish(String(data=urdf.read_text()))
        else:
            self.get_logger().warning(f'no URDF found ({urdf or "urdf/panda.urdf"}): robot_description not published')
        if self.pub_tf is None:
            self.get_logger().info('tf2_msgs is not installed: poses only on ~/camera_pose and ~/ee_pose')
        task = self.sim.libero_task
        if task is not None:
            self.pub_task = self.create_publisher(String, '~/task_description', LATCHED)
            self.pub_task.publish(String(data=task.language))
            self.get_logger().info(
                f'LIBERO {task.meta["suite"]} task {task.meta["task_id"]} (initial state {task.meta["init_state"]}): '
                f'"{task.language}"; norm-stats key of the released checkpoint: '
                f'{self.sim.config.libero.unnorm_key or "none"}; LIBERO {task.meta["versions"]}')
        self._libero_judge = None
        if task is not None:
            from .sim.libero_task import LiberoJudge
            self._libero_judge = LiberoJudge(p['libero_suite'], p['libero_task_id'], p['libero_python'])
        self.monitor = self._make_monitor()
        self.pub_task_state = self.create_publisher(TaskState, '~/task_state', LATCHED)
        self.create_service(ResetEpisode, '~/reset_episode', self._on_reset_episode)
        first_seed = p['seed'] if task is None else int(task.meta['init_state'])
        self.monitor.begin(first_seed, self.sim.time_s, self._object_poses())
        self._publish_task_state(self._judge(with_goal=True)[0])
        if not sc.publishes_camera_info:
            self.get_logger().info('image_orientation libero_eval: images mirrored left-right as LIBERO\'s '
                                   'evaluator feeds them; no camera_info (a mirrored view has no pinhole model)')

        period = 1.0 / p['rate_hz'] / (p['real_time_factor'] if self.sim_time else 1.0)
        # A steady-clock timer: with use_sim_time the node's own clock follows the /clock it publishes.
        self._timer = self.create_timer(period, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'simulated Panda up: scene {sc.scene}, {sc.width_px}x{sc.height_px} camera "{sc.camera}"'
            f'{f" + wrist {sc.wrist_camera!r}" if sc.wrist_camera else ""} ({sc.orientation} orientation) at '
            f'{p["camera_rate_hz"]} Hz, ticks at {p["rate_hz"]} Hz, '
            f'{"simulation time (/clock)" if self.sim_time else "wall-clock time"}; trajectories on '
            f'{p["controller_name"]}/joint_trajectory')
        if self.sim_time:
            self._publish_clock()

    # ------------------------------------------------------------------ time

    def clock_s(self) -> float:
        """The controller clock now: simulation time, or the node's (system) time."""
        if self.sim_time:
            return self._clock_offset_s + self.sim.time_s
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish_clock(self) -> None:
        self.pub_clock.publish(ClockMsg(clock=stamp_of(self.clock_s())))

    # ------------------------------------------------------------------ the task

    def _make_monitor(self) -> TaskMonitor:
        task = self.sim.libero_task
        if task is None:
            rule = LiftSuccess('cube', self.params['lift_height_m'], self.params['hold_s'])
            return TaskMonitor('lift', 'lift', LIFT_INSTRUCTION, rule)
        return TaskMonitor('libero', str(task.meta['task_name']), task.language, GoalSuccess(),
                           max_seed=task.n_init_states - 1, seed_name='official initial state')

    def _object_poses(self) -> dict:
        if self.sim.libero_task is None:
            pose = self.sim.cube_pose()
            return {pose.name: pose}
        poses = {}
        for name, body in (self._libero_judge.objects.items() if self._libero_judge else ()):
            t = self.sim.body_pose(body)
            poses[name] = ObjectPose(name, tuple(float(v) for v in t[:3, 3]), rotation_to_quaternion_xyzw(t[:3, :3]))
        return poses

    def _judge_libero_goal(self) -> None:
        """libero: LIBERO's own verdict on the current state (a round trip to its process: at the camera rate)."""
        if self._libero_judge is None:
            return
        try:
            result = self._libero_judge.judge(self.sim.data.qpos, self.sim.data.qvel)
            self.monitor.rule.set(result.success, result.reason)
        except Exception as e:  # noqa: BLE001  (the arm goes on; the state says why it is not judged)
            self.monitor.rule.set(False, f'LIBERO success check failed: {e}')
            self.get_logger().warning(f'LIBERO success check failed: {e}', throttle_duration_sec=5.0)

    def _judge(self, with_goal: bool = False):
        if with_goal:
            self._judge_libero_goal()
        return self.monitor.update(self.sim.time_s, self._object_poses())

    def _publish_task_state(self, status: TaskStatus) -> TaskState:
        msg = task_state_msg(status, stamp_of(self.clock_s()))
        self.pub_task_state.publish(msg)
        return msg

    def _on_reset_episode(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        status = self.monitor.status
        try:
            seed = self.monitor.next_seed(int(request.seed))   # libero: an initial state of the task
        except ValueError as e:
            response.success, response.message = False, f'reset refused: {e}'
            response.state = task_state_msg(status, stamp_of(self.clock_s()))
            self.get_logger().warning(response.message)
            return response
        if self.sim_time:
            self._clock_offset_s += self.sim.time_s
        self.sim.reset(seed)
        self._residual_s = 0.0
        self.monitor.begin(seed, self.sim.time_s, self._object_poses())
        status = self._judge(with_goal=True)[0]
        response.state = self._publish_task_state(status)
        response.success = True
        response.message = f'episode {status.episode}, seed {seed}'
        self.get_logger().info(f'new episode {status.episode} (seed {seed})')
        return response

    # ------------------------------------------------------------------ inputs

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            kept = self.sim.command_trajectory(trajectory_command(msg), self.clock_s())
        except TrajectoryRejected as e:
            self.rejected += 1
            self.get_logger().warning(f'trajectory rejected: {e}')
            return
        if kept == 0:
            self.get_logger().info('empty trajectory: holding the current position')

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        values = list(msg.data)
        if len(values) != 1 or not math.isfinite(values[0]):
            self.get_logger().warning(
                f'gripper command needs one finite value (finger position in m, 0..0.04), got {values}')
            return
        used = self.sim.set_gripper(values[0])
        if used != values[0]:
            self.get_logger().warning(f'gripper command {values[0]} m clamped to {used} m (range 0..0.04)')

    # ------------------------------------------------------------------ the loop

    def _tick(self) -> None:
        if self.done:
            return
        try:
            self._advance_and_publish()
        except RCLError as e:  # a publish refused (e.g. while the context shuts down): not fatal
            self.get_logger().warning(f'publish failed: {e}', throttle_duration_sec=5.0)

    def _advance_and_publish(self) -> None:
        if self.sim_time:
            self.sim.step(self._steps_per_tick, clock_s=self.clock_s())
            now_s = self.clock_s()
            self._publish_clock()
        else:
            now_s = self.clock_s()
            if self._last_clock_s is None:
                self._last_clock_s = now_s
            elapsed = now_s - self._last_clock_s + self._residual_s
            dt = self.sim.physics_step_s
            steps = int(elapsed // dt) if elapsed > 0 else 0
            cap = int(MAX_CATCH_UP_S / dt)
            if steps > cap:
                self.get_logger().warning('simulation is slower than real time: skipping ahead',
                                          throttle_duration_sec=5.0)
                steps, self._residual_s = cap, 0.0
            else:
                self._residual_s = elapsed - steps * dt
            self.sim.step(steps, clock_s=self._last_clock_s)
            self._last_clock_s = now_s
        stamp = stamp_of(now_s)
        self._publish_state(stamp)
        rate = self.params['camera_rate_hz']
        image_due = rate > 0 and (self._next_image_s is None or now_s >= self._next_image_s - 1e-9)
        status, changed = self._judge(with_goal=image_due or rate == 0)
        if changed:
            self.pub_task_state.publish(task_state_msg(status, stamp))
        if image_due:
            self._publish_images(stamp)
            if not changed:
                self.pub_task_state.publish(task_state_msg(status, stamp))
            period = 1.0 / rate
            nxt = (self._next_image_s or now_s) + period
            self._next_image_s = nxt if nxt > now_s else now_s + period
        self.ticks += 1
        if self.params['max_steps'] and self.ticks >= self.params['max_steps']:
            self.done = True
            self._timer.cancel()
            self.get_logger().info(f'max_steps={self.params["max_steps"]} reached: stopping')

    def _publish_state(self, stamp: TimeMsg) -> None:
        js = self.sim.joint_state()
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(js.names)
        msg.position = js.positions.tolist()
        msg.velocity = js.velocities.tolist()
        msg.effort = js.efforts.tolist()
        self.pub_joints.publish(msg)
        ee, cam = self.sim.ee_pose(), self.sim.camera_pose()
        self.pub_ee_pose.publish(pose_stamped(ee, stamp))
        self.pub_camera_pose.publish(pose_stamped(cam, stamp))
        if self.pub_tf is not None:
            transforms: List[TransformStamped] = [transform_stamped(cam, stamp)]
            if self.params['publish_ee_tf']:
                transforms.append(transform_stamped(ee, stamp))
            self.pub_tf.publish(TFMessage(transforms=transforms))

    def _publish_images(self, stamp: TimeMsg) -> None:
        from .sim.scene import orient
        frame = self.sim.render()
        header = Header(stamp=stamp, frame_id=self.params['camera_frame'])
        o = self.scene.orientation
        self.pub_image.publish(numpy_to_image(orient(frame.rgb, o), 'rgb8', header))
        self.pub_depth.publish(numpy_to_image(orient(frame.depth_m, o), '32FC1', header))
        if self.pub_info is not None:
            self.pub_info.publish(camera_info(self.sim, header))
        if self.pub_wrist is not None:
            self.pub_wrist.publish(numpy_to_image(orient(self.sim.render_wrist(), o), 'rgb8', header))

    def destroy_node(self) -> None:
        if self._libero_judge is not None:
            self._libero_judge.close()
        self.sim.close()
        super().destroy_node()


def main(argv=None) -> int:
    rclpy.init(args=argv)
    node = None
    from .sim.libero_task import LiberoExportError, LiberoUnavailable
    try:
        node = SimArmNode()
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (LiberoUnavailable, LiberoExportError) as e:
        print(f'sim_arm: {e}', file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001
        # SIGINT/SIGTERM shut the context down between two checks of rclpy.ok(): spin_once then fails on the
        # invalid context; that is a normal stop. Anything else is an error.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
