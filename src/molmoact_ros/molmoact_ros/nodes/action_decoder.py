"""The action decoder node (executable ``action_decoder_node``): trajectory trace -> unnormalized end-effector
action chunk (the model's trace, or an edited one).

Subscribes ``perception_tokens``, ``trajectory_trace`` (and ``image`` with ``multi_rate_hz`` > 0); publishes
``action_chunk``. Multi-rate execution: on a timer at ``multi_rate_hz`` the decoder acts on the newest camera
frame with the newest trace in the trained trajectory-conditioned ("drawn") mode
(:meth:`MolmoActEngine.act_on_observation`): the frame is resized to the trace's perception image size (the
same model space), the trace's wrist image is reused, and each chunk carries its own frame's header (request
id ``<trace request>-mr<n>``), until the newest trace is older than ``multi_rate_max_trace_age_s``. The
decisions are :class:`~molmoact_ros.cores.action_decoding.ActionDecoding`.
"""

from __future__ import annotations

import numpy as np
from molmoact_msgs.msg import ActionChunk, PerceptionTokens, TrajectoryTrace
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image

from ..cores.action_decoding import ActionDecoding, ActionDecodingConfig, plan_act
from ..reasoning.engine import Observation
from ..reasoning.sessions import SessionError
from ..ros import topics as T
from ..ros.conversions import action_msg, observation_from_msg
from ..ros.image import downscale, to_rgb8
from ..ros.params import ParamSpec
from ..ros.sync import stamp_to_s
from ..ros.topics import RELIABLE, SENSOR
from .stage_base import StageNode

_D = ActionDecodingConfig()  # the one default of each core parameter

ACTION_DECODER_PARAMETERS = (
    ParamSpec('step_period_s', _D.step_period_s, 'Seconds between action steps (the robot\'s / dataset\'s '
              'control period).', min_value=0.001, max_value=10.0),
    ParamSpec('delta_frame_id', _D.delta_frame_id, 'Frame in which the model\'s end-effector deltas are '
              'expressed (robot base or tool frame, per robot profile).'),
    ParamSpec('multi_rate_hz', _D.multi_rate_hz, 'Multi-rate execution: at this rate, act on the newest camera '
              'frame (topic image) with the newest trace in drawn mode, each chunk stamped with its frame; '
              '0.0: off (one chunk per trace).', min_value=0.0, max_value=100.0),
    ParamSpec('multi_rate_max_trace_age_s', _D.multi_rate_max_trace_age_s, 'Multi-rate execution stops acting '
              'when the newest trace\'s observation is older than this (e.g. after a goal ended and no new trace '
              'comes).', min_value=0.1, max_value=3600.0),
)


class ActionDecoderNode(StageNode):
    """Trajectory trace -> action chunk (see the module docstring)."""

    PARAMETERS = ACTION_DECODER_PARAMETERS

    def __init__(self, name: str = 'action_decoder', **kwargs):
        self.core = ActionDecoding()  # rebuilt from the parameters at configure
        self._pub = None
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    @property
    def multi_rate_chunks(self) -> int:
        return self.core.multi_rate_chunks

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self.core = ActionDecoding(ActionDecodingConfig.from_params(self.params))
        self._pub = self.lifecycle_publisher(ActionChunk, T.ACTION_CHUNK, RELIABLE)
        self.handoff_subscription(PerceptionTokens, T.PERCEPTION_TOKENS,
                                  lambda m: self.core.on_perception(m.request_id, m), RELIABLE,
                                  key=lambda m: m.request_id, on_worker=False)
        self.handoff_subscription(TrajectoryTrace, T.TRAJECTORY_TRACE, self._on_trace, RELIABLE,
                                  key=lambda m: (m.request_id, m.source, m.revision))
        if self.core.config.multi_rate:
            self.subscription(Image, T.IMAGE, self.gate(self._on_frame, count_inputs=False), SENSOR)
            self.timer(1.0 / self.core.config.multi_rate_hz,
                       self.gate(self._multi_rate_tick, count_inputs=False), callback_group=self._work_group)
        return TransitionCallbackReturn.SUCCESS

    def _on_frame(self, msg: Image):
        self.core.on_frame(msg, (msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _on_trace(self, msg: TrajectoryTrace):
        self.core.on_trace(msg, msg.request_id, stamp_to_s(msg.header.stamp), bool(msg.points))
        with self.working(msg.request_id) as ok:
            if ok:
                self._act(msg)

    def _multi_rate_tick(self):
        """Act on the newest frame (if new) with the newest trace whose perception message was seen."""
        self._follow_parameters()
        step = self.core.tick(self.get_clock().now().nanoseconds * 1e-9)
        if step is None:
            return
        with self.working(step.request_id) as ok:
            if not ok:
                return
            started = self.get_clock().now().to_msg()
            frame, trace, perception = step.frame, step.trace, step.perception
            rgb = to_rgb8(frame)
            size = (perception.image.width, perception.image.height)
            if (rgb.shape[1], rgb.shape[0]) != size:  # the perception image's size: the same model space
                rgb = downscale(rgb, size)
            wrist = observation_from_msg(perception).wrist_image
            result = self.engine.act_on_observation(
                Observation(np.ascontiguousarray(rgb), wrist), trace.instruction,
                [(p.x_model, p.y_model) for p in trace.points], request_id=step.request_id)
            msg = action_msg(result, trace, step_period_s=self.core.config.step_period_s,
                             delta_frame_id=self.core.config.delta_frame_id, model_id=self.engine.model_id,
                             started=started)
            msg.header = frame.header  # anchored to this frame, not to the trace's observation
            self._pub.publish(msg)
            self.core.multi_rate_chunks += 1

    def _follow_parameters(self) -> None:
        """Parameters set while active apply from the next chunk on (as they always have)."""
        self.core.config = ActionDecodingConfig.from_params(self.params)

    def _act(self, msg: TrajectoryTrace):
        self._follow_parameters()
        started = self.get_clock().now().to_msg()
        engine = self.engine
        with engine.turn('act'):  # no other stage evicts the request between the check and the act
            plan = plan_act(msg.source == TrajectoryTrace.SOURCE_MODEL, msg.request_id in engine.sessions)
            if plan.resume is not None:
                self._resume(msg, plan.resume)
            points = [(p.x_model, p.y_model) for p in msg.points] if plan.use_trace_points else None
            result = (engine.act(msg.request_id, trace_points=points, release=False) if plan.use_trace_points
                      else engine.act(msg.request_id, release=False))
        self.publish_result(self._pub, action_msg(result, msg, step_period_s=self.core.config.step_period_s,
                                                  delta_frame_id=self.core.config.delta_frame_id,
                                                  model_id=engine.model_id, started=started))
        self.requests_completed += 1

    def _resume(self, trace: TrajectoryTrace, stage: str):
        try:
            perception = self.core.perception_for(trace.request_id)
        except ValueError as exc:
            raise SessionError(str(exc)) from None
        text = trace.answer_text if stage == 'trace' else perception.answer_text
        self.engine.resume(observation_from_msg(perception), perception.instruction, text, stage, trace.request_id)

    def _reset(self):
        self._pub = None
        self.core.reset()
