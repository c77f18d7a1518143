"""The demo's summary findings from what a run gathered (:func:`demo_summary`; ROS-free: a fake recorder and
recording, the sink's real SinkFigures)."""

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List

import pytest

from molmoact_bringup.demo.outputs import JointLimit
from molmoact_bringup.demo.run import demo_summary
from molmoact_ros.cores.sink_figures import ExecutionFigures, SafetyFigures, SinkFigures

ARM = [f'panda_joint{i}' for i in range(1, 8)]
LIMITS = {'panda_joint1': JointLimit(-2.9, 2.9), 'panda_joint4': JointLimit(-3.07, -0.07),
          'panda_finger_joint1': JointLimit(0.0, 0.04)}
# The keys summary.json has always written after its header, in this order (README and tests read them).
KEYS = ['task', 'goal_result', 'steps_completed', 'wall_s', 'stage_latency_s', 'command_sink', 'drops', 'commands',
        'nodes', 'joint_range_check', 'arm_moved', 'recording', 'files']


@dataclass
class FakeRecorder:
    """What demo_summary reads of a DemoRecorder."""

    timings: Dict[str, List[float]] = field(default_factory=lambda: {
        'perception_tokens': [0.5, 0.7], 'trajectory_trace': [1.0, 3.0], 'action_chunk': [0.2, 0.4]})
    observation_to_action_s: List[float] = field(default_factory=lambda: [2.0, 4.5])
    measured: List[dict] = field(default_factory=list)
    commanded: List[dict] = field(default_factory=list)
    trajectories: int = 0
    gripper_commands: List[float] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)


def joints(q1=0.0, q4=-1.5):
    return {**{name: 0.0 for name in ARM}, 'panda_joint1': q1, 'panda_joint4': q4}


def summarize(rec=None, **kw):
    args = dict(goal_result={'outcome': 'completed', 'reason': '', 'steps_completed': 2}, task_state=None,
                figures=None, node_counters={}, sink_present=True, sink_missing='', moved_threshold_rad=1e-3,
                limits=LIMITS, limits_from='/share/panda.urdf', recording_bytes=1234,
                files=['demo.gif', 'summary.json'], wall_s=12.5)
    args.update(kw)
    recording = args.pop('recording', SimpleNamespace(counts={'/demo/joint_states': 40, '/demo/image': 7},
                                                      dropped_over_limit=0))
    return demo_summary(rec or FakeRecorder(), recording, **args)


def test_keys_in_summary_json_order_and_json_serializable():
    figures = SinkFigures(commands_sent=3, safety=SafetyFigures(), execution=ExecutionFigures(chunks={'accepted': 2}))
    s = summarize(figures=figures)
    assert list(s) == KEYS
    assert json.loads(json.dumps(s)) == s  # plain JSON values (no mapping proxies, tuples or numpy scalars)


def test_arm_moved_is_a_strict_threshold_on_the_largest_joint_displacement():
    rec = FakeRecorder(measured=[joints(0.0), joints(0.0015), joints(0.0005, -1.5004)])
    moved = summarize(rec)['arm_moved']
    assert moved['moved'] is True and moved['threshold_rad'] == 1e-3
    assert moved['max_joint_displacement_rad'] == pytest.approx(0.0015)
    assert moved['per_joint_rad']['panda_joint1'] == pytest.approx(0.0015)
    assert moved['per_joint_rad']['panda_joint4'] == pytest.approx(0.0004)
    assert moved['joint_state_samples'] == 3
    assert summarize(rec, moved_threshold_rad=0.002)['arm_moved']['moved'] is False
    assert summarize(FakeRecorder(measured=[joints(0.0), joints(0.5)]), moved_threshold_rad=0.5)[
        'arm_moved']['moved'] is False  # equal to the threshold: not moved
    still = summarize(FakeRecorder())['arm_moved']
    assert still == {'moved': False, 'threshold_rad': 1e-3, 'max_joint_displacement_rad': 0.0, 'per_joint_rad': {},
                     'joint_state_samples': 0}


def test_sink_figures_and_drops():
    figures = SinkFigures(commands_sent=5, safety=SafetyFigures(halts={'stalled_model': 1}, clamps={'step': 4}),
                          execution=ExecutionFigures(chunks={'accepted': 3, 'too_old': 2, 'halted': 0}))
    s = summarize(figures=figures, node_counters={'perception': {'inputs_received': 9, 'inputs_dropped': 6}},
                  recording=SimpleNamespace(counts={}, dropped_over_limit=4))
    sink = s['command_sink']
    assert sink['present'] is True and sink['reason_absent'] == '' and sink['commands_sent'] == 5
    assert sink['clamps'] == {'step': 4} and sink['halts'] == {'stalled_model': 1}
    assert sink['chunks'] == {'accepted': 3, 'too_old': 2, 'halted': 0}
    assert sink['figures']['commands sent'] == '5' and sink['figures']['halts stalled_model'] == '1'
    assert s['drops'] == {'camera_frames_superseded': 6, 'chunks_not_executed': {'too_old': 2, 'halted': 0},
                          'recording_over_size_limit': 4}
    assert s['nodes'] == {'perception': {'inputs_received': 9, 'inputs_dropped': 6}}


