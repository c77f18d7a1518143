"""Kinematics on the shipped Panda URDF: FK against Franka's DH table, IK round trips, limits, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from molmoact_ros.robot.kinematics import ArmKinematics, IkOptions, KinematicsError, pose_error

from robot_test_data import PANDA_JOINTS, PANDA_READY


def _dh(a, d, alpha, theta):
    """Modified (Craig) DH: RotX(alpha) TransX(a) RotZ(theta) TransZ(d)."""
    ca, sa, ct, st_ = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([[ct, -st_, 0, a],
                     [st_ * ca, ct * ca, -sa, -d * sa],
                     [st_ * sa, ct * sa, ca, d * ca],
                     [0, 0, 0, 1]])


# Franka's published table (a_{i-1}, d_i, alpha_{i-1}), then the flange.
FRANKA_DH = [(0, 0.333, 0), (0, 0, -math.pi / 2), (0, 0.316, math.pi / 2), (0.0825, 0, math.pi / 2),
             (-0.0825, 0.384, -math.pi / 2), (0, 0, math.pi / 2), (0.088, 0, math.pi / 2)]


def franka_dh_tcp(q):
    T = np.eye(4)
    for (a, d, alpha), theta in zip(FRANKA_DH, q):
        T = T @ _dh(a, d, alpha, theta)
    T = T @ _dh(0, 0.107, 0, 0)                 # flange
    T = T @ _dh(0, 0, 0, -math.pi / 4)          # hand, turned -45 deg
    return T @ _dh(0, 0.1034, 0, 0)             # TCP


def random_q(rng, kin, n):
    return rng.uniform(kin.limits.position_min, kin.limits.position_max, size=(n, kin.dof))


def test_limits_read_from_urdf(panda_kin):
    lim = panda_kin.limits
    assert lim.names == PANDA_JOINTS
    np.testing.assert_allclose(lim.position_min, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(lim.position_max, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    np.testing.assert_allclose(lim.velocity_max, [2.175] * 4 + [2.61] * 3)


def test_fk_matches_franka_dh_table(panda_kin):
    rng = np.random.default_rng(1)
    for q in random_q(rng, panda_kin, 200):
        np.testing.assert_allclose(panda_kin.fk(q), franka_dh_tcp(q), atol=1e-12)


def test_ready_pose_and_named_frames(panda_kin):
    T = panda_kin.fk(PANDA_READY)
    # The well-known ready pose: TCP 0.307 m ahead, 0.487 m up, pointing down.
    np.testing.assert_allclose(T[:3, 3], [0.3069, 0.0, 0.4869], atol=5e-4)
    np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-5)
    flange = panda_kin.fk(PANDA_READY, frame='panda_link8')
    np.testing.assert_allclose(np.linalg.norm(T[:3, 3] - flange[:3, 3]), 0.1034, atol=1e-12)
    with pytest.raises(KinematicsError, match='not in the URDF'):
        panda_kin.fk(PANDA_READY, frame='nope')


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.floats(0.01, 0.4))
def test_ik_round_trip_from_a_nearby_seed(panda_kin, seed, spread):
    rng = np.random.default_rng(seed)
    q_true = random_q(rng, panda_kin, 1)[0]
    target = panda_kin.fk(q_true)
    q_seed = panda_kin.limits.clip(q_true + rng.uniform(-spread, spread, panda_kin.dof))
    result = panda_kin.ik(target, q_seed)
    assert panda_kin.limits.contains(result.q)
    position, rotation = pose_error(panda_kin.fk(result.q), target)
    assert position == pytest.approx(result.position_error_m, abs=1e-9)
    assert rotation == pytest.approx(result.rotation_error_rad, abs=1e-6)
    if result.converged:
        assert position <= 1e-4 and rotation <= 1e-3
    else:  # a limit or a singularity blocked the way: the error still never grows from the seed
        seed_position, seed_rotation = pose_error(panda_kin.fk(q_seed), target)
        assert math.hypot(position, rotation) <= math.hypot(seed_position, seed_rotation) + 1e-12


def test_ik_converges_on_chunk_sized_steps(panda_kin):
    """Steps the size of one action (<= 3 cm, <= 0.15 rad) from a converged state: always solved."""
    rng = np.random.default_rng(7)
    solved = 0
    for _ in range(200):
        q = PANDA_READY + rng.uniform(-0.5, 0.5, 7)
        q = panda_kin.limits.clip(q)
        T = panda_kin.fk(q)
        step = np.eye(4)
        axis = rng.normal(size=3)
        from transforms3d.axangles import axangle2mat
        step[:3, :3] = axangle2mat(axis / np.linalg.norm(axis), rng.uniform(0, 0.15))
        target = T.copy()
        target[:3, :3] = step[:3, :3] @ T[:3, :3]
        target[:3, 3] += rng.uniform(-0.017, 0.017, 3)
        result = panda_kin.ik(target, q)
        solved += result.converged
        assert result.iterations <= IkOptions().max_iterations
    assert solved == 200


def test_unreachable_target_reports_failure_within_limits(panda_kin):
    target = panda_kin.fk(PANDA_READY)
    target[:3, 3] = [2.0, 0.0, 0.5]  # 2 m away: beyond the reach
    result = panda_kin.ik(target, PANDA_READY)
    assert not result.converged
    assert result.position_error_m > 0.9
    assert panda_kin.limits.contains(result.q)
    assert result.solve_time_s > 0


def test_seed_outside_limits_is_clamped(panda_kin):
    q_true = PANDA_READY.copy()
    q_true[0] = 2.85
    seed = q_true.copy()
    seed[0] = 3.1  # joint 1 stops at 2.8973
    result = panda_kin.ik(panda_kin.fk(q_true), seed)
    assert panda_kin.limits.contains(result.q)
    assert result.converged
    assert max(pose_error(panda_kin.fk(result.q), panda_kin.fk(q_true))) <= 1e-3


def test_position_only_ik(panda_kin):
    target = panda_kin.fk(PANDA_READY)
    target[:3, 3] += [0.05, 0.05, -0.05]
    target[:3, :3] = np.eye(3)  # an orientation far from the current one, ignored
    result = panda_kin.ik(target, PANDA_READY, IkOptions(rotation_weight_m_per_rad=0.0))
    assert result.converged and result.position_error_m <= 1e-4
    assert result.rotation_error_rad > 1.0


def test_joint_vector_reorders_a_joint_state(panda_kin):
    names = ['panda_finger_joint1'] + list(reversed(PANDA_JOINTS))
    positions = [0.04] + list(reversed(PANDA_READY))
    np.testing.assert_allclose(panda_kin.joint_vector(names, positions), PANDA_READY)
    with pytest.raises(KeyError, match='panda_joint7'):
        panda_kin.joint_vector(PANDA_JOINTS[:6], PANDA_READY[:6])
    with pytest.raises(ValueError, match='7 values'):
        panda_kin.fk(PANDA_READY[:6])
    with pytest.raises(ValueError, match='finite'):
        panda_kin.fk([np.nan] * 7)


def test_joint_order_and_locked_joints(panda_urdf):
    order = list(reversed(PANDA_JOINTS))
    kin = ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_leftfinger',
                                  joint_names=order, locked_positions={'panda_finger_joint1': 0.03})
    assert kin.joint_names == tuple(order)
    np.testing.assert_allclose(kin.limits.position_max[0], 2.8973)  # joint 7 first
    ref = ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_hand',
                                  joint_names=PANDA_JOINTS)
    q = PANDA_READY
    finger = kin.fk(q[::-1])
    hand = ref.fk(q)
    # The left finger sits 0.0584 m along the hand's z and 0.03 m along its y.
    np.testing.assert_allclose(np.linalg.inv(hand) @ finger[:, 3], [0, 0.03, 0.0584, 1], atol=1e-12)


def test_default_joints_are_every_movable_joint(panda_urdf):
    kin = ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_hand_tcp')
    assert kin.joint_names == PANDA_JOINTS + ('panda_finger_joint1', 'panda_finger_joint2')


def test_clear_errors(panda_urdf):
    with pytest.raises(KinematicsError, match='robot_description string'):
        ArmKinematics.from_urdf('/path/to/panda.urdf', base_frame='a', ee_frame='b')
    with pytest.raises(KinematicsError, match="frame 'tool0' is not in the URDF"):
        ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='tool0', joint_names=PANDA_JOINTS)
    with pytest.raises(KinematicsError, match="joint 'shoulder_pan_joint' is not a movable joint"):
        ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_hand',
                                joint_names=['shoulder_pan_joint'])
    with pytest.raises(KinematicsError, match='duplicates'):
        ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_hand',
                                joint_names=['panda_joint1', 'panda_joint1'])
    with pytest.raises(KinematicsError, match='moves with the controlled joints'):
        ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link3', ee_frame='panda_hand',
                                joint_names=PANDA_JOINTS)
    continuous = panda_urdf.replace('name="panda_joint7" type="revolute"', 'name="panda_joint7" type="continuous"')
    with pytest.raises(KinematicsError, match='continuous joints have no position limits'):
        ArmKinematics.from_urdf(continuous, base_frame='panda_link0', ee_frame='panda_hand',
                                joint_names=PANDA_JOINTS)
    with pytest.raises(KinematicsError, match='cannot parse the URDF'):
        ArmKinematics.from_urdf('<robot name="x"><joint name="j" type="revolute"><parent link="a"/></joint></robot>',
                                base_frame='a', ee_frame='a')


def test_ik_rejects_bad_targets(panda_kin):
    with pytest.raises(ValueError, match='4x4'):
        panda_kin.ik(np.eye(3), PANDA_READY)
    bad = np.eye(4)
    bad[0, 3] = np.inf
    with pytest.raises(ValueError, match='finite'):
        panda_kin.ik(bad, PANDA_READY)
