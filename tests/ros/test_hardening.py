"""The hardening issue, one test (or a few) per item: installed executables on the environment's Python,
interruptible planning, plans from volatile publishers, instructions that wait for the sensors, ~/cancel with
nothing running, the controller's watch on its planner, the bridge's reset and respawning nodes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rcl_interfaces.msg import Log
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger

from embodied.decoding import DecodingInterrupted
from envs.scene import generate_scene
from ros_nodes.conversions import cloud_msg, image_msg
from ros_nodes.graph import PACKAGE, NodeSpec, graph
from ros_nodes.planner import PLAN_JOIN_TIMEOUT
from ros_nodes.qos import LATCHED, PLAN, PLAN_LEASE, STREAM
from ros_nodes.sim_bridge import SimBridge
from ros_nodes.up import RESPAWN_TRIES, run_graph

from .harness import ROSOUT_QOS, interrupt, wait_for
from .test_safety import (
    MARGIN,
    controller_rig,
    far_object,
    logged,
    moving,
    navigate_plan,
    params,
    plan_json,
    planner_rig,
    start_navigating,
)

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "ros_nodes" / "ament" / "bin"
VOLATILE = QoSProfile(depth=10)  # what `ros2 topic pub` offers by default: volatile, reliable, no lease


# -- 1. the installed executables run on the Python of the prefix they are installed in -------------------


def fake_prefix(tmp_path: Path, executable: str, python: str | None) -> Path:
    """PREFIX/lib/embodied_agent/<executable> as pip installs it, and PREFIX/bin/python3 = ``python`` (a
    shell script) when given."""
    lib = tmp_path / "prefix" / "lib" / PACKAGE
    lib.mkdir(parents=True)
    script = lib / executable
    script.write_bytes((BIN / executable).read_bytes())
    script.chmod(0o755)
    if python is not None:
        (tmp_path / "prefix" / "bin").mkdir()
        interpreter = tmp_path / "prefix" / "bin" / "python3"
        interpreter.write_text(python)
        interpreter.chmod(0o755)
    return script


# The environment's interpreter, standing in for PREFIX/bin/python3: it imports the module the script asks
# for (``-m MODULE``) and reports it, without running it (no node starts).
PREFIX_PYTHON = f"""#!/bin/sh
exec {sys.executable} -c 'import importlib, sys
module = importlib.import_module(sys.argv[2])
assert sys.argv[1] == "-m" and callable(module.main)
print("reached", module.__name__, " ".join(sys.argv[3:]))' "$@"
"""


def path_without_the_venv(tmp_path: Path) -> str:
    """A PATH whose first python3 is not this environment's (it says so and fails, as system Python does)."""
    other = tmp_path / "other_bin"
    other.mkdir()
    (other / "python3").write_text('#!/bin/sh\necho "the python3 on PATH ran: $*"\nexit 1\n')
    (other / "python3").chmod(0o755)
    return f"{other}:/usr/bin:/bin"


