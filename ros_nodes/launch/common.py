"""Turns the shared node graph into launch_ros actions (imported by the launch files beside it)."""

import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, NotEqualsSubstitution
from launch_ros.actions import Node

try:
    from ros_nodes.graph import LAUNCH_ARGUMENTS, PACKAGE, graph
except ImportError:  # `ros2 launch` runs on the ROS 2 install's Python, which need not see this environment's packages
    _here = Path(__file__).resolve().parent
    if (_here / "graph.py").exists():  # installed: share/embodied_agent/launch/graph.py (pyproject data-files)
        from graph import LAUNCH_ARGUMENTS, PACKAGE, graph
    else:  # the source tree: ros_nodes/launch/common.py
        sys.path.insert(0, str(_here.parents[1]))
        from ros_nodes.graph import LAUNCH_ARGUMENTS, PACKAGE, graph


def launch_description(mode: str) -> LaunchDescription:
    specs = graph(mode, every_node=True)  # each on its condition: perception:=ground_truth, record:=true
    defaults = {k: v for spec in specs for k, v in spec.parameters.items() if k in LAUNCH_ARGUMENTS}
    actions = [DeclareLaunchArgument(name, default_value=str(value)) for name, value in defaults.items()]
    for spec in specs:
        parameters = {k: LaunchConfiguration(k) if k in LAUNCH_ARGUMENTS else v for k, v in spec.parameters.items()}
        options = {}
        if spec.unless is not None:  # e.g. no perception node with perception:=ground_truth, no recorder by default
            argument, value = spec.unless
            options["condition"] = IfCondition(NotEqualsSubstitution(LaunchConfiguration(argument), value))
        actions.append(
            Node(
                package=PACKAGE,
                executable=spec.executable,
                name=spec.name,
                parameters=[parameters],
                remappings=list(spec.remappings.items()),
                respawn=spec.respawn,
                respawn_delay=spec.respawn_delay,
                output="screen",
                **options,
            )
        )
    return LaunchDescription(actions)
