"""The gymnasium environment: a seeded scene, a task, RGB-D and point-cloud observations, low-level actions.

Action (Box(-1, 1, (6,))): base velocity forward, left, yaw rate (scaled to the speed limits), lift and
arm-extension position targets (scaled to the joint ranges, moved at most ``MAX_JOINT_SPEED``), and the
gripper (> 0 closes). Closing next to an object grasps it; opening lets it go.

Episodes end when the agent calls ``submit`` (the ``done()`` / ``answer(...)`` of a plan) or after the
task's step limit.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import TASKS
from envs.backend import (
    EXTEND_RANGE,
    HEAD_CAMERA,
    LIFT_RANGE,
    MAX_ANGULAR_SPEED,
    MAX_JOINT_SPEED,
    MAX_LINEAR_SPEED,
    OVERVIEW_CAMERA,
    Backend,
    CameraFrame,
    RobotCommand,
    RobotState,
    WorldState,
    from_unit,
)
from envs.navmap import NavMap
from envs.object_views import object_clouds, to_robot_frame
from envs.paraphrase import PHRASINGS, paraphrase
from envs.pointcloud import backproject, sample_cloud
from envs.scene import SceneSpec, generate_scene
from envs.tasks import Task, TaskUnavailable

SENSORS = ("rgb", "depth", "points", "segmentation")
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.?!'-"
GRASP_RADIUS = 0.05  # m between the grasp point and an object's surface
MAX_SAMPLING_TRIES = 20


@dataclass(frozen=True)
class EnvConfig:
    """Validated at construction, so a wrong config fails with its reason before any episode runs."""

    task: str = "pick_place"
    width: int = 128
    height: int = 128
    num_points: int = 1024
    voxel_size: float = 0.03
    pixel_stride: int = 3  # back-project every 3rd pixel: at 128 px that still spaces rays ~3 cm apart at 1 m
    max_depth: float = 6.0
    sensors: tuple[str, ...] = ("rgb", "depth", "points")
    control_dt: float = 0.1
    max_steps: int | None = None  # None: the task's own limit
    backend: str = "mujoco"
    phrasing: str = "template"  # instructions as the task writes them, or reworded ("varied", "held_out": envs.paraphrase)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        unknown = set(self.sensors) - set(SENSORS)
        if unknown:
            raise ValueError(f"unknown sensors {sorted(unknown)}; choose from {', '.join(SENSORS)}")
        if "segmentation" in self.sensors and "points" not in self.sensors:
            raise ValueError("the 'segmentation' sensor labels the point cloud: add 'points' too")
        if not (16 <= self.width <= 1024 and 16 <= self.height <= 1024):
            raise ValueError(f"image size must be 16..1024 pixels a side, got {self.width}x{self.height}")
        if self.pixel_stride < 1:
            raise ValueError(f"pixel_stride must be >= 1, got {self.pixel_stride}")
        if self.num_points < 1 or self.voxel_size <= 0 or self.max_depth <= 0 or self.control_dt <= 0:
            raise ValueError("num_points, voxel_size, max_depth and control_dt must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be positive")
        if self.backend not in ("mujoco", "habitat"):
            raise ValueError(f"unknown backend {self.backend!r}; choose mujoco or habitat")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"unknown phrasing {self.phrasing!r}; choose one of {', '.join(PHRASINGS)}")


class World(Protocol):
    """What the robot knows of its episode when it is not the simulator's ground truth: perception
    (``embodied/perception``) plugs in here, so the skills, the planners and the plan runner read the
    perceived scene through the same calls as the privileged one."""

    def reset(self, env: EmbodiedEnv) -> None:
        """A new episode has begun: forget the last one, take in the robot's sensors."""

    def observe(self, env: EmbodiedEnv) -> None:
        """After every step: take in the robot's sensors."""

    def world_state(self, robot: RobotState, time: float) -> WorldState: ...

    def scene(self) -> SceneSpec: ...

    def navmap(self) -> NavMap: ...

    def known_objects(self) -> list[str]: ...

    def object_clouds(self) -> dict[str, np.ndarray]:
        """World-frame (N, 6) xyz + rgb clouds of the known objects, by name."""


