"""Where to look for an object perception has not found: the tables seen only from afar.

Small objects on a far table cover a few pixels even at 256 x 256; from arm's reach they are plain. So a
search goes to such a table (navigating to an object already known on it: ``navigate`` needs an object)
and scans there. The episodes' ``look_for`` and the plan runner's detours both search with ``TableSearch``.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from envs.plan import Step
from envs.scene import SceneSpec, TableSpec

FAR_M = 1.5  # a table whose nearest edge is farther than this from every viewpoint was seen only from afar


class TableSearch:
    """One table at a time, nearest first, each by way of an object known on it that no survey set off to
    yet. Perception renames what it sees better from close by, so a survey whose object was lost on the way
    (``ended("object not found: ...")``) goes on to another object on the same table before the next table."""

    def __init__(self):
        self.viewpoints: list[tuple[float, float]] = []  # where the robot scanned or looked for something
        self._visited: list[tuple[float, float]] = []  # the centres of the tables a survey set off to
        self._table: TableSpec | None = None  # the table of a survey whose object was lost
        self._anchors: set[str] = set()

    def next(self, scene: SceneSpec, known: Collection[str], x: float, y: float) -> tuple[TableSpec, tuple[Step, Step]] | None:
        """The next table to look at from the robot's position (x, y) and the steps that get there (navigate,
        scan); None when every table seen only from afar has been tried."""
        self.viewpoints.append((x, y))  # what is near here was in view, and is not there
        far = [t for t in scene.tables if all(_gap(t, *v) > FAR_M for v in self.viewpoints)]
        fresh = sorted((t for t in far if not any(t.contains_xy(*c) for c in self._visited)), key=lambda t: _gap(t, x, y))
        for table in ([self._table] if self._table is not None else []) + fresh:
            self._visited.append((table.x, table.y))
            on_table = [o for o in scene.objects if table.contains_xy(o.x, o.y) and o.name in known and o.name not in self._anchors]
            if on_table:
                anchor = min(on_table, key=lambda o: np.hypot(o.x - table.x, o.y - table.y)).name
                self._table = table
                self._anchors.add(anchor)
                return table, (Step("navigate", (anchor,)), Step("scan"))
        self._table = None
        return None

    def ended(self, failure: str) -> None:
        """The survey is over: ``failure`` is why its last step failed ("" when it got there and scanned).
        Only an object lost on the way (``object not found``) keeps its table for another object."""
        if not failure.startswith("object not found"):
            self._table = None


def _gap(table: TableSpec, x: float, y: float) -> float:
    """Distance from (x, y) to the table's footprint."""
    return float(np.hypot(max(abs(x - table.x) - table.half_x, 0.0), max(abs(y - table.y) - table.half_y, 0.0)))
