"""Perception's cost: one head-camera frame perceived against the same frame rendered, and closed-loop
episodes on the perceived world against the same episodes on the simulator's state: the oracle's (the
env's own cost, where perception is most of the difference) and the shipped model's (a rollout as users
run one, planning included)."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.run import Ratio
from embodied.perception.camera import Frame
from embodied.perception.episode import PerceivedWorld, look_around
from embodied.perception.naming import ObjectNamer
from embodied.perception.pipeline import Perception
from embodied.rollout import RolloutConfig, make_planner, run_episode
from envs.backend import HEAD_CAMERA
from envs.env import EmbodiedEnv
from envs.executor import execute_plan
from envs.plan import parse_plan
from envs.planners import OraclePlanner

SEED = 3_500_000


def _scan_frames(env: EmbodiedEnv, size: int) -> list[tuple[Frame, object]]:
    frames = []

    def keep(*_):
        robot = env.robot_state()
        raw = env.backend.render(HEAD_CAMERA, size, size)
        frames.append((Frame(raw.rgb, raw.depth, (robot.x, robot.y, robot.yaw)), robot))

    env.reset(seed=SEED)
    look_around(env, keep)
    return frames


def frame_cost(namer: ObjectNamer, size: int = 128, passes: int = 5) -> Ratio:
    """Every frame of a scan perceived in turn (naming included, as often as the memory asks for it), each
    right after the renderer drew a frame of that size: total render time over total perception time."""
    env = EmbodiedEnv(task="pick_place", sensors=())
    frames = _scan_frames(env, size)
    perceive, render = 0.0, 0.0
    for _ in range(passes):
        perception = Perception(namer=namer)
        for frame, robot in frames:
            started = time.perf_counter()
            env.backend.render(HEAD_CAMERA, size, size)
            middle = time.perf_counter()
            perception.update(frame, robot)
            render += middle - started
            perceive += time.perf_counter() - middle
    env.close()
    calls = passes * len(frames)
    detail = f"{size}x{size}: perception {1e3 * perceive / calls:.2f} ms a frame, render {1e3 * render / calls:.2f} ms; {calls} frames of a scan, alternated frame by frame"
    return Ratio(f"render / perception, one {size}x{size} frame", render / perceive, ">= 1.0", detail)


def closed_loop(namer: ObjectNamer, episodes: int = 3) -> Ratio:
    """The oracle's pick-and-place episodes with the model's sensors on (what a model rollout renders every
    step), on the simulator's state and on the perceived world (which also scans first), alternated."""
    rates = {"privileged": [], "perceived": []}
    env = EmbodiedEnv(task="pick_place", sensors=("rgb", "points"))
    for i in range(episodes):
        for world in ("privileged", "perceived"):
            env.world = PerceivedWorld(namer) if world == "perceived" else None
            obs, _ = env.reset(seed=SEED + i)
            started = time.perf_counter()
            if env.world is not None:
                look_around(env)
            plan = parse_plan(OraclePlanner().plan(obs, env), env.known_objects())
            execute_plan(env, plan)
            rates[world].append(env.steps / (time.perf_counter() - started))
    env.close()
    privileged, perceived = (float(np.median(rates[w])) for w in ("privileged", "perceived"))
    detail = f"perceived {perceived:.0f} steps/s, privileged {privileged:.0f} steps/s; median of {episodes} pick-and-place episodes each"
    return Ratio("closed loop: perceived / privileged steps per second", perceived / privileged, ">= 0.5", detail)


def model_closed_loop(namer: ObjectNamer, episodes: int = 4) -> Ratio:
    """The shipped model's pick-and-place rollouts (fast decoding, the planning in the time) on the perceived
    world (scan, look for what the instruction names, plan, act) and on the simulator's state, alternated,
    each side first in half the pairs."""
    planner = make_planner(RolloutConfig(policy="model"))
    env = EmbodiedEnv(task="pick_place", sensors=planner.sensors)
    worlds = {"privileged": None, "perceived": PerceivedWorld(namer)}
    rates: dict[str, list[float]] = {w: [] for w in worlds}
    for world in worlds.values():  # warm-up: first calls and the model's first passes
        env.world = world
        run_episode(env, planner, SEED - 1)
    for i in range(episodes):
        for world in sorted(worlds, reverse=i % 2 == 1):
            env.world = worlds[world]
            started = time.perf_counter()
            run_episode(env, planner, SEED + i)
            rates[world].append(env.steps / (time.perf_counter() - started))
    env.close()
    privileged, perceived = (float(np.median(rates[w])) for w in ("privileged", "perceived"))
    detail = f"perceived {perceived:.0f} steps/s, privileged {privileged:.0f} steps/s; median of {episodes} pick-and-place rollouts each"
    return Ratio("closed loop, the shipped model planning: perceived / privileged steps per second", perceived / privileged, ">= 0.5", detail)


def run() -> list[Ratio]:
    namer = ObjectNamer()
    return [frame_cost(namer), closed_loop(namer), model_closed_loop(namer)]
