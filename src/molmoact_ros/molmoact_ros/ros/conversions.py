"""Engine results <-> molmoact_msgs messages.

Thin and mechanical: every decision lives in the reasoning core; this module only copies fields, with
the units and frames the .msg files document.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Vector3
from molmoact_msgs.msg import (ActionChunk, ActionStep, ExecutionConstraints, PerceptionTokens, StageTiming, TracePoint,
                               TrajectoryTrace)
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..reasoning.action_space import RotationConvention
from ..reasoning.engine import (ActionResult, Observation, PerceptionResult, StageTiming as EngineTiming,
                                SteeringMode, TraceResult)
from ..robot.geometry import as_affine, identity_affine, model_trace_to_source_pixels
from .image import numpy_to_image, to_rgb8

STEERING_TO_MSG = {SteeringMode.NONE: ActionChunk.STEERING_NONE, SteeringMode.PREFIX: ActionChunk.STEERING_PREFIX_FORCED,
                   SteeringMode.DRAWN: ActionChunk.STEERING_DRAWN_TRACE}
ROTATION_TO_MSG = {RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW: ActionChunk.ROTATION_RPY,
                   RotationConvention.ROTATION_VECTOR: ActionChunk.ROTATION_AXIS_ANGLE,
                   RotationConvention.UNSPECIFIED: ActionChunk.ROTATION_RPY}


def timing_msg(timing: EngineTiming, started: Time) -> StageTiming:
    stage = {'perception': StageTiming.STAGE_PERCEPTION, 'planning': StageTiming.STAGE_PLANNING,
             'action': StageTiming.STAGE_ACTION}[timing.stage]
    return StageTiming(stage=stage, started=started, queue_s=0.0, prefill_s=float(timing.prefill_s),
                       decode_s=float(timing.decode_s), total_s=float(timing.total_s),
                       prefill_tokens=int(timing.prefill_tokens), generated_tokens=int(timing.generated_tokens),
                       cache_reused=bool(timing.cache_reused))


def perception_msg(result: PerceptionResult, header: Header, observation: Observation, prompt_variant: str,
                   model_id: str, started: Time, camera_info: Optional[CameraInfo] = None,
                   model_to_source: Optional[np.ndarray] = None, aligned_depth=None,
                   source_size: Optional[Tuple[int, int]] = None,
                   constraints: Optional[ExecutionConstraints] = None) -> PerceptionTokens:
    """``source_size`` (width, height) of the camera image when no CameraInfo was received."""
    msg = PerceptionTokens()
    msg.header = header
    msg.request_id = result.request_id
    msg.instruction = result.instruction
    msg.prompt_variant = prompt_variant
    msg.image = numpy_to_image(observation.image, 'rgb8', header)
    if observation.wrist_image is not None:
        msg.wrist_image = numpy_to_image(observation.wrist_image, 'rgb8', header)
    if camera_info is not None:
        msg.camera_info = camera_info
    else:  # no calibration received: only the source image size is known (K stays zero = uncalibrated)
        msg.camera_info.header = header
        if source_size is not None:
            msg.camera_info.width, msg.camera_info.height = source_size
        else:
            msg.camera_info.height, msg.camera_info.width = observation.image.shape[:2]
    affine = identity_affine() if model_to_source is None else as_affine(model_to_source)
    msg.model_to_source = [float(v) for v in affine.reshape(-1)]
    if aligned_depth is not None:
        msg.aligned_depth = aligned_depth
    msg.depth_rows, msg.depth_cols = result.depth.rows, result.depth.cols
    msg.depth_codes = bytes(result.depth.codes)
    msg.depth_text = result.depth.text
    msg.answer_text = result.answer_text
    msg.model_id = model_id
    msg.timing = timing_msg(result.timing, started)
    if constraints is not None:
        msg.constraints = constraints
    return msg


def observation_from_msg(msg: PerceptionTokens) -> Observation:
    """The observation the perception stage saw, rebuilt from its message (stateless handoff)."""
    wrist = to_rgb8(msg.wrist_image) if msg.wrist_image.width and msg.wrist_image.height else None
    return Observation(np.ascontiguousarray(to_rgb8(msg.image)), None if wrist is None else np.ascontiguousarray(wrist))


def trace_points_msg(points: Sequence[Tuple[int, int]], model_w: int, model_h: int,
                     model_to_source: Sequence[float]) -> list:
    source = model_trace_to_source_pixels(np.asarray(points, dtype=np.float64), model_w, model_h,
                                          as_affine(model_to_source))
    return [TracePoint(x_model=int(x), y_model=int(y), u_px=float(u), v_px=float(v))
            for (x, y), (u, v) in zip(points, np.atleast_2d(source))]


def trace_msg(perception: PerceptionTokens, points: Sequence[Tuple[int, int]], *, source: int,
              revision: int, trace_text: str, answer_text: str, model_id: str,
              timing: Optional[StageTiming] = None) -> TrajectoryTrace:
    msg = TrajectoryTrace()
    msg.header = perception.header
    msg.request_id = perception.request_id
    msg.instruction = perception.instruction
    msg.source = source
    msg.revision = revision
    msg.model_image_width, msg.model_image_height = perception.image.width, perception.image.height
    msg.points = trace_points_msg(points, perception.image.width, perception.image.height,
                                  perception.model_to_source)
    msg.lift_method = TrajectoryTrace.LIFT_NONE
    msg.trace_text = trace_text
    msg.answer_text = answer_text
    msg.model_id = model_id
    if timing is not None:
        msg.timing = timing
    msg.constraints = perception.constraints
    return msg


def trace_result_msg(result: TraceResult, perception: PerceptionTokens, model_id: str, started: Time) -> TrajectoryTrace:
    return trace_msg(perception, result.trace.points, source=TrajectoryTrace.SOURCE_MODEL, revision=0,
                     trace_text=result.trace.text, answer_text=result.answer_text, model_id=model_id,
                     timing=timing_msg(result.timing, started))


def action_msg(result: ActionResult, trace: TrajectoryTrace, *, step_period_s: float, delta_frame_id: str,
               model_id: str, started: Time) -> ActionChunk:
    msg = ActionChunk()
    msg.header = trace.header
    msg.request_id = result.request_id
    msg.instruction = trace.instruction
    msg.steering_mode = STEERING_TO_MSG[result.steering]
    msg.trace_revision = trace.revision
    for step in result.actions.steps:
        msg.steps.append(ActionStep(
            translation_m=Vector3(x=step.translation_m[0], y=step.translation_m[1], z=step.translation_m[2]),
            rotation_rad=Vector3(x=step.rotation_rad[0], y=step.rotation_rad[1], z=step.rotation_rad[2]),
            gripper=float(np.float32(step.gripper)), values=[float(np.float32(v)) for v in step.values],
            normalized=[float(np.float32(v)) for v in step.normalized], bins=bytes(step.bins)))
    msg.step_period_s = float(step_period_s)
    msg.action_dim = len(result.actions.steps[0].values)
    msg.unnorm_key = result.unnorm_key
    msg.rotation_convention = ROTATION_TO_MSG[result.actions.rotation_convention]
    msg.delta_frame_id = delta_frame_id
    msg.observation_pose_valid = False  # filled by the command sink / robot profile issue
    msg.action_text = result.tokens.text
    msg.model_id = model_id
    msg.timing = timing_msg(result.timing, started)
    msg.constraints = trace.constraints
    return msg
