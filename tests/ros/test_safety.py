"""Safety of the nodes: the controller's stale-sensor watchdog, the cancel service, plan validation, and
malformed messages that are logged and dropped while every node keeps running.

The controller runs against ``SensorFeed``, a stand-in for a robot's drivers and perception that holds the
robot still at the scene's start pose, so a navigate() never finishes and keeps commanding motion."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Log
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from envs.backend import EXTEND_RANGE, LIFT_RANGE
from envs.navmap import NavMap
from envs.plan import Plan, Step
from envs.scene import generate_scene
from envs.skills import REACH
from ros_nodes.controller import Controller
from ros_nodes.conversions import (
    ARM_JOINTS,
    cloud_msg,
    image_msg,
    joint_state_msg,
    object_clouds_msg,
    object_marker,
    odometry_msg,
    odometry_pose,
)
from ros_nodes.planner import Planner
from ros_nodes.qos import LATCHED, STREAM
from ros_nodes.sim_bridge import SimBridge

from .harness import ROSOUT_QOS, interrupt, wait_for

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
SENSOR_TIMEOUT = 0.5
MARGIN = 0.5  # scheduling slack on a loaded two-core machine


def params(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


def moving(twist: Twist) -> bool:
    return abs(twist.linear.x) + abs(twist.linear.y) + abs(twist.angular.z) > 1e-6


def plan_json(text: str) -> String:
    return String(data=json.dumps({"plan": text, "valid": True, "error": "", "planner": "test"}))


def logged(probe, node: str, text: str, timeout: float = 5.0) -> bool:
    return probe.rec["rosout"].wait(lambda m: m.name == node and text in m.msg, timeout=timeout) is not None


class SensorFeed(Node):
    """The latched scene, object markers, joint states, grasped and odometry at ``rate``; the robot never
    moves. ``publishing`` turns the sensors off and on; ``nan_odom`` sends NaN odometry instead of good."""

    def __init__(self, scene, rate: float = 50.0, hidden=(), **options):
        super().__init__("sensor_feed", **options)
        self.scene, self.hidden = scene, set(hidden)  # hidden: objects perception has not found (no marker)
        self.publishing, self.nan_odom = True, False
        self.pub_scene = self.create_publisher(String, "scene", LATCHED)
        self.pub_odom = self.create_publisher(Odometry, "odom", STREAM)
        self.pub_joints = self.create_publisher(JointState, "joint_states", STREAM)
        self.pub_objects = self.create_publisher(MarkerArray, "objects", STREAM)
        self.pub_grasped = self.create_publisher(String, "grasped", STREAM)
        self.pub_scene.publish(String(data=json.dumps(scene.to_dict())))
        self.create_timer(1.0 / rate, self.tick)

    def tick(self) -> None:
        if not self.publishing:
            return
        stamp = self.get_clock().now().to_msg()
        joints = {"lift": LIFT_RANGE[0], "extend": EXTEND_RANGE[0], "gripper": 0.0}
        self.pub_joints.publish(joint_state_msg(joints, stamp))
        self.pub_grasped.publish(String(data=""))
        markers = MarkerArray()
        for i, obj in enumerate(o for o in self.scene.objects if o.name not in self.hidden):
            marker = Marker(ns=obj.name, id=i, type=Marker.CUBE)
            marker.header.stamp, marker.header.frame_id = stamp, "odom"
            marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = obj.x, obj.y, obj.z
            marker.pose.orientation.w = 1.0
            markers.markers.append(marker)
        self.pub_objects.publish(markers)
        odom = odometry_msg(*self.scene.robot_start, stamp)
        if self.nan_odom:
            odom.pose.pose.position.x = math.nan
        self.pub_odom.publish(odom)


def far_object(scene) -> str:
    """The farthest object the robot can drive to from its start (navigate() to it takes a while)."""
    navmap, (x, y, _) = NavMap(scene), scene.robot_start
    for obj in sorted(scene.objects, key=lambda o: -math.hypot(o.x - x, o.y - y)):
        if math.hypot(obj.x - x, obj.y - y) > 1.0 and navmap.plan((x, y), (obj.x, obj.y), *REACH) is not None:
            return obj.name
    raise AssertionError("no reachable far object in this scene")


def navigate_plan(name: str) -> str:
    return Plan(f"the {name} is far away.", (Step("navigate", (name,)), Step("done"))).to_text()


def controller_rig(ros, seed: int = 0, hidden=()):
    """Controller + SensorFeed + a probe on cmd_vel, arm_command, controller/status, /rosout and plan."""
    scene = generate_scene(seed)
    controller = ros.start(Controller, parameter_overrides=params(sensor_timeout=SENSOR_TIMEOUT))
    feed = ros.start(SensorFeed, scene, hidden=hidden)
    probe = ros.probe(
        topics={
            "cmd_vel": (Twist, "cmd_vel", STREAM),
            "arm": (JointTrajectory, "arm_command", STREAM),
            "status": (String, "controller/status", LATCHED, "json"),
            "rosout": (Log, "/rosout", ROSOUT_QOS),
        },
        publishers={"plan": (String, "plan", LATCHED)},
        services={"cancel": (Trigger, "/controller/cancel")},
    )
    assert wait_for(lambda: None not in (controller.scene, controller.pose, controller.joints), 20)
    assert probe.rec["status"].wait(lambda s: s["state"] == "idle", timeout=10) is not None
    assert wait_for(lambda: probe.pub["plan"].get_subscription_count() > 0, 10)
    return controller, feed, probe, scene


def start_navigating(probe, scene) -> str:
    """Send a navigate() plan and check that the controller drives. A controller in another process may not
    have the latched scene yet (it then rejects the plan): the plan is sent again, as an operator would."""
    target = far_object(scene)
    for _ in range(10):
        sent = time.monotonic()
        probe.publish("plan", plan_json(navigate_plan(target)))
        status = probe.rec["status"].wait(lambda s: s["state"] in ("running", "rejected"), timeout=10, since=sent)
        if status is None or status.get("reason") != "no scene description received yet":
            break
        time.sleep(0.5)
    assert status is not None and status["state"] == "running", f"plan not started: {probe.rec['status'].last}"
    assert status["skill"] == f"navigate({target})" and status["steps"] == 2
    assert probe.rec["cmd_vel"].wait(moving, timeout=5, since=sent) is not None, "the controller does not drive"
    return target


# -- the controller's watchdog ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_stale_sensors_stop_the_robot_then_it_resumes(ros):
    controller, feed, probe, scene = controller_rig(ros)
    start_navigating(probe, scene)

    feed.publishing = False
    stopped = time.monotonic()
    waiting = probe.rec["status"].wait(lambda s: s["state"] == "waiting", timeout=3, since=stopped)
    assert waiting is not None, f"no 'waiting' status after the sensors stopped: {probe.rec['status'].last}"
    waited = [t for t, s in probe.rec["status"].items if t >= stopped and s["state"] == "waiting"][0] - stopped
    assert 0.3 < waited < SENSOR_TIMEOUT + MARGIN, f"stale sensors noticed after {waited:.2f} s"
    assert "stale sensors" in waiting["reason"]
    zero = probe.rec["cmd_vel"].wait(lambda t: not moving(t), timeout=1, since=stopped)
    assert zero is not None, "no zero Twist after the sensors went stale"
    noticed = stopped + waited
    time.sleep(0.6)  # while the sensors are silent, the watchdog keeps sending stops
    late = probe.rec["cmd_vel"].since(noticed + 0.1)
    assert len(late) >= 5, f"the watchdog stopped publishing: {len(late)} commands in 0.5 s"
    assert not any(moving(t) for t in late), "the controller kept driving on stale sensors"
    assert probe.rec["status"].last["state"] == "waiting"

    feed.publishing = True  # fresh sensors: the same step carries on
    resumed = time.monotonic()
    running = probe.rec["status"].wait(lambda s: s["state"] == "running", timeout=5, since=resumed)
    assert running is not None and running["step"] == 1 and running["reason"] == ""
    assert probe.rec["cmd_vel"].wait(moving, timeout=5, since=resumed) is not None
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_cancel_service_stops_the_robot(ros):
    controller, feed, probe, scene = controller_rig(ros)
    start_navigating(probe, scene)

    asked = time.monotonic()
    response = probe.call("cancel", Trigger.Request())
    answered = time.monotonic()
    assert response.success is True and response.message == "stopped"
    status = probe.rec["status"].wait_last(lambda s: s["state"] == "cancelled", timeout=5)
    assert status is not None and status["reason"] == "cancel requested"
    assert probe.rec["cmd_vel"].wait(lambda t: not moving(t), timeout=2, since=asked) is not None, "no stop command"
    time.sleep(0.6)  # sensors keep coming; nothing may move any more
    assert not any(moving(t) for t in probe.rec["cmd_vel"].since(answered + 0.1)), "the robot moved after the cancel"
    assert not moving(probe.rec["cmd_vel"].last)
    assert controller.runner is None and probe.rec["status"].last["state"] == "cancelled"

    again = probe.call("cancel", Trigger.Request())
    assert again.success is False and again.message == "nothing was running"
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_controller_process_sends_a_stop_when_it_exits(ros, tmp_path):
    scene = generate_scene(0)
    ros.start(SensorFeed, scene)
    probe = ros.probe(
        topics={"cmd_vel": (Twist, "cmd_vel", STREAM), "status": (String, "controller/status", LATCHED, "json")},
        publishers={"plan": (String, "plan", LATCHED)},
    )
    log = (tmp_path / "controller.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ros_nodes.controller", "--ros-args", "-r", "__node:=controller"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert probe.rec["status"].wait(timeout=30) is not None, "controller not up"
        assert wait_for(lambda: probe.pub["plan"].get_subscription_count() > 0, 10)
        start_navigating(probe, scene)
    finally:
        code, took = interrupt(process, timeout=10)
        log.close()
    assert code == 0, (tmp_path / "controller.log").read_text()
    time.sleep(0.3)
    last = probe.rec["cmd_vel"].last
    assert not moving(last), f"the controller's last command, {took + 0.3:.1f} s after SIGINT: {last}"


# -- plan validation ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_invalid_plans_are_rejected_without_motion(ros):
    controller, feed, probe, scene = controller_rig(ros)
    name = scene.objects[0].name
    cases = [
        (String(data="{not json"), "invalid plan: Expecting property name"),
        (plan_json(f"thought: x\n1. fly({name})\n2. done()"), "unknown skill 'fly'"),
        (plan_json("thought: x\n1. navigate(golden teapot)\n2. done()"), "unknown object 'golden teapot'"),
        (plan_json(f"thought: x\n1. navigate({name})"), "the last step must be answer(...) or done()"),
        (plan_json(""), "empty plan"),
        (String(data=json.dumps({"valid": True})), 'a JSON object with a "plan" string'),
        (String(data=json.dumps(["thought: x", "1. done()"])), "invalid plan:"),
    ]
    for msg, reason in cases:
        sent = time.monotonic()
        probe.publish("plan", msg)
        status = probe.rec["status"].wait(lambda s: s["state"] == "rejected" and reason in s["reason"], 5, since=sent)
        assert status is not None, f"{msg.data!r} not rejected with {reason!r}: {probe.rec['status'].last}"
    time.sleep(0.2)
    assert not any(moving(t) for t in probe.rec["cmd_vel"].messages), "an invalid plan moved the robot"
    assert not probe.rec["arm"].messages, "an invalid plan moved the arm"
    assert controller.runner is None
    assert logged(probe, "controller", "rejected: invalid plan")

    start_navigating(probe, scene)  # and a valid plan still runs
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_plan_that_is_not_text_is_rejected(ros):
    controller, feed, probe, scene = controller_rig(ros)
    thread = ros.thread_of(controller)
    sent = time.monotonic()
    probe.publish("plan", String(data=json.dumps({"plan": None, "valid": False})))

    def rejected():
        return probe.rec["status"].wait(lambda s: s["state"] == "rejected", timeout=0, since=sent)

    wait_for(lambda: rejected() is not None or thread.error is not None, 5)
    ros.assert_alive()
    assert rejected() is not None and "invalid plan" in rejected()["reason"]


@pytest.mark.timeout(30)
def test_step_on_an_object_without_a_pose_fails_cleanly(ros):
    scene = generate_scene(0)
    target = far_object(scene)
    controller, feed, probe, scene = controller_rig(ros, hidden={target})
    sent = time.monotonic()
    probe.publish("plan", plan_json(navigate_plan(target)))
    thread = ros.thread_of(controller)

    def failed():
        return probe.rec["status"].wait(lambda s: s["state"] == "failed", timeout=0, since=sent)

    wait_for(lambda: failed() is not None or thread.error is not None, 5)
    ros.assert_alive()
    assert failed() is not None and target in failed()["reason"]
    assert not any(moving(t) for t in probe.rec["cmd_vel"].messages)


@pytest.mark.timeout(30)
def test_plan_before_any_scene_waits_for_the_scene(ros):
    controller = ros.start(Controller)
    probe = ros.probe(
        topics={"status": (String, "controller/status", LATCHED, "json"), "cmd_vel": (Twist, "cmd_vel", STREAM)},
        publishers={"plan": (String, "plan", LATCHED), "scene": (String, "scene", LATCHED)},
    )
    assert wait_for(lambda: probe.pub["plan"].get_subscription_count() > 0, 10)
    probe.publish("plan", plan_json("thought: x\n1. done()"))
    status = probe.rec["status"].wait(lambda s: s["state"] == "waiting", timeout=5)
    assert status is not None and status["reason"] == "no scene description received yet"
    assert not any(moving(t) for t in probe.rec["cmd_vel"].messages)
    assert controller.runner is None
    probe.publish("scene", String(data=json.dumps(generate_scene(0).to_dict())))
    assert probe.rec["status"].wait(lambda s: s["state"] == "done", timeout=5) is not None  # the plan ran
    ros.assert_alive()


# -- malformed messages: logged, dropped, the node keeps running -------------------------------------------


@pytest.mark.timeout(60)
def test_nan_odometry_is_logged_and_treated_as_stale(ros):
    controller, feed, probe, scene = controller_rig(ros)
    start_navigating(probe, scene)

    feed.nan_odom = True  # joints stay good; every odometry message is NaN
    broken = time.monotonic()
    assert logged(probe, "controller", "rejected odom: odometry holds NaN or infinite values")
    waiting = probe.rec["status"].wait(lambda s: s["state"] == "waiting", timeout=3, since=broken)
    assert waiting is not None, "NaN odometry kept the controller driving"
    zero = probe.rec["cmd_vel"].wait(lambda t: not moving(t), timeout=1, since=broken)
    assert zero is not None
    time.sleep(0.3)
    assert not any(moving(t) for t in probe.rec["cmd_vel"].since(broken + SENSOR_TIMEOUT + MARGIN))

    feed.nan_odom = False
    healed = time.monotonic()
    assert probe.rec["status"].wait(lambda s: s["state"] == "running", timeout=5, since=healed) is not None
    # The node still reacts to a new plan (scan(): turn on the spot, which never ends while odom stands still).
    sent = time.monotonic()
    probe.publish("plan", plan_json("thought: look around.\n1. scan()\n2. done()"))
    status = probe.rec["status"].wait(lambda s: s.get("skill") == "scan()", timeout=5, since=sent)
    assert status is not None and status["state"] == "running", probe.rec["status"].last
    turning = probe.rec["cmd_vel"].wait(lambda t: abs(t.angular.z) > 0.1 and t.linear.x == 0.0, timeout=5, since=sent)
    assert turning is not None, "the controller does not turn for scan()"
    ros.assert_alive()


TEXT_INPUTS = {"scene": (String, "scene", LATCHED), "instruction": (String, "instruction", 10)}
ALL_INPUTS = {"image": (Image, "camera/image", STREAM), "cloud": (PointCloud2, "camera/points", STREAM), **TEXT_INPUTS}


def planner_rig(ros, inputs: dict, topics: dict | None = None, **parameters):
    """A planner node and a probe that publishes ``inputs`` to it (once each has its subscriber) and
    records its plans and any other ``topics``."""
    planner = ros.start(Planner, parameter_overrides=params(**parameters))
    probe = ros.probe(topics={"plan": (String, "plan", LATCHED, "json"), **(topics or {})}, publishers=inputs)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in probe.pub.values()), 10)
    return planner, probe


@pytest.mark.timeout(60)
def test_planner_drops_malformed_inputs_and_keeps_planning(ros):
    planner, probe = planner_rig(ros, ALL_INPUTS, {"rosout": (Log, "/rosout", ROSOUT_QOS)}, planner="oracle")
    stamp = probe.get_clock().now().to_msg()

    depth = image_msg(np.ones((8, 8), np.float32), stamp, "cam")
    depth.data = bytes(len(depth.data) - 4)  # a 32FC1 image with the wrong data length
    probe.publish("image", depth)
    assert logged(probe, "planner", "rejected image:")
    assert planner.image is None
    good = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    probe.publish("image", image_msg(good, stamp, "cam"))
    assert wait_for(lambda: planner.image is not None, 5)
    np.testing.assert_array_equal(planner.image, good)

    cloud = cloud_msg(np.zeros((4, 6), np.float32), stamp, "odom")
    cloud.fields = [f for f in cloud.fields if f.name != "x"]
    probe.publish("cloud", cloud)
    assert logged(probe, "planner", "rejected point cloud: point cloud lacks a float32 'x' field")
    assert planner.cloud is None

    probe.publish("scene", String(data="{not json"))
    assert logged(probe, "planner", "rejected scene description")
    assert planner.scene is None
    scene = generate_scene(0)
    probe.publish("scene", String(data=json.dumps(scene.to_dict())))
    assert wait_for(lambda: planner.scene == scene, 5), "the scene description did not round-trip"

    probe.publish("instruction", String(data="   "))
    assert logged(probe, "planner", "ignored an empty instruction")
    name = scene.objects[-1].name
    probe.publish("instruction", String(data=f"go to the {name}"))
    plan = probe.rec["plan"].wait(lambda p: p["instruction"] == f"go to the {name}", timeout=10)
    assert plan is not None and plan["valid"] and plan["plan"].splitlines()[1] == f"1. navigate({name})"
    assert planner.worker.is_alive()
    ros.assert_alive()


def test_planner_turns_perceptions_object_clouds_into_robot_frame_clouds_and_drops_malformed_ones(ros):
    inputs = {
        "objects": (MarkerArray, "objects", STREAM),
        "object_clouds": (PointCloud2, "object_clouds", STREAM),
        "odom": (Odometry, "odom", STREAM),
    }
    planner, probe = planner_rig(ros, inputs, {"rosout": (Log, "/rosout", ROSOUT_QOS)}, planner="oracle")
    stamp = probe.get_clock().now().to_msg()
    bad = object_clouds_msg({3: np.zeros((4, 6), np.float32)}, stamp, "odom")
    bad.data = bytes(len(bad.data) - 1)
    probe.publish("object_clouds", bad)
    assert logged(probe, "planner", "rejected object clouds:")
    markers = MarkerArray(markers=[object_marker("red cube", (2.0, 1.0, 0.8), 0.03, "cube", (1, 0, 0), stamp, "odom", 3)])
    cloud = np.array([[2.0, 1.0, 0.8, 1.0, 0.0, 0.0]] * 40, np.float32)
    probe.publish("objects", markers)
    probe.publish("object_clouds", object_clouds_msg({3: cloud, 9: cloud + 1}, stamp, "odom"))  # 9: no name yet
    probe.publish("odom", odometry_msg(1.0, 1.0, math.pi / 2, stamp))  # at (1, 1) facing +y: the cube is on its right
    assert wait_for(lambda: planner.pose is not None and 3 in planner.object_clouds and "red cube" in planner.marker_ids, 5)
    (robot_frame,) = planner.known_object_clouds(["red cube", "blue ball"])
    np.testing.assert_allclose(robot_frame[0, :3], [0.0, -1.0, 0.8], atol=1e-5)
    assert planner.known_object_clouds(None) is None
    ros.assert_alive()


def oracle_planner_rig(ros):
    planner, probe = planner_rig(ros, TEXT_INPUTS, planner="oracle")
    scene = generate_scene(0)
    probe.publish("scene", String(data=json.dumps(scene.to_dict())))
    assert wait_for(lambda: planner.scene is not None, 5)
    return planner, probe, scene


def ask(probe, instruction: str, timeout: float = 5.0):
    probe.publish("instruction", String(data=instruction))
    return probe.rec["plan"].wait(lambda p: p["instruction"] == instruction, timeout=timeout)


@pytest.mark.timeout(30)
def test_oracle_planner_reports_an_unreadable_instruction(ros):
    planner, probe, scene = oracle_planner_rig(ros)
    plan = ask(probe, "juggle the teapots")
    assert plan is not None and plan["valid"] is False and plan["plan"] == ""
    assert "cannot read the instruction 'juggle the teapots'" in plan["error"]
    ros.assert_alive()


@pytest.mark.timeout(30)
def test_oracle_planner_keeps_planning_after_an_invalid_plan(ros):
    planner, probe, scene = oracle_planner_rig(ros)
    first, second = (f"go to the {o.name}" for o in scene.objects[:2])
    assert ask(probe, first)["valid"] is True
    assert ask(probe, "juggle the teapots")["valid"] is False
    assert wait_for(lambda: not planner.worker.is_alive(), 0.5) is False, "the planning thread died"
    plan = ask(probe, second)
    assert plan is not None and plan["valid"] is True


@pytest.mark.timeout(90)
def test_model_planner_survives_a_depth_image_on_the_colour_topic(ros, torch_threads):
    planner, probe = planner_rig(ros, ALL_INPUTS, planner="model", checkpoint="tiny", max_new_tokens=24)
    stamp = probe.get_clock().now().to_msg()
    scene = generate_scene(0)
    rng = np.random.default_rng(0)
    probe.publish("scene", String(data=json.dumps(scene.to_dict())))
    probe.publish("image", image_msg(rng.uniform(0.5, 4.0, (32, 32)).astype(np.float32), stamp, "cam"))
    probe.publish("cloud", cloud_msg(rng.uniform(0, 1, (256, 6)).astype(np.float32), stamp, "odom"))
    assert wait_for(lambda: planner.scene is not None and planner.cloud is not None, 10)
    wait_for(lambda: planner.image is not None, 2)

    probe.publish("instruction", String(data=f"go to the {scene.objects[0].name}"))
    wait_for(lambda: probe.rec["plan"].last is not None or not planner.worker.is_alive(), 60)
    assert planner.worker.is_alive(), "the planning thread died"
    assert probe.rec["plan"].last is not None, "no plan (or error) published for the instruction"


def bridge_rig(ros, **overrides):
    values = dict(task="object_nav", seed=0, width=64, height=64, num_points=256, camera_rate=5.0)
    bridge = ros.start(SimBridge, parameter_overrides=params(**{**values, **overrides}))
    probe = ros.probe(
        topics={
            "odom": (Odometry, "odom", STREAM),
            "joints": (JointState, "joint_states", STREAM),
            "rosout": (Log, "/rosout", ROSOUT_QOS),
        },
        publishers={"cmd_vel": (Twist, "cmd_vel", STREAM), "arm": (JointTrajectory, "arm_command", STREAM)},
    )
    assert probe.rec["odom"].wait(timeout=20) is not None, "no odom from the bridge"
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in probe.pub.values()), 10)
    return bridge, probe


def pose(probe) -> tuple[float, float, float]:
    return odometry_pose(probe.rec["odom"].last)


def turn(probe, seconds: float, rate: float = 1.0) -> None:
    """Command a turn on the spot for ``seconds``, at 20 Hz (safe anywhere in the room)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cmd = Twist()
        cmd.angular.z = rate
        probe.publish("cmd_vel", cmd)
        time.sleep(0.05)


