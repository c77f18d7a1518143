"""The README's first command: the offline demo writes its outputs and completes its steps."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_one_step_and_writes_its_outputs(tmp_path):
    env = dict(__import__('os').environ, MOLMOACT_TINY_DIR=str(tmp_path / 'tiny'))
    out = tmp_path / 'demo'
    proc = subprocess.run([str(ROOT / 'install' / 'molmoact_ros' / 'lib' / 'molmoact_ros' / 'demo'), '--steps', '1',
                           '--output', str(out), '--timeout', '300'], env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'structural test model' in proc.stdout and str(out) in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['steps_completed'] >= 1 and summary['structural_model'] is True
    assert not summary['errors']['action_decoder'] and not summary['errors']['trace_planner']
    kinds = {json.loads(line)['kind'] for line in (out / 'messages.jsonl').read_text().splitlines()}
    assert kinds == {'perception_tokens', 'trajectory_trace', 'action_chunk'}
    png = out / 'trace_000.png'
    assert png.is_file() and png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
