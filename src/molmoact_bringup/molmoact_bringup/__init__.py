"""molmoact_bringup: launch files and configuration of the MolmoAct pipeline, and the simulated arm
(:mod:`molmoact_bringup.sim`, ROS-free core; :mod:`molmoact_bringup.sim_arm_node`, its ROS node)."""
