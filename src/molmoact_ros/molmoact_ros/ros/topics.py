"""Every topic, service and action name the suite's nodes use, and every QoS profile: one place per concept.

Names are relative (they resolve in the node's namespace, so namespaces and remapping work), except
``/diagnostics`` (absolute by convention) and the private ``~/`` names. The nodes, the launch file
(through :mod:`molmoact_ros.ros.launch_args`), the demo, the benches and the tests import them from here.

The names import no ROS, so ``launch_args`` stays loadable where rclpy is absent; the QoS profiles
(:data:`RELIABLE`, :data:`LATCHED`, :data:`SENSOR`) are built from rclpy on first use.
"""

from __future__ import annotations

from typing import Dict, Tuple

# -- camera and operator inputs of the pipeline ------------------------------------------------------
IMAGE = 'image'
CAMERA_INFO = 'camera_info'
WRIST_IMAGE = 'wrist_image'
ALIGNED_DEPTH = 'aligned_depth'
INSTRUCTION = 'instruction'            # std_msgs/String, latched
EDITED_TRACE = 'edited_trace'
CLICKED_POINT = 'clicked_point'        # RViz Publish Point (remap to /clicked_point)

# -- stage outputs --------------------------------------------------------------------------------------
PERCEPTION_TOKENS = 'perception_tokens'
DEPTH_IMAGE = 'depth_image'
TRAJECTORY_TRACE = 'trajectory_trace'
TRACE_MARKERS = 'trace_markers'
TRACE_IMAGE = 'trace_image'
ACTION_CHUNK = 'action_chunk'

# -- services and actions ---------------------------------------------------------------------------------
EDIT_TRACE = 'edit_trace'                    # molmoact_msgs/EditTrace (trace planner)
EXECUTE_INSTRUCTION = 'execute_instruction'  # molmoact_msgs/ExecuteInstruction (perception)

# -- robot side (command sink, simulated arm) -------------------------------------------------------------
JOINT_STATES = 'joint_states'
ROBOT_DESCRIPTION = 'robot_description'     # std_msgs/String, latched
E_STOP = 'e_stop'
COMMANDED_POSE = '~/commanded_pose'
ENABLE = '~/enable'
RESET_E_STOP = '~/reset_e_stop'

# -- every node ------------------------------------------------------------------------------------------------
STATUS = '~/status'                          # molmoact_msgs/NodeStatus, latched
DIAGNOSTICS = '/diagnostics'

#: What each pipeline node subscribes to and publishes (relative topics only).
NODE_TOPICS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    'perception': {'subscribes': (IMAGE, CAMERA_INFO, WRIST_IMAGE, ALIGNED_DEPTH, INSTRUCTION, TRAJECTORY_TRACE,
                                  ACTION_CHUNK),
                   'publishes': (PERCEPTION_TOKENS, DEPTH_IMAGE)},
    'trace_planner': {'subscribes': (PERCEPTION_TOKENS, EDITED_TRACE, CLICKED_POINT),
                      'publishes': (TRAJECTORY_TRACE, TRACE_MARKERS, TRACE_IMAGE)},
    'action_decoder': {'subscribes': (PERCEPTION_TOKENS, TRAJECTORY_TRACE, IMAGE),
                       'publishes': (ACTION_CHUNK,)},
}

#: The pipeline's topics -> publishing node ('' for inputs from outside the pipeline).
TOPICS: Dict[str, str] = {
    IMAGE: '', CAMERA_INFO: '', WRIST_IMAGE: '', ALIGNED_DEPTH: '', INSTRUCTION: '', EDITED_TRACE: '',
    CLICKED_POINT: '',
    **{topic: node for node, io in NODE_TOPICS.items() for topic in io['publishes']},
}

_QOS_NAMES = ('RELIABLE', 'LATCHED', 'SENSOR')


def _build_qos() -> Dict[str, object]:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    return {
        # Stage results, commands, edits: every message counts, a short queue.
        'RELIABLE': QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        # Latched (transient local, the last message): instruction, robot_description, ~/status. A late
        # subscriber still receives the current value.
        'LATCHED': QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL),
        # Camera streams and joint states: best effort, the newest wins.
        'SENSOR': qos_profile_sensor_data,
    }


def __getattr__(name: str):
    """The QoS profiles, built from rclpy on first use (the names above need no ROS)."""
    if name in _QOS_NAMES:
        profiles = _build_qos()
        globals().update(profiles)
        return profiles[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
