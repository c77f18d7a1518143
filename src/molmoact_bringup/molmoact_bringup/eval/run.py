"""``evaluate``: seeded closed-loop episodes on the simulated arm, each through the whole suite as a user runs it.

    ros2 run molmoact_bringup evaluate [--policy model|scripted] [--model M] [--scene lift|libero]
                                       [--episodes N] [--seed S] [--output DIR] [--record DIR] [--gif]

One ``sim_arm`` process and, in this process, the pipeline's three stage nodes (policy ``model``), the command
sink (execution enabled) and the evaluator's own node, all in ``--namespace``. For each episode ``i`` (seed
``S + i``): the sink is disabled (a halt: nothing queued survives), ``sim_arm/reset_episode`` places the scene
from the seed, the sink is enabled again, and the policy runs until the simulator judges success
(``sim_arm/task_state``: ``succeeded``) or the episode's budget (``--max-steps`` policy steps, ``--episode-timeout``
seconds) runs out:

- ``model``: one ``ExecuteInstruction`` goal (``execute``, ``--max-steps`` queries, the episode's time budget);
  it is cancelled the moment the task succeeds;
- ``scripted``: the expert of :mod:`.expert`, planning from the simulator's privileged state (the cube pose in
  ``task_state``, the end-effector pose ``sim_arm/ee_pose``), publishes an ``ActionChunk`` on ``action_chunk``
  every ``--replan-period`` seconds, which the same command sink executes.

A crashed episode (an exception, the simulator gone) counts as a failure with its reason, and the run goes on
(it stops early only when the simulator process is gone). Writes ``DIR/results.json`` (:class:`.results.EvalReport`)
and prints a table of success rates with 95 % Wilson intervals and ``name: value unit`` figures.
``--record DIR`` keeps each episode as ``DIR/episode_NNNN.mcap``: the topics a real arm also has (image,
aligned depth, camera_info, joint states, end-effector pose, gripper commands, TF where installed) plus the
task state (instruction and success flag) and the action chunks; ``--gif`` writes ``DIR/episode_NNNN.gif``.
``--expert-labels`` (model policy, lift, with ``--record``) is DAgger's labelling: for every chunk the model
computes, the scripted expert plans from the same observation (the chunk's ``observation_pose``, the cube's
pose in the task state) and its chunk is recorded on ``expert/action_chunk``, stamped with the observation's
time; nothing executes it. ``build_dataset --actions commanded --action-chunk-topic expert/action_chunk`` turns
the states the model visited into examples labelled by the expert. ``--detours P`` (scripted, lift) is the
cheaper cousin (DART): in a share P of the episodes an expert that is wrong about the cube's place drives the arm
for a while, and the right expert's label of every observation goes to ``expert/action_chunk``: recovery
demonstrations at the expert's speed.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from molmoact_ros.ros.sync import stamp_to_s

from ..suite import SuiteConfig, SuiteSession, wait_until
from .expert import (Detour, DetourConfig, DetouringExpert, ExpertObservation, LiftExpertConfig, sample_detour,
                     takeover_queries)
from .results import EndReason, EpisodeBudget, EpisodeClock, EpisodeResult, EvalReport, latency_summary

#: Topics kept in ``--record`` files (relative to the namespace): what a real arm has, plus the task state
#: and what the policy sent.
RECORDED_TOPICS = ('image', 'aligned_depth', 'camera_info', 'joint_states', 'sim_arm/ee_pose',
                   'sim_arm/camera_pose', 'tf', 'gripper_controller/commands', 'sim_arm/task_state',
                   'action_chunk', 'trajectory_trace', 'expert/action_chunk')
#: Where ``--expert-labels`` publishes the expert's chunk for each observation the model acted on (relative).
EXPERT_ACTION_CHUNK = 'expert/action_chunk'
MAX_GIF_FRAMES = 300
#: End-effector poses kept for --expert-labels (50 Hz: 60 s, longer than any model's answer).
EE_HISTORY = 3000
DEFAULT_INSTRUCTION = 'pick up the red cube'


def _pose_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 (ValueError for a non-finite or zero quaternion)."""
    from transforms3d.quaternions import quat2mat
    q = np.array([pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z], float)
    n = float(np.linalg.norm(q))
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError('invalid quaternion')
    T = np.eye(4)
    T[:3, :3] = quat2mat(q / n)
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


