"""The shipped Panda URDF has the kinematics of robosuite 1.5.2's Panda MJCF (the simulated arm) in MuJoCo.

Joint frames panda_link1..7 must coincide with MuJoCo's link1..7 bodies, and ``panda_hand`` with
robosuite's ``right_hand`` body (both the flange turned -45 deg about z), for random joint configurations,
within 1 mm and 1 mrad (the MJCF writes its quaternions with 6 digits).

Known differences, both documented for the simulated arm: robosuite puts ``right_hand`` 0.1065 m above
link7 where Franka's flange is at 0.107 m (0.5 mm), and robosuite's gripper ``eef`` site sits 0.097 m
along the hand's z (turned -90 deg about z) where Franka's TCP (``panda_hand_tcp``) is at 0.1034 m; the
simulated arm reports poses of the URDF's frames, computed from its joint positions.
"""

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from robot_test_data import PANDA_READY


def _robosuite_panda_xml() -> Path:
    spec = importlib.util.find_spec('robosuite')  # the asset only: importing robosuite itself is slow
    assert spec is not None, 'robosuite is not installed (scripts/setup.sh installs it)'
    path = Path(spec.origin).parent / 'models' / 'assets' / 'robots' / 'panda' / 'robot.xml'
    assert path.is_file(), path
    return path


def _body_pose(model, data, name):
    body = model.body(name).id
    T = np.eye(4)
    T[:3, :3] = data.xmat[body].reshape(3, 3)
    T[:3, 3] = data.xpos[body]
    return T


def test_urdf_matches_robosuite_panda_in_mujoco(panda_kin):
    model = mujoco.MjModel.from_xml_path(str(_robosuite_panda_xml()))
    data = mujoco.MjData(model)
    qpos_index = [model.joint(f'joint{i}').qposadr[0] for i in range(1, 8)]
    # MuJoCo's joint ranges are Franka's too.
    ranges = np.array([model.joint(f'joint{i}').range for i in range(1, 8)])
    np.testing.assert_allclose(ranges[:, 0], panda_kin.limits.position_min, atol=1e-4)
    np.testing.assert_allclose(ranges[:, 1], panda_kin.limits.position_max, atol=1e-4)
    rng = np.random.default_rng(0)
    configurations = [PANDA_READY, np.zeros(7).clip(panda_kin.limits.position_min, panda_kin.limits.position_max)]
    configurations += list(rng.uniform(panda_kin.limits.position_min, panda_kin.limits.position_max, (50, 7)))
    worst = 0.0
    for q in configurations:
        data.qpos[:] = 0
        data.qpos[qpos_index] = q
        mujoco.mj_kinematics(model, data)
        T_link0 = np.linalg.inv(_body_pose(model, data, 'link0'))
        pairs = [(f'panda_link{i}', f'link{i}') for i in range(1, 8)] + [('panda_hand', 'right_hand')]
        for urdf_frame, body in pairs:
            ours = panda_kin.fk(q, frame=urdf_frame)
            theirs = T_link0 @ _body_pose(model, data, body)
            position = np.linalg.norm(ours[:3, 3] - theirs[:3, 3])
            rotation = np.arccos(np.clip((np.trace(ours[:3, :3].T @ theirs[:3, :3]) - 1) / 2, -1, 1))
            assert position < 1e-3 and rotation < 1e-3, (urdf_frame, q, position, rotation)
            if body != 'right_hand':
                worst = max(worst, position, rotation)
    assert worst < 1e-5  # the arm's joint frames agree far better than the tolerance
