"""Seeded scene generation: determinism, the invariants every scene keeps, and config validation."""

import itertools

import numpy as np
import pytest

from envs.scene import (
    COLOURS,
    CONTAINERS,
    ROBOT_RADIUS,
    SHAPES,
    SIZES,
    TABLE_CLEARANCE,
    SceneConfig,
    generate_scene,
)

SEEDS = range(200)
EPS = 1e-9


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed) for seed in SEEDS]


def test_same_seed_same_scene():
    assert generate_scene(7) == generate_scene(7)
    assert generate_scene(7).to_dict() == generate_scene(7).to_dict()


def test_different_seeds_differ(scenes):
    # the content, not just the seed field, differs
    assert len({(s.room_half, s.tables, s.objects, s.robot_start) for s in scenes}) == len(scenes)


def test_object_count_and_uniqueness(scenes):
    for scene in scenes:
        names = scene.object_names
        assert 3 <= len(names) <= 8, scene.seed
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(names), scene.seed
        assert len(set(names)) == len(names)
        assert all(o.name == f"{o.colour} {o.shape}" for o in scene.objects)
        assert sum(o.is_container for o in scene.objects) >= 1, scene.seed


def test_objects_rest_inside_their_table(scenes):
    for scene in scenes:
        tables = {t.name: t for t in scene.tables}
        for o in scene.objects:
            t = tables[o.table]
            assert abs(o.x - t.x) + o.half <= t.half_x + EPS, (scene.seed, o.name)
            assert abs(o.y - t.y) + o.half <= t.half_y + EPS, (scene.seed, o.name)
            bottom = o.z if o.is_container else o.z - o.half
            assert bottom == pytest.approx(t.height), (scene.seed, o.name)


def test_objects_do_not_overlap(scenes):
    for scene in scenes:
        for a, b in itertools.combinations(scene.objects, 2):
            if a.table == b.table:
                assert np.hypot(a.x - b.x, a.y - b.y) > a.half + b.half, (scene.seed, a.name, b.name)


def test_tables_keep_clearance(scenes):
    for scene in scenes:
        assert 1 <= len(scene.tables) <= 3
        for t in scene.tables:  # from the walls
            assert abs(t.x) + t.half_x <= scene.room_half - TABLE_CLEARANCE + EPS, scene.seed
            assert abs(t.y) + t.half_y <= scene.room_half - TABLE_CLEARANCE + EPS, scene.seed
        for a, b in itertools.combinations(scene.tables, 2):  # from each other, along x or y
            gap_x = abs(a.x - b.x) - a.half_x - b.half_x
            gap_y = abs(a.y - b.y) - a.half_y - b.half_y
            assert max(gap_x, gap_y) > TABLE_CLEARANCE, scene.seed


def test_robot_starts_in_free_space(scenes):
    for scene in scenes:
        x, y, yaw = scene.robot_start
        assert max(abs(x), abs(y)) <= scene.room_half - ROBOT_RADIUS
        assert -np.pi <= yaw <= np.pi
        assert not any(t.contains_xy(x, y, ROBOT_RADIUS) for t in scene.tables), scene.seed


def test_variety_across_seeds(scenes):
    objects = [o for scene in scenes for o in scene.objects]
    assert {o.shape for o in objects} == set(SHAPES)
    assert len({o.colour for o in objects}) >= 6
    assert {o.size for o in objects} == set(SIZES)
    assert {o.colour for o in objects} <= set(COLOURS)
    assert {o.is_container for o in objects} == {True, False}
    assert all(o.is_container == (o.shape in CONTAINERS) for o in objects)
    assert len({len(scene.tables) for scene in scenes}) >= 2


def test_config_is_honoured():
    config = SceneConfig(min_objects=4, max_objects=6, min_containers=2, min_tables=1, max_tables=1)
    for seed in range(30):
        scene = generate_scene(seed, config)
        assert 4 <= len(scene.objects) <= 6, seed
        assert sum(o.is_container for o in scene.objects) >= 2, seed
        assert len(scene.tables) == 1, seed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 5, "max_objects": 4}, "min_objects"),
        ({"max_objects": 9}, "max_objects"),
        ({"min_containers": -1}, "min_containers"),
        ({"min_objects": 2, "min_containers": 3}, "min_containers"),
        ({"min_tables": 0}, "min_tables"),
        ({"min_tables": 3, "max_tables": 2}, "min_tables"),
        ({"max_tables": 5}, "max_tables"),
    ],
)
def test_config_rejects_bad_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SceneConfig(**kwargs)


@pytest.mark.parametrize("room_half_range", [(3.4, 2.6), (1.0, 1.2)])
def test_config_rejects_bad_room_range(room_half_range):
    with pytest.raises(ValueError, match="room_half"):
        SceneConfig(room_half_range=room_half_range)


@pytest.mark.parametrize(
    "seed, config",
    [(2716, SceneConfig()), (3, SceneConfig(min_tables=2, max_tables=2))],
    ids=["min_objects", "min_tables"],
)
def test_config_minimums_are_guaranteed(seed, config):
    scene = generate_scene(seed, config)
    assert len(scene.objects) >= config.min_objects
    assert len(scene.tables) >= config.min_tables