@pytest.mark.parametrize('missing, reason', [('', 'disabled with --no-sink'),
                                             ('molmoact_ros.nodes.command_sink: no module',
                                              'molmoact_ros.nodes.command_sink: no module')])
def test_no_sink_says_why(missing, reason):
    s = summarize(sink_present=False, sink_missing=missing)
    assert s['command_sink'] == {'present': False, 'reason_absent': reason, 'commands_sent': None, 'clamps': {},
                                 'halts': {}, 'chunks': {}, 'figures': {}}
    assert s['drops'] == {'camera_frames_superseded': None, 'chunks_not_executed': {},
                          'recording_over_size_limit': 0}


def test_task_state():
    assert summarize()['task'] is None
    done = SimpleNamespace(task='lift', succeeded=True, first_success_s=7, reason='cube 0.05 m above rest')
    assert summarize(task_state=done)['task'] == {'task': 'lift', 'succeeded': True, 'first_success_s': 7.0,
                                                  'reason': 'cube 0.05 m above rest'}
    open_ = SimpleNamespace(task='lift', succeeded=False, first_success_s=0.0, reason='x' * 400)
    task = summarize(task_state=open_)['task']
    assert task['succeeded'] is False and task['first_success_s'] is None and task['reason'] == 'x' * 300


def test_steps_latencies_commands_and_joint_ranges():
    rec = FakeRecorder(measured=[joints(), joints(3.0)], commanded=[joints(q4=0.5), joints()], trajectories=1,
                       gripper_commands=[0.04, 0.2], skipped={'/demo/x/_action/feedback': 'no schema'})
    s = summarize(rec)
    assert s['steps_completed'] == 2 and s['wall_s'] == 12.5
    assert s['goal_result'] == {'outcome': 'completed', 'reason': '', 'steps_completed': 2}
    lat = s['stage_latency_s']
    assert lat['planning'] == {'count': 2, 'mean_s': 2.0, 'median_s': 2.0, 'max_s': 3.0}
    assert lat['observation_to_action']['max_s'] == 4.5 and lat['perception']['mean_s'] == 0.6
    assert s['commands'] == {'joint_trajectories': 1, 'trajectory_points': 2, 'gripper_commands': 2}
    ranges = s['joint_range_check']
    # Commanded: panda_joint4 at 0.5 (above -0.07) and the gripper at 0.2 (above 0.04), both flagged.
    assert not ranges['commanded']['ok'] and ranges['commanded']['samples'] == 4
    assert {v['joint'] for v in ranges['commanded']['violations']} == {'panda_joint4', 'panda_finger_joint1'}
    assert not ranges['measured']['ok'] and ranges['measured']['violations'][0]['joint'] == 'panda_joint1'
    assert ranges['limits_from'] == '/share/panda.urdf'
    assert s['recording'] == {'file': 'recording.mcap', 'topics': {'/demo/image': 7, '/demo/joint_states': 40},
                              'skipped_topics': {'/demo/x/_action/feedback': 'no schema'}, 'bytes': 1234}
    assert list(s['recording']['topics']) == ['/demo/image', '/demo/joint_states']  # sorted by topic
    assert s['files'] == ['demo.gif', 'summary.json']


class _Closable:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def close(self):
        self.log.append(self.name)
        if self.fail:
            raise OSError(f'{self.name} close failed')


@pytest.mark.parametrize('mcap_close_fails', [False, True])
def test_a_failing_step_still_closes_the_recording_and_the_suite(monkeypatch, tmp_path, mcap_close_fails):
    from molmoact_bringup.demo import run as demo_run
    log = []
    monkeypatch.setattr(demo_run, 'SuiteSession', lambda config: _Closable(log, 'suite'))

    class Failing(demo_run.DemoRun):
        def prepare(self):
            return None

        def start(self):
            self.mcap = _Closable(log, 'mcap', fail=mcap_close_fails)

        def wait_for_sim(self):
            raise RuntimeError('the simulated arm exited')

        def write_outputs(self):
            raise AssertionError('no outputs after a failed step')

    with pytest.raises(OSError if mcap_close_fails else RuntimeError):
        Failing(SimpleNamespace(output=tmp_path, namespace='demo')).execute()
    assert log == ['mcap', 'suite']
