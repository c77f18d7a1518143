"""The built dataset opens with LeRobot's own loader (LeRobotDataset), in the venv of its own that
scripts/setup_lerobot.sh creates (LeRobot's torch pins clash with the suite's). A missing venv is a
failure that says how to install it, never a skip."""

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[4]
VENV = Path(os.environ.get('MOLMOACT_LEROBOT_VENV', REPO / '.venv-lerobot'))

SCRIPT = r'''
import json, sys, warnings
warnings.filterwarnings('ignore')
import logging; logging.disable(logging.WARNING)
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset('local/molmoact_test', root=sys.argv[1])
item = ds[len(ds) - 1]
print(json.dumps({
    'len': len(ds), 'episodes': ds.num_episodes, 'fps': ds.fps, 'task': item['task'],
    'image': list(item['observation.image'].shape), 'answer': item['molmoact.answer'],
    'bins': item['molmoact.action_bins'].tolist(), 'codes': item['molmoact.depth_codes'].tolist(),
    'episode': int(item['episode_index']), 'stats_keys': sorted(ds.meta.stats)}))
'''


def test_dataset_opens_with_lerobots_own_loader(dataset):
    python = VENV / 'bin' / 'python'
    if not python.exists():
        pytest.fail(f'LeRobot venv missing at {VENV}: run scripts/setup_lerobot.sh (or set MOLMOACT_LEROBOT_VENV) '
                    'so that the dataset can be checked with LeRobot\'s own loader', pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'AMENT', 'ROS', 'COLCON'))}
    env['HF_HUB_OFFLINE'] = '1'
    proc = subprocess.run([str(python), '-c', SCRIPT, str(dataset['dir'])], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    last = pq.read_table(dataset['dir'] / 'data/chunk-000/file-000.parquet').to_pylist()[-1]
    assert got['len'] == 22 and got['episodes'] == 2 and got['fps'] == 10
    assert got['task'] == 'lift the red cube'
    assert got['image'] == [3, 240, 320]
    assert got['answer'] == last['molmoact.answer']
    assert got['bins'] == last['molmoact.action_bins'] and got['codes'] == last['molmoact.depth_codes']
    assert got['episode'] == 1
    assert 'action' in got['stats_keys'] and 'observation.image' in got['stats_keys']
