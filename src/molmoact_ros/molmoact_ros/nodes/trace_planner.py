"""The trace planner node (executable ``trace_planner_node``): perception tokens -> the end effector's trace
over the image (continues the request's generation), lifted to 3D where it can be.

Subscribes ``perception_tokens``, ``edited_trace`` (a TrajectoryTrace from another program) and
``clicked_point`` (RViz Publish Point); serves ``edit_trace`` (molmoact_msgs/EditTrace); publishes
``trajectory_trace``, ``trace_markers`` and ``trace_image``. Accepted edits go out with source EDITED /
EXTERNAL and the next revision, and the action decoder acts on them. The decisions (3D lift, edits,
revisions) are :class:`~molmoact_ros.cores.trace_planning.TracePlanning`.
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from molmoact_msgs.msg import PerceptionTokens, TrajectoryTrace
from molmoact_msgs.srv import EditTrace
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from ..cores.quoting import quote
from ..cores.trace_planning import LiftMethod, PerceptionRef, TracePlanning, TracePlanningConfig, plan_lift
from ..reasoning.grammar import format_trace
from ..reasoning.steering import ClickedTrace
from ..robot.geometry import CameraIntrinsics, model_space_to_model_pixels, project, transform_points
from ..ros import topics as T
from ..ros.conversions import observation_from_msg, trace_msg, trace_result_msg
from ..ros.image import depth_to_meters, numpy_to_image, to_rgb8
from ..ros.markers import delete_all, trace_markers
from ..ros.overlay import annotate
from ..ros.params import ParamSpec
from ..ros.topics import RELIABLE
from ..ros.transforms import TransformLookup
from .stage_base import StageNode

_D = TracePlanningConfig()  # the one default of each core parameter
_LIFT = {LiftMethod.ALIGNED_DEPTH: TrajectoryTrace.LIFT_ALIGNED_DEPTH,
         LiftMethod.TABLE_PLANE: TrajectoryTrace.LIFT_TABLE_PLANE}
_COORDS = {EditTrace.Request.COORDS_MODEL: False, EditTrace.Request.COORDS_SOURCE_PIXELS: True}

TRACE_PLANNER_PARAMETERS = (
    ParamSpec('marker_lifetime_s', _D.marker_lifetime_s, 'Seconds RViz keeps the trace markers without a new trace '
              '(0: until replaced or deleted).', min_value=0.0, max_value=3600.0),
    ParamSpec('marker_fallback_depth_m', _D.marker_fallback_depth_m, 'Without aligned depth, draw the trace '
              'markers at this distance along the camera rays (they project onto the right pixels in RViz\'s '
              'Camera display); 0: no markers without depth.', min_value=0.0, max_value=100.0),
    ParamSpec('publish_trace_image', _D.publish_trace_image, 'Publish trace_image: the model\'s view with the '
              'trace drawn.'),
    ParamSpec('table_plane_frame', _D.table_plane_frame, 'Without aligned depth, lift traces onto the table plane '
              'z = table_plane_height_m of this frame (e.g. the robot base frame), via tf2 or '
              'camera_pose_in_table_frame; empty: no table-plane lift.'),
    ParamSpec('table_plane_height_m', _D.table_plane_height_m, 'Height of the table plane in table_plane_frame '
              '(m).', min_value=-10.0, max_value=10.0),
    ParamSpec('camera_pose_in_table_frame', _D.camera_pose_in_table_frame, 'Fixed pose of the camera optical '
              'frame in table_plane_frame, "x y z qx qy qz qw" (m, unit quaternion), for a calibrated fixed camera '
              'where tf2 is not used; empty: look the transform up with tf2 at the observation stamp.'),
    ParamSpec('clicked_trace_points', _D.clicked_trace_points, 'Points clicked with RViz\'s Publish Point tool '
              '(topic clicked_point; remap it to /clicked_point) that make one edited trace.',
              min_value=1, max_value=5),
    ParamSpec('clicked_pause_s', _D.clicked_pause_s, 'Seconds without a click after which the points clicked so '
              'far make the edited trace.', min_value=0.1, max_value=60.0),
)


def _intrinsics(perception: PerceptionTokens):
    info = perception.camera_info
    if not info.width or not info.height or not any(info.k):
        return None
    try:
        return CameraIntrinsics.from_k(list(info.k), info.width, info.height)
    except ValueError:
        return None


class TracePlannerNode(StageNode):
    """Perception tokens -> trajectory trace, and edits of it (see the module docstring)."""

    PARAMETERS = TRACE_PLANNER_PARAMETERS

    def __init__(self, name: str = 'trace_planner', **kwargs):
        self.core = TracePlanning()  # rebuilt from the parameters at configure
        self._reset()
        super().__init__(name, parameters=self.PARAMETERS, **kwargs)

    def _reset(self):
        self._pub = self._markers_pub = self._image_pub = self._tf = self._clicks = None
        self.core.clear()

    def on_configure(self, state):
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        config = TracePlanningConfig.from_params(self.params)
        try:
            config.camera_pose  # noqa: B018 - validates the text
        except ValueError as exc:
            return self.fail_transition(f'camera_pose_in_table_frame: {exc}')
        self.core = TracePlanning(config)
        self._pub = self.lifecycle_publisher(TrajectoryTrace, T.TRAJECTORY_TRACE, RELIABLE)
        self._markers_pub = self.lifecycle_publisher(MarkerArray, T.TRACE_MARKERS, RELIABLE)
        self._image_pub = self.lifecycle_publisher(Image, T.TRACE_IMAGE, RELIABLE)
        self.handoff_subscription(PerceptionTokens, T.PERCEPTION_TOKENS, self._on_perception, RELIABLE,
                                  key=lambda m: m.request_id)
        self.subscription(TrajectoryTrace, T.EDITED_TRACE, self.gate(self._on_edited), RELIABLE)
        self.service(EditTrace, T.EDIT_TRACE, self._on_edit_service)
        self._tf = TransformLookup(self)
        self._clicks = ClickedTrace(config.clicked_trace_points, config.clicked_pause_s)
        self.subscription(PointStamped, T.CLICKED_POINT, self.gate(self._on_clicked_point), RELIABLE)
        self.timer(0.1, self.gate(self._poll_clicks, count_inputs=False))
        return TransitionCallbackReturn.SUCCESS

    # -- the model's trace ---------------------------------------------------------------------------
    def _on_perception(self, msg: PerceptionTokens):
        self.core.on_perception(PerceptionRef(msg.request_id, (msg.image.width, msg.image.height),
                                              msg.model_to_source, msg))
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
        self.core.planned(msg.request_id)
        self.publish_trace(trace_result_msg(result, msg, self.engine.model_id, started), msg)
        self.requests_completed += 1

    # -- edits: service, topic, clicked points ------------------------------------------------------------
    def apply_edit(self, request_id: str, points_model, source: int) -> TrajectoryTrace:
        """Validate an edit (ValueError with the reason) and build the trace message to publish."""
        edit = self.core.edit(request_id, points_model)
        return trace_msg(edit.perception.msg, edit.points, source=source, revision=edit.revision,
                         trace_text=format_trace(edit.points), answer_text='', model_id='')

    def _publish_edit(self, request_id: str, points_model, source: int) -> TrajectoryTrace:
        trace = self.apply_edit(request_id, points_model, source)
        self.publish_trace(trace, self.core.lookup(trace.request_id).msg)
        return trace

    def _on_edit_service(self, request, response):
        if not self.is_active:
            response.success, response.message = False, 'trace planner is not active'
            return response
        try:
            if request.coordinates not in _COORDS:
                raise ValueError(f'unknown coordinates {request.coordinates}')
            points = self.core.to_model_space(request.request_id, [(p.x, p.y) for p in request.points],
                                              _COORDS[request.coordinates])
            trace = (self._publish_edit if request.act else self.apply_edit)(
                request.request_id, points, TrajectoryTrace.SOURCE_EDITED)
        except ValueError as exc:
            self.record_error(f'edit_trace rejected: {exc}')
            response.success, response.message = False, str(exc)
            return response
        response.success, response.trace = True, trace
        response.message = f'revision {trace.revision} of request {trace.request_id}' + (
            ' published' if request.act else ' accepted (not published: act is false)')
        return response

    def _on_edited(self, msg: TrajectoryTrace):
        source = msg.source if msg.source in (TrajectoryTrace.SOURCE_EDITED, TrajectoryTrace.SOURCE_EXTERNAL) \
            else TrajectoryTrace.SOURCE_EXTERNAL
        self._publish_edit(msg.request_id, [(p.x_model, p.y_model) for p in msg.points], source)

    def _on_clicked_point(self, msg: PointStamped):
        """A point clicked in RViz, in any frame tf2 (or a fixed camera pose) relates to the camera: projected
        into the latest observation's camera image and collected into an edited trace."""
        perception = self.core.perceptions.get(self.core.latest)
        if perception is None:
            raise ValueError('clicked point ignored: no trace to edit yet')
        perception = perception.msg
        intrinsics = _intrinsics(perception)
        if intrinsics is None:
            raise ValueError('clicked point ignored: the observation has no camera calibration (camera_info)')
        camera = perception.header.frame_id
        source = msg.header.frame_id or camera
        try:
            to_camera = self.core.camera_from(source,
                                              lambda: self._tf.lookup(camera, source, perception.header.stamp))
        except LookupError as exc:
            raise ValueError(f'clicked point in frame {quote(source)} cannot be related to the camera: {exc}') \
                from None
        uv = project(transform_points(to_camera, [msg.point.x, msg.point.y, msg.point.z]), intrinsics)
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
        self._publish_edit(request_id, self.core.to_model_space(request_id, points_px, True),
                           TrajectoryTrace.SOURCE_EDITED)

    def _follow_parameters(self) -> None:
        """Parameters set while active apply from the next trace on (as they always have); a malformed
        camera pose keeps the previous settings and is reported."""
        config = TracePlanningConfig.from_params(self.params)
        try:
            config.camera_pose  # noqa: B018 - validates the text
        except ValueError as exc:
            self.record_error(f'camera_pose_in_table_frame: {exc}')
            return
        self.core.config = config

    # -- publishing ---------------------------------------------------------------------------------------
    def publish_trace(self, trace: TrajectoryTrace, perception: PerceptionTokens) -> None:
        """Lift the trace to 3D where it can be (core), publish it, its markers and the annotated image."""
        uv = np.array([[p.u_px, p.v_px] for p in trace.points], dtype=np.float64)
        self._follow_parameters()
        intrinsics, depth, config = _intrinsics(perception), perception.aligned_depth, self.core.config
        depth_m = depth_to_meters(depth) if intrinsics is not None and depth.width and depth.height else None
        header = perception.header
        lift = plan_lift(uv, intrinsics, depth_m,
                         lambda: self._tf.lookup(config.table_plane_frame, header.frame_id, header.stamp), config)
        if lift.error:
            self.record_error(lift.error)
        if lift.points is not None:
            trace.points_3d = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in lift.points]
            trace.points_3d_frame_id = config.table_plane_frame if lift.in_table_frame else trace.header.frame_id
            trace.lift_method = _LIFT[lift.method]
        marker_frame = config.table_plane_frame if lift.in_table_frame else trace.header.frame_id
        self.publish_visual(self._publish_trace_visuals, trace, perception, lift.marker_points, marker_frame)
        self.publish_result(self._pub, trace)  # the decoder starts when this returns

    def _publish_trace_visuals(self, trace, perception, marker_points, marker_frame: str) -> None:
        """The trace's markers and annotated image (on the visuals thread)."""
        config = self.core.config   # refreshed from the parameters for each trace (_follow_parameters)
        if marker_points is not None and marker_frame:
            self._markers_pub.publish(trace_markers(
                marker_points, marker_frame, trace.header.stamp, trace.instruction,
                lifetime_s=config.marker_lifetime_s, source=int(trace.source)))
        if config.publish_trace_image:
            model = np.array([[p.x_model, p.y_model] for p in trace.points], dtype=np.float64)
            px = model_space_to_model_pixels(model, perception.image.width, perception.image.height)
            timing = {'perception': perception.timing.total_s * 1e3, 'planning': trace.timing.total_s * 1e3}
            image = annotate(to_rgb8(perception.image), px, trace.instruction, int(trace.source),
                             depth_codes=list(perception.depth_codes), stage_ms=timing)
            self._image_pub.publish(numpy_to_image(image, 'rgb8', trace.header))

    def on_deactivate(self, state):
        """Remove the trace markers from RViz (DELETEALL) before the publishers stop."""
        self._active = False
        self._stop_visuals()  # no marker from before deactivate lands after the DELETEALL
        with self._work_lock:
            if self._markers_pub is not None:
                self._markers_pub.publish(delete_all())
        return super().on_deactivate(state)
