"""The command sink node (nodes/command_sink.py) closing the loop with a fake joint_trajectory_controller.

One process: the sink, and a harness node that plays the arm (a JointTrajectoryFollower integrating the
last JointTrajectory, publishing joint_states), the camera (image frames that can be stopped), the
robot_description and the model (hand-built ActionChunks stamped now). A second sink in servo_twist mode
talks to a fake MoveIt Servo subscriber; a third, in servo_pose mode, drives a fake MoveIt Servo pose
tracker (ServoPoseArm) that moves the end effector toward the newest PoseStamped target at a limited speed,
drops targets older than Servo's incoming_command_timeout, and publishes the joint states it reaches.
"""

import collections
import gc
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped, Vector3
from molmoact_msgs.msg import ActionChunk, ActionStep, NodeStatus
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory
from transforms3d.axangles import axangle2mat, mat2axangle

from suite_helpers.spinning import spin_recording

from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, JointTrajectoryFollower, TrajectoryPoint
from molmoact_ros.cores.chunk_intake import Intake
from molmoact_ros.nodes.command_sink import CommandSinkNode
from molmoact_ros.robot.executor import MIN_TIME_FRACTION
from molmoact_ros.robot.kinematics import ArmKinematics
from molmoact_ros.robot.safety import ClipKind, HaltCause
from molmoact_ros.ros.transforms import matrix_to_pose, pose_msg_to_matrix

ROOT = Path(__file__).resolve().parents[1]
URDF = (ROOT / 'src' / 'molmoact_bringup' / 'urdf' / 'panda.urdf').read_text()
PROFILE = ROOT / 'config' / 'robots' / 'sim_panda.yaml'
ARM = [f'panda_joint{i}' for i in range(1, 8)]
Q0 = [0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785]
from molmoact_ros.ros.topics import LATCHED
KIN = ArmKinematics.from_urdf(URDF, base_frame='panda_link0', ee_frame='panda_hand_tcp', joint_names=ARM)
# The profile's own camera timeout. A shorter one (0.3 s) halted a servo test mid-chunk in CI: the loaded
# 2-core machine stalled the harness's 20 Hz camera for longer than that (a correct stale-camera halt).
CAMERA_TIMEOUT_S = 1.0
HOLD_TIME_S = 0.04
# The sinks anchor a chunk to the joint state nearest its stamp (default tolerance 0.1 s). The harness's 100 Hz
# joint states can pause for longer when a loaded machine stalls the rig's executor (CI: a chunk dropped, no
# state within 0.1 s of its stamp), and these tests are not about that tolerance.
ANCHOR_TOLERANCE_S = 0.5
# Joint states older than this are no robot state (default 0.5 s): a hold then has no measured joints or pose
# (an empty JointTrajectory; no servo_pose hold). Like the camera's, a stall of the rig up to this long is no
# halt these tests look for.
JOINT_STATE_TIMEOUT_S = 1.0
# servo_pose: how long a target is re-sent after its step (default 0.5 s). The fake Servo drops targets older
# than 0.1 s, so a stalled rig costs it motion; the keep-alive gives it time to reach the last target.
SERVO_POSE_KEEPALIVE_S = 2.0


def _anchor():
    return Parameter('anchor_tolerance_s', value=ANCHOR_TOLERANCE_S)


def _state_timeout():
    return Parameter('joint_state_timeout_s', value=JOINT_STATE_TIMEOUT_S)


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)
    return predicate()


def duration_s(d):
    return d.sec + d.nanosec * 1e-9


