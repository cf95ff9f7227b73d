"""A 2D occupancy grid of the room for base motion: A* paths to "near an object" regions and geodesic
distances for SPL."""

from __future__ import annotations

import heapq

import numpy as np

from envs.scene import ROBOT_RADIUS, SceneSpec

_MOVES = [(dx, dy, float(np.hypot(dx, dy))) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]


class NavMap:
    """Free cells of a square grid, indexed [x cell, y cell], from ``origin`` (m, both axes) in steps of
    ``resolution``: from a scene's room and tables (privileged), or from an occupancy grid (perceived)."""

    def __init__(self, scene: SceneSpec, resolution: float = 0.05, inflation: float = ROBOT_RADIUS + 0.04):
        n = int(np.ceil(2 * scene.room_half / resolution))
        centres = -scene.room_half + (np.arange(n) + 0.5) * resolution
        gx, gy = np.meshgrid(centres, centres, indexing="ij")
        limit = scene.room_half - inflation
        free = (np.abs(gx) <= limit) & (np.abs(gy) <= limit)
        for t in scene.tables:
            free &= ~((np.abs(gx - t.x) <= t.half_x + inflation) & (np.abs(gy - t.y) <= t.half_y + inflation))
        self._set(free, -scene.room_half, resolution)

    @classmethod
    def from_grid(cls, free: np.ndarray, origin: float, resolution: float) -> NavMap:
        navmap = cls.__new__(cls)
        navmap._set(np.asarray(free, bool), origin, resolution)
        return navmap

    @classmethod
    def from_occupancy(cls, occupied: np.ndarray, origin: float, resolution: float, inflation: float = ROBOT_RADIUS + 0.04) -> NavMap:
        """Free where no occupied cell lies within ``inflation`` (unknown cells count as free, so the robot
        may drive towards what it has not seen yet)."""
        occupied = np.asarray(occupied, bool)
        blocked = occupied.copy()
        radius = int(np.ceil(inflation / resolution))
        n, m = occupied.shape
        for dx, dy in np.argwhere(np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) * resolution <= inflation) - radius:
            blocked[max(dx, 0) : n + min(dx, 0), max(dy, 0) : m + min(dy, 0)] |= occupied[max(-dx, 0) : n + min(-dx, 0), max(-dy, 0) : m + min(-dy, 0)]
        return cls.from_grid(~blocked, origin, resolution)

    def _set(self, free: np.ndarray, origin: float, resolution: float) -> None:
        self.free, self.origin, self.resolution = free, origin, resolution
        self.centres = origin + (np.arange(len(free)) + 0.5) * resolution

    def cell(self, xy) -> tuple[int, int]:
        i, j = np.floor((np.asarray(xy, float) - self.origin) / self.resolution).astype(int)
        n = len(self.centres)
        return int(np.clip(i, 0, n - 1)), int(np.clip(j, 0, n - 1))

    def point(self, cell: tuple[int, int]) -> np.ndarray:
        return np.array([self.centres[cell[0]], self.centres[cell[1]]])

    def is_free(self, xy) -> bool:
        return bool(self.free[self.cell(xy)])

    def _nearest_free(self, cell: tuple[int, int]) -> tuple[int, int]:
        if self.free[cell]:
            return cell
        free = np.argwhere(self.free)
        return tuple(free[np.argmin(((free - cell) ** 2).sum(axis=1))])

    def plan(self, start, target, min_dist: float, max_dist: float) -> list[np.ndarray] | None:
        """Shortest grid path from ``start`` to a free cell whose distance to ``target`` lies in
        [min_dist, max_dist], smoothed to line-of-sight waypoints; None when no such cell is reachable."""
        target = np.asarray(target, float)
        res = self.resolution
        start_cell = self._nearest_free(self.cell(start))
        best = {start_cell: 0.0}
        parent: dict = {start_cell: None}
        frontier = [(0.0, start_cell)]
        n = len(self.centres)
        while frontier:
            _, cell = heapq.heappop(frontier)
            dist = float(np.hypot(*(self.point(cell) - target)))
            if min_dist <= dist <= max_dist:
                return self._smooth(self._unwind(parent, cell), start)
            for dx, dy, step in _MOVES:
                nxt = (cell[0] + dx, cell[1] + dy)
                if not (0 <= nxt[0] < n and 0 <= nxt[1] < n and self.free[nxt]):
                    continue
                cost = best[cell] + step * res
                if cost < best.get(nxt, np.inf):
                    best[nxt] = cost
                    parent[nxt] = cell
                    to_go = max(0.0, float(np.hypot(*(self.point(nxt) - target))) - max_dist)
                    heapq.heappush(frontier, (cost + to_go, nxt))
        return None

    @staticmethod
    def path_length(start, waypoints: list[np.ndarray]) -> float:
        points = [np.asarray(start, float)[:2], *waypoints]
        return float(sum(np.hypot(*(b - a)) for a, b in zip(points, points[1:])))

    def _unwind(self, parent: dict, cell) -> list[tuple[int, int]]:
        cells = []
        while cell is not None:
            cells.append(cell)
            cell = parent[cell]
        return cells[::-1]

    def _line_free(self, a: np.ndarray, b: np.ndarray) -> bool:
        steps = int(np.ceil(np.hypot(*(b - a)) / (0.5 * self.resolution))) + 1
        return all(self.free[self.cell(p)] for p in np.linspace(a, b, steps))

    def _smooth(self, cells: list[tuple[int, int]], start) -> list[np.ndarray]:
        points = [np.asarray(start, float)[:2]] + [self.point(c) for c in cells[1:]]
        waypoints, anchor = [], 0
        while anchor < len(points) - 1:
            reach = len(points) - 1
            while reach > anchor + 1 and not self._line_free(points[anchor], points[reach]):
                reach -= 1
            waypoints.append(points[reach])
            anchor = reach
        return waypoints
