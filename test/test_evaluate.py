"""`evaluate` through the whole suite on the simulated arm (the CI check of issue 13): the scripted expert
lifts the cube in seeded episodes through action_chunk -> command_sink, each episode recorded to MCAP; the
tiny random-weight model runs through the pipeline and fails, counted with its reason."""

import json
import os
import subprocess
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ROOT / 'install' / 'molmoact_bringup' / 'lib' / 'molmoact_bringup' / 'evaluate'
BUILD_DATASET = ROOT / 'install' / 'molmoact_ros' / 'lib' / 'molmoact_ros' / 'build_dataset'


def run_evaluate(tmp_path, *args, timeout=420):
    env = dict(os.environ, MOLMOACT_TINY_DIR=str(tmp_path / 'tiny'))
    env.pop('MOLMOACT_MODEL', None)
    proc = subprocess.run([str(EVALUATE), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_scripted_expert_succeeds_and_episodes_are_recorded(tmp_path):
    out, rec = tmp_path / 'out', tmp_path / 'episodes'
    proc = run_evaluate(tmp_path, '--policy', 'scripted', '--episodes', '2', '--seed', '7', '--output', str(out),
                        '--record', str(rec), '--namespace', '/eval_ci_scripted', '--episode-timeout', '60')
    results = json.loads((out / 'results.json').read_text())
    assert results['policy'] == 'scripted' and results['scene'] == 'lift'
    eps = results['episodes']
    assert [e['seed'] for e in eps] == [7, 8]
    assert all(e['success'] for e in eps), [(e['end_reason'], e['detail']) for e in eps]
    assert all(e['end_reason'] == 'success' and e['steps'] >= 1 and e['wall_s'] > 0 for e in eps)
    assert results['summary']['rates']['overall']['successes'] == 2
    assert 'overall' in proc.stdout and 'success_rate: 100.0 %' in proc.stdout
    # Each episode's MCAP holds what a real arm has, plus the task state that judged it.
    for e in eps:
        path = Path(e['recording'])
        assert path.is_file() and path.parent == rec
        counts = {}
        succeeded = False
        with open(path, 'rb') as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _, channel, _, msg in reader.iter_decoded_messages():
                name = channel.topic.split('/eval_ci_scripted/', 1)[1]
                counts[name] = counts.get(name, 0) + 1
                if name == 'sim_arm/task_state':
                    succeeded = succeeded or msg.succeeded
        for topic in ('image', 'aligned_depth', 'camera_info', 'joint_states', 'sim_arm/ee_pose',
                      'gripper_controller/commands', 'sim_arm/task_state', 'action_chunk'):
            assert counts.get(topic, 0) >= 1, (topic, counts)
        assert succeeded

    # The recorded episodes become a MolmoAct training dataset (demonstrations -> data, issue 13's recipe).
    data = tmp_path / 'dataset'
    proc = subprocess.run([str(BUILD_DATASET), str(rec), str(data), '--train-depth-tokenizer', '--tokenizer-steps', '2',
                           '--only-successful', '--no-progress', '--state-tolerance', '0.3'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'episodes: 2 episodes' in proc.stdout and 'skipped episodes: 0 episodes' in proc.stdout, proc.stdout
    info = json.loads((data / 'meta' / 'info.json').read_text())
    assert info['total_episodes'] == 2 and info['total_frames'] >= 10
    stats = json.loads((data / 'dataset_statistics.json').read_text())
    assert 'molmoact' in stats and len(stats['molmoact']['action']['q99']) == 7


def test_tiny_model_fails_with_its_reason(tmp_path):
    out = tmp_path / 'out'
    run_evaluate(tmp_path, '--policy', 'model', '--model', 'tiny', '--episodes', '1', '--max-steps', '2',
                 '--output', str(out), '--namespace', '/eval_ci_model', '--episode-timeout', '120')
    results = json.loads((out / 'results.json').read_text())
    assert results['model'] == 'tiny' and results['settings']['structural_model'] is True
    (ep,) = results['episodes']
    # Random weights do not lift the cube: the episode ends on its step budget, not in a crash.
    assert ep['success'] is False and ep['end_reason'] == 'step_budget', ep
    assert ep['extra']['goal']['outcome'] in ('completed', 'canceled') and ep['steps'] == 2
    for stage in ('perception', 'planning', 'action'):
        assert ep['stage_latency'][stage]['count'] >= 2
