"""The MolmoAct pipeline: perception -> trace planner -> action decoder -> command sink, optionally with RViz.

    ros2 launch molmoact_bringup molmoact.launch.py
    ros2 launch molmoact_bringup molmoact.launch.py model:=allenai/MolmoAct-7B-D-0812 \\
        camera_image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info rviz:=true
    ros2 launch molmoact_bringup molmoact.launch.py layout:=multi_process namespace:=arm1
    ros2 launch molmoact_bringup molmoact.launch.py robot:=sim_panda execute:=true   # the sink moves the arm
    ros2 launch molmoact_bringup molmoact.launch.py sink:=none                       # dry run: ~/commanded_pose only
    ros2 launch molmoact_bringup molmoact.launch.py --show-args

layout:=single_process (default) runs the ``pipeline`` executable: three nodes in one process sharing one
engine (one copy of the weights, KV-cache handoff); it configures and activates its nodes itself.
layout:=multi_process runs one lifecycle node per process (each loads its own engine: for several GPUs
or machines); launch brings each up with ``LifecycleNode(autostart=True)`` where launch_ros has it
(Rolling, Kilted, Jazzy >= 0.26.7), else with event handlers (configure on process start, activate once
configured).

Both layouts also start the ``command_sink`` lifecycle node (its own process, no engine): it executes
the chunks on the arm of the robot profile (``robot:=``), disabled unless ``execute:=true`` (or its
``~/enable`` service is called). The robot profile's pipeline parameters (norm-stats key, step period,
delta frame) are passed to the pipeline nodes as a parameter dict.

Argument handling lives in ``molmoact_ros.ros.launch_args`` (unit-tested without launch). Only the
standard library is imported at module level, so this file loads where launch is absent.
"""

import inspect
from pathlib import Path

# Installed to share/molmoact_bringup/launch next to share/molmoact_bringup/config; in the source tree,
# launch/ sits next to config/ as well.
CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'
PARAMS_FILE = CONFIG_DIR / 'molmoact_params.yaml'
RVIZ_CONFIG = CONFIG_DIR / 'molmoact.rviz'
ROBOT_PROFILES_DIR = CONFIG_DIR / 'robots'


def supports_autostart(lifecycle_node_class) -> bool:
    """Whether ``launch_ros.actions.LifecycleNode`` takes ``autostart`` (ros2/launch_ros#430, Jazzy 0.26.7)."""
    for klass in inspect.getmro(lifecycle_node_class):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            if 'autostart' in inspect.signature(init).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _lifecycle_actions(kwargs):
    """A LifecycleNode brought to active: autostart where supported, else configure/activate events."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    if supports_autostart(LifecycleNode):
        return [LifecycleNode(autostart=True, **kwargs)]
    node = LifecycleNode(**kwargs)

    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    return [
        # start_state='configuring' so that a later deactivate (active -> inactive) does not re-activate.
        RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state='configuring',
                                               goal_state='inactive',
                                               entities=[change(Transition.TRANSITION_ACTIVATE)])),
        RegisterEventHandler(OnProcessStart(target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])),
        node,
    ]


def _launch_setup(context, *args, **kwargs):
    from launch.actions import LogInfo
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from molmoact_ros.ros.launch_args import (LAUNCH_ARGUMENTS, node_descriptions, resolve,
                                              rviz_description)

    config = resolve({a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS})
    actions = [LogInfo(msg=f'molmoact: layout={config.layout} model={config.model} robot={config.robot} '
                           f'namespace={config.namespace or "(none)"} sink={config.sink} execute={config.execute}')]
    for description in node_descriptions(config, default_params_file=str(PARAMS_FILE),
                                         robot_profiles_dir=str(ROBOT_PROFILES_DIR)):
        kwargs = description.launch_kwargs()
        if description.lifecycle:
            actions.extend(_lifecycle_actions(kwargs))
        else:
            actions.append(Node(**kwargs))
    rviz = rviz_description(config, str(RVIZ_CONFIG))
    if rviz is not None:
        actions.append(Node(**rviz.launch_kwargs()))
    return actions


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from molmoact_ros.ros.launch_args import LAUNCH_ARGUMENTS

    declared = []
    for arg in LAUNCH_ARGUMENTS:
        extra = {'choices': list(arg.choices)} if arg.choices and arg.name not in ('use_sim_time', 'rviz', 'execute') else {}
        declared.append(DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description,
                                              **extra))
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
