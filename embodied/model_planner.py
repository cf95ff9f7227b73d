"""The embodied model as a rollout policy: it sees the head camera's image and point cloud and the
instruction, nothing privileged, and writes the plan the skills then carry out. ``blind`` is the same
model without the image and point cloud: the baseline that shows what seeing adds."""

from __future__ import annotations

from embodied.model import EmbodiedModel, ModelConfig
from embodied.plan import PLAN_TOKENS
from embodied.prompts import plan_sample


class ModelPlanner:
    def __init__(
        self, checkpoint: str | None = None, config: ModelConfig | None = None, max_new_tokens: int = PLAN_TOKENS, blind: bool = False
    ):
        self.model = (EmbodiedModel.from_pretrained(checkpoint) if checkpoint else EmbodiedModel(config)).eval()
        self.max_new_tokens = max_new_tokens
        self.blind = blind
        self.name = "blind" if blind else "model"
        self.sensors: tuple[str, ...] = () if blind else ("rgb", "points")

    def plan(self, observation: dict, env) -> str:
        if self.blind:
            sample = plan_sample(observation["instruction"])
        else:
            sample = plan_sample(observation["instruction"], observation["rgb"], observation["points"])
        return self.model.plan([sample], max_new_tokens=self.max_new_tokens)[0]
