"""The demonstrations -> MolmoAct dataset builder on small simulated episodes."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_ros.reasoning import grammar
from molmoact_ros.reasoning.action_space import NormStatsTable
from molmoact_ros.robot.execution import build_timeline
from molmoact_ros.robot.geometry import model_space_to_model_pixels
from molmoact_ros.robot.profiles import load_profile
from molmoact_ros.training import labels
from molmoact_ros.training.build import BuildOptions, _depth_pool, _Prepared, _Spilled, build_dataset
from molmoact_ros.training.config import SyncConfig, TopicConfig
from molmoact_ros.training.episode import synchronize
from molmoact_ros.training.labels import own_path_from
from molmoact_ros.training.recording import EpisodeError, read_episode


def _rows(dataset):
    return pq.read_table(dataset['dir'] / 'data/chunk-000/file-000.parquet').to_pylist()


# --- trace projection ------------------------------------------------------------------------------

def _mujoco_pixel(sim, p_world):
    """Where MuJoCo's own camera model puts a world point (pixel centres at integers): camera -z forward,
    y up, focal length from the camera's vertical field of view; independent of the suite's camera code."""
    m, d = sim.model, sim.data
    cam = sim._cam_id
    R = d.cam_xmat[cam].reshape(3, 3)
    x, y, z = R.T @ (np.asarray(p_world) - d.cam_xpos[cam])
    h, w = sim.config.image_height_px, sim.config.image_width_px
    f = (h / 2.0) / math.tan(math.radians(m.cam_fovy[cam]) / 2.0)
    return np.array([(w - 1) / 2.0 + f * x / -z, (h - 1) / 2.0 - f * y / -z])


def test_trace_projection_agrees_with_the_rendered_end_effector(sim, episodes):
    """The TCP projected through the recorded camera_info + camera pose (the builder's path) lands within
    1 px (320x240) of where MuJoCo's camera renders the TCP, on every frame of a recorded episode; and the
    gripper's geoms are drawn around that pixel in the segmentation render."""
    from molmoact_bringup.sim.panda_sim import PandaSim  # noqa: F401  (sim fixture type)
    spec = episodes['specs'][0]
    raw = read_episode(episodes['dir'] / 'ep0.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
    w, h = steps.intrinsics.width, steps.intrinsics.height
    assert (w, h) == (320, 240)
    worst = 0.0
    # Re-drive the sim to each frame's state to ask MuJoCo where the TCP is.
    from sim_episodes import EpisodeSpec, record_sim_episode  # noqa: F401
    for i in range(len(steps)):
        ms = labels.project_points(steps.ee_poses[i, :3, 3][None], steps.camera_poses[i], steps.intrinsics, w, h, np.eye(3))
        px = model_space_to_model_pixels(ms, w, h)[0]
        tcp_base = spec.truth['tcp'][i]
        base_world = np.linalg.inv(sim._base_from_world())
        ref = _mujoco_pixel(sim, (base_world @ tcp_base)[:3, 3])
        worst = max(worst, float(np.max(np.abs(px - ref))))
    assert worst <= 1.0, f'projected TCP is {worst:.3f} px from MuJoCo\'s camera'
    # The rounded 0..255 trace point maps back to within one model-space step of the pixel.
    trace = labels.traces(steps.ee_poses[:, :3, 3], steps.camera_poses, steps.intrinsics, w, h, np.eye(3))
    assert all(1 <= len(t) <= 5 for t in trace)
    # Segmentation: some gripper geom is rendered within 6 px of the projected TCP on the last frame.
    seg = sim.render_segmentation()
    gripper = sim.geom_ids_of_bodies([n for n in (sim.model.body(i).name for i in range(sim.model.nbody))
                                      if 'gripper0' in n or 'finger' in n])
    ms = labels.project_points(sim.ee_pose().matrix[:3, 3][None], sim.camera_pose().matrix, sim.intrinsics, w, h,
                               np.eye(3))
    u, v = np.round(model_space_to_model_pixels(ms, w, h)[0]).astype(int)
    window = seg[max(v - 6, 0):v + 7, max(u - 6, 0):u + 7]
    assert np.isin(window, gripper).any()


def test_trace_follows_molmoacts_line_subsampling():
    pts = [(i, 2 * i) for i in range(12)]
    assert labels.subsample_line(pts[:3]) == pts[:3]
    assert labels.subsample_line(pts) == [pts[j] for j in (0, 2, 5, 8, 11)]  # int(linspace(0, 11, 5))
    assert labels.subsample_line([None, (1, 1), None, (2, 2)]) == [(1, 1), (2, 2)]
    assert labels.subsample_line([None, None]) == []


# --- actions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('frame', ['base', 'tool'])
@pytest.mark.parametrize('convention', ['euler_sxyz_roll_pitch_yaw', 'rotation_vector'])
def test_delta_extraction_round_trips_through_build_timeline(frame, convention):
    from transforms3d.euler import euler2mat
    rng = np.random.default_rng(3)
    poses = [np.eye(4)]
    poses[0][:3, 3] = [0.4, 0.1, 0.3]
    for _ in range(9):
        step = np.eye(4)
        step[:3, :3] = euler2mat(*rng.uniform(-0.2, 0.2, 3))
        step[:3, 3] = rng.uniform(-0.03, 0.03, 3)
        poses.append(poses[-1] @ step)
    poses = np.stack(poses)
    d = labels.ee_deltas(poses, frame, convention)
    tl = build_timeline(d[:, :3], d[:, 3:], np.zeros(len(d)), observation_pose=poses[0], observation_stamp_s=0.0,
                        step_period_s=0.1, delta_frame=frame, rotation_convention=convention)
    np.testing.assert_allclose(tl.poses, poses[1:], atol=1e-9)


def test_recorded_actions_round_trip_and_gripper_maps_back(dataset, episodes):
    profile = load_profile('sim_panda')
    raw = read_episode(episodes['dir'] / 'ep1.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=profile.joint_names,
                        gripper_joint='panda_finger_joint1', fk=None)
    d = labels.ee_deltas(steps.ee_poses, profile.delta_frame, profile.rotation_convention)
    tl = build_timeline(d[:, :3], d[:, 3:], np.zeros(len(d)), observation_pose=steps.ee_poses[0],
                        observation_stamp_s=0.0, step_period_s=0.1, delta_frame=profile.delta_frame,
                        rotation_convention=profile.rotation_convention)
    np.testing.assert_allclose(tl.poses, steps.ee_poses[1:], atol=1e-9)
    for command in (0.0, 0.04, 0.001, 0.039):
        raw_value = labels.gripper_raw_value(command, profile.gripper)
        from molmoact_ros.reasoning.action_space import bins_to_normalized, normalized_to_bins
        centre = float(bins_to_normalized(normalized_to_bins(raw_value)))
        assert profile.gripper(centre) == (0.04 if command > 0.02 else 0.0)
    # The recorded gripper closes at frame 6: the action of step 5 (-> 6) is already "closed".
    rows = [r for r in _rows(dataset) if r['episode_index'] == 1]
    assert [r['action'][6] for r in rows[:5]] == [1.0] * 5 and rows[5]['action'][6] == 0.0


def test_chunks_repeat_the_last_action_at_the_end():
    a = np.arange(5)[:, None] * np.ones((1, 7))
    chunks, pad = labels.action_chunks(a, 3)
    assert chunks[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4], [4, 4, 4]]
    assert pad.tolist() == [0, 0, 0, 1, 2]


# --- the dataset -----------------------------------------------------------------------------------

def test_every_answer_parses_back_to_its_codes_trace_and_bins(dataset):
    rows = _rows(dataset)
    meta = json.loads((dataset['dir'] / 'meta/molmoact.json').read_text())
    h = meta['horizon']
    assert len(rows) == dataset['report'].examples == 22  # 2 episodes x (12 frames - 1)
    for r in rows:
        parsed = grammar.parse_answer(r['molmoact.answer'], 7, horizon=h)
        assert not parsed.errors, parsed.errors
        assert list(parsed.depth.codes) == r['molmoact.depth_codes']
        n = r['molmoact.trace_length']
        want = tuple(tuple(r['molmoact.trace'][2 * j:2 * j + 2]) for j in range(n))
        assert [t.points for t in parsed.traces] == [want, want]  # finetune template: left and right
        assert np.asarray(parsed.actions.bins).reshape(-1).tolist() == r['molmoact.action_bins']
        assert all(0 <= c <= 127 for c in r['molmoact.depth_codes']) and len(r['molmoact.depth_codes']) == 100
        assert r['molmoact.prompt'].startswith('The task is lift the red cube.')
    assert meta['depth_tokenizer']['kind'] == 'trained'
    assert (dataset['dir'] / 'meta/depth_tokenizer.pt').is_file()


def test_norm_stats_hand_checked(dataset):
    """q01 / q99 of dataset_statistics.json are the 1st / 99th percentiles of the per-step actions (linear
    interpolation between order statistics, worked out here by hand), the suite loads the file, and one
    example's bins are its chunk normalised with them."""
    rows = _rows(dataset)
    a = np.array([r['action'] for r in rows], dtype=np.float64)
    # Per-step actions of an episode also include the frames that are not examples: none here.
    path = dataset['dir'] / 'dataset_statistics.json'
    stats = NormStatsTable.from_json_file(path).select('molmoact')
    data = json.loads(path.read_text())['molmoact']
    assert data['num_transitions'] == 22 and data['num_trajectories'] == 2
    assert list(stats.mask) == [True] * 6 + [False]
    for dim in range(7):
        s = sorted(a[:, dim])
        for q, got in ((0.01, stats.q01[dim]), (0.99, stats.q99[dim])):
            pos = q * (len(s) - 1)
            lo = int(math.floor(pos))
            want = s[lo] + (pos - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])
            assert got == pytest.approx(want, abs=1e-6)  # actions were stored as float32
    r = rows[2]
    chunk = np.array(r['molmoact.action_chunk']).reshape(-1, 7)
    for t, row in enumerate(chunk):
        for dim in range(6):
            n = 2 * (row[dim] - stats.q01[dim]) / (stats.q99[dim] - stats.q01[dim] + 1e-8) - 1
            n = min(max(n, -1.0), 1.0)
            edges = np.linspace(-1, 1, 256)
            want_bin = min(int(np.digitize(n, edges)) - 1, 254)
            assert abs(r['molmoact.action_bins'][t * 7 + dim] - want_bin) <= 1  # float32 storage at a bin edge
        assert r['molmoact.action_bins'][t * 7 + 6] == (254 if row[6] == 1.0 else 127)


