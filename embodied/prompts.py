"""Multimodal sentences and prompt formats.

A sample is a chat: user turns that may hold ``<img>`` and ``<pcd>`` placeholders anywhere (each replaced by
the projected tokens of the next image or point cloud), and assistant turns, the only text the loss sees.
Turns are rendered in ChatML, the format SmolLM2-Instruct was tuned on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

IMAGE = "<img>"
POINTS = "<pcd>"
PLACEHOLDER_RE = re.compile(f"({re.escape(IMAGE)}|{re.escape(POINTS)})")
PLAN_SYSTEM = "You are a robot. Reply with a thought line, then numbered skill calls."


@dataclass
class Sample:
    """One conversation. ``turns`` are (user, assistant) pairs; the last assistant may be None: the reply
    to generate."""

    turns: list[tuple[str, str | None]]
    images: list = field(default_factory=list)  # (H, W, 3) uint8 arrays, in placeholder order
    clouds: list = field(default_factory=list)  # (N, 6) xyz + rgb arrays, in placeholder order
    system: str | None = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError unless the placeholders in the user turns match the items one to one."""
        if not self.turns:
            raise ValueError("a sample needs at least one turn")
        if any(answer is None for _, answer in self.turns[:-1]):
            raise ValueError("only the last turn may lack its assistant reply")
        elsewhere = [self.system or "", *(answer or "" for _, answer in self.turns)]
        if any(PLACEHOLDER_RE.search(text) for text in elsewhere):
            raise ValueError(f"{IMAGE} and {POINTS} belong in user turns, not in the system prompt or replies")
        text = "".join(user for user, _ in self.turns)
        for placeholder, items, kind in ((IMAGE, self.images, "images"), (POINTS, self.clouds, "clouds")):
            if text.count(placeholder) != len(items):
                raise ValueError(f"{text.count(placeholder)} {placeholder} placeholder(s) but {len(items)} {kind}")

    def segments(self) -> list[tuple[str, bool]]:
        """ChatML text pieces, each marked True where it is a target for the loss."""
        pieces: list[tuple[str, bool]] = []
        if self.system:
            pieces.append((f"<|im_start|>system\n{self.system}<|im_end|>\n", False))
        for user, answer in self.turns:
            pieces.append((f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n", False))
            if answer is not None:
                pieces.append((f"{answer}<|im_end|>\n", True))
        return pieces


def plan_sample(instruction: str, image=None, cloud=None, plan: str | None = None) -> Sample:
    return Sample([(_observation(image, cloud) + instruction, plan)], _some(image), _some(cloud), PLAN_SYSTEM)


@dataclass(frozen=True)
class PlanRequest:
    """What every planner asks the model: the instruction, what the head camera sees, and the objects the
    robot knows of (the plan may name only these; None: any)."""

    instruction: str
    image: object = None  # (H, W, 3) uint8 head-camera image
    cloud: object = None  # (N, 6) xyz + rgb point cloud
    objects: Sequence[str] | None = None
    temperature: float = 0.0  # > 0 samples (RL); 0 is greedy
    seed: int | None = None  # makes a sampled plan repeatable

    def sample(self, blind: bool = False) -> Sample:
        return plan_sample(self.instruction) if blind else plan_sample(self.instruction, self.image, self.cloud)


def vqa_sample(question: str, image=None, cloud=None, answer: str | None = None) -> Sample:
    return Sample([(_observation(image, cloud) + f"Question: {question} Answer briefly.", answer)], _some(image), _some(cloud))


def caption_sample(image=None, cloud=None, caption: str | None = None) -> Sample:
    return Sample([(_observation(image, cloud) + "Describe the scene.", caption)], _some(image), _some(cloud))


def text_sample(prompt: str, answer: str | None = None) -> Sample:
    return Sample([(prompt, answer)])


def _observation(image, cloud) -> str:
    return (IMAGE if image is not None else "") + (POINTS if cloud is not None else "") + ("\n" if image is not None or cloud is not None else "")


def _some(item) -> list:
    return [] if item is None else [item]
