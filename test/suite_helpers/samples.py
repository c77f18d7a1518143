"""Deterministic sample messages of every molmoact_msgs type, built the same way in two processes."""

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from molmoact_msgs.msg import (ActionChunk, ActionStep, PerceptionTokens, StageTiming, TracePoint,
                               TrajectoryTrace)
from sensor_msgs.msg import CameraInfo, Image

STAMP = Time(sec=1_700_000_000, nanosec=123_456_789)
FRAME = 'camera_color_optical_frame'


def _f32(value: float) -> float:
    """The value a float32 field holds after a round trip (so samples compare equal)."""
    return float(np.float32(value))


def _image(seed: int, width: int, height: int) -> Image:
    rng = np.random.default_rng(seed)
    img = Image()
    img.header.stamp, img.header.frame_id = STAMP, FRAME
    img.width, img.height, img.encoding, img.is_bigendian = width, height, 'rgb8', 0
    img.step = width * 3
    img.data = rng.integers(0, 256, size=height * width * 3, dtype=np.uint8).tobytes()
    return img


def _timing(stage: str) -> StageTiming:
    return StageTiming(stage=stage, started=STAMP, queue_s=0.001, prefill_s=0.25, decode_s=1.5,
                       total_s=1.8, prefill_tokens=534, generated_tokens=110, cache_reused=False)


def perception(seed: int = 7) -> PerceptionTokens:
    msg = PerceptionTokens()
    msg.header.stamp, msg.header.frame_id = STAMP, FRAME
    msg.request_id = f'req-{seed}'
    msg.instruction = 'put the red block in the bowl — gently'
    msg.prompt_variant = PerceptionTokens.PROMPT_MULTI_VIEW
    msg.image = _image(seed, 256, 256)
    msg.wrist_image = _image(seed + 1, 128, 96)
    info = CameraInfo()
    info.header = msg.header
    info.width, info.height, info.distortion_model = 640, 480, 'plumb_bob'
    info.k = [600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0]
    msg.camera_info = info
    msg.model_to_source = [2.5, 0.0, 0.0, 0.0, 1.875, 0.0, 0.0, 0.0, 1.0]
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 128, size=100, dtype=np.uint8)
    msg.depth_rows, msg.depth_cols = 10, 10
    msg.depth_codes = codes.tobytes()
    msg.depth_text = '<DEPTH_START>' + ''.join(f'<DEPTH_{c}>' for c in codes) + '<DEPTH_END>'
    msg.answer_text = ' The depth map of the first image is ' + msg.depth_text
    msg.model_id = 'allenai/MolmoAct-7B-D-0812'
    msg.timing = _timing(StageTiming.STAGE_PERCEPTION)
    return msg


def trace(seed: int = 7) -> TrajectoryTrace:
    msg = TrajectoryTrace()
    msg.header.stamp, msg.header.frame_id = STAMP, FRAME
    msg.request_id = f'req-{seed}'
    msg.instruction = 'put the red block in the bowl — gently'
    msg.source = TrajectoryTrace.SOURCE_EDITED
    msg.revision = 2
    pts = [(120, 88), (131, 97), (150, 120)]
    msg.points = [TracePoint(x_model=x, y_model=y, u_px=_f32(x * 639 / 255), v_px=_f32(y * 479 / 255))
                  for x, y in pts]
    msg.model_image_width, msg.model_image_height = 256, 256
    msg.points_3d = [Point(x=0.1 * i, y=-0.05, z=0.8) for i in range(len(pts))]
    msg.points_3d_frame_id = FRAME
    msg.lift_method = TrajectoryTrace.LIFT_ALIGNED_DEPTH
    msg.trace_text = '[[120,88],[131,97],[150,120]]'
    msg.timing = _timing(StageTiming.STAGE_PLANNING)
    return msg


def actions(seed: int = 7) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp, msg.header.frame_id = STAMP, FRAME
    msg.request_id = f'req-{seed}'
    msg.instruction = 'put the red block in the bowl — gently'
    msg.steering_mode = ActionChunk.STEERING_DRAWN_TRACE
    msg.trace_revision = 2
    rng = np.random.default_rng(seed)
    for _ in range(8):
        bins = rng.integers(0, 255, size=7, dtype=np.uint8)
        norm = (bins.astype(np.float32) / 127.0) - 1.0
        step = ActionStep(translation_m=Vector3(x=0.01, y=-0.002, z=0.003),
                          rotation_rad=Vector3(x=0.0, y=0.05, z=-0.1), gripper=_f32(0.996))
        step.values = (norm * 0.01).tolist()
        step.normalized = norm.tolist()
        step.bins = bins.tobytes()
        msg.steps.append(step)
    msg.step_period_s = 0.1
    msg.action_dim = 7
    msg.unnorm_key = 'molmoact'
    msg.rotation_convention = ActionChunk.ROTATION_RPY
    msg.delta_frame_id = 'fr3_link0'
    msg.observation_pose.header.frame_id = 'fr3_link0'
    msg.observation_pose.pose.position.x = 0.45
    msg.observation_pose.pose.orientation.w = 1.0
    msg.observation_pose_valid = True
    msg.action_text = '[[ðŁİĳ, Ý¥, à¤ĳ, Ý¥, Ý¥, Ý¥, â½Ĺ]]'
    msg.model_id = 'allenai/MolmoAct-7B-D-0812'
    msg.timing = _timing(StageTiming.STAGE_ACTION)
    return msg
