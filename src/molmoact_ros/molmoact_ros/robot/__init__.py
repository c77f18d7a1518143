"""The robot side (ROS-free): camera geometry, arm kinematics, safety, chunk execution, robot profiles.

- ``geometry``: camera intrinsics, pixel affines, back-projection (lifting traces to 3D).
- ``kinematics``: FK / damped-least-squares IK on a URDF string with Pinocchio; joint limits.
- ``safety``: ``SafetyLimits`` and the ``SafetyGovernor`` state machine (enable, e-stop, staleness,
  clamps, halt causes, counters).
- ``execution``: chunk -> timeline of absolute end-effector targets, ``ExecutionQueue``, gripper mapping.
- ``executor``: ``ArmExecutor``, the core of a command sink (queue + governor + IK -> commands).
- ``profiles``: ``RobotProfile`` loaded and validated from ``config/robots/<name>.yaml``.

``kinematics`` imports Pinocchio; the other modules need only NumPy, transforms3d and PyYAML.
"""
