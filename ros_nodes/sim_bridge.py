"""Sim bridge: the simulated robot behind standard ROS 2 topics, so the planner and controller cannot tell it
from hardware.

Publishes camera/image (rgb8), camera/depth (32FC1), camera/camera_info, camera/points (PointCloud2),
joint_states, odom, gripper/holding (Bool: the gripper holds something, as a gripper driver reports), the
task (latched JSON) and task/status, and the simulator's ground truth: grasped (the held object's name, or
empty), objects (a MarkerArray of object poses: perfect perception), the scene description (latched
JSON) and, with ``perception:=ground_truth``, object_clouds (every object's cloud as a perception node
publishes them, for the model's object tokens: each table rendered from a few sides, again after
something moved, at most once per ``object_cloud_period`` seconds). ``perception`` says where that ground truth goes: ``ground_truth`` (the default) on those plain
names, for the planner and controller to use; ``node`` on ground_truth/grasped, ground_truth/objects and
ground_truth/scene (for comparison and debugging only: the perception node publishes the plain names from
the sensors); ``none`` nowhere, as on a robot. With a perception node (``node`` or ``none``) the camera
renders at 256x256 unless ``width`` and ``height`` say otherwise (perception needs the pixels). Takes cmd_vel (Twist) and arm_command
(JointTrajectory of lift, extend, gripper). Physics steps on a timer at ``physics_rate``; a base command
older than ``command_timeout`` is dropped (the base stops). Spin it on one thread (a single-threaded
executor): the renderer's GL context belongs to the thread that made it.

The ``~/reset`` service (std_srvs/Trigger) starts the next episode: the same task with seed + 1, the robot
at its new start, the arm retracted, the base stopped; the new scene and task are latched again (``task``
carries its ``seed``), and the reply names the seed and the instruction. With a perception node it also asks
``perception/reset``: the new episode is another room.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from envs.backend import EXTEND_RANGE, HEAD_FOVY, LIFT_RANGE, MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, to_unit
from envs.env import EmbodiedEnv
from ros_nodes.conversions import (
    arm_targets,
    camera_info_msg,
    cloud_msg,
    image_msg,
    joint_state_msg,
    object_clouds_msg,
    odometry_msg,
    scene_markers,
    twist_velocity,
)
from ros_nodes.params import declare
from ros_nodes.qos import LATCHED, STREAM

PERCEPTION_MODES = ("ground_truth", "node", "none")
CAMERA_SIZE = {"ground_truth": 128, "node": 256, "none": 256}  # px a side when width/height are 0 (auto)
MOVED = 0.01  # m an object moves before its cloud is rendered again


class SimBridge(Node):
    def __init__(self, **node_options):
        super().__init__("sim_bridge", **node_options)
        param = declare(
            self,
            {
                "task": "pick_place",
                "seed": 0,
                "physics_rate": 50.0,
                "camera_rate": 10.0,
                "width": 0,  # 0: 128 with perception:=ground_truth, 256 for a perception node
                "height": 0,
                "num_points": 1024,
                "command_timeout": 0.5,
                "odom_frame": "odom",
                "camera_frame": "head_camera",
                "perception": "ground_truth",  # or "node" / "none": see the module docstring
                "object_cloud_period": 1.0,  # s between object_clouds messages (ground truth only)
            },
        )
        self.mode = param["perception"]
        if self.mode not in PERCEPTION_MODES:
            raise ValueError(f"perception must be one of {', '.join(PERCEPTION_MODES)}, got {self.mode!r}")
        self.period = 1.0 / param["physics_rate"]
        self.command_timeout = param["command_timeout"]
        self.odom_frame, self.camera_frame = param["odom_frame"], param["camera_frame"]
        self.env = EmbodiedEnv(
            task=param["task"],
            width=param["width"] or CAMERA_SIZE[self.mode],
            height=param["height"] or CAMERA_SIZE[self.mode],
            num_points=param["num_points"],
            sensors=(),
            control_dt=self.period,
            max_steps=2**31 - 1,
        )
        self.seed = param["seed"]
        self.env.reset(seed=self.seed)
        self.velocity = (0.0, 0.0, 0.0)
        self.velocity_time = None
        self.arm = {"lift": LIFT_RANGE[0], "extend": EXTEND_RANGE[0], "gripper": 0.0}

        self.pub_image = self.create_publisher(Image, "camera/image", STREAM)
        self.pub_depth = self.create_publisher(Image, "camera/depth", STREAM)
        self.pub_info = self.create_publisher(CameraInfo, "camera/camera_info", STREAM)
        self.pub_points = self.create_publisher(PointCloud2, "camera/points", STREAM)
        self.pub_joints = self.create_publisher(JointState, "joint_states", STREAM)
        self.pub_odom = self.create_publisher(Odometry, "odom", STREAM)
        self.pub_holding = self.create_publisher(Bool, "gripper/holding", STREAM)
        self.pub_status = self.create_publisher(String, "task/status", STREAM)
        self.pub_objects = self.pub_grasped = self.pub_scene = None  # the ground truth, where it goes
        if self.mode != "none":
            truth = "" if self.mode == "ground_truth" else "ground_truth/"
            self.pub_objects = self.create_publisher(MarkerArray, truth + "objects", STREAM)
            self.pub_grasped = self.create_publisher(String, truth + "grasped", STREAM)
            self.pub_scene = self.create_publisher(String, truth + "scene", LATCHED)
        self.pub_task = self.create_publisher(String, "task", LATCHED)
        self.pub_object_clouds = self.create_publisher(PointCloud2, "object_clouds", STREAM) if self.mode == "ground_truth" else None
        self.cloud_positions: dict | None = None  # where the objects were when their clouds were last rendered
        self.object_clouds: dict[int, np.ndarray] = {}  # marker id -> (N, 6) cloud in the odometry frame
        self.create_subscription(Twist, "cmd_vel", self.on_cmd_vel, STREAM)
        self.create_subscription(JointTrajectory, "arm_command", self.on_arm_command, STREAM)
        self.create_service(Trigger, "~/reset", self.on_reset)
        # The next episode is another room: a perception node forgets the last one (fire and forget).
        self.perception_reset = self.create_client(Trigger, "perception/reset") if self.mode != "ground_truth" else None

        self.publish_episode()
        self.create_timer(self.period, self.step)
        self.create_timer(1.0 / param["camera_rate"], self.publish_camera)
        if self.pub_object_clouds is not None:
            self.create_timer(param["object_cloud_period"], self.publish_object_clouds)
        self.publish_state()

    def publish_episode(self) -> None:
        """The scene description and the task, latched: a node that starts later still gets them."""
        base = self.env.unwrapped
        task = {"instruction": base.task.instruction, "goal": base.task.goal(), "seed": self.seed}
        if self.pub_scene is not None:
            self.pub_scene.publish(String(data=json.dumps(base.scene.to_dict())))
        self.pub_task.publish(String(data=json.dumps(task)))

    def on_reset(self, request, response):
        self.seed += 1
        self.env.reset(seed=self.seed)
        self.velocity, self.velocity_time = (0.0, 0.0, 0.0), None
        self.arm = {"lift": LIFT_RANGE[0], "extend": EXTEND_RANGE[0], "gripper": 0.0}
        self.cloud_positions = None  # another room: its objects' clouds are rendered afresh
        if self.perception_reset is not None and self.perception_reset.service_is_ready():
            self.perception_reset.call_async(Trigger.Request())
        self.publish_episode()
        self.publish_state()
        instruction = self.env.unwrapped.task.instruction
        self.get_logger().info(f"reset: seed {self.seed}, {instruction!r}")
        response.success, response.message = True, json.dumps({"seed": self.seed, "instruction": instruction})
        return response

    # -- commands in ---------------------------------------------------------------------------------

    def on_cmd_vel(self, msg: Twist) -> None:
        try:
            self.velocity = twist_velocity(msg)
        except ValueError as exc:
            self.velocity = (0.0, 0.0, 0.0)  # a broken command stops the base rather than repeat the last one
            self.get_logger().warning(f"rejected cmd_vel: {exc}", throttle_duration_sec=1.0)
            return
        self.velocity_time = self.get_clock().now()

    def on_arm_command(self, msg: JointTrajectory) -> None:
        try:
            self.arm.update(arm_targets(msg))
        except ValueError as exc:
            self.get_logger().warning(f"rejected arm_command: {exc}", throttle_duration_sec=1.0)

    def _action(self) -> np.ndarray:
        forward, left, yaw_rate = self.velocity
        now = self.get_clock().now()
        if self.velocity_time is None or (now - self.velocity_time).nanoseconds * 1e-9 > self.command_timeout:
            forward = left = yaw_rate = 0.0
        return np.array(
            [
                np.clip(forward / MAX_LINEAR_SPEED, -1, 1),
                np.clip(left / MAX_LINEAR_SPEED, -1, 1),
                np.clip(yaw_rate / MAX_ANGULAR_SPEED, -1, 1),
                to_unit(self.arm["lift"], LIFT_RANGE),
                to_unit(self.arm["extend"], EXTEND_RANGE),
                1.0 if self.arm["gripper"] >= 0.5 else -1.0,
            ],
            dtype=np.float32,
        )

    # -- state out -----------------------------------------------------------------------------------

    def step(self) -> None:
        self.env.step(self._action())
        self.publish_state()

    def publish_state(self) -> None:
        """Joints, grasp and objects first, odometry last: the controller steps when odometry arrives."""
        base = self.env.unwrapped
        state = base.world_state()  # the simulator's ground truth (the bridge's env has no perceived world)
        robot, stamp = state.robot, self.get_clock().now().to_msg()
        self.state_stamp = stamp  # the camera renders this state until the next step: its frames carry this stamp
        joints = {"lift": robot.lift, "extend": robot.extend, "gripper": 1.0 if robot.gripper_closed else 0.0}
        self.pub_joints.publish(joint_state_msg(joints, stamp))
        self.pub_holding.publish(Bool(data=robot.holding is not None))
        if self.pub_objects is not None:
            self.pub_grasped.publish(String(data=robot.holding or ""))
            self.pub_objects.publish(scene_markers(base.scene, state.objects, stamp, self.odom_frame))
        self.pub_odom.publish(odometry_msg(robot.x, robot.y, robot.yaw, stamp, self.odom_frame))

    def publish_camera(self) -> None:
        base = self.env.unwrapped
        obs = base.camera_observation()
        stamp = self.state_stamp  # when the world looked like this: the odometry of that stamp is the camera's pose
        self.pub_image.publish(image_msg(obs["rgb"], stamp, self.camera_frame))
        self.pub_depth.publish(image_msg(obs["depth"], stamp, self.camera_frame))
        self.pub_info.publish(camera_info_msg(base.config.width, base.config.height, HEAD_FOVY, stamp, self.camera_frame))
        self.pub_points.publish(cloud_msg(obs["points"], stamp, self.odom_frame))
        info = base.info()
        status = {k: info[k] for k in ("success", "holding", "steps") if k in info}
        self.pub_status.publish(String(data=json.dumps(status)))

    def publish_object_clouds(self) -> None:
        """The objects' clouds in the odometry frame, by the ids of their markers on ``objects``; rendered
        again only once something has moved more than ``MOVED`` (rendering takes tens of milliseconds)."""
        base = self.env.unwrapped
        positions = base.world_state().objects
        moved = self.cloud_positions is None or any(
            np.linalg.norm(np.subtract(positions[name], where)) > MOVED for name, where in self.cloud_positions.items()
        )
        if moved:
            self.cloud_positions = {name: np.array(where) for name, where in positions.items()}
            clouds = base.world_object_clouds()
            self.object_clouds = {i: clouds[o.name] for i, o in enumerate(base.scene.objects) if o.name in clouds}
        self.pub_object_clouds.publish(object_clouds_msg(self.object_clouds, self.get_clock().now().to_msg(), self.odom_frame))

    def destroy_node(self):
        self.env.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> None:
    from ros_nodes.spin import spin_node

    spin_node(SimBridge, argv)


if __name__ == "__main__":
    main(sys.argv)