@pytest.mark.parametrize("executable", ["sim_bridge", "perception", "planner", "controller"])
def test_installed_executable_runs_the_prefix_python_not_the_one_on_path(tmp_path, executable):
    script = fake_prefix(tmp_path, executable, PREFIX_PYTHON)
    env = {"PATH": path_without_the_venv(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([str(script), "--ros-args", "-r", "__node:=x"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"reached ros_nodes.{executable} --ros-args -r __node:=x", done.stdout + done.stderr


def test_installed_executable_falls_back_to_an_override_then_to_python3_on_path(tmp_path):
    script = fake_prefix(tmp_path, "planner", python=None)  # a prefix without an interpreter (pip --prefix)
    env = {"PATH": path_without_the_venv(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([str(script), "--ros-args"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "the python3 on PATH ran: -m ros_nodes.planner --ros-args"
    override = tmp_path / "python_override"
    override.write_text(PREFIX_PYTHON)
    override.chmod(0o755)
    done = subprocess.run([str(script), "--ros-args"], cwd=tmp_path, env={**env, "EMBODIED_PYTHON": str(override)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "reached ros_nodes.planner --ros-args", done.stdout + done.stderr


# -- 2. planning stops when the node does -------------------------------------------------------------------


def tiny_request(seed: int = 0):
    from embodied.prompts import PlanRequest

    scene, rng = generate_scene(seed), np.random.default_rng(seed)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return PlanRequest(f"go to the {scene.objects[0].name}", image, rng.uniform(0, 1, (256, 6)).astype(np.float32),
                       scene.object_names)  # fmt: skip


def test_decoding_stops_at_the_next_token_once_asked(torch_threads):
    from embodied.decoding import REFERENCE, DecodingConfig
    from embodied.model_planner import ModelPlanner

    planner = ModelPlanner("tiny", max_new_tokens=64, decoding=REFERENCE)  # one token a pass: the count is exact
    request = tiny_request()
    asked = []

    def stop_after(tokens: int):
        def stop() -> bool:
            asked.append(1)
            return len(asked) > tokens

        return stop

    with pytest.raises(DecodingInterrupted, match="stopped before it began"):
        planner.plan_many([request], stop=lambda: True)
    asked.clear()
    with pytest.raises(DecodingInterrupted, match="after 2 of at most 64 tokens"):
        planner.plan_many([request], stop=stop_after(3))  # asked before the prompt, then before each pass
    assert len(asked) == 4
    assert planner.plan_many([request], stop=lambda: False) == planner.plan_many([request])
    planner.decoding = DecodingConfig()  # the fast path: a pass may write several tokens
    asked.clear()
    with pytest.raises(DecodingInterrupted, match=r"after \d+ of at most 64 tokens"):
        planner.plan_many([request], stop=stop_after(3))
    assert len(asked) == 4


class EndlessModel:
    """A model planner that writes forever, until its ``stop`` says otherwise (as a slow model would)."""

    def __init__(self):
        self.started, self.stopped = threading.Event(), threading.Event()

    def plan_many(self, requests, stop=None):
        self.started.set()
        while not (stop and stop()):
            time.sleep(0.005)
        self.stopped.set()
        raise DecodingInterrupted("stopped")


@pytest.mark.timeout(60)
def test_planner_node_interrupts_the_plan_in_progress_when_destroyed(ros, torch_threads):
    inputs = {"image": (Image, "camera/image", STREAM), "cloud": (PointCloud2, "camera/points", STREAM),
              "instruction": (String, "instruction", 10)}  # fmt: skip
    planner, probe = planner_rig(ros, inputs, planner="model", checkpoint="tiny")
    planner.model = model = EndlessModel()
    stamp = probe.get_clock().now().to_msg()
    probe.publish("image", image_msg(np.zeros((32, 32, 3), np.uint8), stamp, "cam"))
    probe.publish("cloud", cloud_msg(np.zeros((256, 6), np.float32), stamp, "odom"))
    assert wait_for(lambda: planner.image is not None and planner.cloud is not None, 10)
    probe.publish("instruction", String(data="go to the red cube"))
    assert model.started.wait(10), "the planner did not start planning"

    asked = time.monotonic()
    ros.thread_of(planner).close()  # destroy_node on the node's own thread, as a process does on SIGINT
    took = time.monotonic() - asked
    assert model.stopped.is_set() and not planner.worker.is_alive()
    assert took < PLAN_JOIN_TIMEOUT, f"destroying the planner took {took:.2f} s"
    assert probe.rec["plan"].last is None, "an interrupted plan was published"


@pytest.mark.timeout(120)
def test_planner_process_with_a_model_stops_within_2_s_of_sigint(ros, tmp_path):
    """Once the node is down the process ends at once: the interpreter's teardown of torch and the rest took
    over a second on its own (two and more on a busy machine)."""
    probe = ros.probe(topics={"status": (String, "planner/status", LATCHED, "json")})
    log = (tmp_path / "planner.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ros_nodes.planner", "--ros-args", "-p", "checkpoint:=tiny"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert probe.rec["status"].wait(timeout=90) is not None, "planner not up"
    finally:
        code, took = interrupt(process)
        log.close()
    print(f"the planner process (tiny model) stopped {took:.2f} s after SIGINT")
    assert code == 0, (tmp_path / "planner.log").read_text()
    assert took < 2.0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_planner_process_stops_within_2_s_of_sigint_while_planning(ros, tmp_path):
    """The untrained default-size model writes long plans (seconds); SIGINT mid-plan ends the process cleanly
    within 2 s instead of waiting for the plan (launch would SIGTERM, then SIGKILL it)."""
    probe = ros.probe(
        topics={"plan": (String, "plan", LATCHED, "json"), "status": (String, "planner/status", LATCHED, "json")},
        publishers={"image": (Image, "camera/image", STREAM), "cloud": (PointCloud2, "camera/points", STREAM),
                    "scene": (String, "scene", LATCHED), "instruction": (String, "instruction", 10)},
    )  # fmt: skip
    scene = generate_scene(0)
    log = (tmp_path / "planner.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ros_nodes.planner", "--ros-args", "-p", "planner:=model",
         "-p", "checkpoint:=untrained", "-p", "max_new_tokens:=2000"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        up = probe.rec["status"].wait(timeout=240)
        assert up is not None, "planner not up:\n" + (tmp_path / "planner.log").read_text()
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in probe.pub.values()), 30)
        rng = np.random.default_rng(0)
        probe.publish("scene", String(data=json.dumps(scene.to_dict())))
        for attempt, obj in enumerate(scene.objects):  # until a plan is still being written well after it began
            stamp = probe.get_clock().now().to_msg()
            probe.publish("image", image_msg(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), stamp, "cam"))
            probe.publish("cloud", cloud_msg(rng.uniform(0, 1, (1024, 6)).astype(np.float32), stamp, "odom"))
            sent = time.monotonic()
            probe.publish("instruction", String(data=f"go to the {obj.name}"))
            planning = probe.rec["status"].wait(lambda s: s["state"] == "planning", timeout=30, since=sent)
            assert planning is not None, probe.rec["status"].last
            time.sleep(1.0)
            if probe.rec["plan"].wait(timeout=0, since=sent) is None:
                break
        else:
            pytest.fail("every plan was done within a second: nothing to interrupt")
    finally:
        code, took = interrupt(process)
        log.close()
    output = (tmp_path / "planner.log").read_text()
    print(f"the planner process stopped {took:.2f} s after SIGINT, mid-plan (attempt {attempt + 1})")
    assert code == 0, f"exit code {code}:\n{output}"
    assert took < 2.0, f"the planner took {took:.2f} s to stop after SIGINT:\n{output}"
    time.sleep(0.3)
    assert probe.rec["plan"].wait(timeout=0, since=sent) is None, "the interrupted plan was published"
    assert "did not stop within" not in output, output


# -- 3. plans from any publisher, each taken once ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_controller_takes_a_plan_from_a_volatile_publisher(ros):
    """`ros2 topic pub /plan ...` offers volatile durability: it must match, and its plan run."""
    controller, feed, probe, scene = controller_rig(ros)
    cli = ros.probe("cli", publishers={"plan": (String, "plan", VOLATILE)})
    assert wait_for(lambda: cli.pub["plan"].get_subscription_count() > 0, 10), "a volatile publisher never matches"
    target = far_object(scene)
    sent = time.monotonic()
    cli.publish("plan", String(data=json.dumps({"plan": navigate_plan(target)})))
    status = probe.rec["status"].wait(lambda s: s["state"] == "running", timeout=5, since=sent)
    assert status is not None and status["skill"] == f"navigate({target})", probe.rec["status"].last
    assert probe.rec["cmd_vel"].wait(moving, timeout=5, since=sent) is not None
    ros.assert_alive()


class FakePlanner(Node):
    """Publishes plans as the planner node does (latched, with a liveliness lease it asserts while
    ``alive``): clearing ``alive`` is what a killed or hung planner process looks like to the controller."""

    def __init__(self, **options):
        super().__init__("fake_planner", **options)
        self.alive = True
        self.pub = self.create_publisher(String, "plan", PLAN)
        self.create_timer(PLAN_LEASE / 4, lambda: self.alive and self.pub.assert_liveliness())

    def send(self, text: str) -> None:
        record = {"plan": text, "valid": True, "error": "", "planner": "fake", "stamp": time.time()}
        self.pub.publish(String(data=json.dumps(record)))


def planner_navigating(ros):
    controller, feed, probe, scene = controller_rig(ros)
    planner = ros.start(FakePlanner)
    assert wait_for(lambda: planner.pub.get_subscription_count() == 2, 10), "the controller's two plan subscriptions"
    target = far_object(scene)
    sent = time.monotonic()
    planner.send(navigate_plan(target))
    assert probe.rec["cmd_vel"].wait(moving, timeout=5, since=sent) is not None, "the controller does not drive"
    return controller, probe, planner, sent


@pytest.mark.timeout(60)
def test_a_plan_that_arrives_on_both_subscriptions_is_taken_once(ros):
    controller, probe, planner, sent = planner_navigating(ros)
    time.sleep(0.5)
    starts = [s for s in probe.rec["status"].since(sent) if s["state"] == "running" and s.get("step") == 1]
    assert len(starts) == 1, f"the plan was started {len(starts)} times: {starts}"
    ros.assert_alive()


# -- 7b. the controller stops when its planner goes --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_controller_stops_when_the_planner_stops_asserting_liveliness(ros):
    """A killed (or hung) planner process stops asserting its liveliness: the controller stops the robot within
    the lease (PLAN_LEASE) and says why."""
    controller, probe, planner, sent = planner_navigating(ros)
    planner.alive = False  # what SIGKILL does to the planner's process, as the controller sees it
    lost = time.monotonic()
    status = probe.rec["status"].wait(lambda s: s["state"] == "failed", timeout=PLAN_LEASE + 2, since=lost)
    assert status is not None, f"the controller kept the plan of a dead planner: {probe.rec['status'].last}"
    assert "planner that sent this plan went away" in status["reason"]
    noticed = [t for t, s in probe.rec["status"].items if t >= lost and s["state"] == "failed"][0]
    print(f"the controller stopped the robot {noticed - lost:.2f} s after the planner stopped asserting liveliness")
    assert noticed - lost < PLAN_LEASE + MARGIN
    assert probe.rec["cmd_vel"].wait(lambda t: not moving(t), timeout=0.5, since=lost) is not None
    time.sleep(0.3)
    assert not any(moving(t) for t in probe.rec["cmd_vel"].since(noticed + 0.05)), "the robot moved after the stop"
    assert controller.runner is None
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_controller_stops_when_the_planner_exits(ros):
    controller, probe, planner, sent = planner_navigating(ros)
    gone = time.monotonic()
    ros.thread_of(planner).close()  # destroys the node: its publisher leaves the graph at once
    status = probe.rec["status"].wait(lambda s: s["state"] == "failed", timeout=2, since=gone)
    assert status is not None and "went away" in status["reason"], probe.rec["status"].last
    time.sleep(0.2)
    assert not moving(probe.rec["cmd_vel"].last)


@pytest.mark.timeout(60)
def test_a_plan_from_a_one_shot_publisher_outlives_it(ros):
    """`ros2 topic pub --once` exits right after publishing: its plan keeps running."""
    controller, feed, probe, scene = controller_rig(ros)
    cli = ros.probe("cli", publishers={"plan": (String, "plan", VOLATILE)})
    assert wait_for(lambda: cli.pub["plan"].get_subscription_count() > 0, 10)
    sent = time.monotonic()
    cli.publish("plan", plan_json(navigate_plan(far_object(scene))))
    assert probe.rec["cmd_vel"].wait(moving, timeout=5, since=sent) is not None
    gone = time.monotonic()
    ros.thread_of(cli).close()
    time.sleep(PLAN_LEASE + MARGIN)
    assert probe.rec["status"].last["state"] == "running", probe.rec["status"].last
    assert any(moving(t) for t in probe.rec["cmd_vel"].since(gone + PLAN_LEASE))


# -- 4. an instruction waits for the sensors ---------------------------------------------------------------------


PLANNER_TOPICS = {"status": (String, "planner/status", LATCHED, "json"), "rosout": (Log, "/rosout", ROSOUT_QOS)}
INPUTS = {"image": (Image, "camera/image", STREAM), "cloud": (PointCloud2, "camera/points", STREAM),
          "scene": (String, "scene", LATCHED), "instruction": (String, "instruction", 10)}  # fmt: skip


@pytest.mark.timeout(60)
def test_an_instruction_before_the_camera_waits_for_it(ros, torch_threads):
    planner, probe = planner_rig(ros, INPUTS, PLANNER_TOPICS, planner="model", checkpoint="tiny", max_new_tokens=24)
    scene = generate_scene(0)
    probe.publish("scene", String(data=json.dumps(scene.to_dict())))
    instruction = f"go to the {scene.objects[0].name}"
    sent = time.monotonic()
    probe.publish("instruction", String(data=instruction))
    waiting = probe.rec["status"].wait(lambda s: s["state"] == "waiting", timeout=5, since=sent)
    assert waiting is not None and waiting["instruction"] == instruction
    assert waiting["reason"] == "waiting for camera/image, camera/points"
    time.sleep(0.5)
    assert probe.rec["plan"].last is None, "planned without the camera"

    stamp = probe.get_clock().now().to_msg()
    probe.publish("image", image_msg(np.zeros((32, 32, 3), np.uint8), stamp, "cam"))
    probe.publish("cloud", cloud_msg(np.zeros((256, 6), np.float32), stamp, "odom"))
    plan = probe.rec["plan"].wait(timeout=30)
    assert plan is not None and plan["valid"] and plan["instruction"] == instruction, plan
    assert probe.rec["status"].wait_last(lambda s: s["state"] == "idle", timeout=5) is not None
    states = [s["state"] for s in probe.rec["status"].since(sent)]  # (the latched "idle" of its start may come late)
    assert states[states.index("waiting") :][:3] == ["waiting", "planning", "idle"], states
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_an_oracle_instruction_before_the_scene_waits_for_it(ros):
    planner, probe = planner_rig(ros, INPUTS, PLANNER_TOPICS, planner="oracle")
    scene = generate_scene(0)
    instruction = f"go to the {scene.objects[1].name}"
    probe.publish("instruction", String(data="go to the nowhere"))
    assert probe.rec["status"].wait(lambda s: s["state"] == "waiting", timeout=5) is not None
    probe.publish("instruction", String(data=instruction))  # a newer instruction replaces the waiting one
    waiting = probe.rec["status"].wait(lambda s: s.get("instruction") == instruction, timeout=5)
    assert waiting is not None and waiting["reason"] == "waiting for scene"
    probe.publish("scene", String(data=json.dumps(scene.to_dict())))
    plan = probe.rec["plan"].wait(timeout=10)
    assert plan is not None and plan["valid"] and plan["instruction"] == instruction, plan
    assert [p["instruction"] for p in probe.rec["plan"].messages] == [instruction]


@pytest.mark.timeout(60)
def test_an_instruction_that_waits_too_long_gets_a_plan_record_saying_why(ros):
    planner, probe = planner_rig(ros, INPUTS, PLANNER_TOPICS, planner="oracle", input_timeout=1.0)
    sent = time.monotonic()
    probe.publish("instruction", String(data="go to the red cube"))
    plan = probe.rec["plan"].wait(timeout=5)
    took = time.monotonic() - sent
    assert plan is not None and plan["valid"] is False and plan["plan"] == ""
    assert plan["error"] == "TimeoutError: no scene within 1 s"
    assert 0.9 < took < 1.0 + 2 * MARGIN, took
    assert probe.rec["status"].wait_last(lambda s: s["state"] == "idle", timeout=5)["reason"] == plan["error"]
    assert logged(probe, "planner", "no valid plan for 'go to the red cube'")
    ros.assert_alive()


@pytest.mark.timeout(60)
def test_the_controller_says_why_the_planner_had_no_plan(ros):
    controller, feed, probe, scene = controller_rig(ros)
    record = {"plan": "", "valid": False, "error": "TimeoutError: no scene within 15 s", "planner": "oracle"}
    sent = time.monotonic()
    probe.publish("plan", String(data=json.dumps(record)))
    status = probe.rec["status"].wait(lambda s: s["state"] == "rejected", timeout=5, since=sent)
    assert status is not None
    assert status["reason"] == "invalid plan: the planner found none: TimeoutError: no scene within 15 s"


# -- 5. ~/cancel with nothing running -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cancel_with_nothing_running_changes_nothing(ros):
    controller, feed, probe, scene = controller_rig(ros)
    before = len(probe.rec["status"])
    response = probe.call("cancel", Trigger.Request())
    assert response.success is False and response.message == "nothing was running"
    time.sleep(0.3)
    assert len(probe.rec["status"]) == before and probe.rec["status"].last["state"] == "idle"
    assert not logged(probe, "controller", "cancel", timeout=0.5), "a warning for a cancel with nothing to cancel"

    start_navigating(probe, scene)  # and a cancel of a running plan still stops it
    assert probe.call("cancel", Trigger.Request()).success is True
    assert probe.rec["status"].wait_last(lambda s: s["state"] == "cancelled", timeout=5) is not None
    ros.assert_alive()


# -- 7a. the bridge starts the next episode on ~/reset -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_bridge_reset_starts_the_next_seed(ros):
    bridge = ros.start(SimBridge, parameter_overrides=params(task="object_nav", seed=4, width=64, height=64,
                                                               num_points=256, camera_rate=5.0))  # fmt: skip
    probe = ros.probe(
        topics={"task": (String, "task", LATCHED, "json"), "scene": (String, "scene", LATCHED, "json")},
        services={"reset": (Trigger, "/sim_bridge/reset")},
    )
    first = probe.rec["task"].wait(timeout=20)
    assert first is not None and first["seed"] == 4
    first_scene = probe.rec["scene"].wait(timeout=5)
    asked = time.monotonic()
    response = probe.call("reset", Trigger.Request())
    assert response.success is True
    reply = json.loads(response.message)
    assert reply["seed"] == 5 and reply["instruction"] == bridge.env.unwrapped.task.instruction
    task = probe.rec["task"].wait(lambda t: t["seed"] == 5, timeout=5, since=asked)
    assert task is not None and task["instruction"] == reply["instruction"]
    scene = probe.rec["scene"].wait(timeout=5, since=asked)
    assert scene == json.loads(json.dumps(bridge.env.unwrapped.scene.to_dict())) and scene != first_scene
    ros.assert_alive()


# -- respawn: `embodied ros up` and the launch files ---------------------------------------------------------------


NODE_THAT_COUNTS_ITS_STARTS = """import os, sys, time
with open(os.environ["STARTS_FILE"], "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(float(os.environ.get("RUN_FOR", "60")))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def counting_node(tmp_path, monkeypatch):
    """A module ``counting_node`` that appends its pid to STARTS_FILE when started (no ROS), and the list of
    pids so far. run_graph's signal handlers are put back afterwards."""
    (tmp_path / "counting_node.py").write_text(NODE_THAT_COUNTS_ITS_STARTS)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("STARTS_FILE", str(tmp_path / "starts"))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    def starts() -> list[int]:
        path = tmp_path / "starts"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    yield starts
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.mark.timeout(60)
def test_ros_up_starts_a_respawning_node_again_after_it_is_killed(counting_node, tmp_path):
    spec = NodeSpec("planner", "counting_node", respawn=True, respawn_delay=0.3)

    def until() -> bool:
        pids = counting_node()
        if len(pids) == 1 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(time.monotonic())
        return len(pids) >= 2

    killed = []
    code = run_graph([spec], tmp_path / "logs", grace=2.0, until=until)
    assert len(counting_node()) == 2 and code == 0  # the restarted one stopped cleanly (SIGINT)


@pytest.mark.timeout(60)
def test_ros_up_gives_up_on_a_node_that_keeps_failing_at_its_start(counting_node, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_FOR", "0")
    monkeypatch.setenv("EXIT_CODE", "3")
    code = run_graph([NodeSpec("planner", "counting_node", respawn=True, respawn_delay=0.1)], tmp_path / "logs")
    assert code == 3 and len(counting_node()) == RESPAWN_TRIES


@pytest.mark.timeout(60)
def test_ros_up_stops_the_graph_when_a_node_that_does_not_respawn_exits(counting_node, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_FOR", "0")
    monkeypatch.setenv("EXIT_CODE", "4")
    assert run_graph([NodeSpec("controller", "counting_node")], tmp_path / "logs") == 4
    assert len(counting_node()) == 1


def test_the_planner_respawns_in_both_graphs():
    for mode in ("sim", "hardware"):
        assert {s.name: s.respawn for s in graph(mode)}["planner"] is True
        assert all(not s.respawn for s in graph(mode) if s.name != "planner")
