"""The node graph, defined once: the launch files (``ros2 launch`` on a full ROS 2 install) and
``embodied ros up`` (the PyPI-only install, where launch_ros does not exist) both start it from here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PACKAGE = "embodied_agent"  # the ament package name the launch files resolve executables in
LAUNCH_ARGUMENTS = ("task", "seed", "planner", "checkpoint", "perception", "record")  # exposed as launch arguments
# Where the planner and the controller get the world: the perception node (from the robot's camera and
# odometry), or the ground truth: in simulation the sim bridge's, on a robot whatever node the user starts
# to publish scene, objects and grasped (no perception node then).
PERCEPTION = ("node", "ground_truth")

# A robot's usual topic names; override any of them with a remapping.
HARDWARE_TOPICS = {
    "camera/image": "/camera/color/image_raw",
    "camera/depth": "/camera/aligned_depth_to_color/image_raw",
    "camera/camera_info": "/camera/color/camera_info",
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
    unless: tuple[str, str] | None = None  # (launch argument, value): not started when the argument has it

    def started(self, parameters: dict) -> bool:
        """Whether the graph starts this node, given the parameters it was asked for."""
        return self.unless is None or str(parameters.get(self.unless[0], "")) != self.unless[1]

    @property
    def executable(self) -> str:
        return self.module.rsplit(".", 1)[-1]


def graph(mode: str, parameters: dict | None = None, remappings: dict | None = None, every_node: bool = False) -> list[NodeSpec]:
    """The nodes for ``sim`` (bridge + perception + planner + controller) or ``hardware`` (perception + planner
    + controller on the robot's topics). ``parameters`` and ``remappings`` go to every node: each node reads
    the parameters it declares and ignores the rest. ``perception=ground_truth`` leaves the perception node
    out: the sim bridge then publishes its ground truth on scene, objects and grasped. ``record=true`` adds
    the recorder (every topic into an MCAP file at ``record_path``). ``every_node``: also the nodes the
    parameters leave out (the launch files start them on conditions)."""
    if mode not in ("sim", "hardware"):
        raise ValueError(f"mode must be 'sim' or 'hardware', got {mode!r}")
    parameters = parameters or {}
    if str(parameters.get("perception", "node")) not in PERCEPTION:
        raise ValueError(f"perception must be one of {', '.join(PERCEPTION)}, got {parameters['perception']!r}")
    topics = {**(HARDWARE_TOPICS if mode == "hardware" else {}), **(remappings or {})}
    nodes = [
        # The controller stops the robot when its planner goes (crashed, killed); a new one takes the next one.
        NodeSpec("perception", "ros_nodes.perception", {"perception_rate": 5.0}, unless=("perception", "ground_truth")),
        NodeSpec("planner", "ros_nodes.planner", {"planner": "model", "checkpoint": "default", "perception": "node"}, respawn=True),
        NodeSpec("controller", "ros_nodes.controller", {"rate": 50.0, "perception": "node"}),
        NodeSpec("recorder", "ros_nodes.recorder", {"record": "false", "record_path": ""}, unless=("record", "false")),
    ]
    if mode == "sim":
        nodes.insert(0, NodeSpec("sim_bridge", "ros_nodes.sim_bridge", {"task": "pick_place", "seed": 0, "perception": "node"}))
    return [
        replace(n, parameters={**n.parameters, **parameters}, remappings=topics)
        for n in nodes
        if every_node or n.started({**n.parameters, **parameters})
    ]
