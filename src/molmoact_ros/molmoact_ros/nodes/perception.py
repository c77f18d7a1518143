"""The perception node (executable ``perception_node``): camera image + instruction -> depth perception tokens.

Subscribes ``image``, ``camera_info``, ``instruction`` (latched), ``aligned_depth`` (use_aligned_depth),
``wrist_image`` (use_wrist_image), and ``trajectory_trace`` / ``action_chunk`` to follow its goals; publishes
``perception_tokens`` and ``depth_image``; serves the ``execute_instruction`` action. At most one inference
at a time, on the newest frame (older pending frames are dropped and counted). The decisions (which query
runs, on which frame, the model image, goal runs) are :class:`~molmoact_ros.cores.perception.PerceptionCore`.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from molmoact_msgs.action import ExecuteInstruction
from molmoact_msgs.msg import ActionChunk, ExecutionConstraints, PerceptionTokens, TrajectoryTrace
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ..cores.goal_runs import Ending
from ..cores.intake import Admission
from ..cores.perception import PerceptionConfig, PerceptionCore
from ..reasoning.engine import Observation
from ..reasoning.goals import GoalRejected, Outcome
from ..robot.geometry import CameraIntrinsics
from ..ros import topics as T
from ..ros.conversions import perception_msg
from ..ros.image import RESIZE_METHODS, depth_to_meters, numpy_to_image, to_rgb8
from ..ros.params import ParamSpec
from ..ros.sync import StampBuffer, stamp_to_s
from ..ros.topics import LATCHED, RELIABLE, SENSOR
from .stage_base import StageNode

_D = PerceptionConfig()  # the one default of each core parameter

PERCEPTION_PARAMETERS = (
    ParamSpec('max_image_side_px', _D.image.max_image_side_px, 'Frames are resized so that their longer side is '
              'at most this (the released fine-tunes used <= 336; 0 keeps the camera size).',
              min_value=0, max_value=4096),
    ParamSpec('resize_method', _D.image.resize_method, 'How frames are downscaled to max_image_side_px: area '
              '(OpenCV INTER_AREA) or fast_area (box filter by an integer factor, then bilinear: the same for '
              'integer factors, a slight blur otherwise, about 8x faster at 640x480; see ros/image.py downscale).',
              choices=RESIZE_METHODS),
    ParamSpec('use_wrist_image', _D.wiring.use_wrist_image, 'Feed the wrist view (topic wrist_image) as the '
              'second image.'),
    ParamSpec('jpeg_quality', _D.image.jpeg_quality, 'JPEG-encode and decode each frame at this quality before '
              'the model (the released LIBERO evaluator does, at 95, like its training data); 0: no round trip.',
              min_value=0, max_value=100),
    ParamSpec('center_crop_area_fraction', _D.image.center_crop_area_fraction, 'Centre-crop each resized frame '
              'to this fraction of its area and resize it back (bilinear), as the released LIBERO evaluator does '
              '(0.9); traces still map to source pixels. 1.0: no crop.', min_value=0.25, max_value=1.0),
    ParamSpec('use_aligned_depth', _D.wiring.use_aligned_depth, 'Attach the depth image aligned with the camera '
              '(topic aligned_depth, 32FC1 m or 16UC1 mm) to each observation, so the planner lifts traces to 3D.'),
    ParamSpec('sync_tolerance_s', _D.wiring.sync_tolerance_s, 'Largest stamp difference between a frame and its '
              'aligned depth / wrist image.', min_value=0.0, max_value=1.0),
    ParamSpec('min_period_s', _D.intake.min_period_s, 'Minimum seconds between two inferences (0: as fast as '
              'the model runs).', min_value=0.0, max_value=3600.0),
    ParamSpec('max_frame_age_s', _D.intake.max_frame_age_s, 'Frames older than this when inference would start '
              'are dropped.', min_value=0.01, max_value=60.0),
    ParamSpec('goal_default_max_steps', _D.goals.default_max_steps, 'Model queries an ExecuteInstruction goal '
              'runs when it gives max_steps 0.', min_value=1, max_value=10000),
    ParamSpec('goal_default_timeout_s', _D.goals.default_timeout_s, 'Time limit of an ExecuteInstruction goal '
              'that gives timeout_s 0.', min_value=1.0, max_value=86400.0),
    ParamSpec('publish_depth_image', _D.wiring.publish_depth_image, 'Publish depth_image (320x320): the perceived '
              'depth codes as a mono8 image (code * 2 per 32x32 block), or the decoded relative depth (32FC1, '
              '0..1, larger = nearer, not metric) when depth_decoder_path names a depth VQ-VAE decoder.'),
    ParamSpec('depth_decoder_path', _D.wiring.depth_decoder_path, 'Checkpoint of a depth VQ-VAE decoder (see '
              'reasoning/depth.py) used to decode the depth codes into a depth map on depth_image; empty: publish '
              'the codes.'),
)


class PerceptionNode(StageNode):
    """Camera image + instruction -> depth perception tokens (see the module docstring)."""

    PARAMETERS = PERCEPTION_PARAMETERS
    # Superseded camera frames are dropped on purpose: warn only when nearly every frame is dropped.
    drop_warn_fraction = 0.98

    def __init__(self, name: str = 'perception', **kwargs):
        self.core = PerceptionCore()  # rebuilt from the parameters at configure
        self._reset()
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def _reset(self):
        self._pub = self._depth_pub = self._depth_decoder = None
        self._wrist = self._camera_info = self._depths = None
        self.core.reset()

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        instruction = self.core.instruction  # a latched instruction may have come before
        self.core = PerceptionCore(PerceptionConfig.from_params(self.params))
        self.core.instruction = instruction
        self._pub = self.lifecycle_publisher(PerceptionTokens, T.PERCEPTION_TOKENS, RELIABLE)
        self.subscription(Image, T.IMAGE, self.gate(self._on_image), SENSOR)
        self.subscription(CameraInfo, T.CAMERA_INFO, self.gate(self._on_info, while_inactive=True), SENSOR)
        self.subscription(String, T.INSTRUCTION, self.gate(self._on_instruction, while_inactive=True), LATCHED)
        wiring = self.core.config.wiring
        if wiring.use_aligned_depth:
            self._depths = StampBuffer(tolerance_s=wiring.sync_tolerance_s)
            self.subscription(Image, T.ALIGNED_DEPTH, self.gate(self._on_depth), SENSOR)
        if wiring.use_wrist_image:
            self.subscription(Image, T.WRIST_IMAGE, self.gate(self._on_wrist), SENSOR)
        if wiring.publish_depth_image:
            self._depth_pub = self.lifecycle_publisher(Image, T.DEPTH_IMAGE, RELIABLE)
            if wiring.depth_decoder_path:
                try:
                    from ..reasoning.depth import load_depth_decoder
                    self._depth_decoder = load_depth_decoder(wiring.depth_decoder_path)
                except Exception as exc:  # noqa: BLE001 - configure fails with the reason
                    return self.fail_transition(f'depth decoder failed to load: {type(exc).__name__}: {exc}')
        # Each goal runs in a thread of its own (it waits on the pipeline) while the executor only awaits its
        # end; the goal's requests are followed downstream by request id on the trace and action topics.
        goals = ReentrantCallbackGroup()
        self.own(ActionServer(self, ExecuteInstruction, T.EXECUTE_INSTRUCTION, self._execute_goal,
                              goal_callback=self._on_goal_request, cancel_callback=lambda _: CancelResponse.ACCEPT,
                              callback_group=goals), lambda server: server.destroy())
        self.subscription(TrajectoryTrace, T.TRAJECTORY_TRACE, self.gate(
            lambda m: self.core.goals.on_trace(m.request_id, m), count_inputs=False), RELIABLE, callback_group=goals)
        self.subscription(ActionChunk, T.ACTION_CHUNK, self.gate(
            lambda m: self.core.goals.on_chunk(m.request_id, m), count_inputs=False), RELIABLE, callback_group=goals)
        return TransitionCallbackReturn.SUCCESS

    # -- inputs -------------------------------------------------------------------------------------
    def _on_image(self, msg: Image):
        if self.core.offer_frame(msg, time.monotonic()):
            self.inputs_dropped += 1  # superseded before it was used
        if self._worker is not None:
            self._worker.wake()

    def _on_wrist(self, msg: Image):
        self._wrist = msg

    def _on_depth(self, msg: Image):
        depth_to_meters(msg)  # validates encoding and size now: a bad depth stream is reported here
        self._depths.add(stamp_to_s(msg.header.stamp), msg)

    def _on_info(self, msg: CameraInfo):
        """Keep a pinhole calibration; NaN / zero / skewed intrinsics or a zero size are a counted error (3D
        lifts would silently disappear). The last valid calibration stays."""
        try:
            CameraIntrinsics.from_k(list(msg.k), msg.width, msg.height)
        except (ValueError, TypeError) as exc:
            raise ValueError(f'camera_info rejected (3D trace lifts need a pinhole calibration; the last valid '
                             f'one is kept): {exc}') from None
        self._camera_info = msg

    def _on_instruction(self, msg: String):
        self.get_logger().info(f'instruction: {self.core.set_instruction(msg.data)!r}')

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
        """Step the goal (core.goals) until it ends, publishing its feedback; then end it as told."""
        g, result = handle.request, ExecuteInstruction.Result()
        self.core.follow(PerceptionConfig.from_params(self.params))  # parameters set while running apply
        try:
            spec = self.core.goals.resolve(g.instruction, g.max_steps, g.timeout_s, g.execute,
                                           g.max_translation_m_per_step, g.max_rotation_rad_per_step)
        except GoalRejected as exc:
            self.record_error(f'execute_instruction goal rejected: {exc}')
            result.outcome, result.reason = Outcome.REJECTED, str(exc)
            handle.abort()
            return result
        run = self.core.goals.start(spec, time.monotonic(), goal_id=bytes(handle.goal_id.uuid).hex())
        self.get_logger().info(f'goal {run.goal_id[:8]}: {spec.instruction!r}, {spec.max_steps} queries, '
                               f'{spec.timeout_s:g} s, execute={spec.execute}')
        while True:
            step = self.core.goals.step(run, time.monotonic(), cancel_requested=handle.is_cancel_requested,
                                        node_active=self.is_active)
            if step.progress is not None:
                fb = ExecuteInstruction.Feedback(step=step.progress.step, request_id=step.progress.request_id,
                                                 stage=step.progress.stage.value)
                if 'trace' in step.latest:
                    fb.latest_trace = step.latest['trace']
                if 'chunk' in step.latest:
                    fb.latest_actions = step.latest['chunk']
                handle.publish_feedback(fb)
            if step.ended:
                break
            time.sleep(0.02)
        outcome, reason = step.outcome
        result.outcome, result.reason = int(outcome), reason
        result.steps_completed, result.last_request_id = run.completed, run.last_request_id
        ending = self.core.goals.ending(outcome, handle.is_cancel_requested)
        {Ending.SUCCEED: handle.succeed, Ending.CANCELED: handle.canceled, Ending.ABORT: handle.abort}[ending]()
        self.get_logger().info(f'goal {run.goal_id[:8]} ended: {outcome.name} {reason}'.rstrip())
        return result

    # -- inference (the worker thread) ----------------------------------------------------------------
    def idle_work(self):
        query, admission = self.core.next_query(time.monotonic())
        if admission is Admission.FRAME_TOO_OLD:
            self.inputs_dropped += 1
        if query is None:
            return
        with self.working('') as ok:
            if ok:
                try:
                    self._infer(query.frame, query.instruction, query.goal)
                except Exception as exc:
                    if query.goal is not None:
                        query.goal.fail(f'perception failed: {type(exc).__name__}: {exc}')
                    raise

    def _infer(self, msg: Image, instruction: str, goal=None):
        started = self.get_clock().now().to_msg()
        self.core.follow(PerceptionConfig.from_params(self.params))  # parameters set while running apply
        # Side inputs are matched now, before the (slow) inference lets their buffers move on.
        depth = self._depths.nearest(stamp_to_s(msg.header.stamp)) if self._depths is not None else None
        rgb = to_rgb8(msg)
        model_rgb, affine = self.core.model_image(rgb)
        wrist = None if self._wrist is None else np.ascontiguousarray(self.core.model_image(to_rgb8(self._wrist))[0])
        observation = Observation(np.ascontiguousarray(model_rgb), wrist)
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
        """The perceived depth as a 320x320 image: the decoded relative depth (32FC1, 0..1, larger = nearer;
        not metric) with a decoder, else the raw codes (mono8, code * 2; codes are not ordered by depth)."""
        from ..reasoning.depth import depth_code_image
        if self._depth_decoder is not None:
            image = numpy_to_image(self._depth_decoder.decode(depth.codes), '32FC1', header)
        else:
            image = numpy_to_image(depth_code_image(depth.codes), 'mono8', header)
        self._depth_pub.publish(image)
