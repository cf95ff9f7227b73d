"""The node graph defined once (ros_nodes/graph.py), and its two front ends: the launch files (checked
against stub launch / launch_ros modules, which PyPI does not ship) and ``embodied ros up`` (processes)."""

import importlib.util
import sys
import time
import tomllib
import types
from pathlib import Path

import psutil
import pytest
import yaml
from std_msgs.msg import String

from ros_nodes.controller import Controller
from ros_nodes.graph import HARDWARE_TOPICS, LAUNCH_ARGUMENTS, PACKAGE, NodeSpec, graph
from ros_nodes.planner import Planner
from ros_nodes.qos import LATCHED
from ros_nodes.up import node_command

from .harness import ROOT, interrupt, start_ros_up, wait_for

pytestmark = pytest.mark.ros

LAUNCH_DIR = ROOT / "ros_nodes" / "launch"


# -- the graph ---------------------------------------------------------------------------------------------


def test_sim_graph_has_the_four_nodes_on_their_own_topics():
    specs = graph("sim")
    assert [s.name for s in specs] == ["sim_bridge", "perception", "planner", "controller"]
    assert [s.module for s in specs] == ["ros_nodes.sim_bridge", "ros_nodes.perception", "ros_nodes.planner", "ros_nodes.controller"]
    assert [s.executable for s in specs] == ["sim_bridge", "perception", "planner", "controller"]
    assert all(s.remappings == {} for s in specs)
    assert specs[0].parameters == {"task": "pick_place", "seed": 0, "perception": "node"}
    assert specs[1].parameters == {"perception_rate": 5.0}
    assert specs[2].parameters == {"planner": "model", "checkpoint": "default", "perception": "node"}
    assert specs[3].parameters == {"rate": 50.0, "perception": "node"}
    assert [s.respawn for s in specs] == [False, False, True, False]  # a planner that dies is started again
    assert [s.unless for s in specs] == [None, ("perception", "ground_truth"), None, None]


@pytest.mark.parametrize("mode", ["sim", "hardware"])
def test_ground_truth_perception_leaves_the_perception_node_out(mode):
    specs = graph(mode, {"perception": "ground_truth"})
    assert "perception" not in [s.name for s in specs]
    assert [s.name for s in specs][-2:] == ["planner", "controller"]
    assert all(s.parameters["perception"] == "ground_truth" for s in specs)
    with pytest.raises(ValueError, match="perception must be one of node, ground_truth"):
        graph(mode, {"perception": "oracle"})


@pytest.mark.parametrize("mode", ["sim", "hardware"])
def test_record_true_adds_the_recorder_on_the_same_topics(mode):
    assert "recorder" not in [s.name for s in graph(mode)]
    assert "recorder" not in [s.name for s in graph(mode, {"record": "false"})]
    specs = graph(mode, {"record": "true", "record_path": "runs/r.mcap"})
    recorder = specs[-1]
    assert recorder.name == "recorder" and recorder.module == "ros_nodes.recorder"
    assert recorder.parameters["record_path"] == "runs/r.mcap"
    assert recorder.remappings == specs[0].remappings  # it hears the robot's topics where the others do


def test_hardware_graph_has_no_bridge_and_uses_the_robots_topics():
    specs = graph("hardware")
    assert [s.name for s in specs] == ["perception", "planner", "controller"]
    assert all(s.remappings == HARDWARE_TOPICS for s in specs)
    remapped = graph("hardware", remappings={"odom": "/wheel/odom"})
    assert all(s.remappings == {**HARDWARE_TOPICS, "odom": "/wheel/odom"} for s in remapped)
    assert graph("sim", remappings={"cmd_vel": "/base/cmd_vel"})[0].remappings == {"cmd_vel": "/base/cmd_vel"}


def test_parameter_overrides_reach_every_node_over_its_defaults():
    overrides = {"planner": "oracle", "seed": 3, "task": "object_nav", "rate": 20.0}
    specs = {s.name: s for s in graph("sim", overrides)}
    assert specs["sim_bridge"].parameters == {"task": "object_nav", "seed": 3, "perception": "node", "planner": "oracle", "rate": 20.0}
    assert specs["perception"].parameters == {"perception_rate": 5.0, **overrides}
    assert specs["planner"].parameters == {"planner": "oracle", "checkpoint": "default", "perception": "node", "seed": 3, "task": "object_nav", "rate": 20.0}
    assert specs["controller"].parameters == {"rate": 20.0, "perception": "node", **overrides}
    hardware = {s.name: s for s in graph("hardware", {"checkpoint": "runs/ckpt"})}
    assert hardware["planner"].parameters == {"planner": "model", "checkpoint": "runs/ckpt", "perception": "node"}


