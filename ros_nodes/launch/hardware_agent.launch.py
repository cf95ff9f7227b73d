"""ros2 launch ros_nodes/launch/hardware_agent.launch.py [planner:=model] [checkpoint:=DIR] [perception:=node|ground_truth]

The perception node, the planner and the controller on a real robot's topics (see ros_nodes/graph.py:
HARDWARE_TOPICS). The robot's drivers provide the RGB-D camera, odometry, joint states and gripper/holding;
the perception node turns them into the ``scene`` description, ``objects`` poses, ``grasped`` and ``map``
(perception:=ground_truth leaves it out, for a robot where another node publishes those)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("hardware")
