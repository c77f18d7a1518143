"""A seeded fuzz of the running nodes (issue 15): thousands of malformed messages to every input.

One process: the three stage nodes on the tiny model (as the pipeline runs them) and the command sink
(profile sim_panda, execution enabled, kinematics from the profile's URDF), a fake arm that follows the
sink's joint trajectories and publishes joint states, and a probe that sends, one input kind after the
other, malformed images, camera_info, aligned depth, instructions, edit_trace requests, edited traces,
ExecuteInstruction goals, action chunks and joint states (a seeded NumPy generator picks the defects).

Checked: no callback raised out of the executor, and no error recorded came from an unexpected exception (a
programming error rather than a refusal); every refusal is counted (each node's error / drop / rejection
counters grew by at least the number of bad messages it received: messages lost by best-effort QoS are not
in ``inputs_received`` and are not expected); every command the sink gave the arm stayed inside the
profile's limits (workspace box, per-step translation and rotation, gripper range, joint limits); and
afterwards every node is still active and answers a valid input. Nothing is decided by a sleep: the probe
waits for counters, with generous bounds, and paces its sends by what the nodes have received.
"""

import math
import re
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from action_msgs.msg import GoalStatus  # noqa: E402
from geometry_msgs.msg import Point32, Vector3  # noqa: E402
from molmoact_msgs.action import ExecuteInstruction  # noqa: E402
from molmoact_msgs.msg import ActionChunk, ActionStep, TrajectoryTrace  # noqa: E402
from molmoact_msgs.msg import TracePoint  # noqa: E402
from molmoact_msgs.srv import EditTrace  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from suite_helpers.spinning import spin_recording, wait_until  # noqa: E402

from molmoact_bringup.sim.trajectory import JointTrajectoryCommand, JointTrajectoryFollower, TrajectoryPoint  # noqa: E402
from molmoact_ros.cores.chunk_intake import Intake  # noqa: E402
from molmoact_ros.cores.quoting import TEXT_LIMIT  # noqa: E402
from molmoact_ros.nodes.pipeline import Pipeline  # noqa: E402
from molmoact_ros.robot.executor import HoldCommand, JointCommand  # noqa: E402
from molmoact_ros.robot.profiles import load_profile  # noqa: E402
from molmoact_ros.robot.safety import rotation_angle  # noqa: E402
from molmoact_ros.ros.image import numpy_to_image  # noqa: E402
from molmoact_ros.ros.topics import LATCHED, RELIABLE, SENSOR  # noqa: E402

SEED = 15
NS = '/fuzz'
ARM = [f'panda_joint{i}' for i in range(1, 8)]
Q0 = [0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785]
PROFILE = load_profile('sim_panda')
LIMITS = PROFILE.safety
#: Generous: the bounds are for a loaded 2-core machine, never decisions about speed.
WAIT_S = 60.0
#: Messages in flight before the probe waits for the node to have received them (< the QoS depths).
WINDOW = 3
#: Exception types that mean a programming error, not a refusal of bad input.
BUG = re.compile(r'\b(AttributeError|IndexError|KeyError|NameError|UnboundLocalError|ZeroDivisionError|'
                 r'AssertionError|RecursionError|NotImplementedError|RuntimeError)\b')


def wait_for(predicate, timeout=WAIT_S):
    return wait_until(predicate, timeout)


class Recorder:
    """Every error text a node records (wraps ``record_error``: the counters stay the node's own)."""

    def __init__(self, nodes):
        self.texts = {n.get_name(): [] for n in nodes}
        for node in nodes:
            original = node.record_error

            def record(message, node=node, original=original):
                self.texts[node.get_name()].append(str(message))
                return original(message)
            node.record_error = record


