"""Object tokens (as in LEO and 3D-LLM): one language-model token per object the robot knows of.

A token is a projection of two things: the object's ULIP-2 embedding (the point encoder and head of the ULIP
stage, frozen: the space where a cloud lies near the words that describe it, so "a small red cube" and its
points already agree before the language model sees either) and where the object is: Fourier features of
its centre in the robot's frame (x ahead, y left, metres) and its half-size. ULIP sees each cloud squared to
the axes and scaled into the unit sphere, so size and place come only from the geometry features: "the large
bowl" and "whatever is closest to the bin" need them.

With ``words`` on, each token is followed by what it says in words the language model already reads: the
zero-shot name (the class prompt nearest the ULIP embedding, ``embodied.encoders.zero_shot``), the width,
the place and (``nearest``) the object nearest it: "<token> red cube 5 cm: 62 ahead, 12 left, near blue
bowl;", so "whatever is closest to the blue bowl" is a lookup, not arithmetic. The language model then grounds the
instruction's words in the perceived objects' names (as ConceptGraphs' LLM reads its scene graph), while the
token keeps what the words leave out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embodied.encoders.pointcloud import PointEncoder, PointEncoderConfig, align_footprint, prepare_cloud, unit_sphere
from embodied.encoders.zero_shot import CLASSES, prompt_embeddings
from embodied.inputs import as_cloud, check_tokens

ULIP_DIM = 384  # all-MiniLM-L6-v2's width, the space the ULIP stage aligns clouds to
ULIP_POINTS = 512  # what the ULIP stage trained on (DataConfig.object_points)


@dataclass(frozen=True)
class ObjectTokensConfig:
    enabled: bool = True  # false: no object tokens (checkpoints from before them read as that)
    max_objects: int = 16  # the nearest this many, when the robot knows of more
    bands: int = 6  # Fourier frequencies per coordinate: 1/(4 m) up to 2^(bands-1)/(4 m)
    hidden_size: int = 512
    words: bool = True  # each token followed by the object's zero-shot name, width and place in words
    nearest: bool = True  # and, in those words, the name of the object nearest it

    def __post_init__(self):
        if self.max_objects < 1 or self.bands < 1 or self.hidden_size < 1:
            raise ValueError("object tokens need max_objects, bands and hidden_size >= 1")


def ulip_input(cloud: torch.Tensor, config: PointEncoderConfig, where: str = "object cloud") -> torch.Tensor:
    """An object's checked cloud (``embodied.inputs.as_cloud``, any frame and size) as the ULIP stage trained on
    it: ``ULIP_POINTS`` points in the unit sphere; a small one has its points repeated to fill a group, one
    with too few finite points raises a ValueError naming ``where``."""
    if len(cloud) > ULIP_POINTS:
        cloud = cloud[torch.from_numpy(np.random.default_rng(0).choice(len(cloud), ULIP_POINTS, replace=False))]
    elif 0 < len(cloud) < config.group_size:
        cloud = cloud[torch.arange(config.group_size) % len(cloud)]
    return unit_sphere(align_footprint(prepare_cloud(cloud, ULIP_POINTS, config.group_size, config.in_channels, where)))


def geometry(cloud: torch.Tensor) -> torch.Tensor:
    """(6,) a cloud's bounding-box centre and its half-size squared to the axes, longer side first (the same
    for any heading), from its finite points (it has some: ``ulip_input`` checked)."""
    xyz = cloud[:, :3][torch.isfinite(cloud).all(dim=1)]
    low, high = xyz.min(dim=0).values, xyz.max(dim=0).values
    squared = align_footprint(xyz)
    half = (squared.amax(dim=0) - squared.amin(dim=0)) / 2
    return torch.cat([(low + high) / 2, half[:2].sort(descending=True).values, half[2:]])


def describe(name: str, box: torch.Tensor, near: str | None = None) -> str:
    """An object in words from its name and ``geometry``, and the name of the object ``near`` it: " red cube
    5 cm: 62 ahead, 12 left, near blue bowl;" (centimetres)."""
    width, ahead, left = (round(100 * float(v)) for v in (2 * box[3], box[0], box[1]))
    return f" {name} {width} cm: {ahead} ahead, {abs(left)} {'left' if left >= 0 else 'right'}{f', near {near}' if near else ''};"


