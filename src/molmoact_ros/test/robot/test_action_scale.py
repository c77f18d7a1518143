"""Action units (execution.ActionScale): LIBERO's OSC_POSE inputs become metres and radians before the deltas
are integrated; the default is the identity; the robot profile's optional ``action_scale`` key is validated."""

import copy
import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat

from molmoact_ros.reasoning.action_space import RotationConvention
from molmoact_ros.robot.execution import ActionScale, DeltaFrame, InvalidChunkError, build_timeline
from molmoact_ros.robot.profiles import ProfileError, load_profile, profile_from_mapping, profiles_dir

ROTVEC = RotationConvention.ROTATION_VECTOR
EULER = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW
T_OBS = np.eye(4)
T_OBS[:3, :3] = euler2mat(math.pi, 0.1, 0.2, 'sxyz')
T_OBS[:3, 3] = [0.45, 0.0, 0.25]
LIBERO = ActionScale(translation_m_per_unit=0.05, rotation_rad_per_unit=0.5, clip_units=1.0)


def build(dp, dr, scale=None, conv=ROTVEC, frame=DeltaFrame.BASE):
    dp = np.asarray(dp, float)
    return build_timeline(dp, dr, np.zeros(len(dp)), observation_pose=T_OBS, observation_stamp_s=1.0,
                          step_period_s=0.05, delta_frame=frame, rotation_convention=conv, action_scale=scale)


