"""The three stage nodes in one process on the tiny model: a fake camera and an instruction drive
image -> PerceptionTokens -> TrajectoryTrace -> ActionChunk; nothing is published after deactivate."""

import gc
import threading
import time

import numpy as np
import pytest
import rclpy
import rclpy.parameter
from geometry_msgs.msg import Point32
from molmoact_msgs.msg import ActionChunk, NodeStatus, PerceptionTokens, TrajectoryTrace
from molmoact_msgs.srv import EditTrace
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from molmoact_ros.nodes.pipeline import Pipeline
from molmoact_ros.ros.image import numpy_to_image

from molmoact_ros.ros.topics import LATCHED
LIMIT_S = 120.0


def wait_for(predicate, timeout=LIMIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv('MOLMOACT_TINY_DIR', str(tmp_path / 'tiny'))
    rclpy.init()
    args = ['--ros-args', '-r', '__ns:=/arm', '-p', 'max_free_tokens:=3', '-p', 'max_image_side_px:=96',
            '-p', 'status_period_s:=0.2']
    p = Pipeline(args=args)
    p.start()
    yield p
    p.bring_down()
    p.stop()
    rclpy.shutdown()


def test_image_to_action_chunk_in_one_process(pipeline):
    probe = rclpy.create_node('probe', namespace='/arm')
    pipeline.executor.add_node(probe)
    got = {'perception': [], 'trace': [], 'actions': [], 'status': [], 'markers': [], 'image': []}
    probe.create_subscription(MarkerArray, 'trace_markers', got['markers'].append, 10)
    got['diagnostics'] = []
    probe.create_subscription(DiagnosticArray, '/diagnostics', got['diagnostics'].append, 50)
    probe.create_subscription(Image, 'trace_image', got['image'].append, 10)
    probe.create_subscription(PerceptionTokens, 'perception_tokens', got['perception'].append, 10)
    probe.create_subscription(TrajectoryTrace, 'trajectory_trace', got['trace'].append, 10)
    probe.create_subscription(ActionChunk, 'action_chunk', got['actions'].append, 10)
    probe.create_subscription(NodeStatus, 'perception/status', got['status'].append, LATCHED)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    instruction = probe.create_publisher(String, 'instruction', LATCHED)
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)

    def publish_frame():
        msg = numpy_to_image(frame, 'rgb8')
        msg.header.stamp = probe.get_clock().now().to_msg()
        msg.header.frame_id = 'camera_color_optical_frame'
        camera.publish(msg)

    info_pub = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)

    def publish_info():
        info = CameraInfo(width=160, height=120, k=[150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0])
        info.header.frame_id = 'camera_color_optical_frame'
        info_pub.publish(info)

    timer = probe.create_timer(0.1, publish_frame)
    info_timer = probe.create_timer(0.1, publish_info)
    try:
        results = pipeline.bring_up()
        assert [r.state_after for r in results][-3:] == ['active'] * 3
        # configure froze the start-up heap: the engine's model is exempt from full garbage collections
        model = pipeline.nodes[0].engine.model
        assert gc.get_freeze_count() > 0 and not any(o is model for o in gc.get_objects())
        # which thread runs each stage's model work (recorded around the nodes' own methods)
        planner = next(n for n in pipeline.nodes if n.get_name() == 'trace_planner')
        decoder = next(n for n in pipeline.nodes if n.get_name() == 'action_decoder')
        ran_on = {'plan': [], 'act': []}

        def record(name, method):
            def run(msg):
                ran_on[name].append((msg.request_id, getattr(msg, 'source', None), threading.current_thread().name))
                return method(msg)
            return run

        planner._plan = record('plan', planner._plan)
        decoder._act = record('act', decoder._act)
        publish_frame()
        assert not wait_for(lambda: got['perception'], timeout=1.0)  # no instruction yet: nothing runs
        instruction.publish(String(data='put the red block in the bowl'))
        assert wait_for(lambda: got['actions']), f'no action chunk; statuses: {got["status"][-1:]}'
        p, t, a = got['perception'][0], got['trace'][0], got['actions'][0]
        assert p.request_id == t.request_id == a.request_id
        assert p.header.frame_id == t.header.frame_id == a.header.frame_id == 'camera_color_optical_frame'
        assert len(p.depth_codes) == 100
        assert (p.image.width, p.image.height) == (96, 72)  # resized to max_image_side_px
        assert (p.camera_info.width, p.camera_info.height) == (160, 120)  # the source camera image
        assert t.source == TrajectoryTrace.SOURCE_MODEL and 1 <= len(t.points) <= 5
        for pt in t.points:  # source pixels of the 160x120 camera image
            assert -0.5 <= pt.u_px <= 159.5 and -0.5 <= pt.v_px <= 119.5
        assert len(a.steps) == 1 and a.action_dim == 7 and a.unnorm_key == 'molmoact'
        assert a.timing.stage == 'action' and a.timing.cache_reused
        assert t.timing.cache_reused and not p.timing.cache_reused
        # intra_process (default): results reach the next stage in this process directly, and the same
        # message arriving again over DDS is not handled twice (one trace and one chunk per request)
        assert planner.local_inputs >= 1 and decoder.local_inputs >= 1
        # run to completion: the planner and the decoder ran on the perception worker's thread, right after it
        assert ran_on['plan'][0] == (p.request_id, None, 'perception_worker')
        assert ran_on['act'][0] == (p.request_id, TrajectoryTrace.SOURCE_MODEL, 'perception_worker')
        assert wait_for(lambda: len(got['actions']) >= 2)
        model_traces = [(x.request_id, x.revision) for x in got['trace'] if x.source == TrajectoryTrace.SOURCE_MODEL]
        chunk_keys = [(x.request_id, x.trace_revision) for x in got['actions']]
        assert len(model_traces) == len(set(model_traces)) and len(chunk_keys) == len(set(chunk_keys))
        # RViz: markers in the optical frame (no aligned depth: drawn along the rays) and the annotated view
        planner = next(n for n in pipeline.nodes if n.get_name() == 'trace_planner')
        assert wait_for(lambda: got['markers'] and got['image'], timeout=10), (planner.last_error, len(got['markers']), len(got['image']), p.camera_info.k)
        strip = next(m for m in got['markers'][0].markers if m.type == Marker.LINE_STRIP or m.action == Marker.DELETE)
        assert strip.header.frame_id == 'camera_color_optical_frame' and strip.ns == 'molmoact_trace'
        assert (got['image'][0].width, got['image'][0].height) == (96, 72)
        assert t.lift_method == TrajectoryTrace.LIFT_NONE and not t.points_3d  # no depth: no 3D claim
        names = {d.name for arr in got['diagnostics'] for d in arr.status}
        assert {'/arm/perception', '/arm/trace_planner', '/arm/action_decoder'} <= names
        latency = [kv.value for arr in got['diagnostics'] for d in arr.status if d.name == '/arm/action_decoder'
                   for kv in d.values if 'latency' in kv.key]
        assert latency and any(float(v) > 0 for v in latency)
        # steering: an edited trace (model space) yields a new chunk conditioned on it
        client = probe.create_client(EditTrace, 'edit_trace')
        assert client.wait_for_service(timeout_sec=10)

        def call(**kw):
            future = client.call_async(EditTrace.Request(**kw))
            assert wait_for(future.done, timeout=30)
            return future.result()

        # the engine keeps the KV caches of the newest `retained_requests` (2) requests only: after three
        # chunks the first request's cache is gone, and the edit below rebuilds it from its PerceptionTokens
        engine = pipeline.nodes[0].engine
        assert engine.sessions.limits.max_sessions == 2
        assert wait_for(lambda: len(got['actions']) >= 3)
        assert p.request_id not in engine.sessions and len(engine.sessions) <= 2
        n_actions = len(got['actions'])
        res = call(request_id=p.request_id, coordinates=EditTrace.Request.COORDS_MODEL,
                   points=[Point32(x=20.0, y=200.0), Point32(x=120.0, y=100.0)], act=True)
        assert res.success, res.message
        assert res.trace.source == TrajectoryTrace.SOURCE_EDITED and res.trace.revision == 1
        assert wait_for(lambda: any(c.trace_revision == 1 for c in got['actions'][n_actions:]))
        edited = next(c for c in got['actions'][n_actions:] if c.trace_revision == 1)
        assert edited.request_id == p.request_id and edited.steering_mode == ActionChunk.STEERING_DRAWN_TRACE
        # an edit comes from the service, on the executor's thread: the decoder's own worker acts on it
        assert (p.request_id, TrajectoryTrace.SOURCE_EDITED, 'action_decoder_worker') in ran_on['act']
        # source-pixel edits map back to model space; bad edits are refused with a reason
        res = call(request_id='', coordinates=EditTrace.Request.COORDS_SOURCE_PIXELS,
                   points=[Point32(x=0.0, y=0.0), Point32(x=159.0, y=119.0)], act=False)
        assert res.success and [(q.x_model, q.y_model) for q in res.trace.points] == [(0, 0), (255, 255)]
        for bad in ([], [Point32(x=1.0, y=1.0)] * 6, [Point32(x=float('nan'), y=1.0)], [Point32(x=999.0, y=1.0)]):
            res = call(request_id=p.request_id, coordinates=EditTrace.Request.COORDS_MODEL, points=bad, act=True)
            assert not res.success and res.message
        res = call(request_id='nope', coordinates=EditTrace.Request.COORDS_MODEL, points=[Point32(x=1.0, y=1.0)])
        assert not res.success and 'unknown request' in res.message
        planner = next(n for n in pipeline.nodes if n.get_name() == 'trace_planner')
        assert planner.is_active and planner.errors >= 5  # shown on ~/status, node still running

        pipeline.bring_down()  # deactivate, cleanup, shutdown: nothing more is published
        assert wait_for(lambda: any(m.action == Marker.DELETEALL for ma in got['markers'] for m in ma.markers),
                        timeout=5)
        n = len(got['actions']) + len(got['perception']) + len(got['trace'])
        time.sleep(1.0)
        assert len(got['actions']) + len(got['perception']) + len(got['trace']) == n
        assert all(node.lifecycle_label == 'finalized' for node in pipeline.nodes)
    finally:
        probe.destroy_timer(timer)
        probe.destroy_timer(info_timer)
        pipeline.executor.remove_node(probe)
        probe.destroy_node()