def test_lerobot_layout(dataset):
    root = dataset['dir']
    info = json.loads((root / 'meta/info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == 10 and info['total_frames'] == 22
    for rel in ('meta/stats.json', 'meta/tasks.parquet', 'meta/episodes/chunk-000/file-000.parquet',
                'data/chunk-000/file-000.parquet'):
        assert (root / rel).is_file(), rel
    eps = pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet').to_pylist()
    assert [(e['dataset_from_index'], e['dataset_to_index']) for e in eps] == [(0, 11), (11, 22)]
    # The prepared episodes spilled between the passes are gone.
    assert not (root / '_prepared').exists() and not list(root.rglob('*.npz'))


def test_depth_pool_from_spilled_episodes_is_the_in_memory_draw(tmp_path):
    rng = np.random.default_rng(3)
    frames = [5, 1, 7, 3]
    depth = [rng.integers(0, 256, (m, 4, 4), dtype=np.uint8) for m in frames]
    spilled = []
    for i, (m, d) in enumerate(zip(frames, depth)):
        prep = _Prepared(f'ep{i}', 'x', np.zeros((m, 2, 2, 3), np.uint8), d, [[]] * m, np.zeros((m, 7)),
                         np.zeros((m, 7)), np.arange(m, dtype=float), True)
        spilled.append(_Spilled.spill(prep, tmp_path / f'{i}.npz'))
    everything = np.concatenate(depth)
    for count in (4, 9, 16, 100):
        expected = everything if count >= len(everything) else \
            everything[np.sort(np.random.default_rng(7).choice(len(everything), count, replace=False))]
        np.testing.assert_array_equal(_depth_pool(spilled, count, np.random.default_rng(7)), expected)
    back = spilled[2].load()
    np.testing.assert_array_equal(back.depth_u8, depth[2])
    assert back.name == 'ep2' and back.images.shape == (7, 2, 2, 3)


# --- bad input -------------------------------------------------------------------------------------

def test_bad_episodes_are_skipped_with_named_errors_and_the_good_ones_kept(sim, episodes, tmp_path):
    from sim_episodes import EpisodeSpec, record_sim_episode
    src = tmp_path / 'eps'
    src.mkdir()
    (src / 'good.mcap').write_bytes((episodes['dir'] / 'ep0.mcap').read_bytes())
    record_sim_episode(sim, src / 'no_info.mcap', EpisodeSpec(steps=3, skip_topics=('camera_info',)))
    record_sim_episode(sim, src / 'late_depth.mcap', EpisodeSpec(steps=3, depth_offset_s=0.05))
    record_sim_episode(sim, src / 'nan_pose.mcap', EpisodeSpec(steps=4, nan_pose_at=2))
    record_sim_episode(sim, src / 'short.mcap', EpisodeSpec(steps=4))
    cases = {'no_info': ('camera_info', 'missing'), 'late_depth': ('/demo/aligned_depth', 'unsynchronized'),
             'nan_pose': ('/demo/sim_arm/ee_pose', 'not finite')}
    for name, (topic, word) in cases.items():
        with pytest.raises(EpisodeError) as err:
            raw = read_episode(src / f'{name}.mcap', TopicConfig())
            synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
        assert err.value.episode == name and err.value.topic == topic and word in err.value.reason, str(err.value)
        assert name in str(err.value) and topic in str(err.value)
    out = tmp_path / 'out'
    (tmp_path / 'out').mkdir()
    (out / 'keep.txt').write_text('an earlier dataset')
    with pytest.raises(FileExistsError):
        build_dataset(BuildOptions(episodes=src, out_dir=out, horizon=4, depth_tokenizer=None,
                                   train_depth_tokenizer=True, progress=False))
    assert (out / 'keep.txt').read_text() == 'an earlier dataset'
    report = build_dataset(BuildOptions(episodes=src, out_dir=out, horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=2, overwrite=True, progress=False), log=lambda m: None)
    assert report.episodes == 1 and report.examples == 11
    reasons = {s['episode']: s for s in report.skipped}
    assert set(reasons) == {'no_info', 'late_depth', 'nan_pose', 'short'}
    assert 'shorter' in reasons['short']['reason'] or 'too short' in reasons['short']['reason']
    meta = json.loads((out / 'meta/molmoact.json').read_text())
    assert {s['episode'] for s in meta['skipped_episodes']} == set(reasons)


def test_a_dropped_camera_frame_costs_one_example_not_the_episode(sim, tmp_path):
    """A camera that dropped a frame (a simulator rendering on a loaded CPU): that step is no example, the
    episode is kept, and the actions around the gap are still the state's exact step deltas."""
    from sim_episodes import EpisodeSpec, record_sim_episode
    spec = record_sim_episode(sim, tmp_path / 'gap.mcap', EpisodeSpec(steps=8, drop_frames_at=(3,)))
    raw = read_episode(tmp_path / 'gap.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
    assert len(steps) == 8 and steps.has_frame.tolist() == [True, True, True, False, True, True, True, True]
    np.testing.assert_allclose(steps.stamps - steps.stamps[0], 0.1 * np.arange(8), atol=1e-9)
    # The state at the gap's step is interpolated at the step's time: the true TCP position there.
    np.testing.assert_allclose(steps.ee_poses[3][:3, 3], spec.truth['tcp'][3][:3, 3], atol=2e-3)
    report = build_dataset(BuildOptions(episodes=tmp_path / 'gap.mcap', out_dir=tmp_path / 'out', horizon=4,
                                        train_depth_tokenizer=True, tokenizer_steps=1, progress=False),
                           log=lambda m: None)
    assert report.episodes == 1 and report.skipped == []
    stamps = [row['observation.stamp_s'] for row in _rows({'dir': tmp_path / 'out'})]
    assert len(stamps) == 6  # 7 steps with an action, minus the one without a frame


def test_a_lost_depth_message_costs_one_example_not_the_episode(sim, tmp_path):
    """A depth message lost on a loaded machine (seen in a CI run: the frame's depth 0.1 s away): that step is
    no example and is counted; the episode is kept. All depth late stays an error (test above)."""
    from sim_episodes import EpisodeSpec, record_sim_episode
    record_sim_episode(sim, tmp_path / 'lost.mcap', EpisodeSpec(steps=8, drop_depth_at=(2, 5)))
    raw = read_episode(tmp_path / 'lost.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
    assert steps.has_frame.tolist() == [True, True, False, True, True, False, True, True]
    assert steps.steps_without_depth == 2
    assert np.isnan(steps.depths[2]).all() and np.isfinite(steps.depths[3]).any()
    report = build_dataset(BuildOptions(episodes=tmp_path / 'lost.mcap', out_dir=tmp_path / 'out', horizon=4,
                                        train_depth_tokenizer=True, tokenizer_steps=1, progress=False),
                           log=lambda m: None)
    assert report.episodes == 1 and report.skipped == []
    assert len(_rows({'dir': tmp_path / 'out'})) == 5  # 7 steps with an action, minus the two without depth


def test_a_fixed_cameras_pose_holds_across_a_gap_a_moving_ones_is_bridged(sim, tmp_path):
    """The simulator's pose stream paused 0.10-0.16 s under load and 82 of 850 episodes were lost: a camera
    pose that never changes holds between its samples; a moving camera's gap is interpolated across, and the
    step inside it is no example; a gap longer than max_state_gap_s is still an error."""
    from sim_episodes import EpisodeSpec, record_sim_episode
    gap = (3, 4, 5)    # no camera pose sample from 0.25 s to 0.6 s
    spec = record_sim_episode(sim, tmp_path / 'fixed.mcap', EpisodeSpec(steps=8, drop_camera_pose_at=gap))
    raw = read_episode(tmp_path / 'fixed.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
    assert len(steps) == 8 and steps.has_frame.all() and steps.steps_without_state == 0
    np.testing.assert_allclose(steps.camera_poses, np.repeat(spec.truth['camera'][:1], 8, axis=0), atol=1e-6)
    spec = record_sim_episode(sim, tmp_path / 'moving.mcap', EpisodeSpec(steps=8, drop_camera_pose_at=gap,
                                                                          camera_drift_m=0.001))
    raw = read_episode(tmp_path / 'moving.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(), joint_names=(), gripper_joint='panda_finger_joint1',
                        fk=None)
    # Step 4 (0.4 s) is 0.15 s from the nearest sample: bridged, no example; its neighbours are examples.
    assert not steps.has_frame[4] and steps.has_frame[[0, 1, 2, 3, 6, 7]].all()
    assert steps.steps_without_state == int(np.count_nonzero(~steps.has_frame))
    # Interpolated across the gap: between the last sample before it (0.25 s, drifted 2 mm) and the first after
    # (0.6 s, 6 mm), at 0.4 s: 2 + 4 * 0.15 / 0.35 mm.
    drift = steps.camera_poses[4][0, 3] - spec.truth['camera'][4][0, 3]
    assert drift == pytest.approx(0.002 + 0.004 * 0.15 / 0.35, abs=1e-6)
    with pytest.raises(EpisodeError, match='camera_pose: unsynchronized stamps'):
        synchronize(raw, step_period_s=0.1, sync=SyncConfig(max_state_gap_s=0.2), joint_names=(),
                    gripper_joint='panda_finger_joint1', fk=None)


def test_a_pause_of_the_joint_states_drops_its_steps_not_the_episode(sim, tmp_path):
    """A DAgger run's state stream paused 0.11-0.12 s once in 150 s and the whole episode was skipped: the
    steps inside such a pause are no examples, the rest of the episode is kept."""
    from sim_episodes import EpisodeSpec, record_sim_episode
    record_sim_episode(sim, tmp_path / 'paused.mcap', EpisodeSpec(steps=8, drop_joint_states_at=(4,)))
    raw = read_episode(tmp_path / 'paused.mcap', TopicConfig())
    steps = synchronize(raw, step_period_s=0.1, sync=SyncConfig(state_tolerance_s=0.04), joint_names=(),
                        gripper_joint='panda_finger_joint1', fk=None)
    assert steps.has_frame.tolist() == [True] * 4 + [False] + [True] * 3
    assert steps.steps_without_state == 1 and np.all(np.isfinite(steps.ee_poses))
    report = build_dataset(BuildOptions(episodes=tmp_path / 'paused.mcap', out_dir=tmp_path / 'out', horizon=4,
                                        train_depth_tokenizer=True, tokenizer_steps=1, progress=False,
                                        sync=SyncConfig(state_tolerance_s=0.04)), log=lambda m: None)
    assert report.episodes == 1 and report.skipped == []
    assert len(_rows({'dir': tmp_path / 'out'})) == 6   # 7 steps with an action, minus the one in the pause
    with pytest.raises(EpisodeError, match='joint_states: unsynchronized stamps'):
        synchronize(raw, step_period_s=0.1, sync=SyncConfig(state_tolerance_s=0.04, max_state_gap_s=0.1),
                    joint_names=(), gripper_joint='panda_finger_joint1', fk=None)


def test_only_successful_skips_failed_episodes(sim, tmp_path):
    from sim_episodes import EpisodeSpec, record_sim_episode
    src = tmp_path / 'eps'
    src.mkdir()
    record_sim_episode(sim, src / 'ok.mcap', EpisodeSpec(steps=6, succeeded=True))
    record_sim_episode(sim, src / 'failed.mcap', EpisodeSpec(steps=6, succeeded=False, seed=3))
    report = build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'out', horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=1, only_successful=True, progress=False), log=lambda m: None)
    assert report.episodes == 1
    assert report.skipped == [{'episode': 'failed', 'topic': '/demo/sim_arm/task_state',
                               'reason': 'not successful (task state says succeeded=false)'}]


def test_topic_config_from_yaml(tmp_path):
    from molmoact_ros.training.config import ConfigError, load_topic_config
    p = tmp_path / 't.yaml'
    p.write_text('namespace: /arm1\nimage: camera/color/image_raw\ntf: tf_static\n')
    cfg = load_topic_config(p)
    assert cfg.namespace == '/arm1' and cfg.image == 'camera/color/image_raw' and cfg.tf == ('tf_static',)
    p.write_text('imgae: x\n')
    with pytest.raises(ConfigError, match='imgae'):
        load_topic_config(p)


# --- commanded action labels -----------------------------------------------------------------------

def test_own_path_from_the_first_chunk_executed_as_labelled_after_the_last_foreign_one():
    t = np.arange(10) * 0.1
    a, b = np.zeros((4, 7)), np.ones((4, 7))
    label_t = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
    labels = [a] * 5
    same = own_path_from(t, label_t, labels, label_t, [a] * 5, 0.05)
    assert same.all()                                                  # nothing foreign: every step
    detour = own_path_from(t, label_t, labels, label_t, [b, b, a, a, a], 0.05)
    assert detour.tolist() == [False] * 4 + [True] * 6                 # from the chunk at 0.4 s on
    learner = own_path_from(t, label_t, labels, label_t, [b] * 5, 0.05)
    assert not learner.any()
    unlabelled = own_path_from(t, label_t[:3], labels[:3], label_t, [a] * 5, 0.05)
    assert not unlabelled.any()                                        # the last executed chunk has no label


@settings(max_examples=200, deadline=None)
@given(foreign=st.lists(st.booleans(), min_size=1, max_size=12))
def test_own_path_steps_never_precede_a_foreign_chunk(foreign):
    """Property: a step marked own is after every foreign chunk's stamp, and every step at or after the first
    chunk executed as labelled past the last foreign one is own."""
    k = len(foreign)
    label_t = np.arange(k) * 0.2
    t = np.arange(2 * k) * 0.1
    executed = [np.ones((2, 7)) if f else np.zeros((2, 7)) for f in foreign]
    own = own_path_from(t, label_t, [np.zeros((2, 7))] * k, label_t, executed, 0.05)
    foreign_t = label_t[np.array(foreign)]
    if len(foreign_t):
        assert not own[t <= foreign_t.max() + 1e-9].any()
        last = int(np.flatnonzero(foreign)[-1])
        if last + 1 < k:
            assert own[t >= label_t[last + 1] - 1e-9].all()
        else:
            assert not own.any()
    else:
        assert own.all()


def test_commanded_chunks_label_the_nearest_step_cut_or_padded_to_the_horizon():
    t = 10.0 + 0.1 * np.arange(6)
    a = [np.full((5, 2), 1.0), np.arange(4).reshape(2, 2) + 0.0, np.full((3, 2), 7.0), np.full((3, 2), 9.0)]
    # 10.02 -> step 0; 10.29 -> step 3 (0.01 away); 10.33 -> step 3 too, further: ignored; 10.9: past the end.
    chunks, pad, has = labels.commanded_chunks(t, [10.02, 10.29, 10.33, 10.9], a, horizon=3, tolerance_s=0.05)
    assert has.tolist() == [True, False, False, True, False, False]
    assert chunks[0].tolist() == [[1, 1]] * 3 and pad[0] == 0               # cut to the horizon
    assert chunks[3].tolist() == [[0, 1], [2, 3], [2, 3]] and pad[3] == 1   # padded with its last step
    assert np.isnan(chunks[1]).all() and pad[1] == 0
    # A later chunk at the same distance replaces the earlier one.
    chunks, _, _ = labels.commanded_chunks(t, [10.25, 10.35], [np.zeros((3, 2)), np.ones((3, 2))], 3, 0.05)
    assert chunks[3].tolist() == [[1, 1]] * 3
    with pytest.raises(ValueError, match='non-finite'):
        labels.commanded_chunks(t, [10.0], [np.full((3, 2), np.nan)], 3, 0.05)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1.0, 2.0, allow_nan=False), min_size=1, max_size=12),
       st.integers(1, 20), st.floats(0.0, 0.2))
