"""ros2msg schema text: dependencies found and ordered, and real CDR bytes (rclpy) decode with it through
mcap_ros2, field by field."""

from pathlib import Path

import pytest
from rclpy.serialization import serialize_message

from molmoact_bringup.demo.msgdefs import (SEPARATOR, MessageDefinitionError, decoder, default_share_dirs,
                                           field_types, normalize_type, schema_text)


def msg_names(schema: str):
    return [line[5:] for line in schema.splitlines() if line.startswith('MSG: ')]


def test_normalize_type():
    assert normalize_type('std_msgs/String') == 'std_msgs/msg/String'
    assert normalize_type('std_msgs/msg/String') == 'std_msgs/msg/String'
    for bad in ('String', 'a/srv/B', '/x', 'a/b/c/d', 'molmoact_msgs/action/ExecuteInstruction_FeedbackMessage'):
        with pytest.raises(MessageDefinitionError):
            normalize_type(bad)


def test_field_types_reads_types_not_primitives_constants_arrays_or_comments():
    text = ('# a comment naming geometry_msgs/Pose\n'
            'uint8 KIND_A = 1   # constant\n'
            'string<=8 short_name\n'
            'std_msgs/Header header\n'
            'float64[3] xyz\n'
            'Point[] points  # same package\n'
            'geometry_msgs/Quaternion[<=4] qs\n'
            'builtin_interfaces/Time stamp\n'
            'std_msgs/Header again\n')
    assert field_types(text, 'mypkg') == ['std_msgs/msg/Header', 'mypkg/msg/Point', 'geometry_msgs/msg/Quaternion',
                                          'builtin_interfaces/msg/Time']


def test_schema_of_joint_trajectory_lists_each_dependency_once_in_first_use_order():
    schema = schema_text('trajectory_msgs/msg/JointTrajectory')
    assert msg_names(schema) == ['std_msgs/Header', 'builtin_interfaces/Time', 'trajectory_msgs/JointTrajectoryPoint',
                                 'builtin_interfaces/Duration']
    assert schema.count(SEPARATOR + '\nMSG: ') == 4
    assert 'JointTrajectoryPoint[] points' in schema.split(SEPARATOR)[0]


def test_missing_message_is_a_clear_error(tmp_path):
    with pytest.raises(MessageDefinitionError, match='NoSuchType.msg'):
        schema_text('std_msgs/msg/NoSuchType')
    with pytest.raises(MessageDefinitionError):
        schema_text('std_msgs/msg/String', [tmp_path])


def test_default_share_dirs_from_ament_prefix_path(tmp_path):
    (tmp_path / 'a' / 'share').mkdir(parents=True)
    dirs = default_share_dirs({'AMENT_PREFIX_PATH': f'{tmp_path / "a"}:{tmp_path / "missing"}'})
    assert dirs[0] == tmp_path / 'a' / 'share' and all(Path(d).is_dir() for d in dirs)


def decode(msg, type_name):
    return decoder(type_name, schema_text(type_name))(serialize_message(msg))


def test_cdr_of_rclpy_messages_decodes_with_the_schema():
    from builtin_interfaces.msg import Duration
    from molmoact_msgs.msg import ActionChunk, ActionStep, NodeStatus, TracePoint, TrajectoryTrace
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from visualization_msgs.msg import Marker, MarkerArray

    jt = JointTrajectory(joint_names=['a', 'b'])
    jt.header.stamp.sec, jt.header.stamp.nanosec, jt.header.frame_id = 12, 345, 'base'
    jt.points = [JointTrajectoryPoint(positions=[0.5, -1.25], time_from_start=Duration(sec=1, nanosec=7))]
    d = decode(jt, 'trajectory_msgs/msg/JointTrajectory')
    assert d.joint_names == ['a', 'b'] and d.header.stamp.sec == 12 and d.header.frame_id == 'base'
    assert list(d.points[0].positions) == [0.5, -1.25] and d.points[0].time_from_start.nanosec == 7

    img = Image(height=2, width=3, encoding='rgb8', step=9, data=bytes(range(18)))
    d = decode(img, 'sensor_msgs/msg/Image')
    assert (d.height, d.width, d.encoding, bytes(d.data)) == (2, 3, 'rgb8', bytes(range(18)))

    js = JointState(name=['j1'], position=[0.25], velocity=[1.5], effort=[])
    d = decode(js, 'sensor_msgs/msg/JointState')
    assert d.name == ['j1'] and list(d.position) == [0.25] and list(d.velocity) == [1.5]

    chunk = ActionChunk(request_id='r1', step_period_s=0.1)
    step = ActionStep(gripper=0.75)
    step.translation_m.x = 0.01
    chunk.steps = [step, ActionStep(gripper=0.25)]
    d = decode(chunk, 'molmoact_msgs/msg/ActionChunk')
    assert d.request_id == 'r1' and d.step_period_s == 0.1 and len(d.steps) == 2
    assert d.steps[0].translation_m.x == 0.01 and d.steps[1].gripper == 0.25

    trace = TrajectoryTrace(request_id='t', revision=3, points=[TracePoint(x_model=10, y_model=200, u_px=1.5, v_px=2.5)])
    d = decode(trace, 'molmoact_msgs/msg/TrajectoryTrace')
    assert d.revision == 3 and (d.points[0].x_model, d.points[0].y_model, d.points[0].v_px) == (10, 200, 2.5)

    status = NodeStatus(node_name='n', errors=4, last_error='boom', engine_state=NodeStatus.ENGINE_READY)
    d = decode(status, 'molmoact_msgs/msg/NodeStatus')
    assert (d.node_name, d.errors, d.last_error, d.engine_state) == ('n', 4, 'boom', NodeStatus.ENGINE_READY)

    from action_msgs.msg import GoalStatus, GoalStatusArray
    d = decode(GoalStatusArray(status_list=[GoalStatus(status=GoalStatus.STATUS_SUCCEEDED)]),
               'action_msgs/msg/GoalStatusArray')
    assert d.status_list[0].status == GoalStatus.STATUS_SUCCEEDED and len(d.status_list[0].goal_info.goal_id.uuid) == 16

    markers = MarkerArray(markers=[Marker(ns='trace', id=2, type=Marker.LINE_STRIP)])
    d = decode(markers, 'visualization_msgs/msg/MarkerArray')
    assert d.markers[0].ns == 'trace' and d.markers[0].id == 2 and d.markers[0].type == Marker.LINE_STRIP
