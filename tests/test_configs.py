"""Configs are checked at the edge: every value against its field's type and range, a broken YAML file, a
bad ``--set`` and a checkpoint's config.json, each refused in one line (exit 2) before anything loads."""

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest

from agents.rl import RLConfig
from embodied.cli import main
from embodied.encoders.image import ImageEncoderConfig
from embodied.encoders.pointcloud import PointEncoderConfig
from embodied.model import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, EmbodiedModel, LoraSettings, ModelConfig
from embodied.projectors import ProjectorConfig
from embodied.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SFT = str(CONFIGS / "train" / "sft.yaml")
BASE = {"stage": "sft", "data": "d", "out": "o"}


@pytest.fixture
def nothing_loads(monkeypatch):
    """Training, the model and the datasets fail the test if a refused config reaches them."""
    import agents.rl
    import agents.train_workers
    import embodied.train.loop
    from embodied.data.dataset import SplitData

    def loaded(*args, **kwargs):
        raise AssertionError("a refused config got as far as loading")

    for owner, name in (
        (embodied.train.loop, "train"),
        (agents.train_workers, "train_with_ray"),
        (agents.rl, "train_rl"),
        (EmbodiedModel, "__init__"),
        (SplitData, "__init__"),
    ):
        monkeypatch.setattr(owner, name, loaded)


def _refused(capsys, argv: list[str]) -> str:
    """The one line ``embodied`` prints when it refuses ``argv`` with exit status 2."""
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"embodied {argv[0]}: error: "), error
    return error


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=abc", "train config.steps must be an integer, got 'abc'"),
        ("steps=2.5", "train config.steps must be an integer, got 2.5"),
        ("steps=true", "train config.steps must be an integer, got True"),
        ("steps=", "train config.steps must be an integer, got None"),
        ("steps=0", "train config: steps must be >= 1, got 0"),
        ("model.lora.rank=abc", "train config.model.lora.rank must be an integer, got 'abc'"),
        ("model.image.heads=0", "train config.model.image: image encoder sizes must be positive, got heads 0"),
        ("model.points.layers=-1", "train config.model.points: point encoder sizes must be positive, got layers -1"),
        ("model.lora.dropout=1.5", "train config.model.lora: LoRA needs rank >= 0, alpha > 0 and dropout in [0, 1)"),
        ("model.points.num_groups=[8]", "train config.model.points.num_groups must be an integer, got [8]"),
        ("lr=abc", "train config.lr must be a finite number, got 'abc'"),
        ("lr=.nan", "train config.lr must be a finite number, got nan"),
        ("lr=-1", "train config: lr must be > 0, got -1.0"),
        ("seed=-1", "train config: seed must be >= 0, got -1"),
        ("init=3", "train config.init must be a string or a list or null, got 3"),
        ("out=", "train config.out must be a string, got None"),
        ("data=''", "train config: data and out must name folders"),
        ("trainable=lora", "train config.trainable must be a list, got 'lora'"),
        ("trainable=[lora, 3]", "train config.trainable[1] must be a string, got 3"),
        ("mix=[vqa]", "train config.mix must be a mapping, got ['vqa']"),
        ("steps=[1", "--set steps=[1: the value is not valid YAML (expected ',' or ']', but got '<stream end>')"),
        ("steps", "expected NAME=VALUE, got 'steps'"),
    ],
)
def test_a_bad_override_is_one_line_before_anything_loads(capsys, nothing_loads, override, message):
    error = _refused(capsys, ["train", "sft", "--config", SFT, "--workers", "0", "--set", override])
    assert error == f"embodied train: error: {message}\n"


