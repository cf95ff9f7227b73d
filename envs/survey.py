"""Where to look for an object perception has not found: the tables seen only from afar.

Small objects on a far table cover a few pixels even at 256 x 256; from arm's reach they are plain. So a
search goes to such a table (navigating to an object already known on it: ``navigate`` needs an object)
and scans there. The episodes' ``look_for`` and the plan runner's detours both choose tables here.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from envs.plan import Step
from envs.scene import SceneSpec, TableSpec

FAR_M = 1.5  # a table whose nearest edge is farther than this from every viewpoint was seen only from afar


def gap(table: TableSpec, x: float, y: float) -> float:
    """Distance from (x, y) to the table's footprint."""
    return float(np.hypot(max(abs(x - table.x) - table.half_x, 0.0), max(abs(y - table.y) - table.half_y, 0.0)))


def far_tables(scene: SceneSpec, viewpoints: list[tuple[float, float]]) -> list[TableSpec]:
    """The tables farther than ``FAR_M`` from every viewpoint (where the robot looked around), nearest to
    the last viewpoint first."""
    far = [t for t in scene.tables if all(gap(t, x, y) > FAR_M for x, y in viewpoints)]
    return sorted(far, key=lambda t: gap(t, *viewpoints[-1]))


def survey(scene: SceneSpec, table: TableSpec, known: Collection[str] | None = None) -> tuple[Step, Step] | None:
    """The steps that look at ``table`` from close by: navigate to the object on it nearest its centre
    (of the scene's, or of those ``known`` among them), and scan there; None when it has none."""
    on_table = [o for o in scene.objects if table.contains_xy(o.x, o.y) and (known is None or o.name in known)]
    if not on_table:
        return None
    anchor = min(on_table, key=lambda o: np.hypot(o.x - table.x, o.y - table.y)).name
    return Step("navigate", (anchor,)), Step("scan")
