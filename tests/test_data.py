"""The generated dataset: manifest and shards, sample kinds, the held-out combinations and phrasings of the
compositional split, samples read back for the model, resuming an interrupted run, and readers' errors."""

import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embodied.data.dataset import SplitData, decode_cloud, decode_png
from embodied.data.generate import MANIFEST, PLAN_TASKS, SPLITS, TABLES, DataConfig, _write_shard, generate
from embodied.data.phrasing import DESCRIPTIONS, HELD_OUT_COMBOS, INSTRUCTION_PHRASINGS, QUESTION_PHRASINGS
from embodied.errors import DatasetError
from embodied.prompts import IMAGE, OBJECTS, PLAN_SYSTEM, POINTS, Sample
from envs.paraphrase import FRAMES, WORDS
from envs.plan import parse_plan
from envs.scene import COLOURS, SHAPES
from envs.tasks import QUESTION_TYPES, QUESTIONS, REASONED, final_answer

KINDS = ("caption", "vqa", "plan", "dialogue", "text")
HELD_NAMES = {f"{colour} {shape}" for colour, shape in HELD_OUT_COMBOS}
ALL_NAMES = {f"{colour} {shape}" for colour in COLOURS for shape in SHAPES}
QUESTION_RE = re.compile(r"Question: (.*?) Answer briefly\.")


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    """The session's few-scene dataset (conftest ``tiny_dataset``) and its manifest. Shared: tests that
    change it work on a copy."""
    return tiny_dataset, json.loads((tiny_dataset / MANIFEST).read_text())


@pytest.fixture(scope="module")
def config(dataset):
    return DataConfig(**dataset[1]["config"])


@pytest.fixture(scope="module")
def splits(dataset):
    return {split: SplitData(dataset[0], split) for split in SPLITS}


def _pattern(phrasing: str) -> re.Pattern:
    return re.compile(re.escape(phrasing).replace(r"\{\}", "(.+)"))


def _matches(text: str, phrasings) -> bool:
    return any(_pattern(p).fullmatch(text) for p in phrasings)


def _turns(row: dict) -> list[tuple[str, str]]:
    return [tuple(turn) for turn in json.loads(row["turns"])]


def _instruction(row: dict) -> str:
    """The instruction of a plan or text sample: after the observation's placeholders, or after the
    description of the tables (object names hold no full stops)."""
    user = _turns(row)[0][0]
    return user.split("\n", 1)[1] if row["kind"] == "plan" else user.rsplit(". ", 1)[1]


def _named(text: str) -> set[str]:
    return {name for name in ALL_NAMES if re.search(rf"\b{name}\b", text)}


def _listed_objects(row: dict) -> set[str]:
    """The scene objects a plan or text sample names: its reply (thought and skill arguments, not a reply's
    words: "there is no blue cube", nor the thought's "blue cube: none") and, for a text sample, the description of the tables."""
    text = re.sub(r"answer\(.*\)|[a-z]+ [a-z]+: none", "", _turns(row)[0][1])  # "blue cube: none" is not there
    if row["kind"] == "text":
        text += " " + " ".join(re.findall(r"on [^:]+: ([^.]*)\.", _turns(row)[0][0]))
    return _named(text)


# -- manifest and shards ---------------------------------------------------------------------------------


def test_manifest_is_complete_and_counts_the_parquet_rows(dataset, config, splits):
    root, manifest = dataset
    assert manifest["complete"] is True
    # what the tests below assume
    assert config.shard_scenes == 1 and min(config.scenes(split) for split in SPLITS) >= 1
    assert set(manifest["rows"]) == set(SPLITS)
    for split in SPLITS:
        shards = sorted(p.name for p in (root / split).iterdir())
        assert shards == [f"shard-{i:04d}" for i in range(config.scenes(split))]  # one scene a shard, no temp folders
        for table in TABLES:
            files = sorted((root / split).glob(f"shard-*/{table}.parquet"))
            assert len(files) == len(shards)
            assert manifest["rows"][split][table] == sum(pq.read_table(f).num_rows for f in files) > 0
        data = splits[split]
        assert len(data.samples) == manifest["rows"][split]["samples"]
        assert len(data.objects) == manifest["rows"][split]["objects"]
        assert len(data._observations) == manifest["rows"][split]["observations"]