def test_a_broken_or_odd_yaml_file_is_one_line_naming_it(tmp_path, capsys, nothing_loads):
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: sft\nsteps: [1, 2\n")
    error = _refused(capsys, ["train", "sft", "--config", str(broken), "--workers", "0"])
    assert f"{broken} is not valid YAML (line 3, column 1): expected ',' or ']'" in error
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"stage: sft\n\xff\xfe")
    assert f"{binary} is not valid YAML" in _refused(capsys, ["train", "sft", "--config", str(binary), "--workers", "0"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- stage: sft\n")
    assert f"{listed} must hold a mapping of config keys, got list" in _refused(capsys, ["train", "rl", "--config", str(listed)])
    model = tmp_path / "train.yaml"
    model.write_text(f"stage: sft\ndata: d\nout: o\nmodel: {broken.name}\n")
    assert f"{broken} is not valid YAML" in _refused(capsys, ["train", "sft", "--config", str(model), "--workers", "0"])
    assert "no training config at" in _refused(capsys, ["train", "sft", "--config", str(tmp_path), "--workers", "0"])
    assert "--workers must be >= 0, got -1" in _refused(capsys, ["train", "sft", "--config", SFT, "--workers", "-1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("iterations=abc", "rl config.iterations must be an integer, got 'abc'"),
        ("temperature=0", "rl config: temperature must be > 0, got 0.0"),
        ("eval_seed=-5", "rl config: eval_seed must be >= 0, got -5"),
        ("tasks=pick_place", "rl config.tasks must be a list, got 'pick_place'"),
    ],
)
def test_a_bad_rl_override_is_one_line_before_ray_starts(capsys, nothing_loads, override, message):
    error = _refused(capsys, ["train", "rl", "--config", str(CONFIGS / "train" / "rl.yaml"), "--set", override])
    assert error == f"embodied train: error: {message}\n"


def test_a_damaged_rl_checkpoint_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    import agents.runtime

    def started(*args, **kwargs):
        raise AssertionError("Ray started for a run that cannot resume")

    monkeypatch.setattr(agents.runtime, "start", started)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{not json")
    argv = ["train", "rl", "--config", str(CONFIGS / "train" / "rl.yaml"), "--set", f"out={tmp_path}"]
    assert "cannot resume" in _refused(capsys, argv)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_points": "many"}, "config.num_points must be an integer, got 'many'"),
        ({"num_points": 64.5}, "config.num_points must be an integer, got 64.5"),
        ({"lora": {"rank": "4"}}, "config.lora.rank must be an integer, got '4'"),
        ({"backbone": None}, "config.backbone must be a string, got None"),
    ],
)
def test_a_checkpoint_config_of_the_wrong_types_is_one_line(tmp_path, capsys, nothing_loads, change, message):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **ModelConfig.tiny().to_dict(), **change}))
    (checkpoint / WEIGHTS_FILE).write_bytes(b"")
    argv = ["eval", "vqa", "--checkpoint", str(checkpoint), "--policies", "model", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert _refused(capsys, argv) == f"embodied eval: error: {checkpoint / CONFIG_FILE}: {message}\n"


@pytest.mark.parametrize("stage", ["pretrain", "sft", "rl"])
def test_every_recipe_stage_after_ulip_trains_every_input_projector(stage):
    """The recipe's SFT once left the object tokens' projector out of its list, and the shipped model read
    its objects through a projector only captioning had trained."""
    path = CONFIGS / "train" / f"{stage}.yaml"
    parts = RLConfig.load(path).trainable if stage == "rl" else TrainConfig.load(path).parts
    assert {"image_projector", "point_projector", "object_encoder"} <= set(parts)


def test_types_are_checked_against_the_annotations():
    config = TrainConfig.from_dict({**BASE, "lr": 1, "trainable": ["lora"], "init": None, "model": {"lora": {"dropout": 0}}})
    assert type(config.lr) is float and config.lr == 1.0  # an int where a float is expected
    assert config.trainable == ("lora",) and config.init is None and type(config.model.lora.dropout) is float
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad, message in (
        ({"steps": True}, "steps must be an integer, got True"),  # a bool is not a number here
        ({"lr": False}, "lr must be a finite number, got False"),
        ({"lr": math.inf}, "lr must be a finite number, got inf"),
        ({"steps": 1000.0}, "steps must be an integer, got 1000.0"),
        ({"model": {"image": {"name": 5}}}, r"train config\.model\.image\.name must be a string, got 5"),
        ({"model": {"lora": {"targets": [1]}}}, r"train config\.model\.lora\.targets\[0\] must be a string, got 1"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict({**BASE, **bad})
    with pytest.raises(ValueError, match=r"train config lacks the required keys \['data', 'out'\]"):
        TrainConfig.from_dict({"stage": "sft"})
    with pytest.raises(ValueError, match=r"unknown keys in train config: \[1, 'x'\]"):
        TrainConfig.from_dict({**BASE, 1: 2, "x": 3})


@pytest.mark.parametrize(
    ("cls", "base"),
    [(TrainConfig, BASE), (RLConfig, {}), (ModelConfig, {}), (LoraSettings, {}), (ImageEncoderConfig, {}), (PointEncoderConfig, {}), (ProjectorConfig, {})],
)
def test_every_number_has_a_range(cls, base):
    hints = typing.get_type_hints(cls)
    numbers = [f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]
    assert numbers
    for name in numbers:
        with pytest.raises(ValueError, match=name):
            cls(**base, **{name: -1})
