"""The scripted lift expert (eval/expert.py) on an ideal kinematic arm: it lifts the cube from any seeded
placement and yaw, its steps stay within its limits, and it starts over when the cube slips."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transforms3d.euler import euler2mat

from molmoact_bringup.eval.expert import (Detour, DetourConfig, DetouringExpert, ExpertObservation, LiftExpert,
                                          LiftExpertConfig, Phase, sample_detour, takeover_queries,
                                          top_down_rotation, wrap_quarter_turn)

CUBE_HALF_M = 0.021


def pose(p, R=None):
    T = np.eye(4)
    T[:3, 3] = p
    T[:3, :3] = np.eye(3) if R is None else R
    return T


class KinematicArm:
    """An arm that reaches every commanded step exactly; the cube follows the TCP once the gripper closed
    within 1 cm of the cube's centre, and falls back to the table when it opens."""

    def __init__(self, ee, cube):
        self.ee, self.cube = ee.copy(), cube.copy()
        self.rest_z = cube[2, 3]
        self.held = False

    def run(self, chunk, steps):
        for i in range(steps):
            dR = euler2mat(*chunk.rotation_rad[i], 'sxyz')
            self.ee[:3, 3] += chunk.translation_m[i]
            self.ee[:3, :3] = dR @ self.ee[:3, :3]
            closed = chunk.gripper[i] <= 0.5
            if closed and not self.held and np.linalg.norm(self.ee[:3, 3] - self.cube[:3, 3]) < 0.01:
                self.held = True
                self.offset = self.cube[:3, 3] - self.ee[:3, 3]
            if not closed and self.held:
                self.held = False
                self.cube[2, 3] = self.rest_z
            if self.held:
                self.cube[:3, 3] = self.ee[:3, 3] + self.offset


def episode(cube_xy, cube_yaw, config=LiftExpertConfig(), max_chunks=80, replan_steps=4):
    ee = pose([0.45, 0.0, 0.1], top_down_rotation(0.3))
    cube = pose([cube_xy[0], cube_xy[1], -0.09], euler2mat(0, 0, cube_yaw, 'sxyz'))
    arm, expert = KinematicArm(ee, cube), LiftExpert(config)
    now = 0.0
    for _ in range(max_chunks):
        chunk = expert.act(ExpertObservation(arm.ee, arm.cube), now)
        assert np.all(np.linalg.norm(chunk.translation_m, axis=1) <= config.max_step_m + 1e-9)
        angles = [math.acos(np.clip((np.trace(euler2mat(*r, 'sxyz')) - 1) / 2, -1, 1)) for r in chunk.rotation_rad]
        assert max(angles) <= config.max_step_rad + 1e-6
        arm.run(chunk, replan_steps)
        now += replan_steps * config.step_period_s
        if arm.cube[2, 3] - arm.rest_z >= 0.04 + 0.01:
            return True, arm, expert
    return False, arm, expert


@settings(max_examples=60, deadline=None)
@given(x=st.floats(0.35, 0.65), y=st.floats(-0.2, 0.2), yaw=st.floats(-math.pi, math.pi))
def test_expert_lifts_the_cube_from_any_placement(x, y, yaw):
    ok, arm, expert = episode((x, y), yaw)
    assert ok, (expert.phase, arm.ee[:3, 3], arm.cube[:3, 3])
    assert expert.phase is Phase.LIFT
    # Fingers across a pair of faces: the finger axis is the cube's yaw modulo 90 deg.
    finger = math.atan2(arm.ee[1, 1], arm.ee[0, 1])
    assert abs(wrap_quarter_turn(finger - yaw)) < 0.07
    # The tool still points down.
    assert arm.ee[2, 2] < -0.99


