"""Point grouping (farthest-point sampling + kNN) of 16384 xyz+rgb points into 64 groups of 32 with the
library's vectorised ``group_points``, against a straightforward per-group Python loop over numpy."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.run import Ratio, side_by_side
from embodied.encoders.pointcloud import group_indices, group_points

NUM_POINTS, NUM_GROUPS, GROUP_SIZE = 16384, 64, 32


def loop_grouping(points: np.ndarray, num_groups: int, group_size: int):
    """Centres (G, 3), groups (G, K, C) with xyz relative to their centre, and the neighbour indices (G, K):
    FPS one centre at a time, then one group at a time with a full sort of the distances to every point."""
    xyz = points[:, :3]
    current = int(((xyz - xyz.mean(axis=0)) ** 2).sum(-1).argmax())  # the library's start: farthest from the centroid
    nearest = np.full(len(xyz), np.inf, np.float32)
    chosen = []
    for _ in range(num_groups):
        chosen.append(current)
        nearest = np.minimum(nearest, ((xyz - xyz[current]) ** 2).sum(-1))
        current = int(nearest.argmax())
    centres, groups, neighbours = [], [], []
    for index in chosen:
        centre = xyz[index]
        order = np.argsort(((xyz - centre) ** 2).sum(-1))[:group_size]
        group = points[order].copy()
        group[:, :3] -= centre
        centres.append(centre)
        groups.append(group)
        neighbours.append(order)
    return np.stack(centres), np.stack(groups), np.stack(neighbours)


def run() -> list[Ratio]:
    rng = np.random.default_rng(0)
    xyz, rgb = rng.uniform(-1, 1, (NUM_POINTS, 3)), rng.uniform(0, 1, (NUM_POINTS, 3))
    cloud = np.concatenate([xyz, rgb], axis=1).astype(np.float32)
    batch = torch.from_numpy(cloud)[None]  # (1, N, 6)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # numpy runs these ops on one thread: compare like with like
    try:
        with torch.no_grad():
            centres, groups = group_points(batch, NUM_GROUPS, GROUP_SIZE)
            ref_centres, ref_groups, ref_neighbours = loop_grouping(cloud, NUM_GROUPS, GROUP_SIZE)
            # same centres, in the same order, and the same neighbour set for each (the order within a group may differ)
            if not np.array_equal(centres[0].numpy(), ref_centres):
                raise AssertionError("library and loop grouping chose different centres")
            lib_neighbours = group_indices(batch[..., :3], NUM_GROUPS, GROUP_SIZE)[1][0].numpy()
            if not all(set(a) == set(b) for a, b in zip(lib_neighbours, ref_neighbours)):
                raise AssertionError("library and loop grouping chose different neighbours")
            lib_sorted = np.sort(groups[0].numpy().reshape(NUM_GROUPS, -1), axis=1)
            if not np.allclose(lib_sorted, np.sort(ref_groups.reshape(NUM_GROUPS, -1), axis=1), atol=1e-6):
                raise AssertionError("library and loop grouping gathered different groups")

            ratio, lib_rate, loop_rate = side_by_side(
                lambda: group_points(batch, NUM_GROUPS, GROUP_SIZE),
                lambda: loop_grouping(cloud, NUM_GROUPS, GROUP_SIZE),
            )
    finally:
        torch.set_num_threads(old_threads)
    detail = (
        f"group_points {lib_rate:.0f}/s, per-group numpy loop {loop_rate:.1f}/s "
        f"({NUM_POINTS} pts -> {NUM_GROUPS}x{GROUP_SIZE}, 1 thread, same centres and neighbour sets)"
    )
    return [Ratio("point grouping: group_points / per-group loop", ratio, ">= 20", detail)]
