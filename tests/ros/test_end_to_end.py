"""The whole simulated graph in one process: sim bridge, planner and controller, each on its own thread and
executor, talking over DDS on loopback. Episodes run in real time (50 Hz physics)."""

import pytest
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from envs.plan import parse_plan
from ros_nodes.controller import Controller
from ros_nodes.planner import Planner
from ros_nodes.qos import LATCHED, STREAM
from ros_nodes.sim_bridge import SimBridge

from .harness import TASK_TOPICS, wait_for

pytestmark = pytest.mark.ros

FINAL = ("done", "failed", "rejected", "cancelled")


def params(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


@pytest.mark.timeout(150)
def test_oracle_graph_completes_pick_place(ros):
    """pick_place seed 0: the instruction goes in on ``instruction``; the controller reports done and the
    bridge's task/status says the item is in its container."""
    bridge = ros.start(SimBridge, parameter_overrides=params(task="pick_place", seed=0))
    planner = ros.start(Planner, parameter_overrides=params(planner="oracle"))
    controller = ros.start(Controller)
    probe = ros.probe(
        topics={
            **TASK_TOPICS,
            "grasped": (String, "grasped", STREAM),
            "cmd_vel": (Twist, "cmd_vel", STREAM),
            "arm": (JointTrajectory, "arm_command", STREAM),
            "odom": (Odometry, "odom", STREAM),
        },
        publishers={"instruction": (String, "instruction", 10)},
    )
    task = probe.rec["task"].wait(timeout=20)
    assert task is not None, "no latched task from the sim bridge"
    assert task["instruction"] == bridge.env.unwrapped.task.instruction
    item, container = task["goal"]["moves"][0]
    # Both consumers of the latched scene have it, the controller has sensors, the planner listens.
    assert wait_for(lambda: planner.scene is not None and controller.scene is not None, 20), "scene not delivered"
    assert wait_for(lambda: controller.pose is not None and controller.joints is not None, 20), "no odom/joints"
    assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 20)
    assert probe.rec["status"].wait(lambda s: s["state"] == "idle", timeout=10) is not None
    assert probe.rec["odom"].wait(timeout=10) is not None, "the probe hears no odom"
    start = probe.rec["odom"].last.pose.pose.position

    probe.publish("instruction", String(data=task["instruction"]))
    plan = probe.rec["plan"].wait(timeout=20)
    assert plan is not None, "the planner published no plan"
    assert plan["valid"] and plan["error"] == "" and plan["planner"] == "oracle"
    assert plan["instruction"] == task["instruction"]
    steps = parse_plan(plan["plan"], bridge.env.unwrapped.scene.object_names).steps
    assert [s.skill for s in steps] == ["navigate", "pick", "navigate", "place", "done"]

    final = probe.rec["status"].wait_last(lambda s: s["state"] in FINAL, timeout=100)
    statuses = probe.rec["status"].messages
    assert final is not None, f"the controller did not finish: last status {statuses[-1]}"
    assert final["state"] == "done", f"controller: {final}"
    seen_steps = {s.get("step") for s in statuses if s["state"] == "running"}
    assert seen_steps == {1, 2, 3, 4}, statuses
    done_at = [t for t, s in probe.rec["status"].items if s["state"] == "done"][0]
    status = probe.rec["task_status"].wait(lambda s: "success" in s, timeout=5, since=done_at)
    assert status is not None and status["success"] is True, f"task/status after done: {status}"
    assert status["holding"] is None

    # It got there by driving and using the arm, through the bridge's topics.
    assert any(abs(t.linear.x) + abs(t.linear.y) > 0.05 for t in probe.rec["cmd_vel"].messages)
    assert {p.positions[2] for msg in probe.rec["arm"].messages for p in msg.points} == {0.0, 1.0}
    grasped = [m.data for m in probe.rec["grasped"].messages]
    assert item in grasped and grasped[-1] == "", "the bridge's grasped topic never named the item"
    end = probe.rec["odom"].last.pose.pose.position
    assert abs(end.x - start.x) + abs(end.y - start.y) > 0.1
    assert not controller.runner, "a finished plan leaves no skill running"
    ros.assert_alive()


