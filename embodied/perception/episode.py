"""Perception in simulated episodes: the head camera rendered at the perception resolution every few control
steps (every step while surveying), with the odometry of that moment, into ``Perception``; the env's skills,
planners and plan runner then read only what it perceived (``EmbodiedEnv.world``)."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from embodied.perception.camera import Frame
from embodied.perception.naming import ObjectNamer
from embodied.perception.pipeline import Perception, PerceptionConfig
from envs.backend import HEAD_CAMERA, RobotState, WorldState
from envs.env import EmbodiedEnv
from envs.executor import execute_plan
from envs.navmap import NavMap
from envs.plan import Plan, Step
from envs.plan_runner import StepOutcome
from envs.scene import COLOURS, SHAPES, SceneSpec
from envs.survey import TableSearch

CAMERA_SIZE = 256  # px a side: objects cover ~4x the pixels they do at 128 (a real RGB-D gives 640x480)
EVERY = 3  # perceive every third control step (3.3 Hz at 10 Hz control); every step while surveying
SURVEY_RESERVE = 150  # control steps a survey leaves the episode at least, for the plan itself
_NAMES = re.compile(rf"\b(?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})\b")


class PerceivedWorld:
    """An ``envs.env.World``: a fresh memory each episode, fed from the robot's own camera and odometry."""

    def __init__(self, namer: ObjectNamer | None = None, size: int = CAMERA_SIZE, every: int = EVERY, config: PerceptionConfig = PerceptionConfig()):
        self.namer = namer if namer is not None else ObjectNamer()
        self.size, self.every, self.config = size, every, config
        self.surveying = False  # looking around (``look_around``, ``look_for``): every frame
        self.perception: Perception | None = None
        self._steps = 0
        self.on_frame: Callable[[Frame, RobotState], None] | None = None  # hears each frame after it is fused

    def reset(self, env: EmbodiedEnv) -> None:
        self.perception, self._steps = Perception(self.config, self.namer), 0
        self.observe(env)

    def perceives_next(self) -> bool:
        """Whether the next ``observe`` perceives a frame."""
        return self.surveying or self._steps % self.every == 0

    def observe(self, env: EmbodiedEnv) -> None:
        perceives = self.perceives_next()
        self._steps += 1
        if not perceives:
            return
        robot = env.robot_state()
        rendered = env.backend.render(HEAD_CAMERA, self.size, self.size)
        frame = Frame(rendered.rgb, rendered.depth, (robot.x, robot.y, robot.yaw))
        self.perception.update(frame, robot)
        if self.on_frame is not None:
            self.on_frame(frame, robot)

    def world_state(self, robot: RobotState, time: float) -> WorldState:
        return self.perception.world_state(robot, time)

    def scene(self) -> SceneSpec:
        return self.perception.scene()

    def navmap(self) -> NavMap:
        return self.perception.navmap()

    def known_objects(self) -> list[str]:
        return self.perception.known_objects()

    def object_clouds(self) -> dict[str, np.ndarray]:
        return self.perception.object_clouds()


def look_around(env: EmbodiedEnv, on_step: Callable | None = None, instruction: str | None = None) -> list[StepOutcome]:
    """The episode's first move in a perceived world: a ``scan`` on the spot, perceiving every frame, so the
    memory holds the room before anything is planned; given the ``instruction``, then ``look_for`` what it
    names and the scan did not find."""
    outcomes = _perceiving_every_frame(env, Plan("look around.", (Step("scan"),)), on_step)
    return outcomes + look_for(env, instruction, on_step) if instruction else outcomes


def look_for(env: EmbodiedEnv, instruction: str, on_step: Callable | None = None) -> list[StepOutcome]:
    """After ``look_around``: while the instruction names an object perception has not found, go and look at
    the tables seen only from afar, nearest first (``envs.survey.TableSearch``). Stops once every named
    object is known, or when the episode could not afford another survey."""
    wanted = set(_NAMES.findall(instruction.lower()))
    search = TableSearch()
    outcomes: list[StepOutcome] = []
    while wanted - set(env.known_objects()) and env.max_steps - env.steps >= SURVEY_RESERVE:
        robot = env.robot_state()
        found = search.next(env.world.scene(), env.known_objects(), robot.x, robot.y)
        if found is None:
            break
        table, steps = found
        surveyed = _perceiving_every_frame(env, Plan(f"look closer at {table.name}.", steps), on_step)
        outcomes += surveyed
        search.ended(surveyed[-1].reason)
    return outcomes


def _perceiving_every_frame(env: EmbodiedEnv, plan: Plan, on_step: Callable | None) -> list[StepOutcome]:
    world = env.world
    surveying = getattr(world, "surveying", None)
    if surveying is not None:
        world.surveying = True
    try:
        outcomes, _ = execute_plan(env, plan, on_step=on_step, finish=False)
    finally:
        if surveying is not None:
            world.surveying = surveying
    return outcomes