def test_aligned_depth_lifts_the_trace_to_3d(pipeline):
    probe = rclpy.create_node('probe_depth', namespace='/arm')
    pipeline.executor.add_node(probe)
    for node in pipeline.nodes:
        if node.get_name() == 'perception':
            node.set_parameters([rclpy.parameter.Parameter('use_aligned_depth', value=True)])
    traces, perceptions = [], []
    probe.create_subscription(TrajectoryTrace, 'trajectory_trace', traces.append, 10)
    probe.create_subscription(PerceptionTokens, 'perception_tokens', perceptions.append, 10)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    depth_pub = probe.create_publisher(Image, 'aligned_depth', qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
    instruction = probe.create_publisher(String, 'instruction', LATCHED)
    frame = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    depth = np.full((60, 80), 0.8, dtype=np.float32)
    depth[::7, ::7] = np.nan  # scattered invalid pixels: the robust sampling uses their valid neighbours

    def publish():
        stamp = probe.get_clock().now().to_msg()
        for pub, msg in ((depth_pub, numpy_to_image(depth, '32FC1')), (camera, numpy_to_image(frame, 'rgb8'))):
            msg.header.stamp, msg.header.frame_id = stamp, 'cam_optical'
            pub.publish(msg)
        info = CameraInfo(width=80, height=60, k=[70.0, 0.0, 39.5, 0.0, 70.0, 29.5, 0.0, 0.0, 1.0])
        info.header.frame_id = 'cam_optical'
        info_pub.publish(info)

    timer = probe.create_timer(0.1, publish)
    try:
        pipeline.bring_up()
        instruction.publish(String(data='touch the object'))
        # (frames processed before the first CameraInfo arrived cannot be lifted: no intrinsics yet)
        assert wait_for(lambda: any(t.lift_method == TrajectoryTrace.LIFT_ALIGNED_DEPTH for t in traces), 40), \
            [(p.aligned_depth.width, p.camera_info.k[0]) for p in perceptions[:3]]
        t = next(t for t in traces if t.lift_method == TrajectoryTrace.LIFT_ALIGNED_DEPTH)
        assert t.points_3d_frame_id == 'cam_optical'
        assert len(t.points_3d) == len(t.points)
        for p3, p2 in zip(t.points_3d, t.points):
            assert abs(p3.z - 0.8) < 1e-5  # metres along the optical axis
            assert abs(p3.x - (p2.u_px - 39.5) * 0.8 / 70.0) < 1e-4
    finally:
        probe.destroy_timer(timer)
        pipeline.executor.remove_node(probe)
        probe.destroy_node()


def test_bad_inputs_are_reported_and_the_nodes_keep_running(pipeline):
    probe = rclpy.create_node('probe_bad', namespace='/arm')
    pipeline.executor.add_node(probe)
    perception = next(n for n in pipeline.nodes if n.get_name() == 'perception')
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    instruction = probe.create_publisher(String, 'instruction', LATCHED)
    tokens = []
    probe.create_subscription(PerceptionTokens, 'perception_tokens', tokens.append, 10)
    try:
        pipeline.bring_up()
        for bad in ('', '   ', 'x' * 5000):
            errors = perception.errors
            instruction.publish(String(data=bad))
            assert wait_for(lambda: perception.errors > errors, timeout=10), bad[:10]
            assert 'instruction rejected' in perception.last_error
        instruction.publish(String(data='pick up the cup'))
        assert wait_for(lambda: perception.core.instruction == 'pick up the cup', timeout=10)
        bad_images = []
        yuv = numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8')
        yuv.encoding = 'yuv422'
        bad_images.append((yuv, 'unsupported'))
        empty = numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8')
        empty.width = empty.height = 0
        bad_images.append((empty, 'zero'))
        short = numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8')
        short.height = 80  # data too short for the declared size
        bad_images.append((short, 'short'))
        for msg, what in bad_images:
            errors = perception.errors
            camera.publish(msg)
            assert wait_for(lambda: perception.errors > errors, timeout=10), what
        assert perception.is_active
        good = numpy_to_image(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8), 'rgb8')
        good.header.stamp = probe.get_clock().now().to_msg()
        camera.publish(good)
        assert wait_for(lambda: tokens), perception.last_error  # still working after the bad inputs
    finally:
        pipeline.executor.remove_node(probe)
        probe.destroy_node()


