"""Plan requests from simulated scenes, and one plan timed per decoding path: what ``embodied plan``
prints, and what the plan-latency benchmark measures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from embodied.decoding import DecodingConfig
from embodied.model import EmbodiedModel
from embodied.model_planner import env_request
from embodied.prompts import PlanRequest
from envs.env import EmbodiedEnv


def scene_requests(task: str, seed: int, count: int, world: str = "privileged", instruction: str | None = None) -> Iterator[PlanRequest]:
    """What a rollout's planner is asked at the start of episodes ``seed``, ``seed + 1``...: the task's
    instruction, the head camera's image and point cloud, and the objects the robot knows of with their
    clouds (in a perceived world, what it found looking around, and for what the instruction names, first)."""
    env = EmbodiedEnv(task=task, sensors=("rgb", "points"))
    look_around = None
    if world == "perceived":  # perception (open3d, the ULIP encoder) loads only when asked for
        from embodied.perception.episode import PerceivedWorld, look_around

        env.world = PerceivedWorld()
    try:
        for episode in range(count):
            obs, _ = env.reset(seed=seed + episode)
            asked = instruction or obs["instruction"]
            if look_around is not None:
                look_around(env, instruction=asked)
                obs = env.observation()
            yield env_request({**obs, "instruction": asked}, env)
    finally:
        env.close()


@dataclass(frozen=True)
class Timing:
    plan: str
    seconds: float  # median over the repeats
    tokens: int  # the plan's length in backbone tokens

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def time_plan(
    model: EmbodiedModel, request: PlanRequest, decoding: DecodingConfig, repeat: int = 3, warm_up: bool = True, inputs: Sequence[str] | None = None
) -> Timing:
    """The plan for ``request`` and its latency, encoders and prompt included; with ``warm_up``, an untimed
    call first (a path's first call builds its int8 copy and the system prompt's cache). ``inputs``: what the
    model is shown (``embodied.prompts.INPUTS``; None: all it reads)."""
    sample = request.sample(model.inputs if inputs is None else inputs)
    objects = [None if request.objects is None else list(request.objects)]
    if warm_up:
        model.plan([sample], objects, decoding=decoding)
    plans, seconds = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        plans += model.plan([sample], objects, decoding=decoding)
        seconds.append(time.perf_counter() - started)
    return Timing(plans[0], statistics.median(seconds), len(model.tokenizer(plans[0], add_special_tokens=False).input_ids))