def test_one_osc_unit_is_5_cm_and_half_a_radian():
    # One step of +1 unit along base x and +1 unit of rotation about base z (robosuite: R_goal = dR R).
    tl = build([[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], LIBERO)
    np.testing.assert_allclose(tl.poses[0, :3, 3], T_OBS[:3, 3] + [0.05, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(tl.poses[0, :3, :3], axangle2mat([0, 0, 1], 0.5) @ T_OBS[:3, :3], atol=1e-12)


def test_inputs_beyond_the_clip_are_clipped_per_component():
    tl = build([[3.0, -2.0, 0.5]], [[0.0, -4.0, 0.0]], LIBERO)
    np.testing.assert_allclose(tl.poses[0, :3, 3] - T_OBS[:3, 3], [0.05, -0.05, 0.025], atol=1e-12)
    np.testing.assert_allclose(tl.poses[0, :3, :3], axangle2mat([0, 1, 0], -0.5) @ T_OBS[:3, :3], atol=1e-12)
    # without clip_units nothing is clipped
    free = build([[3.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], ActionScale(0.05, 0.5))
    assert free.poses[0, 0, 3] - T_OBS[0, 3] == pytest.approx(0.15)


def test_the_default_and_none_are_the_identity():
    dp = [[0.01, -0.02, 0.03], [0.0, 0.01, 0.0]]
    dr = [[0.1, 0.0, -0.05], [0.0, 0.02, 0.0]]
    plain = build(dp, dr, None, conv=EULER)
    for scale in (ActionScale(), ActionScale(1.0, 1.0)):
        assert scale.is_identity
        np.testing.assert_array_equal(build(dp, dr, scale, conv=EULER).poses, plain.poses)
    assert not LIBERO.is_identity and not ActionScale(1.0, 1.0, clip_units=1.0).is_identity


@pytest.mark.parametrize('kwargs', [dict(translation_m_per_unit=0.0), dict(rotation_rad_per_unit=-1.0),
                                    dict(translation_m_per_unit=math.inf), dict(clip_units=0.0),
                                    dict(rotation_rad_per_unit=True), dict(translation_m_per_unit='1')])
def test_bad_scales_are_refused(kwargs):
    with pytest.raises(ValueError):
        ActionScale(**kwargs)


def test_a_scale_that_overflows_is_an_invalid_chunk():
    with pytest.raises(InvalidChunkError):
        build([[1e300, 0.0, 0.0]], [[0.0, 0.0, 0.0]], ActionScale(1e10, 1.0))


finite = st.floats(-1.5, 1.5, allow_nan=False, allow_infinity=False)
vec = st.lists(finite, min_size=3, max_size=3)


def _angle(R):
    """Rotation angle of R, accurate for tiny angles too (atan2 of the skew and symmetric parts)."""
    skew = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return math.atan2(np.linalg.norm(skew) / 2.0, (np.trace(R) - 1.0) / 2.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(vec, vec), min_size=1, max_size=8),
       st.floats(0.001, 0.2), st.floats(0.01, 1.0), st.sampled_from([DeltaFrame.BASE, DeltaFrame.TOOL]))
def test_scaling_equals_scaling_the_deltas_first(steps, m_per_unit, rad_per_unit, frame):
    """A scaled chunk is exactly the unscaled chunk of the clipped, multiplied deltas; each step moves
    by at most clip * m_per_unit per axis and turns by the scaled rotation vector's angle."""
    dp = np.array([s[0] for s in steps])
    dr = np.array([s[1] for s in steps])
    scale = ActionScale(m_per_unit, rad_per_unit, clip_units=1.0)
    scaled = build(dp, dr, scale, frame=frame)
    manual = build(np.clip(dp, -1, 1) * m_per_unit, np.clip(dr, -1, 1) * rad_per_unit, None, frame=frame)
    np.testing.assert_allclose(scaled.poses, manual.poses, atol=1e-12)
    prev = T_OBS
    for i, T in enumerate(scaled.poses):
        step = T[:3, 3] - prev[:3, 3]
        if frame is DeltaFrame.BASE:
            assert np.all(np.abs(step) <= m_per_unit + 1e-12)
            angle = _angle(T[:3, :3] @ prev[:3, :3].T)
        else:
            assert np.linalg.norm(step) <= math.sqrt(3) * m_per_unit + 1e-12
            angle = _angle(prev[:3, :3].T @ T[:3, :3])
        expected = np.linalg.norm(np.clip(dr[i], -1, 1) * rad_per_unit)
        assert math.isclose(abs(angle), expected, abs_tol=1e-7) or math.isclose(
            abs(angle), 2 * math.pi - expected, abs_tol=1e-7)
        prev = T


# ---------------------------------------------------------------- the profile key

def _sim_panda():
    return yaml.safe_load((profiles_dir() / 'sim_panda.yaml').read_text())


def test_profiles_default_to_the_identity_and_libero_panda_has_osc_units():
    for name in ('sim_panda', 'fr3_droid', 'ur5e', 'widowx250_bridge'):
        assert load_profile(name).action_scale == ActionScale()
    libero = load_profile('libero_panda')
    assert libero.action_scale == LIBERO
    assert libero.rotation_convention is ROTVEC and libero.delta_frame is DeltaFrame.BASE
    assert libero.step_period_s == pytest.approx(0.05)  # LIBERO's 20 Hz control
    assert libero.norm_stats_key == 'libero_spatial_no_noops_modified'
    # the evaluator's gripper reading: raw > 0.5 opens (robosuite -1), else closes
    assert libero.gripper(0.996) == 0.04 and libero.gripper(0.004) == 0.0
    sim = load_profile('sim_panda')
    assert (libero.joint_names, libero.frames, libero.sink) == (sim.joint_names, sim.frames, sim.sink)
    # the pose the libero scene settles in (TCP in panda_link0) lies inside the workspace
    assert libero.safety.in_workspace([0.449, -0.011, 0.262])


def test_action_scale_key_is_validated():
    data = _sim_panda()
    data['action_scale'] = {'translation_m_per_unit': 0.05, 'rotation_rad_per_unit': 0.5}
    assert profile_from_mapping(data).action_scale == ActionScale(0.05, 0.5)
    for bad, message in ((0.05, 'expected a mapping'),
                         ({'translation_m_per_unit': 0.05}, 'missing keys'),
                         ({'translation_m_per_unit': 0.05, 'rotation_rad_per_unit': 0.5, 'scale': 1}, 'unknown keys'),
                         ({'translation_m_per_unit': 0.0, 'rotation_rad_per_unit': 0.5}, 'must be positive'),
                         ({'translation_m_per_unit': 0.05, 'rotation_rad_per_unit': 0.5, 'clip_units': -1},
                          'action_scale.clip_units'),
                         ({'translation_m_per_unit': 'x', 'rotation_rad_per_unit': 0.5}, 'finite number')):
        broken = copy.deepcopy(data)
        broken['action_scale'] = bad
        with pytest.raises(ProfileError, match=message):
            profile_from_mapping(broken, source='t.yaml')