def test_parameter_overrides_reach_every_node_that_declares_them():
    specs = {s.name: s for s in graph("sim", {"checkpoint": "tiny", "sensor_timeout": 1.0, "camera_rate": 5.0})}
    assert specs["planner"].parameters.get("checkpoint") == "tiny"
    assert specs["controller"].parameters.get("sensor_timeout") == 1.0
    assert specs["sim_bridge"].parameters.get("camera_rate") == 5.0


@pytest.mark.parametrize("mode", ["", "Sim", "real", None])
def test_unknown_mode_raises(mode):
    with pytest.raises(ValueError, match="mode must be 'sim' or 'hardware'"):
        graph(mode)


# -- embodied ros up: the command lines ----------------------------------------------------------------------


def test_node_command_builds_ros_args():
    spec = NodeSpec(
        "planner",
        "ros_nodes.planner",
        {"planner": "oracle", "checkpoint": "", "verbose": True, "rate": 50.0, "seed": 3},
        {"camera/image": "/camera/color/image_raw"},
    )
    command = node_command(spec)
    assert command[:6] == [sys.executable, "-m", "ros_nodes.planner", "--ros-args", "-r", "__node:=planner"]
    flags = list(zip(command[6::2], command[7::2]))
    assert len(command) == 6 + 2 * len(flags)
    assert [flag for flag, _ in flags] == ["-p"] * 5 + ["-r"]
    values = dict(text.split(":=", 1) for flag, text in flags if flag == "-p")
    assert list(values) == ["planner", "checkpoint", "verbose", "rate", "seed"]
    # every value travels as a YAML string; the node reads it as its parameter's type (ros_nodes/params.py)
    read = {key: yaml.safe_load(text) for key, text in values.items()}
    assert read == {"planner": "oracle", "checkpoint": "", "verbose": "True", "rate": "50.0", "seed": "3"}
    assert flags[-1] == ("-r", "camera/image:=/camera/color/image_raw")


def test_node_commands_are_read_by_rcl_as_meant(ros):
    """rcl's own argument parser gives the nodes the name, parameter types and remappings node_command wrote."""
    overrides = {"planner": "oracle", "rate": 20.0, "checkpoint": "", "use_sim_time": "True"}
    _, planner_spec, controller_spec = graph("hardware", overrides)
    planner = ros.start(Planner, cli_args=node_command(planner_spec)[3:])
    controller = ros.start(Controller, cli_args=node_command(controller_spec)[3:])
    assert planner.get_name() == "planner" and controller.get_name() == "controller"
    # rclpy's own boolean: the nodes follow /clock (a replayed recording's time)
    assert planner.get_parameter("use_sim_time").value is True and controller.get_clock().ros_time_is_active
    assert planner.param["planner"] == "oracle" and planner.param["checkpoint"] == ""  # '""' is an empty string
    assert controller.param["rate"] == 20.0 and controller.period == pytest.approx(0.05)
    assert "/camera/color/image_raw" in {s.topic_name for s in planner.subscriptions}
    assert "/odom" in {s.topic_name for s in controller.subscriptions}
    assert "/cmd_vel" in {p.topic_name for p in controller.publishers}
    ros.assert_alive()


def test_cli_parameter_values_keep_the_declared_types(ros):
    specs = {s.name: s for s in graph("sim", {"rate": "20", "planner": "oracle", "checkpoint": "2024"})}  # as the CLI
    controller = ros.start(Controller, cli_args=node_command(specs["controller"])[3:])
    assert controller.param["rate"] == 20.0
    planner = ros.start(Planner, cli_args=node_command(specs["planner"])[3:])
    assert planner.param["checkpoint"] == "2024"


# -- the launch files ------------------------------------------------------------------------------------------


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchDescription(_Recorded):
    @property
    def entities(self) -> list:
        return list(self.args[0] if self.args else self.kwargs.get("initial_entities", []))


class DeclareLaunchArgument(_Recorded):
    pass


class LaunchConfiguration(_Recorded):
    @property
    def name(self) -> str:
        return self.args[0]


class NotEqualsSubstitution(_Recorded):
    pass


