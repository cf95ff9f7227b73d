"""A PointBERT-style point-cloud encoder: farthest-point-sampled centres, kNN groups, a mini-PointNet per
group, and a transformer over the group tokens. xyz + rgb in, one token per group (plus a class token) out.

Everything is batched torch: the only Python loop is farthest-point sampling's, over the centres it picks
(each pick depends on the last), and each of its iterations is one vectorised pass over all points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PointEncoderConfig:
    num_groups: int = 32
    group_size: int = 32
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    in_channels: int = 6  # xyz + rgb

    def __post_init__(self):
        if self.num_groups < 1 or self.group_size < 1:
            raise ValueError("num_groups and group_size must be positive")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by heads {self.heads}")
        if self.in_channels < 3:
            raise ValueError("points need at least xyz (in_channels >= 3)")


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of points spread over each cloud, starting from the point farthest from the
    centroid (deterministic, unlike a random start)."""
    batch, num_points, _ = xyz.shape
    coords = xyz.transpose(1, 2).contiguous()  # (B, 3, N): each step streams three contiguous rows
    rows = torch.arange(batch, device=xyz.device)
    chosen = torch.empty(batch, count, dtype=torch.long, device=xyz.device)
    nearest = torch.full((batch, num_points), float("inf"), device=xyz.device)
    distance = torch.empty_like(nearest)
    current = (coords - coords.mean(dim=2, keepdim=True)).square_().sum(dim=1).argmax(dim=1)
    for i in range(count):
        chosen[:, i] = current
        torch.sum((coords - coords[rows, :, current, None]).square_(), dim=1, out=distance)
        torch.minimum(nearest, distance, out=nearest)
        current = nearest.argmax(dim=1)
    return chosen


def group_points(points: torch.Tensor, num_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (B, G, 3) and groups (B, G, K, C) with xyz relative to their centre."""
    xyz = points[..., :3]
    batch = torch.arange(points.shape[0], device=points.device)
    centres = xyz[batch[:, None], farthest_point_sample(xyz, num_groups)]
    neighbours = torch.cdist(centres, xyz).topk(group_size, dim=-1, largest=False).indices  # (B, G, K)
    groups = points[batch[:, None, None], neighbours]
    groups = torch.cat([groups[..., :3] - centres[:, :, None], groups[..., 3:]], dim=-1)
    return centres, groups


def prepare_cloud(points: torch.Tensor, num_points: int, min_points: int, channels: int = 6) -> torch.Tensor:
    """Drop non-finite points and resample to a fixed count, so a batch stacks; fail clearly when too few
    valid points remain to form groups."""
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.ndim != 2 or points.shape[1] != channels:
        raise ValueError(f"a point cloud is an (N, {channels}) array, got shape {tuple(points.shape)}")
    valid = points[torch.isfinite(points).all(dim=1)]
    if len(valid) < min_points:
        raise ValueError(f"point cloud has {len(valid)} finite points of {len(points)}; need at least {min_points}")
    if len(valid) == num_points:
        return valid
    index = torch.arange(num_points) % len(valid) if len(valid) < num_points else torch.linspace(0, len(valid) - 1, num_points).long()
    return valid[index]


class PointEncoder(nn.Module):
    def __init__(self, config: PointEncoderConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        # mini-PointNet: a shared per-point MLP, max-pooled, then again with the pooled feature beside each point
        self.first = nn.Sequential(nn.Linear(config.in_channels, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 256))
        self.second = nn.Sequential(nn.Linear(512, 512), nn.LayerNorm(512), nn.GELU(), nn.Linear(512, d))
        self.position = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_position = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True, activation="gelu")
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    @property
    def out_dim(self) -> int:
        return self.config.hidden_size

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C) points -> (B, 1 + G, D) tokens: a class token, then one token per group."""
        centres, groups = group_points(points, self.config.num_groups, self.config.group_size)
        features = self.first(groups)  # (B, G, K, 256)
        pooled = features.max(dim=2, keepdim=True).values.expand_as(features)
        tokens = self.second(torch.cat([pooled, features], dim=-1)).max(dim=2).values  # (B, G, D)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + torch.cat([self.cls_position.expand(len(tokens), -1, -1), self.position(centres)], dim=1)
        return self.norm(self.transformer(tokens))
