"""Perception evaluation: on held-out scenes the robot scans from its start pose with its own camera and
odometry, and what it perceived is scored against the simulator's ground truth (read only here): object
recall and precision, label accuracy, centroid error, tables found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied.eval.report import write_report
from embodied.perception.episode import PerceivedWorld, look_around
from embodied.perception.naming import ObjectNamer
from embodied.perception.segments import MIN_SEGMENT_POINTS
from envs.backend import HEAD_CAMERA
from envs.env import EmbodiedEnv

PERCEPTION_SEED = 3_500_000  # held out: the ULIP stage trained on scenes from 1,000,000 (embodied/data/generate.py)
TASKS = ("object_nav", "pick_place", "rearrange")  # scenes of each task's kind, in turn
MATCH_DISTANCE = 0.05  # m beyond an object's half-extent within which a perceived object is that object
PERCEPTION_METRICS = ["recall", "precision", "label_accuracy", "median_centroid_error_mm", "tables_found", "objects_in_view", "scenes"]


class _VisibilityWorld(PerceivedWorld):
    """Perceives as usual and, for scoring only, counts each object's pixels in the same frames."""

    def reset(self, env):
        self.visible: dict[str, int] = {}
        super().reset(env)

    def observe(self, env):
        perceives = self.perceives_next()
        super().observe(env)
        if perceives:
            seg = env.backend.render(HEAD_CAMERA, self.size, self.size, True).segmentation
            ids, counts = np.unique(seg[seg >= 0], return_counts=True)
            for i, n in zip(ids, counts):
                name = env.scene.objects[i].name
                self.visible[name] = max(self.visible.get(name, 0), int(n))


def score_scene(env: EmbodiedEnv, world: _VisibilityWorld) -> dict:
    """One scanned scene against its ground truth."""
    truth = env.backend.state().objects
    specs = {o.name: o for o in env.scene.objects}
    in_view = [n for n, px in world.visible.items() if px >= MIN_SEGMENT_POINTS]
    memory = world.perception.memory
    tracks = memory.confirmed()
    named = {id(t): name for name, t in memory.named().items()}
    matched: dict[str, object] = {}
    true_positive, errors, labels = 0, [], []
    for track in sorted(tracks, key=lambda t: -len(t.points)):
        centre = track.centre()
        name = min(truth, key=lambda n: np.linalg.norm(truth[n] - centre))
        distance = float(np.linalg.norm(truth[name] - centre))
        if distance > specs[name].half + MATCH_DISTANCE or name in matched:
            continue
        matched[name] = track
        true_positive += 1
        errors.append(distance)
        labels.append(named.get(id(track)) == name)
    tables = [t for t in env.scene.tables]
    found = sum(
        any(abs(p.height - t.height) < 0.02 and np.hypot(p.x - t.x, p.y - t.y) < 0.15 for p in memory.table_specs()) for t in tables
    )
    return {
        "seed": env.episode_seed,
        "objects_in_view": len(in_view),
        "recalled": sum(n in matched for n in in_view),
        "tracks": len(tracks),
        "true_positives": true_positive,
        "labels_right": int(sum(labels)),
        "centroid_errors": errors,
        "tables": len(tables),
        "tables_found": int(found),
    }


def evaluate_perception(scenes: int = 200, out: Path = Path("runs/eval/perception"), seed: int = PERCEPTION_SEED, namer: ObjectNamer | None = None, progress: bool = True) -> dict:
    namer = namer if namer is not None else ObjectNamer()
    envs = {task: EmbodiedEnv(task=task, sensors=()) for task in TASKS}
    world = _VisibilityWorld(namer)
    records = []
    for i in tqdm(range(scenes), desc="perception", unit="scene", disable=not progress):
        env = envs[TASKS[i % len(TASKS)]]
        env.world = world
        env.reset(seed=seed + i)
        look_around(env)
        records.append(score_scene(env, world))
    for env in envs.values():
        env.close()
    row = summarize_perception(records)
    note = f"{scenes} held-out scenes from seed {seed} (object navigation, pick and place and rearrangement scenes in turn), after one scan from the start pose; 'in view': at least {MIN_SEGMENT_POINTS} pixels in some frame."
    write_report(out, "Perception after a scan", [row], PERCEPTION_METRICS, "recall", "world", note)
    return {"summary": row, "scenes": records}


def summarize_perception(records: list[dict]) -> dict:
    def ratio(a: str, b: str) -> float | None:
        total = sum(r[b] for r in records)
        return sum(r[a] for r in records) / total if total else None

    errors = [e for r in records for e in r["centroid_errors"]]
    return {
        "policy": "perception",
        "world": "perceived",
        "recall": ratio("recalled", "objects_in_view"),
        "precision": ratio("true_positives", "tracks"),
        "label_accuracy": ratio("labels_right", "true_positives"),
        "median_centroid_error_mm": 1000 * float(np.median(errors)) if errors else None,
        "tables_found": ratio("tables_found", "tables"),
        "objects_in_view": sum(r["objects_in_view"] for r in records),
        "scenes": len(records),
    }