class IfCondition(_Recorded):
    pass


class LaunchNode(_Recorded):
    pass


@pytest.fixture
def load_launch_file(monkeypatch):
    """Import a launch file with stub ``launch`` and ``launch_ros`` modules in ``sys.modules``."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = LaunchDescription
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = LaunchConfiguration
    substitutions.NotEqualsSubstitution = NotEqualsSubstitution
    conditions = types.ModuleType("launch.conditions")
    conditions.IfCondition = IfCondition
    launch.actions, launch.substitutions, launch.conditions = actions, substitutions, conditions
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = LaunchNode
    launch_ros.actions = ros_actions
    stubs = {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
             "launch.conditions": conditions, "launch_ros": launch_ros, "launch_ros.actions": ros_actions}  # fmt: skip
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the launch files put their folder first on it
    before = sys.modules.pop("common", None)  # the launch files' helper module; imported fresh each time

    def load(filename: str):
        spec = importlib.util.spec_from_file_location(f"_launch_{filename.split('.')[0]}", LAUNCH_DIR / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()

    yield load
    sys.modules.pop("common", None)
    if before is not None:
        sys.modules["common"] = before


@pytest.mark.parametrize("filename, mode", [("sim_agent.launch.py", "sim"), ("hardware_agent.launch.py", "hardware")])
def test_launch_file_starts_the_same_graph(load_launch_file, filename, mode):
    description = load_launch_file(filename)
    assert isinstance(description, LaunchDescription)
    specs = graph(mode, every_node=True)
    arguments = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    nodes = [e for e in description.entities if isinstance(e, LaunchNode)]
    assert len(arguments) + len(nodes) == len(description.entities)

    defaults = {k: v for s in specs for k, v in s.parameters.items() if k in LAUNCH_ARGUMENTS}
    assert {a.args[0]: a.kwargs["default_value"] for a in arguments} == {k: str(v) for k, v in defaults.items()}
    assert all(isinstance(a.kwargs["default_value"], str) for a in arguments)

    assert [n.kwargs["name"] for n in nodes] == [s.name for s in specs]
    for node, spec in zip(nodes, specs):
        kw = node.kwargs
        assert kw["package"] == PACKAGE == "embodied_agent"
        assert kw["executable"] == spec.executable
        assert kw["remappings"] == list(spec.remappings.items())
        assert kw["respawn"] is (spec.name == "planner") and kw["respawn_delay"] == spec.respawn_delay
        (parameters,) = kw["parameters"]
        assert parameters.keys() == spec.parameters.keys()
        for key, value in parameters.items():
            if key in LAUNCH_ARGUMENTS:  # exposed: `ros2 launch ... planner:=oracle`
                assert isinstance(value, LaunchConfiguration) and value.name == key
            else:
                assert value == spec.parameters[key]
        if spec.unless is None:
            assert "condition" not in kw
        else:  # `ros2 launch ... perception:=ground_truth` starts no perception node
            (test,) = kw["condition"].args
            assert isinstance(kw["condition"], IfCondition) and isinstance(test, NotEqualsSubstitution)
            argument, value = test.args
            assert isinstance(argument, LaunchConfiguration) and (argument.name, value) == spec.unless
    assert [n.kwargs["name"] for n in nodes if "condition" in n.kwargs] == ["perception", "recorder"]
    if mode == "hardware":
        assert all(n.kwargs["remappings"] == list(HARDWARE_TOPICS.items()) for n in nodes)


def test_installed_launch_files_find_the_graph_without_this_environment(load_launch_file, tmp_path, monkeypatch):
    """`ros2 launch` runs on the ROS 2 install's Python, which may not see the ros_nodes package: the launch
    files then read the graph.py that pyproject installs beside them."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = tmp_path / "share" / PACKAGE / "launch"
    installed.mkdir(parents=True)
    for source in data_files[f"share/{PACKAGE}/launch"]:
        (installed / Path(source).name).write_bytes((ROOT / source).read_bytes())
    for name in ("ros_nodes", "ros_nodes.graph"):
        monkeypatch.setitem(sys.modules, name, None)  # import ros_nodes... raises ImportError
    monkeypatch.setattr(sys.modules[__name__], "LAUNCH_DIR", installed)
    try:
        description = load_launch_file("sim_agent.launch.py")
        assert sys.modules["graph"].__file__ == str(installed / "graph.py")
    finally:
        sys.modules.pop("graph", None)
    nodes = [e for e in description.entities if isinstance(e, LaunchNode)]
    assert [(n.kwargs["executable"], n.kwargs["respawn"]) for n in nodes] == [
        ("sim_bridge", False), ("perception", False), ("planner", True), ("controller", False), ("recorder", False)]  # fmt: skip


