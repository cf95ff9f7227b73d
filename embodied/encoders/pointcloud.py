"""A PointBERT-style point-cloud encoder: farthest-point-sampled centres, kNN groups, a mini-PointNet per
group, and a transformer over the group tokens. xyz + rgb in, one token per group (plus a class token) out.

Grouping chooses indices, which needs no gradient, on the CPU: farthest-point sampling in numpy (its
Python loop runs over the centres it picks, each pick depending on the last, and each iteration is one
vectorised pass over all points), kNN in batched torch. The distances FPS computes are the ones kNN needs,
so grouping never measures a distance twice. Gathering the groups, and everything after, runs in torch on
the points' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embodied.inputs import as_cloud


@dataclass(frozen=True)
class PointEncoderConfig:
    num_groups: int = 32
    group_size: int = 32
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    in_channels: int = 6  # xyz + rgb

    def __post_init__(self):
        small = [f"{k} {v}" for k, v in vars(self).items() if v < 1]
        if small:
            raise ValueError(f"point encoder sizes must be positive, got {', '.join(small)}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by heads {self.heads}")
        if self.in_channels < 3:
            raise ValueError("points need at least xyz (in_channels >= 3)")


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of points spread over each cloud, starting from the point farthest from the
    centroid (deterministic, unlike a random start)."""
    return torch.from_numpy(_farthest_points(xyz, count)[0]).to(xyz.device)


# a point's query row (-2c, 1, |c|^2) from its point row (c, |c|^2, 1): query . point = |point - c|^2
_QUERY_ROWS, _QUERY_SCALE = [0, 1, 2, 4, 3], np.array([-2, -2, -2, 1, 1], np.float32)[:, None]


def _farthest_points(xyz: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray]:
    """FPS indices (B, count) and the squared distances (B, count, N) from each pick to every point, which
    kNN grouping reuses.

    Runs in numpy on the CPU whatever the device: FPS is ``count`` dependent steps, each one pass over the
    points, too short for a GPU launch or torch's per-call overhead to pay off (an argmax over 16k floats
    takes numpy 1 us and torch 15 us), which made this loop three times slower in torch. Each step is one
    (1 x 5) @ (5 x N) product, |p|^2 + |c|^2 - 2 p.c, on a centred cloud so the expansion loses little
    precision.
    """
    cloud = xyz.detach().to("cpu", torch.float32).numpy()
    batch, num_points, _ = cloud.shape
    points = np.empty((batch, 5, num_points), np.float32)  # rows x, y, z, |p|^2, 1 of the centred cloud
    coords = points[:, :3]
    coords[:] = cloud.transpose(0, 2, 1)
    coords -= coords.mean(axis=2, keepdims=True)
    np.einsum("bcn,bcn->bn", coords, coords, out=points[:, 3])
    points[:, 4] = 1
    queries = points[:, _QUERY_ROWS] * _QUERY_SCALE
    distance = np.empty((batch, count, num_points), np.float32)
    chosen = np.empty((batch, count), np.int64)
    nearest = np.full((batch, num_points), np.inf, np.float32)
    rows = np.arange(batch)
    pick = points[:, 3].argmax(axis=1)
    for i in range(count):
        chosen[:, i] = pick
        np.matmul(queries[rows, :, pick][:, None], points, out=distance[:, i : i + 1])
        np.minimum(nearest, distance[:, i], out=nearest)
        pick = nearest.argmax(axis=1)
    return chosen, distance