def test_ids_are_unique_and_samples_point_at_their_split_observations(splits):
    for split, data in splits.items():
        assert len({r["id"] for r in data.samples}) == len(data.samples)
        assert len({r["id"] for r in data.objects}) == len(data.objects)
        assert {r["split"] for r in data.samples + data.objects} == {split}
        for row in data.samples:
            assert row["answer"] == final_answer(_turns(row)[-1][1])  # a VQA reply lists its evidence first
            if row["kind"] == "text":
                assert row["observation"] == ""
            else:
                assert row["observation"] in data._observations


def test_every_split_has_every_kind_and_question_type(splits):
    for split, data in splits.items():
        assert {r["kind"] for r in data.samples} == set(KINDS), split
        vqa = data.select(("vqa",))
        assert {r["question_type"] for r in vqa} == set(QUESTION_TYPES), split
        plans = data.select(("plan",))
        assert {r["question_type"] for r in plans} == set(PLAN_TASKS), split
        assert {r["question_type"] for r in data.select(("text",))} == {"pick_place", "rearrange"}, split
        assert all(r["kind"] == "vqa" for r in vqa)
        assert data.select() == data.samples


# -- what the compositional split holds out ---------------------------------------------------------------


def test_only_compositional_scenes_show_held_out_combinations(splits):
    for split, data in splits.items():
        for seed in {r["scene_seed"] for r in data.objects}:
            shown = {(o["colour"], o["shape"]) for o in data.objects if o["scene_seed"] == seed}
            assert bool(shown & HELD_OUT_COMBOS) == (split == "compositional"), (split, seed, shown)
        for row in data.select(("plan", "text")):
            listed = _listed_objects(row)
            assert listed or "answer(" in _turns(row)[0][1], row["id"]  # what a plan moves, the check below sees
            if split == "compositional":
                continue
            assert not listed & HELD_NAMES, (row["id"], listed & HELD_NAMES)
    # Every compositional scene (its table of objects, or the scene of a rearrangement task) shows one.
    compositional = splits["compositional"]
    for row in compositional.select(("text",)):
        assert _listed_objects(row) & HELD_NAMES, row["id"]


def test_samples_that_mention_a_held_out_combination_are_flagged(splits):
    for split in ("train", "val", "test"):
        for row in splits[split].samples:
            if _named(" ".join(u + " " + a for u, a in _turns(row))) & HELD_NAMES:
                assert row["compositional"], row["id"]
    assert splits["train"].select(compositional=True) == [r for r in splits["train"].samples if r["compositional"]]
    # Every sample of a compositional scene is about held-out combinations, the text-only ones included.
    assert all(r["compositional"] for r in splits["compositional"].samples)


def test_eqa_plan_asking_about_a_held_out_combination_is_kept_out_of_training(tmp_path):
    """Train scene 23's question is "is there a yellow bowl?" (the answer is no): it names a held-out
    combination, so training must not see it."""
    small = DataConfig(
        train_scenes=24, val_scenes=0, test_scenes=0, compositional_scenes=0,
        shard_scenes=1, views=1, image_size=64, num_points=256,
    )
    _write_shard(tmp_path, small, "train", 23)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "train" / "shard-0023" / "samples.parquet").to_pylist()}
    eqa = rows["train-23-eqa"]
    assert _named(_turns(eqa)[0][0]) & HELD_NAMES
    assert eqa["compositional"] is True
    assert not any(r["compositional"] for r in rows.values() if r["kind"] == "plan" and r is not eqa)


def test_training_never_uses_a_held_out_phrasing(splits):
    held_questions = [p[-1] for p in QUESTION_PHRASINGS.values()]
    kept_questions = [q for p in QUESTION_PHRASINGS.values() for q in p[:-1]]
    checked = 0
    for row in splits["train"].samples:
        if row["kind"] in ("vqa", "dialogue"):
            questions = [m for user, _ in _turns(row) for m in QUESTION_RE.findall(user)]
            assert len(questions) == len(_turns(row))
            for question in questions:
                assert not _matches(question, held_questions), (row["id"], question)
                assert _matches(question, kept_questions), (row["id"], question)
                checked += 1
        elif row["kind"] in ("plan", "text"):
            task, instruction = row["question_type"], _instruction(row)
            if task == "eqa":
                assert _matches(instruction, QUESTIONS.values()), (row["id"], instruction)
                continue
            if row["id"].endswith("-reworded"):  # everyday words, none from the pool only evaluation uses
                assert not _held_out_words(instruction), (row["id"], instruction)
                checked += 1
                continue
            if task not in INSTRUCTION_PHRASINGS:  # words that pick objects out of the scene: the task's own
                continue
            assert not _matches(instruction, INSTRUCTION_PHRASINGS[task][-1:]), (row["id"], instruction)
            assert _matches(instruction, INSTRUCTION_PHRASINGS[task][:-1]), (row["id"], instruction)
            checked += 1
    assert checked >= 20
    # The check can see a held-out phrasing: the compositional split uses some.
    used = [
        q
        for row in splits["compositional"].select(("vqa",))
        for q in QUESTION_RE.findall(_turns(row)[0][0])
        if _matches(q, held_questions)
    ]
    used += [
        _instruction(row)
        for row in splits["compositional"].select(("plan", "text"))
        if row["question_type"] in INSTRUCTION_PHRASINGS
        and _matches(_instruction(row), INSTRUCTION_PHRASINGS[row["question_type"]][-1:])
    ]
    used += [row["id"] for row in splits["compositional"].select(("plan",)) if _held_out_words(_instruction(row))]
    assert used and any(u.endswith("-reworded") for u in used)
    assert all(row["compositional"] for row in splits["compositional"].select(("vqa",)))


