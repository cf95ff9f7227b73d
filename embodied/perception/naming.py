"""Zero-shot naming of object segments: the ULIP-2-aligned point-cloud encoder embeds a segment, the frozen
text tower embeds one prompt per colour and shape ("a red cube"), and the nearest prompt names it. Below a
confidence threshold the segment stays "unknown".

The weights are the ULIP stage's export (``embodied train ulip``), shipped in ``embodied/checkpoints/ulip``;
only the point encoder and its projection head are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from embodied.encoders.objects import UlipPointTower, tower_weights, ulip_input
from embodied.encoders.zero_shot import CLASSES, prompt_embeddings
from embodied.errors import CheckpointError
from embodied.inputs import as_cloud
from embodied.model import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from embodied.threads import torch_threads

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "ulip"
UNKNOWN = "unknown"
MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Label:
    colour: str
    shape: str
    confidence: float  # the softmax probability of the chosen prompt
    scores: np.ndarray | None = field(default=None, compare=False, repr=False)  # every prompt's, to fuse views

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}" if self.colour != UNKNOWN else UNKNOWN

    @property
    def known(self) -> bool:
        return self.colour != UNKNOWN


class ObjectNamer:
    """Names point clouds of objects (world-frame xyz + rgb in [0, 1], any size)."""

    def __init__(self, checkpoint: str | Path | None = None):
        folder = Path(checkpoint) if checkpoint else SHIPPED
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"no ULIP checkpoint in {folder}: train one with `embodied train ulip` or pass its model folder")
        config = ModelConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text())["model"])
        weights = load_file(str(folder / WEIGHTS_FILE))
        self.points = config.points
        self.tower = UlipPointTower(config.points)
        self.tower.load_state_dict(tower_weights(weights))
        self.scale = float(weights["logit_scale"].clamp(max=np.log(100)).exp())
        self.tower.eval()
        self.prompts = prompt_embeddings()

    @torch.no_grad()
    def name(self, clouds: list[np.ndarray]) -> list[Label]:
        if not clouds:
            return []
        with torch_threads(1):  # a few small clouds: one thread is faster than contending for two busy cores
            batch = torch.stack([ulip_input(as_cloud(c, self.points.in_channels, "object segment"), self.points, "object segment") for c in clouds])
            embedded = self.tower(batch)
        probs = torch.softmax(self.scale * embedded @ self.prompts.T, dim=1)
        return [label_of(p) for p in probs.numpy()]


def label_of(scores: np.ndarray) -> Label:
    """The most probable class of ``scores`` (one probability per prompt), "unknown" below ``MIN_CONFIDENCE``."""
    k = int(np.argmax(scores))
    confidence = float(scores[k])
    colour, shape = CLASSES[k] if confidence >= MIN_CONFIDENCE else (UNKNOWN, UNKNOWN)
    return Label(colour, shape, confidence, scores)
