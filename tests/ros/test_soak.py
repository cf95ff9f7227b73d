"""Soak and chaos on the simulated graph as processes (`embodied ros up sim`, planner:=oracle, on the bridge's
ground truth: perception:=ground_truth, the graph's processes are what is tested here): many tasks back to
back with the bridge reset between them (memory flat, every task ends with a status), and the planner killed
mid-task (the controller stops the robot, the respawned planner takes the next instruction). Slow: minutes."""

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from geometry_msgs.msg import Twist
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ros_nodes.qos import LATCHED, PLAN_LEASE, STREAM

from .harness import interrupt, start_ros_up, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FINAL = ("done", "failed", "rejected", "cancelled")
NODES = ("sim_bridge", "planner", "controller")
SOAK_TASKS = int(os.environ.get("SOAK_TASKS", "30"))
MB = 2**20


def moving(twist: Twist) -> bool:
    return abs(twist.linear.x) + abs(twist.linear.y) + abs(twist.angular.z) > 1e-6


@contextmanager
def ros_up(tmp_path: Path, *settings: str):
    """`embodied ros up sim --set ...` in the background; stopped with SIGINT (as Ctrl-C) at the end, which it
    must survive with exit code 0 within a few seconds."""
    up, log = start_ros_up(tmp_path, *settings)
    try:
        yield up
    finally:
        code, took = interrupt(up)
        log.close()
        print(f"`embodied ros up` stopped in {took:.2f} s after SIGINT")
    output = (tmp_path / "up.log").read_text()
    assert code == 0, f"`embodied ros up` exited with {code}:\n{output[-5000:]}"
    assert took < 5.0, f"stopping took {took:.1f} s"


def nodes(up: subprocess.Popen) -> dict[str, psutil.Process]:
    """The running node processes of `embodied ros up`, by node name."""
    found = {}
    for child in psutil.Process(up.pid).children():
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        for name in NODES:
            if f"ros_nodes.{name}" in command and child.status() != psutil.STATUS_ZOMBIE:
                found[name] = child
    return found


def graph_probe(ros):
    return ros.probe(
        topics={
            "task": (String, "task", LATCHED, "json"),
            "plan": (String, "plan", LATCHED, "json"),
            "status": (String, "controller/status", LATCHED, "json"),
            "planner": (String, "planner/status", LATCHED, "json"),
            "task_status": (String, "task/status", STREAM, "json"),
            "cmd_vel": (Twist, "cmd_vel", STREAM),
        },
        publishers={"instruction": (String, "instruction", 10)},
        services={"reset": (Trigger, "/sim_bridge/reset")},
    )


def wait_until_up(probe, up, tmp_path) -> dict:
    task = probe.rec["task"].wait(timeout=120)
    assert task is not None, "no task from the sim bridge:\n" + (tmp_path / "up.log").read_text()
    assert probe.rec["status"].wait(timeout=60) is not None, "no status from the controller"
    assert probe.rec["planner"].wait(timeout=60) is not None, "no status from the planner"
    assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 60)
    assert up.poll() is None
    return task


def start_task(probe, instruction: str, tries: int = 20) -> tuple[float, dict]:
    """Send the instruction until the controller runs its plan. Right after a reset the planner or the
    controller may still hold the previous scene (the latched one reaches each node in its own time): the
    plan then fails to parse, or the controller rejects it, and the instruction is sent again, as an operator
    would. Returns when it was sent and the plan."""
    for _ in range(tries):
        sent = time.monotonic()
        probe.publish("instruction", String(data=instruction))
        plan = probe.rec["plan"].wait(lambda p: p["instruction"] == instruction, timeout=30, since=sent)
        assert plan is not None, f"no plan for {instruction!r}: planner {probe.rec['planner'].last}"
        if plan["valid"]:
            status = probe.rec["status"].wait(lambda s: s["state"] != "idle", timeout=10, since=sent)
            if status is not None and status["state"] not in ("rejected", "failed"):
                return sent, plan
        time.sleep(0.5)
    raise AssertionError(f"{instruction!r} never started: {probe.rec['plan'].last}, {probe.rec['status'].last}")


def rss(up) -> dict[str, float]:
    return {name: process.memory_info().rss / MB for name, process in nodes(up).items()}


