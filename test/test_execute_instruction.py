"""The pipeline in one process under a namespace with remapped topics: ExecuteInstruction goals (feedback,
completion, cancel, rejection), the depth image, RViz Publish Point edits and the table-plane lift."""

import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PointStamped
from molmoact_msgs.action import ExecuteInstruction
from molmoact_msgs.msg import ActionChunk, NodeStatus, PerceptionTokens, TrajectoryTrace
from rclpy.action import ActionClient
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker, MarkerArray

from molmoact_ros.nodes.pipeline import Pipeline
from molmoact_ros.ros.image import numpy_to_image

from molmoact_ros.ros.topics import LATCHED
LIMIT_S = 120.0
CAMERA = 'cam_optical'
# Camera 1 m above the table, looking straight down (optical z = -base z), optical x = base x.
CAMERA_POSE = '0.5 0.0 1.0 1.0 0.0 0.0 0.0'
K = [100.0, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0]


def wait_for(predicate, timeout=LIMIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv('MOLMOACT_TINY_DIR', str(tmp_path / 'tiny'))
    rclpy.init()
    # Remapped inputs and outputs, as a user plugging the pipeline into a stack would.
    args = ['--ros-args', '-r', '__ns:=/robot1',
            '-r', 'image:=camera/color/image_raw', '-r', 'camera_info:=camera/color/camera_info',
            '-r', 'trajectory_trace:=molmoact/trace', '-r', 'action_chunk:=molmoact/actions',
            '-r', 'clicked_point:=/clicked_point',
            '-p', 'max_free_tokens:=3', '-p', 'max_image_side_px:=96', '-p', 'status_period_s:=0.2',
            '-p', 'table_plane_frame:=base', '-p', f'camera_pose_in_table_frame:={CAMERA_POSE}',
            '-p', 'clicked_trace_points:=2', '-p', 'goal_default_timeout_s:=100.0']
    p = Pipeline(args=args)
    p.start()
    yield p
    p.bring_down()
    p.stop()
    rclpy.shutdown()


def test_goals_remaps_depth_image_clicks_and_table_lift(pipeline):
    from rclpy.executors import SingleThreadedExecutor
    # goals run on threads of their own, awaited by the action server: a single-threaded executor serves them
    assert isinstance(pipeline.executor, SingleThreadedExecutor)
    probe = rclpy.create_node('probe', namespace='/robot1')
    pipeline.executor.add_node(probe)
    got = {k: [] for k in ('perception', 'trace', 'actions', 'depth', 'markers', 'status', 'unmapped')}
    probe.create_subscription(PerceptionTokens, 'perception_tokens', got['perception'].append, 10)
    probe.create_subscription(TrajectoryTrace, 'molmoact/trace', got['trace'].append, 10)
    probe.create_subscription(ActionChunk, 'molmoact/actions', got['actions'].append, 10)
    probe.create_subscription(ActionChunk, 'action_chunk', got['unmapped'].append, 10)  # the name before remapping
    probe.create_subscription(Image, 'depth_image', got['depth'].append, 10)
    probe.create_subscription(MarkerArray, 'trace_markers', got['markers'].append, 10)
    probe.create_subscription(NodeStatus, 'perception/status', got['status'].append, LATCHED)
    camera = probe.create_publisher(Image, 'camera/color/image_raw', qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, 'camera/color/camera_info', qos_profile_sensor_data)
    clicks = probe.create_publisher(PointStamped, '/clicked_point', 10)
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)

    def publish():
        stamp = probe.get_clock().now().to_msg()
        msg = numpy_to_image(frame, 'rgb8')
        msg.header.stamp, msg.header.frame_id = stamp, CAMERA
        camera.publish(msg)
        info = CameraInfo(width=160, height=120, k=K)
        info.header.stamp, info.header.frame_id = stamp, CAMERA
        info_pub.publish(info)

    probe.create_timer(0.1, publish)
    client = ActionClient(probe, ExecuteInstruction, 'execute_instruction')
    perception = next(n for n in pipeline.nodes if n.get_name() == 'perception')

    def send(goal, feedback=None):
        future = client.send_goal_async(goal, feedback_callback=feedback)
        assert wait_for(future.done, 30)
        return future.result()

    def result_of(handle, timeout=LIMIT_S):
        future = handle.get_result_async()
        assert wait_for(future.done, timeout), 'goal did not end'
        return future.result()

    assert client.wait_for_server(timeout_sec=10) is False  # not configured yet: no server
    pipeline.bring_up()
    assert client.wait_for_server(timeout_sec=20)
    assert not wait_for(lambda: got['perception'], timeout=1.0)  # no instruction, no goal: nothing runs

    # 1. A goal of two queries: feedback walks the stages, the result says COMPLETED, 2 steps.
    feedback = []
    handle = send(ExecuteInstruction.Goal(instruction='wipe the table', max_steps=2, execute=False,
                                          max_translation_m_per_step=0.01), lambda f: feedback.append(f.feedback))
    assert handle.accepted
    res = result_of(handle)
    assert res.result.outcome == ExecuteInstruction.Result.OUTCOME_COMPLETED, res.result.reason
    assert res.result.steps_completed == 2 and res.result.last_request_id
    stages = [(f.step, f.stage) for f in feedback]
    assert (1, 'perception') in stages and (1, 'action') in stages and (2, 'perception') in stages, stages
    assert any(f.latest_actions.request_id for f in feedback)
    goal_chunks = [c for c in got['actions'] if c.constraints.goal_id]
    assert len({c.request_id for c in goal_chunks}) == 2 and res.result.last_request_id == goal_chunks[-1].request_id
    for c in goal_chunks:  # the goal's constraints travel with its requests to the action chunks
        assert c.constraints.plan_only and c.constraints.max_translation_m_per_step == 0.01
        assert c.constraints.goal_id == bytes(handle.goal_id.uuid).hex()
    assert not got['unmapped']  # outputs went to the remapped names only
    # the goal is over: nothing more runs
    n = len(got['perception'])
    assert not wait_for(lambda: len(got['perception']) > n, timeout=1.5)

    # 2. Depth image: 320x320 mono8 of the codes (code * 2), stamped like the camera frame.
    assert wait_for(lambda: got['depth'], 10)
    d = got['depth'][0]
    assert (d.width, d.height, d.encoding, d.header.frame_id) == (320, 320, 'mono8', CAMERA)
    codes = np.frombuffer(bytes(got['perception'][0].depth_codes), np.uint8).reshape(10, 10)
    img = np.frombuffer(bytes(d.data), np.uint8).reshape(320, 320)
    np.testing.assert_array_equal(img[::32, ::32], codes * 2)

    # 3. Table-plane lift: without aligned depth, traces meet the plane z = 0 of 'base' (fixed camera pose).
    trace = got['trace'][0]
    assert trace.lift_method == TrajectoryTrace.LIFT_TABLE_PLANE and trace.points_3d_frame_id == 'base'
    for pt, p3 in zip(trace.points, trace.points_3d):
        assert abs(p3.z) < 1e-9
        # looking down from 1 m: x = 0.5 + (u - cx) / fx, y = -(v - cy) / fy
        assert abs(p3.x - (0.5 + (pt.u_px - 79.5) / 100.0)) < 1e-6 and abs(p3.y + (pt.v_px - 59.5) / 100.0) < 1e-6
    assert any(m.header.frame_id == 'base' for ma in got['markers'] for m in ma.markers)

    # 4. Cancel: a long goal is cancelled after its first feedback.
    feedback = []
    handle = send(ExecuteInstruction.Goal(instruction='stack the cups', max_steps=500),
                  lambda f: feedback.append(f.feedback))
    assert wait_for(lambda: feedback, 60)
    cancel = handle.cancel_goal_async()
    assert wait_for(cancel.done, 10)
    res = result_of(handle)
    assert res.result.outcome == ExecuteInstruction.Result.OUTCOME_CANCELED
    assert res.result.steps_completed < 500 and 'cancel' in res.result.reason

    # 5. A bad goal is refused with the reason; the node keeps running.
    res = result_of(send(ExecuteInstruction.Goal(instruction='   ', max_steps=1)), 10)
    assert res.result.outcome == ExecuteInstruction.Result.OUTCOME_REJECTED and 'instruction' in res.result.reason
    res = result_of(send(ExecuteInstruction.Goal(instruction='ok', timeout_s=float('nan'))), 10)
    assert res.result.outcome == ExecuteInstruction.Result.OUTCOME_REJECTED and 'timeout_s' in res.result.reason
    assert perception.is_active and 'rejected' in perception.last_error

    # 6. RViz Publish Point: two points clicked in the table frame become an edited trace (revision 1).
    request_id = got['trace'][-1].request_id
    n_traces = len(got['trace'])
    for x, y in [(0.5, 0.0), (0.6, -0.1)]:  # (0.5, 0) is under the camera: pixel (cx, cy)
        click = PointStamped()
        click.header.frame_id = 'base'
        click.point.x, click.point.y = x, y
        clicks.publish(click)
        time.sleep(0.1)
    assert wait_for(lambda: any(t.source == TrajectoryTrace.SOURCE_EDITED for t in got['trace'][n_traces:]), 20)
    edited = next(t for t in got['trace'][n_traces:] if t.source == TrajectoryTrace.SOURCE_EDITED)
    assert edited.request_id == request_id and edited.revision == 1 and len(edited.points) == 2
    assert abs(edited.points[0].u_px - 79.5) < 1.5 and abs(edited.points[0].v_px - 59.5) < 1.5
    assert abs(edited.points[1].u_px - 89.5) < 1.5 and abs(edited.points[1].v_px - 69.5) < 1.5
    assert wait_for(lambda: any(c.trace_revision == 1 and c.request_id == request_id for c in got['actions']), 60)
    # a click that cannot be related to the camera is reported, the node keeps running
    planner = next(n for n in pipeline.nodes if n.get_name() == 'trace_planner')
    errors = planner.errors
    click = PointStamped()
    click.header.frame_id = 'somewhere_else'
    clicks.publish(click)
    assert wait_for(lambda: planner.errors > errors, 10) and 'somewhere_else' in planner.last_error
    assert planner.is_active

    # 7. Deactivating perception ends a running goal (FAILED, with the reason).
    handle = send(ExecuteInstruction.Goal(instruction='open the drawer', max_steps=500))
    time.sleep(0.5)
    pipeline.clients[0].change_state('deactivate')
    res = result_of(handle, 30)
    assert res.result.outcome == ExecuteInstruction.Result.OUTCOME_FAILED and 'deactivated' in res.result.reason