def test_commanded_chunks_every_labelled_step_holds_its_nearest_chunk(stamps, n_steps, tol):
    t = 0.1 * np.arange(n_steps)
    chunks = [np.full((2, 1), float(k)) for k in range(len(stamps))]
    out, _, has = labels.commanded_chunks(t, stamps, chunks, 2, tol)
    for i in range(n_steps):
        claims = [k for k, s in enumerate(stamps)
                  if abs(t[i] - s) <= tol and int(np.argmin(np.abs(t - s))) == i]
        assert has[i] == bool(claims)
        if claims:
            d = min(abs(t[i] - stamps[k]) for k in claims)
            assert int(out[i, 0, 0]) in [k for k in claims if abs(t[i] - stamps[k]) == d]


def test_commanded_actions_label_the_dataset(sim, tmp_path):
    """--actions commanded: each recorded ActionChunk labels the example of its observation's frame (stamps
    up to half a step away), padded to the horizon; other steps are no examples; the norm stats are the
    commanded chunks'."""
    from sim_episodes import EpisodeSpec, commanded_actions, record_sim_episode
    src = tmp_path / 'eps'
    src.mkdir()
    record_sim_episode(sim, src / 'cmd.mcap', EpisodeSpec(steps=10, chunk_every=3, chunk_steps=3, chunk_offset_s=0.03))
    report = build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'out', horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=1, progress=False, actions='commanded'), log=lambda m: None)
    assert report.skipped == [] and report.examples == 3     # frames 0, 3, 6 (9 is the last step: no example)
    rows = _rows({'dir': tmp_path / 'out'})
    want = {f: commanded_actions(f, 3)[[0, 1, 2, 2]] for f in (0, 3, 6)}
    for row, frame in zip(rows, (0, 3, 6)):
        np.testing.assert_allclose(np.reshape(row['molmoact.action_chunk'], (4, 7)), want[frame], atol=1e-6)
        np.testing.assert_allclose(row['action'], want[frame][0], atol=1e-6)
        assert row['molmoact.chunk_padding'] == 1
    stats = json.loads((tmp_path / 'out' / 'dataset_statistics.json').read_text())['molmoact']['action']
    every = np.concatenate(list(want.values()))
    np.testing.assert_allclose(stats['max'], every.max(0), atol=1e-9)
    np.testing.assert_allclose(stats['min'], every.min(0), atol=1e-9)
    meta = json.loads((tmp_path / 'out' / 'meta' / 'molmoact.json').read_text())
    assert meta['actions'] == 'commanded'


