"""Constants shared by the robot tests (imported by name; the robot conftest puts this folder on sys.path)."""

from pathlib import Path

import numpy as np

PANDA_URDF = Path(__file__).resolve().parents[3] / 'molmoact_bringup' / 'urdf' / 'panda.urdf'
PANDA_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
#: Franka's "ready" configuration (rad).
PANDA_READY = np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398])
