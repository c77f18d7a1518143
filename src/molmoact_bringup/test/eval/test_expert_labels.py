"""DAgger's labels (evaluate --expert-labels): for each chunk the model computed, the scripted expert's chunk
from the same observation, published on expert/action_chunk with the observation's stamp; and the dataset
builder picks that topic over the model's own when told to."""

import numpy as np
import pytest

from molmoact_bringup.eval.expert import ExpertObservation, LiftExpert, LiftExpertConfig
from molmoact_bringup.eval.run import EXPERT_ACTION_CHUNK, ScriptedPolicy, Watcher, _pose_matrix
from molmoact_ros.training.config import TopicConfig
from molmoact_ros.training.recording import resolve_topics


class _Publisher:
    def __init__(self):
        self.sent = []

    def publish(self, msg):
        self.sent.append(msg)


class _Node:
    def __init__(self):
        self.publishers = {}

    def create_publisher(self, _type, topic, _qos):
        self.publishers[topic] = _Publisher()
        return self.publishers[topic]

    def create_subscription(self, *_args, **_kwargs):
        return None


class _Watcher:
    def __init__(self, state):
        self.state = state

    def snapshot(self):
        return self.state, None, 0, 0.0

    def ee_pose_at(self, stamp_s, tolerance_s=0.1):
        return None   # no pose recorded


def _pose(x, y, z):
    from geometry_msgs.msg import Pose
    p = Pose()
    p.position.x, p.position.y, p.position.z = x, y, z
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = 1.0, 0.0, 0.0, 0.0  # tool pointing down
    return p


def _model_chunk(sec, x, y, z, valid=True):
    from molmoact_msgs.msg import ActionChunk
    msg = ActionChunk()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 250_000_000
    msg.request_id, msg.instruction, msg.model_id = 'r7', 'pick up the red cube', 'sim-lift'
    msg.observation_pose.header.frame_id = 'panda_link0'
    msg.observation_pose.header.stamp.sec = sec + 3       # a pose stamp that is not the observation's
    msg.observation_pose.pose = _pose(x, y, z)
    msg.observation_pose_valid = valid
    return msg


def test_the_expert_labels_the_models_observation_on_its_own_topic():
    from molmoact_msgs.msg import TaskState
    state = TaskState()
    state.object_poses = [_pose(0.55, 0.05, 0.02)]
    node = _Node()
    labeler = ScriptedPolicy(node, _Watcher(state), LiftExpertConfig(align_yaw=False), topic=EXPERT_ACTION_CHUNK)
    labeler.reset(3)
    model = _model_chunk(12, 0.40, -0.10, 0.30)
    assert labeler.label(model)
    assert set(node.publishers) == {EXPERT_ACTION_CHUNK}    # never the sink's action_chunk
    (sent,) = node.publishers[EXPERT_ACTION_CHUNK].sent
    assert (sent.header.stamp.sec, sent.header.stamp.nanosec) == (12, 250_000_000)   # the observation's time
    assert sent.model_id == ScriptedPolicy.MODEL_ID and sent.instruction == 'pick up the red cube'
    # The same chunk the expert plans from that observation: the model chunk's pose and the cube's.
    want = LiftExpert(LiftExpertConfig(align_yaw=False)).act(
        ExpertObservation(_pose_matrix(model.observation_pose.pose), _pose_matrix(state.object_poses[0])), 12.25)
    got = np.array([[s.translation_m.x, s.translation_m.y, s.translation_m.z] for s in sent.steps])
    np.testing.assert_allclose(got, want.translation_m, atol=1e-9)
    assert [s.gripper for s in sent.steps] == list(want.gripper)
    assert np.linalg.norm(got[0]) > 0.019      # far from the cube: a full step toward it
    # Nothing to label: no observation pose (and none recorded near its stamp), or no cube known.
    assert not labeler.label(_model_chunk(13, 0.4, -0.1, 0.3, valid=False))
    empty = ScriptedPolicy(_Node(), _Watcher(TaskState()), LiftExpertConfig(), topic=EXPERT_ACTION_CHUNK)
    assert not empty.label(model)
    assert len(node.publishers[EXPERT_ACTION_CHUNK].sent) == 1


