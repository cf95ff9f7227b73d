"""Multimodal sentences and prompt formats.

A sample is a chat: user turns that may hold ``<img>``, ``<pcd>`` and ``<objects>`` placeholders anywhere
(each replaced by the projected tokens of the next image, point cloud, or set of object clouds: one token
per object), and assistant turns, the only text the loss sees.
Turns are rendered in ChatML, the format SmolLM2-Instruct was tuned on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

IMAGE = "<img>"
POINTS = "<pcd>"
OBJECTS = "<objects>"
PLACEHOLDER_RE = re.compile(f"({re.escape(IMAGE)}|{re.escape(POINTS)}|{re.escape(OBJECTS)})")
INPUTS = ("image", "cloud", "objects")  # what a model may be shown
# The model policies of the evaluations: what each is shown (None: every input the model takes). "blind" is
# the baseline that shows what seeing adds; the others are the ablations.
MODEL_INPUTS = {"model": None, "objects_only": ("objects",), "image_only": ("image", "cloud"), "blind": ()}
PLAN_SYSTEM = "You are a robot. Reply with a thought line, then numbered skill calls."


@dataclass
class Sample:
    """One conversation. ``turns`` are (user, assistant) pairs; the last assistant may be None: the reply
    to generate."""

    turns: list[tuple[str, str | None]]
    images: list = field(default_factory=list)  # (H, W, 3) uint8 arrays, in placeholder order
    clouds: list = field(default_factory=list)  # (N, 6) xyz + rgb arrays, in placeholder order
    system: str | None = None
    objects: list = field(default_factory=list)  # per placeholder, a list of (N, 6) object clouds in the robot's frame

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
            raise ValueError(f"{IMAGE}, {POINTS} and {OBJECTS} belong in user turns, not in the system prompt or replies")
        text = "".join(user for user, _ in self.turns)
        for placeholder, items, kind in ((IMAGE, self.images, "images"), (POINTS, self.clouds, "clouds"), (OBJECTS, self.objects, "object sets")):
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


def plan_sample(instruction: str, image=None, cloud=None, plan: str | None = None, objects=None) -> Sample:
    return Sample([(_observation(image, cloud, objects) + instruction, plan)], _some(image), _some(cloud), PLAN_SYSTEM, _some(objects))


@dataclass(frozen=True)
class PlanRequest:
    """What every planner asks the model: the instruction, what the head camera sees, and the objects the
    robot knows of (the plan may name only these; None: any) with, for object tokens, their clouds."""

    instruction: str
    image: object = None  # (H, W, 3) uint8 head-camera image
    cloud: object = None  # (N, 6) xyz + rgb point cloud
    objects: Sequence[str] | None = None
    temperature: float = 0.0  # > 0 samples (RL); 0 is greedy
    seed: int | None = None  # makes a sampled plan repeatable
    object_clouds: Sequence | None = None  # (N, 6) clouds in the robot's frame, one per known object

    def sample(self, inputs: Sequence[str], plan: str | None = None) -> Sample:
        """The request as the model reads it, showing only ``inputs`` (``with_inputs``; () is the blind model),
        with ``plan`` as the reply to score (RL) or none to write one."""
        return with_inputs(plan_sample(self.instruction, self.image, self.cloud, plan), inputs, self.object_clouds)


def vqa_sample(question: str, image=None, cloud=None, answer: str | None = None, objects=None) -> Sample:
    observed = _observation(image, cloud, objects)
    return Sample([(observed + f"Question: {question} Answer briefly.", answer)], _some(image), _some(cloud), objects=_some(objects))


def caption_sample(image=None, cloud=None, caption: str | None = None, objects=None) -> Sample:
    return Sample([(_observation(image, cloud, objects) + "Describe the scene.", caption)], _some(image), _some(cloud), objects=_some(objects))


def text_sample(prompt: str, answer: str | None = None) -> Sample:
    return Sample([(prompt, answer)])


def with_inputs(sample: Sample, inputs: Sequence[str], objects: list | None = None) -> Sample:
    """``sample`` showing only ``inputs`` (of ``INPUTS``): its observation (the placeholders that open the first
    user turn) made again from its image and cloud and from ``objects`` (clouds of the known objects, robot
    frame), each left out unless named and there. The model's inputs are chosen here, once: the blind
    baseline is ``inputs=()``, the ablations are the rest."""
    unknown = set(inputs) - set(INPUTS)
    if unknown:
        raise ValueError(f"unknown inputs {sorted(unknown)}; choose from {', '.join(INPUTS)}")
    (user, reply), *later = sample.turns
    header = re.match(f"(?:{PLACEHOLDER_RE.pattern})+\n", user)
    body = user[header.end() :] if header else user
    image = sample.images[0] if "image" in inputs and sample.images else None
    cloud = sample.clouds[0] if "cloud" in inputs and sample.clouds else None
    objects = (sample.objects[0] if sample.objects else objects) if "objects" in inputs else None
    return Sample([(_observation(image, cloud, objects) + body, reply), *later], _some(image), _some(cloud), sample.system, _some(objects))


def _observation(image, cloud, objects=None) -> str:
    shown = (IMAGE if image is not None else "") + (POINTS if cloud is not None else "") + (OBJECTS if objects is not None else "")
    return shown + ("\n" if shown else "")


def _some(item) -> list:
    return [] if item is None else [item]