class Arm:
    """The harness: fake JTC + joint_states, camera, robot_description, chunk source, sink clients."""

    def __init__(self, ns):
        self.ns = ns
        self.node = rclpy.create_node('arm_harness', namespace=ns)
        n = self.node
        self.lock = threading.Lock()
        self.follower = JointTrajectoryFollower(ARM, Q0)
        self.trajectories = []   # (monotonic time, JointTrajectory)
        self.gripper = []
        self.twists = []
        self.poses = []
        self.status = []
        self.diagnostics = []
        self.camera_on = True
        self.beats = 0  # joint-state timer calls: the executor is alive while this grows
        self.published = collections.deque(maxlen=3000)  # (monotonic time, joint positions) of each joint state
        n.create_subscription(JointTrajectory, 'joint_trajectory_controller/joint_trajectory', self._on_traj, 10)
        n.create_subscription(Float64MultiArray, 'gripper_controller/commands', self.gripper.append, 10)
        n.create_subscription(TwistStamped, 'servo_node/delta_twist_cmds',
                              lambda m: self.twists.append((time.monotonic(), m)), 50)
        n.create_subscription(PoseStamped, 'command_sink/commanded_pose', self.poses.append, 50)
        n.create_subscription(NodeStatus, 'command_sink/status', self.status.append, LATCHED)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.joint_pub = n.create_publisher(JointState, 'joint_states', 10)
        self.image_pub = n.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.chunk_pub = n.create_publisher(ActionChunk, 'action_chunk', 10)
        self.e_stop_pub = n.create_publisher(Bool, 'e_stop', 10)
        n.create_publisher(String, 'robot_description', LATCHED).publish(String(data=URDF))
        self.enable_client = n.create_client(SetBool, 'command_sink/enable')
        self.reset_client = n.create_client(Trigger, 'command_sink/reset_e_stop')
        self._timers = [n.create_timer(0.01, self._publish_joints), n.create_timer(0.05, self._publish_image)]

    def run(self, on=True):
        """Start (or stop) this harness's timers. The rig runs only the harness of the test at hand: eight
        nodes' 100 Hz timers in one Python process loaded a 2-core machine so much that ticks came late."""
        for timer in self._timers:
            timer.reset() if on else timer.cancel()

    def _on_diag(self, msg):
        for status in msg.status:
            if status.name.endswith(f'{self.ns}/command_sink'):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def _on_traj(self, msg):
        cmd = JointTrajectoryCommand(tuple(msg.joint_names), tuple(
            TrajectoryPoint(duration_s(p.time_from_start), tuple(p.positions)) for p in msg.points),
            start_time_s=0.0)
        with self.lock:
            self.trajectories.append((time.monotonic(), msg))
            self.follower.accept(cmd, time.monotonic())

    def q(self):
        with self.lock:
            return self.follower.sample(time.monotonic()).positions_rad.copy()

    def _publish_joints(self):
        self.beats += 1
        msg = JointState(name=ARM + ['panda_finger_joint1', 'panda_finger_joint2'])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        q = [float(v) for v in self.q()]
        msg.position = q + [0.04, 0.04]
        with self.lock:
            self.published.append((time.monotonic(), q))
        self.joint_pub.publish(msg)

    def published_between(self, t0, t1):
        """The arm joint positions published as joint states from ``t0`` to ``t1``."""
        with self.lock:
            return [q for t, q in self.published if t0 <= t <= t1]

    def _publish_image(self):
        if self.camera_on:
            img = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
            img.header.stamp = self.node.get_clock().now().to_msg()
            self.image_pub.publish(img)

    def chunk(self, dx=0.01, steps=8, *, period=0.1, request_id='r', plan_only=False, values=7, dy=0.0,
              gripper=0.9, max_translation=0.0):
        msg = ActionChunk(request_id=request_id, step_period_s=period, action_dim=values,
                          rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for _ in range(steps):
            msg.steps.append(ActionStep(translation_m=Vector3(x=float(dx), y=float(dy), z=0.0),
                                        rotation_rad=Vector3(), gripper=float(gripper),
                                        values=[float(dx), float(dy), 0.0, 0.0, 0.0, 0.0, float(gripper)][:values]))
        msg.constraints.plan_only = plan_only
        msg.constraints.max_translation_m_per_step = float(max_translation)
        self.chunk_pub.publish(msg)
        return msg

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(request)
        assert wait_for(future.done, 5.0)
        return future.result()

    def enable(self, on=True):
        return self.call(self.enable_client, SetBool.Request(data=on))

    def reset_e_stop(self):
        return self.call(self.reset_client, Trigger.Request())

    def n_traj(self):
        with self.lock:
            return len(self.trajectories)

    def trajs_since(self, index):
        with self.lock:
            return [m for _, m in self.trajectories[index:]]


class ServoPoseArm(Arm):
    """A fake MoveIt Servo in pose-tracking mode plus the arm it moves.

    Like Servo: the newest PoseStamped on ``servo_node/pose_target_cmds`` is the target while its stamp is
    younger than ``incoming_command_timeout`` (0.1 s); a stale target stops the arm where it is. Each cycle
    (nominally 10 ms) the end effector moves toward the target by at most SPEED_M_S (and ANGULAR_RAD_S) times
    the time since the last cycle, as a real Servo integrates its velocity over time, so a loaded machine
    that runs the cycles late does not slow the arm down; the joints come from IK of that intermediate pose,
    and joint_states report them.
    """

    TIMEOUT_S = 0.1
    SPEED_M_S = 0.1
    ANGULAR_RAD_S = 0.5
    PERIOD_S = 0.01
    MAX_DT_S = 0.05  # a cycle never moves further than 5 nominal cycles would

    def __init__(self, ns):
        super().__init__(ns)
        self._q_servo = np.array(Q0)
        self._last_cycle = None
        self.targets = []  # (monotonic time, PoseStamped)
        self.path = collections.deque(maxlen=5000)  # (monotonic time, end-effector position) after each move
        self.stale_cycles = 0
        self.node.create_subscription(PoseStamped, 'servo_node/pose_target_cmds', self._on_target, 50)
        self._timers.append(self.node.create_timer(self.PERIOD_S, self._servo_cycle))

    def _on_target(self, msg):
        with self.lock:
            self.targets.append((time.monotonic(), msg))

    def q(self):
        with self.lock:
            return self._q_servo.copy()

    def _servo_cycle(self):
        now = time.monotonic()
        dt = self.PERIOD_S if self._last_cycle is None else min(now - self._last_cycle, self.MAX_DT_S)
        self._last_cycle = now
        with self.lock:
            if not self.targets:
                return
            msg = self.targets[-1][1]
            q = self._q_servo.copy()
        age = (self.node.get_clock().now().nanoseconds * 1e-9
               - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
        if age >= self.TIMEOUT_S:
            with self.lock:
                self.stale_cycles += 1
            return
        assert msg.header.frame_id == 'panda_link0'
        current, target = KIN.fk(q), pose_msg_to_matrix(msg.pose)
        step = target[:3, 3] - current[:3, 3]
        distance = np.linalg.norm(step)
        reach = self.SPEED_M_S * dt
        goal = current.copy()
        goal[:3, 3] += step if distance <= reach else step * (reach / distance)
        R_rel = target[:3, :3] @ current[:3, :3].T
        angle = np.arccos(np.clip((np.trace(R_rel) - 1.0) / 2.0, -1.0, 1.0))
        fraction = 1.0 if angle <= self.ANGULAR_RAD_S * dt else self.ANGULAR_RAD_S * dt / angle
        if angle > 1e-9:
            axis, theta = mat2axangle(R_rel)
            goal[:3, :3] = axangle2mat(axis, theta * fraction) @ current[:3, :3]
        else:
            goal[:3, :3] = target[:3, :3]
        result = KIN.ik(goal, q)
        with self.lock:
            self._q_servo = result.q
            self.path.append((time.monotonic(), ee(result.q)))

    def positions_between(self, t0, t1):
        """End-effector positions the arm had from ``t0`` to ``t1`` (the one it had at t0 included)."""
        with self.lock:
            path = list(self.path)
        before = [p for t, p in path if t < t0][-1:]
        return before + [p for t, p in path if t0 <= t <= t1]

    def targets_since(self, index):
        with self.lock:
            return self.targets[index:]


SERVO_POSE_BOX_X_MARGIN_M = 0.045


def _profile(tmp_path, name='sim_panda', **safety):
    data = yaml.safe_load(PROFILE.read_text())
    data['safety']['camera_timeout_s'] = CAMERA_TIMEOUT_S
    data['safety'].update(safety)
    path = tmp_path / f'{name}.yaml'
    data['name'] = name
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    rclpy.init()
    profile = _profile(tmp_path_factory.mktemp('profile'))
    executor = MultiThreadedExecutor(num_threads=4)
    arm = Arm('/jtc')
    sink = CommandSinkNode(namespace='/jtc', parameter_overrides=[
        Parameter('robot_profile', value=profile), _anchor(), _state_timeout(),
        Parameter('hold_time_s', value=HOLD_TIME_S),
        Parameter('status_period_s', value=0.2)])
    servo_arm = Arm('/servo')
    servo_sink = CommandSinkNode(namespace='/servo', parameter_overrides=[
        Parameter('robot_profile', value=profile), _anchor(), _state_timeout(),
        Parameter('sink', value='servo_twist'),
        Parameter('execution_enabled', value=True)])
    dry_arm = Arm('/dry')
    dry_sink = CommandSinkNode(namespace='/dry', parameter_overrides=[
        Parameter('robot_profile', value=profile), _anchor(), _state_timeout(), Parameter('sink', value='none'),
        Parameter('execution_enabled', value=True)])
    # servo_pose: the workspace box ends SERVO_POSE_BOX_X_MARGIN_M in front of the start pose (x).
    box_max = [float(ee(Q0)[0]) + SERVO_POSE_BOX_X_MARGIN_M, 0.5, 0.8]
    pose_profile = _profile(tmp_path_factory.mktemp('pose_profile'), 'sim_panda_box', workspace_max_m=box_max)
    pose_arm = ServoPoseArm('/pose')
    pose_sink = CommandSinkNode(namespace='/pose', parameter_overrides=[
        Parameter('robot_profile', value=pose_profile), _anchor(), _state_timeout(),
        Parameter('sink', value='servo_pose'),
        Parameter('servo_pose_keepalive_s', value=SERVO_POSE_KEEPALIVE_S)])
    nodes = (arm.node, sink, servo_arm.node, servo_sink, dry_arm.node, dry_sink, pose_arm.node, pose_sink)
    for node in nodes:
        executor.add_node(node)
    escaped = []
    thread = threading.Thread(target=spin_recording, args=(executor, escaped), daemon=True)
    thread.start()
    yield {'escaped': escaped, 'arm': arm, 'sink': sink, 'servo_arm': servo_arm, 'servo_sink': servo_sink,
           'dry_arm': dry_arm,
           'dry_sink': dry_sink, 'pose_arm': pose_arm, 'pose_sink': pose_sink, 'pose_box_max': box_max}
    executor.shutdown()
    thread.join(timeout=10)
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown()


@pytest.fixture(autouse=True)
def no_callback_escapes(request):
    """Fail the test during which a callback (the sink's or the harness's) raised out of the executor."""
    if 'rig' not in request.fixturenames:
        yield
        return
    rig = request.getfixturevalue('rig')
    name = request.node.name
    key = ('pose_arm' if 'servo_pose' in name else 'servo_arm' if 'servo_twist' in name
           else 'dry_arm' if 'dry_run' in name else 'arm')
    for other in ('arm', 'servo_arm', 'pose_arm', 'dry_arm'):
        rig[other].run(other == key)  # only the harness of this test runs
    escaped = rig['escaped']
    n = len(escaped)
    yield
    assert escaped[n:] == [], ''.join(escaped[n:])
    # The executor still runs callbacks (a stuck rig would fail every later test): else show every thread.
    arm = rig[key]
    beats = arm.beats
    assert wait_for(lambda: arm.beats > beats, 10.0), 'the rig executor stopped running callbacks:\n' + ''.join(
        f'--- thread {ident}\n' + ''.join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items())


def ee(q):
    return KIN.fk(q)[:3, 3]


def _last_is_hold(arm):
    """Whether the newest JointTrajectory the fake controller received is the sink's hold (HOLD_TIME_S).
    Waiting for it, not for a fixed time, is what makes the count taken next final on a loaded machine."""
    trajs = arm.trajs_since(max(arm.n_traj() - 1, 0))
    return bool(trajs) and _is_hold(trajs[-1])


def _sink_state(sink):
    """What a failed wait shows: the sink's counters, last error and diagnostics."""
    return (f'dropped {sink.inputs_dropped}, errors {sink.errors}, last error {sink.last_error!r}, '
            f'diagnostics {dict(sink.diagnostic_values())}')


class Steps:
    """The steps of the chunks a test sends, as the sink accounts for them (counted from construction).

    Each step is commanded once or skipped: a control tick that comes after a step's whole period (a stalled
    rig on a loaded machine) finds a newer step due, and the executor drops the older one, counted in
    ``skipped_steps``, never sends it late (robot/executor.py; tested with injected time in
    src/molmoact_ros/test/robot and test/cores). So the rig asserts that each step was sent or skipped and at
    least one was sent, never that every step got a control tick of its own.
    """

    def __init__(self, sink):
        self.sink = sink
        self.sent0 = sink.commands_sent
        self.skipped0 = sink.arm_executor.queue.skipped_steps

    @property
    def sent(self):
        return self.sink.commands_sent - self.sent0

    @property
    def skipped(self):
        return self.sink.arm_executor.queue.skipped_steps - self.skipped0

    def _count(self, *kinds):
        return sum(self.sink.intake.counts[kind] for kind in kinds)

    def run(self, send, n, attempts=3, timeout=10.0):
        """``send()`` a chunk of ``n`` steps and wait until each was sent or skipped; returns how many were sent.

        A chunk that commanded nothing changed nothing: it is sent again (``attempts`` chunks at most), so that
        at least one step is sent. That happens when the rig stalled for longer than the whole chunk: every step
        was skipped, or the chunk arrived after its last step's time and was refused (expired, counted).
        """
        def state():
            return self.sent, self.skipped, _sink_state(self.sink)

        for _ in range(attempts):
            sent, skipped = self.sent, self.skipped
            accepted, refused = self._count(Intake.ACCEPTED), self._count(Intake.REFUSED, Intake.DROPPED)
            send()
            assert wait_for(lambda: self._count(Intake.REFUSED, Intake.DROPPED) > refused or (
                self._count(Intake.ACCEPTED) > accepted and self.sent + self.skipped >= sent + skipped + n),
                timeout), state()
            assert self.sent + self.skipped in (sent + skipped, sent + skipped + n), state()
            if self.sent > sent:
                return self.sent
        raise AssertionError(f'none of {attempts} chunks commanded a step: {state()}')


def _is_hold(traj):
    """A hold: one point at HOLD_TIME_S, or no point (a hold without measured joints: JTC stops)."""
    return not traj.points or duration_s(traj.points[0].time_from_start) == pytest.approx(HOLD_TIME_S)


def _step_trajs(arm, index, n):
    """The step commands (holds left out) the fake controller received since ``index``, once ``n`` arrived."""
    assert wait_for(lambda: sum(not _is_hold(t) for t in arm.trajs_since(index)) >= n, 10.0)
    return [t for t in arm.trajs_since(index) if not _is_hold(t)]


def test_configure_activate_and_nothing_commanded_while_disabled(rig):
    arm, sink = rig['arm'], rig['sink']
    from rclpy.lifecycle import TransitionCallbackReturn as R
    assert sink.trigger_configure() == R.SUCCESS
    # configure froze the heap alive then (the sink and its governor among it): no full-collection stalls
    assert gc.get_freeze_count() > 0 and not any(o is sink.governor for o in gc.get_objects())
    assert sink.trigger_activate() == R.SUCCESS
    assert wait_for(lambda: sink.kinematics is not None and sink._q is not None)
    arm.chunk(request_id='disabled')
    time.sleep(1.0)
    assert arm.n_traj() == 0 and arm.gripper == []
    assert not sink.execution_enabled()
    assert wait_for(lambda: arm.status and arm.status[-1].lifecycle_label == 'active')
    assert arm.status[-1].execution_enabled is False


def test_enabled_chunk_moves_the_end_effector_along_the_deltas(rig):
    arm, sink = rig['arm'], rig['sink']
    assert arm.enable().success
    assert sink.execution_enabled()
    start = ee(arm.q())
    before = arm.n_traj()
    clips0 = dict(sink.governor.clip_counts)
    # Each step commanded once or skipped (CI: 7 of 8 commanded, 1 skipped; 3 of 8 skipped under a stall).
    steps = Steps(sink)
    sent = steps.run(lambda: arm.chunk(dx=0.01, steps=8, request_id='move'), 8)
    trajs = _step_trajs(arm, before, sent)
    assert len(trajs) == sent and all(list(t.joint_names) == ARM and len(t.points) == 1 for t in trajs)
    targets = np.array([ee(np.array(t.points[0].positions)) for t in trajs])
    # The commanded end-effector path follows the +1 cm x deltas from the observation pose, in order: on the
    # line through the start, always forward, never past the last step, each within the 3 cm step limit of the
    # previous command ...
    x = targets[:, 0] - start[0]
    assert np.allclose(targets[:, 1:], start[1:], atol=2e-3), targets - start
    assert np.all(np.diff(np.concatenate([[0.0], x])) > 0) and x[-1] <= 0.08 + 2e-3, x
    assert np.all(np.linalg.norm(np.diff(np.vstack([start, targets]), axis=0), axis=1) <= 0.03 + 1e-6), x
    # ... and each command is the pose of a later step than the command before it, or was clipped short of
    # it: a step picked up late (after a skipped one, or with little of its period left: at least
    # executor.MIN_TIME_FRACTION of it) must not outrun the joint velocity limit (CI: 2.9 mm short, 20 ms left).
    last_step, off = 0, 0
    for xi in x:
        k = int(round(xi / 0.01))
        if abs(xi - 0.01 * k) < 2e-3 and last_step < k <= 8:
            last_step = k
        else:
            off += 1
    clipped = sum(sink.governor.clip_counts[kind] - clips0.get(kind, 0)
                  for kind in (ClipKind.JOINT_VELOCITY, ClipKind.STEP_TRANSLATION))
    assert off <= clipped, (x, clipped)
    # The fake controller followed: the measured end effector ends where the last command said.
    assert wait_for(lambda: np.linalg.norm(ee(arm.q()) - targets[-1]) < 2e-3, 10.0), ee(arm.q()) - targets[-1]
    # Gripper: raw 0.9 > 0.5 -> open (0.04 m) sent once.
    assert wait_for(lambda: arm.gripper, 10.0) and [list(g.data) for g in arm.gripper] == [[0.04]]
    assert wait_for(lambda: len(arm.poses) >= sent, 10.0)
    total = str(steps.sent0 + sent)
    assert wait_for(lambda: arm.diagnostics and arm.diagnostics[-1].get('commands sent') == total, 10.0)
    diag = arm.diagnostics[-1]
    # An executed step lags its plan by at most max_action_age_s (1 s); the last one is planned 0.7 s after the
    # observation.
    assert float(diag['action age at execution s']) <= 1.0 + 0.7 and diag['sink mode'] == 'joint_trajectory'


def test_per_step_limits_and_plan_only(rig):
    arm, sink = rig['arm'], rig['sink']
    before = arm.n_traj()
    arm.chunk(dx=0.01, steps=5, request_id='plan', plan_only=True)
    assert wait_for(lambda: sink.plan_only_chunks == 1, 10.0), _sink_state(sink)
    # A plan-only chunk commands nothing: it never reaches the queue (the decision: test_chunk_intake.py).
    assert sink.arm_executor.queue.timeline is None
    assert arm.n_traj() == before
    # A tighter per-step limit from the chunk's constraints: 2 cm steps clipped to 5 mm.
    start = ee(arm.q())
    clips = sink.governor.clip_counts
    n_clips = sum(clips.values())
    # (a step skipped by a late tick is counted; the next one still moves at most 5 mm)
    sent = Steps(sink).run(lambda: arm.chunk(dx=0.02, steps=4, request_id='tight', max_translation=0.005), 4)
    targets = [ee(np.array(t.points[0].positions)) for t in _step_trajs(arm, before, sent)]
    assert len(targets) == sent
    steps = np.diff(np.vstack([start, *targets]), axis=0)
    assert np.all(np.linalg.norm(steps, axis=1) <= 0.005 + 1e-4), steps
    assert sum(sink.governor.clip_counts.values()) > n_clips


def test_e_stop_holds_and_resume_sends_nothing_queued(rig):
    arm, sink = rig['arm'], rig['sink']
    holds = sink.holds_sent
    steps = Steps(sink)
    arm.chunk(dx=0.005, steps=30, request_id='long')  # 3 s: still running when execution resumes below
    assert wait_for(lambda: steps.sent >= 1, 10.0), _sink_state(sink)
    t_e_stop = time.monotonic()
    arm.e_stop_pub.publish(Bool(data=True))
    assert wait_for(lambda: sink.holds_sent == holds + 1, 10.0)
    t_hold = time.monotonic()
    assert wait_for(lambda: _last_is_hold(arm), 10.0)  # the hold is the last command the arm received
    at_stop = arm.n_traj()
    hold = list(arm.trajs_since(at_stop - 1)[0].points[0].positions)
    # The hold is at the measured joints: a joint state the arm published (the one the sink last received, at
    # most JOINT_STATE_TIMEOUT_S old when received, and perhaps delayed on the way) before the hold.
    assert hold in arm.published_between(t_e_stop - 2 * JOINT_STATE_TIMEOUT_S, t_hold)
    assert wait_for(lambda: np.allclose(arm.q(), hold, atol=1e-6), 5.0)  # ... and the arm holds there
    arm.chunk(dx=0.005, steps=8, request_id='during_stop')
    assert not arm.enable().success  # refused while latched
    time.sleep(0.3)
    assert arm.n_traj() == at_stop
    assert arm.reset_e_stop().success and arm.enable().success
    time.sleep(0.8)  # chunk 'long' would still have steps due: none of them fires
    assert arm.n_traj() == at_stop
    sent = Steps(sink).run(lambda: arm.chunk(dx=0.005, steps=3, request_id='after'), 3)  # a new chunk runs
    assert len(_step_trajs(arm, at_stop, sent)) == sent
    assert sink.governor.halt_counts[HaltCause.E_STOP] == 1


def test_stale_camera_halts_with_a_hold(rig):
    arm, sink = rig['arm'], rig['sink']
    holds = sink.holds_sent
    steps = Steps(sink)
    arm.chunk(dx=-0.003, steps=20, request_id='stale')
    assert wait_for(lambda: steps.sent >= 1, 10.0), _sink_state(sink)
    arm.camera_on = False
    try:
        assert wait_for(lambda: sink.holds_sent == holds + 1, CAMERA_TIMEOUT_S + 2.0)
        assert wait_for(lambda: _last_is_hold(arm), 10.0)
        at_halt = arm.n_traj()
        time.sleep(0.5)
        assert arm.n_traj() == at_halt
        assert sink.governor.diagnostics().halted_cause.value == 'stale_camera'
    finally:
        arm.camera_on = True
    time.sleep(0.3)  # camera back: nothing from before the halt follows
    assert arm.n_traj() == at_halt


def test_bad_chunks_are_errors_and_the_node_keeps_running(rig):
    arm, sink = rig['arm'], rig['sink']
    errors = sink.errors
    nan = arm.chunk(dx=float('nan'), steps=3, request_id='nan')
    assert wait_for(lambda: sink.errors == errors + 1)
    assert wait_for(lambda: 'non-finite' in arm.status[-1].last_error)
    arm.chunk(dx=0.01, steps=3, request_id='six', values=6)
    assert wait_for(lambda: sink.errors == errors + 2)
    assert wait_for(lambda: 'action_dim 6' in arm.status[-1].last_error)
    assert nan.request_id == 'nan' and sink.rejected_chunks == 2
    # issue 15: a non-finite observation quaternion (was: an uncaught ValueError, not counted) and a stamp far
    # ahead (was: held without a word) are counted rejections whose errors quote the 10 KB request id bounded
    bad = ActionChunk(request_id='q' * 10_000, step_period_s=0.1, action_dim=7,
                      rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
    bad.header.stamp = arm.node.get_clock().now().to_msg()
    bad.steps = [ActionStep(values=[0.0] * 7)]
    bad.observation_pose_valid = True
    bad.observation_pose.header.frame_id = 'panda_link0'
    bad.observation_pose.pose.orientation.w = float('nan')
    arm.chunk_pub.publish(bad)
    assert wait_for(lambda: sink.errors == errors + 3), _sink_state(sink)
    assert wait_for(lambda: 'observation_pose orientation' in arm.status[-1].last_error)
    future = ActionChunk(request_id='future', step_period_s=0.1, action_dim=7,
                         rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
    future.header.stamp.sec = arm.node.get_clock().now().to_msg().sec + 30
    future.steps = [ActionStep(values=[0.0] * 7)]
    arm.chunk_pub.publish(future)
    assert wait_for(lambda: sink.errors == errors + 4), _sink_state(sink)
    assert wait_for(lambda: 'ahead' in arm.status[-1].last_error)
    assert sink.rejected_chunks == 4 and sink.intake.pending is None
    assert max(len(st.last_error) for st in arm.status[-10:]) < 500
    assert arm.status[-1].lifecycle_label == 'active'
    before = arm.n_traj()
    sent = Steps(sink).run(lambda: arm.chunk(dx=0.005, steps=3, request_id='good'), 3)  # the node keeps running
    assert len(_step_trajs(arm, before, sent)) == sent


def test_deactivate_holds_then_commands_nothing(rig):
    arm, sink = rig['arm'], rig['sink']
    from rclpy.lifecycle import TransitionCallbackReturn as R
    steps = Steps(sink)
    arm.chunk(dx=0.003, steps=20, request_id='deact')
    assert wait_for(lambda: steps.sent >= 1, 10.0), _sink_state(sink)
    assert sink.trigger_deactivate() == R.SUCCESS
    assert wait_for(lambda: _last_is_hold(arm), 10.0)
    after = arm.n_traj()
    arm.chunk(dx=0.003, steps=5, request_id='inactive')
    time.sleep(0.7)
    assert arm.n_traj() == after
    assert wait_for(lambda: arm.status[-1].lifecycle_label == 'inactive' and not arm.status[-1].execution_enabled)
    assert sink.trigger_cleanup() == R.SUCCESS


def test_input_handlers_return_quietly_once_the_core_is_gone(rig):
    """The executor may run a callback for a message it took before cleanup destroyed the subscription; the
    handler then finds no core (was: AttributeError 'NoneType' ... in _on_joint_states, recorded as an error)."""
    from rclpy.lifecycle import TransitionCallbackReturn as R
    sink = CommandSinkNode(namespace='/gone', parameter_overrides=[
        Parameter('robot_description_source', value='profile')])
    try:
        assert sink.trigger_configure() == R.SUCCESS and sink.kinematics is not None
        assert sink.trigger_cleanup() == R.SUCCESS and sink.intake is None
        errors = sink.errors
        state = JointState(name=ARM, position=Q0)
        state.header.stamp = sink.get_clock().now().to_msg()
        chunk = ActionChunk(request_id='late', step_period_s=0.1, action_dim=7,
                            rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
        chunk.header.stamp = state.header.stamp
        chunk.steps = [ActionStep(values=[0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9])]
        sink._on_joint_states(state)
        sink._on_chunk(chunk)
        sink._on_robot_description(String(data=URDF))
        sink._on_image(Image())
        sink._on_e_stop(Bool(data=True))
        sink._tick()
        assert sink.errors == errors and sink.intake is None and sink.commands_sent == 0
        # configured again, the same handlers reach the new core
        assert sink.trigger_configure() == R.SUCCESS
        sink._on_joint_states(state)
        assert sink._q is not None and np.allclose(sink._q[1], Q0) and sink.errors == errors
        assert sink.trigger_cleanup() == R.SUCCESS
    finally:
        sink.destroy_node()


def test_servo_twist_within_limits(rig):
    arm, sink = rig['servo_arm'], rig['servo_sink']
    from rclpy.lifecycle import TransitionCallbackReturn as R
    assert sink.trigger_configure() == R.SUCCESS and sink.trigger_activate() == R.SUCCESS
    assert sink.execution_enabled()  # execution_enabled:=true
    assert wait_for(lambda: sink.kinematics is not None and sink._q is not None)
    # camera frames arriving, no model output yet (a chunk before the first frame is dropped: stale camera)
    assert wait_for(lambda: sink.governor.halted_cause is HaltCause.STALLED_MODEL)
    sent = Steps(sink).run(lambda: arm.chunk(dx=0.1, steps=4, request_id='fast'), 4)  # 10 cm steps: clipped to 3 cm

    def speeds():
        return np.array([np.linalg.norm([m.twist.linear.x, m.twist.linear.y, m.twist.linear.z])
                         for _, m in arm.twists])

    # Each command is re-sent every control tick while its step lasts; after the last one, one zero twist.
    assert wait_for(lambda: np.count_nonzero(speeds()) >= sent and speeds()[-1] == 0.0, 10.0), speeds()
    v = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z] for _, m in arm.twists])
    moving = v[np.linalg.norm(v, axis=1) > 0]
    period, limit = 0.1, 0.03
    # Every step is clipped to 3 cm, to be covered in the time left to the step's end: at most the period, at
    # least executor.MIN_TIME_FRACTION of it (a tick that came late). Relative tolerances: the upper bound is
    # float rounding only; the time left to a step's end is a difference of clock values (~1.8e9 s, spaced
    # 2.4e-7 s), so it may exceed the period by that much (2.4e-6 relative).
    speed = np.linalg.norm(moving, axis=1)
    assert np.all(speed <= limit / (MIN_TIME_FRACTION * period) * (1 + 1e-6)), speed
    assert np.all(speed >= limit / period * (1 - 1e-5)), speed
    assert np.all(moving[:, 0] > 0) and np.allclose(moving[:, 1:], 0.0, atol=1e-6)
    # The poses the twists aim for (~/commanded_pose, also the hold's) move at most 3 cm per step.
    assert wait_for(lambda: len(arm.poses) >= sent, 10.0)
    p = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in arm.poses])
    assert np.all(np.linalg.norm(np.diff(p, axis=0), axis=1) <= limit * (1 + 1e-6))
    assert all(m.header.frame_id == 'panda_link0' for _, m in arm.twists)
    # Every step was clipped.
    assert sink.governor.clip_counts[ClipKind.STEP_TRANSLATION] == sink.commands_sent == sent
    assert arm.trajectories == []
    assert sink.trigger_deactivate() == R.SUCCESS
    assert wait_for(lambda: speeds()[-1] == 0.0)
    assert sink.trigger_cleanup() == R.SUCCESS  # its joint-state subscription off: less load on the rig