def _held_out_words(instruction: str) -> set[str]:
    """The words and sentence frames of ``envs.paraphrase``'s held-out pool in an instruction."""
    words = {w for _, held in WORDS.values() for w in held if re.search(rf"\b{w}\b", instruction)}
    return words | {f for f in FRAMES[1] if re.fullmatch(re.escape(f).replace(r"\{\}", ".*"), instruction)}


def test_every_plan_parses(splits):
    for data in splits.values():
        for row in data.select(("plan", "text")):
            plan = parse_plan(row["answer"])
            assert plan.steps[-1].skill in ("answer", "done"), row["id"]
            if row["question_type"] in ("eqa", "refuse"):
                assert plan.answer is not None
            elif plan.answer is None or row["question_type"] != "conditional":  # an absent object is answered
                assert plan.steps[-1].skill == "done"
                assert {a for step in plan.steps for a in step.args} <= ALL_NAMES


def test_vqa_replies_list_the_objects_they_read_the_answer_off(splits):
    listed = 0
    for data in splits.values():
        for row in data.select(("vqa",)):
            reply = json.loads(row["turns"])[-1][1]
            assert final_answer(reply) == row["answer"], row["id"]  # scored on the answer alone
            if row["question_type"] in ("count", "existence"):
                evidence = reply.removesuffix(REASONED + row["answer"])
                label, names = evidence.split(": ")
                listed += names != "none"
                assert names == "none" or all(label.split()[0].removesuffix("s") in n for n in names.split(", ")), reply
            if row["question_type"] == "count":
                assert int(row["answer"]) == (0 if names == "none" else len(names.split(", "))), reply
    assert listed > 0


# -- samples and objects read back -------------------------------------------------------------------------


def test_sample_decodes_images_and_clouds_for_its_placeholders(splits, config):
    data = splits["val"]
    seen = set()
    for row in data.samples:
        sample = data.sample(row)
        assert isinstance(sample, Sample)
        text = "".join(user for user, _ in sample.turns)
        assert len(sample.images) == text.count(IMAGE)
        assert len(sample.clouds) == text.count(POINTS)
        assert sample.turns == _turns(row)
        assert final_answer(sample.turns[-1][1]) == row["answer"]
        if row["kind"] == "text":
            assert sample.images == [] and sample.clouds == []
        else:
            assert len(sample.images) == len(sample.clouds) == 1
            image, cloud = sample.images[0], sample.clouds[0]
            assert image.shape == (config.image_size, config.image_size, 3) and image.dtype == np.uint8
            assert cloud.shape == (config.num_points, 6) and cloud.dtype == np.float32
            assert np.isfinite(cloud).all()
            assert image.std() > 0  # a rendered scene, not a blank frame
        assert sample.system == (PLAN_SYSTEM if row["kind"] in ("plan", "text") else None)
        seen.add(row["kind"])
    assert seen == set(KINDS)


def test_observations_carry_every_known_objects_cloud_in_the_robots_frame(splits, config):
    """Object tokens' inputs: each observation holds one cloud per scene object it knows of, in the frame
    of the robot that saw it, and a sample shows them (``<objects>``) only when asked to."""
    data = splits["val"]
    rows = [row for row in data.samples if row["kind"] in ("plan", "vqa")]
    for row in rows:
        _, _, objects = data.observation(row["observation"])
        names = data._observations[row["observation"]]["object_names"]
        assert len(objects) == len(names) >= 1 and len(set(names)) == len(names)
        assert all(c.shape == (config.scene_object_points, 6) and np.isfinite(c).all() for c in objects)
        assert max(float(np.abs(c[:, :2]).max()) for c in objects) < 12  # metres from the robot, in the room
        shown = data.sample(row, inputs=("image", "cloud", "objects"))
        assert OBJECTS in shown.turns[0][0] and len(shown.objects) == 1 and len(shown.objects[0]) == len(names)
        assert OBJECTS not in data.sample(row).turns[0][0] and data.sample(row).objects == []
    blind = data.sample(rows[0], inputs=())
    assert blind.images == blind.clouds == blind.objects == [] and not blind.turns[0][0].startswith("\n")


