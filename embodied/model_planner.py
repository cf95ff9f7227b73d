"""The embodied model as a planner: one code path from an observation to plan text, shared by simulated
rollouts, the Ray inference replicas and the ROS 2 planner node. Every request names the objects the robot
knows of, and the decoder writes only plans over those. ``blind`` is the same model without the image and
point cloud: the baseline that shows what seeing adds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from embodied.decoding import PLAN_TOKENS, DecodingConfig
from embodied.model import EmbodiedModel, load_model
from embodied.prompts import PlanRequest


class ModelPlanner:
    """``checkpoint`` as ``load_model`` reads it (None: the shipped checkpoint), or an already loaded
    ``model``; ``decoding``: the fast path by default (``embodied.decoding.REFERENCE``: the plain one)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        blind: bool = False,
        max_new_tokens: int = PLAN_TOKENS,
        model: EmbodiedModel | None = None,
        decoding: DecodingConfig = DecodingConfig(),
    ):
        self.model = model if model is not None else load_model(checkpoint)
        self.max_new_tokens = max_new_tokens
        self.decoding = decoding
        self.blind = blind
        self.name = "blind" if blind else "model"
        self.sensors: tuple[str, ...] = () if blind else ("rgb", "points")

    def plan_many(self, requests: Sequence[PlanRequest], stop: Callable[[], bool] | None = None) -> list[str]:
        """Plans for a batch of requests, decoded together. ``stop`` (e.g. ``threading.Event().is_set``) ends
        decoding with ``embodied.decoding.DecodingInterrupted`` once it returns true."""
        if not requests:
            return []
        samples = [r.sample(blind=self.blind) for r in requests]
        return self.model.plan(
            samples,
            [None if r.objects is None else list(r.objects) for r in requests],
            self.max_new_tokens,
            [r.temperature for r in requests],
            [r.seed for r in requests],
            stop=stop,
            decoding=self.decoding,
        )

    def plan(self, observation: dict, env) -> str:
        """A rollout policy's plan for the episode ``env`` is in (the ``envs.planners.Planner`` protocol)."""
        request = PlanRequest(observation["instruction"], observation.get("rgb"), observation.get("points"), env.unwrapped.known_objects())
        return self.plan_many([request])[0]