def test_lifecycle_orders_and_silence_while_inactive(pipeline):
    """configure/activate/deactivate/cleanup in every legal order: outputs only while active, the engine
    released on cleanup and loaded again on configure."""
    from molmoact_ros.ros.lifecycle import walk

    probe = rclpy.create_node('probe_lifecycle', namespace='/arm')
    pipeline.executor.add_node(probe)
    out = []
    probe.create_subscription(PerceptionTokens, 'perception_tokens', out.append, 10)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    instruction = probe.create_publisher(String, 'instruction', LATCHED)
    frame = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    def publish():
        msg = numpy_to_image(frame, 'rgb8')
        msg.header.stamp = probe.get_clock().now().to_msg()
        camera.publish(msg)

    timer = probe.create_timer(0.1, publish)
    instruction.publish(String(data='wave'))
    try:
        sequence = ['configure', 'activate', 'deactivate', 'activate', 'deactivate', 'cleanup',
                    'configure', 'activate', 'deactivate', 'cleanup', 'shutdown']
        for transition in sequence:
            results = walk(pipeline.clients, [transition])
            assert all(r.success for r in results), results
            state = results[0].state_after
            assert pipeline.provider._loaded is None if state in ('unconfigured', 'finalized') else \
                pipeline.provider._loaded.users == 3
            if state == 'active':
                before = len(out)
                assert wait_for(lambda: len(out) > before, timeout=60), 'no output while active'
            else:
                time.sleep(0.3)  # let anything in flight land
                before = len(out)
                time.sleep(1.0)
                assert len(out) == before, f'published while {state}'
    finally:
        probe.destroy_timer(timer)
        pipeline.executor.remove_node(probe)
        probe.destroy_node()


