"""The three stage nodes: perception, trace planner, action decoder (lifecycle nodes over the engine).

Topics (relative names, so namespaces and remapping work):

=====================  =========================================  =============================
node                   subscribes                                 publishes
=====================  =========================================  =============================
perception             image, camera_info, wrist_image,           perception_tokens,
                       aligned_depth, instruction (std_msgs/      depth_image; serves the
                       String, latched); trajectory_trace and     execute_instruction action
                       action_chunk to follow its goals
trace_planner          perception_tokens                          trajectory_trace
action_decoder         perception_tokens, trajectory_trace        action_chunk
                       (image, with multi_rate_hz > 0)
=====================  =========================================  =============================

Each node also publishes ``~/status`` (molmoact_msgs/NodeStatus). Nodes in one process share one engine
(:mod:`.engine_provider`) and hand over the KV cache of each request; a node in another process rebuilds
the request from the message content (one extra prefill). Nothing is published while a node is inactive.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from typing import Optional

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from lifecycle_msgs.msg import State
from molmoact_msgs.action import ExecuteInstruction
from molmoact_msgs.msg import ActionChunk, ExecutionConstraints, NodeStatus, PerceptionTokens, TrajectoryTrace
from molmoact_msgs.srv import EditTrace
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ..cores.intake import Admission, FrameIntake, IntakeConfig
from ..model.processing import build_prompt
from ..reasoning.engine import Observation, check_trace_points
from ..reasoning.goals import GoalBounds, GoalRejected, GoalRun, Outcome, resolve_goal
from ..reasoning.sessions import SessionError
from ..reasoning.steering import ClickedTrace
from ..robot.geometry import (CameraIntrinsics, backproject, center_crop_affine, compose_affine,
                               model_space_to_model_pixels, project, ray_plane_intersection, resize_affine,
                               sample_depth, source_pixels_to_model_space, transform_points)
from ..ros.gc_tuning import freeze_startup_heap
from ..ros.handoff import PROCESS_BUS, SeenKeys, StageWorker
from ..ros.conversions import action_msg, observation_from_msg, perception_msg, trace_msg, trace_result_msg
from ..ros.image import (RESIZE_METHODS, center_crop_resize, depth_to_meters, downscale, jpeg_round_trip,
                         numpy_to_image, to_rgb8)
from ..ros.markers import delete_all, trace_markers
from ..ros.overlay import annotate
from ..ros.sync import StampBuffer, stamp_to_s
from ..ros.transforms import TransformLookup, parse_pose_text
from ..ros.params import ParamSpec
from .base import MolmoActLifecycleNode
from .engine_provider import ENGINE_KEYS, ENGINE_PARAMETERS, PROCESS_PROVIDER, EngineProvider

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MAX_REMEMBERED_REQUESTS = 16


class _Recent(OrderedDict):
    """A small bounded map request_id -> message (oldest dropped)."""

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > MAX_REMEMBERED_REQUESTS:
            self.popitem(last=False)


STAGE_PARAMETERS = (
    ParamSpec('intra_process', True, 'When stages share a process, hand each result straight to the next stage '
              'in this process, which runs on the same thread right away (as rclcpp intra-process communication '
              'does; the message still goes out over DDS to every other subscriber); false: stages receive '
              'results only over DDS.', read_only=True),
)


class StageNode(MolmoActLifecycleNode):
    """A lifecycle node that attaches to the process's engine on configure and releases it on cleanup.

    Model work runs on the node's own worker thread (:class:`~molmoact_ros.ros.handoff.StageWorker`), fed by
    subscription callbacks that only enqueue: the executor's threads stay free for messages, services and
    lifecycle transitions. A result handed over in the same process (:meth:`publish_result`,
    :meth:`handoff_subscription`) starts the next stage at once, on the same thread (run to completion).
    Visualization outputs (markers, annotated and depth images) are built and published on a second
    thread of the node (:meth:`publish_visual`), so the next stage does not wait for them."""

    #: Called by the worker after every wake-up and every 0.1 s (subclasses: e.g. start an inference).
    idle_work = None

    def __init__(self, name: str, *, parameters=(), provider: Optional[EngineProvider] = None, **kwargs):
        self.engine = None
        self.provider = provider or PROCESS_PROVIDER
        self._work_group = MutuallyExclusiveCallbackGroup()
        self._work_lock = threading.Lock()
        self._owned = []
        self._worker: Optional[StageWorker] = None
        self._visual_worker: Optional[StageWorker] = None
        self._visual_lock = threading.Lock()
        self._intra = False
        self.local_inputs = 0  # inputs handed over in this process (intra_process) before DDS brought them
        super().__init__(name, parameters=(*ENGINE_PARAMETERS, *STAGE_PARAMETERS, *parameters), **kwargs)

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load (or attach to) the engine: slow the first time; FAILURE with a clear error otherwise."""
        super().on_configure(state)
        self.engine_state = NodeStatus.ENGINE_LOADING
        try:
            self.engine = self.provider.acquire({k: self.params[k] for k in ENGINE_KEYS})
        except Exception as exc:  # noqa: BLE001 - report, stay unconfigured
            self.engine_state = NodeStatus.ENGINE_ERROR
            self._state_id, self._state_label = State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured'
            self.record_error(f'engine failed to load: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.engine_state = NodeStatus.ENGINE_READY
        self._intra = bool(self.params['intra_process'])
        idle = self.idle_work
        self._worker = self._own(StageWorker(f'{self.get_name()}_worker', on_error=self._work_error,
                                             idle=None if idle is None else self._gated_idle, idle_period_s=0.1),
                                 lambda worker: worker.stop())
        self._visual_worker = self._own(StageWorker(f'{self.get_name()}_visuals', on_error=self._work_error),
                                        lambda worker: worker.stop())
        # The model and the imports are in memory now: exempt them from full garbage collections, which
        # otherwise stall every thread of the process for 0.2-0.4 s at a time (molmoact_ros.ros.gc_tuning).
        freeze_startup_heap()
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    # -- work and handoff -------------------------------------------------------------------------
    def _work_error(self, name: str, exc: BaseException) -> None:
        self.record_error(f'{name}: {type(exc).__name__}: {exc}')

    def _gated_idle(self) -> None:
        if self._active:
            try:
                self.idle_work()
            except Exception as exc:  # noqa: BLE001 - bad input is reported, the node keeps running
                self._work_error('inference', exc)

    def handoff_subscription(self, msg_type, topic: str, callback, qos, key, *, on_worker: bool = True):
        """Subscribe to ``topic`` over DDS and, with ``intra_process``, to results published in this process
        (:meth:`publish_result`). Each message (identified by ``key(msg)``) is handled once, whichever way
        it comes first: on the worker thread, or at once in the receiving thread (``on_worker=False``, for
        cheap bookkeeping). A result published in this process by another stage's worker thread runs on
        that thread right after the publishing work item returns (no thread wake-up on the critical path)."""
        seen = SeenKeys()

        def accept(msg, local=False):
            if not seen.first(key(msg)):
                return
            self.inputs_received += 1
            self.local_inputs += int(local)
            if not self._active:
                self.inputs_dropped += 1
                return
            if on_worker:
                here = StageWorker.current() if local else None
                if here is not None:
                    here.defer(self._worker.run_here, callback, msg)
                else:
                    self._worker.submit(callback, msg)
                return
            try:
                callback(msg)
            except Exception as exc:  # noqa: BLE001 - a bad input must not kill the node
                self._work_error(callback.__name__, exc)

        sub = self.subscription(msg_type, topic, accept, qos)
        if self._intra:
            token = PROCESS_BUS.subscribe(id(self.context), sub.topic_name, lambda msg: accept(msg, local=True))
            self._own(token, PROCESS_BUS.unsubscribe)
        return sub

    def publish_result(self, publisher, msg) -> None:
        """With ``intra_process``, hand ``msg`` to the subscribers of its topic in this process (the same
        object: they must not modify it), then publish it over DDS. A receiving stage runs once the calling
        work item returns (see :meth:`handoff_subscription`)."""
        if self._intra and self._active:
            PROCESS_BUS.deliver(id(self.context), publisher.topic_name, msg)
        publisher.publish(msg)

    def publish_visual(self, fn, *args) -> None:
        """Run ``fn(*args)`` (build and publish a visualization) on the node's visuals thread while active.
        :meth:`on_deactivate` waits for one in progress; later ones are skipped."""
        def run():
            with self._visual_lock:
                if self._active:
                    fn(*args)
        run.__name__ = getattr(fn, '__name__', 'visual')
        if self._visual_worker is not None:
            self._visual_worker.submit(run)

    def _stop_visuals(self) -> None:
        """After ``_active`` is cleared: wait for a visualization in progress (none starts after)."""
        with self._visual_lock:
            pass

    def _release_engine(self) -> None:
        if self.engine is not None:
            self.engine = None
            self.provider.release()
        self.engine_state = NodeStatus.ENGINE_UNLOADED

    # Entities made in configure, destroyed (in reverse order) by cleanup and shutdown.
    def _own(self, entity, destroy):
        self._owned.append((entity, destroy))
        return entity

    def lifecycle_publisher(self, msg_type, topic, qos):
        return self._own(self.create_lifecycle_publisher(msg_type, topic, qos), self.destroy_lifecycle_publisher)

    def subscription(self, msg_type, topic, callback, qos, **kwargs):
        return self._own(self.create_subscription(msg_type, topic, callback, qos, **kwargs),
                         self.destroy_subscription)

    def service(self, srv_type, name, callback, **kwargs):
        return self._own(self.create_service(srv_type, name, callback, **kwargs), self.destroy_service)

    def timer(self, period_s, callback, **kwargs):
        return self._own(self.create_timer(period_s, callback, **kwargs), self.destroy_timer)

    def _teardown(self) -> None:
        for entity, destroy in reversed(self._owned):
            destroy(entity)
        self._owned = []
        self._reset()

    def _reset(self) -> None:
        """Forget per-request state (subclasses)."""

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Destroy what configure made and release the engine (the weights are freed when no node of the
        process uses them)."""
        self._teardown()
        self._release_engine()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._teardown()
        self._release_engine()
        return super().on_shutdown(state)

    @contextlib.contextmanager
    def working(self, request_id: str):
        """Hold the node's work lock while a request is processed: deactivate waits for it, so no result
        is published (and the engine is not released) mid-request. Yields False when the node stopped
        being active while the request waited."""
        with self._work_lock:
            if not self.is_active:
                self.inputs_dropped += 1
                yield False
                return
            self.engine_state = NodeStatus.ENGINE_BUSY
            self.current_request_id = request_id
            start = time.monotonic()
            try:
                yield True
            finally:
                self.engine_state = NodeStatus.ENGINE_READY
                self.current_request_id = ''
                self.last_latency_s = time.monotonic() - start
                self.publish_status()

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking inputs, wait for the request in flight (if any) to finish, then stop publishing."""
        self._active = False
        with self._work_lock:
            pass
        self._stop_visuals()
        return super().on_deactivate(state)


class PerceptionNode(StageNode):
    """Camera image + instruction -> depth perception tokens, at most one inference at a time on the newest
    frame (older pending frames are dropped and counted)."""

    PARAMETERS = (
        ParamSpec('max_image_side_px', 336, 'Frames are resized so that their longer side is at most this '
                  '(the released fine-tunes used <= 336; 0 keeps the camera size).', min_value=0, max_value=4096),
        ParamSpec('resize_method', 'fast_area', 'How frames are downscaled to max_image_side_px: area (OpenCV '
                  'INTER_AREA) or fast_area (box filter by an integer factor, then bilinear: the same for integer '
                  'factors, a slight blur otherwise, about 8x faster at 640x480; see ros/image.py downscale).',
                  choices=RESIZE_METHODS),
        ParamSpec('use_wrist_image', False, 'Feed the wrist view (topic wrist_image) as the second image.'),
        ParamSpec('jpeg_quality', 0, 'JPEG-encode and decode each frame at this quality before the model (the '
                  'released LIBERO evaluator does, at 95, like its training data); 0: no round trip.',
                  min_value=0, max_value=100),
        ParamSpec('center_crop_area_fraction', 1.0, 'Centre-crop each resized frame to this fraction of its area '
                  'and resize it back (bilinear), as the released LIBERO evaluator does (0.9); traces still map to '
                  'source pixels. 1.0: no crop.', min_value=0.25, max_value=1.0),
        ParamSpec('use_aligned_depth', False, 'Attach the depth image aligned with the camera (topic aligned_depth, '
                  '32FC1 m or 16UC1 mm) to each observation, so the planner lifts traces to 3D.'),
        ParamSpec('sync_tolerance_s', 0.05, 'Largest stamp difference between a frame and its aligned depth / '
                  'wrist image.', min_value=0.0, max_value=1.0),
        ParamSpec('min_period_s', 0.0, 'Minimum seconds between two inferences (0: as fast as the model runs).',
                  min_value=0.0, max_value=3600.0),
        ParamSpec('max_frame_age_s', 1.0, 'Frames older than this when inference would start are dropped.',
                  min_value=0.01, max_value=60.0),
        ParamSpec('goal_default_max_steps', 20, 'Model queries an ExecuteInstruction goal runs when it gives '
                  'max_steps 0.', min_value=1, max_value=10000),
        ParamSpec('goal_default_timeout_s', 300.0, 'Time limit of an ExecuteInstruction goal that gives '
                  'timeout_s 0.', min_value=1.0, max_value=86400.0),
        ParamSpec('publish_depth_image', True, 'Publish depth_image (320x320): the perceived depth codes as a '
                  'mono8 image (code * 2 per 32x32 block), or the decoded relative depth (32FC1, 0..1, larger = '
                  'nearer, not metric) when depth_decoder_path names a depth VQ-VAE decoder.'),
        ParamSpec('depth_decoder_path', '', 'Checkpoint of a depth VQ-VAE decoder (see reasoning/depth.py) used to '
                  'decode the depth codes into a depth map on depth_image; empty: publish the codes.'),
    )

    # Superseded camera frames are dropped on purpose: warn only when nearly every frame is dropped.
    drop_warn_fraction = 0.98

    def __init__(self, name: str = 'perception', **kwargs):
        self._pub = None
        self._intake = FrameIntake()  # newest frame + rate limit (cores/intake.py); rebuilt at configure
        self._wrist = None
        self._depths = None
        self._camera_info = None
        self._instruction = ''
        self._goal: Optional[GoalRun] = None
        self._goal_lock = threading.Lock()
        self._goal_msgs = {}           # latest trace / chunk of the running goal (feedback)
        self._depth_pub = None
        self._depth_decoder = None
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._intake = FrameIntake(IntakeConfig(min_period_s=float(self.params['min_period_s']),
                                                max_frame_age_s=float(self.params['max_frame_age_s'])))
        self._pub = self.lifecycle_publisher(PerceptionTokens, 'perception_tokens', RELIABLE)
        self.subscription(Image, 'image', self.gate(self._on_image), qos_profile_sensor_data)
        self.subscription(CameraInfo, 'camera_info', self.gate(self._on_info, while_inactive=True),
                          qos_profile_sensor_data)
        self.subscription(String, 'instruction', self.gate(self._on_instruction, while_inactive=True), LATCHED)
        if self.params['use_aligned_depth']:
            self._depths = StampBuffer(tolerance_s=self.params['sync_tolerance_s'])
            self.subscription(Image, 'aligned_depth', self.gate(self._on_depth), qos_profile_sensor_data)
        if self.params['use_wrist_image']:
            self.subscription(Image, 'wrist_image', self.gate(self._on_wrist), qos_profile_sensor_data)
        # Inference runs on the node's worker thread: a new frame wakes it at once; it also looks every
        # 0.1 s (min_period_s, goals that start while no new frame comes).
        if self.params['publish_depth_image']:
            self._depth_pub = self.lifecycle_publisher(Image, 'depth_image', RELIABLE)
            if self.params['depth_decoder_path']:
                try:
                    from ..reasoning.depth import load_depth_decoder
                    self._depth_decoder = load_depth_decoder(self.params['depth_decoder_path'])
                except Exception as exc:  # noqa: BLE001 - configure fails with the reason
                    self.record_error(f'depth decoder failed to load: {type(exc).__name__}: {exc}')
                    self._teardown()
                    self._release_engine()
                    self._state_id, self._state_label = State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured'
                    return TransitionCallbackReturn.FAILURE
        # ExecuteInstruction: each goal runs in a thread of its own (it waits on the pipeline) while the
        # executor only awaits its end, so no executor thread is held for a goal's duration (the pipeline
        # spins a single-threaded executor); the goal's requests are followed downstream by request id on
        # the trace and action topics.
        goals = ReentrantCallbackGroup()
        server = ActionServer(self, ExecuteInstruction, 'execute_instruction', self._execute_goal,
                              goal_callback=self._on_goal_request, cancel_callback=lambda _: CancelResponse.ACCEPT,
                              callback_group=goals)
        self._own(server, lambda s: s.destroy())
        self.subscription(TrajectoryTrace, 'trajectory_trace', self.gate(self._on_goal_trace, count_inputs=False),
                          RELIABLE, callback_group=goals)
        self.subscription(ActionChunk, 'action_chunk', self.gate(self._on_goal_chunk, count_inputs=False),
                          RELIABLE, callback_group=goals)
        return TransitionCallbackReturn.SUCCESS

    # -- ExecuteInstruction ---------------------------------------------------------------------------
    def _on_goal_request(self, goal):
        if not self.is_active:
            self.get_logger().warning('execute_instruction goal rejected: the perception node is not active')
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute_goal(self, handle):
        """The action server's execute callback: :meth:`_run_goal` on a thread of its own, awaited."""
        from rclpy.task import Future
        done = Future(executor=self.executor)
        done.add_done_callback(lambda _: None)  # completing it then schedules a callback: the executor wakes

        def run():
            try:
                done.set_result(self._run_goal(handle))
            except BaseException as exc:  # noqa: BLE001 - raised where the server awaits the result
                done.set_exception(exc)

        threading.Thread(target=run, name=f'{self.get_name()}_goal', daemon=True).start()
        return await done

    def _run_goal(self, handle):
        """Run the goal's queries (one at a time, on the newest frame) until it completes, times out, is
        cancelled or preempted by a newer goal, or the node is deactivated. While a goal runs it replaces
        the instruction topic's instruction; when it ends the node idles until the next instruction."""
        g = handle.request
        result = ExecuteInstruction.Result()
        try:
            spec = resolve_goal(g.instruction, g.max_steps, g.timeout_s, g.execute, g.max_translation_m_per_step,
                                g.max_rotation_rad_per_step,
                                GoalBounds(default_max_steps=int(self.params['goal_default_max_steps']),
                                           default_timeout_s=float(self.params['goal_default_timeout_s'])))
        except GoalRejected as exc:
            self.record_error(f'execute_instruction goal rejected: {exc}')
            result.outcome, result.reason = Outcome.REJECTED, str(exc)
            handle.abort()
            return result
        run = GoalRun(spec, time.monotonic(), goal_id=bytes(handle.goal_id.uuid).hex())
        with self._goal_lock:
            if self._goal is not None:
                self._goal.preempt()
            self._goal, self._goal_msgs = run, {}
            self._instruction = ''  # the goal's instruction replaces the topic's; nothing runs after it
        self.get_logger().info(f'goal {run.goal_id[:8]}: {spec.instruction!r}, {spec.max_steps} queries, '
                               f'{spec.timeout_s:g} s, execute={spec.execute}')
        while True:
            progress = run.take_progress()
            if progress is not None:
                fb = ExecuteInstruction.Feedback(step=progress.step, request_id=progress.request_id,
                                                 stage=progress.stage.value)
                with self._goal_lock:
                    msgs = dict(self._goal_msgs) if self._goal is run else {}
                if 'trace' in msgs:
                    fb.latest_trace = msgs['trace']
                if 'chunk' in msgs:
                    fb.latest_actions = msgs['chunk']
                handle.publish_feedback(fb)
            ended = run.outcome(time.monotonic(), cancel_requested=handle.is_cancel_requested,
                                node_active=self.is_active)
            if ended is not None:
                break
            time.sleep(0.02)
        outcome, reason = ended
        with self._goal_lock:
            if self._goal is run:
                self._goal = None
        result.outcome, result.reason = int(outcome), reason
        result.steps_completed, result.last_request_id = run.completed, run.last_request_id
        if outcome == Outcome.COMPLETED:
            handle.succeed()
        elif outcome == Outcome.CANCELED and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        self.get_logger().info(f'goal {run.goal_id[:8]} ended: {outcome.name} {reason}'.rstrip())
        return result

    def _on_goal_trace(self, msg: TrajectoryTrace):
        with self._goal_lock:
            if self._goal is not None and self._goal.on_trace(msg.request_id):
                self._goal_msgs['trace'] = msg

    def _on_goal_chunk(self, msg: ActionChunk):
        with self._goal_lock:
            if self._goal is not None and self._goal.on_chunk(msg.request_id):
                self._goal_msgs['chunk'] = msg

    def _on_image(self, msg: Image):
        if self._intake.offer(msg, time.monotonic()):
            self.inputs_dropped += 1  # superseded before it was used
        if self._worker is not None:
            self._worker.wake()

    def _on_wrist(self, msg: Image):
        self._wrist = msg

    def _on_depth(self, msg: Image):
        depth_to_meters(msg)  # validates encoding and size now: a bad depth stream is reported here
        self._depths.add(stamp_to_s(msg.header.stamp), msg)

    def _on_info(self, msg: CameraInfo):
        """Keep a pinhole calibration; NaN / zero / skewed intrinsics or a zero size are an error (counted):
        the trace planner could not lift a trace with them (3D lifts would silently disappear). The last
        valid calibration stays."""
        try:
            CameraIntrinsics.from_k(list(msg.k), msg.width, msg.height)
        except (ValueError, TypeError) as exc:
            raise ValueError(f'camera_info rejected (3D trace lifts need a pinhole calibration; the last valid '
                             f'one is kept): {exc}') from None
        self._camera_info = msg

    def _on_instruction(self, msg: String):
        text = ' '.join(msg.data.split())
        try:
            build_prompt(text)  # the same checks the engine makes (empty, too long)
        except ValueError as exc:
            self._instruction = ''  # never keep acting on the previous instruction after a bad new one
            raise ValueError(f'instruction rejected: {exc}') from None
        self._instruction = text
        self.get_logger().info(f'instruction: {text!r}')

    def idle_work(self):
        self._maybe_infer()

    def _maybe_infer(self):
        goal = self._goal
        if goal is not None:
            if not goal.may_start():
                return
            instruction = goal.spec.instruction
        else:
            instruction = self._instruction
        taken = self._intake.take(time.monotonic(), has_instruction=bool(instruction))
        if taken.admission is Admission.FRAME_TOO_OLD:
            self.inputs_dropped += 1
        if taken.admission is not Admission.RUN:
            return
        msg = taken.frame
        with self.working('') as ok:
            if ok:
                try:
                    self._infer(msg, instruction, goal)
                except Exception as exc:
                    if goal is not None:
                        goal.fail(f'perception failed: {type(exc).__name__}: {exc}')
                    raise

    def _infer(self, msg: Image, instruction: str, goal: Optional[GoalRun] = None):
        started = self.get_clock().now().to_msg()
        # Side inputs are matched now, before the (slow) inference lets their buffers move on.
        depth = self._depths.nearest(stamp_to_s(msg.header.stamp)) if self._depths is not None else None
        rgb = to_rgb8(msg)
        model_rgb, affine = self._model_image(rgb)
        wrist = to_rgb8(self._wrist) if self._wrist is not None else None
        observation = Observation(np.ascontiguousarray(model_rgb),
                                  None if wrist is None else np.ascontiguousarray(self._model_image(wrist)[0]))
        request_id = uuid.uuid4().hex[:12]
        if goal is not None:
            goal.on_started(request_id)
        result = self.engine.perceive(observation, instruction, request_id=request_id)
        constraints = ExecutionConstraints()
        if goal is not None:
            spec = goal.spec
            constraints = ExecutionConstraints(plan_only=not spec.execute, goal_id=goal.goal_id,
                                               max_translation_m_per_step=spec.max_translation_m_per_step,
                                               max_rotation_rad_per_step=spec.max_rotation_rad_per_step)
        if depth is not None and (depth.width, depth.height) != (rgb.shape[1], rgb.shape[0]):
            raise ValueError(f'aligned depth is {depth.width}x{depth.height} but the image is '
                             f'{rgb.shape[1]}x{rgb.shape[0]}: it must be aligned to the camera image')
        out = perception_msg(result, msg.header, observation, self.params['prompt_variant'],
                             self.engine.model_id, started, self._camera_info, affine, aligned_depth=depth,
                             source_size=(rgb.shape[1], rgb.shape[0]), constraints=constraints)
        if goal is not None:
            goal.on_perceived(result.request_id)
        if self._depth_pub is not None:
            self.publish_visual(self._publish_depth_image, result.depth, msg.header)
        self.publish_result(self._pub, out)  # the planner starts when this returns
        self.requests_completed += 1

    def _publish_depth_image(self, depth, header) -> None:
        self._depth_pub.publish(self._depth_image(depth, header))

    def _depth_image(self, depth, header) -> Image:
        """The perceived depth as a 320x320 image: the decoded relative depth (32FC1, 0..1, larger = nearer;
        not metric) with a decoder, else the raw codes (mono8, code * 2; codes are not ordered by depth)."""
        from ..reasoning.depth import depth_code_image
        if self._depth_decoder is not None:
            return numpy_to_image(self._depth_decoder.decode(depth.codes), '32FC1', header)
        return numpy_to_image(depth_code_image(depth.codes), 'mono8', header)

    def _resize(self, rgb: np.ndarray):
        limit = int(self.params['max_image_side_px'])
        h, w = rgb.shape[:2]
        if not limit or max(h, w) <= limit:
            return rgb, None
        scale = limit / max(h, w)
        nw, nh = max(2, round(w * scale)), max(2, round(h * scale))
        return downscale(rgb, (nw, nh), self.params['resize_method']), (nw, nh)

    def _model_image(self, rgb: np.ndarray):
        """(model image, model pixels -> source pixels affine or None): JPEG round trip, resize, centre crop."""
        h, w = rgb.shape[:2]
        if self.params['jpeg_quality']:
            rgb = jpeg_round_trip(rgb, self.params['jpeg_quality'])
        resized, size = self._resize(rgb)
        affine = None if size is None else resize_affine(size[0], size[1], w, h)
        fraction = float(self.params['center_crop_area_fraction'])
        if fraction < 1.0:
            crop = center_crop_affine(resized.shape[1], resized.shape[0], fraction)
            resized = center_crop_resize(resized, fraction)
            affine = crop if affine is None else compose_affine(crop, affine)
        return resized, affine

    def _reset(self):
        self._pub = None
        self._intake.reset()
        self._wrist = self._camera_info = None
        self._depths = None
        self._depth_pub = self._depth_decoder = None
        with self._goal_lock:
            if self._goal is not None:
                self._goal.fail('the perception node was cleaned up')
            self._goal = None


class TracePlannerNode(StageNode):
    """Perception tokens -> the end effector's trace over the image (continues the request's generation).

    Edited traces come in through the ``edit_trace`` service (molmoact_msgs/EditTrace) and the
    ``edited_trace`` topic (a TrajectoryTrace from another program); accepted edits are published on
    ``trajectory_trace`` with source EDITED / EXTERNAL and the next revision, and the action decoder acts
    on them.
    """

    PARAMETERS = (
        ParamSpec('marker_lifetime_s', 0.0, 'Seconds RViz keeps the trace markers without a new trace (0: until '
                  'replaced or deleted).', min_value=0.0, max_value=3600.0),
        ParamSpec('marker_fallback_depth_m', 1.0, 'Without aligned depth, draw the trace markers at this distance '
                  'along the camera rays (they project onto the right pixels in RViz\'s Camera display); 0: no '
                  'markers without depth.', min_value=0.0, max_value=100.0),
        ParamSpec('publish_trace_image', True, 'Publish trace_image: the model\'s view with the trace drawn.'),
        ParamSpec('table_plane_frame', '', 'Without aligned depth, lift traces onto the table plane z = '
                  'table_plane_height_m of this frame (e.g. the robot base frame), via tf2 or '
                  'camera_pose_in_table_frame; empty: no table-plane lift.'),
        ParamSpec('table_plane_height_m', 0.0, 'Height of the table plane in table_plane_frame (m).',
                  min_value=-10.0, max_value=10.0),
        ParamSpec('camera_pose_in_table_frame', '', 'Fixed pose of the camera optical frame in table_plane_frame, '
                  '"x y z qx qy qz qw" (m, unit quaternion), for a calibrated fixed camera where tf2 is not used; '
                  'empty: look the transform up with tf2 at the observation stamp.'),
        ParamSpec('clicked_trace_points', 5, 'Points clicked with RViz\'s Publish Point tool (topic clicked_point; '
                  'remap it to /clicked_point) that make one edited trace.', min_value=1, max_value=5),
        ParamSpec('clicked_pause_s', 2.0, 'Seconds without a click after which the points clicked so far make '
                  'the edited trace.', min_value=0.1, max_value=60.0),
    )

    def __init__(self, name: str = 'trace_planner', **kwargs):
        self._pub = None
        self._markers_pub = None
        self._image_pub = None
        self.perceptions = _Recent()
        self.revisions = _Recent()
        self._latest = ''
        self._tf = None
        self._clicks = None
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._pub = self.lifecycle_publisher(TrajectoryTrace, 'trajectory_trace', RELIABLE)
        self._markers_pub = self.lifecycle_publisher(MarkerArray, 'trace_markers', RELIABLE)
        self._image_pub = self.lifecycle_publisher(Image, 'trace_image', RELIABLE)
        self.handoff_subscription(PerceptionTokens, 'perception_tokens', self._on_perception, RELIABLE,
                                  key=lambda m: m.request_id)
        self.subscription(TrajectoryTrace, 'edited_trace', self.gate(self._on_edited), RELIABLE)
        self.service(EditTrace, 'edit_trace', self._on_edit_service)
        self._tf = TransformLookup(self)
        try:
            fixed = parse_pose_text(self.params['camera_pose_in_table_frame'])
        except ValueError as exc:
            self.record_error(f'camera_pose_in_table_frame: {exc}')
            self._teardown()
            self._release_engine()
            self._state_id, self._state_label = State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured'
            return TransitionCallbackReturn.FAILURE
        self._camera_pose = fixed  # applied per observation frame in _table_lift
        self._clicks = ClickedTrace(int(self.params['clicked_trace_points']), float(self.params['clicked_pause_s']))
        self.subscription(PointStamped, 'clicked_point', self.gate(self._on_clicked_point), RELIABLE)
        self.timer(0.1, self.gate(self._poll_clicks, count_inputs=False))
        return TransitionCallbackReturn.SUCCESS

    # -- RViz Publish Point edits ---------------------------------------------------------------------
    def _on_clicked_point(self, msg: PointStamped):
        """A point clicked in RViz, in any frame tf2 (or a fixed camera pose) relates to the camera: projected
        into the latest observation's camera image and collected into an edited trace."""
        perception = self.perceptions.get(self._latest)
        if perception is None:
            raise ValueError('clicked point ignored: no trace to edit yet')
        intrinsics = self._intrinsics(perception)
        if intrinsics is None:
            raise ValueError('clicked point ignored: the observation has no camera calibration (camera_info)')
        camera = perception.header.frame_id
        source = msg.header.frame_id or camera
        try:
            to_camera = self._camera_from(source, camera, perception.header.stamp)
        except LookupError as exc:
            raise ValueError(f'clicked point in frame {source!r} cannot be related to the camera: {exc}') from None
        xyz = transform_points(to_camera, [msg.point.x, msg.point.y, msg.point.z])
        uv = project(xyz, intrinsics)
        points = self._clicks.add(uv, perception.camera_info.width, perception.camera_info.height, time.monotonic(),
                                  request_id=perception.request_id)
        self.get_logger().info(f'clicked point -> pixel ({uv[0]:.1f}, {uv[1]:.1f}) '
                               f'[{len(self._clicks.points) if points is None else len(points)} collected]')
        if points is not None:
            self._apply_clicks(perception.request_id, points)

    def _poll_clicks(self):
        points = self._clicks.poll(time.monotonic()) if self._clicks is not None else None
        if points:
            self._apply_clicks(self._clicks.request_id, points)

    def _apply_clicks(self, request_id: str, points_px):
        from types import SimpleNamespace
        model = self._to_model_space(request_id, [SimpleNamespace(x=u, y=v) for u, v in points_px],
                                     EditTrace.Request.COORDS_SOURCE_PIXELS)
        trace = self.apply_edit(request_id, model, TrajectoryTrace.SOURCE_EDITED)
        self.publish_trace(trace, self.perceptions[trace.request_id])

    def _camera_from(self, source: str, camera: str, stamp) -> np.ndarray:
        """4x4 mapping ``source`` points into the camera optical frame."""
        table = self.params['table_plane_frame']
        if self._camera_pose is not None and table and source == table:
            return np.linalg.inv(self._camera_pose)
        return self._tf.lookup(camera, source, stamp)

    def _table_lift(self, uv, intrinsics, perception):
        """Points (N, 3) in table_plane_frame where the camera rays through ``uv`` meet the table, or None."""
        table = self.params['table_plane_frame']
        if not table:
            return None
        camera = perception.header.frame_id
        if self._camera_pose is not None:
            camera_to_table = self._camera_pose
        else:
            try:
                camera_to_table = self._tf.lookup(table, camera, perception.header.stamp)
            except LookupError as exc:
                self.record_error(f'table-plane lift skipped: {exc}')
                return None
        return ray_plane_intersection(uv, intrinsics, camera_to_table, (0.0, 0.0, self.params['table_plane_height_m']),
                                      (0.0, 0.0, 1.0))

    def _on_perception(self, msg: PerceptionTokens):
        self.perceptions.put(msg.request_id, msg)
        self._latest = msg.request_id
        with self.working(msg.request_id) as ok:
            if ok:
                self._plan(msg)

    def _plan(self, msg: PerceptionTokens):
        started = self.get_clock().now().to_msg()
        with self.engine.turn('plan'):  # no other stage evicts the request between the check and the plan
            if msg.request_id not in self.engine.sessions:  # another process ran perception, or it was evicted
                self.engine.resume(observation_from_msg(msg), msg.instruction, msg.answer_text, 'depth',
                                   msg.request_id)
            result = self.engine.plan(msg.request_id)
        self.revisions.put(msg.request_id, 0)
        self.publish_trace(trace_result_msg(result, msg, self.engine.model_id, started), msg)
        self.requests_completed += 1

    def apply_edit(self, request_id: str, points_model, source: int) -> TrajectoryTrace:
        """Validate an edit (ValueError with the reason) and build the trace message to publish."""
        request_id = request_id or self._latest
        perception = self.perceptions.get(request_id)
        if perception is None:
            raise ValueError(f'unknown request {request_id!r} (the planner keeps the last '
                             f'{MAX_REMEMBERED_REQUESTS} requests)')
        points = check_trace_points(points_model)
        revision = self.revisions.get(request_id, 0) + 1
        self.revisions.put(request_id, revision)
        from ..reasoning.grammar import format_trace
        return trace_msg(perception, points, source=source, revision=revision, trace_text=format_trace(points),
                         answer_text='', model_id='')

    def _to_model_space(self, request_id: str, points, coordinates: int):
        pts = [(float(p.x), float(p.y)) for p in points]
        if not all(np.isfinite(v) for p in pts for v in p):
            raise ValueError('trace coordinates must be finite numbers')
        if coordinates == EditTrace.Request.COORDS_SOURCE_PIXELS:
            perception = self.perceptions.get(request_id or self._latest)
            if perception is None:
                raise ValueError(f'unknown request {request_id!r}')
            model = source_pixels_to_model_space(np.asarray(pts), perception.image.width, perception.image.height,
                                                 perception.model_to_source)
            pts = np.atleast_2d(model).tolist()
        elif coordinates != EditTrace.Request.COORDS_MODEL:
            raise ValueError(f'unknown coordinates {coordinates}')
        # Model-space 0 and 255 are the centres of the first and last model pixels: the source image's
        # edges lie up to about one model pixel beyond them, so allow that much before clipping.
        if any(v < -2.0 or v > 257.0 for p in pts for v in p):
            raise ValueError(f'trace points outside the image: {pts}')
        return [(int(round(min(max(x, 0), 255))), int(round(min(max(y, 0), 255)))) for x, y in pts]

    def _on_edit_service(self, request, response):
        if not self.is_active:
            response.success, response.message = False, 'trace planner is not active'
            return response
        try:
            points = self._to_model_space(request.request_id, request.points, request.coordinates)
            trace = self.apply_edit(request.request_id, points, TrajectoryTrace.SOURCE_EDITED)
        except ValueError as exc:
            self.record_error(f'edit_trace rejected: {exc}')
            response.success, response.message = False, str(exc)
            return response
        if request.act:
            self.publish_trace(trace, self.perceptions[trace.request_id])
        response.success, response.trace = True, trace
        response.message = f'revision {trace.revision} of request {trace.request_id}' + (
            ' published' if request.act else ' accepted (not published: act is false)')
        return response

    def _on_edited(self, msg: TrajectoryTrace):
        source = msg.source if msg.source in (TrajectoryTrace.SOURCE_EDITED, TrajectoryTrace.SOURCE_EXTERNAL) \
            else TrajectoryTrace.SOURCE_EXTERNAL
        trace = self.apply_edit(msg.request_id, [(p.x_model, p.y_model) for p in msg.points], source)
        self.publish_trace(trace, self.perceptions[trace.request_id])

    # -- visualization ----------------------------------------------------------------------------
    def publish_trace(self, trace: TrajectoryTrace, perception: PerceptionTokens) -> None:
        """Lift the trace to 3D where depth allows, publish it, its markers and the annotated image."""
        uv = np.array([[p.u_px, p.v_px] for p in trace.points], dtype=np.float64)
        intrinsics = self._intrinsics(perception)
        marker_points = None
        if intrinsics is not None and perception.aligned_depth.width and perception.aligned_depth.height:
            depth = depth_to_meters(perception.aligned_depth)
            points = backproject(uv, sample_depth(depth, uv), intrinsics)
            if np.isfinite(points).all():
                trace.points_3d = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
                trace.points_3d_frame_id = trace.header.frame_id
                trace.lift_method = TrajectoryTrace.LIFT_ALIGNED_DEPTH
            marker_points = points
        marker_frame = trace.header.frame_id
        if marker_points is None and intrinsics is not None:
            lifted = self._table_lift(uv, intrinsics, perception)
            if lifted is not None and np.isfinite(lifted).all():
                trace.points_3d = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in lifted]
                trace.points_3d_frame_id = marker_frame = self.params['table_plane_frame']
                trace.lift_method = TrajectoryTrace.LIFT_TABLE_PLANE
                marker_points = lifted
        if marker_points is None and intrinsics is not None and self.params['marker_fallback_depth_m'] > 0:
            marker_points = backproject(uv, np.full(len(uv), self.params['marker_fallback_depth_m']), intrinsics)
        self.publish_visual(self._publish_trace_visuals, trace, perception, marker_points, marker_frame)
        self.publish_result(self._pub, trace)  # the decoder starts when this returns

    def _publish_trace_visuals(self, trace: TrajectoryTrace, perception: PerceptionTokens, marker_points,
                               marker_frame: str) -> None:
        """The trace's markers and annotated image (on the visuals thread)."""
        if marker_points is not None and marker_frame:
            self._markers_pub.publish(trace_markers(
                marker_points, marker_frame, trace.header.stamp, trace.instruction,
                lifetime_s=self.params['marker_lifetime_s'], source=int(trace.source)))
        if self.params['publish_trace_image']:
            model_rgb = to_rgb8(perception.image)
            px = model_space_to_model_pixels(np.array([[p.x_model, p.y_model] for p in trace.points], dtype=np.float64),
                                             perception.image.width, perception.image.height)
            timing = {'perception': perception.timing.total_s * 1e3, 'planning': trace.timing.total_s * 1e3}
            image = annotate(model_rgb, px, trace.instruction, int(trace.source),
                             depth_codes=list(perception.depth_codes), stage_ms=timing)
            self._image_pub.publish(numpy_to_image(image, 'rgb8', trace.header))

    @staticmethod
    def _intrinsics(perception: PerceptionTokens):
        info = perception.camera_info
        if not info.width or not info.height or not any(info.k):
            return None
        try:
            return CameraIntrinsics.from_k(list(info.k), info.width, info.height)
        except ValueError:
            return None

    def on_deactivate(self, state):
        """Remove the trace markers from RViz (DELETEALL) before the publishers stop."""
        self._active = False
        self._stop_visuals()  # no marker from before deactivate lands after the DELETEALL
        with self._work_lock:
            if self._markers_pub is not None:
                self._markers_pub.publish(delete_all())
        return super().on_deactivate(state)

    def _reset(self):
        self._pub = self._markers_pub = self._image_pub = None
        self._tf = self._clicks = None
        self.perceptions.clear()
        self.revisions.clear()


