"""The embodied model as a rollout policy: it sees the head camera's image and point cloud and the
instruction, nothing privileged, and writes the plan the skills then carry out."""

from __future__ import annotations

from embodied.model import EmbodiedModel, ModelConfig
from embodied.prompts import plan_sample


class ModelPlanner:
    name = "model"
    sensors = ("rgb", "points")

    def __init__(self, checkpoint: str | None = None, config: ModelConfig | None = None, max_new_tokens: int = 96):
        self.model = (EmbodiedModel.from_pretrained(checkpoint) if checkpoint else EmbodiedModel(config)).eval()
        self.max_new_tokens = max_new_tokens

    def plan(self, observation: dict, env) -> str:
        sample = plan_sample(observation["instruction"], observation["rgb"], observation["points"])
        return self.model.plan([sample], max_new_tokens=self.max_new_tokens)[0]
