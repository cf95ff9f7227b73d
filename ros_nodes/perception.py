"""Perception: the robot's own RGB-D camera, odometry, arm joints and gripper in; the world the planner and
the controller work in out (``embodied.perception.Perception``, the same class the simulated episodes run).

In: camera/image (rgb8), camera/depth (32FC1 metres, or 16UC1 millimetres), camera/camera_info (its vertical field of view),
odom, joint_states (lift, extend, gripper) and gripper/holding (std_msgs/Bool: the gripper holds something;
a gripper knows that much, not what). Each depth image is paired with the rgb image of the same stamp (the
nearest one when that never comes) and with the odometry (interpolated) and joint states of its stamp, and
fused at most ``perception_rate`` times a second; the newest frame wins, and one older than ``max_age`` when its turn
comes is dropped. A change of gripper/holding has the next frame fused at once, so that a grasp is
attributed to an object within a frame.

Out: objects (MarkerArray, one marker per named object: ``ns`` is its name, the pose its centre, the scale
its size, ``text`` its name and naming confidence), scene (latched JSON of the perceived SceneSpec,
republished when it changes), map (latched nav_msgs/OccupancyGrid in the odometry frame), grasped (the
perceived name of the held object, "" when none) and perception/status (latched JSON: frames fused,
skipped and dropped, the objects, the last skip reason).

``~/reset`` (std_srvs/Trigger) forgets everything perceived (the sim bridge's next episode is another room).

A frame that cannot be used (a malformed image, rgb and depth of different sizes, no valid depth, an
odometry jump, no odometry near its stamp) is skipped with a throttled warning and the reason in the
status; nothing new is published for it and the node carries on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import deque

import numpy as np
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from embodied.perception.camera import Frame, HeadMount
from embodied.perception.naming import UNKNOWN, Label, ObjectNamer
from embodied.perception.pipeline import FrameReport, Perception, PerceptionConfig
from envs.backend import HEAD_FOVY, HEAD_HEIGHT, HEAD_OFFSET, HEAD_PITCH_DEG, RobotState
from envs.object_views import POINTS as OBJECT_POINTS
from envs.object_views import resample
from envs.scene import COLOURS
from ros_nodes.conversions import (
    camera_fovy,
    depth_array,
    image_array,
    joint_positions,
    object_clouds_msg,
    object_marker,
    occupancy_grid_msg,
    odometry_pose,
)
from ros_nodes.params import declare
from ros_nodes.qos import LATCHED, STREAM

# Odometry and joint states are kept a couple of seconds back, so a frame finds the state of its own stamp
# even when it is fused a little later (a single-message queue would hold only the newest).
HISTORY = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
IMAGES = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
GREY = (0.5, 0.5, 0.5)


class GuardedNamer:
    """A namer that names what it can: a batch it refuses (a cloud too small for the encoder's groups raises
    ValueError) is named cloud by cloud, and a cloud it cannot name stays unknown (named again once it has
    grown), instead of failing the frame and every other object's name with it."""

    def __init__(self, namer):
        self.namer = namer

    def name(self, clouds: list) -> list[Label]:
        clouds = [np.ascontiguousarray(cloud) for cloud in clouds]  # torch takes no negative strides
        try:
            return self.namer.name(clouds)
        except ValueError:
            return [self._one(cloud) for cloud in clouds]

    def _one(self, cloud) -> Label:
        try:
            return self.namer.name([cloud])[0]
        except ValueError:
            return Label(UNKNOWN, UNKNOWN, 0.0)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _rounded(value, digits: int = 2):
    """``value`` with every float rounded: what "the scene changed" compares."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def scene_key(scene: dict) -> str:
    """What "the scene changed" compares: the robot's pose alone does not make a new scene."""
    return json.dumps(_rounded({k: v for k, v in scene.items() if k != "robot_start"}), sort_keys=True)


def object_markers(perception: Perception, stamp, frame: str, lifetime: float) -> tuple[MarkerArray, list[str]]:
    """One marker per named object (``text``: its name and naming confidence), and why any was left out."""
    markers, left_out = MarkerArray(), []
    for name, track in perception.memory.named().items():
        label = track.label
        try:
            markers.markers.append(
                object_marker(name, track.centre(), track.extent_half(), label.shape, COLOURS.get(label.colour, GREY),
                              stamp, frame, track.id, f"{name} {label.confidence:.2f}", lifetime)
            )
        except ValueError as exc:
            left_out.append(str(exc))
    return markers, left_out