def test_sample_without_reply_leaves_the_last_one_to_write(splits):
    data = splits["train"]
    for kind in KINDS:
        row = data.select((kind,))[0]
        full, open_ = data.sample(row), data.sample(row, reply=False)
        assert open_.turns[-1] == (full.turns[-1][0], None)
        assert open_.turns[:-1] == full.turns[:-1]
        assert all(reply is not None for _, reply in open_.turns[:-1])
        assert len(open_.images) == len(full.images) and len(open_.clouds) == len(full.clouds)
    dialogue = data.sample(data.select(("dialogue",))[0], reply=False)
    assert len(dialogue.turns) == 2 and dialogue.turns[0][1] is not None


def test_objects_have_views_descriptions_and_centred_clouds(splits, config):
    for data in splits.values():
        assert data.objects
        for row in data.objects:
            assert row["name"] == f"{row['colour']} {row['shape']}"
            assert row["views"]
            for view in row["views"]:
                image = decode_png(view)
                assert image.shape == (config.crop_size, config.crop_size, 3) and image.dtype == np.uint8
            cloud = decode_cloud(row["cloud"])
            assert cloud.shape == (config.object_points, 6)
            assert np.isfinite(cloud).all()
            assert np.abs(cloud[:, :3].mean(axis=0)).max() < 1e-2
            assert np.abs(cloud[:, :3]).max() < 0.5  # an object, not the room
            assert cloud[:, :3].std() > 1e-3
            assert ((cloud[:, 3:] >= 0) & (cloud[:, 3:] <= 1)).all()
            words = {"colour": row["colour"], "shape": row["shape"], "size": row["size"]}
            assert row["descriptions"] == [d.format(**words) for d in DESCRIPTIONS]
            assert row["size"] in ("small", "large")


# -- resuming and refusing ---------------------------------------------------------------------------------


def test_resume_rewrites_only_the_missing_shard_identically(dataset, config, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset[0], copy)
    shards = sorted(p.name for p in (copy / "train").iterdir())
    lost = copy / "train" / shards[-1]
    before = {table: pq.read_table(lost / f"{table}.parquet") for table in TABLES}
    others = {
        p: p.stat().st_mtime_ns for split in SPLITS for p in (copy / split).rglob("*") if not p.is_relative_to(lost)
    }
    shutil.rmtree(lost)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["complete"] = False  # as an interrupted run leaves it
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError):
        SplitData(copy, "train")

    assert generate(copy, config, workers=1, progress=False) == dataset[1]
    for table in TABLES:
        again = pq.read_table(lost / f"{table}.parquet")
        assert again.equals(before[table]), table
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert sorted(p.name for p in (copy / "train").iterdir()) == shards  # no temp folder left
    assert len(SplitData(copy, "train").samples) == dataset[1]["rows"]["train"]["samples"]


def test_another_config_on_the_same_folder_is_refused(dataset, config):
    root = dataset[0]
    manifest = (root / MANIFEST).read_text()
    with pytest.raises(ValueError, match="another config"):
        generate(root, replace(config, train_scenes=config.train_scenes + 1), workers=1, progress=False)
    assert (root / MANIFEST).read_text() == manifest
    assert not (root / "train" / f"shard-{config.train_scenes:04d}").exists()


def test_config_rejects_impossible_values():
    for bad in (dict(train_scenes=-1), dict(views=0), dict(shard_scenes=0), dict(object_points=8)):
        with pytest.raises(ValueError):
            DataConfig(**bad)


def test_reading_a_folder_that_is_not_a_dataset(tmp_path, dataset, config):
    with pytest.raises(DatasetError, match=r"not a dataset: .*dataset\.json is missing"):
        SplitData(tmp_path, "train")
    (tmp_path / MANIFEST).write_text(json.dumps({"config": asdict(config), "complete": False}))
    with pytest.raises(DatasetError, match="unfinished.*resume"):
        SplitData(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split 'training'.*train, val, test, compositional"):
        SplitData(dataset[0], "training")
    assert isinstance(SplitData(Path(str(dataset[0])), "test"), SplitData)
