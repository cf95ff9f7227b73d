"""Seeded scene generation: a room, tables and objects, described as plain data.

A scene is a pure function of its seed, so the same seed gives the same scene on every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "orange": (0.98, 0.50, 0.05),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}
SHAPES = ("cube", "sphere", "cylinder", "bowl", "bin")
CONTAINERS = frozenset({"bowl", "bin"})
SIZES = ("small", "large")
# Half-extent (m) of an object's footprint by shape kind and size.
HALF_SIZE = {
    ("item", "small"): 0.025,
    ("item", "large"): 0.04,
    ("container", "small"): 0.10,
    ("container", "large"): 0.13,
}
CONTAINER_WALL_HEIGHT = 0.06
TABLE_HEIGHTS = (0.42, 0.50)
ROBOT_RADIUS = 0.22
TABLE_CLEARANCE = 1.0  # free space kept around every table, so the robot can reach all its sides
MIN_ROOM_HALF = 2.2  # room for a table and the clearance around it
MAX_SCENE_TRIES = 50


@dataclass(frozen=True)
class TableSpec:
    name: str
    x: float
    y: float
    half_x: float
    half_y: float
    height: float

    def contains_xy(self, x: float, y: float, margin: float = 0.0) -> bool:
        return abs(x - self.x) <= self.half_x + margin and abs(y - self.y) <= self.half_y + margin


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    shape: str
    colour: str
    size: str
    x: float
    y: float
    z: float  # centre height at rest (bottom for containers)
    half: float  # footprint half-extent
    table: str

    @property
    def is_container(self) -> bool:
        return self.shape in CONTAINERS

    @property
    def height(self) -> float:
        return CONTAINER_WALL_HEIGHT if self.is_container else 2 * self.half

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]


@dataclass(frozen=True)
class SceneSpec:
    seed: int
    room_half: float
    tables: tuple[TableSpec, ...]
    objects: tuple[ObjectSpec, ...]
    robot_start: tuple[float, float, float]  # x, y, yaw

    def object(self, name: str) -> ObjectSpec | None:
        return next((o for o in self.objects if o.name == name), None)

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.objects]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SceneSpec:
        """The inverse of ``to_dict`` (how a scene crosses a ROS topic as JSON)."""
        return cls(
            seed=int(data["seed"]),
            room_half=float(data["room_half"]),
            tables=tuple(TableSpec(**t) for t in data["tables"]),
            objects=tuple(ObjectSpec(**o) for o in data["objects"]),
            robot_start=tuple(data["robot_start"]),
        )


@dataclass(frozen=True)
class SceneConfig:
    """Ranges the generator draws from; validated so a wrong config fails here, not mid-episode."""

    min_objects: int = 3
    max_objects: int = 8
    min_containers: int = 1
    min_tables: int = 1
    max_tables: int = 3
    room_half_range: tuple[float, float] = (2.6, 3.4)

    def __post_init__(self):
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}..{self.max_objects}")
        if not 0 <= self.min_containers <= self.min_objects:
            raise ValueError(f"min_containers must be in 0..min_objects, got {self.min_containers}")
        low, high = self.room_half_range
        if not MIN_ROOM_HALF <= low <= high:
            raise ValueError(f"room_half_range must be ordered and at least {MIN_ROOM_HALF} m, got {self.room_half_range}")
        if not 1 <= self.min_tables <= self.max_tables <= 4:
            raise ValueError(f"need 1 <= min_tables <= max_tables <= 4, got {self.min_tables}..{self.max_tables}")


def _place_tables(rng: np.random.Generator, room_half: float, count: int) -> list[TableSpec]:
    tables: list[TableSpec] = []
    for _ in range(200 * count):
        if len(tables) == count:
            break
        hx, hy = rng.uniform(0.4, 0.6), rng.uniform(0.26, 0.34)
        if rng.random() < 0.5:
            hx, hy = hy, hx
        lim_x, lim_y = room_half - TABLE_CLEARANCE - hx, room_half - TABLE_CLEARANCE - hy
        x, y = rng.uniform(-lim_x, lim_x), rng.uniform(-lim_y, lim_y)
        clear = all(
            abs(x - t.x) > hx + t.half_x + TABLE_CLEARANCE or abs(y - t.y) > hy + t.half_y + TABLE_CLEARANCE
            for t in tables
        )
        if clear:
            height = float(rng.choice(TABLE_HEIGHTS))
            tables.append(TableSpec(f"table {len(tables) + 1}", float(x), float(y), float(hx), float(hy), height))
    return tables


def _place_on_table(rng, table: TableSpec, half: float, placed: list[ObjectSpec]) -> tuple[float, float] | None:
    edge = 0.04
    if half + edge >= min(table.half_x, table.half_y):
        return None
    for _ in range(60):
        x = rng.uniform(table.x - table.half_x + half + edge, table.x + table.half_x - half - edge)
        y = rng.uniform(table.y - table.half_y + half + edge, table.y + table.half_y - half - edge)
        if all(np.hypot(x - o.x, y - o.y) > half + o.half + 0.05 for o in placed if o.table == table.name):
            return float(x), float(y)
    return None


def generate_scene(seed: int, config: SceneConfig | None = None) -> SceneSpec:
    """The scene for ``seed``: tables clear of walls and each other, objects with unique colour+shape.

    A draw that cannot fit the config's minimums (tables that find no clear spot, objects no table has
    room for) is redrawn from the same generator, so the result still depends on the seed alone.
    """
    config = config or SceneConfig()
    rng = np.random.default_rng(seed)
    for _ in range(MAX_SCENE_TRIES):
        scene = _draw_scene(rng, seed, config)
        containers = sum(o.is_container for o in scene.objects)
        if (
            len(scene.tables) >= config.min_tables
            and len(scene.objects) >= config.min_objects
            and containers >= config.min_containers
        ):
            return scene
    raise ValueError(f"no scene fits {config} in {MAX_SCENE_TRIES} draws: allow a larger room or fewer tables")


def _draw_scene(rng: np.random.Generator, seed: int, config: SceneConfig) -> SceneSpec:
    room_half = float(rng.uniform(*config.room_half_range))
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    n_tables = int(rng.integers(config.min_tables, config.max_tables + 1))
    n_tables = min(config.max_tables, max(n_tables, -(-n_objects // 4)))  # about four objects fit a table
    tables = _place_tables(rng, room_half, n_tables)
    n_containers = min(n_objects, max(config.min_containers, int(rng.integers(1, 3))))
    kinds = ["container"] * n_containers + ["item"] * (n_objects - n_containers)
    used: set[tuple[str, str]] = set()
    objects: list[ObjectSpec] = []
    for kind in kinds:
        shapes = [s for s in SHAPES if (s in CONTAINERS) == (kind == "container")]
        for _ in range(100):
            shape, colour = str(rng.choice(shapes)), str(rng.choice(list(COLOURS)))
            if (colour, shape) not in used:
                break
        size = str(rng.choice(SIZES))
        half = HALF_SIZE[(kind, size)]
        for table in rng.permutation(len(tables)):
            spot = _place_on_table(rng, tables[table], half, objects)
            if spot is not None:
                break
        else:
            continue  # no room left on any table; generate_scene redraws if that breaks a minimum
        used.add((colour, shape))
        table = tables[table]
        z = table.height + (0.0 if kind == "container" else half)
        objects.append(ObjectSpec(f"{colour} {shape}", shape, colour, size, *spot, z, half, table.name))
    robot_start = _free_pose(rng, room_half, tables)
    return SceneSpec(seed, room_half, tuple(tables), tuple(objects), robot_start)


def _free_pose(rng, room_half: float, tables: list[TableSpec]) -> tuple[float, float, float]:
    lim = room_half - ROBOT_RADIUS - 0.2
    for _ in range(1000):
        x, y = rng.uniform(-lim, lim, size=2)
        if not any(t.contains_xy(x, y, ROBOT_RADIUS + 0.35) for t in tables):
            return float(x), float(y), float(rng.uniform(-np.pi, np.pi))
    raise RuntimeError("no free start pose in the room")  # unreachable with TABLE_CLEARANCE > robot size