def test_relabelled_steps_are_examples_only_once_the_labeller_drives(sim, tmp_path):
    """Labels on expert/action_chunk, another chunk executed on action_chunk until frame 4 (a detour, a
    learner): the steps before the first chunk executed as labelled have a trace that is not the labeller's
    path, and are no examples; from frame 4 on the labels are examples. The demonstration's own topic alone
    (no relabelling) keeps every labelled step."""
    from sim_episodes import EpisodeSpec, commanded_actions, record_sim_episode
    src = tmp_path / 'eps'
    src.mkdir()
    record_sim_episode(sim, src / 'detour.mcap', EpisodeSpec(steps=12, chunk_every=2, chunk_steps=4,
                                                              expert_labels=True, foreign_until=4))
    topics = TopicConfig(action_chunk='expert/action_chunk,action_chunk')
    report = build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'out', horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=1, progress=False, actions='commanded', topics=topics),
                           log=lambda m: None)
    assert report.skipped == [] and report.examples == 4      # frames 4, 6, 8, 10 (not 0, 2)
    rows = _rows({'dir': tmp_path / 'out'})
    for row, frame in zip(rows, (4, 6, 8, 10)):
        np.testing.assert_allclose(np.reshape(row['molmoact.action_chunk'], (4, 7)), commanded_actions(frame, 4),
                                   atol=1e-6)
    own = build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'own', horizon=4, train_depth_tokenizer=True,
                                     tokenizer_steps=1, progress=False, actions='commanded'), log=lambda m: None)
    assert own.examples == 6
    # Every executed chunk differs from its label (a learner's whole run): no example, with the reason.
    record_sim_episode(sim, src / 'learner.mcap', EpisodeSpec(steps=12, chunk_every=2, chunk_steps=4,
                                                               expert_labels=True, foreign_until=12))
    with pytest.raises(ValueError, match='every chunk executed on /demo/action_chunk differs from its label'):
        build_dataset(BuildOptions(episodes=src / 'learner.mcap', out_dir=tmp_path / 'l', horizon=4,
                                   train_depth_tokenizer=True, tokenizer_steps=1, progress=False,
                                   actions='commanded', topics=topics), log=lambda m: None)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 300), seed=st.integers(0, 10_000))