class FakeArm:
    """Follows the sink's joint trajectories and publishes joint states (50 Hz); a camera for the sink."""

    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.follower = JointTrajectoryFollower(ARM, Q0)
        self.trajectories = []
        self.gripper = []
        node.create_subscription(JointTrajectory, 'joint_trajectory_controller/joint_trajectory', self._on_traj, 50)
        node.create_subscription(Float64MultiArray, 'gripper_controller/commands', self.gripper.append, 50)
        self.joints = node.create_publisher(JointState, 'joint_states', SENSOR)
        self.camera = node.create_publisher(Image, 'sink_camera', SENSOR)
        node.create_timer(0.02, self._publish_joints)
        node.create_timer(0.05, self._publish_frame)

    def _on_traj(self, msg):
        points = tuple(TrajectoryPoint(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, tuple(p.positions))
                       for p in msg.points)
        with self.lock:
            self.trajectories.append(msg)
            if points:
                self.follower.accept(JointTrajectoryCommand(tuple(msg.joint_names), points, start_time_s=0.0),
                                     time.monotonic())

    def _publish_joints(self):
        with self.lock:
            q = self.follower.sample(time.monotonic()).positions_rad
        msg = JointState(name=ARM + ['panda_finger_joint1'], position=[float(v) for v in q] + [0.04])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joints.publish(msg)

    def _publish_frame(self):
        img = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
        img.header.stamp = self.node.get_clock().now().to_msg()
        self.camera.publish(img)


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    import os
    tiny = os.environ.get('MOLMOACT_TINY_DIR')
    os.environ['MOLMOACT_TINY_DIR'] = str(tmp_path_factory.mktemp('tiny'))
    rclpy.init()
    args = ['--ros-args', '-r', f'__ns:={NS}', '-p', 'max_free_tokens:=3', '-p', 'max_image_side_px:=96',
            '-p', 'status_period_s:=0.5', '-p', 'use_aligned_depth:=true', '-p', 'robot_profile:=sim_panda',
            '-p', 'execution_enabled:=true', '-p', 'robot_description_source:=profile',
            '-p', 'camera_topic:=sink_camera', '-p', 'anchor_tolerance_s:=0.5']
    pipeline = Pipeline(stages=('perception', 'trace_planner', 'action_decoder', 'command_sink'), args=args)
    probe = rclpy.create_node('fuzz_probe', namespace=NS)
    pipeline.executor.add_node(probe)
    arm = FakeArm(probe)
    escaped = []
    thread = threading.Thread(target=spin_recording, args=(pipeline.executor, escaped), daemon=True)
    thread.start()
    nodes = {n.get_name(): n for n in pipeline.nodes}
    recorder = Recorder(pipeline.nodes)
    sink = nodes['command_sink']
    sent = []   # every command the sink published: (SinkTick.command) in order
    original = sink._publish

    def publish(tick):
        if tick.command is not None:
            sent.append(tick.command)
        return original(tick)
    sink._publish = publish
    decisions = {}   # request id -> the sink core's decisions on chunks of that id (in order)
    account = sink._account

    def record_decision(decision):
        if decision is not None:
            decisions.setdefault(decision.chunk.request_id, []).append(decision)
        return account(decision)
    sink._account = record_decision
    try:
        pipeline.bring_up()
        yield dict(pipeline=pipeline, probe=probe, arm=arm, nodes=nodes, escaped=escaped, errors=recorder.texts,
                   sent=sent, decisions=decisions)
    finally:
        pipeline.bring_down()
        pipeline._stopping = True
        pipeline.executor.shutdown()
        thread.join(timeout=10)
        for node in [*pipeline.nodes, pipeline.manager, probe]:
            node.destroy_node()
        rclpy.shutdown()
        if tiny is None:
            os.environ.pop('MOLMOACT_TINY_DIR', None)
        else:
            os.environ['MOLMOACT_TINY_DIR'] = tiny


def paced(node, publisher, messages, counter=lambda n: n.inputs_received, window=WINDOW, prepare=None):
    """Publish ``messages`` with at most ``window`` in flight (by ``counter``); returns how many the node
    received. The waits only pace the sends (a message lost by best-effort QoS costs one short wait): what
    is checked is compared with what the node received, never with the time taken."""
    start = counter(node)
    for i, msg in enumerate(messages):
        wait_for(lambda: counter(node) - start >= i + 1 - window, timeout=1.0)
        publisher.publish(prepare(msg) if prepare is not None else msg)
    wait_for(lambda: counter(node) - start >= len(messages), timeout=10.0)
    return counter(node) - start


def _img(rng, encoding='rgb8', h=None, w=None, channels=3):
    h = int(rng.integers(1, 24)) if h is None else h
    w = int(rng.integers(1, 24)) if w is None else w
    return Image(height=h, width=w, encoding=encoding, step=w * channels,
                 data=rng.integers(0, 256, h * w * channels, dtype=np.uint8).tobytes())