def _positions(msgs):
    return np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in msgs])


def _distinct(msgs):
    """The pose targets in order with the re-sent copies removed (a re-send repeats the pose exactly)."""
    out = []
    for m in msgs:
        if not out or pose_msg_to_matrix(m.pose).tolist() != pose_msg_to_matrix(out[-1].pose).tolist():
            out.append(m)
    return out


def _observation_chunk(arm, pose, *, d, steps, period, request_id):
    """A chunk stamped now whose deltas start from ``pose`` (its observation_pose), not the current pose."""
    msg = ActionChunk(request_id=request_id, step_period_s=period, action_dim=7,
                      rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='panda_link0')
    msg.header.stamp = arm.node.get_clock().now().to_msg()
    msg.observation_pose.header.frame_id = 'panda_link0'
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(pose)
    p, o = msg.observation_pose.pose.position, msg.observation_pose.pose.orientation
    p.x, p.y, p.z, o.x, o.y, o.z, o.w = (float(v) for v in (x, y, z, qx, qy, qz, qw))
    msg.observation_pose_valid = True
    for _ in range(steps):
        msg.steps.append(ActionStep(translation_m=Vector3(x=float(d[0]), y=float(d[1]), z=float(d[2])),
                                    rotation_rad=Vector3(), gripper=0.9,
                                    values=[float(d[0]), float(d[1]), float(d[2]), 0.0, 0.0, 0.0, 0.9]))
    arm.chunk_pub.publish(msg)


