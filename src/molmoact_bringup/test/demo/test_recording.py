"""McapRecorder: a ros2-profile MCAP that mcap's reader opens and mcap_ros2 decodes."""

import threading

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.serialization import serialize_message
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from molmoact_bringup.demo.msgdefs import schema_text
from molmoact_bringup.demo.recording import McapRecorder


def test_written_messages_read_back_decoded(tmp_path):
    rec = McapRecorder(tmp_path / 'r.mcap')
    rec.add_topic('/ns/chatter', 'std_msgs/msg/String', schema_text('std_msgs/msg/String'))
    rec.add_topic('/ns/jt', 'trajectory_msgs/msg/JointTrajectory', schema_text('trajectory_msgs/msg/JointTrajectory'))
    assert rec.add_topic('/ns/chatter', 'std_msgs/msg/String', 'ignored') == rec.topics['/ns/chatter']
    threads = [threading.Thread(target=lambda i=i: [rec.write('/ns/chatter', serialize_message(String(data=f'{i}-{k}')),
                                                              log_time_ns=1000 + k) for k in range(50)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.write('/ns/jt', serialize_message(JointTrajectory(joint_names=['j1'])))
    rec.close()
    rec.close()
    assert rec.write('/ns/chatter', b'late') is False
    assert rec.counts == {'/ns/chatter': 200, '/ns/jt': 1}

    with open(tmp_path / 'r.mcap', 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        summary = reader.get_summary()
        assert header.profile == 'ros2'
        assert {c.topic: c.message_encoding for c in summary.channels.values()} == {'/ns/chatter': 'cdr', '/ns/jt': 'cdr'}
        assert {s.name: s.encoding for s in summary.schemas.values()} == {
            'std_msgs/msg/String': 'ros2msg', 'trajectory_msgs/msg/JointTrajectory': 'ros2msg'}
        decoded = [(channel.topic, m) for _, channel, _, m in reader.iter_decoded_messages()]
    assert sorted(m.data for t, m in decoded if t == '/ns/chatter') == sorted(f'{i}-{k}' for i in range(4) for k in range(50))
    assert [m.joint_names for t, m in decoded if t == '/ns/jt'] == [['j1']]


def test_size_limit_drops_and_counts(tmp_path):
    rec = McapRecorder(tmp_path / 'r.mcap', max_bytes=30)
    rec.add_topic('/a', 'std_msgs/msg/String', schema_text('std_msgs/msg/String'))
    payload = serialize_message(String(data='x' * 8))
    results = [rec.write('/a', payload) for _ in range(3)]
    rec.close()
    assert results == [True, False, False] and rec.dropped_over_limit == 2 and rec.counts['/a'] == 1
