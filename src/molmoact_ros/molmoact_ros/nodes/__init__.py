"""Lifecycle node shells of the pipeline. Each only adapts ROS I/O to the ROS-free core."""