class ActionDecoderNode(StageNode):
    """Trajectory trace -> unnormalized end-effector action chunk (the model's trace, or an edited one).

    Multi-rate execution (``multi_rate_hz`` > 0): the decoder also watches ``image`` and, on a timer at that
    rate, acts on the newest camera frame with the newest trace in the trained trajectory-conditioned
    ("drawn") mode (:meth:`MolmoActEngine.act_on_observation`: no perception or planning, only the action
    list is decoded). The frame is resized to the size of the trace's perception image (the same model
    space), the trace's wrist image is reused, and each chunk carries its own frame's header (request id
    ``<trace request>-mr<n>``), so a sink anchors it to that frame's pose. Actions then come at the
    multi-rate while traces update at the slower full-pipeline rate, until the newest trace is older than
    ``multi_rate_max_trace_age_s`` (a finished goal does not keep the arm moving).
    """

    PARAMETERS = (
        ParamSpec('step_period_s', 0.1, 'Seconds between action steps (the robot\'s / dataset\'s control period).',
                  min_value=0.001, max_value=10.0),
        ParamSpec('delta_frame_id', 'base_link', 'Frame in which the model\'s end-effector deltas are expressed '
                  '(robot base or tool frame, per robot profile).'),
        ParamSpec('multi_rate_hz', 0.0, 'Multi-rate execution: at this rate, act on the newest camera frame '
                  '(topic image) with the newest trace in drawn mode, each chunk stamped with its frame; '
                  '0.0: off (one chunk per trace).', min_value=0.0, max_value=100.0),
        ParamSpec('multi_rate_max_trace_age_s', 10.0, 'Multi-rate execution stops acting when the newest trace\'s '
                  'observation is older than this (e.g. after a goal ended and no new trace comes).',
                  min_value=0.1, max_value=3600.0),
    )

    def __init__(self, name: str = 'action_decoder', **kwargs):
        self._pub = None
        self.perceptions = _Recent()
        self._mr_lock = threading.Lock()
        self._mr_frame = None          # newest camera frame (Image)
        self._mr_trace = None          # newest trace (TrajectoryTrace)
        self._mr_last_stamp = None     # stamp of the last frame acted on
        self._mr_count = 0
        self.multi_rate_chunks = 0
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._pub = self.lifecycle_publisher(ActionChunk, 'action_chunk', RELIABLE)
        self.handoff_subscription(PerceptionTokens, 'perception_tokens', self._on_perception, RELIABLE,
                                  key=lambda m: m.request_id, on_worker=False)
        self.handoff_subscription(TrajectoryTrace, 'trajectory_trace', self._on_trace, RELIABLE,
                                  key=lambda m: (m.request_id, m.source, m.revision))
        rate = float(self.params['multi_rate_hz'])
        if rate > 0.0:
            self.subscription(Image, 'image', self.gate(self._on_frame, count_inputs=False), qos_profile_sensor_data)
            self.timer(1.0 / rate, self.gate(self._multi_rate_tick, count_inputs=False),
                       callback_group=self._work_group)
        return TransitionCallbackReturn.SUCCESS

    def _on_perception(self, msg: PerceptionTokens):
        self.perceptions.put(msg.request_id, msg)

    def _on_frame(self, msg: Image):
        with self._mr_lock:
            self._mr_frame = msg

    def _multi_rate_tick(self):
        """Act on the newest frame (if new) with the newest trace whose perception message was seen."""
        with self._mr_lock:
            frame, trace = self._mr_frame, self._mr_trace
        if frame is None or trace is None:
            return
        stamp = (frame.header.stamp.sec, frame.header.stamp.nanosec)
        perception = self.perceptions.get(trace.request_id)
        if stamp == self._mr_last_stamp or perception is None or not trace.points:
            return
        trace_age_s = (self.get_clock().now().nanoseconds * 1e-9 - trace.header.stamp.sec
                       - trace.header.stamp.nanosec * 1e-9)
        if trace_age_s > float(self.params['multi_rate_max_trace_age_s']):
            return
        self._mr_last_stamp = stamp
        self._mr_count += 1
        request_id = f'{trace.request_id}-mr{self._mr_count}'
        with self.working(request_id) as ok:
            if not ok:
                return
            started = self.get_clock().now().to_msg()
            rgb = to_rgb8(frame)
            size = (perception.image.width, perception.image.height)
            if (rgb.shape[1], rgb.shape[0]) != size:  # the perception image's size: the same model space
                rgb = downscale(rgb, size)
            wrist = observation_from_msg(perception).wrist_image
            result = self.engine.act_on_observation(Observation(np.ascontiguousarray(rgb), wrist), trace.instruction,
                                                    [(p.x_model, p.y_model) for p in trace.points],
                                                    request_id=request_id)
            msg = action_msg(result, trace, step_period_s=self.params['step_period_s'],
                             delta_frame_id=self.params['delta_frame_id'], model_id=self.engine.model_id,
                             started=started)
            msg.header = frame.header  # anchored to this frame, not to the trace's observation
            self._pub.publish(msg)
            self.multi_rate_chunks += 1

    def _on_trace(self, msg: TrajectoryTrace):
        with self._mr_lock:
            self._mr_trace = msg
        with self.working(msg.request_id) as ok:
            if ok:
                self._act(msg)

    def _act(self, msg: TrajectoryTrace):
        started = self.get_clock().now().to_msg()
        engine = self.engine
        with engine.turn('act'):  # no other stage evicts the request between the check and the act
            if msg.source == TrajectoryTrace.SOURCE_MODEL:
                if msg.request_id not in engine.sessions:
                    self._resume(msg, 'trace')
                result = engine.act(msg.request_id, release=False)
            else:
                if msg.request_id not in engine.sessions:
                    self._resume(msg, 'depth')
                points = [(p.x_model, p.y_model) for p in msg.points]
                result = engine.act(msg.request_id, trace_points=points, release=False)
        self.publish_result(self._pub, action_msg(result, msg, step_period_s=self.params['step_period_s'],
                                                  delta_frame_id=self.params['delta_frame_id'],
                                                  model_id=engine.model_id, started=started))
        self.requests_completed += 1

    def _resume(self, trace: TrajectoryTrace, stage: str):
        perception = self.perceptions.get(trace.request_id)
        if perception is None:
            raise SessionError(f'request {trace.request_id!r}: no perception message seen, cannot rebuild it')
        text = trace.answer_text if stage == 'trace' else perception.answer_text
        self.engine.resume(observation_from_msg(perception), perception.instruction, text, stage, trace.request_id)

    def _reset(self):
        self._pub = None
        self.perceptions.clear()
        with self._mr_lock:
            self._mr_frame = self._mr_trace = None
        self._mr_last_stamp = None