def test_servo_pose_nothing_while_disabled(rig):
    arm, sink = rig['pose_arm'], rig['pose_sink']
    from rclpy.lifecycle import TransitionCallbackReturn as R
    assert sink.trigger_configure() == R.SUCCESS and sink.trigger_activate() == R.SUCCESS
    assert wait_for(lambda: sink.kinematics is not None and sink._q is not None)
    assert sink.ik_selection is None  # a pose sink solves no IK
    arm.chunk(dx=0.0, dy=0.01, steps=5, request_id='disabled')
    time.sleep(0.8)
    assert arm.targets_since(0) == [] and not sink.execution_enabled()
    assert np.allclose(arm.q(), Q0)


def test_servo_pose_targets_follow_the_deltas_from_the_observation_pose(rig):
    arm, sink = rig['pose_arm'], rig['pose_sink']
    assert arm.enable().success and sink.execution_enabled()
    time.sleep(0.3)
    assert arm.targets_since(0) == []  # enabled, but no chunk since: nothing (the disabled one was dropped)
    n0 = len(arm.targets)
    observed = KIN.fk(arm.q())
    observed[2, 3] += 0.005  # the observation pose (what the model saw) is 5 mm above the current one
    # 5 mm steps: no target is further than 2.6 cm from the start, so none is clipped to the 3 cm step limit,
    # whichever steps a loaded machine's late ticks skip (a skipped step makes the next a longer one).
    period, d = 0.2, (0.0, 0.005, 0.0)
    clips = sum(sink.governor.clip_counts.values())
    sent_steps = Steps(sink).run(
        lambda: _observation_chunk(arm, observed, d=d, steps=5, period=period, request_id='follow'), 5)
    assert wait_for(lambda: len(_distinct([m for _, m in arm.targets_since(n0)])) >= sent_steps, 10.0)
    # The fake Servo reached the last target: it is re-sent until servo_pose_keepalive_s after its step's end,
    # while Servo drops targets older than 0.1 s.
    last = _positions(_distinct([m for _, m in arm.targets_since(n0)]))[-1]
    assert wait_for(lambda: np.linalg.norm(ee(arm.q()) - last) < 2e-3, 10.0), ee(arm.q()) - last
    sent = arm.targets_since(n0)
    targets = _distinct([m for _, m in sent])
    p = _positions(targets)
    # Each distinct target is observation pose + k steps (k within 1..5, rising; a skipped step leaves a gap).
    k = (p[:, 1] - observed[1, 3]) / d[1]
    assert np.allclose(k, np.round(k), atol=0.02) and np.all(np.diff(np.round(k)) > 0), k
    assert 1 <= round(k[0]) and round(k[-1]) <= 5 and len(targets) == sink.commands_sent == sent_steps, k
    assert np.allclose(p[:, [0, 2]], observed[[0, 2], 3], atol=1e-6)
    assert sum(sink.governor.clip_counts.values()) == clips  # (nothing clipped)
    for m in targets:  # orientation unchanged (no rotation deltas)
        assert np.allclose(pose_msg_to_matrix(m.pose)[:3, :3], observed[:3, :3], atol=1e-6)
    # Re-sent on the control ticks (how many depends on how busy the machine is: the keep-alive's timing is
    # tested with injected time in test/cores/test_chunk_intake.py), each copy re-stamped, as Servo drops
    # targets older than its incoming_command_timeout.
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in sent])
    assert len(sent) > len(targets) and np.all(np.diff(stamps) > 0), (len(sent), len(targets))
    assert all(m.header.frame_id == 'panda_link0' for _, m in sent)
    assert arm.trajectories == [] and arm.twists == []


