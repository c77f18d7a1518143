"""molmoact_ros: MolmoAct as a ROS 2 perception -> planning -> control pipeline.

Layout (see the repository README):
  model/      the native MolmoAct model, processor and tiny builder (ROS-free)
  reasoning/  grammar, constrained decoding, action space, staged engine, steering (ROS-free)
  robot/      geometry, kinematics, safety, robot profiles (ROS-free)
  ros/        adapters between ROS messages / parameters / DDS settings and the core
  nodes/      thin lifecycle node shells
"""

__version__ = '0.1.0'
