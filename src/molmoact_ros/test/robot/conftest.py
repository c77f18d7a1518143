"""Shared fixtures of the robot tests: the Panda URDF shipped in molmoact_bringup and its kinematics."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from robot_test_data import PANDA_JOINTS, PANDA_URDF  # noqa: E402


@pytest.fixture(scope='session')
def panda_urdf() -> str:
    return PANDA_URDF.read_text(encoding='utf-8')


@pytest.fixture(scope='session')
def panda_kin(panda_urdf):
    from molmoact_ros.robot.kinematics import ArmKinematics
    return ArmKinematics.from_urdf(panda_urdf, base_frame='panda_link0', ee_frame='panda_hand_tcp',
                                   joint_names=PANDA_JOINTS)
