"""A simulated episode recorded as the ROS 2 graph would have carried it: the sim bridge's sensor topics, the
perception node's world, the planner's plan and the controller's commands, each on its topic with simulated
timestamps, in one MCAP file (``embodied rollout --record``). ``embodied replay`` publishes it into the nodes.

Topics: task, instruction, plan, task/status (std_msgs/String, JSON as the nodes publish it); camera/image,
camera/depth, camera/camera_info (the frames perception fused); camera/points (the model's cloud, when the
policy looks at one); odom, joint_states, gripper/holding; cmd_vel and arm_command (what the robot was told
to do each step); objects (MarkerArray), grasped, scene and map: perception's after each frame in a perceived
world, the simulator's objects (whenever one moves) in a privileged one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Bool, String

from embodied.perception.camera import Frame
from envs.backend import HEAD_FOVY, RobotState
from ros_nodes.conversions import (
    arm_trajectory_msg,
    camera_info_msg,
    cloud_msg,
    image_msg,
    joint_state_msg,
    occupancy_grid_msg,
    odometry_msg,
    scene_markers,
    twist_msg,
)
from ros_nodes.perception import object_markers, scene_key
from ros_nodes.recorder import LATCHED_TOPICS
from ros_nodes.recording import RecordingWriter

ODOM, CAMERA = "odom", "head_camera"  # frame ids, as the sim bridge names them


class EpisodeRecording:
    """Made before the episode's reset (perception fuses a frame at reset); it is the executor's ``on_step``
    callback, hears each fused frame from the perceived world, and ``plan`` logs each plan."""

    def __init__(self, env, path: str | Path, policy: str = ""):
        self.env, self.policy = env.unwrapped, policy
        self.out = RecordingWriter(path, LATCHED_TOPICS)
        self.started = False
        self.scene_key: str | None = None
        self.truth: tuple | None = None  # the simulator's objects as last written (privileged world)
        world = self.env.world
        if world is not None:
            world.on_frame = self.frame

    @property
    def path(self) -> Path:
        return self.out.path

    def _now(self) -> tuple[Time, int]:
        ns = round(self.env.time * 1e9)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), ns

    def _begin(self) -> None:
        """The task and the robot's state at the episode's start, once, before anything else."""
        if self.started:
            return
        self.started = True
        base = self.env
        _, ns = self._now()
        task = {"instruction": base.task.instruction, "goal": base.task.goal(), "seed": base.episode_seed}
        self.out.write("/task", String(data=json.dumps(task)), ns)
        self._robot(base.robot_state())

    # -- what the episode hears --------------------------------------------------------------------

    def __call__(self, obs: dict, info: dict, step) -> None:
        """One control step: the command given, the robot's state after it, the task's status."""
        self._begin()
        base = self.env
        stamp, ns = self._now()
        if base.command is not None:
            command, yaw = base.command, base.robot_state().yaw
            c, s = np.cos(yaw), np.sin(yaw)
            forward, left = c * command.vx + s * command.vy, -s * command.vx + c * command.vy
            self.out.write("/cmd_vel", twist_msg(forward, left, command.wz), ns)
            self.out.write(
                "/arm_command",
                arm_trajectory_msg(command.lift, command.extend, float(command.close_gripper), stamp),
                ns,
            )
        self._robot(base.robot_state())
        if "points" in obs:
            self.out.write("/camera/points", cloud_msg(obs["points"], stamp, ODOM), ns)
        if base.world is None:  # the simulator's objects, what the skills see in a privileged world: when they move
            state = base.world_state()
            where = (state.robot.holding, *(tuple(np.round(xyz, 3)) for xyz in state.objects.values()))
            if where != self.truth:
                self.truth = where
                self.out.write("/objects", scene_markers(base.scene, state.objects, stamp, ODOM), ns)
                self.out.write("/grasped", String(data=state.robot.holding or ""), ns)
        status = {k: info[k] for k in ("success", "holding", "steps") if k in info}
        self.out.write("/task/status", String(data=json.dumps(status)), ns)

    def frame(self, frame: Frame, robot: RobotState) -> None:
        """A frame perception fused, and the world it believes in after it."""
        self._begin()
        stamp, ns = self._now()
        height, width = np.shape(frame.depth)
        self.out.write("/camera/image", image_msg(frame.rgb, stamp, CAMERA), ns)
        self.out.write("/camera/depth", image_msg(np.asarray(frame.depth, np.float32), stamp, CAMERA), ns)
        self.out.write("/camera/camera_info", camera_info_msg(width, height, HEAD_FOVY, stamp, CAMERA), ns)
        perception = self.env.world.perception
        self.out.write("/objects", object_markers(perception, stamp, ODOM, 0.0)[0], ns)
        self.out.write("/grasped", String(data=perception.world_state(robot).robot.holding or ""), ns)
        scene = perception.scene().to_dict()
        if scene_key(scene) != self.scene_key:
            self.scene_key = scene_key(scene)
            self.out.write("/scene", String(data=json.dumps(scene)), ns)
        grid = perception.grid
        self.out.write("/map", occupancy_grid_msg(grid.values(), grid.origin, grid.resolution, stamp, ODOM), ns)

    def plan(self, instruction: str, text: str, error: str = "") -> None:
        """The instruction as the planner got it, and its plan, as the planner node publishes them."""
        self._begin()
        _, ns = self._now()
        self.out.write("/instruction", String(data=instruction), ns)
        record = {
            "instruction": instruction,
            "plan": text,
            "valid": not error,
            "error": error,
            "planner": self.policy,
            "stamp": ns * 1e-9,
        }
        self.out.write("/plan", String(data=json.dumps(record)), ns)

    def close(self) -> None:
        if self.env.world is not None and self.env.world.on_frame == self.frame:
            self.env.world.on_frame = None
        self.out.close()

    # -- internals ----------------------------------------------------------------------------------

    def _robot(self, robot: RobotState) -> None:
        stamp, ns = self._now()
        joints = {"lift": robot.lift, "extend": robot.extend, "gripper": 1.0 if robot.gripper_closed else 0.0}
        self.out.write("/joint_states", joint_state_msg(joints, stamp), ns)
        self.out.write("/gripper/holding", Bool(data=robot.holding is not None), ns)
        self.out.write("/odom", odometry_msg(robot.x, robot.y, robot.yaw, stamp, ODOM), ns)