def test_min_max_bounds_keep_every_action_representable(n, seed):
    """--action-bounds min_max: q01/q99 are the extremes, so normalising any recorded action stays inside
    [-1, 1] unclipped; the default (MolmoAct's percentiles) lies inside them."""
    from molmoact_ros.reasoning.action_space import NormStats, normalize_bounds_q99
    from molmoact_ros.training.build import dataset_statistics
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.normal(0.0, 0.01, (n, 6)), rng.integers(0, 2, (n, 1))], axis=1)
    a[:, 0] = np.abs(a[:, 0])          # skewed: almost never back
    a[0, 0] = -0.015                   # one rare step back
    mm = dataset_statistics(a, 3, 'k', 'min_max')['k']['action']
    q = dataset_statistics(a, 3, 'k')['k']['action']
    np.testing.assert_allclose(mm['q01'], a.min(0))
    np.testing.assert_allclose(mm['q99'], a.max(0))
    assert np.all(np.array(q['q01']) >= a.min(0) - 1e-12) and np.all(np.array(q['q99']) <= a.max(0) + 1e-12)
    stats = NormStats.from_action_dict(mm, key='k')
    norm = normalize_bounds_q99(a[None], stats)[0]
    assert np.all(np.abs(norm[:, :6]) <= 1.0 + 1e-9)
    assert norm[0, 0] == pytest.approx(-1.0)          # the rare step back is the lower bound, not clipped
    with pytest.raises(ValueError, match='action bounds must be one of'):
        dataset_statistics(a, 3, 'k', 'q05_q95')