def yaw_change(a, b) -> float:
    return abs((b[2] - a[2] + math.pi) % (2 * math.pi) - math.pi)


@pytest.mark.timeout(60)
def test_bridge_stops_the_base_on_a_nan_twist(ros):
    """With a long command timeout (5 s), only the NaN handling can stop the turning base this quickly."""
    bridge, probe = bridge_rig(ros, command_timeout=5.0)
    before = pose(probe)
    turn(probe, 1.0)
    assert yaw_change(before, pose(probe)) > 0.3, "the base did not turn on a valid Twist"

    nan = Twist()
    nan.angular.z, nan.linear.x = 1.0, math.nan
    probe.publish("cmd_vel", nan)
    assert logged(probe, "sim_bridge", "rejected cmd_vel: velocity command holds NaN or infinite values")
    time.sleep(0.5)  # settle
    still, count = pose(probe), len(probe.rec["odom"])
    time.sleep(1.0)
    after = pose(probe)
    assert len(probe.rec["odom"]) > count + 20, "the bridge stopped publishing odometry"
    assert yaw_change(still, after) < 0.01 and math.hypot(after[0] - still[0], after[1] - still[1]) < 0.005, (
        f"the base kept moving after a NaN Twist: {still} -> {after}"
    )
    turn(probe, 0.5)  # and it still takes commands
    assert yaw_change(after, pose(probe)) > 0.1
    probe.publish("cmd_vel", Twist())
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_bridge_stops_the_base_when_commands_stop(ros):
    bridge, probe = bridge_rig(ros)  # command_timeout 0.5 s
    turn(probe, 0.6)
    time.sleep(0.5 + MARGIN)  # no command for longer than the timeout
    still = pose(probe)
    time.sleep(0.8)
    assert yaw_change(still, pose(probe)) < 0.01, "the base kept turning without commands"
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_bridge_rejects_arm_commands_with_unknown_joints_or_nan(ros):
    bridge, probe = bridge_rig(ros)
    lift0 = probe.rec["joints"].last.position[list(probe.rec["joints"].last.name).index("lift")]

    def lift() -> float:
        last = probe.rec["joints"].last
        return last.position[list(last.name).index("lift")]

    bad = JointTrajectory(joint_names=["lift", "elbow"], points=[JointTrajectoryPoint(positions=[0.9, 0.1])])
    probe.publish("arm", bad)
    assert logged(probe, "sim_bridge", "rejected arm_command: arm command names unknown joints ['elbow']")
    nan = JointTrajectory(joint_names=list(ARM_JOINTS), points=[JointTrajectoryPoint(positions=[0.9, math.nan, 0.0])])
    probe.publish("arm", nan)
    time.sleep(1.0)
    assert lift() == pytest.approx(lift0, abs=0.01), "a rejected arm command moved the lift"

    good = JointTrajectory(joint_names=["lift"], points=[JointTrajectoryPoint(positions=[0.6])])
    probe.publish("arm", good)
    assert wait_for(lambda: abs(lift() - 0.6) < 0.02, 5), f"the lift did not follow a valid command: {lift():.3f}"
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_a_plan_from_before_the_controller_started_is_not_replayed(ros):
    """The plan topic is latched: a restarted controller must not drive off on the last session's plan."""
    controller, feed, probe, scene = controller_rig(ros)
    old = {"plan": f"thought: x\n1. navigate({scene.objects[0].name})\n2. done()", "stamp": controller.started - 60}
    probe.publish("plan", String(data=json.dumps(old)))
    status = probe.rec["status"].wait(lambda s: "before this controller started" in s.get("reason", ""), timeout=5)
    assert status is not None and status["state"] == "idle"
    assert controller.runner is None
    assert not any(moving(t) for t in probe.rec["cmd_vel"].messages)
