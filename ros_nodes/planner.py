"""Planner: an instruction in, a plan out (latched JSON on ``plan``, and markers for RViz).

Planning runs on a worker thread, so the node keeps taking images and instructions while the model thinks;
a newer instruction that arrives meanwhile is planned next (older waiting ones are dropped). ``planner``
chooses the backend: ``model`` (the embodied model from ``checkpoint``: the shipped one by default,
``checkpoint:=tiny`` an untrained tiny one; in-process, or with ``inference:=ray`` through the Ray inference
router that ``embodied serve`` runs) or ``oracle`` (reads templated instructions against the latched scene
description). Either way a plan may name only the objects the robot knows of.

In a perceived world (``perception:=node``, the scene comes from the perception node) objects the camera has
not seen yet are unknown, so the oracle's plan starts with a ``scan()`` (``scan_first``: ``auto`` follows
``perception``, or ``true`` / ``false``) and may then name goal objects perception has not found yet; the
controller checks each step's objects when the step begins. Without a scan first, an instruction about an
object not in the scene gets no plan, and the plan record says which object is missing.

An instruction that arrives before the inputs its planner needs (the camera image and point cloud for the
model, the scene description for the oracle) waits for them, at most ``input_timeout`` seconds; then its plan
record says why there is none. ``planner/status`` (latched JSON) says what the planner does: ``idle``,
``waiting`` (for which inputs) or ``planning``. Stopping the node interrupts the plan being written (the
decoder checks a stop flag at every token), so the process exits within a second or two of Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from embodied.decoding import PLAN_TOKENS, DecodingInterrupted
from envs.object_views import to_robot_frame
from envs.plan import Plan, Step, parse_plan
from envs.planners import plan_from_goal
from envs.scene import COLOURS, SHAPES, ObjectSpec, SceneSpec
from envs.tasks import parse_instruction
from ros_nodes.conversions import (
    cloud_array,
    image_array,
    object_cloud_arrays,
    odometry_pose,
    scene_spec,
    validate_plan,
)
from ros_nodes.params import declare
from ros_nodes.qos import LATCHED, PLAN, PLAN_LEASE, STREAM

PLAN_JOIN_TIMEOUT = 2.0  # s a shutdown waits for the planning thread, once it has asked it to stop
POLL = 0.1  # s between checks for the inputs an instruction waits for
UNSEEN = "a table not seen yet"  # where the oracle's thought puts a goal object perception has not found


class Planner(Node):
    def __init__(self, **node_options):
        super().__init__("planner", **node_options)
        self.param = declare(
            self,
            {
                "planner": "model",
                "checkpoint": "default",  # a folder, "default" (the shipped one), "tiny" or "untrained"
                "max_new_tokens": PLAN_TOKENS,
                "frame": "odom",
                "inference": "local",  # "ray": plan through the running inference router (embodied serve)
                "ray_address": "",  # the cluster that router runs in, as `embodied serve` prints it
                "threads": 1,  # torch threads: leave the other cores to control
                "niceness": 10,  # the planning thread yields the CPU to control loops on this machine
                "input_timeout": 15.0,  # s an instruction waits for the camera (model) or the scene (oracle)
                "perception": "ground_truth",  # where the scene comes from: the simulator, or a perception "node"
                "scan_first": "auto",  # the oracle looks around before it acts: auto (in a perceived world), true, false
            },
        )
        scan_first = self.param["scan_first"].strip().lower()
        if scan_first not in ("auto", "true", "false"):
            raise ValueError(f"scan_first must be 'auto', 'true' or 'false', got {self.param['scan_first']!r}")
        self.scan_first = self.param["perception"] != "ground_truth" if scan_first == "auto" else scan_first == "true"
        if self.param["planner"] not in ("model", "oracle"):
            raise ValueError(f"planner must be 'model' or 'oracle', got {self.param['planner']!r}")
        if self.param["inference"] not in ("local", "ray"):
            raise ValueError(f"inference must be 'local' or 'ray', got {self.param['inference']!r}")
        self.model = self.router = None
        if self.param["planner"] == "model" and self.param["inference"] == "ray":
            self.router = self._connect_router()
        elif self.param["planner"] == "model":
            self.model = self._load_model()
        self.image = self.cloud = self.scene = None
        self.objects: dict[str, tuple[float, float, float]] = {}
        self.marker_ids: dict[str, int] = {}  # object name -> its marker's id, which names its object cloud
        self.object_clouds: dict[int, object] = {}  # marker id -> (N, 6) cloud in the odom frame
        self.pose: tuple[float, float, float] | None = None  # the robot's x, y, yaw in the odom frame
        self.pending: str | None = None
        self.stopping = False
        self.interrupt = threading.Event()  # set on shutdown: the decoder stops at its next token
        self.wake = threading.Condition()
        self.pub_plan = self.create_publisher(String, "plan", PLAN)
        self.create_timer(PLAN_LEASE / 4, self.pub_plan.assert_liveliness)  # the controller watches it
        self.pub_status = self.create_publisher(String, "planner/status", LATCHED)
        self.pub_markers = self.create_publisher(MarkerArray, "plan_markers", LATCHED)
        self.create_subscription(String, "instruction", self.on_instruction, 10)
        self.create_subscription(Image, "camera/image", self.on_image, STREAM)
        self.create_subscription(PointCloud2, "camera/points", self.on_cloud, STREAM)
        self.create_subscription(String, "scene", self.on_scene, LATCHED)
        self.create_subscription(MarkerArray, "objects", self.on_objects, STREAM)
        self.create_subscription(PointCloud2, "object_clouds", self.on_object_clouds, STREAM)
        self.create_subscription(Odometry, "odom", self.on_odom, STREAM)
        self._status("idle")
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()

    def _connect_router(self):
        from agents import runtime
        from agents.inference import connect_inference

        config = runtime.RuntimeConfig(address=self.param["ray_address"] or None)
        if not runtime.cluster_address(config):  # a private local Ray would hold no router
            raise ValueError("inference:=ray needs ray_address:=HOST:PORT (printed by `embodied serve`) or RAY_ADDRESS")
        runtime.start(config)
        return connect_inference()

    def _load_model(self):
        import torch

        from embodied.model_planner import ModelPlanner

        torch.set_num_threads(self.param["threads"])
        return ModelPlanner(self.param["checkpoint"], max_new_tokens=self.param["max_new_tokens"])

    # -- inputs --------------------------------------------------------------------------------------

    def on_image(self, msg: Image) -> None:
        try:
            if msg.encoding != "rgb8":
                raise ValueError(f"the camera image must be rgb8, got {msg.encoding!r}")
            self.image = image_array(msg)
        except ValueError as exc:
            self.get_logger().warning(f"rejected image: {exc}", throttle_duration_sec=1.0)

    def on_cloud(self, msg: PointCloud2) -> None:
        self._keep("cloud", cloud_array, msg, "point cloud")

    def _keep(self, attribute: str, parse, msg, what: str) -> None:
        """``parse(msg)`` as ``attribute``; a malformed message is logged (throttled) and dropped."""
        try:
            setattr(self, attribute, parse(msg))
        except ValueError as exc:
            self.get_logger().warning(f"rejected {what}: {exc}", throttle_duration_sec=1.0)

    def on_scene(self, msg: String) -> None:
        try:
            self.scene = scene_spec(msg)
        except ValueError as exc:
            self.get_logger().error(f"rejected scene description: {exc}")
            return
        names = set(self.scene.object_names)  # a new scene (the bridge reset): forget the old one's objects
        self.objects = {name: xyz for name, xyz in self.objects.items() if name in names}
        self.marker_ids = {name: i for name, i in self.marker_ids.items() if name in names}

    def on_objects(self, msg: MarkerArray) -> None:
        for m in msg.markers:
            self.objects[m.ns] = (m.pose.position.x, m.pose.position.y, m.pose.position.z)
            self.marker_ids[m.ns] = m.id

    def on_object_clouds(self, msg: PointCloud2) -> None:
        self._keep("object_clouds", object_cloud_arrays, msg, "object clouds")

    def on_odom(self, msg: Odometry) -> None:
        self._keep("pose", odometry_pose, msg, "odom")

    def known_object_clouds(self, names) -> list | None:
        """The clouds of the named objects perception (or the sim bridge's ground truth) has sent, in the robot's
        frame: the model's object tokens (None without odometry or clouds: the model then plans without them)."""
        if self.pose is None or not self.object_clouds or names is None:
            return None
        ids = [self.marker_ids.get(name) for name in names]
        return [to_robot_frame(self.object_clouds[i], *self.pose) for i in ids if i in self.object_clouds]

    def on_instruction(self, msg: String) -> None:
        text = " ".join(msg.data.split())
        if not text:
            self.get_logger().warning("ignored an empty instruction")
            return
        with self.wake:
            self.pending = text
            self.wake.notify()

    # -- planning (worker thread) --------------------------------------------------------------------

    def _work(self) -> None:
        if hasattr(os, "setpriority"):  # Linux threads have their own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.param["niceness"])
        while True:
            with self.wake:
                while self.pending is None and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
                instruction, self.pending = self.pending, None
            started = time.perf_counter()
            instruction, missing = self._wait_for_inputs(instruction)
            if self.stopping:
                return
            if missing:
                error = f"TimeoutError: no {' and no '.join(missing)} within {self.param['input_timeout']:g} s"
                self._publish(instruction, "", error, time.perf_counter() - started)
                continue
            self._status("planning", instruction)
            result = self._plan(instruction)
            if self.stopping:  # interrupted, or finished as the node goes: its publisher may be gone
                return
            self._publish(instruction, *result)

    def _missing(self) -> list[str]:
        """The inputs this planner lacks (topic names)."""
        if self.param["planner"] == "oracle":
            return [] if self.scene is not None else ["scene"]
        inputs = {"camera/image": self.image, "camera/points": self.cloud}
        return [topic for topic, value in inputs.items() if value is None]

    def _wait_for_inputs(self, instruction: str) -> tuple[str, list[str]]:
        """Hold ``instruction`` until the inputs its planner needs arrive, or ``input_timeout`` passes; a newer
        instruction replaces it meanwhile (with a fresh timeout). Returns the instruction and what still lacks."""
        missing = self._missing()
        if not missing:
            return instruction, missing
        deadline = time.monotonic() + self.param["input_timeout"]
        self._status("waiting", instruction, f"waiting for {', '.join(missing)}")
        with self.wake:
            while missing and not self.stopping and time.monotonic() < deadline:
                self.wake.wait(min(POLL, max(0.0, deadline - time.monotonic())))
                if self.pending is not None:
                    instruction, self.pending = self.pending, None
                    deadline = time.monotonic() + self.param["input_timeout"]
                    self._status("waiting", instruction, f"waiting for {', '.join(missing)}")
                missing = self._missing()
        return instruction, missing

    def _status(self, state: str, instruction: str = "", reason: str = "") -> None:
        status = {"state": state, "instruction": instruction, "reason": reason}
        self.pub_status.publish(String(data=json.dumps(status)))

    def destroy_node(self):
        """Stop the plan in progress (the decoder checks ``interrupt`` at every token) and wait for the planning
        thread, at most PLAN_JOIN_TIMEOUT: the process must not end under a thread that is inside torch."""
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.interrupt.set()
        self.worker.join(timeout=PLAN_JOIN_TIMEOUT)
        if self.worker.is_alive():
            self.get_logger().warning(f"the planning thread did not stop within {PLAN_JOIN_TIMEOUT:g} s")
        super().destroy_node()

    def _plan(self, instruction: str) -> tuple[str, str, float]:
        """Plan text and an error message ("" when the plan is valid); never raises."""
        started = time.perf_counter()
        names = self.scene.object_names if self.scene is not None else None
        text = ""
        try:
            if self.param["planner"] == "oracle":
                if self.scene is None:
                    raise ValueError("the oracle needs the scene description, none received yet")
                text = self._oracle_plan(instruction, self.scene)
            else:
                text = self._model_plan(instruction, names)
            validate_plan(text, names)
            error = ""
        except Exception as exc:  # noqa: BLE001  the worker must outlive any one bad request
            error = f"{type(exc).__name__}: {exc}"
        return text, error, time.perf_counter() - started

    def _oracle_plan(self, instruction: str, scene: SceneSpec) -> str:
        """The oracle's plan against the scene as known now. The instruction may name objects of any colour
        and shape; with ``scan_first`` the plan looks around first (the scan may find the ones not known yet),
        without, an object not in the scene is an error that names it."""
        every = [ObjectSpec(f"{c} {s}", s, c, "small", 0.0, 0.0, 0.0, 0.0, UNSEEN) for c in COLOURS for s in SHAPES]
        every = tuple(o for o in every if scene.object(o.name) is None)
        vocabulary = SceneSpec(scene.seed, scene.room_half, scene.tables, scene.objects + every, scene.robot_start)
        goal = parse_instruction(instruction, vocabulary)  # it reads only the names
        wanted = [goal["target"]] if "target" in goal else [name for move in goal["moves"] for name in move]
        unseen = [name for name in dict.fromkeys(wanted) if scene.object(name) is None]
        if unseen and not self.scan_first:
            raise ValueError(f"not in the scene: the {', '.join(unseen)} (not perceived yet? scan_first:=true looks around first)")
        known = scene
        if unseen:  # the oracle's thought says where each object is: these are still to be found
            extra = tuple(ObjectSpec(name, *name.split()[::-1], "small", 0.0, 0.0, 0.0, 0.0, UNSEEN) for name in unseen)
            known = SceneSpec(scene.seed, scene.room_half, scene.tables, scene.objects + extra, scene.robot_start)
        text = plan_from_goal(goal, known)
        if not self.scan_first:
            return text
        plan = parse_plan(text)
        return Plan(f"look around first. {plan.thought}", (Step("scan"), *plan.steps)).to_text()

    def _model_plan(self, instruction: str, names) -> str:
        from embodied.prompts import PlanRequest

        if self.image is None or self.cloud is None:
            raise ValueError("no camera image and point cloud received yet")
        request = PlanRequest(instruction, self.image, self.cloud, names, object_clouds=self.known_object_clouds(names))
        if self.router is not None:
            import ray

            reply = self.router.plan.remote(request)
            while not ray.wait([reply], timeout=POLL)[0]:
                if self.interrupt.is_set():
                    ray.cancel(reply)
                    raise DecodingInterrupted("the node is stopping")
            return ray.get(reply)
        return self.model.plan_many([request], stop=self.interrupt.is_set)[0]

    def _publish(self, instruction: str, text: str, error: str, seconds: float) -> None:
        record = {
            "instruction": instruction,
            "plan": text,
            "valid": not error,
            "error": error,
            "planner": self.param["planner"],
            "seconds": round(seconds, 3),
            "stamp": self.get_clock().now().nanoseconds * 1e-9,  # lets a controller that starts later skip it
        }
        self.pub_plan.publish(String(data=json.dumps(record)))
        self.pub_markers.publish(self._markers(text))
        self._status("idle", instruction, error)
        if error:  # two call sites: rclpy refuses one call site that changes severity
            self.get_logger().warning(f"no valid plan for {instruction!r} after {seconds:.2f} s: {error}")
        else:
            self.get_logger().info(f"plan for {instruction!r} in {seconds:.2f} s:\n{text}")

    def _markers(self, text: str) -> MarkerArray:
        """The plan as floating text, and a sphere over every object it names."""
        stamp = self.get_clock().now().to_msg()
        label = Marker(ns="plan", id=0, type=Marker.TEXT_VIEW_FACING, text=text)
        label.pose.position.z, label.pose.orientation.w = 2.5, 1.0
        label.scale.z = 0.15
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        markers = [label]
        for i, (name, (x, y, z)) in enumerate(sorted(dict(self.objects).items()), 1):  # a copy: the executor adds
            if name in text:
                target = Marker(ns="plan_targets", id=i, type=Marker.SPHERE)
                target.pose.position.x, target.pose.position.y, target.pose.position.z = x, y, z + 0.25
                target.pose.orientation.w = 1.0
                target.scale.x = target.scale.y = target.scale.z = 0.08
                target.color.g = target.color.a = 1.0
                markers.append(target)
        for marker in markers:
            marker.header.stamp, marker.header.frame_id = stamp, self.param["frame"]
        return MarkerArray(markers=markers)


def main(argv: list[str] | None = None) -> None:
    from ros_nodes.spin import spin_node

    spin_node(Planner, argv)


if __name__ == "__main__":
    main(sys.argv)
