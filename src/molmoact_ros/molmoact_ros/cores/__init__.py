"""ROS-free cores of the nodes: each node's decisions (intake, admission, ...) as plain classes that are
handed the time and messages as plain values and return what to do. The nodes in ``nodes/`` only wire
subscriptions, convert messages and map parameters to a core's config."""
