"""Adapters between ROS 2 (messages, parameters, lifecycle services, DDS settings) and the core."""
