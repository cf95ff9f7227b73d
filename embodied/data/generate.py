"""Seeded simulated scenes turned into training data.

Per scene: three head-camera views around its table, each an observation (RGB image + point cloud) with
a caption and one question of every type; every object as a fused multi-view point cloud with its
rendered views and holistic descriptions (the ULIP-2 recipe, descriptions from the scene's ground
truth); instruction -> chain-of-thought plan pairs written by the oracle for each task; a dialogue; and
text-only samples. Splits are by scene seed; the compositional split holds scenes with colour-shape
combinations and phrasings that training never sees.

Written as parquet shards of a few dozen scenes, each in one atomic rename, so an interrupted run
resumes where it stopped and never leaves half a shard behind.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from embodied.data.phrasing import (
    CAPTIONS,
    DESCRIPTIONS,
    HELD_OUT_COMBOS,
    INSTRUCTION_PHRASINGS,
    QUESTION_PHRASINGS,
    choose,
    listing,
)
from embodied.io import atomic_dir, write_json
from embodied.prompts import Sample, caption_sample, plan_sample, text_sample, vqa_sample
from envs.object_views import resample
from envs.paraphrase import paraphrase

SPLITS = ("train", "val", "test", "compositional")
SPLIT_SEED_BASE = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000, "compositional": 4_000_000}
PLAN_TASKS = ("object_nav", "pick_place", "rearrange", "eqa", "refer", "sets", "conditional", "refuse")
TABLES = ("objects", "observations", "samples")
MANIFEST = "dataset.json"
MAX_SEED_TRIES = 200


@dataclass(frozen=True)
class DataConfig:
    train_scenes: int = 400
    val_scenes: int = 20
    test_scenes: int = 60
    compositional_scenes: int = 60
    views: int = 3  # head-camera views around the table per scene
    shard_scenes: int = 25
    object_points: int = 512
    object_voxel: float = 0.004
    crop_size: int = 32
    object_image_size: int = 256  # object clouds and crops come from sharper renders than the observations
    image_size: int = 128
    num_points: int = 1024
    scene_object_points: int = 256  # per known object of each observation: its object tokens (envs.object_views)

    def __post_init__(self):
        counts = (self.train_scenes, self.val_scenes, self.test_scenes, self.compositional_scenes)
        if min(counts) < 0 or self.views < 1 or self.shard_scenes < 1 or min(self.object_points, self.scene_object_points) < 16:
            raise ValueError("scene counts must be >= 0, views and shard_scenes >= 1, object_points and scene_object_points >= 16")

    def scenes(self, split: str) -> int:
        return getattr(self, f"{split}_scenes")


def generate(out: str | Path, config: DataConfig = DataConfig(), workers: int = 1, progress: bool = True) -> dict:
    """Write (or finish writing) the dataset under ``out``; returns the manifest."""
    out = Path(out)
    manifest_file = out / MANIFEST
    if manifest_file.exists():
        old = json.loads(manifest_file.read_text())["config"]
        if old != asdict(config):
            raise ValueError(f"{out} holds a dataset made with another config {old}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest_file, {"config": asdict(config), "complete": False})
    jobs = [
        (split, shard)
        for split in SPLITS
        for shard in range(-(-config.scenes(split) // config.shard_scenes))
        if not _shard_dir(out, split, shard).exists()
    ]
    bar = tqdm(total=len(jobs), desc="shards", unit="shard", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_write_shard, [out] * len(jobs), [config] * len(jobs), *zip(*jobs)):
                bar.update()
    else:
        for split, shard in jobs:
            _write_shard(out, config, split, shard)
            bar.update()
    bar.close()
    counts = {split: _count_rows(out, split) for split in SPLITS}
    manifest = {"config": asdict(config), "complete": True, "rows": counts}
    write_json(manifest_file, manifest)
    return manifest


def _shard_dir(out: Path, split: str, shard: int) -> Path:
    return out / split / f"shard-{shard:04d}"


def _count_rows(out: Path, split: str) -> dict[str, int]:
    return {
        table: sum(pq.read_metadata(f).num_rows for f in sorted((out / split).glob(f"shard-*/{table}.parquet")))
        for table in TABLES
    }


def _write_shard(out: Path, config: DataConfig, split: str, shard: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    writer = _SceneWriter(config, split)
    first = shard * config.shard_scenes
    for index in range(first, min(first + config.shard_scenes, config.scenes(split))):
        writer.scene(index)
    writer.close()
    with atomic_dir(_shard_dir(out, split, shard)) as tmp:
        for table, rows in writer.rows.items():
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[table]), tmp / f"{table}.parquet")


_COMMON = [("id", pa.string()), ("split", pa.string()), ("scene_seed", pa.int64())]
SCHEMAS = {
    "objects": pa.schema(
        _COMMON
        + [
            ("name", pa.string()),
            ("shape", pa.string()),
            ("colour", pa.string()),
            ("size", pa.string()),
            ("descriptions", pa.list_(pa.string())),
            ("cloud", pa.binary()),  # float16 (object_points, 6): xyz about the centroid, rgb in [0, 1]
            ("views", pa.list_(pa.binary())),  # PNG crops of the object in each view that sees it
        ]
    ),
    "observations": pa.schema(
        _COMMON
        + [
            ("image", pa.binary()),  # PNG
            ("cloud", pa.binary()),  # float16 (N, 6)
            ("object_names", pa.list_(pa.string())),  # the objects the robot knows of...
            ("objects", pa.binary()),  # ...their clouds, float16 (objects, scene_object_points, 6) in the robot's frame
        ]
    ),
    "samples": pa.schema(
        _COMMON
        + [
            ("kind", pa.string()),  # caption | vqa | plan | dialogue | text
            ("question_type", pa.string()),  # VQA: attribute | count | spatial | existence; plans: the task
            ("system", pa.string()),
            ("turns", pa.string()),  # JSON [[user, assistant], ...]
            ("observation", pa.string()),  # id of the observation every placeholder shows; "" for none
            ("answer", pa.string()),  # the last reply
            ("compositional", pa.bool_()),  # asks with a held-out phrasing or about a held-out combination
        ]
    ),
}


class _SceneWriter:
    """Renders scenes of one split and collects their rows."""

    def __init__(self, config: DataConfig, split: str):
        import gymnasium as gym

        import envs  # noqa: F401  (registers the environments)

        self.config, self.split = config, split
        self.held_out = split == "compositional"
        size = dict(width=config.image_size, height=config.image_size, num_points=config.num_points)
        self.envs = {
            task: gym.make(envs.ENV_IDS[task], sensors=("rgb", "points"), **size).unwrapped for task in PLAN_TASKS
        }
        self.rows: dict[str, list[dict]] = {table: [] for table in TABLES}

    def close(self) -> None:
        for env in self.envs.values():
            env.close()

    def scene(self, index: int) -> None:
        base = SPLIT_SEED_BASE[self.split] + 1000 * index
        rng = np.random.default_rng(base)
        eqa = self.envs["eqa"]
        seed = self._reset(eqa, base)
        scene, task = eqa.scene, eqa.task
        self._plan(eqa, f"{self.split}-{index}-eqa", rng)
        self._views_and_objects(scene, seed, task.start, f"{self.split}-{index}", rng)
        for task_name in (t for t in PLAN_TASKS if t != "eqa"):
            env = self.envs[task_name]
            self._reset(env, base)
            self._plan(env, f"{self.split}-{index}-{task_name}", rng)

    def _reset(self, env, base: int) -> int:
        """Reset to the first seed from ``base`` whose scene belongs in this split."""
        for seed in range(base, base + MAX_SEED_TRIES):
            env.reset(seed=seed)
            combos = {(o.colour, o.shape) for o in env.scene.objects}
            if bool(combos & HELD_OUT_COMBOS) == self.held_out:
                return seed
        raise RuntimeError(f"no {self.split} scene among seeds {base}..{base + MAX_SEED_TRIES}")

    # -- rows ----------------------------------------------------------------------------------------

    def _observation(self, obs_id: str, seed: int, obs: dict, env) -> dict:
        """Record the observation, with the clouds of the objects the robot knows of (``env.object_clouds``)."""
        objects = env.object_clouds()
        clouds = np.stack([resample(c, self.config.scene_object_points) for c in objects.values()]) if objects else np.zeros((0, 6))
        self.rows["observations"].append(
            {
                "id": obs_id,
                "split": self.split,
                "scene_seed": seed,
                "image": _png(obs["rgb"]),
                "cloud": _f16(obs["points"]),
                "object_names": list(objects),
                "objects": _f16(clouds),
            }
        )
        return obs

    def _sample(self, sample_id, seed, kind, sample: Sample, observation="", question_type="", compositional=False, answer=None):
        """A sample row; ``answer``: what a reply is scored against (default: the whole last reply)."""
        self.rows["samples"].append(
            {
                "id": sample_id,
                "split": self.split,
                "scene_seed": seed,
                "kind": kind,
                "question_type": question_type,
                "system": sample.system or "",
                "turns": json.dumps(sample.turns),
                "observation": observation,
                "answer": sample.turns[-1][1] if answer is None else answer,
                "compositional": compositional,
            }
        )

    # -- plans ---------------------------------------------------------------------------------------

    def _plan(self, env, sample_id: str, rng) -> None:
        from envs.planners import OraclePlanner

        obs = self._observation(sample_id, env.episode_seed, env.observation(), env)
        plan = OraclePlanner().plan(obs, env)
        instruction, held = self._instruction(env, rng)
        combos = {(o.colour, o.shape) for o in env.scene.objects}
        asks = any(f"{colour} {shape}" in instruction for colour, shape in HELD_OUT_COMBOS)  # "is there a blue cube?"
        compositional = held or asks or bool(combos & HELD_OUT_COMBOS)
        sample = plan_sample(instruction, obs["rgb"], obs["points"], plan)
        self._sample(sample_id, env.episode_seed, "plan", sample, sample_id, env.task.name, compositional)
        if env.task.commands:  # the same request in everyday words (the compositional split's from the held-out pool)
            reworded = paraphrase(instruction, "held_out" if self.held_out else "varied", rng)
            sample = plan_sample(reworded, obs["rgb"], obs["points"], plan)
            self._sample(sample_id + "-reworded", env.episode_seed, "plan", sample, sample_id, env.task.name, compositional)
        if env.task.name in ("pick_place", "rearrange"):  # the same plan from a description in words
            described = " ".join(
                f"on {table.name}: {', '.join(o.name for o in env.scene.objects if o.table == table.name)}."
                for table in env.scene.tables
            )
            text = text_sample(f"{described} {instruction}", plan)
            text.system = sample.system
            self._sample(sample_id + "-text", env.episode_seed, "text", text, "", env.task.name, compositional)

    def _instruction(self, env, rng) -> tuple[str, bool]:
        task = env.task
        if task.name not in INSTRUCTION_PHRASINGS:  # a question, or words that pick objects out of the scene
            return task.instruction, False
        phrasing, held = choose(INSTRUCTION_PHRASINGS[task.name], rng, self.held_out)
        goal = task.goal()
        if task.name == "object_nav":
            return phrasing.format(goal["target"]), held
        if task.name == "pick_place":
            return phrasing.format(*goal["moves"][0]), held
        return phrasing.format(", then ".join(f"the {item} in the {box}" for item, box in goal["moves"])), held

    # -- views, questions, captions, objects -----------------------------------------------------------

    def _views_and_objects(self, scene, seed: int, start, prefix: str, rng) -> None:
        from envs.backend import HEAD_CAMERA
        from envs.pointcloud import backproject, sample_cloud
        from envs.tasks import TaskUnavailable, ask, evidence, looked_for, reasoned

        env, config = self.envs["eqa"], self.config
        table = scene.tables[0]
        distance = float(np.hypot(start[0] - table.x, start[1] - table.y))
        bearing = float(np.arctan2(start[1] - table.y, start[0] - table.x))
        points = {o.name: [] for o in scene.objects}
        crops = {o.name: [] for o in scene.objects}
        for view in range(config.views):
            angle = bearing + 2 * np.pi * view / config.views
            x, y = table.x + distance * np.cos(angle), table.y + distance * np.sin(angle)
            if max(abs(x), abs(y)) > scene.room_half - 0.4:
                continue
            yaw = float(angle + np.pi)
            frame = env.view_from(x, y, yaw, segmentation=False)
            obs_id = f"{prefix}-view{view}"
            obs = self._observation(obs_id, seed, env.frame_observation(frame, ("rgb", "points")), env)
            frame = env.backend.render(HEAD_CAMERA, config.object_image_size, config.object_image_size, True)
            self._caption(scene, yaw, obs_id, seed, obs, rng)
            answers = []
            for question_type in ("attribute", "count", "spatial", "existence"):
                try:
                    form, words, answer = ask(question_type, scene, yaw, rng)
                except TaskUnavailable:
                    continue
                phrasing, held = choose(QUESTION_PHRASINGS[form], rng, self.held_out)
                question = phrasing.format(*words)
                reply = reasoned(evidence(looked_for(form, words), scene, (x, y)), answer)
                answers.append((question, reply))
                sample = vqa_sample(question, obs["rgb"], obs["points"], reply)
                combo = any(w in {f"{c} {s}" for c, s in HELD_OUT_COMBOS} for w in words) or self.held_out
                self._sample(f"{obs_id}-{question_type}", seed, "vqa", sample, obs_id, question_type, held or combo, answer)
            if view == 0 and len(answers) >= 2:
                self._dialogue(f"{obs_id}-dialogue", seed, obs, obs_id, answers[:2])
            xyz, rgb, seg = backproject(frame, env.config.max_depth, 1)
            for index, obj in enumerate(scene.objects):
                mask = seg == index
                points[obj.name].append(np.hstack([xyz[mask], rgb[mask]]))
                crop = _crop(frame.rgb, frame.segmentation == index, config.crop_size)
                if crop is not None:
                    crops[obj.name].append(_png(crop))
        for obj in scene.objects:
            cloud = np.vstack(points[obj.name]) if points[obj.name] else np.zeros((0, 6), np.float32)
            if len(cloud) < 16 or not crops[obj.name]:
                continue  # hidden in every view
            sampled, _ = sample_cloud(cloud[:, :3], cloud[:, 3:], None, config.object_points, config.object_voxel, rng)
            sampled[:, :3] -= sampled[:, :3].mean(axis=0)
            words = {"size": obj.size, "colour": obj.colour, "shape": obj.shape}
            self.rows["objects"].append(
                {
                    "id": f"{prefix}-{obj.name.replace(' ', '-')}",
                    "split": self.split,
                    "scene_seed": seed,
                    "name": obj.name,
                    "shape": obj.shape,
                    "colour": obj.colour,
                    "size": obj.size,
                    "descriptions": [d.format(**words) for d in DESCRIPTIONS],
                    "cloud": _f16(sampled),
                    "views": crops[obj.name],
                }
            )

    def _caption(self, scene, yaw, obs_id, seed, obs, rng) -> None:
        right = np.array([np.sin(yaw), -np.cos(yaw)])
        ordered = sorted(scene.objects, key=lambda o: float(right @ np.array([o.x, o.y])))
        phrasing = CAPTIONS[int(rng.integers(len(CAPTIONS)))]
        caption = phrasing.format(listing([f"a {o.size} {o.name}" for o in ordered]))
        self._sample(f"{obs_id}-caption", seed, "caption", caption_sample(obs["rgb"], obs["points"], caption), obs_id, "", self.held_out)

    def _dialogue(self, sample_id, seed, obs, obs_id, answers) -> None:
        from envs.tasks import final_answer

        first = vqa_sample(answers[0][0], obs["rgb"], obs["points"], answers[0][1])
        turns = [first.turns[0], *((f"Question: {q} Answer briefly.", a) for q, a in answers[1:])]
        sample = Sample(turns, first.images, first.clouds)
        self._sample(sample_id, seed, "dialogue", sample, obs_id, "", self.held_out, final_answer(turns[-1][1]))



def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _f16(cloud: np.ndarray) -> bytes:
    return np.ascontiguousarray(cloud, dtype=np.float16).tobytes()


def _crop(rgb: np.ndarray, mask: np.ndarray, size: int, min_pixels: int = 12) -> np.ndarray | None:
    """The object's bounding box, padded and squared, resized to ``size``; None when barely visible."""
    if mask.sum() < min_pixels:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    centre_r, centre_c = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    half = max(rows[-1] - rows[0], cols[-1] - cols[0]) / 2 + 3
    top, left = int(max(0, centre_r - half)), int(max(0, centre_c - half))
    bottom, right = int(min(rgb.shape[0], centre_r + half + 1)), int(min(rgb.shape[1], centre_c + half + 1))
    return np.asarray(Image.fromarray(rgb[top:bottom, left:right]).resize((size, size), Image.BILINEAR))
