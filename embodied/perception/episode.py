"""Perception in simulated episodes: the head camera rendered at the perception resolution every few control
steps, with the odometry of that moment, into ``Perception``; the env's skills, planners and plan runner
then read only what it perceived (``EmbodiedEnv.world``)."""

from __future__ import annotations

from collections.abc import Callable

from embodied.perception.camera import Frame
from embodied.perception.naming import ObjectNamer
from embodied.perception.pipeline import Perception, PerceptionConfig
from envs.backend import HEAD_CAMERA, RobotState, WorldState
from envs.env import EmbodiedEnv
from envs.executor import execute_plan
from envs.navmap import NavMap
from envs.plan import Plan, Step
from envs.plan_runner import StepOutcome
from envs.scene import SceneSpec

CAMERA_SIZE = 256  # px a side: objects cover ~4x the pixels they do at 128 (a real RGB-D gives 640x480)
EVERY = 3  # perceive every third control step (3.3 Hz at 10 Hz control); every step while looking around


class PerceivedWorld:
    """An ``envs.env.World``: a fresh memory each episode, fed from the robot's own camera and odometry."""

    def __init__(self, namer: ObjectNamer | None = None, size: int = CAMERA_SIZE, every: int = EVERY, config: PerceptionConfig = PerceptionConfig()):
        self.namer = namer if namer is not None else ObjectNamer()
        self.size, self.every, self.config = size, every, config
        self.perception: Perception | None = None
        self._steps = 0

    def reset(self, env: EmbodiedEnv) -> None:
        self.perception, self._steps = Perception(self.config, self.namer), 0
        self.observe(env)

    def observe(self, env: EmbodiedEnv) -> None:
        self._steps += 1
        if (self._steps - 1) % self.every:
            return
        robot = env.robot_state()
        frame = env.backend.render(HEAD_CAMERA, self.size, self.size)
        self.perception.update(Frame(frame.rgb, frame.depth, (robot.x, robot.y, robot.yaw)), robot)

    def world_state(self, robot: RobotState, time: float) -> WorldState:
        return self.perception.world_state(robot, time)

    def scene(self) -> SceneSpec:
        return self.perception.scene()

    def navmap(self) -> NavMap:
        return self.perception.navmap()

    def known_objects(self) -> list[str]:
        return self.perception.known_objects()


def look_around(env: EmbodiedEnv, on_step: Callable | None = None) -> list[StepOutcome]:
    """The episode's first move in a perceived world: a ``scan`` on the spot, perceiving every frame, so the
    memory holds the room before anything is planned."""
    world = env.world
    every = getattr(world, "every", None)
    if every is not None:
        world.every = 1
    try:
        outcomes, _ = execute_plan(env, Plan("look around.", (Step("scan"),)), on_step=on_step, finish=False)
    finally:
        if every is not None:
            world.every = every
    return outcomes