@pytest.mark.timeout(60 * 60)
def test_sim_graph_runs_many_tasks_back_to_back_with_flat_memory(ros, tmp_path):
    probe = graph_probe(ros)
    results, memory = [], {}
    started = time.monotonic()
    with ros_up(tmp_path, "planner=oracle", "perception=ground_truth", "task=pick_place", "seed=0") as up:
        task = wait_until_up(probe, up, tmp_path)
        pids = {name: p.pid for name, p in nodes(up).items()}
        assert set(pids) == set(NODES)
        for index in range(SOAK_TASKS):
            if index:
                asked = time.monotonic()
                response = probe.call("reset", Trigger.Request(), timeout=30)
                assert response.success, response.message
                task = probe.rec["task"].wait(lambda t: t["seed"] == index, timeout=30, since=asked)
                assert task is not None, f"no task for seed {index} after the reset"
            t0 = time.monotonic()
            sent, plan = start_task(probe, task["instruction"])
            final = probe.rec["status"].wait(lambda s: s["state"] in FINAL, timeout=180, since=sent)
            assert final is not None, f"task {index} ({task['instruction']!r}) never ended: {probe.rec['status'].last}"
            ended = time.monotonic()
            outcome = probe.rec["task_status"].wait(lambda s: "success" in s, timeout=5, since=ended)
            assert probe.rec["planner"].wait_last(lambda s: s["state"] == "idle", timeout=10) is not None
            success = bool(outcome and outcome["success"])
            results.append({"seed": index, "state": final["state"], "reason": final.get("reason", ""),
                            "success": success, "seconds": round(ended - t0, 1)})  # fmt: skip
            print(f"task {index + 1}/{SOAK_TASKS}: {results[-1]}")
            if index + 1 in (5, SOAK_TASKS):
                memory[index + 1] = rss(up)
                sizes = ", ".join(f"{name} {mb:.1f} MB" for name, mb in memory[index + 1].items())
                print(f"RSS after task {index + 1}: {sizes}")
        assert {name: p.pid for name, p in nodes(up).items()} == pids, "a node restarted during the soak"
    took = time.monotonic() - started
    succeeded = sum(r["success"] for r in results)
    print(f"{SOAK_TASKS} tasks in {took:.0f} s; {succeeded} succeeded; states "
          f"{ {s: sum(r['state'] == s for r in results) for s in FINAL} }")  # fmt: skip
    assert len(results) == SOAK_TASKS and all(r["state"] in FINAL for r in results)
    assert succeeded >= 0.8 * SOAK_TASKS, results  # the oracle's plans; the skills are closed loop
    if SOAK_TASKS >= 5:
        for name in NODES:
            early, late = memory[5][name], memory[SOAK_TASKS][name]
            assert late - early < 0.10 * early + 20, f"{name} grew from {early:.1f} MB to {late:.1f} MB"


@pytest.mark.timeout(600)
def test_killed_planner_stops_the_robot_and_its_respawn_takes_the_next_instruction(ros, tmp_path):
    probe = graph_probe(ros)
    with ros_up(tmp_path, "planner=oracle", "perception=ground_truth", "task=pick_place", "seed=1") as up:
        task = wait_until_up(probe, up, tmp_path)
        sent, plan = start_task(probe, task["instruction"])
        assert probe.rec["cmd_vel"].wait(moving, timeout=20, since=sent) is not None, "the robot does not move"
        time.sleep(1.0)  # mid-task
        assert probe.rec["status"].last["state"] == "running", probe.rec["status"].last
        planner = nodes(up)["planner"]

        killed = time.monotonic()
        planner.send_signal(signal.SIGKILL)
        status = probe.rec["status"].wait(lambda s: s["state"] in FINAL, timeout=10, since=killed)
        assert status is not None and status["state"] == "failed", probe.rec["status"].last
        assert "planner that sent this plan went away" in status["reason"]
        noticed = [t for t, s in probe.rec["status"].items if t >= killed and s["state"] == "failed"][0]
        latency = noticed - killed
        assert probe.rec["cmd_vel"].wait(lambda t: not moving(t), timeout=1, since=noticed - 0.05) is not None
        time.sleep(0.5)
        late = [t for when, t in probe.rec["cmd_vel"].items if when > noticed + 0.02]  # one control period
        assert not any(moving(t) for t in late), "the robot moved after the controller noticed"
        print(f"planner killed: the controller stopped the robot {latency:.2f} s later (lease {PLAN_LEASE} s)")
        assert latency < PLAN_LEASE + 1.0

        # `embodied ros up` starts the planner again (respawn); it takes the next instruction (the next episode).
        assert wait_for(lambda: "planner" in nodes(up) and nodes(up)["planner"].pid != planner.pid, 30), "no respawn"
        assert probe.rec["planner"].wait(lambda s: s["state"] == "idle", timeout=60, since=killed) is not None
        asked = time.monotonic()
        assert probe.call("reset", Trigger.Request(), timeout=30).success
        task = probe.rec["task"].wait(lambda t: t["seed"] == 2, timeout=30, since=asked)
        sent, plan = start_task(probe, task["instruction"])
        assert plan["valid"] and plan["planner"] == "oracle"
        final = probe.rec["status"].wait(lambda s: s["state"] in FINAL, timeout=180, since=sent)
        assert final is not None and final["state"] == "done", final
        assert set(nodes(up)) == set(NODES) and up.poll() is None
    output = (tmp_path / "up.log").read_text()
    assert "planner exited with -9; starting it again" in output and "restarted planner" in output, output[-3000:]