def test_without_an_observation_pose_the_expert_plans_from_the_pose_recorded_at_the_observation():
    """The pipeline's chunks anchor on the joint states (no observation_pose): the labeler takes the recorded
    end-effector pose nearest the chunk's stamp, not the newest one."""
    from geometry_msgs.msg import PoseStamped
    from molmoact_msgs.msg import TaskState
    state = TaskState()
    state.object_poses = [_pose(0.55, 0.05, 0.02)]

    def stamped(t, x):
        m = PoseStamped()
        m.header.stamp.sec, m.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
        m.pose = _pose(x, 0.05, 0.10)
        return m
    node = _Node()
    watcher = Watcher(node)
    watcher._on_state(state)
    for k in range(30):   # 50 Hz from 12.0 s; x grows 1 cm per sample
        watcher._on_ee(stamped(12.0 + 0.02 * k, 0.30 + 0.01 * k))
    labeler = ScriptedPolicy(node, watcher, LiftExpertConfig(align_yaw=False), topic=EXPERT_ACTION_CHUNK)
    assert labeler.label(_model_chunk(12, 0.0, 0.0, 0.0, valid=False))   # observed at 12.25 s
    (sent,) = node.publishers[EXPERT_ACTION_CHUNK].sent
    # The sample at 12.24 s or 12.26 s (0.01 s either side), not the newest (12.58 s, x 0.59).
    assert sent.observation_pose.pose.position.x in (pytest.approx(0.42), pytest.approx(0.43))
    assert (sent.header.stamp.sec, sent.header.stamp.nanosec) == (12, 250_000_000)
    assert not labeler.label(_model_chunk(20, 0.0, 0.0, 0.0, valid=False))   # nothing recorded near 20.25 s


def test_the_builder_reads_the_expert_topic_only_when_told():
    available = ['/eval/image', '/eval/action_chunk', '/eval/expert/action_chunk', '/eval/aligned_depth']
    assert resolve_topics(available, TopicConfig())['action_chunk'] == '/eval/action_chunk'
    told = TopicConfig(action_chunk='expert/action_chunk')
    assert resolve_topics(available, told)['action_chunk'] == '/eval/expert/action_chunk'
    # By preference: the expert's labels where a DAgger run has them, else the demonstration's own chunks.
    both = TopicConfig(action_chunk='expert/action_chunk, action_chunk')
    assert resolve_topics(available, both)['action_chunk'] == '/eval/expert/action_chunk'
    demo = [t for t in available if 'expert' not in t]
    assert resolve_topics(demo, both)['action_chunk'] == '/eval/action_chunk'
    assert 'action_chunk' not in resolve_topics(demo, told)



def test_with_detours_the_executed_chunk_and_the_label_go_to_their_topics():
    """--detours: in a detour the sink's action_chunk gets the wrong expert's chunk, expert/action_chunk the
    right one's (same stamp, same observation); the detour is drawn from the episode's seed."""
    from geometry_msgs.msg import PoseStamped
    from molmoact_msgs.msg import TaskState

    from molmoact_bringup.eval.expert import DetourConfig
    from molmoact_ros.ros.topics import ACTION_CHUNK
    state = TaskState()
    state.object_poses = [_pose(0.55, 0.05, 0.02)]
    ee = PoseStamped()
    ee.header.frame_id = 'panda_link0'
    ee.header.stamp.sec = 7
    ee.pose = _pose(0.55, 0.05, 0.10)   # right above the cube

    class Watcher1(_Watcher):
        def snapshot(self):
            return state, ee, 1, 7.0
    node = _Node()
    policy = ScriptedPolicy(node, Watcher1(state), LiftExpertConfig(align_yaw=False),
                            detours=DetourConfig(probability=1.0))
    detour = policy.reset(0, seed=5)
    assert detour is not None and detour == policy.reset(0, seed=5)
    assert policy.step(10.0, 'pick up the red cube', elapsed_s=detour.start_s + 0.01)
    (executed,) = node.publishers[ACTION_CHUNK].sent
    (label,) = node.publishers[EXPERT_ACTION_CHUNK].sent
    assert executed.header.stamp == label.header.stamp == ee.header.stamp
    moved = np.array([[s.translation_m.x, s.translation_m.y] for s in executed.steps]).sum(axis=0)
    assert np.dot(moved, detour.offset_m[:2]) > 0          # toward the wrong place
    assert np.allclose([[s.translation_m.x, s.translation_m.y] for s in label.steps], 0.0)   # down onto the cube
    # After the detour both topics carry the same chunk.
    assert policy.step(11.0, 'pick up the red cube', elapsed_s=detour.end_s + 0.01)
    a, b = node.publishers[ACTION_CHUNK].sent[-1], node.publishers[EXPERT_ACTION_CHUNK].sent[-1]
    assert [s.values for s in a.steps] == [s.values for s in b.steps]