def test_servo_pose_targets_stay_within_step_limits_and_workspace(rig):
    arm, sink = rig['pose_arm'], rig['pose_sink']
    box_max = rig['pose_box_max']
    clips = dict(sink.governor.clip_counts)
    # The clamp starts from the previous *commanded* pose: the last ~/commanded_pose (one per command or hold),
    # the last target of the last test (all in: this sink has sent no hold with a pose yet).
    assert wait_for(lambda: len(arm.poses) >= sink.commands_sent)
    m0, n0 = len(arm.poses), len(arm.targets)
    previous = _positions(arm.poses[-1:])[0]
    # 10 cm steps towards the box edge 4.5 cm ahead: 3 cm (the step limit), then the edge; the steps after it
    # repeat that pose. Each chunk commands at least one of its steps (others may be skipped by late ticks on a
    # loaded machine), so the edge is reached by the second chunk at the latest.
    sent = 0
    for attempt in range(3):
        sent += Steps(sink).run(lambda: _observation_chunk(arm, KIN.fk(arm.q()), d=(0.1, 0.0, 0.0), steps=4,
                                                           period=0.1, request_id=f'far{attempt}'), 4)
        assert wait_for(lambda: len(arm.poses) - m0 >= sent, 10.0), (sent, len(arm.poses) - m0)
        if arm.poses[-1].pose.position.x == pytest.approx(box_max[0]):
            break
    commanded = _positions(arm.poses[m0:])
    assert len(commanded) == sent, commanded
    # Per-step translation limit, from the previous commanded pose.
    steps = np.linalg.norm(np.diff(np.vstack([previous, commanded]), axis=0), axis=1)
    assert np.all(steps <= 0.03 + 1e-9), steps
    assert np.all(commanded[:, 0] <= box_max[0] + 1e-9), commanded   # workspace box (x max)
    assert commanded[-1, 0] == pytest.approx(box_max[0])              # pressed against the box edge
    # The Servo got the same poses (and their keep-alive copies). Wait for the last commanded pose itself, position
    # and orientation: the poses pressed against the edge share a position and differ in the last bits of their
    # orientation, so a position match can be an earlier one still.
    last = pose_msg_to_matrix(arm.poses[-1].pose).tolist()
    assert wait_for(lambda: pose_msg_to_matrix(arm.targets[-1][1].pose).tolist() == last)
    targets = _positions(_distinct([m for _, m in arm.targets_since(n0)]))
    if np.allclose(targets[0], previous, rtol=0, atol=1e-12):
        targets = targets[1:]  # keep-alive copies of the last test's target
    assert np.allclose(targets, _positions(_distinct(arm.poses[m0:])), rtol=0, atol=1e-12), targets
    after = sink.governor.clip_counts
    assert after[ClipKind.STEP_TRANSLATION] > clips.get(ClipKind.STEP_TRANSLATION, 0)
    assert after[ClipKind.WORKSPACE] > clips.get(ClipKind.WORKSPACE, 0)
    assert np.all(_positions([m for _, m in arm.targets_since(n0)])[:, 0] <= box_max[0] + 1e-9)


