"""Controller: runs a plan's steps with the closed-loop skills and turns them into cmd_vel and arm_command.

Each new odometry message triggers a control step (at most one per period), so a command follows the
state it uses within a millisecond or two; a timer at ``rate`` (50 Hz) is the watchdog. It stops the
robot (zero velocity) on stale or broken sensors, on the ~/cancel service, on a plan that fails
validation, when a skill fails, or when the planner that sent the running plan goes away (stopped, or
killed: its liveliness lease on ``plan`` lapses), and reports progress as JSON on controller/status.

``plan`` has two subscriptions: one with the planner's QoS (latched, with a liveliness lease: it receives
a plan published before this node matched, and learns when that planner dies), and a volatile one that
takes plans from any publisher, ``ros2 topic pub`` with its defaults too. A plan that arrives on both is
taken once.

The skills navigate on ``map`` (nav_msgs/OccupancyGrid, latched: the perception node's occupancy grid) once
one has arrived, and on the tables of the scene description until then. Each step of a plan starts with the
newest map and scene, so objects perceived meanwhile (during a ``scan()``) can be reached; a plan may name
objects not known yet only after a ``scan()`` step (``ros_nodes.conversions.validate_plan``). In a perceived
world (``perception:=node``) a step that names an object still unknown first goes and looks at the tables
seen only from afar (the plan runner's ``look_for`` detours).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections import deque

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.event_handler import QoSLivelinessChangedInfo, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from envs.backend import (
    EXTEND_RANGE,
    LIFT_RANGE,
    MAX_ANGULAR_SPEED,
    MAX_LINEAR_SPEED,
    RobotState,
    WorldState,
    from_unit,
)
from envs.navmap import NavMap
from envs.plan import Step
from envs.plan_runner import PlanRunner
from envs.scene import SceneSpec
from envs.skills import SkillContext
from ros_nodes.conversions import (
    arm_trajectory_msg,
    joint_positions,
    occupancy_grid_array,
    odometry_pose,
    scene_spec,
    twist_msg,
    validate_plan,
)
from ros_nodes.params import declare
from ros_nodes.qos import ANY, LATCHED, PLAN, STREAM
from ros_nodes.spin import go_realtime


def occupancy_navmap(values: np.ndarray, origin: tuple[float, float], resolution: float) -> NavMap:
    """A NavMap from occupancy values indexed [x cell, y cell] (-1 unknown, 0..100; >= 50 is occupied). A map
    that is not square about one origin is padded to one."""
    ox, oy = origin
    start = min(ox, oy)
    shift = (int(round((ox - start) / resolution)), int(round((oy - start) / resolution)))
    n = max(shift[0] + values.shape[0], shift[1] + values.shape[1])
    occupied = np.zeros((n, n), bool)
    occupied[shift[0] : shift[0] + values.shape[0], shift[1] : shift[1] + values.shape[1]] = values >= 50
    return NavMap.from_occupancy(occupied, start, resolution)


class Controller(Node):
    def __init__(self, **node_options):
        super().__init__("controller", **node_options)
        self.param = declare(
            self,
            {
                "rate": 50.0,
                "sensor_timeout": 0.5,
                "max_linear": MAX_LINEAR_SPEED,
                "max_angular": MAX_ANGULAR_SPEED,
                "lift_min": LIFT_RANGE[0],
                "lift_max": LIFT_RANGE[1],
                "extend_min": EXTEND_RANGE[0],
                "extend_max": EXTEND_RANGE[1],
                "realtime_priority": 0,  # > 0: run under SCHED_FIFO at this priority, as control loops on robots do
                "perception": "ground_truth",  # "node": the world is perceived, an object not found yet is looked for
            },
        )
        if self.param["realtime_priority"] > 0:
            self._go_realtime(self.param["realtime_priority"])
        self.period = 1.0 / self.param["rate"]
        self.scene: SceneSpec | None = None
        self.pose = self.joints = None
        self.pose_time = self.joints_time = -np.inf
        self.objects: dict[str, np.ndarray] = {}
        self.holding: str | None = None
        self.grid: tuple | None = None  # the newest map: (values [x, y], origin (x, y), resolution)
        self._navmap: NavMap | None = None  # built from it when a plan or a step needs it
        self._scene_navmap: tuple[SceneSpec, NavMap] | None = None  # before any map: from the scene's tables
        self.runner: PlanRunner | None = None
        self.last_step = -np.inf
        self.waiting_plan: String | None = None
        self.plans_taken: deque[tuple] = deque(maxlen=32)  # (publisher, sequence number) of the latest plans
        self.watched: deque[bytes] = deque(maxlen=32)  # publishers seen on the liveliness-watching subscription
        self.plan_source = b""  # the publisher of the plan being run (or waiting for the scene)
        self.started = self.get_clock().now().nanoseconds * 1e-9
        self.status = {"state": "idle"}
        self.step_times: deque[float] = deque(maxlen=100_000)  # when each control step ran (benchmarks)

        self.pub_cmd = self.create_publisher(Twist, "cmd_vel", STREAM)
        self.pub_arm = self.create_publisher(JointTrajectory, "arm_command", STREAM)
        self.pub_status = self.create_publisher(String, "controller/status", LATCHED)
        watch = SubscriptionEventCallbacks(liveliness=self.on_plan_liveliness, incompatible_qos=self.on_other_plan_qos)
        self.create_subscription(String, "plan", self.on_watched_plan, PLAN, event_callbacks=watch)
        self.create_subscription(String, "plan", self.on_any_plan, ANY)
        self.create_subscription(String, "scene", self.on_scene, LATCHED)
        self.create_subscription(Odometry, "odom", self.on_odom, STREAM)
        self.create_subscription(JointState, "joint_states", self.on_joints, STREAM)
        self.create_subscription(MarkerArray, "objects", self.on_objects, STREAM)
        self.create_subscription(String, "grasped", self.on_grasped, STREAM)
        self.create_subscription(OccupancyGrid, "map", self.on_map, LATCHED)
        self.create_service(Trigger, "~/cancel", self.on_cancel)
        self.create_timer(self.period, self.on_timer)
        self.report()
        gc.freeze()  # what exists now stays out of garbage-collection passes, which would pause the loop

    def _go_realtime(self, priority: int) -> None:
        try:
            go_realtime(priority)
        except (AttributeError, OSError) as exc:  # not Linux, or no rtprio allowance
            self.get_logger().warning(f"running without real-time priority ({exc}); raise the rtprio limit to allow it")

    # -- inputs --------------------------------------------------------------------------------------

    def on_scene(self, msg: String) -> None:
        try:
            self.scene = scene_spec(msg)
        except ValueError as exc:
            self.get_logger().error(f"rejected scene description: {exc}")
            return
        names = set(self.scene.object_names)  # a new scene (the bridge reset): forget the old one's objects
        self.objects = {name: xyz for name, xyz in self.objects.items() if name in names}
        if self.runner is not None:  # a perceived scene grows while the plan runs (a scan finds objects)
            self.runner.ctx.scene = self.scene
        if self.waiting_plan is not None:
            self.on_plan(self.waiting_plan)

    def on_odom(self, msg: Odometry) -> None:
        try:
            self.pose = odometry_pose(msg)
        except ValueError as exc:  # the stale-sensor watchdog stops the robot if no good one follows
            self.get_logger().warning(f"rejected odom: {exc}", throttle_duration_sec=1.0)
            return
        self.pose_time = time.monotonic()
        if self.runner is not None and self.pose_time - self.last_step >= 0.8 * self.period:
            self.control_step()

    def on_joints(self, msg: JointState) -> None:
        try:
            self.joints = joint_positions(msg)
        except ValueError as exc:
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=1.0)
            return
        self.joints_time = time.monotonic()

    def on_objects(self, msg: MarkerArray) -> None:
        for marker in msg.markers:
            p = marker.pose.position
            xyz = np.array([p.x, p.y, p.z])
            if np.all(np.isfinite(xyz)):
                self.objects[marker.ns] = xyz

    def on_grasped(self, msg: String) -> None:
        self.holding = msg.data or None

    def on_map(self, msg: OccupancyGrid) -> None:
        try:
            self.grid = occupancy_grid_array(msg)
        except ValueError as exc:
            self.get_logger().warning(f"rejected map: {exc}", throttle_duration_sec=1.0)
            return
        self._navmap = None

    def navmap(self) -> NavMap:
        """The navigation map from the newest ``map``; before one has arrived, from the scene's tables."""
        if self.grid is not None:
            if self._navmap is None:
                self._navmap = occupancy_navmap(*self.grid)
            return self._navmap
        if self._scene_navmap is None or self._scene_navmap[0] is not self.scene:
            self._scene_navmap = (self.scene, NavMap(self.scene))
        return self._scene_navmap[1]

    def on_watched_plan(self, msg: String, info: MessageInfo) -> None:
        self.take_plan(msg, info, watched=True)

    def on_any_plan(self, msg: String, info: MessageInfo) -> None:
        self.take_plan(msg, info, watched=False)

    def take_plan(self, msg: String, info: MessageInfo, watched: bool) -> None:
        gid = info.get("publisher_gid") or {}
        source = bytes(gid.get("data", b""))
        key = (source, info.get("publication_sequence_number") or info.get("source_timestamp"))
        if watched and source not in self.watched:
            self.watched.append(source)
        if key in self.plans_taken:  # the same message, through the other subscription
            return
        self.plans_taken.append(key)
        self.plan_source = source
        self.on_plan(msg)

    def on_other_plan_qos(self, event) -> None:
        """A publisher without the planner's liveliness lease (``ros2 topic pub``, a test): the volatile
        subscription takes its plans; this one only says why it does not."""
        self.get_logger().debug(f"plan publisher without a liveliness lease: {event.last_policy_kind}")

    def on_plan_liveliness(self, event: QoSLivelinessChangedInfo) -> None:
        """A planner's process went away (a clean exit now, a killed one within its lease): stop the robot if
        the plan being run came from a planner."""
        if event.alive_count_change >= 0:
            return
        if (self.runner is not None or self.waiting_plan is not None) and self.plan_source in self.watched:
            self.waiting_plan = None
            self.finish("failed", "the planner that sent this plan went away mid-task: robot stopped")

    def on_plan(self, msg: String) -> None:
        self.halt()
        if self.scene is None:  # run it once the scene arrives
            self.waiting_plan = msg
            self.status = {"state": "waiting", "reason": "no scene description received yet"}
            return self.report()
        self.waiting_plan = None
        try:
            record = json.loads(msg.data)
            if not isinstance(record, dict) or not isinstance(record.get("plan"), str):
                raise ValueError('a plan message is a JSON object with a "plan" string')
            if record.get("valid") is False and record.get("error"):  # say why, not "empty plan"
                raise ValueError(f"the planner found none: {record['error']}")
            if record.get("stamp", self.started) < self.started:
                self.status = {"state": "idle", "reason": "ignored a plan from before this controller started"}
                return self.report()
            plan = validate_plan(record["plan"], self.scene.object_names)
        except ValueError as exc:  # PlanError and bad JSON alike
            return self.finish("rejected", f"invalid plan: {exc}")
        ctx = SkillContext(self.scene, self.navmap(), control_dt=self.period, state=self.world_state())
        announce = lambda index, step: self.begin_step(ctx, index, step, len(plan.steps))  # noqa: E731
        self.runner = PlanRunner(plan, ctx, on_step=announce, look_for=self.param["perception"] != "ground_truth")
        if self.runner.finished:  # a plan that only answers needs no motion
            self.end_of_plan()

    def on_cancel(self, request, response):
        if self.runner is None and self.waiting_plan is None:  # the status stays as it is
            response.success, response.message = False, "nothing was running"
            return response
        self.waiting_plan = None
        self.finish("cancelled", "cancel requested")
        response.success, response.message = True, "stopped"
        return response

    # -- control -------------------------------------------------------------------------------------

    def world_state(self) -> WorldState | None:
        """The state the skills need, or None when a sensor is missing or older than sensor_timeout."""
        now, timeout = time.monotonic(), self.param["sensor_timeout"]
        if now - self.pose_time > timeout or now - self.joints_time > timeout:
            return None
        x, y, yaw = self.pose
        j = self.joints
        robot = RobotState(x, y, yaw, j["lift"], j["extend"], j["gripper"] >= 0.5, self.holding)
        return WorldState(robot, dict(self.objects))

    def on_timer(self) -> None:
        if self.runner is not None and time.monotonic() - self.last_step >= 1.5 * self.period:
            self.control_step()  # sensors are late: the step below notices and stops the robot

    def control_step(self) -> None:
        self.last_step = time.monotonic()
        self.step_times.append(self.last_step)
        state = self.world_state()
        if state is None:
            self.publish_stop()
            if self.status.get("state") != "waiting":
                self.status = {**self.status, "state": "waiting", "reason": "stale sensors: robot stopped"}
                self.report()
            return
        if self.status.get("state") == "waiting":
            self.status = {**self.status, "state": "running", "reason": ""}
            self.report()
        try:
            action = self.runner.act(state)
        except Exception as exc:  # noqa: BLE001  a skill that trips (an object perception lost mid-skill) stops the robot
            return self.finish("failed", f"{self.runner.step}: {type(exc).__name__}: {exc}")
        if action is None:
            return self.end_of_plan()
        self.publish_action(action)

    def begin_step(self, ctx: SkillContext, index: int, step: Step, steps: int) -> None:
        """A step starts on the newest scene and map (perception may have found more since the plan began)."""
        ctx.scene, ctx.navmap = self.scene, self.navmap()
        self.report_step(index, step, steps)

    def report_step(self, index: int, step: Step, steps: int) -> None:
        self.status = {"state": "running", "step": index + 1, "skill": str(step), "steps": steps}
        self.report()

    def end_of_plan(self) -> None:
        runner, last = self.runner, self.runner.outcomes[-1]
        if runner.completed:
            return self.finish("done", "", answer=runner.plan.answer)
        self.finish("failed", f"{last.step}: {last.reason}")

    def publish_action(self, action: np.ndarray) -> None:
        """A skill's normalised action as a velocity command and arm targets, within the node's limits."""
        if not np.all(np.isfinite(action)):
            return self.finish("failed", "the skill produced a non-finite action")
        p = self.param
        forward, left = (np.clip(action[:2] * MAX_LINEAR_SPEED, -p["max_linear"], p["max_linear"])).tolist()
        yaw_rate = float(np.clip(action[2] * MAX_ANGULAR_SPEED, -p["max_angular"], p["max_angular"]))
        lift, extend = from_unit(action[3], LIFT_RANGE), from_unit(action[4], EXTEND_RANGE)
        self.pub_cmd.publish(twist_msg(forward, left, yaw_rate))
        self.pub_arm.publish(
            arm_trajectory_msg(
                float(np.clip(lift, p["lift_min"], p["lift_max"])),
                float(np.clip(extend, p["extend_min"], p["extend_max"])),
                1.0 if action[5] > 0 else 0.0,
                self.get_clock().now().to_msg(),
            )
        )

    def publish_stop(self) -> None:
        self.pub_cmd.publish(Twist())

    def halt(self) -> None:
        self.runner = None
        self.publish_stop()

    def finish(self, state: str, reason: str, **extra) -> None:
        self.halt()
        self.status = {"state": state, "reason": reason, **extra}
        self.report()
        if reason and state != "done":
            self.get_logger().warning(f"{state}: {reason}")

    def destroy_node(self):
        # leave the robot standing still, not driving on its last command: sent three times over 40 ms, as
        # a message published just before its publisher goes can be lost on the way out
        for _ in range(3):
            self.publish_stop()
            time.sleep(0.02)
        super().destroy_node()

    def report(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status)))


def main(argv: list[str] | None = None) -> None:
    from ros_nodes.spin import spin_node

    spin_node(Controller, argv)


if __name__ == "__main__":
    main(sys.argv)
