"""Zero-shot naming's vocabulary: one prompt per colour and shape ("a red cube"), embedded by ULIP's frozen
text tower. Perception names segments against it, the ULIP stage measures its accuracy with it, and object
tokens carry the name it gives each object."""

from __future__ import annotations

import torch

from embodied.data.phrasing import CLASS_PROMPT
from envs.scene import COLOURS, SHAPES

CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]

_PROMPTS: torch.Tensor | None = None


def class_prompts() -> list[str]:
    """One prompt per colour and shape, in ``CLASSES`` order."""
    return [CLASS_PROMPT.format(colour=c, shape=s) for c, s in CLASSES]


def prompt_embeddings() -> torch.Tensor:
    """(len(CLASSES), 384) unit vectors: the class prompts through the text tower, once per process."""
    global _PROMPTS
    if _PROMPTS is None:
        from embodied.train.text_tower import TextTower

        _PROMPTS = TextTower().embed(class_prompts())
    return _PROMPTS