def test_servo_pose_e_stop_holds_at_the_measured_pose(rig):
    arm, sink = rig['pose_arm'], rig['pose_sink']
    holds = sink.holds_sent
    held = []  # the HoldCommands the sink publishes (a spy on its outputs' hold)
    publish_hold = sink.outputs._hold
    sink.outputs._hold = lambda hold: (held.append(hold), publish_hold(hold))[-1]
    try:
        n0 = len(arm.targets)
        steps = Steps(sink)
        start = KIN.fk(arm.q())
        _observation_chunk(arm, start, d=(-0.004, 0.0, -0.002), steps=40, period=0.1, request_id='long')  # 4 s
        assert wait_for(lambda: steps.sent >= 2, 10.0), _sink_state(sink)
        t_e_stop = time.monotonic()
        arm.e_stop_pub.publish(Bool(data=True))
        assert wait_for(lambda: sink.holds_sent == holds + 1, 10.0)
        t_hold = time.monotonic()
    finally:
        del sink.outputs._hold
    (hold_command,) = held
    assert hold_command.cause is HaltCause.E_STOP and hold_command.pose is not None
    hold = hold_command.pose[:3, 3]

    def is_hold(m):
        return np.allclose(_positions([m])[0], hold, rtol=0.0, atol=1e-12)

    # The hold reaches the Servo (targets sent before it arrive before it) ...
    assert wait_for(lambda: any(is_hold(m) for _, m in arm.targets_since(n0)), 10.0)
    # ... at the measured pose at the halt: a pose the arm had (FK of the joint state the sink last received, at
    # most JOINT_STATE_TIMEOUT_S old when received, and perhaps delayed on the way) before the hold. Not
    # compared with the pose read after the hold: on a loaded machine the arm moved up to 8 mm further before
    # it arrived.
    seen = arm.positions_between(t_e_stop - 2 * JOINT_STATE_TIMEOUT_S, t_hold)
    assert min(np.linalg.norm(hold - p) for p in seen) < 1e-4
    # ... and the arm holds there (the fake Servo follows the hold's keep-alive copies back to it).
    assert wait_for(lambda: np.linalg.norm(ee(arm.q()) - hold) < 2e-3, 5.0), ee(arm.q()) - hold
    refused = sink.intake.counts[Intake.REFUSED]
    _observation_chunk(arm, KIN.fk(arm.q()), d=(0.0, 0.01, 0.0), steps=5, period=0.1, request_id='during_stop')
    # Refused while the e-stop is latched (the decision: test_chunk_intake.py); nothing of it is sent (below).
    assert wait_for(lambda: sink.intake.counts[Intake.REFUSED] > refused, 10.0), _sink_state(sink)
    assert arm.reset_e_stop().success and arm.enable().success
    time.sleep(0.6)  # chunk 'long' would still be running: none of its steps fires
    # After the hold, only its keep-alive copies (re-stamped, for servo_pose_keepalive_s): no step of 'long',
    # none of 'during_stop'.
    sent = [m for _, m in arm.targets_since(n0)]
    first = next(i for i, m in enumerate(sent) if is_hold(m))
    assert all(is_hold(m) for m in sent[first:]), (hold, _positions(_distinct(sent[first:])), _sink_state(sink))
    assert sink.governor.halt_counts[HaltCause.E_STOP] == 1 and sink.holds_sent == holds + 1
    from rclpy.lifecycle import TransitionCallbackReturn as R
    assert sink.trigger_deactivate() == R.SUCCESS


