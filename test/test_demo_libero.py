"""`scripts/demo.sh --scene libero`: the demo on one LIBERO task, set up as the released LIBERO evaluator feeds a
checkpoint (here the tiny structural model; a real LIBERO checkpoint is the same command with MOLMOACT_MODEL).
Checked from its files: the task's own instruction, both views mirrored at 256x256, the 90 % crop in the
model -> source mapping, 8-step chunks at LIBERO's 20 Hz, one query at a time, the arm driven within its limits.
Without LIBERO the demo says how to install it."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image

from molmoact_bringup.demo.outputs import joint_limits_from_urdf, range_check
from molmoact_bringup.sim.libero_task import LiberoTaskSpec, load_task
from molmoact_bringup.sim_arm_node import find_urdf
from molmoact_ros.robot.geometry import affine_to_list, center_crop_affine

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'install' / 'molmoact_bringup' / 'lib' / 'molmoact_bringup' / 'demo'
NS = '/demo_libero_ci'
DECODED = ('image', 'wrist_image', 'perception_tokens', 'action_chunk', 'sim_arm/task_description',
           'joint_trajectory_controller/joint_trajectory', 'joint_states')


def test_libero_demo_runs_the_task_as_the_released_evaluator_feeds_a_checkpoint(tmp_path):
    env = dict(os.environ)
    env.pop('MOLMOACT_MODEL', None)
    out = tmp_path / 'out'
    proc = subprocess.run([str(DEMO), '--scene', 'libero', '--steps', '2', '--output', str(out), '--namespace', NS,
                           '--timeout', '150'], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    language = load_task(LiberoTaskSpec('libero_spatial', 0)).language  # the exported (cached) task

    # The task's instruction, the evaluator's settings, one query at a time.
    assert summary['scene'] == 'libero' and summary['lockstep'] is True
    assert summary['instruction'] == language == summary['libero']['task_description']
    assert summary['robot_profile']['name'] == 'libero_panda'
    assert summary['libero']['pipeline_parameters'] == {
        'use_wrist_image': True, 'jpeg_quality': 95, 'center_crop_area_fraction': 0.9, 'action_horizon': 8,
        'max_image_side_px': 256, 'prompt_variant': 'multi_view'}
    assert summary['goal_result']['outcome'] == 'completed' and summary['steps_completed'] == 2
    assert summary['command_sink']['chunks']['accepted'] >= 1 and summary['command_sink']['commands_sent'] >= 1
    assert summary['arm_moved']['moved'] is True
    assert summary['joint_range_check']['measured']['ok'] and summary['joint_range_check']['commanded']['ok']
    assert all(not n['errors'] for n in summary['nodes'].values()), summary['nodes']

    with open(out / 'recording.mcap', 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = {}
        for _, channel, _, msg in reader.iter_decoded_messages(topics=[f'{NS}/{n}' for n in DECODED]):
            decoded.setdefault(channel.topic[len(NS) + 1:], []).append(msg)
    assert decoded['sim_arm/task_description'][0].data == language
    for view in ('image', 'wrist_image'):
        assert (decoded[view][0].encoding, decoded[view][0].width, decoded[view][0].height) == ('rgb8', 256, 256)
    assert 'camera_info' not in summary['recording']['topics'] or not summary['recording']['topics']['camera_info']
    # The perception node cropped 90 % of the 256 px frame: model pixels map back through the crop.
    perception = decoded['perception_tokens']
    assert len(perception) == 2
    for p in perception:
        np.testing.assert_allclose(list(p.model_to_source), affine_to_list(center_crop_affine(256, 256, 0.9)),
                                   atol=1e-9)
    # 8 actions per answer at 20 Hz; the two queries' observations lie apart by at least one executed chunk.
    chunks = decoded['action_chunk']
    assert [len(c.steps) for c in chunks] == [8, 8] and all(abs(c.step_period_s - 0.05) < 1e-9 for c in chunks)
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in chunks]
    assert stamps[1] - stamps[0] >= 8 * 0.05
    limits = joint_limits_from_urdf(find_urdf('').read_text())
    commanded = [dict(zip(m.joint_names, p.positions)) for m in decoded['joint_trajectory_controller/joint_trajectory']
                 for p in m.points]
    assert commanded and range_check(commanded, limits)['ok']

    with Image.open(out / 'demo.gif') as gif:
        assert gif.n_frames > 1 and gif.size == (256, 256)
    with Image.open(out / 'final_frame.png') as png:
        assert png.size == (256, 256)


def test_without_libero_the_demo_points_to_its_setup(tmp_path):
    env = dict(os.environ, MOLMOACT_LIBERO_PYTHON=str(tmp_path / 'no-python'))
    proc = subprocess.run([str(DEMO), '--scene', 'libero', '--steps', '1', '--output', str(tmp_path / 'out')],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert 'scripts/setup_libero.sh' in proc.stderr and 'needs LIBERO' in proc.stderr
    assert not (tmp_path / 'out' / 'summary.json').exists()
