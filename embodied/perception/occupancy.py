"""An occupancy grid from depth: cells where the floor is seen are free, cells with points standing
between the floor and the robot's height are occupied (tables, walls, objects). Navigation plans on it
(``NavMap``), RViz and Nav2 read it as a ``nav_msgs/OccupancyGrid``."""

from __future__ import annotations

import numpy as np

from envs.navmap import NavMap
from envs.scene import ROBOT_RADIUS

FLOOR_HEIGHT = 0.03  # m: points below are floor
ROBOT_TOP = 1.5  # m: points above cannot block the base
MIN_HITS = 2  # points in a cell before it is occupied


class OccupancyGrid:
    """A square grid centred on the odometry origin; -1 unknown, 0 free, 100 occupied (ROS's values)."""

    def __init__(self, resolution: float = 0.05, half_extent: float = 6.0):
        self.resolution = resolution
        self.origin = -half_extent
        self.size = int(np.ceil(2 * half_extent / resolution))
        self.hits = np.zeros((self.size, self.size), np.int32)
        self.floor = np.zeros((self.size, self.size), np.int32)
        self._navmap: tuple[tuple, NavMap] | None = None

    def add(self, xyz: np.ndarray) -> None:
        """Count each point in its cell: as floor below ``FLOOR_HEIGHT``, as a hit up to ``ROBOT_TOP`` (one
        count over both layers at once; cell coordinates stay floats until they are known to be inside,
        where truncating is flooring)."""
        scale, n = np.float32(1 / self.resolution), self.size
        i, j = ((xyz[:, k] - np.float32(self.origin)) * scale for k in (0, 1))
        z = xyz[:, 2]
        keep = np.flatnonzero((i >= 0) & (i < n) & (j >= 0) & (j < n) & (z < ROBOT_TOP))
        index = i[keep].astype(np.int32) * n + j[keep].astype(np.int32) + (z[keep] >= FLOOR_HEIGHT) * (n * n)
        counts = np.bincount(index, minlength=2 * n * n).astype(np.int32)
        self.floor += counts[: n * n].reshape(n, n)
        self.hits += counts[n * n :].reshape(n, n)

    def values(self) -> np.ndarray:
        """(size, size) int8, indexed [x cell, y cell]."""
        grid = np.full((self.size, self.size), -1, np.int8)
        grid[self.floor > 0] = 0
        grid[self.hits >= MIN_HITS] = 100
        return grid

    def navmap(self, inflation: float = ROBOT_RADIUS + 0.04) -> NavMap:
        """Free for the base: not within ``inflation`` of an occupied cell; rebuilt only when what is occupied
        has changed."""
        occupied = self.hits >= MIN_HITS
        key = (np.packbits(occupied).tobytes(), inflation)
        if self._navmap is None or self._navmap[0] != key:
            self._navmap = (key, NavMap.from_occupancy(occupied, self.origin, self.resolution, inflation))
        return self._navmap[1]
