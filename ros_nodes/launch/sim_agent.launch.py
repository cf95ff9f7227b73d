"""ros2 launch ros_nodes/launch/sim_agent.launch.py [task:=pick_place] [seed:=0] [planner:=model|oracle] [checkpoint:=DIR]
    [perception:=node|ground_truth]

The simulated robot (sim bridge), the perception node, the planner and the controller; with
perception:=ground_truth no perception node, and the bridge publishes the simulator's scene, objects and
grasped instead."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("sim")
