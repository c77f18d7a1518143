"""Action bins, token ids, norm stats and BOUNDS_Q99 (reasoning/action_space.py).

Expected values are derived by hand from the facts of the released code (not from this module's
formula): bin k has centre ``-1 + (2k + 1) / 255`` (so bin 0 -> -254/255, bin 127 -> 0, bin 254 ->
254/255), and BOUNDS_Q99 maps a centre linearly from [-1, 1] onto [q01, q99], so bin 127 gives the
midpoint of [q01, q99], bin 254 gives ``q99 - (q99 - q01) / 510`` and bin 0 gives
``q01 + (q99 - q01) / 510``. The stats dicts are small hand-written ones with plausible magnitudes for
each dataset family, not copies of the released files.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.reasoning import action_space as A

# --- Hand-written stats in the dataset_statistics.json schema -----------------------------------------

BRIDGE_ORIG = {  # WidowX: metres / radians of EEF delta, gripper 0..1 not normalized
    'action': {
        'mean': [0.0002, 0.0001, -0.0001, -0.0002, -0.0004, 0.0002, 0.58],
        'std': [0.0098, 0.0137, 0.0127, 0.0285, 0.0306, 0.0769, 0.497],
        'max': [0.42, 0.26, 0.21, 3.12, 1.86, 6.28, 1.0],
        'min': [-0.40, -0.14, -0.23, -3.20, -1.86, -6.28, 0.0],
        'q01': [-0.03, -0.04, -0.026, -0.08, -0.09, -0.2, 0.0],
        'q99': [0.03, 0.04, 0.04, 0.08, 0.078, 0.2, 1.0],
        'mask': [True, True, True, True, True, True, False],
    },
    'proprio': {'mean': [0.0] * 7, 'std': [0.0] * 7, 'max': [0.0] * 7, 'min': [0.0] * 7,
                'q01': [0.0] * 7, 'q99': [0.0] * 7},
    'num_transitions': 2135463,
    'num_trajectories': 60064,
}
FRACTAL = {  # Google Robot
    'action': {
        'q01': [-0.22, -0.15, -0.23, -0.35, -0.42, -0.44, 0.0],
        'q99': [0.18, 0.15, 0.22, 0.59, 0.35, 0.45, 1.0],
        'mask': [True, True, True, True, True, True, False],
    },
}
LIBERO_SPATIAL = {  # LIBERO: controller-input units in [-1, 1]
    'action': {
        'q01': [-0.75, -0.8, -0.94, -0.1, -0.16, -0.2, 0.0],
        'q99': [0.93, 0.86, 0.94, 0.15, 0.18, 0.3, 1.0],
        'mask': [True, True, True, True, True, True, False],
    },
}
MOLMOACT = {  # mid-train mix: small deltas; no mask stored (the release then assumes all true)
    'action': {
        'q01': [-0.012, -0.018, -0.015, -0.03, -0.025, -0.035, 0.0],
        'q99': [0.012, 0.018, 0.016, 0.03, 0.026, 0.036, 1.0],
        'std': [0.0052, 0.0075, 0.0064, 0.0132, 0.0109, 0.0149, 0.49],
    },
}
NORM_STATS = {
    'bridge_orig': BRIDGE_ORIG,
    'fractal20220817_data': FRACTAL,
    'libero_spatial_no_noops_modified': LIBERO_SPATIAL,
    'molmoact': MOLMOACT,
}

TOP = 254 / 255  # centre of bin 254
BOTTOM = -254 / 255  # centre of bin 0


def table():
    return A.NormStatsTable.from_norm_stats(NORM_STATS)


# --- Bins and token ids ----------------------------------------------------------------------------

def test_bin_layout_matches_the_release():
    assert A.BIN_EDGES.shape == (256,) and A.BIN_CENTERS.shape == (255,)
    assert A.BIN_EDGES[0] == -1.0 and A.BIN_EDGES[-1] == 1.0
    assert A.BIN_CENTERS[0] == pytest.approx(BOTTOM, abs=1e-15)
    assert A.BIN_CENTERS[127] == pytest.approx(0.0, abs=1e-15)
    assert A.BIN_CENTERS[254] == pytest.approx(TOP, abs=1e-15)
    assert A.BIN_CENTERS[254] == pytest.approx(0.996078, abs=1e-6)  # the gripper value in issues
    assert (A.MIN_ACTION_TOKEN_ID, A.MAX_ACTION_TOKEN_ID) == (151387, 151642)
    with pytest.raises(ValueError):
        A.BIN_CENTERS[0] = 0.0  # read-only


@pytest.mark.parametrize('normalized, digitized, token_id, bin_', [
    (-1.0, 1, 151642, 0),
    (-2.0, 1, 151642, 0),  # clipped first
    (-1 + 2 / 255 - 1e-9, 1, 151642, 0),
    (-1 + 2 / 255 + 1e-9, 2, 151641, 1),
    (0.0, 128, 151515, 127),  # edges 127 and 128 are -1/255 and +1/255
    (0.5, 192, 151451, 191),  # -1 + 2*191/255 = 0.498 <= 0.5 < 0.506
    (1.0 - 1e-9, 255, 151388, 254),
    (1.0, 256, 151387, 254),  # the only value written as 151387
    (3.0, 256, 151387, 254),
])
def test_encoder_on_hand_picked_values(normalized, digitized, token_id, bin_):
    assert int(A.normalized_to_digitized(normalized)) == digitized
    assert int(A.normalized_to_token_ids(normalized)) == token_id
    assert int(A.normalized_to_bins(normalized)) == bin_


@pytest.mark.parametrize('token_id, bin_', [
    (151642, 0), (151641, 1), (151515, 127), (151388, 254), (151387, 254),
    (151643, 0),  # the release's id for an unknown token string
    (0, 254), (200000, 0),
])
def test_parser_id_to_bin_clips_like_the_release(token_id, bin_):
    assert int(A.token_id_to_bin(token_id)) == bin_


def test_strict_id_to_bin_rejects_ids_outside_the_encoder_range():
    assert A.token_id_to_bin([151387, 151642], strict=True).tolist() == [254, 0]
    for bad in (151386, 151643):
        with pytest.raises(ValueError, match='151387..151642'):
            A.token_id_to_bin([151500, bad], strict=True)


def test_bin_and_token_round_trips_are_exact_for_every_bin():
    bins = np.arange(255)
    assert (A.normalized_to_bins(A.bins_to_normalized(bins)) == bins).all()
    assert (A.token_id_to_bin(A.bin_to_token_id(bins), strict=True) == bins).all()
    assert A.bin_to_token_id(bins).tolist() == list(range(151642, 151387, -1))
    assert np.allclose(A.token_ids_to_normalized(A.bin_to_token_id(bins)), A.BIN_CENTERS)
    ids = np.arange(151387, 151643)
    assert (A.normalized_to_token_ids(A.token_ids_to_normalized(ids))[1:] == ids[1:]).all()
    assert int(A.normalized_to_token_ids(A.token_ids_to_normalized(151387))) == 151388  # lossy one


def test_bin_inputs_are_checked():
    for bad in (-1, 255):
        with pytest.raises(ValueError):
            A.bins_to_normalized([bad])
        with pytest.raises(ValueError):
            A.bin_to_token_id([bad])
    with pytest.raises(TypeError):
        A.bins_to_normalized([0.5])
    with pytest.raises(TypeError):
        A.token_id_to_bin([True])
    with pytest.raises(ValueError):
        A.normalized_to_bins([0.0, math.nan])


finite = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(finite)
def test_quantisation_error_is_at_most_half_a_bin(x):
    back = float(A.bins_to_normalized(A.normalized_to_bins(x)))
    assert abs(back - min(max(x, -1.0), 1.0)) <= 1 / 255 + 1e-12
    assert int(A.normalized_to_bins(x)) == int(A.token_id_to_bin(A.normalized_to_token_ids(x)))


@settings(max_examples=200, deadline=None)
@given(finite, finite)
def test_encoding_is_monotone(x, y):
    lo, hi = min(x, y), max(x, y)
    assert A.normalized_to_bins(lo) <= A.normalized_to_bins(hi)
    assert A.normalized_to_token_ids(lo) >= A.normalized_to_token_ids(hi)  # ids count down


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 254), st.integers(0, 254))
def test_decoding_is_monotone(b, c):
    lo, hi = min(b, c), max(b, c)
    assert A.bins_to_normalized(lo) <= A.bins_to_normalized(hi)
    assert A.bin_to_token_id(lo) >= A.bin_to_token_id(hi)


# --- Unnormalisation -------------------------------------------------------------------------------

def test_bridge_orig_hand_computed():
    stats = table().select('bridge_orig')
    step = A.ActionStepValues.from_bins([254, 0, 127, 254, 0, 127, 254], stats)
    expected = [
        0.03 - 0.06 / 510,  # q99 - range/510
        -0.04 + 0.08 / 510,  # q01 + range/510
        0.007,  # midpoint of [-0.026, 0.04]
        0.08 - 0.16 / 510,
        -0.09 + 0.168 / 510,
        0.0,  # midpoint of [-0.2, 0.2]
        TOP,  # gripper: raw bin centre
    ]
    assert step.values == pytest.approx(expected, abs=1e-12)
    assert step.translation_m == pytest.approx(expected[:3], abs=1e-12)
    assert step.rotation_rad == pytest.approx(expected[3:6], abs=1e-12)
    assert step.gripper == pytest.approx(0.996078, abs=1e-6)
    assert step.normalized == pytest.approx([TOP, BOTTOM, 0.0, TOP, BOTTOM, 0.0, TOP], abs=1e-15)
    assert step.bins == (254, 0, 127, 254, 0, 127, 254)
    assert step.rotation_convention is A.RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW


def test_fractal_hand_computed_from_token_ids():
    stats = table().select('fractal20220817_data')
    # ids 151515 -> bin 127 (midpoint), 151451 -> bin 191 (centre 128/255), 151642 -> bin 0
    step = A.ActionStepValues.from_token_ids(
        [151515, 151515, 151451, 151515, 151642, 151515, 151642], stats)
    expected = [
        -0.02,  # midpoint of [-0.22, 0.18]
        0.0,
        -0.23 + 0.45 * (383 / 510),  # centre 128/255 -> fraction (1 + 128/255)/2 = 383/510
        0.12,
        -0.42 + 0.77 / 510,
        0.005,
        BOTTOM,  # gripper bin 0, raw
    ]
    assert step.values == pytest.approx(expected, abs=1e-12)


def test_libero_chunk_hand_computed():
    stats = table().select('libero_spatial_no_noops_modified')
    rows = [[127] * 7, [254] * 7]
    chunk = A.ActionChunkValues.from_bins(rows, stats)
    assert len(chunk) == 2
    assert chunk.values[0] == pytest.approx([0.09, 0.03, 0.0, 0.025, 0.01, 0.05, 0.0], abs=1e-12)
    q01 = LIBERO_SPATIAL['action']['q01']
    q99 = LIBERO_SPATIAL['action']['q99']
    assert chunk.values[1][:6] == pytest.approx([hi - (hi - lo) / 510 for lo, hi in zip(q01, q99)][:6],
                                                abs=1e-12)
    assert chunk.gripper == pytest.approx((0.0, TOP), abs=1e-15)
    assert chunk.values_array().shape == (2, 7)
    assert chunk.bins == ((127,) * 7, (254,) * 7)
    assert len(chunk.translation_m) == len(chunk.rotation_rad) == len(chunk.normalized) == 2


def test_molmoact_stats_without_mask_still_leave_the_gripper_raw():
    stats = table().select('molmoact')
    assert stats.mask == (True,) * 7  # the file default
    assert A.effective_mask(stats).tolist() == [True] * 6 + [False]
    step = A.ActionStepValues.from_bins([127] * 6 + [254], stats)
    assert step.values == pytest.approx([0.0, 0.0, 0.0005, 0.0, 0.0005, 0.0005, TOP], abs=1e-12)
    # Opting out of the release's forced mask unnormalizes the gripper too: 0 + 1 * 509/510.
    opted_out = A.ActionStepValues.from_bins([127] * 6 + [254], stats, gripper_raw_as_released=False)
    assert opted_out.gripper == pytest.approx(509 / 510, abs=1e-12)


def test_unmasked_and_zero_range_dimensions():
    stats = A.NormStats(q01=[-1.0, 0.5, 2.0], q99=[1.0, 0.5, 4.0], mask=[False, True, True])
    n = np.array([[TOP, TOP, TOP], [BOTTOM, BOTTOM, BOTTOM]])
    out = A.unnormalize_bounds_q99(n, stats)
    assert out[:, 0] == pytest.approx([TOP, BOTTOM])  # mask false: kept
    assert out[:, 1] == pytest.approx([0.5, 0.5])  # zero range: q01
    assert out[:, 2] == pytest.approx([TOP, BOTTOM])  # last dim: raw, as released
    out = A.unnormalize_bounds_q99(n, stats, gripper_raw_as_released=False)
    assert out[:, 2] == pytest.approx([4.0 - 2.0 / 510, 2.0 + 2.0 / 510])
    with pytest.raises(ValueError, match='3 values'):
        A.unnormalize_bounds_q99([0.0, 0.0], stats)


def test_normalization_hand_computed():
    stats = table().select('bridge_orig')
    a = [0.0, 0.04, 1.0, -0.08, -5.0, 0.1, 1.0]
    n = A.normalize_bounds_q99(a, stats)
    assert n[:6] == pytest.approx([0.0, 1.0, 1.0, -1.0, -1.0, 0.5], abs=1e-6)
    assert n[6] == 1.0  # gripper kept
    assert A.normalize_bounds_q99(a, stats, invert_gripper=True)[6] == 0.0  # 1 - a (fine-tune recipe)
    zero = A.NormStats(q01=[0.3, 0.0], q99=[0.3, 1.0], mask=[True, False])
    assert A.normalize_bounds_q99([7.0, 0.25], zero).tolist() == [0.0, 0.25]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 254), min_size=7, max_size=7))
def test_normalize_inverts_unnormalize_on_bin_centres(bins):
    for key in NORM_STATS:
        stats = table().select(key)
        n = A.bins_to_normalized(bins)
        back = A.normalize_bounds_q99(A.unnormalize_bounds_q99(n, stats), stats)
        assert back == pytest.approx(n, abs=1e-5)
        assert (A.normalized_to_bins(back) == np.asarray(bins)).all()


def test_action_step_requires_the_7d_layout():
    stats = A.NormStats(q01=[0.0] * 6, q99=[1.0] * 6, mask=[True] * 6)
    with pytest.raises(ValueError, match='7-D'):
        A.ActionStepValues.from_bins([0] * 6, stats)
    with pytest.raises(ValueError, match='7-D'):
        A.ActionStepValues.from_bins([0] * 8, table().select('bridge_orig'))
    with pytest.raises(ValueError):
        A.ActionChunkValues(())


# --- Loading and selecting -------------------------------------------------------------------------

def test_dataset_statistics_json_round_trip(tmp_path):
    path = tmp_path / 'dataset_statistics.json'
    path.write_text(json.dumps(NORM_STATS))
    loaded = A.NormStatsTable.from_json_file(path)
    assert loaded.keys == tuple(NORM_STATS)
    bridge = loaded.select('bridge_orig')
    assert bridge.q01 == tuple(BRIDGE_ORIG['action']['q01'])
    assert bridge.mean == tuple(BRIDGE_ORIG['action']['mean'])
    assert bridge.key == 'bridge_orig' and bridge.dim == 7

    out = tmp_path / 'written.json'
    A.dump_dataset_statistics({k: loaded.select(k) for k in loaded.keys}, out)
    again = A.NormStatsTable.from_json_file(out)
    for key in NORM_STATS:
        assert again.select(key) == loaded.select(key)
    assert json.loads(out.read_text())['molmoact']['action']['mask'] == [True] * 7


def test_other_sources(tmp_path):
    config = {'model_type': 'molmoact', 'norm_stats': {'molmoact': MOLMOACT}}
    assert A.NormStatsTable.from_checkpoint_config(config).select().key == 'molmoact'
    path = tmp_path / 'config.json'
    path.write_text(json.dumps(config))
    assert A.NormStatsTable.from_json_file(path).select('molmoact').dim == 7

    class Config:
        norm_stats = {'bridge_orig': BRIDGE_ORIG}
    assert A.NormStatsTable.from_checkpoint_config(Config()).select().key == 'bridge_orig'

    bare = tmp_path / 'my_robot.json'
    bare.write_text(json.dumps(FRACTAL))
    assert A.NormStatsTable.from_json_file(bare).select().key == A.BARE_ENTRY_KEY


def test_select_errors():
    t = table()
    with pytest.raises(A.UnknownNormStatsKeyError, match="'bridge'.*bridge_orig.*molmoact"):
        t.select('bridge')
    with pytest.raises(A.AmbiguousNormStatsKeyError, match='4 dataset keys.*fractal20220817_data'):
        t.select()
    with pytest.raises(A.NormStatsError, match='no norm_stats'):
        A.NormStatsTable.from_checkpoint_config({'model_type': 'molmoact'})
    with pytest.raises(A.NormStatsError, match='no norm stats'):
        A.NormStatsTable.from_norm_stats({})
    assert issubclass(A.UnknownNormStatsKeyError, ValueError)


@pytest.mark.parametrize('action, message', [
    ({'q01': [0.0, 0.0], 'q99': [1.0]}, 'lengths differ'),
    ({'q01': [0.0, 0.0], 'q99': [1.0, 1.0], 'mask': [True]}, 'lengths differ'),
    ({'q01': [0.0, 0.0], 'q99': [1.0, 1.0], 'std': [1.0]}, 'lengths differ'),
    ({'q01': [0.0, 2.0], 'q99': [1.0, 1.0]}, r'q99 < q01 in dimensions \[1\]'),
    ({'q01': [0.0, math.nan], 'q99': [1.0, 1.0]}, 'non-finite'),
    ({'q01': [0.0, 0.0], 'q99': [1.0, math.inf]}, 'non-finite'),
    ({'q01': [0.0, 0.0]}, 'lacks'),
    ({'q01': [], 'q99': []}, 'empty'),
    ({'q01': [0.0, 'x'], 'q99': [1.0, 1.0]}, 'list of numbers'),
    ({'q01': [0.0, 0.0], 'q99': [1.0, 1.0], 'mask': [True, 'no']}, 'booleans'),
])
def test_malformed_stats(action, message):
    t = A.NormStatsTable.from_norm_stats({'good': FRACTAL, 'robot': {'action': action}})
    t.select('good')  # the other entry still loads
    with pytest.raises(A.MalformedNormStatsError, match=message) as info:
        t.select('robot')
    assert "'robot'" in str(info.value)


def test_entry_without_action_and_bad_json(tmp_path):
    t = A.NormStatsTable.from_norm_stats({'robot': {'proprio': {}}, 'other': FRACTAL})
    with pytest.raises(A.MalformedNormStatsError, match='no "action"'):
        t.select('robot')
    path = tmp_path / 'broken.json'
    path.write_text('{"robot": ')
    with pytest.raises(A.NormStatsError, match='not valid JSON'):
        A.NormStatsTable.from_json_file(path)
