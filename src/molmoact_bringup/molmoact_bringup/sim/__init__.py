"""The simulated arm's ROS-free core: Franka facts (:mod:`.franka`), a joint trajectory follower with
joint_trajectory_controller semantics (:mod:`.trajectory`, NumPy only) and the MuJoCo / robosuite
Panda scene (:mod:`.panda_sim`, imported on demand: it loads MuJoCo and an OpenGL backend)."""