class Watcher:
    """The evaluator node's subscriptions: the latest task state, end-effector pose and camera frame, stage
    timings, and (optionally) raw recording of :data:`RECORDED_TOPICS`. Callbacks run on the executor thread."""

    def __init__(self, node, recording=None, gif: bool = False):
        from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TaskState, TrajectoryTrace
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        from molmoact_ros.ros.topics import LATCHED

        self.node = node
        self._lock = threading.Lock()
        self.state = None
        self.ee_pose = None
        self.ee_history = collections.deque(maxlen=EE_HISTORY)   # (stamp s, PoseStamped), oldest first
        self.images = 0
        self.last_image_stamp_s = -math.inf
        self.timings: Dict[str, List[float]] = {'perception': [], 'planning': [], 'action': [],
                                                'observation_to_action': []}
        self.latest_trace = None
        self.camera_info = None
        self.camera_pose = None
        self.chunk_ids: List[tuple] = []  # (request_id, trace revision) of the model's chunks this episode
        self.trial = None  # a steering.SteeringTrial fed every end-effector pose
        self.gif = gif
        self.frames: List[np.ndarray] = []
        self.recording = recording
        node.create_subscription(TaskState, 'sim_arm/task_state', self._on_state, LATCHED)
        node.create_subscription(PoseStamped, 'sim_arm/ee_pose', self._on_ee, 10)
        node.create_subscription(PoseStamped, 'sim_arm/camera_pose', self._on_camera_pose, 10)
        node.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, 10)
        node.create_subscription(Image, 'image', self._on_image, 10)
        node.create_subscription(PerceptionTokens, 'perception_tokens', self._timing('perception'), 10)
        node.create_subscription(TrajectoryTrace, 'trajectory_trace', self._on_trace, 10)
        node.create_subscription(ActionChunk, 'action_chunk', self._on_chunk, 10)
        self.on_model_chunk = None   # called with each chunk the model computed (``--expert-labels``)
        self._raw = []
        if recording is not None:
            self._subscribe_raw()

    # -- recording ------------------------------------------------------------------------------------------
    def _subscribe_raw(self) -> None:
        from ..demo.msgdefs import default_share_dirs, schema_text
        from ..demo.run import message_class
        from molmoact_ros.ros.topics import LATCHED as latched
        types = {'image': 'sensor_msgs/msg/Image', 'aligned_depth': 'sensor_msgs/msg/Image',
                 'camera_info': 'sensor_msgs/msg/CameraInfo', 'joint_states': 'sensor_msgs/msg/JointState',
                 'sim_arm/ee_pose': 'geometry_msgs/msg/PoseStamped',
                 'sim_arm/camera_pose': 'geometry_msgs/msg/PoseStamped', 'tf': 'tf2_msgs/msg/TFMessage',
                 'gripper_controller/commands': 'std_msgs/msg/Float64MultiArray',
                 'sim_arm/task_state': 'molmoact_msgs/msg/TaskState', 'action_chunk': 'molmoact_msgs/msg/ActionChunk',
                 'trajectory_trace': 'molmoact_msgs/msg/TrajectoryTrace',
                 EXPERT_ACTION_CHUNK: 'molmoact_msgs/msg/ActionChunk'}
        share = default_share_dirs()
        ns = self.node.get_namespace().rstrip('/')
        for rel in RECORDED_TOPICS:
            type_name = types[rel]
            try:
                cls = message_class(type_name)
                schema = schema_text(type_name, share)
            except Exception:  # noqa: BLE001 - e.g. tf2_msgs absent from the PyPI wheel set
                continue
            topic = f'{ns}/{rel}'
            self.recording.add_topic(topic, type_name, schema)
            qos = latched if rel == 'sim_arm/task_state' else 50
            self._raw.append(self.node.create_subscription(
                cls, topic, lambda data, t=topic: self.recording.write(t, data), qos, raw=True))

    # -- callbacks ------------------------------------------------------------------------------------------
    def _on_state(self, msg) -> None:
        with self._lock:
            self.state = msg

    def _on_ee(self, msg) -> None:
        with self._lock:
            self.ee_pose = msg
            self.ee_history.append((stamp_to_s(msg.header.stamp), msg))
            if self.trial is not None:
                p = msg.pose.position
                self.trial.observe((p.x, p.y, p.z))

    def _on_camera_pose(self, msg) -> None:
        with self._lock:
            self.camera_pose = msg

    def _on_camera_info(self, msg) -> None:
        with self._lock:
            self.camera_info = msg

    def _on_image(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.images += 1
            self.last_image_stamp_s = stamp
        if self.gif and len(self.frames) < MAX_GIF_FRAMES:
            from molmoact_ros.ros.image import image_to_numpy
            from molmoact_ros.ros.overlay import annotate
            rgb = np.ascontiguousarray(np.asarray(image_to_numpy(msg))[..., :3], dtype=np.uint8)
            trace = self.latest_trace
            points = np.zeros((0, 2)) if trace is None else np.array([[p.u_px, p.v_px] for p in trace.points], float)
            state = self.state
            text = state.instruction if state is not None and state.instruction else ''
            self.frames.append(annotate(rgb, points, text, 'model' if trace is None else int(trace.source)))

    def _timing(self, kind):
        def cb(msg):
            self.timings[kind].append(msg.timing.total_s)
        return cb

    def _on_trace(self, msg) -> None:
        self.latest_trace = msg
        self.timings['planning'].append(msg.timing.total_s)

    def _on_chunk(self, msg) -> None:
        if msg.model_id == ScriptedPolicy.MODEL_ID:
            return
        if self.on_model_chunk is not None:
            self.on_model_chunk(msg)
        self.timings['action'].append(msg.timing.total_s)
        with self._lock:
            self.chunk_ids.append((msg.request_id, int(msg.trace_revision)))
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if stamp > 0:
            self.timings['observation_to_action'].append(self.node.get_clock().now().nanoseconds * 1e-9 - stamp)

    # -- what the loop reads --------------------------------------------------------------------------------
    def ee_pose_at(self, stamp_s: float, tolerance_s: float = 0.1):
        """The end-effector pose (PoseStamped) sampled nearest ``stamp_s``, or None when none is within
        ``tolerance_s`` (the history holds the last :data:`EE_HISTORY` samples)."""
        with self._lock:
            samples = list(self.ee_history)
        if not samples:
            return None
        gap, msg = min(((abs(t - stamp_s), m) for t, m in samples), key=lambda g: g[0])
        return msg if gap <= tolerance_s else None

    def snapshot(self):
        with self._lock:
            return self.state, self.ee_pose, self.images, self.last_image_stamp_s

    def start_episode(self, trial=None) -> None:
        with self._lock:
            for values in self.timings.values():
                values.clear()
            self.frames = []
            self.latest_trace = None
            self.chunk_ids = []
            self.trial = trial

    def camera(self):
        """(4x4 base -> optical frame pose, CameraIntrinsics) of the newest camera_pose and camera_info, or None."""
        from molmoact_ros.robot.geometry import CameraIntrinsics
        with self._lock:
            pose, info = self.camera_pose, self.camera_info
        if pose is None or info is None:
            return None
        return _pose_matrix(pose.pose), CameraIntrinsics.from_k(info.k, info.width, info.height)


class ScriptedPolicy:
    """The scripted expert as a publisher of ActionChunks on ``topic``: ``action_chunk`` (the command sink's
    input) to drive the arm, or :data:`EXPERT_ACTION_CHUNK` to label a model's observations (:meth:`label`).

    With ``detours`` (``--detours P``: DART noise injection, :class:`.expert.DetourConfig`) a share of the
    episodes is driven for a while by an expert that is wrong about the cube, and every chunk's observation is
    also labelled on :data:`EXPERT_ACTION_CHUNK` by the expert that is right (the label the dataset builder
    prefers with ``--action-chunk-topic expert/action_chunk,action_chunk``); ``labels`` alone publishes that
    label without detours (the expert of ``--takeover-after``, whose episodes' earlier chunks were labelled)."""

    MODEL_ID = 'scripted_expert'

    def __init__(self, node, watcher: Watcher, config: LiftExpertConfig, base_frame: str = 'panda_link0',
                 topic: str = '', detours: Optional[DetourConfig] = None, labels: bool = False):
        from molmoact_msgs.msg import ActionChunk

        from molmoact_ros.ros.topics import ACTION_CHUNK, RELIABLE
        self.node, self.watcher, self.base_frame = node, watcher, base_frame
        self.expert = DetouringExpert(config)
        self.detours = detours
        self.pub = node.create_publisher(ActionChunk, topic or ACTION_CHUNK, RELIABLE)
        self.label_pub = node.create_publisher(ActionChunk, EXPERT_ACTION_CHUNK, RELIABLE) \
            if detours is not None or labels else None
        self.chunks = 0
        self.episode = 0

    def reset(self, episode: int, seed: int = 0) -> Optional[Detour]:
        """A new episode; its detour (if any) drawn from ``seed``, returned."""
        detour = sample_detour(self.detours, np.random.default_rng(seed)) if self.detours is not None else None
        self.expert.reset(detour)
        self.chunks = 0
        self.episode = episode
        return detour

    def step(self, now_s: float, instruction: str, elapsed_s: float = 0.0) -> bool:
        """Publish one chunk from the newest state (``elapsed_s`` into the episode, for the detour); False when
        there is no state to plan from yet."""
        state, ee, _, _ = self.watcher.snapshot()
        if state is None or ee is None or not state.object_poses:
            return False
        self._publish(ee, ee.header.stamp, state, now_s, instruction, f'scripted-{self.episode}-{self.chunks}',
                      elapsed_s)
        return True

    def label(self, model_chunk) -> bool:
        """DAgger's label of the observation ``model_chunk`` (a model's ActionChunk) was computed from: the
        expert's chunk from that observation's end-effector pose (the chunk's ``observation_pose``, else the
        recorded pose nearest its stamp) and the cube's pose now (the arm is held while the model thinks,
        lockstep), stamped with the observation's time; False when there is no such pose or no cube pose."""
        state, _, _, _ = self.watcher.snapshot()
        stamp = model_chunk.header.stamp
        stamp_s = stamp_to_s(stamp)
        ee = model_chunk.observation_pose if model_chunk.observation_pose_valid else self.watcher.ee_pose_at(stamp_s)
        if state is None or not state.object_poses or ee is None:
            return False
        self._publish(ee, stamp, state, stamp_s, model_chunk.instruction, f'label-{model_chunk.request_id}')
        return True

    def _publish(self, ee, stamp, state, now_s: float, instruction: str, request_id: str,
                 elapsed_s: float = 0.0) -> None:
        """The expert's chunk from ``ee`` (PoseStamped, base frame) and the task state's cube, stamped
        ``stamp``, published (with detours: the executed chunk on ``topic``, the label on
        :data:`EXPERT_ACTION_CHUNK`)."""
        obs = ExpertObservation(_pose_matrix(ee.pose), _pose_matrix(state.object_poses[0]))
        executed, label = self.expert.act(obs, now_s, elapsed_s)
        self.pub.publish(self._message(executed, ee, stamp, instruction, request_id))
        if self.label_pub is not None:
            self.label_pub.publish(self._message(label, ee, stamp, instruction, f'label-{request_id}'))
        self.chunks += 1

    def _message(self, chunk, ee, stamp, instruction: str, request_id: str):
        from molmoact_msgs.msg import ActionChunk, ActionStep
        msg = ActionChunk()
        msg.header.stamp = stamp
        msg.header.frame_id = ee.header.frame_id or self.base_frame
        msg.request_id = request_id
        msg.instruction = instruction
        cfg = self.expert.config
        for dp, dr, g in zip(chunk.translation_m, chunk.rotation_rad, chunk.gripper):
            step = ActionStep()
            step.translation_m.x, step.translation_m.y, step.translation_m.z = (float(v) for v in dp)
            step.rotation_rad.x, step.rotation_rad.y, step.rotation_rad.z = (float(v) for v in dr)
            step.gripper = float(g)
            step.values = [float(v) for v in (*dp, *dr, g)]
            msg.steps.append(step)
        msg.step_period_s = cfg.step_period_s
        msg.action_dim = 7
        msg.rotation_convention = ActionChunk.ROTATION_RPY
        msg.delta_frame_id = self.base_frame
        msg.observation_pose = ee
        msg.observation_pose_valid = True
        msg.action_text = chunk.phase.value
        msg.model_id = self.MODEL_ID
        return msg


class Evaluator:
    """The run: one suite, N episodes (see module docstring)."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.output).resolve()
        self.record_dir = Path(args.record).resolve() if args.record else None
        self.labeler: Optional[ScriptedPolicy] = None
        self.takeover: Optional[ScriptedPolicy] = None
        self.report = EvalReport(args.policy, args.model if args.policy == 'model' else '', args.scene)
        self.suite: Optional[SuiteSession] = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def suite_config(self) -> SuiteConfig:
        from ..demo.run import LIBERO_SINK_PARAMETERS, demo_profile, pipeline_parameters, sim_parameters
        args = self.args
        profile, profile_path, overrides = demo_profile(args, self.out)
        self.profile = profile
        self.report.settings.update(
            robot_profile={'name': profile.name, 'file': str(profile_path), 'overrides': overrides},
            episodes=args.episodes, seed=args.seed, max_steps=args.max_steps, episode_timeout_s=args.episode_timeout,
            camera_rate_hz=args.camera_rate, namespace=args.namespace, structural_model=(
                args.policy == 'model' and args.model == 'tiny'))
        libero = None
        if args.scene == 'libero':
            from ..demo.run import libero_settings
            libero = libero_settings(args)
        sim = sim_parameters(args)
        sim['seed'] = args.seed
        summary: dict = {}
        pipeline = pipeline_parameters(args, profile, libero, summary) if args.policy == 'model' else {}
        return SuiteConfig(namespace=args.namespace, output=self.out, sim_parameters=sim,
                           pipeline_parameters=pipeline,
                           sink_parameters=dict(LIBERO_SINK_PARAMETERS) if libero is not None else {},
                           profile_path=profile_path, with_pipeline=args.policy == 'model', probe_name='evaluate')

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> EvalReport:
        from molmoact_msgs.action import ExecuteInstruction
        from molmoact_msgs.srv import ResetEpisode
        from rclpy.action import ActionClient
        from std_srvs.srv import SetBool

        from .recording import EpisodeRecording
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.suite = suite = SuiteSession(self.suite_config())
        recording = EpisodeRecording() if self.record_dir is not None else None
        try:
            suite.start()
            node = suite.probe
            self.watcher = Watcher(node, recording, gif=args.gif)
            expert = LiftExpertConfig(step_period_s=self.profile.step_period_s, align_yaw=args.expert_align_yaw)
            detours = DetourConfig(probability=args.detours) if args.detours > 0 else None
            self.policy = ScriptedPolicy(node, self.watcher, expert, detours=detours) \
                if args.policy == 'scripted' else None
            if args.expert_labels:
                self.labeler = ScriptedPolicy(node, self.watcher, expert, topic=EXPERT_ACTION_CHUNK)
                self.watcher.on_model_chunk = self.labeler.label
            if args.takeover_after:
                # The expert that finishes the episode: executed and labelled alike (on expert/action_chunk too,
                # where the model's chunks were labelled).
                self.takeover = ScriptedPolicy(node, self.watcher, expert, labels=True)
            self.goal_client = ActionClient(node, ExecuteInstruction, 'execute_instruction') \
                if args.policy == 'model' else None
            self.reset_client = node.create_client(ResetEpisode, 'sim_arm/reset_episode')
            self.enable_client = node.create_client(SetBool, 'command_sink/enable')
            from molmoact_msgs.srv import EditTrace
            self.edit_client = node.create_client(EditTrace, 'edit_trace')
            suite.spin()
            suite.wait_for_sim(self._sim_ready, args.sim_timeout)
            suite.bring_up()
            self.report.settings['ready_s'] = round(time.monotonic() - t0, 2)
            if self.goal_client is not None and not self.goal_client.wait_for_server(timeout_sec=30.0):
                raise RuntimeError('execute_instruction action server not available')
            if not self.reset_client.wait_for_service(timeout_sec=30.0):
                raise RuntimeError('sim_arm/reset_episode is not available (is sim_arm too old?)')
            self._episodes(recording)
        finally:
            try:
                if recording is not None:
                    recording.end()
                suite.close()
            finally:  # the episodes so far are written whatever the bring-down did
                self.report.settings['wall_s'] = round(time.monotonic() - t0, 2)
                self.report.write(self.out / 'results.json')
        return self.report

    def _sim_ready(self) -> bool:
        """A camera frame and a task state arrived."""
        state, _, images, _ = self.watcher.snapshot()
        return images > 0 and state is not None

    def _call(self, client, request, timeout_s: float = 10.0):
        future = client.call_async(request)
        if not wait_until(future.done, timeout_s):
            raise RuntimeError(f'{client.srv_name}: no response within {timeout_s:g} s')
        return future.result()

    def _enable(self, on: bool) -> None:
        from std_srvs.srv import SetBool
        response = self._call(self.enable_client, SetBool.Request(data=on))
        if on and not response.success:
            raise RuntimeError(f'the command sink refused to enable: {response.message}')

    def _episodes(self, recording) -> None:
        args = self.args
        progress = _progress(args.episodes)
        try:
            for i in range(args.episodes):
                if not _ros_ok():
                    # SIGINT / SIGTERM: rclpy's handlers shut the context down; nothing more can run (the
                    # episodes so far are written to results.json, the simulator is stopped on the way out).
                    why = (f'a signal shut ROS down: {len(self.report.episodes)} of {args.episodes} episodes '
                           'finished')
                    self.report.settings['stopped'] = why
                    print(f'evaluate: {why}', file=sys.stderr)
                    break
                if not self.suite.sim_alive():
                    self._crashed(i, 'the simulator process is gone', 0.0)
                    continue
                result = self._episode(i, recording)
                if result.end_reason == EndReason.CRASHED.value and not _ros_ok():
                    # Cut off by the signal, not failed: left out of the rates (the loop stops next).
                    self.report.settings['interrupted_episode'] = i
                    continue
                self.report.episodes.append(result)
                done = self.report.episodes
                wins = sum(e.success for e in done)
                progress.update(1, f'success {100 * wins / len(done):.0f}% ({wins}/{len(done)})')
        finally:
            progress.close()

    def _crashed(self, i: int, why: str, wall_s: float) -> None:
        self.report.episodes.append(EpisodeResult(i, seed=self.args.seed + i, task=self.args.scene, success=False,
                                                  end_reason=EndReason.CRASHED.value, detail=why[:500],
                                                  wall_s=round(wall_s, 3)))

    def _episode(self, i: int, recording) -> EpisodeResult:
        from molmoact_msgs.srv import ResetEpisode
        args = self.args
        seed = args.seed + i
        started = time.monotonic()
        result = EpisodeResult(i, seed=seed, task=args.scene, success=False, end_reason=EndReason.CRASHED.value)
        try:
            self._enable(False)  # a halt: nothing queued from the last episode survives the reset
            response = self._call(self.reset_client, ResetEpisode.Request(seed=seed), timeout_s=30.0)
            if not response.success:
                raise RuntimeError(f'reset refused: {response.message}')
            episode_no = int(response.state.episode)
            task = response.state.task or args.scene
            result.task = task
            instruction = args.instruction or response.state.instruction or DEFAULT_INSTRUCTION
            reset_clock_s = self.suite.probe.get_clock().now().nanoseconds * 1e-9
            # The scene after the reset: its task state, and a camera frame and end-effector pose taken after it.
            fresh = wait_until(lambda: self._fresh(episode_no, reset_clock_s), 20.0)
            if not fresh:
                raise RuntimeError('no task state / camera frame / end-effector pose after the reset within 20 s')
            trial = self._steering_trial(response.state, seed) if args.steer != 'off' else None
            self.watcher.start_episode(trial)
            if recording is not None:
                result.recording = str(self.record_dir / f'episode_{i:04d}.mcap')
                recording.begin(Path(result.recording))
            self._enable(True)
            clock = EpisodeClock(EpisodeBudget(args.max_steps, args.episode_timeout), time.monotonic())
            if self.policy is not None:
                self._run_scripted(clock, episode_no, instruction, seed, result)
            else:
                self._run_model(clock, episode_no, instruction, result)
            self._enable(False)
            if trial is not None:
                result.extra['steering'] = {
                    'mode': args.steer, 'offset_m': round(trial.target.offset_m, 4),
                    'virtual_cube_m': [round(float(v), 4) for v in trial.target.cube_m],
                    'end_point_m': [round(float(v), 4) for v in trial.target.end_m],
                    'closest_approach_m': round(trial.closest_m, 4), 'within_m': trial.config.success_m,
                    'steered': trial.steered, 'edits': getattr(self, '_edits', 0)}
            if recording is not None:
                time.sleep(0.2)  # the last task state and frames reach the file
                result.extra['recorded_messages'] = recording.end()
            state = self.watcher.snapshot()[0]
            result.success = clock.ended is EndReason.SUCCESS
            result.end_reason = clock.ended.value
            result.steps = clock.steps
            if state is not None and int(state.episode) == episode_no:
                result.sim_success_s = float(state.first_success_s) if state.succeeded else None
                result.detail = result.detail or state.reason[:500]
        except Exception as exc:  # noqa: BLE001 - a crashed episode is a failure with its reason; the run goes on
            result.success, result.end_reason = False, EndReason.CRASHED.value
            result.detail = f'{type(exc).__name__}: {exc}'[:500]
            if args.verbose:
                traceback.print_exc()
            if recording is not None:
                recording.end()
        result.wall_s = round(time.monotonic() - started, 3)
        result.stage_latency = {k: latency_summary(v) for k, v in self.watcher.timings.items() if v}
        if args.gif and self.watcher.frames:
            from ..demo.outputs import write_gif
            gif_dir = self.record_dir or self.out
            result.gif = str(gif_dir / f'episode_{i:04d}.gif')
            write_gif(self.watcher.frames, Path(result.gif), fps=args.camera_rate)
        return result

    def _fresh(self, episode_no: int, reset_clock_s: float) -> bool:
        state, ee, _, image_stamp = self.watcher.snapshot()
        if state is None or int(state.episode) != episode_no or ee is None:
            return False
        ee_stamp = ee.header.stamp.sec + ee.header.stamp.nanosec * 1e-9
        return image_stamp > reset_clock_s and ee_stamp > reset_clock_s

    def _succeeded(self, episode_no: int) -> bool:
        state = self.watcher.snapshot()[0]
        return state is not None and int(state.episode) == episode_no and bool(state.succeeded)

    def _run_scripted(self, clock: EpisodeClock, episode_no: int, instruction: str, seed: int,
                      result: EpisodeResult, policy: Optional[ScriptedPolicy] = None) -> None:
        policy = policy or self.policy
        detour = policy.reset(episode_no, seed)
        if detour is not None:
            result.extra['detour'] = {'offset_m': [round(v, 4) for v in detour.offset_m],
                                      'start_s': round(detour.start_s, 3), 'end_s': round(detour.end_s, 3)}
        period = self.args.replan_period
        started = next_s = time.monotonic()
        while clock.check(time.monotonic(), self._succeeded(episode_no)) is None:
            if not self.suite.sim_alive():
                clock.end(EndReason.CRASHED, time.monotonic())
                break
            now = time.monotonic()
            if now >= next_s:
                if policy.step(now, instruction, now - started):
                    clock.step()
                next_s = now + period
            time.sleep(0.02)

    def _steering_trial(self, state, seed: int):
        """The episode's steering trial: a virtual cube 10-15 cm from the real one (eval.steering)."""
        from ..sim.task import CubeRandomization
        from .steering import SteeringTrial, steering_target
        if not state.object_poses:
            raise RuntimeError('--steer needs the cube pose in the task state (the lift scene)')
        p = state.object_poses[0].position
        cube = np.array([p.x, p.y, p.z])
        placement = CubeRandomization().sample(seed)  # sim_arm's default cube_xy_range_m / yaw range
        centre = cube[:2] - [placement.dx_m, placement.dy_m]
        return SteeringTrial(steering_target(cube, centre, seed))

    def _run_model(self, clock: EpisodeClock, episode_no: int, instruction: str, result: EpisodeResult) -> None:
        args = self.args
        if self.labeler is not None:
            self.labeler.reset(episode_no)
        if args.steer == 'edit':
            goal = self._run_steered(clock, episode_no, instruction)
            clock.steps = int(goal['steps_completed'])
            result.extra['goal'] = goal
            trial = self.watcher.trial
            clock.end(EndReason.SUCCESS if trial.steered else EndReason.STEP_BUDGET, time.monotonic())
            return
        if args.takeover_after:
            self._run_takeover(clock, episode_no, instruction, result)
            return
        if args.lockstep:
            goal = self._run_lockstep(clock, episode_no, instruction)
        else:
            goal = self.suite.run_goal(self.goal_client, instruction, args.max_steps, float(args.episode_timeout),
                                       stop=lambda: self._succeeded(episode_no))
        clock.steps = int(goal['steps_completed'])
        result.extra['goal'] = goal
        if self._succeeded(episode_no):
            clock.check(time.monotonic(), True)
            return
        # No success yet: give the last chunk time to run, then judge.
        wait_until(lambda: self._succeeded(episode_no), args.settle)
        if clock.check(time.monotonic(), self._succeeded(episode_no)) is not None:
            return
        outcome = goal['outcome']
        if outcome == 'completed':
            clock.end(EndReason.STEP_BUDGET, time.monotonic())
        elif outcome == 'timed_out':
            clock.end(EndReason.TIME_BUDGET, time.monotonic())
        elif outcome == 'no_result':
            clock.end(EndReason.NO_RESULT, time.monotonic())
        else:
            clock.end(EndReason.POLICY_FAILED, time.monotonic())
            result.detail = f"goal {outcome}: {goal['reason']}"[:500]


    def _run_takeover(self, clock: EpisodeClock, episode_no: int, instruction: str, result: EpisodeResult) -> None:
        """``--takeover-after N``: the model for a seeded 1..N queries (lockstep, each observation labelled by the
        expert), then the scripted expert to the end of the episode. Its success is the expert's, not the model's:
        data (a learner's state, then the expert's recovery: ``build_dataset`` keeps the steps from the takeover
        on), not an evaluation."""
        seed = result.seed
        queries = takeover_queries(seed, self.args.takeover_after)
        goal = self._run_lockstep(clock, episode_no, instruction, max_queries=queries)
        result.extra['goal'] = goal
        result.extra['takeover'] = {'after_queries': queries, 'model_steps': int(goal['steps_completed'])}
        clock.steps = int(goal['steps_completed'])
        if self._succeeded(episode_no):
            clock.check(time.monotonic(), True)
            return
        # The expert's own budget: its chunks are not model queries; the episode's time limit still holds.
        left = max(1.0, self.args.episode_timeout - clock.elapsed_s(time.monotonic()))
        expert_clock = EpisodeClock(EpisodeBudget(200, left), time.monotonic())
        self._run_scripted(expert_clock, episode_no, instruction, seed, result, policy=self.takeover)
        result.extra['takeover']['expert_chunks'] = expert_clock.steps
        clock.steps += expert_clock.steps
        clock.end(expert_clock.ended or EndReason.TIME_BUDGET, time.monotonic())

    def _run_lockstep(self, clock: EpisodeClock, episode_no: int, instruction: str,
                      max_queries: Optional[int] = None) -> dict:
        """The released LIBERO evaluator's loop: one query at a time, each after the previous answer's actions
        ran and a camera frame of the result came."""
        args = self.args
        execution_s = args.action_horizon * self.profile.step_period_s + 2.0 / args.camera_rate + 0.2
        goal = {'outcome': 'completed', 'reason': '', 'steps_completed': 0}
        for _ in range(args.max_steps if max_queries is None else min(max_queries, args.max_steps)):
            left = args.episode_timeout - clock.elapsed_s(time.monotonic())
            if left < 1.0:
                goal.update(outcome='timed_out', reason=f'the episode ran out of its {args.episode_timeout:g} s')
                break
            one = self.suite.run_goal(self.goal_client, instruction, 1, left, stop=lambda: self._succeeded(episode_no))
            goal['steps_completed'] += one['steps_completed']
            if one['outcome'] != 'completed':
                goal.update(outcome=one['outcome'], reason=one['reason'])
                break
            if wait_until(lambda: self._succeeded(episode_no), execution_s):
                break
        return goal


    def _run_steered(self, clock: EpisodeClock, episode_no: int, instruction: str) -> dict:
        """Steering (``--steer edit``), one query at a time: the model's own chunk is held back (the sink
        disabled while the goal runs), its trace is replaced through ``edit_trace`` (drawn steering, source
        pixels) by the trial's trace to the virtual cube, and the chunk the action stage writes for the edited
        trace is executed; until the end effector comes within the trial's distance of the end point."""
        from molmoact_msgs.srv import EditTrace
        from geometry_msgs.msg import Point32
        args = self.args
        trial = self.watcher.trial
        execution_s = args.action_horizon * self.profile.step_period_s + 2.0 / args.camera_rate + 0.2
        goal = {'outcome': 'completed', 'reason': '', 'steps_completed': 0}
        self._edits = 0
        for _ in range(args.max_steps):
            left = args.episode_timeout - clock.elapsed_s(time.monotonic())
            if left < 1.0 or trial.steered:
                if not trial.steered:
                    goal.update(outcome='timed_out', reason=f'the episode ran out of its {args.episode_timeout:g} s')
                break
            self._enable(False)
            one = self.suite.run_goal(self.goal_client, instruction, 1, left)
            goal['steps_completed'] += one['steps_completed']
            if one['outcome'] != 'completed':
                goal.update(outcome=one['outcome'], reason=one['reason'])
                break
            _, ee, _, _ = self.watcher.snapshot()
            camera = self.watcher.camera()
            if ee is None or camera is None:
                goal.update(outcome='failed', reason='no end-effector pose or camera calibration to draw a trace')
                break
            p = ee.pose.position
            from .steering import to_pixels
            pixels = to_pixels(trial.trace_m((p.x, p.y, p.z)), *camera)
            if pixels is None:
                goal.update(outcome='failed', reason='the steering trace leaves the camera image')
                break
            self._enable(True)
            request = EditTrace.Request(request_id=one['last_request_id'], coordinates=EditTrace.Request.COORDS_SOURCE_PIXELS,
                                        points=[Point32(x=u, y=v, z=0.0) for u, v in pixels], act=True)
            response = self._call(self.edit_client, request)
            if not response.success:
                goal.update(outcome='failed', reason=f'edit_trace refused: {response.message}'[:500])
                break
            self._edits += 1
            edited = (one['last_request_id'], int(response.trace.revision))
            if not wait_until(lambda: edited in self.watcher.chunk_ids, 30.0):
                goal.update(outcome='no_result', reason='no chunk for the edited trace within 30 s')
                break
            wait_until(lambda: trial.steered, execution_s)
        return goal


def _ros_ok() -> bool:
    import rclpy
    return rclpy.ok()


class _progress:
    """A tqdm progress bar on stderr with the running success rate (plain lines without tqdm)."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc='episodes', unit='ep', file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            self._bar = None
        self._n, self._total = 0, total

    def update(self, n: int, text: str) -> None:
        self._n += n
        if self._bar is not None:
            self._bar.set_postfix_str(text)
            self._bar.update(n)
        else:
            print(f'episodes {self._n}/{self._total}: {text}', file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def default_model() -> str:
    """The demo's default model: ``$MOLMOACT_MODEL``, else ``tiny``."""
    from ..demo.run import default_model as demo_default
    return demo_default()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Seeded closed-loop episodes on the simulated arm through the whole '
                                'suite; success judged by the simulator. Writes OUTPUT/results.json.')
    p.add_argument('--policy', choices=('model', 'scripted'), default='model',
                   help='model: the pipeline with --model; scripted: the privileged-state expert (upper bound, '
                   'demonstrator)')
    p.add_argument('--expert-align-yaw', action=argparse.BooleanOptionalAction, default=True,
                   help="scripted: turn the fingers to the cube's faces during the approach (--no-expert-align-yaw: "
                   'keep the wrist still; the demonstrations of the bundled model)')
    p.add_argument('--model', default=default_model(), help='tiny, a checkpoint directory or a hub id (default: the '
                   "demo's default model, $MOLMOACT_MODEL or tiny)")
    p.add_argument('--scene', choices=('lift', 'libero'), default='lift')
    p.add_argument('--episodes', type=int, default=10, help='episodes (1..1000)')
    p.add_argument('--seed', type=int, default=None, help='seed of the first episode; episode i uses seed + i '
                   '(lift: 1000; libero: the official initial state index, --init-state)')
    p.add_argument('--output', type=Path, default=Path('eval_output'))
    p.add_argument('--record', default='', help='keep each episode as DIR/episode_NNNN.mcap')
    p.add_argument('--gif', action='store_true', help='write each episode as a GIF (in --record DIR, else --output)')
    p.add_argument('--max-steps', type=int, default=0, help='policy steps per episode: queries (model) or chunks '
                   '(scripted); default 40 model, 200 scripted')
    p.add_argument('--episode-timeout', type=float, default=0.0, help='seconds per episode (default 240 model, '
                   '60 scripted)')
    p.add_argument('--replan-period', type=float, default=0.4,
                   help='scripted (and --takeover-after): seconds between the expert\'s chunks')
    p.add_argument('--expert-labels', action='store_true',
                   help='model, lift, with --record: DAgger labels: record the scripted expert\'s chunk for every '
                   'observation the model acted on (expert/action_chunk; nothing executes it)')
    p.add_argument('--takeover-after', type=int, default=0,
                   help='model, lift, with --expert-labels: the model drives for 1..N queries (seeded per episode), '
                   'then the scripted expert finishes the episode (DAgger data whose traces are the expert\'s from '
                   'the takeover on; its successes are the expert\'s: not an evaluation)')
    p.add_argument('--detours', type=float, default=0.0,
                   help='scripted, lift: share of episodes (0..1) driven for 1-5 s by an expert that believes the '
                   'cube is 3-10 cm off, every observation labelled by the right expert on expert/action_chunk '
                   '(DART noise injection: recovery demonstrations; build_dataset --action-chunk-topic '
                   'expert/action_chunk,action_chunk)')
    p.add_argument('--instruction', default='', help="default: the task's own (sim_arm/task_state)")
    p.add_argument('--namespace', default='/eval')
    p.add_argument('--camera-rate', type=float, default=0.0, help='camera frames per second (default 10 lift: '
                   'one per control step of sim_panda; 2 libero)')
    p.add_argument('--width', type=int, default=0, help='image width (px; default 320 lift, 256 libero)')
    p.add_argument('--height', type=int, default=0, help='image height (px; default 240 lift, 256 libero)')
    p.add_argument('--sim-timeout', type=float, default=0.0, help='time limit for the simulator to start (s; '
                   'default 90 lift, 300 libero: its first export settles all 50 initial states, 1-2.5 min)')
    p.add_argument('--settle', type=float, default=3.0, help='model: seconds after the goal for its last chunk')
    p.add_argument('--robot-profile', default='', help='robot profile of the sink (default sim_panda / libero_panda)')
    p.add_argument('--strict-profile', action='store_true', help='use the profile as it is (see demo --help)')
    p.add_argument('--max-action-age', type=float, default=10.0, help='oldest chunk the sink executes, unless '
                   '--strict-profile (s)')
    p.add_argument('--unnorm-key', default='')
    p.add_argument('--suite', default='libero_spatial', help='LIBERO suite of --scene libero')
    p.add_argument('--task-id', type=int, default=0, help='LIBERO task of the suite')
    p.add_argument('--init-state', type=int, default=0, help='LIBERO official initial state of the first episode')
    p.add_argument('--lockstep', action=argparse.BooleanOptionalAction, default=None,
                   help='model: one query at a time, each after the previous answer ran (default: on for libero, '
                   'as the released LIBERO evaluator, and for a model answering several steps per query, e.g. '
                   'sim-lift; off otherwise)')
    p.add_argument('--steer', choices=('off', 'measure', 'edit'), default='off',
                   help='lift, model: steering trials (eval/steering.py): a virtual cube 10-15 cm from the real '
                   'one; "edit" replaces every query\'s trace by the path to it (edit_trace, drawn) and ends the '
                   'episode when the end effector comes within 3 cm of the trace\'s end point; "measure" only '
                   'records the closest approach without editing (the unsteered baseline)')
    p.add_argument('--verbose', action='store_true', help='print tracebacks of crashed episodes')
    args = p.parse_args(argv)
    from ..demo.run import apply_scene_defaults
    # lift: 10 Hz, the sim_panda profile's step period, so that each recorded step has its own camera frame
    # (build_dataset matches frames to steps); libero: the demo's 2 Hz (two views, multisampled).
    libero = apply_scene_defaults(args, lift_camera_rate_hz=10.0)
    if libero:
        args.action_horizon = 8
    elif args.policy == 'model':
        from molmoact_ros.nodes.engine_provider import model_action_horizon
        args.action_horizon = model_action_horizon(args.model)  # the checkpoint's own (engine action_horizon 0)
    else:
        args.action_horizon = 1
    if libero:
        # The released evaluator's budget: the suite's max environment steps (20 Hz), 8 actions per query.
        from ..sim.libero_task import SUITES
        suite = SUITES.get(args.suite)
        if suite is None:
            p.error(f'unknown LIBERO suite {args.suite!r}; one of {sorted(SUITES)}')
        args.max_steps = args.max_steps or -(-suite.max_steps // args.action_horizon)
        args.seed = args.init_state if args.seed is None else args.seed
    args.seed = 1000 if args.seed is None else args.seed
    args.max_steps = args.max_steps or (40 if args.policy == 'model' else 200)
    args.episode_timeout = args.episode_timeout or (240.0 if args.policy == 'model' else 60.0)
    if not 1 <= args.episodes <= 1000:
        p.error('--episodes must be within 1..1000')
    if not 1 <= args.max_steps <= 10000:
        p.error('--max-steps must be within 1..10000')
    if not 1.0 <= args.episode_timeout <= 3600.0:
        p.error('--episode-timeout must be within 1..3600 s')
    if not 0.05 <= args.replan_period <= 10.0:
        p.error('--replan-period must be within 0.05..10 s')
    if args.policy == 'scripted' and libero:
        p.error('the scripted expert knows the lift scene only')
    if args.expert_labels and (libero or args.policy != 'model' or not args.record):
        p.error('--expert-labels labels the model policy\'s observations on the lift scene; it needs --record')
    if args.takeover_after and not (args.expert_labels and 1 <= args.takeover_after <= 1000):
        p.error('--takeover-after N (1..1000) needs --expert-labels (and so the model policy, lift, --record)')
    if not 0.0 <= args.detours <= 1.0:
        p.error('--detours must be within 0..1')
    if args.detours > 0 and (libero or args.policy != 'scripted'):
        p.error('--detours drives the scripted expert on the lift scene')
    if args.steer != 'off' and (libero or args.policy != 'model'):
        p.error('--steer runs the model policy on the lift scene')
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = Evaluator(args).run()
    print(report.table())
    for line in report.figures():
        print(line)
    reasons = ', '.join(f'{k} {v}' for k, v in report.end_reasons().items())
    print(f'evaluate: {args.policy}{" " + args.model if args.policy == "model" else ""} on {args.scene}: '
          f'end reasons: {reasons}; results in {Path(args.output).resolve() / "results.json"}')
    if args.policy == 'model' and args.model == 'tiny':
        print('evaluate: model "tiny" has random weights (a structural test model): a lower bound')
    return 0


if __name__ == '__main__':
    sys.exit(main())
