"""Robot geometry, kinematics and safety (ROS-free): projection, back-projection, frames."""