def test_launch_executables_are_installed_with_the_package():
    """Every executable a launch file names is an ament script in ros_nodes/ament/bin, listed in pyproject's
    data-files for lib/embodied_agent, and it runs the module's main()."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = {Path(p).name for p in data_files[f"lib/{PACKAGE}"]}
    launch_files = {Path(p).name for p in data_files[f"share/{PACKAGE}/launch"]}
    assert {"sim_agent.launch.py", "hardware_agent.launch.py", "common.py"} <= launch_files
    for spec in graph("sim", every_node=True):
        script = ROOT / "ros_nodes" / "ament" / "bin" / spec.executable
        assert spec.executable in installed and script.is_file()
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        assert f"-m {spec.module} " in script.read_text()


# -- embodied ros up: the processes -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_ros_up_starts_the_graph_and_sigint_stops_every_node(ros, tmp_path):
    """With perception=ground_truth (today's graph: the bridge's ground truth, no perception node)."""
    probe = ros.probe(
        topics={
            "task": (String, "task", LATCHED, "json"),
            "status": (String, "controller/status", LATCHED, "json"),
            "plan": (String, "plan", LATCHED, "json"),
        },
        publishers={"instruction": (String, "instruction", 10)},
    )
    up, log = start_ros_up(tmp_path, "planner=oracle", "perception=ground_truth")
    children: list[psutil.Process] = []
    try:
        parent = psutil.Process(up.pid)
        assert wait_for(lambda: len(parent.children()) == 3 or up.poll() is not None, 30), "three nodes not started"
        children = parent.children(recursive=True)
        commands = {" ".join(c.cmdline()) for c in children}
        for name in ("sim_bridge", "planner", "controller"):
            assert any(f"-m ros_nodes.{name} --ros-args -r __node:={name}" in c for c in commands), commands
        assert any('-p planner:="oracle"' in c for c in commands)
        assert sum('-p perception:="ground_truth"' in c for c in commands) == 3
        assert not any("ros_nodes.perception" in c for c in commands), commands

        # Up: the bridge latched its task, the controller its status, and the planner answers.
        task = probe.rec["task"].wait(timeout=60)
        assert task is not None, "no task from the sim bridge process:\n" + (tmp_path / "up.log").read_text()
        assert probe.rec["status"].wait(timeout=30) is not None, "no status from the controller process"
        assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 30)
        # The planner or the controller may not have the bridge's latched scene yet (on a loaded machine the
        # processes find each other in their own time): they then answer with an error, and the
        # instruction is sent again, as an operator would.
        for _ in range(20):
            sent = time.monotonic()
            probe.publish("instruction", String(data=task["instruction"]))
            plan = probe.rec["plan"].wait(timeout=30, since=sent)
            assert plan is not None, "no plan from the planner process"
            status = probe.rec["status"].wait(lambda s: s["state"] in ("running", "rejected"), timeout=10, since=sent)
            if plan["valid"] and status is not None and status["state"] == "running":
                break
            time.sleep(0.5)
        assert plan["valid"] and plan["planner"] == "oracle", plan
        assert status is not None and status["state"] == "running", probe.rec["status"].last
        assert up.poll() is None and all(c.is_running() for c in children)
    finally:
        code, took = interrupt(up)  # what Ctrl-C (or kill -INT) does to `embodied ros up`
        for child in children:
            if child.is_running():
                child.kill()
        log.close()
    print(f"`embodied ros up` stopped {len(children)} nodes in {took:.2f} s after SIGINT")
    output = (tmp_path / "up.log").read_text()
    assert code == 0, f"`embodied ros up` exited with {code}:\n{output}"
    assert took < 5.0, f"stopping took {took:.1f} s (SIGINT was not enough: SIGTERM/SIGKILL after the 5 s grace)"
    assert wait_for(lambda: not any(c.is_running() for c in children), 2), [c.pid for c in children if c.is_running()]
    assert "exited with" not in output, output  # run_graph names every node that did not exit cleanly
    assert "started sim_bridge, planner, controller" in output
    assert "discovery LOCALHOST" in output
