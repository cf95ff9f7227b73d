"""The embodied model as a planner: one code path from an observation to plan text, shared by simulated
rollouts, the Ray inference replicas and the ROS 2 planner node. Every request names the objects the robot
knows of, and the decoder writes only plans over those. A ``policy`` other than "model" shows the model less
(``embodied.prompts.MODEL_INPUTS``): "blind" is the baseline that shows what seeing adds, so it is shown
nothing perceived at all, not even the known objects' names through its decoder (whose plan rules would
copy them into its thought)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from embodied.decoding import PLAN_TOKENS, DecodingConfig
from embodied.model import EmbodiedModel, load_model
from embodied.prompts import MODEL_INPUTS, PlanRequest


class ModelPlanner:
    """``checkpoint`` as ``load_model`` reads it (None: the shipped checkpoint), or an already loaded
    ``model``; ``decoding``: the fast path by default (``embodied.decoding.REFERENCE``: the plain one)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        policy: str = "model",
        max_new_tokens: int = PLAN_TOKENS,
        model: EmbodiedModel | None = None,
        decoding: DecodingConfig = DecodingConfig(),
    ):
        if policy not in MODEL_INPUTS:
            raise ValueError(f"unknown model policy {policy!r}; choose one of {', '.join(MODEL_INPUTS)}")
        self.model = model if model is not None else load_model(checkpoint)
        self.max_new_tokens = max_new_tokens
        self.decoding = decoding
        self.name = policy
        shown = MODEL_INPUTS[policy]
        self.inputs: tuple[str, ...] = self.model.inputs if shown is None else tuple(i for i in shown if i in self.model.inputs)
        self.sensors: tuple[str, ...] = ("rgb", "points") if {"image", "cloud"} & set(self.inputs) else ()

    def plan_many(self, requests: Sequence[PlanRequest], stop: Callable[[], bool] | None = None) -> list[str]:
        """Plans for a batch of requests, decoded together. ``stop`` (e.g. ``threading.Event().is_set``) ends
        decoding with ``embodied.decoding.DecodingInterrupted`` once it returns true."""
        if not requests:
            return []
        samples = [r.sample(self.inputs) for r in requests]
        return self.model.plan(
            samples,
            [None if r.objects is None or not self.inputs else list(r.objects) for r in requests],
            self.max_new_tokens,
            [r.temperature for r in requests],
            [r.seed for r in requests],
            stop=stop,
            decoding=self.decoding,
            instructions=[r.instruction for r in requests],
        )

    def plan(self, observation: dict, env) -> str:
        """A rollout policy's plan for the episode ``env`` is in (the ``envs.planners.Planner`` protocol)."""
        return self.plan_many([env_request(observation, env, "objects" in self.inputs)])[0]


def env_request(observation: dict, env, objects: bool = True, temperature: float = 0.0, seed: int | None = None) -> PlanRequest:
    """The request an episode's observation makes: its instruction and camera, the objects the robot knows
    of and, with ``objects``, their clouds for object tokens (a survey in the privileged world: worth
    rendering only for a model that reads them)."""
    env = env.unwrapped
    clouds = env.object_clouds() if objects else {}
    names = env.known_objects()
    return PlanRequest(
        observation["instruction"], observation.get("rgb"), observation.get("points"), names, temperature, seed,
        [clouds[name] for name in names if name in clouds] if objects else None,
    )  # fmt: skip