def nearest(boxes: torch.Tensor) -> list[int | None]:
    """For each of (n, 6) ``geometry`` boxes, the index of the one whose centre is nearest on the floor
    (None when it is alone)."""
    if len(boxes) < 2:
        return [None] * len(boxes)
    apart = torch.cdist(boxes[:, :2], boxes[:, :2]).fill_diagonal_(float("inf"))
    return apart.argmin(dim=1).tolist()


def ulip_embedding(encoder: PointEncoder, head: nn.Linear, clouds: torch.Tensor) -> torch.Tensor:
    """Unit vectors in the text space: the head on the encoder's class token. The ULIP stage trains this and
    the tower runs it, so what the tower computes is what was aligned."""
    return F.normalize(head(encoder(clouds)[:, 0]), dim=-1)


class UlipPointTower(nn.Module):
    """The ULIP stage's point encoder and projection head: clouds in, unit vectors in the text space out."""

    def __init__(self, config: PointEncoderConfig):
        super().__init__()
        self.encoder = PointEncoder(config)
        self.head = nn.Linear(config.hidden_size, ULIP_DIM)

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        return ulip_embedding(self.encoder, self.head, clouds)


def tower_weights(ulip: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ULIP stage export's point encoder and head as ``UlipPointTower`` weights."""
    renamed = {"point_encoder.": "encoder.", "point_head.": "head."}
    return {new + k.removeprefix(old): v for k, v in ulip.items() for old, new in renamed.items() if k.startswith(old)}


class ObjectEncoder(nn.Module):
    """Clouds of objects -> one token each. The tower stays frozen (``train.language.FROZEN``, and no gradient
    reaches it); the projector learns."""

    def __init__(self, config: ObjectTokensConfig, points: PointEncoderConfig, width: int):
        super().__init__()
        self.config, self.points = config, points
        self.tower = UlipPointTower(points)
        self.register_buffer("frequencies", torch.pi * 2.0 ** torch.arange(config.bands) / 4.0, persistent=False)
        features = ULIP_DIM + 6 * (1 + 2 * config.bands)
        self.projector = nn.Sequential(nn.Linear(features, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, width))

    def forward(self, clouds: list, where: str = "objects") -> tuple[torch.Tensor, list[str]]:
        """(n, width) tokens of the nearest ``max_objects`` of ``clouds`` (each (N, 6) in the robot's frame),
        nearest first (an order the model can learn from), and each one's words (``describe``; "" with
        ``words`` off). A bad cloud raises a ValueError naming ``where[i]``, i its place in ``clouds``."""
        checked = [as_cloud(c, self.points.in_channels, f"{where}[{i}]") for i, c in enumerate(clouds)]
        inputs = [ulip_input(c, self.points, f"{where}[{i}]") for i, c in enumerate(checked)]
        boxes = [geometry(c) for c in checked]
        order = sorted(range(len(boxes)), key=lambda i: float(boxes[i][:2].norm()))[: self.config.max_objects]
        if not order:
            return torch.zeros(0, self.projector[-1].out_features, device=self.frequencies.device), []
        device = self.frequencies.device
        with torch.no_grad():
            embedded = self.tower(torch.stack([inputs[i] for i in order]).to(device))
        box = torch.stack([boxes[i] for i in order]).to(device)
        angles = box[:, :, None] * self.frequencies
        place = torch.cat([box, angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)
        tokens = check_tokens(self.projector(torch.cat([embedded, place], dim=1))[None], where)[0]
        if not self.config.words:
            return tokens, [""] * len(order)
        names = [" ".join(CLASSES[k]) for k in (embedded @ prompt_embeddings().to(device).T).argmax(dim=1).tolist()]
        box = box.cpu()
        near = nearest(box) if self.config.nearest else [None] * len(names)
        return tokens, [describe(n, b, None if j is None else names[j]) for n, b, j in zip(names, box, near)]
