import json, time, os
import numpy as np
import pytest
from std_msgs.msg import String
from rclpy.parameter import Parameter
from ros_nodes.controller import Controller
from ros_nodes.perception import PerceptionNode
from ros_nodes.planner import Planner
from ros_nodes.qos import LATCHED, STREAM
from ros_nodes.sim_bridge import SimBridge
from .harness import wait_for
pytestmark = pytest.mark.ros

def params(**v): return [Parameter(k, value=x) for k, x in v.items()]

def test_dev(ros):
    bridge = ros.start(SimBridge, parameter_overrides=params(task="pick_place", seed=1, perception="node"))
    node = ros.start(PerceptionNode, parameter_overrides=params(ulip_checkpoint="runs/recipe/ulip/model", perception_rate=float(os.environ.get("DEV_RATE", "10"))))
    log = []
    orig = node.perception.update
    def update(frame, robot):
        t = time.monotonic()
        r = orig(frame, robot)
        named = {n: (tr.label.confidence, len(tr.points), tr.id) for n, tr in node.perception.memory.named().items()}
        truth = bridge.env.unwrapped.world_state().robot
        log.append((round(t, 2), r.skipped, r.segments, r.objects_seen, sorted(named), named.get("blue cube"), [round(v, 3) for v in frame.pose], (round(truth.x, 3), round(truth.y, 3), round(truth.yaw, 3)), robot.holding, round(time.monotonic() - t, 3)))
        return r
    node.perception.update = update
    planner = ros.start(Planner, parameter_overrides=params(planner="oracle", perception="node"))
    controller = ros.start(Controller)
    probe = ros.probe(topics={"task": (String, "task", LATCHED, "json"), "status": (String, "controller/status", LATCHED, "json")},
                      publishers={"instruction": (String, "instruction", 10)})
    task = probe.rec["task"].wait(timeout=30)
    assert wait_for(lambda: planner.scene is not None and controller.scene is not None and controller.pose is not None, 30)
    assert wait_for(lambda: probe.pub["instruction"].get_subscription_count() > 0, 20)
    probe.publish("instruction", String(data=task["instruction"]))
    final = probe.rec["status"].wait_last(lambda s: s["state"] in ("done", "failed"), timeout=100)
    prev = None
    for entry in log:
        if entry[4] != prev or entry[1]:
            print(entry)
            prev = entry[4]
    print("FINAL", final, [s.get("skill") for s in probe.rec["status"].messages])
    print("frames", len(log), "mean cost", np.mean([e[-1] for e in log]), "max", np.max([e[-1] for e in log]))
    print("pose errors max", max(abs(e[6][2] - e[7][2]) for e in log), max(abs(e[6][0] - e[7][0]) for e in log))
