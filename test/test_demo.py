"""The README's first command: the demo runs the simulated arm, the pipeline and the command sink, and its
files hold what it claims (read back with mcap's reader and mcap_ros2's decoder, and independently with the
`rosbags` package's MCAP storage reader and CDR deserializer built from the file's own schemas; Pillow; the
URDF)."""

import json
import os
import subprocess
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from molmoact_bringup.demo.outputs import joint_limits_from_urdf, range_check
from molmoact_bringup.sim_arm_node import find_urdf

ROOT = Path(__file__).resolve().parents[1]
NS = '/demo_ci'
# Every stage of the pipeline, the simulated arm and the sink: each must be recorded and decodable.
DECODED = ('image', 'perception_tokens', 'trajectory_trace', 'action_chunk', 'trace_markers', 'trace_image',
           'joint_states', 'robot_description', 'joint_trajectory_controller/joint_trajectory',
           'command_sink/status')
LISTED = DECODED + ('aligned_depth', 'camera_info', 'depth_image', 'gripper_controller/commands', 'perception/status',
                    'execute_instruction/_action/status')


def test_demo_drives_the_simulated_arm_and_records_everything(tmp_path):
    env = dict(os.environ, MOLMOACT_TINY_DIR=str(tmp_path / 'tiny'))  # cold: the tiny model is built
    env.pop('MOLMOACT_MODEL', None)
    out = tmp_path / 'out'
    proc = subprocess.run([str(ROOT / 'install' / 'molmoact_bringup' / 'lib' / 'molmoact_bringup' / 'demo'),
                           '--steps', '2', '--output', str(out), '--namespace', NS, '--timeout', '120'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'structural test model' in proc.stdout and str(out) in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())

    # The run: both queries, executed by the sink on the simulated arm, within the URDF's limits.
    assert summary['goal_result']['outcome'] == 'completed' and summary['steps_completed'] == 2
    assert summary['command_sink']['present'] is True
    assert summary['command_sink']['commands_sent'] >= 1 and summary['command_sink']['chunks']['accepted'] >= 1
    assert summary['commands']['joint_trajectories'] >= 1
    assert summary['arm_moved']['moved'] is True and summary['arm_moved']['max_joint_displacement_rad'] > 1e-3
    assert summary['joint_range_check']['measured']['ok'] and summary['joint_range_check']['commanded']['ok']
    assert summary['joint_range_check']['measured']['samples'] > 10
    for stage in ('perception', 'planning', 'action'):
        assert summary['stage_latency_s'][stage]['count'] == 2 and summary['stage_latency_s'][stage]['max_s'] > 0
    assert all(not n['errors'] for n in summary['nodes'].values()), summary['nodes']

    # Only the action's feedback topic is left out (ros2msg cannot name its type), with the reason.
    assert list(summary['recording']['skipped_topics']) == [f'{NS}/execute_instruction/_action/feedback']

    # The recording: ros2 profile, cdr channels with ros2msg schemas, every topic decodes.
    with open(out / 'recording.mcap', 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        info = reader.get_summary()
        channels = {c.topic: c for c in info.channels.values()}
        for name in LISTED:
            assert f'{NS}/{name}' in channels, sorted(channels)
        assert all(c.message_encoding == 'cdr' for c in channels.values())
        assert all(s.encoding == 'ros2msg' and s.data for s in info.schemas.values())
        counts = {channels_by_id.topic: n for channels_by_id, n in
                  ((info.channels[cid], n) for cid, n in info.statistics.channel_message_counts.items())}
        decoded = {}
        for _, channel, _, msg in reader.iter_decoded_messages(topics=[f'{NS}/{n}' for n in DECODED]):
            decoded.setdefault(channel.topic[len(NS) + 1:], []).append(msg)
    for name in DECODED:
        assert decoded.get(name), f'no decoded message on {name}'
    assert {t: n for t, n in counts.items() if n} == {t: n for t, n in summary['recording']['topics'].items() if n}
    assert len(decoded['action_chunk']) == 2 and len(decoded['perception_tokens']) == 2
    assert [c.request_id for c in decoded['action_chunk']] == [p.request_id for p in decoded['perception_tokens']]
    assert decoded['image'][0].encoding == 'rgb8' and (decoded['image'][0].width, decoded['image'][0].height) == (320, 240)
    assert '<robot' in decoded['robot_description'][0].data
    # The commands in the recording, checked against the URDF independently of the summary.
    limits = joint_limits_from_urdf(find_urdf('').read_text())
    commanded = [dict(zip(m.joint_names, p.positions)) for m in decoded['joint_trajectory_controller/joint_trajectory']
                 for p in m.points]
    assert commanded and range_check(commanded, limits)['ok']
    assert len(commanded[0]) == 7

    # The pictures.
    with Image.open(out / 'demo.gif') as gif:
        assert gif.n_frames > 1 and gif.size == (320, 240)
    with Image.open(out / 'final_frame.png') as png:
        assert png.size == (320, 240) and png.mode == 'RGB'

    # An independent reader: rosbags (its own MCAP parser and CDR deserializer), with a type store built
    # only from the schemas in the file. Every message of every topic decodes, and agrees with the above.
    rb = McapReader(out / 'recording.mcap')
    rb.open()
    try:
        store = get_typestore(Stores.EMPTY)
        for conn in rb.connections:
            assert conn.msgdef.format == MessageDefinitionFormat.MSG and conn.msgdef.data, conn.topic
            assert conn.ext.serialization_format == 'cdr'
            store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        rb_topics = {c.topic for c in rb.connections}
        rb_counts, rb_msgs = {}, {}
        for conn, _, data in rb.messages(rb.connections):
            msg = store.deserialize_cdr(data, conn.msgtype)
            rb_counts[conn.topic] = rb_counts.get(conn.topic, 0) + 1
            rb_msgs.setdefault(conn.topic[len(NS) + 1:], []).append(msg)
    finally:
        rb.close()
    assert rb_counts == {t: n for t, n in summary['recording']['topics'].items() if n}
    assert rb_topics == set(summary['recording']['topics'])
    assert [c.request_id for c in rb_msgs['action_chunk']] == [c.request_id for c in decoded['action_chunk']]
    assert [c.action_text for c in rb_msgs["action_chunk"]] == [c.action_text for c in decoded["action_chunk"]]
    first = rb_msgs['image'][0]
    assert (first.encoding, first.width, first.height) == ('rgb8', 320, 240) and len(first.data) == 320 * 240 * 3
    assert bytes(first.data) == bytes(decoded['image'][0].data)
    assert list(rb_msgs['joint_states'][0].name) == list(decoded['joint_states'][0].name)
    assert rb_msgs['robot_description'][0].data == decoded['robot_description'][0].data