def smallest(values: torch.Tensor, k: int, rows: int = 8) -> torch.Tensor:
    """Indices (..., k) of the k smallest of each row of values (..., W), in no order, without a top-k over
    whole rows (top-k costs ~k log k per element on a CPU): view the columns as blocks of ``rows`` (column j
    is in block j % (W / rows), so the block minima are a vectorised reduction across rows); only the k
    blocks with the smallest minima can hold the k smallest values, since those k minima are already k
    values no larger than anything in another block. The k blocks are found the same way, recursively."""
    *lead, width = values.shape
    if width < 4 * k * rows:
        return values.topk(k, dim=-1, largest=False, sorted=False).indices
    columns = -(-width // rows)
    if columns * rows != width:
        values = torch.nn.functional.pad(values, (0, columns * rows - width), value=float("inf"))
    blocks = values.view(*lead, rows, columns)
    best = smallest(blocks.amin(dim=-2), k, rows)  # (..., k) block indices
    candidates = torch.gather(blocks, -1, best[..., None, :].expand(*lead, rows, k)).flatten(-2)
    pick = candidates.topk(k, dim=-1, largest=False, sorted=False).indices  # row * k + position in best
    return torch.gather(best, -1, pick % k) + (pick // k) * columns


def group_indices(xyz: torch.Tensor, num_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FPS centre indices (B, G) and the indices (B, G, K) of each centre's K nearest points (in no order)."""
    if group_size > xyz.shape[1]:
        raise ValueError(f"groups of {group_size} need at least that many points, got {xyz.shape[1]}")
    centres, distance = _farthest_points(xyz, num_groups)
    neighbours = smallest(torch.from_numpy(distance), group_size)
    return torch.from_numpy(centres).to(xyz.device), neighbours.to(xyz.device)


def group_points(points: torch.Tensor, num_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (B, G, 3) and groups (B, G, K, C) with xyz relative to their centre."""
    centre_index, neighbours = group_indices(points[..., :3], num_groups, group_size)
    batch = torch.arange(points.shape[0], device=points.device)
    centres = points[batch[:, None], centre_index, :3]
    groups = points[batch[:, None, None], neighbours]
    groups = torch.cat([groups[..., :3] - centres[:, :, None], groups[..., 3:]], dim=-1)
    return centres, groups


def prepare_cloud(
    points: torch.Tensor, num_points: int, min_points: int, channels: int = 6, where: str = "point cloud"
) -> torch.Tensor:
    """Check the cloud (``embodied.inputs.as_cloud``), drop non-finite points and resample to a fixed count,
    so a batch stacks; fail clearly, naming the cloud ``where``, when too few valid points remain to form groups."""
    points = as_cloud(points, channels, where)
    valid = points[torch.isfinite(points).all(dim=1)]
    if len(valid) < min_points:
        raise ValueError(f"{where} has {len(valid)} finite points of {len(points)}; need at least {min_points}")
    if len(valid) == num_points:
        return valid
    index = torch.arange(num_points) % len(valid) if len(valid) < num_points else torch.linspace(0, len(valid) - 1, num_points).long()
    return valid[index]


_TURNS = torch.deg2rad(torch.arange(0.0, 90.0, 1.0))  # a rectangle's footprint repeats every quarter turn
# A square's bounding box grows up to 2x as it turns, a disc's not at all. Squaring only footprints that grow
# this much: 1.6-1.8 named 98.6% of privileged robot-frame objects (1.9: 91%) and kept perception's labels
# at 96.8% (squaring every footprint: 94.5%, its one-sided views of cylinders read as cubes).
SQUARE_GROWTH = 1.7


def align_footprint(cloud: torch.Tensor) -> torch.Tensor:
    """The cloud turned about the vertical (z) axis so its footprint's tightest bounding rectangle lies along
    x and y (when it has sides: ``SQUARE_GROWTH``): the same object reads the same from any heading. ULIP
    learned its shapes from simulated objects that stand square to the world's axes; seen from the robot's
    frame, turned, a fifth of the cubes and bins read as cylinders and bowls. Its finite points must be
    there (``prepare_cloud`` checks)."""
    finite = torch.isfinite(cloud).all(dim=1)
    xy = cloud[finite, :2] - cloud[finite, :2].mean(dim=0)
    cos, sin = _TURNS.cos().to(cloud), _TURNS.sin().to(cloud)
    along = xy[:, :1] * cos + xy[:, 1:] * sin
    across = xy[:, 1:] * cos - xy[:, :1] * sin
    area = (along.amax(0) - along.amin(0)) * (across.amax(0) - across.amin(0))
    k = int(area.argmin())
    if area.max() < SQUARE_GROWTH * area[k]:
        return cloud  # round (or a round thing's arc, seen from one side): no sides to square, leave it be
    c, s = cos[k], sin[k]
    turned = cloud.clone()
    turned[:, 0], turned[:, 1] = cloud[:, 0] * c + cloud[:, 1] * s, cloud[:, 1] * c - cloud[:, 0] * s
    return turned


def unit_sphere(cloud: torch.Tensor) -> torch.Tensor:
    """An object's cloud centred and scaled into the unit sphere, as PointBERT and ULIP train on (in metres an
    object's neighbourhoods are millimetres apart, too small a signal beside colour)."""
    xyz = cloud[:, :3] - cloud[:, :3].mean(dim=0)
    return torch.cat([xyz / xyz.norm(dim=1).max().clamp(min=1e-6), cloud[:, 3:]], dim=1)


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
        pooled = features.max(dim=2, keepdim=True).values  # (B, G, 1, 256)
        # second's first layer on [pooled, feature]: the pooled half once per group, not once per point (the
        # same sum at about half the cost of the encoder's largest product)
        mix, width = self.second[0], features.shape[-1]
        hidden = F.linear(features, mix.weight[:, width:]) + F.linear(pooled, mix.weight[:, :width], mix.bias)
        tokens = self.second[1:](hidden).max(dim=2).values  # (B, G, D)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + torch.cat([self.cls_position.expand(len(tokens), -1, -1), self.position(centres)], dim=1)
        return self.norm(self.transformer(tokens))
