"""Turns the shared node graph into launch_ros actions (imported by the launch files beside it)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ros_nodes.graph import LAUNCH_ARGUMENTS, PACKAGE, graph


def launch_description(mode: str) -> LaunchDescription:
    specs = graph(mode)
    defaults = {k: v for spec in specs for k, v in spec.parameters.items() if k in LAUNCH_ARGUMENTS}
    actions = [DeclareLaunchArgument(name, default_value=str(value)) for name, value in defaults.items()]
    for spec in specs:
        parameters = {k: LaunchConfiguration(k) if k in LAUNCH_ARGUMENTS else v for k, v in spec.parameters.items()}
        actions.append(
            Node(
                package=PACKAGE,
                executable=spec.executable,
                name=spec.name,
                parameters=[parameters],
                remappings=list(spec.remappings.items()),
                output="screen",
            )
        )
    return LaunchDescription(actions)
