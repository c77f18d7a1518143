"""ROS-free cores of the nodes: each node's decisions as plain classes handed the time and plain values."""
