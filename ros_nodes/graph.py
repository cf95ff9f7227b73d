"""The node graph, defined once: the launch files (``ros2 launch`` on a full ROS 2 install) and
``embodied ros up`` (the PyPI-only install, where launch_ros does not exist) both start it from here."""

from __future__ import annotations

from dataclasses import dataclass, field

PACKAGE = "embodied_agent"  # the ament package name the launch files resolve executables in
LAUNCH_ARGUMENTS = ("task", "seed", "planner", "checkpoint")  # exposed as launch arguments

# A robot's usual topic names; override any of them with a remapping.
HARDWARE_TOPICS = {
    "camera/image": "/camera/color/image_raw",
    "camera/points": "/camera/depth/color/points",
    "odom": "/odom",
    "joint_states": "/joint_states",
    "cmd_vel": "/cmd_vel",
    "arm_command": "/arm_controller/joint_trajectory",
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    module: str  # python -m <module> runs it; the ament executable has the module's last part as name
    parameters: dict = field(default_factory=dict)
    remappings: dict = field(default_factory=dict)
    respawn: bool = False  # started again after it exits (launch_ros Node(respawn=...), `embodied ros up` alike)
    respawn_delay: float = 1.0  # s from its exit to the new start

    @property
    def executable(self) -> str:
        return self.module.rsplit(".", 1)[-1]


def graph(mode: str, parameters: dict | None = None, remappings: dict | None = None) -> list[NodeSpec]:
    """The nodes for ``sim`` (bridge + planner + controller) or ``hardware`` (planner + controller on the
    robot's topics). ``parameters`` and ``remappings`` go to every node: each node reads the parameters it
    declares and ignores the rest."""
    if mode not in ("sim", "hardware"):
        raise ValueError(f"mode must be 'sim' or 'hardware', got {mode!r}")
    parameters = parameters or {}
    topics = {**(HARDWARE_TOPICS if mode == "hardware" else {}), **(remappings or {})}
    nodes = [
        # The controller stops the robot when its planner goes (crashed, killed); a new one takes the next one.
        NodeSpec("planner", "ros_nodes.planner", {"planner": "model", "checkpoint": "default"}, respawn=True),
        NodeSpec("controller", "ros_nodes.controller", {"rate": 50.0}),
    ]
    if mode == "sim":
        nodes.insert(0, NodeSpec("sim_bridge", "ros_nodes.sim_bridge", {"task": "pick_place", "seed": 0}))
    return [
        NodeSpec(n.name, n.module, {**n.parameters, **parameters}, topics, n.respawn, n.respawn_delay)
        for n in nodes
    ]