def bad_images(rng, n):
    out = []
    for i in range(n):
        kind = i % 6
        img = _img(rng)
        if kind == 0:
            # (not 'rgb8\x00': ROS strings end at a NUL, so it arrives as a valid rgb8; nor 'RGB8': accepted)
            img.encoding = str(rng.choice(['yuv422', 'bayer_rggb8', '', 'x' * 300, '32FC1', 'rgb9']))
            if img.encoding == '32FC1':
                img.data = bytes(len(img.data))  # a depth encoding is no colour image either
        elif kind == 1:
            img.width = 0 if rng.random() < 0.5 else img.width
            img.height = 0 if img.width else img.height
        elif kind == 2:
            img.data = img.data[:len(img.data) // 2]           # shorter than height * step
        elif kind == 3:
            img.step = max(0, img.width * 3 - int(rng.integers(1, 3)))   # a row shorter than its pixels
        elif kind == 4:
            img.data = b''
        else:
            img.height, img.width = 10 ** 6, 10 ** 6             # absurd size, tiny data
        img.header.frame_id = 'f' * int(rng.integers(0, 10_000))
        out.append(img)
    return out


def bad_camera_infos(rng, n):
    out = []
    for i in range(n):
        k = [150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0]
        w, h = 160, 120
        kind = i % 5
        if kind == 0:
            k[int(rng.integers(0, 9))] = float(rng.choice([math.nan, math.inf, -math.inf]))
        elif kind == 1:
            k = [0.0] * 9
        elif kind == 2:
            k[1] = float(rng.uniform(0.1, 50.0))                 # skew
        elif kind == 3:
            w, h = (0, 120) if rng.random() < 0.5 else (160, 0)
        else:
            k[6:9] = [float(v) for v in rng.uniform(-2, 2, 3)]   # not a camera matrix
        out.append(CameraInfo(width=w, height=h, k=k))
    return out


def bad_depths(rng, n):
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            d = _img(rng, encoding=str(rng.choice(['rgb8', 'mono8', '8UC3', 'bgra8'])))
        elif kind == 1:
            d = _img(rng, encoding='32FC1', channels=4)
            d.data = d.data[:-4]
        elif kind == 2:
            d = _img(rng, encoding='16UC1', channels=2, h=0)
        else:
            d = _img(rng, encoding='16UC1', channels=2)
            d.step = 1
        out.append(d)
    return out


def bad_instructions(rng, n):
    control = ''.join(chr(c) for c in range(0, 32))
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            text = ''
        elif kind == 1:
            text = ''.join(rng.choice(list(' \t\n\r\x0b\x0c'), size=int(rng.integers(1, 50))))
        elif kind == 2:
            text = 'pick ' * int(rng.integers(2000, 20000))      # far longer than the prompt allows
        else:
            text = ''.join(rng.choice(list(control[9:14] + ' '), size=int(rng.integers(1, 30))))
        out.append(String(data=text))
    return out


def bad_edits(rng, n, known_id):
    out = []
    for i in range(n):
        kind = i % 6
        rid = known_id
        coords = int(rng.choice([EditTrace.Request.COORDS_MODEL, EditTrace.Request.COORDS_SOURCE_PIXELS]))
        pts = [Point32(x=float(rng.integers(0, 256)), y=float(rng.integers(0, 256))) for _ in range(3)]
        if kind == 0:
            pts[int(rng.integers(0, 3))].x = float(rng.choice([math.nan, math.inf, -math.inf]))
        elif kind == 1:
            pts[0].y = float(rng.choice([-1e9, 1e9, 999.0, -5.0]))
        elif kind == 2:
            pts = pts * int(rng.integers(2, 200))                 # too many points
        elif kind == 3:
            pts = []
        elif kind == 4:
            rid = 'R' * int(rng.choice([1, 100_000])) + str(i)   # unknown (and 100 KB) request ids
        else:
            coords = int(rng.integers(2, 256))                    # unknown coordinates code
        out.append(EditTrace.Request(request_id=rid, coordinates=coords, points=pts, act=bool(rng.random() < 0.5)))
    return out


def bad_edited_traces(rng, n, known_id):
    out = []
    for i in range(n):
        kind = i % 5
        msg = TrajectoryTrace(request_id=known_id, source=int(rng.integers(0, 256)))
        pts = [TracePoint(x_model=int(rng.integers(0, 256)), y_model=int(rng.integers(0, 256))) for _ in range(2)]
        if kind == 0:
            pts = pts * 3                                         # 6 points: one too many
        elif kind == 1:
            pts = pts * int(rng.integers(4, 100))
        elif kind == 2:
            pts = []
        elif kind == 3:
            msg.request_id = 'u' * int(rng.choice([1, 5, 100_000]))   # ('' names the newest request)
        else:
            msg.request_id = f'unknown{i}'
        msg.points = pts
        out.append(msg)
    return out


def bad_goals(rng, n):
    out = []
    for i in range(n):
        g = ExecuteInstruction.Goal(instruction='pick up the cup', max_steps=1, timeout_s=5.0, execute=False)
        kind = i % 6
        if kind == 0:
            g.timeout_s = float(rng.choice([math.nan, math.inf, -1.0, 1e12]))
        elif kind == 1:
            g.max_steps = int(rng.choice([2 ** 32 - 1, 10 ** 6]))
        elif kind == 2:
            g.instruction = ''
        elif kind == 3:
            g.instruction = 'x ' * 50_000
        elif kind == 4:
            g.max_translation_m_per_step = float(rng.choice([math.nan, -0.1, math.inf]))
        else:
            g.max_rotation_rad_per_step = float(rng.choice([math.nan, -1.0, -math.inf]))
        out.append(g)
    return out


def fuzz_chunks(rng, n):
    """(message, kind) pairs, kind 'ok' (well-formed, often beyond the step limits: about a third), 'bad'
    (malformed) or 'old' (well-formed but stamped seconds to hours ago).
    Stamps are set when sent (:func:`stamped`): ``header.stamp.sec`` holds the seconds ahead of then."""
    out = []
    for i in range(n):
        steps = int(rng.integers(1, 9))
        big = float(rng.choice([0.01, 0.05, 0.5, 3.0]))
        values = rng.uniform(-big, big, (steps, 6))
        msg = ActionChunk(request_id=f'c{i}', step_period_s=float(rng.choice([0.05, 0.1])), action_dim=7,
                          rotation_convention=ActionChunk.ROTATION_RPY, delta_frame_id='')
        kind = int(rng.integers(0, 13))
        category = 'ok' if kind < 4 else 'old' if kind == 12 else 'bad'
        for v in values:
            g = float(rng.uniform(-2, 2))
            msg.steps.append(ActionStep(translation_m=Vector3(x=v[0], y=v[1], z=v[2]),
                                        rotation_rad=Vector3(x=v[3], y=v[4], z=v[5]), gripper=g,
                                        values=[*map(float, v), g]))
        if kind == 4:
            msg.steps[int(rng.integers(0, steps))].translation_m.x = float(rng.choice([math.nan, math.inf]))
        elif kind == 5:
            msg.action_dim = int(rng.choice([0, 6, 8, 255]))
        elif kind == 6:   # far in the future
            msg.header.stamp.sec += int(rng.choice([5, 3600, 10 ** 8]))
        elif kind == 7:   # NaN / zero / non-unit observation quaternions
            msg.observation_pose_valid = True
            msg.observation_pose.header.frame_id = PROFILE.frames.base
            o = msg.observation_pose.pose.orientation
            o.x, o.y, o.z, o.w = [(math.nan, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 2.0),
                                  (1e308, 1e308, 0.0, 0.0)][int(rng.integers(0, 4))]
        elif kind == 8:
            msg.delta_frame_id = 'frame' * int(rng.choice([1, 2000]))   # neither base nor end effector
        elif kind == 9:
            msg.step_period_s = float(rng.choice([0.0, -0.1, math.nan, math.inf]))
        elif kind == 10:
            msg.rotation_convention = int(rng.integers(2, 256))
        elif kind == 11:
            msg.steps[0].values = msg.steps[0].values[:int(rng.integers(0, 6))] or [1.0]
        elif kind == 12:
            msg.header.stamp.sec = -int(rng.choice([2, 60, 3600]))
        out.append((msg, category))
    return out


def stamped(clock):
    """A ``prepare`` for :func:`paced`: the chunk stamped now plus the seconds its stamp held."""
    def prepare(msg):
        ahead = msg.header.stamp.sec
        msg.header.stamp = clock.now().to_msg()
        msg.header.stamp.sec += ahead
        return msg
    return prepare


def bad_joint_states(rng, n, stamp_now):
    """Names and positions of different lengths (every controlled joint named), or non-finite positions."""
    out = []
    for i in range(n):
        names = ARM + ['panda_finger_joint1'] * int(rng.integers(0, 2))
        if i % 2:
            q = [float(v) for v in rng.uniform(-2, 2, len(names))]
            q[int(rng.integers(0, 7))] = float(rng.choice([math.nan, math.inf, -math.inf]))
        else:
            k = int(rng.integers(0, 12))
            q = [float(v) for v in rng.uniform(-2, 2, k if k != len(names) else k + 1)]
        msg = JointState(name=names, position=q)
        msg.header.stamp = stamp_now()
        out.append(msg)
    return out


def _delta(node, attrs, before):
    return sum(getattr(node, a) for a in attrs) - before


def test_fuzz_every_input_of_the_running_nodes(rig):
    rng = np.random.default_rng(SEED)
    probe, nodes, escaped = rig['probe'], rig['nodes'], rig['escaped']
    perception, planner, decoder, sink = (nodes[k] for k in ('perception', 'trace_planner', 'action_decoder',
                                                             'command_sink'))
    now = lambda: probe.get_clock().now().to_msg()  # noqa: E731
    pubs = {
        'image': probe.create_publisher(Image, 'image', SENSOR),
        'camera_info': probe.create_publisher(CameraInfo, 'camera_info', SENSOR),
        'aligned_depth': probe.create_publisher(Image, 'aligned_depth', SENSOR),
        'instruction': probe.create_publisher(String, 'instruction', LATCHED),
        'edited_trace': probe.create_publisher(TrajectoryTrace, 'edited_trace', RELIABLE),
        'action_chunk': probe.create_publisher(ActionChunk, 'action_chunk', RELIABLE),
        'joint_states': rig['arm'].joints,
    }
    chunks_out = []
    probe.create_subscription(ActionChunk, 'action_chunk', chunks_out.append, 50)
    edit_client = probe.create_client(EditTrace, 'edit_trace')
    goal_client = ActionClient(probe, ExecuteInstruction, 'execute_instruction')
    assert wait_for(lambda: sink.kinematics is not None and sink.execution_enabled())
    assert wait_for(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()))  # discovery done
    totals = {}

    def good_image(seed):
        img = numpy_to_image(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8), 'rgb8')
        img.header.stamp = now()
        img.header.frame_id = 'camera'
        return img

    def run_valid_request():
        """A valid instruction and frame: a new chunk from the decoder (the three stages answer)."""
        n = len([c for c in chunks_out if c.request_id and not c.request_id.startswith('c')])
        pubs['instruction'].publish(String(data='put the red block in the bowl'))
        assert wait_for(lambda: perception.core.instruction == 'put the red block in the bowl')
        answered = lambda: len([c for c in chunks_out if not c.request_id.startswith('c')]) > n  # noqa: E731
        end = time.monotonic() + 120.0
        while not answered() and time.monotonic() < end:   # best effort: a frame may be lost; send another
            pubs['image'].publish(good_image(len(chunks_out)))
            wait_for(answered, timeout=5.0)
        assert answered(), (perception.last_error, planner.last_error, decoder.last_error)
        return [c for c in chunks_out if not c.request_id.startswith('c')][-1]

    # 0. a valid request first: a request id the edits can name
    known = run_valid_request().request_id

    # 1. instructions (the instruction is unusable afterwards: no image below starts an inference)
    before = perception.errors
    received = paced(perception, pubs['instruction'], bad_instructions(rng, 150), window=1)  # latched: depth 1
    assert wait_for(lambda: perception.errors - before >= received)
    assert perception.core.instruction == ''
    totals['instruction'] = received

    # 2. images (with a valid instruction: each frame reaches the inference and is refused, or is superseded)
    pubs['instruction'].publish(String(data='pick up the cup'))
    assert wait_for(lambda: perception.core.instruction == 'pick up the cup')
    start = {a: getattr(perception, a) for a in ('errors', 'inputs_dropped', 'requests_completed')}
    received = paced(perception, pubs['image'], bad_images(rng, 500))
    assert wait_for(lambda: _delta(perception, ('errors', 'inputs_dropped'), start['errors'] + start['inputs_dropped'])
                    >= received), (perception.core.intake.has_frame, received, start, perception.errors, perception.inputs_dropped,
                                   perception.core.intake.superseded, perception.core.intake.too_old,
                                   len(rig['errors']['perception']), perception.core.intake.has_frame)
    assert perception.requests_completed == start['requests_completed']   # none of them ran
    totals['image'] = received

    # 3. camera_info and aligned depth: each refused with a counted error
    for name, messages in (('camera_info', bad_camera_infos(rng, 300)), ('aligned_depth', bad_depths(rng, 250))):
        before = perception.errors
        received = paced(perception, pubs[name], messages)
        assert wait_for(lambda: perception.errors - before >= received), (name, received, perception.last_error)
        totals[name] = received

    # 4. edit_trace service: every request refused with a bounded reason, each counted
    assert edit_client.wait_for_service(timeout_sec=WAIT_S)
    before, refused = planner.errors, 0
    for request in bad_edits(rng, 250, known):
        future = edit_client.call_async(request)
        assert wait_for(future.done), 'edit_trace did not answer'
        response = future.result()
        assert not response.success and response.message and len(response.message) <= TEXT_LIMIT + 100
        refused += 1
    assert wait_for(lambda: planner.errors - before >= refused)
    totals['edit_trace'] = refused

    # 5. edited traces on the topic
    before = planner.errors
    received = paced(planner, pubs['edited_trace'], bad_edited_traces(rng, 300, known))
    assert wait_for(lambda: planner.errors - before >= received)
    totals['edited_trace'] = received

    # 6. ExecuteInstruction goals: each rejected (aborted with outcome REJECTED) and counted
    assert goal_client.wait_for_server(timeout_sec=WAIT_S)
    before = perception.errors
    for goal in bad_goals(rng, 48):
        sent = goal_client.send_goal_async(goal)
        assert wait_for(sent.done)
        handle = sent.result()
        if not handle.accepted:
            continue
        result = handle.get_result_async()
        assert wait_for(result.done)
        assert result.result().status == GoalStatus.STATUS_ABORTED
        assert result.result().result.outcome == ExecuteInstruction.Result.OUTCOME_REJECTED
        assert len(result.result().result.reason) <= 400
    assert wait_for(lambda: perception.errors - before >= 48)
    totals['goals'] = 48

    # 7. action chunks to the sink, mixed with well-formed ones that it executes (clamped)
    intake = sink.intake
    counts0, discarded0 = sum(intake.counts.values()), intake.pending_discarded
    rejected0 = intake.rejected_chunks
    fuzz = fuzz_chunks(rng, 850)
    decided = rig['decisions']
    received = paced(sink, pubs['action_chunk'], [m for m, _ in fuzz], prepare=stamped(probe.get_clock()))
    assert received == len(fuzz)   # reliable QoS, paced: none is lost
    # every chunk is accounted for: a terminal decision, the pending one, or discarded
    assert wait_for(lambda: (sum(intake.counts.values()) - counts0) + (intake.pending is not None)
                    + (intake.pending_discarded - discarded0) == received)
    n_bad = sum(kind == 'bad' for _, kind in fuzz)
    assert intake.rejected_chunks - rejected0 >= n_bad, (intake.rejected_chunks - rejected0, n_bad)
    # each malformed chunk was rejected (with a reason, counted per reason), each stale one refused or
    # dropped (counted as a dropped input): none of them was executed
    for msg, kind in fuzz:
        ends = [d.intake for d in decided.get(msg.request_id, [])]
        if kind == 'bad':
            assert ends == [Intake.REJECTED], (msg.request_id, decided.get(msg.request_id))
        elif kind == 'old':
            assert len(ends) == 1 and ends[0] in (Intake.REFUSED, Intake.DROPPED), (msg.request_id, ends)
    assert sum(kind == 'ok' for _, kind in fuzz) >= 100
    # Whether a chunk of the stream got a control tick before the next one replaced it (or a bad one halted it)
    # depends on the machine's speed; so, one at a time, well-formed chunks far beyond the step limits, each
    # until the sink commanded it: the sink executes them clamped (checked below with every command sent).
    for k, big in enumerate((0.05, 0.5, 3.0)):
        sent_before = len(rig['sent'])
        msg = ActionChunk(request_id=f'big{k}', step_period_s=0.1, action_dim=7,
                          rotation_convention=ActionChunk.ROTATION_RPY)
        msg.header.stamp = now()
        msg.steps = [ActionStep(translation_m=Vector3(x=big, y=-big, z=big), rotation_rad=Vector3(z=big), gripper=0.9,
                                values=[big, -big, big, 0.0, 0.0, big, 0.9]) for _ in range(4)]
        pubs['action_chunk'].publish(msg)
        assert wait_for(lambda: any(getattr(c, 'request_id', '') == f'big{k}' for c in rig['sent'][sent_before:])), \
            (k, sink.last_error, sink.diagnostic_values())
    totals['action_chunk'] = received

    # 8. joint states: names and positions of different lengths, non-finite positions: each a counted error
    # (not counted as inputs: each one received is an error; best effort may lose a few, so at least most)
    before = sink.errors
    messages = bad_joint_states(rng, 550, now)
    paced(sink, pubs['joint_states'], messages, counter=lambda n: n.errors)
    assert sink.errors - before >= 0.9 * len(messages), (sink.errors - before, sink.last_error)
    totals['joint_states'] = len(messages)

    # nothing raised out of a callback, and no recorded error was a programming error
    assert escaped == [], ''.join(escaped)
    for name, texts in rig['errors'].items():
        bugs = [t for t in texts if BUG.search(t)]
        assert not bugs, (name, bugs[:3])
        assert all(len(t) <= TEXT_LIMIT + 100 for t in texts), name
    assert sum(totals.values()) >= 3000, totals

    # every command the sink sent stayed inside the profile's limits
    check_commands(rig['sent'], sink)
    with rig['arm'].lock:
        trajectories = list(rig['arm'].trajectories)
    limits = sink.kinematics.limits
    for traj in trajectories:
        for point in traj.points:
            q = np.asarray(point.positions)
            assert np.all(q >= limits.position_min - 1e-9) and np.all(q <= limits.position_max + 1e-9), q
    for msg in rig['arm'].gripper:
        assert all(LIMITS.gripper_min - 1e-12 <= v <= LIMITS.gripper_max + 1e-12 for v in msg.data)
    assert sink.commands_sent >= 1 and len(trajectories) >= 1

    # afterwards every node is active and answers a valid input
    assert all(n.is_active for n in nodes.values()), {k: n.lifecycle_label for k, n in nodes.items()}
    chunk = run_valid_request()
    future = edit_client.call_async(EditTrace.Request(request_id=chunk.request_id, coordinates=0,
                                                      points=[Point32(x=10.0, y=20.0)], act=False))
    assert wait_for(future.done) and future.result().success, future.result().message
    sent_before = sink.commands_sent
    ok = ActionChunk(request_id='valid-after', step_period_s=0.1, action_dim=7,
                     rotation_convention=ActionChunk.ROTATION_RPY)
    ok.header.stamp = now()
    ok.steps = [ActionStep(translation_m=Vector3(x=0.005), rotation_rad=Vector3(), gripper=0.9,
                           values=[0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9]) for _ in range(4)]
    pubs['action_chunk'].publish(ok)
    assert wait_for(lambda: sink.commands_sent > sent_before), (sink.last_error, sink.diagnostic_values())
    assert escaped == [], ''.join(escaped)


def check_commands(commands, sink):
    """The property test's reading of the limits (cores/test_chunk_intake.py) on what the running sink sent."""
    previous = None
    lo, hi = np.asarray(LIMITS.workspace_min_m), np.asarray(LIMITS.workspace_max_m)
    for command in commands:
        if isinstance(command, HoldCommand):
            previous = None
            continue
        pose = command.pose
        assert np.all(np.isfinite(pose))
        assert np.all(pose[:3, 3] >= lo - 1e-9) and np.all(pose[:3, 3] <= hi + 1e-9), pose[:3, 3]
        if previous is not None:
            assert np.linalg.norm(pose[:3, 3] - previous[:3, 3]) <= LIMITS.max_step_translation_m + 1e-6
            assert rotation_angle(previous[:3, :3].T @ pose[:3, :3]) <= LIMITS.max_step_rotation_rad + 1e-6
        if command.gripper is not None:
            assert LIMITS.gripper_min <= command.gripper <= LIMITS.gripper_max
        if isinstance(command, JointCommand):
            q = np.asarray(command.positions)
            assert np.all(np.isfinite(q))
        previous = pose