class PerceptionNode(Node):
    """``namer``: an object with ``name(clouds) -> list[Label]`` instead of the ULIP checkpoint (tests)."""

    def __init__(self, namer=None, **node_options):
        super().__init__("perception", **node_options)
        self.param = declare(
            self,
            {
                # Named apart from the controller's rate and the planner's checkpoint: a graph's parameters
                # reach every node (ros_nodes/graph.py).
                "perception_rate": 5.0,  # Hz, at most: frames fused per second
                "ulip_checkpoint": "",  # the ULIP model folder; "" is the shipped one (embodied/checkpoints/ulip)
                "head_offset": HEAD_OFFSET,  # m, the head camera ahead of the base centre
                "head_height": HEAD_HEIGHT,  # m above the floor
                "head_pitch": HEAD_PITCH_DEG,  # degrees down
                "max_depth": PerceptionConfig.max_depth,
                "grid_resolution": PerceptionConfig.grid_resolution,
                "grid_half_extent": PerceptionConfig.grid_half_extent,
                "max_age": 0.5,  # s: a frame older than this when its turn comes is dropped
                "max_sync": 0.1,  # s: the farthest odometry or rgb image a frame is paired with
                "marker_lifetime": 1.0,  # s an object marker stays in RViz unless renewed (0: forever)
                "odom_frame": "odom",
                "threads": 1,  # torch threads for naming
            },
        )
        p = self.param
        if not (p["perception_rate"] > 0 and p["max_age"] > 0 and p["max_sync"] >= 0):
            raise ValueError(
                "perception_rate and max_age must be positive and max_sync not negative, "
                f"got {p['perception_rate']}, {p['max_age']}, {p['max_sync']}"
            )
        if namer is None:
            import torch

            torch.set_num_threads(p["threads"])
            namer = ObjectNamer(p["ulip_checkpoint"] or None)
        self.namer = GuardedNamer(namer)
        self.config = PerceptionConfig(p["max_depth"], p["grid_resolution"], p["grid_half_extent"])
        mount = HeadMount(p["head_offset"], p["head_height"], p["head_pitch"], HEAD_FOVY)  # fovy: camera_info's
        self.perception = Perception(self.config, self.namer, mount)
        self.period_ns = int(1e9 / p["perception_rate"])
        self.max_age_ns, self.max_sync_ns = int(p["max_age"] * 1e9), int(p["max_sync"] * 1e9)

        self.images: deque[Image] = deque(maxlen=4)
        self.depths: deque[Image] = deque(maxlen=2)
        self.odom: deque[tuple[int, tuple[float, float, float]]] = deque(maxlen=200)
        self.joints: deque[tuple[int, dict]] = deque(maxlen=200)
        self.camera_size: tuple[int, int] | None = None  # width, height that camera_info describes
        self.holding = False
        self.urgent = False  # the gripper changed: fuse the next frame whatever the rate
        self.last_fused_at = -(10**18)  # node clock, ns
        self.last_stamp = -1  # the newest frame taken (fused, skipped or dropped), ns
        self.counts = {"received": 0, "fused": 0, "skipped": 0, "dropped": 0}
        self.last_skip = ""
        self.scene_key: str | None = None
        self.grasped = ""

        self.pub_objects = self.create_publisher(MarkerArray, "objects", STREAM)
        self.pub_object_clouds = self.create_publisher(PointCloud2, "object_clouds", STREAM)
        self.pub_scene = self.create_publisher(String, "scene", LATCHED)
        self.pub_map = self.create_publisher(OccupancyGrid, "map", LATCHED)
        self.pub_grasped = self.create_publisher(String, "grasped", STREAM)
        self.pub_status = self.create_publisher(String, "perception/status", LATCHED)
        self.create_subscription(Image, "camera/image", self.on_image, IMAGES)
        self.create_subscription(Image, "camera/depth", self.on_depth, IMAGES)
        self.create_subscription(CameraInfo, "camera/camera_info", self.on_camera_info, STREAM)
        self.create_subscription(Odometry, "odom", self.on_odom, HISTORY)
        self.create_subscription(JointState, "joint_states", self.on_joints, HISTORY)
        self.create_subscription(Bool, "gripper/holding", self.on_holding, STREAM)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.create_timer(min(0.05, 0.5 / p["perception_rate"]), self.fuse_next)  # frames whose rgb image never came
        self.report()

    def on_reset(self, request, response):
        """Forget the world (a new episode, the robot carried elsewhere): objects, tables and map start empty."""
        self.perception = Perception(self.config, self.namer, self.perception.mount)
        self.scene_key, self.grasped, self.last_skip = None, "", ""
        self.report()
        response.success, response.message = True, "perception memory and map cleared"
        return response

    # -- inputs --------------------------------------------------------------------------------------

    def on_image(self, msg: Image) -> None:
        self.images.append(msg)
        self.fuse_next()

    def on_depth(self, msg: Image) -> None:
        self.counts["received"] += 1
        self.depths.append(msg)
        self.fuse_next()

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            fovy = camera_fovy(msg)
        except ValueError as exc:
            self.get_logger().warning(f"rejected camera_info: {exc}", throttle_duration_sec=1.0)
            return
        self.camera_size = (msg.width, msg.height)
        if abs(fovy - self.perception.mount.fovy_deg) > 1e-6:
            self.perception.mount = dataclasses.replace(self.perception.mount, fovy_deg=fovy)

    def on_odom(self, msg: Odometry) -> None:
        try:
            self.odom.append((stamp_ns(msg), odometry_pose(msg)))
        except ValueError as exc:
            self.get_logger().warning(f"rejected odom: {exc}", throttle_duration_sec=1.0)
            return
        self.fuse_next()  # a frame may wait for the odometry of its own time

    def on_joints(self, msg: JointState) -> None:
        try:
            self.joints.append((stamp_ns(msg), joint_positions(msg)))
        except ValueError as exc:
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=1.0)

    def on_holding(self, msg: Bool) -> None:
        """The gripper closed on something or let go: say what it holds now, not a frame later (a pick checks
        its grasp 0.3 s after closing); the next frame is fused whatever the rate."""
        holding = bool(msg.data)
        if holding == self.holding:
            return
        self.holding, self.urgent = holding, True
        if not holding:  # nothing is held, whatever the camera says next
            self.grasped = ""
        elif self.odom and self.joints:  # the object nearest the gripper rides with it (as the next frame would do)
            joints = self.joints[-1][1]
            robot = RobotState(*self.odom[-1][1], joints["lift"], joints["extend"], joints["gripper"] >= 0.5, "held")
            self.perception.track_gripper(robot)
            self.grasped = self.perception.world_state(robot).robot.holding or ""
        self.pub_grasped.publish(String(data=self.grasped))
        self.report()

    # -- fusing --------------------------------------------------------------------------------------

    def fuse_next(self) -> None:
        """Fuse the newest frame not taken yet, if the rate allows and its rgb image is here (or will not come)."""
        if not self.depths or stamp_ns(self.depths[-1]) <= self.last_stamp:
            return
        now = self.get_clock().now().nanoseconds
        if now - self.last_fused_at < self.period_ns and not self.urgent:
            return
        depth = self.depths[-1]
        stamp = stamp_ns(depth)
        if now - stamp > self.max_age_ns:
            self.last_stamp = stamp
            self.counts["dropped"] += 1
            return self.skip(f"stale frame: {(now - stamp) * 1e-9:.2f} s old (max_age {self.param['max_age']:g} s); dropped", count=False)
        rgb = next((m for m in reversed(self.images) if stamp_ns(m) == stamp), None)
        if rgb is None:
            if now - stamp < self.max_sync_ns and not any(stamp_ns(m) > stamp for m in self.images):
                return  # its rgb image may still come
            rgb = min(self.images, key=lambda m: abs(stamp_ns(m) - stamp), default=None)
            if rgb is None or abs(stamp_ns(rgb) - stamp) > self.max_sync_ns:
                self.last_stamp = stamp
                return self.skip("no rgb image within max_sync of the depth image")
        if (not self.odom or self.odom[-1][0] < stamp) and now - stamp < self.max_sync_ns:
            return  # the odometry of the frame's time may still be queued (the executor takes topics in turn)
        self.last_stamp, self.last_fused_at, self.urgent = stamp, now, False
        self.fuse(rgb, depth, stamp)

    def fuse(self, rgb_msg: Image, depth_msg: Image, stamp: int) -> None:
        try:
            if rgb_msg.encoding != "rgb8":
                raise ValueError(f"the camera image must be rgb8, got {rgb_msg.encoding!r}")
            rgb, depth = image_array(rgb_msg), depth_array(depth_msg)
        except ValueError as exc:
            return self.skip(f"bad image: {exc}")
        if self.camera_size is None:
            return self.skip("no camera_info yet: the field of view is unknown")
        if depth.shape[0] != self.camera_size[1]:
            (width, height), shape = self.camera_size, depth.shape
            return self.skip(f"camera_info describes {width}x{height}, the depth image is {shape[1]}x{shape[0]}")
        pose = self.pose_at(stamp)
        if pose is None:
            return self.skip(f"no odometry within max_sync ({self.param['max_sync']:g} s) of the frame")
        joints = self.joints_at(stamp)
        if joints is None:
            return self.skip("no joint_states within max_age of the frame")
        robot = RobotState(*pose, joints["lift"], joints["extend"], joints["gripper"] >= 0.5, "held" if self.holding else None)
        try:
            report = self.perception.update(Frame(rgb, depth, pose), robot)
        except Exception as exc:  # noqa: BLE001  a frame perception chokes on must not end the node
            report = FrameReport(skipped=f"perception failed on the frame: {type(exc).__name__}: {exc}")
        if report.skipped:
            return self.skip(report.skipped)
        self.counts["fused"] += 1
        self.publish_world(robot, depth_msg.header.stamp, report)

    def pose_at(self, stamp: int) -> tuple[float, float, float] | None:
        """Odometry at ``stamp``: interpolated between the messages around it, or the nearest within max_sync."""
        before = max((o for o in self.odom if o[0] <= stamp), default=None, key=lambda o: o[0])
        after = min((o for o in self.odom if o[0] >= stamp), default=None, key=lambda o: o[0])
        if before is not None and after is not None and after[0] - before[0] <= 2 * self.max_sync_ns:
            if after[0] == before[0]:
                return before[1]
            w = (stamp - before[0]) / (after[0] - before[0])
            (x0, y0, a0), (x1, y1, a1) = before[1], after[1]
            turn = math.atan2(math.sin(a1 - a0), math.cos(a1 - a0))
            yaw = a0 + w * turn
            return x0 + w * (x1 - x0), y0 + w * (y1 - y0), math.atan2(math.sin(yaw), math.cos(yaw))
        near = [o for o in (before, after) if o is not None and abs(o[0] - stamp) <= self.max_sync_ns]
        return min(near, key=lambda o: abs(o[0] - stamp))[1] if near else None

    def joints_at(self, stamp: int) -> dict | None:
        near = min(self.joints, key=lambda j: abs(j[0] - stamp), default=None)
        return near[1] if near is not None and abs(near[0] - stamp) <= self.max_age_ns else None

    # -- outputs -------------------------------------------------------------------------------------

    def publish_world(self, robot: RobotState, stamp, report: FrameReport) -> None:
        frame, perception = self.param["odom_frame"], self.perception
        markers, left_out = object_markers(perception, stamp, frame, self.param["marker_lifetime"])
        for reason in left_out:
            self.get_logger().warning(f"left out an object marker: {reason}", throttle_duration_sec=1.0)
        self.pub_objects.publish(markers)
        clouds = {t.id: resample(t.points, OBJECT_POINTS) for t in perception.memory.named().values()}  # ids: the markers'
        self.pub_object_clouds.publish(object_clouds_msg(clouds, stamp, frame))
        self.grasped = perception.world_state(robot).robot.holding or ""
        self.pub_grasped.publish(String(data=self.grasped))
        scene = perception.scene().to_dict()
        key = scene_key(scene)
        if key != self.scene_key:
            self.scene_key = key
            self.pub_scene.publish(String(data=json.dumps(scene)))
        grid = perception.grid
        self.pub_map.publish(occupancy_grid_msg(grid.values(), grid.origin, grid.resolution, stamp, frame))
        self.report(segments=report.segments, seen=report.objects_seen)

    def skip(self, reason: str, count: bool = True) -> None:
        if count:
            self.counts["skipped"] += 1
        self.last_skip = reason
        self.get_logger().warning(f"skipped a frame: {reason}", throttle_duration_sec=1.0)
        self.report()

    def report(self, **extra) -> None:
        status = {
            **self.counts,
            "objects": sorted(self.perception.memory.named()),
            "tables": len(self.perception.memory.tables),
            "holding": self.grasped,
            "last_skip": self.last_skip,
            **extra,
        }
        self.pub_status.publish(String(data=json.dumps(status)))


def main(argv: list[str] | None = None) -> None:
    from ros_nodes.spin import spin_node

    spin_node(PerceptionNode, argv)


if __name__ == "__main__":
    main(sys.argv)
