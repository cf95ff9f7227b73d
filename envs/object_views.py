"""Every object as a robot that walked round each table would see it: the privileged world's object clouds.

Object tokens (``embodied.encoders.objects``) are made from one point cloud per object. In a perceived world
those are perception's fused tracks; here the simulator stands in for the walk: a free camera at head height
looks at each table from a few sides (the robot stays where it is), and each object's pixels, back-projected,
are fused. Same renderer, same back-projection, so the clouds look like the perceived ones, not like
samples of the ground-truth shapes.
"""

from __future__ import annotations

import numpy as np

from envs.backend import HEAD_HEIGHT, Backend
from envs.pointcloud import backproject, sample_cloud
from envs.scene import SceneSpec

VIEWS = 3  # per table, evenly round it
STANDOFF = 0.9  # m from the table's edge, about where the robot stands to reach it
SIZE = 256  # pixels a side: small objects on a table stay tens of pixels wide
MAX_DEPTH = 4.0
POINTS = 256  # per object
VOXEL = 0.004
MIN_POINTS = 8  # fewer: not seen


def table_views(scene: SceneSpec, views: int = VIEWS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(eye, target) pairs round every table, eyes inside the room."""
    pairs = []
    for table in scene.tables:
        reach = max(table.half_x, table.half_y) + STANDOFF
        target = np.array([table.x, table.y, table.height])
        for k in range(views):
            angle = 2 * np.pi * k / views + np.pi / 4  # off the table's axes: no view straight down a long edge
            eye = np.array([table.x + reach * np.cos(angle), table.y + reach * np.sin(angle), HEAD_HEIGHT])
            if max(abs(eye[0]), abs(eye[1])) < scene.room_half - 0.2:
                pairs.append((eye, target))
    return pairs


def object_clouds(backend: Backend, scene: SceneSpec, rng: np.random.Generator, points: int = POINTS) -> dict[str, np.ndarray]:
    """World-frame (points, 6) xyz + rgb clouds of the objects seen from ``table_views``, by name."""
    pieces: dict[int, list[np.ndarray]] = {}
    for eye, target in table_views(scene):
        frame = backend.render_from(eye, target, SIZE, SIZE, segmentation=True)
        xyz, rgb, seg = backproject(frame, MAX_DEPTH)
        for index in np.unique(seg[seg >= 0]):
            mask = seg == index
            pieces.setdefault(int(index), []).append(np.hstack([xyz[mask], rgb[mask]]))
    clouds = {}
    for index, parts in sorted(pieces.items()):
        cloud = np.vstack(parts)
        if len(cloud) >= MIN_POINTS:
            sampled, _ = sample_cloud(cloud[:, :3], cloud[:, 3:], None, points, VOXEL, rng)
            clouds[scene.objects[index].name] = sampled
    return clouds


def resample(cloud: np.ndarray, count: int) -> np.ndarray:
    """Exactly ``count`` points spread evenly over a non-empty cloud (repeated when it has fewer)."""
    if len(cloud) < count:
        return cloud[np.arange(count) % len(cloud)]
    return cloud[np.linspace(0, len(cloud) - 1, count).astype(int)]


def to_robot_frame(cloud: np.ndarray, x: float, y: float, yaw: float) -> np.ndarray:
    """World xyz (+ any further channels) into the frame of a robot at (x, y, yaw): x ahead, y to its left."""
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = cloud[:, 0] - x, cloud[:, 1] - y
    out = cloud.astype(np.float32, copy=True)
    out[:, 0], out[:, 1] = c * dx + s * dy, -s * dx + c * dy
    return out
