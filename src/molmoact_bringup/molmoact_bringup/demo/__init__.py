"""The offline demo (``scripts/demo.sh``, ``ros2 run molmoact_bringup demo``): the simulated arm, the MolmoAct
pipeline and a command sink, recorded to MCAP with a GIF, a PNG and a summary.

ROS-free parts: :mod:`.msgdefs` (ros2msg schema text for MCAP), :mod:`.outputs` (GIF / PNG, URDF joint
limits, the summary's checks). The ROS orchestration is :mod:`.run`.
"""
