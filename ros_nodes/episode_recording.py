"""A simulated episode recorded as the ROS 2 graph would have carried it: the sim bridge's sensor topics, the
perception node's world, the planner's plan and the controller's commands, each on its topic with simulated
timestamps, in one MCAP file (``embodied rollout --record``). ``embodied replay`` publishes it into the nodes.

Topics: task, instruction, plan, task/status (std_msgs/String, JSON as the nodes publish it); camera/image,
camera/depth, camera/camera_info (the frames perception fused; in a privileged world, the policy's camera
when it looks at one, every third step as perception would); camera/points (the model's cloud, when it looks
at one, every third step); odom and joint_states every control step, gripper/holding when it changes;
cmd_vel every step and arm_command when the joint target changes (what the robot was told to do); objects
(MarkerArray), grasped, scene and map: perception's in a perceived world, the simulator's objects in a
privileged one, each written when it changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Bool, String

from embodied.perception.camera import Frame
from embodied.perception.episode import EVERY
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
MOVED = 0.002  # m an object of the simulator moves before its marker is written again


class EpisodeRecording:
    """Made before the episode's reset (perception fuses a frame at reset); it is the executor's ``on_step``
    callback, hears each fused frame from the perceived world, and ``plan`` logs each plan."""

    def __init__(self, env, path: str | Path, policy: str = ""):
        self.env, self.policy = env.unwrapped, policy
        self.out = RecordingWriter(path, LATCHED_TOPICS)
        self.started = False
        self._said: dict[str, object] = {}  # what each world topic last said (``_changed``)
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
        stamp, ns = self._now()
        task = {"instruction": base.task.instruction, "goal": base.task.goal(), "seed": base.episode_seed}
        self.out.write("/task", String(data=json.dumps(task)), ns)
        self._robot(base.robot_state(), stamp, ns)

    # -- what the episode hears --------------------------------------------------------------------

    def __call__(self, obs: dict, info: dict, step) -> None:
        """One control step: the command given, the robot's state after it, the task's status (the joint
        target, the gripper's hold and the status when they change, and the status at the end)."""
        self._begin()
        base = self.env
        stamp, ns = self._now()
        if base.command is not None:
            command, yaw = base.command, base.robot_state().yaw
            c, s = np.cos(yaw), np.sin(yaw)
            forward, left = c * command.vx + s * command.vy, -s * command.vx + c * command.vy
            self.out.write("/cmd_vel", twist_msg(forward, left, command.wz), ns)
            arm = (round(command.lift, 4), round(command.extend, 4), float(command.close_gripper))
            if self._changed("/arm_command", arm):  # a joint target holds until the next one
                self.out.write("/arm_command", arm_trajectory_msg(*arm, stamp), ns)
        self._robot(base.robot_state(), stamp, ns)
        if (base.steps - 1) % EVERY == 0:  # the camera at the rate perception takes frames
            if "points" in obs:
                self.out.write("/camera/points", cloud_msg(obs["points"], stamp, ODOM), ns)
            if base.world is None and "rgb" in obs:  # no perception frames: the camera the policy looked at
                self._camera(obs["rgb"], obs.get("depth"), stamp, ns)
        if base.world is None:  # the simulator's objects, what the skills see in a privileged world
            state = base.world_state()
            last = self._said.setdefault("/objects", {})
            moved = {
                name
                for name, xyz in state.objects.items()
                if name not in last or np.abs(xyz - last[name]).max() > MOVED
            }
            if moved:  # only what moved: a marker stands until replaced
                last.update({name: state.objects[name].copy() for name in moved})
                self.out.write("/objects", scene_markers(base.scene, state.objects, stamp, ODOM, moved), ns)
            if self._changed("/grasped", state.robot.holding):
                self.out.write("/grasped", String(data=state.robot.holding or ""), ns)
        status = {k: info[k] for k in ("success", "holding", "steps") if k in info}
        if self._changed("/task/status", (status.get("success"), status.get("holding"))) or base.ended:
            self.out.write("/task/status", String(data=json.dumps(status)), ns)

    def frame(self, frame: Frame, robot: RobotState) -> None:
        """A frame perception fused, and the world it believes in after it."""
        self._begin()
        stamp, ns = self._now()
        self._camera(frame.rgb, frame.depth, stamp, ns)
        perception = self.env.world.perception
        scene = perception.scene()
        if self._changed("/objects", tuple((o.name, *np.round((o.x, o.y, o.z, o.half), 3)) for o in scene.objects)):
            self.out.write("/objects", object_markers(perception, stamp, ODOM, 0.0)[0], ns)
        held = perception.world_state(robot).robot.holding
        if self._changed("/grasped", held):
            self.out.write("/grasped", String(data=held or ""), ns)
        described = scene.to_dict()
        if self._changed("/scene", scene_key(described)):
            self.out.write("/scene", String(data=json.dumps(described)), ns)
        grid = perception.grid
        values = grid.values()
        if self._changed("/map", values.tobytes()):
            self.out.write("/map", occupancy_grid_msg(values, grid.origin, grid.resolution, stamp, ODOM), ns)

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

    def _changed(self, topic: str, key) -> bool:
        """Whether ``key`` (what ``topic`` would say) differs from what it last said: the world's topics are
        written when they change, as latched state, not again every frame."""
        if topic in self._said and self._said[topic] == key:
            return False
        self._said[topic] = key
        return True

    def _camera(self, rgb: np.ndarray, depth: np.ndarray | None, stamp: Time, ns: int) -> None:
        height, width = np.shape(rgb)[:2]
        self.out.write("/camera/image", image_msg(rgb, stamp, CAMERA), ns)
        if depth is not None:
            self.out.write("/camera/depth", image_msg(np.asarray(depth, np.float32), stamp, CAMERA), ns)
        self.out.write("/camera/camera_info", camera_info_msg(width, height, HEAD_FOVY, stamp, CAMERA), ns)

    def _robot(self, robot: RobotState, stamp: Time, ns: int) -> None:
        """Odometry and the joints every step; whether the gripper holds something when that changes."""
        joints = {"lift": robot.lift, "extend": robot.extend, "gripper": 1.0 if robot.gripper_closed else 0.0}
        self.out.write("/joint_states", joint_state_msg(joints, stamp), ns)
        if self._changed("/gripper/holding", robot.holding is not None):
            self.out.write("/gripper/holding", Bool(data=robot.holding is not None), ns)
        self.out.write("/odom", odometry_msg(robot.x, robot.y, robot.yaw, stamp, ODOM), ns)