@pytest.mark.timeout(150)
def test_tiny_model_planner_publishes_a_parseable_plan(ros, torch_threads):
    """planner:=model with checkpoint:=tiny (random weights): its plan does not solve the task, but it is
    published latched on ``plan``, marked valid, and parses against the scene's objects."""
    bridge = ros.start(SimBridge, parameter_overrides=params(task="object_nav", seed=0))
    planner = ros.start(Planner, parameter_overrides=params(planner="model", checkpoint="tiny", max_new_tokens=48))
    probe = ros.probe(
        topics={
            "task": (String, "task", LATCHED, "json"),
            "plan": (String, "plan", LATCHED, "json"),
            "markers": (MarkerArray, "plan_markers", LATCHED),
        },
        publishers={"instruction": (String, "instruction", 10)},
    )
    task = probe.rec["task"].wait(timeout=20)
    assert task is not None, "no latched task from the sim bridge"
    # The model plans from the camera image and the point cloud: wait until the planner has both.
    assert wait_for(lambda: planner.image is not None and planner.cloud is not None and planner.scene is not None, 30)
    assert planner.image.shape == (128, 128, 3) and planner.cloud.shape == (1024, 6)
    # with the ground truth the bridge also sends every object's cloud, so the model has its object tokens
    names = bridge.env.unwrapped.scene.object_names
    assert wait_for(lambda: planner.pose is not None and len(planner.known_object_clouds(names) or ()) == len(names), 20)
    assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 20)

    probe.publish("instruction", String(data="  " + task["instruction"] + " \n"))
    plan = probe.rec["plan"].wait(timeout=90)
    assert plan is not None, "the model planner published no plan"
    assert plan["valid"] is True and plan["error"] == "", plan
    assert plan["planner"] == "model" and plan["instruction"] == task["instruction"]  # whitespace normalised
    parsed = parse_plan(plan["plan"], names)
    assert parsed.steps and parsed.steps[-1].terminal
    assert all(arg in names for step in parsed.steps if step.skill not in ("answer",) for arg in step.args)
    markers = probe.rec["markers"].wait(timeout=5)
    assert markers is not None and markers.markers[0].text == plan["plan"]
    assert all(m.header.frame_id == "odom" for m in markers.markers)
    ros.assert_alive()


@pytest.mark.timeout(150)
def test_planner_plans_through_the_ray_inference_router(ros, torch_threads, monkeypatch):
    """inference:=ray: the planner sends the camera's image and cloud to the router `embodied serve` runs, on
    the cluster RAY_ADDRESS names (no ray_address:= given)."""
    from agents import runtime
    from agents.inference import InferenceConfig, start_inference

    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    try:
        router = start_inference(InferenceConfig(checkpoint="tiny", max_new_tokens=32), replicas=1)
        bridge = ros.start(SimBridge, parameter_overrides=params(task="object_nav", seed=0))
        monkeypatch.setenv("RAY_ADDRESS", runtime.address())
        planner = ros.start(Planner, parameter_overrides=params(planner="model", inference="ray"))
        assert planner.model is None and planner.router is not None  # nothing loaded in the node itself
        probe = ros.probe(
            topics={"task": (String, "task", LATCHED, "json"), "plan": (String, "plan", LATCHED, "json")},
            publishers={"instruction": (String, "instruction", 10)},
        )
        task = probe.rec["task"].wait(timeout=20)
        assert task is not None
        assert wait_for(lambda: planner.image is not None and planner.cloud is not None and planner.scene is not None, 30)
        assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 20)
        probe.publish("instruction", String(data=task["instruction"]))
        plan = probe.rec["plan"].wait(timeout=90)
        assert plan is not None and plan["valid"] is True, plan
        parse_plan(plan["plan"], bridge.env.unwrapped.scene.object_names)
        ros.assert_alive()
        del router
    finally:
        runtime.shutdown()