@settings(max_examples=30, deadline=None)
@given(x=st.floats(0.35, 0.65), y=st.floats(-0.2, 0.2), yaw=st.floats(-math.pi, math.pi))
def test_without_yaw_alignment_the_tool_never_turns(x, y, yaw):
    ok, arm, expert = episode((x, y), yaw, config=LiftExpertConfig(align_yaw=False))
    assert ok, (expert.phase, arm.ee[:3, 3], arm.cube[:3, 3])
    # Translation only: no chunk turns the tool, whatever the pose it starts from.
    tilted = pose([0.45, 0.0, 0.1], euler2mat(0.0, 0.12, 0.3, 'sxyz') @ top_down_rotation(0.0))
    chunk = LiftExpert(LiftExpertConfig(align_yaw=False)).act(ExpertObservation(tilted, arm.cube), 0.0)
    assert np.all(chunk.rotation_rad == 0.0) and np.any(chunk.translation_m != 0.0)
    # The finger axis is the start's (0.3 rad), whatever the cube's yaw; the tool still points down.
    assert math.atan2(arm.ee[1, 1], arm.ee[0, 1]) == pytest.approx(0.3, abs=1e-9)
    assert arm.ee[2, 2] < -0.99


def test_phases_in_order_and_grasp_waits_for_the_fingers():
    config = LiftExpertConfig()
    ee = pose([0.5, 0.0, -0.09 + 0.08], top_down_rotation(0.0))
    cube = pose([0.5, 0.0, -0.09])
    expert = LiftExpert(config)
    assert expert.act(ExpertObservation(ee, cube), 0.0).phase is Phase.DESCEND
    chunk = expert.act(ExpertObservation(pose([0.5, 0.0, -0.09], top_down_rotation(0.0)), cube), 1.0)
    assert chunk.phase is Phase.GRASP and np.all(chunk.gripper == 0.0)
    assert np.allclose(chunk.translation_m, 0.0)
    at_cube = ExpertObservation(pose([0.5, 0.0, -0.09], top_down_rotation(0.0)), cube)
    assert expert.act(at_cube, 1.0 + config.close_s - 0.01).phase is Phase.GRASP
    lift = expert.act(at_cube, 1.0 + config.close_s)
    assert lift.phase is Phase.LIFT and lift.translation_m[:, 2].sum() > 0 and np.all(lift.gripper == 0.0)


def test_a_slipped_cube_starts_over_open():
    expert = LiftExpert()
    expert.phase = Phase.LIFT
    expert._grasp_z = -0.09
    chunk = expert.act(ExpertObservation(pose([0.5, 0.0, 0.0], top_down_rotation(0.0)), pose([0.6, 0.1, -0.09])), 5.0)
    assert chunk.phase is Phase.APPROACH and np.all(chunk.gripper == 1.0)


def test_reset_forgets_the_episode():
    expert = LiftExpert()
    expert.phase = Phase.LIFT
    expert.reset()
    assert expert.phase is Phase.APPROACH


@pytest.mark.parametrize('bad', [np.eye(3), np.full((4, 4), np.nan)])
def test_bad_poses_are_refused(bad):
    with pytest.raises(ValueError):
        LiftExpert().act(ExpertObservation(bad, np.eye(4)), 0.0)


def test_wrap_quarter_turn():
    assert wrap_quarter_turn(math.pi / 2 + 0.1) == pytest.approx(0.1)
    assert wrap_quarter_turn(-math.pi / 4 - 0.1) == pytest.approx(math.pi / 4 - 0.1)
    assert -math.pi / 4 <= wrap_quarter_turn(12.3) < math.pi / 4


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), probability=st.floats(0.0, 1.0))
def test_a_sampled_detour_is_within_its_config_and_reproducible(seed, probability):
    config = DetourConfig(probability=probability)
    detour = sample_detour(config, np.random.default_rng(seed))
    assert detour == sample_detour(config, np.random.default_rng(seed))
    if detour is None:
        return
    r = math.hypot(detour.offset_m[0], detour.offset_m[1])
    assert config.min_offset_m - 1e-12 <= r <= config.max_offset_m + 1e-12 and detour.offset_m[2] == 0.0
    assert 0.0 <= detour.start_s <= config.max_start_s
    assert config.min_duration_s - 1e-9 <= detour.end_s - detour.start_s <= config.max_duration_s + 1e-9
    assert detour.active(detour.start_s) and not detour.active(detour.end_s)