def make_backend(name: str) -> Backend:
    if name == "habitat":
        from envs.habitat_backend import HabitatBackend

        return HabitatBackend()
    from envs.mujoco_backend import MujocoBackend

    return MujocoBackend()


class EmbodiedEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, **overrides):
        if config is not None and overrides:
            raise ValueError(f"pass either config or keyword settings, not both (got {sorted(overrides)})")
        self.config = config = EnvConfig(**overrides) if config is None else config
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.task_cls = TASKS[config.task]
        self.max_steps = config.max_steps or self.task_cls.max_steps
        self.backend = make_backend(config.backend)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
        h, w, n = config.height, config.width, config.num_points
        obs = {
            "proprio": spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32),
            "instruction": spaces.Text(max_length=512, charset=INSTRUCTION_CHARSET),
        }
        if "rgb" in config.sensors:
            obs["rgb"] = spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
        if "depth" in config.sensors:
            obs["depth"] = spaces.Box(0.0, np.inf, shape=(h, w, 1), dtype=np.float32)
        if "points" in config.sensors:
            obs["points"] = spaces.Box(-np.inf, np.inf, shape=(n, 6), dtype=np.float32)
        if "segmentation" in config.sensors:
            obs["point_ids"] = spaces.Box(-1, 255, shape=(n,), dtype=np.int32)
        self.observation_space = spaces.Dict(obs)
        self.scene: SceneSpec | None = None
        self.task: Task | None = None
        self.navmap: NavMap | None = None
        self.world: World | None = None  # None: the skills see the simulator's state

    # -- episode -------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode_seed = episode_seed = int(self.np_random.integers(2**31)) if seed is None else int(seed)
        self.scene, self.task = self._sample_episode(episode_seed)
        self.backend.load(self.scene)
        self.navmap = NavMap(self.scene)
        self.steps = 0
        self.path_length = 0.0
        self.answer: str | None = None
        self.ended = False
        self._lift, self._extend, self._closed = LIFT_RANGE[0], EXTEND_RANGE[0], False
        self._cloud_rng = np.random.default_rng(episode_seed)
        self._survey: tuple[int, dict] | None = None  # the privileged object clouds, and the step they are of
        self._state = self.backend.state()
        self.command: RobotCommand | None = None  # the last command the robot was given (recordings log it)
        if self.world is not None:
            self.world.reset(self)
        return self._observation(), self.info()

    def _sample_episode(self, seed: int) -> tuple[SceneSpec, Task]:
        """The scene and task for a seed; a scene that cannot host the task is redrawn deterministically."""
        reasons = []
        for attempt in range(MAX_SAMPLING_TRIES):
            scene_seed = seed if attempt == 0 else seed * 7919 + attempt
            scene = generate_scene(scene_seed, self.task_cls.scene_config)
            try:
                task = self.task_cls(scene, np.random.default_rng([seed, attempt]))
            except TaskUnavailable as exc:
                reasons.append(str(exc))
                continue
            if task.start != scene.robot_start:
                scene = dataclasses.replace(scene, robot_start=task.start)
            if task.commands:  # a question keeps its words: its phrasings are the data's (embodied/data/phrasing.py)
                task.instruction = paraphrase(task.instruction, self.config.phrasing, np.random.default_rng([seed, attempt, 1]))
            return scene, task
        raise RuntimeError(f"no {self.config.task} episode for seed {seed}: {'; '.join(reasons)}")

    def step(self, action):
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64)
        invalid = action.shape != self.action_space.shape or not np.all(np.isfinite(action))
        if invalid:  # a safe stop: hold still, keep the joint targets, keep the gripper as it is
            command = self._command(np.zeros(3), self._lift, self._extend, self._closed)
        else:
            action = np.clip(action, -1.0, 1.0)
            command = self._command(action[:3], *self._joint_targets(action[3:5]), action[5] > 0)
        if not self.ended:
            self._act(command)
        self.steps += 1
        terminated = self.ended
        truncated = not terminated and self.steps >= self.max_steps
        info = self.info()
        info["invalid_action"] = bool(invalid)
        reward = float(info["success"]) if (terminated or truncated) else 0.0
        return self._observation(), reward, terminated, truncated, info

    def submit(self, answer: str | None = None):
        """End the episode (``done()``, or ``answer(...)`` for a question) and return the final step."""
        if self.task is None:
            raise RuntimeError("call reset() before submit()")
        self.answer = answer
        self.ended = True
        self._act(self._command(np.zeros(3), self._lift, self._extend, self._closed))
        info = self.info()
        return self._observation(), float(info["success"]), True, False, info

    def view_from(self, x: float, y: float, yaw: float, segmentation: bool = True) -> CameraFrame:
        """The head camera's frame with the robot standing at (x, y, yaw) in this episode's scene: the extra
        viewpoints a dataset is rendered from (``frame_observation`` turns it into an observation). The
        episode itself is over after this."""
        if self.scene is None:
            raise RuntimeError("call reset() before view_from()")
        self.backend.load(dataclasses.replace(self.scene, robot_start=(float(x), float(y), float(yaw))))
        self._state = self.backend.state()
        self.ended = True
        return self.backend.render(HEAD_CAMERA, self.config.width, self.config.height, segmentation)

    # -- dynamics ------------------------------------------------------------------------------------

    def _joint_targets(self, normalized: np.ndarray) -> tuple[float, float]:
        step = MAX_JOINT_SPEED * self.config.control_dt
        lift, extend = from_unit(normalized[0], LIFT_RANGE), from_unit(normalized[1], EXTEND_RANGE)
        return (
            float(self._lift + np.clip(lift - self._lift, -step, step)),
            float(self._extend + np.clip(extend - self._extend, -step, step)),
        )

    def _command(self, base: np.ndarray, lift: float, extend: float, close: bool) -> RobotCommand:
        yaw = self._state.robot.yaw
        c, s = np.cos(yaw), np.sin(yaw)
        forward, left = base[0] * MAX_LINEAR_SPEED, base[1] * MAX_LINEAR_SPEED
        return RobotCommand(
            vx=c * forward - s * left,
            vy=s * forward + c * left,
            wz=base[2] * MAX_ANGULAR_SPEED,
            lift=lift,
            extend=extend,
            close_gripper=bool(close),
        )

    def _act(self, command: RobotCommand) -> None:
        before, self.command = self._state.robot, command
        self._lift, self._extend = command.lift, command.extend
        if command.close_gripper and not self._closed:
            self._grasp_nearest()
        elif not command.close_gripper and self._closed and before.holding:
            self.backend.detach()
        self._closed = command.close_gripper
        self.backend.apply(command)
        self.backend.advance(self.config.control_dt)
        self._state = self.backend.state()
        self.path_length += float(np.hypot(self._state.robot.x - before.x, self._state.robot.y - before.y))
        if self.world is not None:
            self.world.observe(self)

    def _grasp_nearest(self) -> None:
        grasp = self._state.robot.grasp_point
        best, best_gap = None, GRASP_RADIUS
        for obj in self.scene.objects:
            centre = self._state.objects[obj.name].copy()
            if obj.is_container:
                centre[2] += 0.03
            gap = np.linalg.norm(centre - grasp) - obj.half
            if gap <= best_gap:
                best, best_gap = obj.name, gap
        if best is not None:
            self.backend.attach(best)
            self._state = self.backend.state()

    # -- observations --------------------------------------------------------------------------------

    def observation(self) -> dict:
        """The observation now (what the last step returned, rendered again): for a planner mid-episode."""
        return self._observation()

    def world_state(self) -> WorldState:
        """The state the skills read: the simulator's, or with a ``world`` the perceived one."""
        if self.world is None:
            return self._state
        return self.world.world_state(self._state.robot, self._state.time)

    @property
    def time(self) -> float:
        """Simulated seconds since the episode began."""
        return self._state.time

    def robot_state(self) -> RobotState:
        """The robot's own sensing: odometry, joint positions, and whether the gripper holds something."""
        return self._state.robot

    def known_objects(self) -> list[str]:
        """The objects the robot knows of, by name: every planner constrains its plan to these, and the
        episode parses plans against them."""
        return self.scene.object_names if self.world is None else self.world.known_objects()

    def world_object_clouds(self) -> dict[str, np.ndarray]:
        """The known objects' (N, 6) clouds in the world (odometry) frame, by name: the perceived world's fused
        tracks, or in the privileged world every table looked at from a few sides (``envs.object_views``),
        rendered once per step it is asked at."""
        if self.world is not None:
            return self.world.object_clouds()
        if self._survey is None or self._survey[0] != self.steps:
            self._survey = (self.steps, object_clouds(self.backend, self.scene, np.random.default_rng(self.episode_seed)))
        return self._survey[1]

    def object_clouds(self) -> dict[str, np.ndarray]:
        """The known objects' clouds in the robot's frame (x ahead, y left), by name: what object tokens are
        made of."""
        robot = self._state.robot
        return {name: to_robot_frame(cloud, robot.x, robot.y, robot.yaw) for name, cloud in self.world_object_clouds().items()}

    def skill_view(self) -> tuple[SceneSpec, NavMap]:
        """The scene and navigation map the skills plan with."""
        if self.world is None:
            return self.scene, self.navmap
        return self.world.scene(), self.world.navmap()

    def _observation(self) -> dict:
        r = self._state.robot
        obs = {
            "proprio": np.array(
                [r.x, r.y, np.cos(r.yaw), np.sin(r.yaw), r.lift, r.extend, float(r.gripper_closed), float(r.holding is not None)],
                dtype=np.float32,
            ),
            "instruction": self.task.instruction,
        }
        if {"rgb", "depth", "points"} & set(self.config.sensors):
            obs.update(self.camera_observation(self.config.sensors))
        return obs

    def camera_observation(self, sensors=("rgb", "depth", "points")) -> dict:
        """The head camera's observation now, whatever the configured sensors (the ROS bridge renders at
        its camera rate, not every physics step)."""
        config = self.config
        frame = self.backend.render(HEAD_CAMERA, config.width, config.height, "segmentation" in sensors)
        return self.frame_observation(frame, sensors)

    def frame_observation(self, frame: CameraFrame, sensors=("rgb", "depth", "points")) -> dict:
        """The observation a head-camera frame gives: the same processing for every frame source."""
        config = self.config
        obs = {}
        if "rgb" in sensors:
            obs["rgb"] = frame.rgb
        if "depth" in sensors:
            obs["depth"] = frame.depth[..., None].astype(np.float32)
        if "points" in sensors:
            xyz, rgb, seg = backproject(frame, config.max_depth, config.pixel_stride)
            points, ids = sample_cloud(xyz, rgb, seg, config.num_points, config.voxel_size, self._cloud_rng)
            obs["points"] = points
            if ids is not None:
                obs["point_ids"] = ids
        return obs

    def info(self) -> dict:
        metrics = self.task.evaluate(self._state, self.answer)
        info = {
            "task": self.task.name,
            "seed": self.episode_seed,
            "steps": self.steps,
            "path_length": self.path_length,
            "holding": self._state.robot.holding,
            "answer": self.answer,
            **metrics,
        }
        shortest = self.task.goal().get("shortest_path")
        if shortest is not None:
            info["spl"] = float(metrics["success"]) * shortest / max(self.path_length, shortest, 1e-6)
        return info

    def render(self):
        """Overview camera beside the head camera, for GIFs."""
        if self.render_mode != "rgb_array" or self.task is None:
            return None
        overview = self.backend.render(OVERVIEW_CAMERA, 320, 240).rgb
        head = self.backend.render(HEAD_CAMERA, 240, 240).rgb
        return np.concatenate([overview, head], axis=1)

    def close(self):
        self.backend.close()
