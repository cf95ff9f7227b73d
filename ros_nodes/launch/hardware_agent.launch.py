"""ros2 launch ros_nodes/launch/hardware_agent.launch.py [planner:=model] [checkpoint:=DIR]

The planner and the controller on a real robot's topics (see ros_nodes/graph.py: HARDWARE_TOPICS).
The robot's drivers provide the camera, odometry and joint states, and a perception node provides the
``scene`` description and ``objects`` poses that the sim bridge gives in simulation."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("hardware")