def test_detour_probability_zero_and_one():
    rngs = [np.random.default_rng(s) for s in range(50)]
    assert all(sample_detour(DetourConfig(probability=0.0), r) is None for r in rngs)
    assert all(sample_detour(DetourConfig(probability=1.0), np.random.default_rng(s)) is not None for s in range(50))
    share = np.mean([sample_detour(DetourConfig(probability=0.5), np.random.default_rng(s)) is not None
                     for s in range(400)])
    assert 0.4 < share < 0.6


@pytest.mark.parametrize('bad', [dict(probability=1.5), dict(min_offset_m=0.2, max_offset_m=0.1),
                                 dict(min_duration_s=0.0), dict(max_start_s=-1.0)])
def test_bad_detour_configs_are_refused(bad):
    with pytest.raises(ValueError):
        DetourConfig(**bad)


def test_during_the_detour_the_arm_goes_to_the_wrong_place_and_the_label_to_the_cube():
    config = LiftExpertConfig(align_yaw=False)
    detour = Detour((0.0, 0.08, 0.0), 0.5, 2.0)
    expert = DetouringExpert(config, detour)
    ee = pose([0.5, 0.0, 0.05], top_down_rotation(0.0))
    cube = pose([0.5, 0.0, -0.09])
    # Before the detour: one chunk, executed and label alike (down toward the cube).
    executed, label = expert.act(ExpertObservation(ee, cube), 0.0, 0.2)
    assert executed is label
    # During it: the executed chunk heads for the shifted cube (+y), the label stays over the real one.
    executed, label = expert.act(ExpertObservation(ee, cube), 0.6, 0.6)
    assert executed.translation_m[:, 1].sum() > 0.05
    assert np.allclose(label.translation_m[:, :2], 0.0) and label.translation_m[:, 2].sum() < 0
    # Beside the cube after the detour: the label rises first, then goes back to it (recovery).
    beside = pose([0.5, 0.08, -0.08], top_down_rotation(0.0))
    executed, label = expert.act(ExpertObservation(beside, cube), 2.5, 2.5)
    assert executed is label and label.phase is Phase.APPROACH and np.all(label.gripper == 1.0)
    assert label.translation_m[0, 2] > 0


def test_the_expert_recovers_from_any_detour_and_lifts():
    """Episodes on the ideal arm, each with a detour: after it ends the executed chunks are the label's, and the
    cube is lifted."""
    config = LiftExpertConfig(align_yaw=False)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        detour = sample_detour(DetourConfig(probability=1.0), rng)
        ee = pose([0.45, 0.0, 0.1], top_down_rotation(0.3))
        cube = pose([0.5 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), -0.09])
        arm, expert = KinematicArm(ee, cube), DetouringExpert(config, detour)
        lifted, detoured = False, 0
        for k in range(120):
            t = k * 4 * config.step_period_s
            executed, label = expert.act(ExpertObservation(arm.ee, arm.cube), t, t)
            detoured += executed is not label
            arm.run(executed, 4)
            if arm.cube[2, 3] - arm.rest_z >= 0.05:
                lifted = True
                break
        assert detoured > 0 and lifted, (seed, detour)


def test_takeover_queries_are_seeded_and_cover_the_range():
    got = [takeover_queries(seed, 6) for seed in range(400)]
    assert got == [takeover_queries(seed, 6) for seed in range(400)]
    assert set(got) == {1, 2, 3, 4, 5, 6}
    assert takeover_queries(7, 1) == 1
    with pytest.raises(ValueError):
        takeover_queries(7, 0)
