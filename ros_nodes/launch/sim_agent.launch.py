"""ros2 launch ros_nodes/launch/sim_agent.launch.py [task:=pick_place] [seed:=0] [planner:=model|oracle] [checkpoint:=DIR]

The simulated robot (sim bridge), the planner and the controller."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("sim")
