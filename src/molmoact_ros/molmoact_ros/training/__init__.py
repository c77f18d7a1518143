"""Demonstrations -> MolmoAct training data (ROS-free; the MCAP reader decodes CDR with ``mcap_ros2``).

:mod:`.build` is the ``build_dataset`` command; :mod:`.recording` reads episodes, :mod:`.episode` lays them
on the robot profile's step period, :mod:`.labels` makes the trace, action and answer labels,
:mod:`.depth_tokenizer` the depth codes, :mod:`.lerobot_format` writes LeRobot's v3 layout.
"""