def test_stages_hand_over_over_dds_only_without_intra_process(tmp_path, monkeypatch):
    """intra_process:=false: the stages in one process exchange results only over DDS, and still once each."""
    monkeypatch.setenv('MOLMOACT_TINY_DIR', str(tmp_path / 'tiny'))
    rclpy.init()
    p = Pipeline(args=['--ros-args', '-r', '__ns:=/dds', '-p', 'max_free_tokens:=3', '-p', 'max_image_side_px:=96',
                       '-p', 'intra_process:=false'])
    p.start()
    probe = rclpy.create_node('probe_dds', namespace='/dds')
    p.executor.add_node(probe)
    chunks = []
    probe.create_subscription(ActionChunk, 'action_chunk', chunks.append, 10)
    camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    frame = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    timer = probe.create_timer(0.2, lambda: camera.publish(numpy_to_image(frame, 'rgb8')))
    try:
        p.bring_up()
        probe.create_publisher(String, 'instruction', LATCHED).publish(String(data='open the drawer'))
        assert wait_for(lambda: len(chunks) >= 2)
        planner, decoder = (next(n for n in p.nodes if n.get_name() == name)
                            for name in ('trace_planner', 'action_decoder'))
        assert planner.local_inputs == 0 and decoder.local_inputs == 0
        keys = [c.request_id for c in chunks]
        assert len(keys) == len(set(keys))
    finally:
        probe.destroy_timer(timer)
        p.executor.remove_node(probe)
        probe.destroy_node()
        p.bring_down()
        p.stop()
        rclpy.shutdown()


def test_an_exception_escaping_a_callback_does_not_stop_the_process():
    """rclpy re-raises a callback's exception out of spin(): the runner reports it and keeps spinning, so the
    nodes still answer their lifecycle services."""
    rclpy.init()
    p = Pipeline(stages=('command_sink',), args=['--ros-args', '-r', '__ns:=/spin'])
    p.start()
    fired = []

    def bad():
        if not fired:
            fired.append(True)
            raise RuntimeError('a buggy callback')

    timer = p.manager.create_timer(0.05, bad)
    try:
        assert wait_for(lambda: fired, timeout=5)
        time.sleep(0.3)
        assert p._thread.is_alive()
        results = p.bring_up()
        assert [r.state_after for r in results][-1] == 'active'
    finally:
        p.manager.destroy_timer(timer)
        p.bring_down()
        p.stop()
        rclpy.shutdown()