def test_dry_run_publishes_only_the_commanded_pose(rig):
    arm, sink = rig['dry_arm'], rig['dry_sink']
    from rclpy.lifecycle import TransitionCallbackReturn as R
    assert sink.trigger_configure() == R.SUCCESS and sink.trigger_activate() == R.SUCCESS
    assert wait_for(lambda: sink.kinematics is not None and sink._q is not None)
    assert wait_for(lambda: sink.governor.halted_cause is HaltCause.STALLED_MODEL)
    start = ee(arm.q())
    n = len(arm.poses)
    sent = Steps(sink).run(lambda: arm.chunk(dx=0.01, steps=5, request_id='dry'), 5)

    def positions():
        return np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                         for m in arm.poses[n:]]).reshape(-1, 3)

    # ~/commanded_pose: perhaps the hold of the halt before the chunk (the measured pose: the dry arm does not
    # move), then one pose per command.
    assert wait_for(lambda: np.count_nonzero(np.abs(positions()[:, 0] - start[0]) > 5e-3) >= sent, 10.0)
    p_all = positions()
    command = np.abs(p_all[:, 0] - start[0]) > 5e-3
    assert np.all(np.diff(command.astype(int)) >= 0) and np.allclose(p_all[~command], start, atol=1e-3), p_all
    p = p_all[command]
    assert len(p) == sent == sink.commands_sent
    # The plan from the observation pose: step k at start + k cm along x.
    k = (p[:, 0] - start[0]) / 0.01
    assert np.allclose(k, np.round(k), atol=0.1) and np.all(np.diff(np.round(k)) > 0) and 1 <= k[0] and k[-1] <= 5.1
    assert np.allclose(p[:, 1:], start[1:], atol=1e-3)
    assert all(m.header.frame_id == 'panda_link0' for m in arm.poses[n:])
    assert arm.trajectories == [] and arm.twists == [] and arm.gripper == []  # nothing reaches the arm
    assert np.allclose(ee(arm.q()), start)
    assert sink.trigger_deactivate() == R.SUCCESS


def test_hosted_in_the_one_process_pipeline_without_an_engine(rig):
    from molmoact_ros.nodes.engine_provider import EngineProvider
    from molmoact_ros.nodes.pipeline import PIPELINE_STAGES, STAGES, Pipeline
    assert 'command_sink' in STAGES and 'command_sink' not in PIPELINE_STAGES
    provider = EngineProvider()
    p = Pipeline(('command_sink',), provider=provider,
                 args=['--ros-args', '-r', '__ns:=/hosted', '-p', 'robot_description_source:=profile'])
    p.start()
    try:
        p.bring_up()
        (node,) = p.nodes
        assert node.lifecycle_label == 'active' and node.kinematics is not None
        assert provider._loaded is None  # the sink never acquired the engine
    finally:
        p.bring_down()
        p.stop()
    assert node.lifecycle_label == 'finalized'