def test_commanded_actions_need_the_topic_and_the_profiles_action_space(sim, tmp_path):
    from sim_episodes import EpisodeSpec, record_sim_episode
    src = tmp_path / 'eps'
    src.mkdir()
    record_sim_episode(sim, src / 'none.mcap', EpisodeSpec(steps=6))
    record_sim_episode(sim, src / 'axang.mcap', EpisodeSpec(steps=6, chunk_every=2, chunk_convention=1))
    record_sim_episode(sim, src / 'good.mcap', EpisodeSpec(steps=6, chunk_every=2))
    report = build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'out', horizon=4, train_depth_tokenizer=True,
                                        tokenizer_steps=1, progress=False, actions='commanded'), log=lambda m: None)
    assert report.episodes == 1 and report.examples == 3
    reasons = {s['episode']: (s['topic'], s['reason']) for s in report.skipped}
    assert reasons['none'][1].startswith('missing: no commanded action chunks')
    assert reasons['axang'][0] == '/demo/action_chunk'
    assert 'rotation convention rotation_vector, the profile euler_sxyz_roll_pitch_yaw' in reasons['axang'][1]
    with pytest.raises(ValueError, match='actions must be one of'):
        build_dataset(BuildOptions(episodes=src, out_dir=tmp_path / 'o2', train_depth_tokenizer=True,
                                   actions='smoothed'))
