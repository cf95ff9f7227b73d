"""Training: the ulip -> pretrain -> sft chain on a tiny model and dataset, what each stage trains, exact
resumption, configs from YAML, the learning-rate schedule, failures that must be loud, the VQA metrics and
the frozen text tower."""

import json
import math
import multiprocessing
import random
import shutil
import time
from dataclasses import replace
from itertools import count
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from embodied import io
from embodied.cli import main
from embodied.data.dataset import SplitData
from embodied.errors import CheckpointError
from embodied.eval.vqa import exact_match, question_form, random_answers, refined_exact_match
from embodied.model import WEIGHTS_FILE, EmbodiedModel, ModelConfig
from embodied.train import language, loop
from embodied.train.checkpoints import OPTIMIZER_FILE, STATE_FILE, check_loaded, read_init_weights
from embodied.train.config import TrainConfig
from embodied.train.loop import learning_rate, train
from embodied.train.metrics import read_metrics
from embodied.train.text_tower import TextTower
from embodied.train.ulip import CLASSES
from envs.tasks import normalize_answer

TINY = ModelConfig.tiny()
STEPS = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def data(tiny_dataset):
    """The session's few-scene dataset (conftest): enough of every sample kind for every stage."""
    return tiny_dataset


def _config(data, out, stage: str, **changes) -> TrainConfig:
    settings = dict(
        stage=stage, data=str(data), out=str(out), model=TINY.to_dict(), steps=STEPS, batch_size=2, lr=1e-3,
        warmup=1, log_every=1, eval_every=100, eval_samples=2, save_every=2, threads=1,
    )
    return TrainConfig.from_dict({**settings, **changes})


def _fresh_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The trainable weights a stage starts from before any init: ``train`` seeds torch, then builds the model."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in EmbodiedModel(TINY).trainable_state().items()}


def _weights(run, folder: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(run / folder / WEIGHTS_FILE))


def _part(weights: dict, prefix: str) -> dict:
    return {k: v for k, v in weights.items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def chain(data, tmp_path_factory):
    """ulip, then pretrain from the ulip run, then sft from the pretrain run:
    {stage: (config, run folder, last metrics)}."""
    runs = tmp_path_factory.mktemp("runs")
    done, init = {}, None
    for stage in ("ulip", "pretrain", "sft"):
        config = _config(data, runs / stage, stage, init=init)
        done[stage] = (config, runs / stage, train(config, progress=False))
        init = str(runs / stage)
    return done


# -- the chain of stages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["ulip", "pretrain", "sft"])
def test_every_stage_writes_checkpoint_model_metrics_and_curves(chain, stage):
    config, run, last = chain[stage]
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE, "config.json"):
        assert (run / "checkpoint" / name).is_file(), name
    state = json.loads((run / "checkpoint" / STATE_FILE).read_text())
    assert state["step"] == STEPS
    assert TrainConfig.from_dict(state["config"]) == config
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    assert {p.name for p in (run / "model").iterdir()} == {"config.json", WEIGHTS_FILE}
    assert _same(_weights(run), _weights(run, "checkpoint"))  # the last checkpoint is the final model

    records = read_metrics(run / "metrics.jsonl")
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in losses)
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [STEPS] and last == evals[-1]
    if stage == "ulip":
        assert 0 <= last["eval/zero_shot_accuracy"] <= 1
    else:
        assert math.isfinite(last["eval/val_loss"]) and last["eval/val_loss"] > 0
    assert ("eval/val_vqa_exact_match" in last) == (stage == "sft")

    png = (run / "curves.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    with Image.open(run / "curves.png") as image:
        image.verify()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bf16_autocast_trains_on_the_same_loss(chain, tmp_path):
    """bfloat16 matrix products (the shipped instruction tuning's) see the loss fp32 sees on the same first
    batch, to bfloat16's precision, and the weights, kept in fp32, still learn."""
    config, run, _ = chain["sft"]
    fast = replace(config, out=str(tmp_path / "bf16"), precision="bf16")
    train(fast, progress=False)
    first = lambda folder: next(r["loss"] for r in read_metrics(folder / "metrics.jsonl") if "loss" in r)
    assert first(tmp_path / "bf16") == pytest.approx(first(run), rel=0.03)
    weights = _weights(tmp_path / "bf16")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # LoRA B starts at zero


def test_ulip_model_folder_holds_both_encoders_and_heads(chain):
    _, run, _ = chain["ulip"]
    weights = _weights(run)
    written = json.loads((run / "model" / "config.json").read_text())
    assert written == {"stage": "ulip", "model": json.loads(json.dumps(TINY.to_dict()))}
    for prefix in ("image_encoder.", "point_encoder.", "image_head.", "point_head."):
        assert _part(weights, prefix), prefix
    assert "logit_scale" in weights
    assert len(CLASSES) == 40 and len(set(CLASSES)) == 40


def test_pretrain_trains_only_the_projectors(chain):
    ulip, pretrain, fresh = _weights(chain["ulip"][1]), _weights(chain["pretrain"][1]), _fresh_state()
    assert pretrain.keys() == fresh.keys()
    for encoder in ("image_encoder.", "point_encoder."):
        assert _part(pretrain, encoder) and _same(_part(pretrain, encoder), _part(ulip, encoder))  # loaded, then frozen
        assert not _same(_part(ulip, encoder), _part(fresh, encoder))  # (so the init did change them)
    lora = {k: v for k, v in pretrain.items() if "lora_" in k}
    assert lora and _same(lora, {k: fresh[k] for k in lora})
    for projector in ("image_projector.", "point_projector."):
        changed = [k for k in _part(pretrain, projector) if not torch.equal(pretrain[k], fresh[k])]
        assert len(changed) >= len(_part(pretrain, projector)) / 2, projector


def test_sft_tunes_lora_and_projectors_from_pretrain_and_loads(chain):
    pretrain, sft = _weights(chain["pretrain"][1]), _weights(chain["sft"][1])
    for encoder in ("image_encoder.", "point_encoder."):
        assert _same(_part(sft, encoder), _part(pretrain, encoder))
    lora_b = {k: v for k, v in sft.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # LoRA B starts at zero
    for projector in ("image_projector.", "point_projector."):
        assert not _same(_part(sft, projector), _part(pretrain, projector))

    model = EmbodiedModel.from_pretrained(chain["sft"][1] / "model")
    assert model.config == TINY
    assert _same({k: v for k, v in model.trainable_state().items()}, sft)
    data = SplitData(chain["sft"][0].data, "val")
    row = data.select(("vqa",))[0]
    (reply,) = model.eval().generate([data.sample(row, reply=False)], max_new_tokens=3)
    assert isinstance(reply, str)


# -- resuming ----------------------------------------------------------------------------------------------


def _interrupt_at(monkeypatch, step: int) -> None:
    """Make the next run's stage raise when it draws the batch of ``step`` (0-based), as a crash would."""
    real = loop.build_stage

    def build(config):
        stage = real(config)
        calls, batch = count(), stage.batch

        def interrupted(rng):
            if next(calls) == step:
                raise KeyboardInterrupt
            return batch(rng)

        stage.batch = interrupted
        return stage

    monkeypatch.setattr(loop, "build_stage", build)


def test_an_interrupted_run_resumes_exactly(data, tmp_path, monkeypatch):
    steps = 6
    straight = _config(data, tmp_path / "a", "sft", steps=steps, eval_every=3)
    train(straight, progress=False)

    resumed = replace(straight, out=str(tmp_path / "b"))
    _interrupt_at(monkeypatch, 5)  # steps 0-4 done and logged, the last checkpoint at 4
    with pytest.raises(KeyboardInterrupt):
        train(resumed, progress=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "b" / "checkpoint" / STATE_FILE).read_text())["step"] == 4
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "b" / "model").exists()
    train(resumed, progress=False)

    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), name
    metrics_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    metrics_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    loss_a, loss_b = [r for r in metrics_a if "loss" in r], [r for r in metrics_b if "loss" in r]
    assert [r["step"] for r in loss_b] == list(range(1, steps + 1))  # step 5 once, not twice
    assert [r["loss"] for r in loss_b] == pytest.approx([r["loss"] for r in loss_a], rel=1e-4)
    assert [r["lr"] for r in loss_b] == [r["lr"] for r in loss_a]
    assert [r["step"] for r in metrics_b if "eval/val_loss" in r] == [3, 6]

    # Rerunning a finished run trains nothing more.
    train(resumed, progress=False)
    assert _same(_weights(tmp_path / "b"), b)
    assert read_metrics(tmp_path / "b" / "metrics.jsonl") == metrics_b

    with pytest.raises(CheckpointError, match="batch_size"):
        train(replace(resumed, batch_size=3), progress=False)


def test_a_damaged_checkpoint_is_a_checkpoint_error(data, tmp_path):
    config = _config(data, tmp_path / "run", "pretrain", steps=2)
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(config, progress=False)


class _Killed(BaseException):
    """A crash that no ``except Exception`` stops."""


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """An uninterrupted pretrain run (checkpoints at steps 2 and 4): what every interrupted one must end as."""
    config = _config(data, tmp_path_factory.mktemp("straight") / "run", "pretrain")
    train(config, progress=False)
    return config


def _assert_ends_as(run: Path, straight: TrainConfig) -> None:
    """Bit-identical weights and optimizer state, and every step's loss logged once, as uninterrupted."""
    reference = Path(straight.out)
    assert _same(_weights(run), _weights(reference))
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        assert _same(load_file(str(run / "checkpoint" / name)), load_file(str(reference / "checkpoint" / name))), name
    logged, expected = (
        [(r["step"], r["loss"]) for r in read_metrics(folder / "metrics.jsonl") if "loss" in r] for folder in (run, reference)
    )
    assert logged == expected and [step for step, _ in logged] == list(range(1, straight.steps + 1))
    assert not (run / ".checkpoint.old").exists()


def _kill_on(monkeypatch, module, name: str, when) -> None:
    """Make ``module.name`` (an os or shutil function) raise ``_Killed`` instead of running when ``when(path)``."""
    real = getattr(module, name)

    def killed(path, *args, **kwargs):
        if when(Path(path), *args):
            raise _Killed
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, killed)


def test_a_save_killed_between_its_renames_resumes_from_the_previous_checkpoint(straight, tmp_path, monkeypatch):
    config = replace(straight, out=str(tmp_path / "run"))
    run = tmp_path / "run"
    # the save at step 4 has moved the step-2 checkpoint aside; the kill comes before the new one takes its place

    def moving_in(src: Path, dst: str) -> bool:
        return Path(dst) == run / "checkpoint" and (run / ".checkpoint.old").exists()

    _kill_on(monkeypatch, io.os, "replace", moving_in)
    with pytest.raises(_Killed):
        train(config, progress=False)
    monkeypatch.undo()
    assert not (run / "checkpoint").exists()
    assert json.loads((run / ".checkpoint.old" / STATE_FILE).read_text())["step"] == 2
    with pytest.warns(RuntimeWarning, match=r"checkpoint is missing .*resuming from .*\.checkpoint\.old, step 2"):
        train(config, progress=False)
    _assert_ends_as(run, straight)


def test_a_damaged_checkpoint_resumes_from_the_previous_one_if_whole(straight, tmp_path, monkeypatch, capsys):
    config = replace(straight, out=str(tmp_path / "run"))
    run = tmp_path / "run"
    # killed after the save at step 4 put its checkpoint in place, before it removed the step-2 one
    _kill_on(monkeypatch, io.shutil, "rmtree", lambda path, *_: path == run / ".checkpoint.old" and path.exists())
    with pytest.raises(_Killed):
        train(config, progress=False)
    monkeypatch.undo()
    weights = run / "checkpoint" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # torn by a crash
    warning = rf"checkpoint/{WEIGHTS_FILE} is unreadable: .*; resuming from .*\.old, step 2"
    with pytest.warns(RuntimeWarning, match=warning):
        train(config, progress=False)
    _assert_ends_as(run, straight)

    # Both checkpoints damaged: one line on the command line, naming the newest, and nothing trained.
    for folder, name in (("checkpoint", OPTIMIZER_FILE), (".checkpoint.old", STATE_FILE)):
        (run / folder).mkdir(exist_ok=True)
        (run / folder / name).write_bytes(b"\x00" * 7)
    shutil.rmtree(run / "model")
    path = _yaml(tmp_path / "pretrain.yaml", config.to_dict())
    capsys.readouterr()
    assert main(["train", "pretrain", "--config", str(path), "--workers", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("embodied train: error: cannot resume: ")
    assert f"{run / 'checkpoint' / OPTIMIZER_FILE} is unreadable: Error while deserializing header" in error
    assert f"delete {run / 'checkpoint'} and {run / '.checkpoint.old'} to start over" in error
    assert not (run / "model").exists()


@pytest.mark.parametrize("kills", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_a_run_killed_at_random_moments_resumes_each_time_to_the_same_weights(straight, tmp_path, kills):
    """SIGKILL at random times (mid-step, mid-save, between a save's renames, mid-export) of training children
    forked from a process that has imported the stack once; rerunning resumes, and every run ends
    bit-identical to an uninterrupted one. (20 kills take half a minute or more on two cores: -m slow.)"""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["embodied.train.loop", "embodied.train.language"])

    # (tqdm would give each child a multiprocessing lock, which a kill leaks: a warning when the tests end)
    code = "import threading, tqdm; tqdm.tqdm.set_lock(threading.RLock()); train(config, progress=False)"

    def run(out: Path, seconds: float | None = None) -> bool:
        """Train in a child, killed after ``seconds``: whether it finished first."""
        child = context.Process(target=exec, args=(code, {"train": train, "config": replace(straight, out=str(out))}))
        child.start()
        child.join(seconds)
        if child.exitcode is None:
            child.kill()
            child.join()
            return False
        assert child.exitcode == 0, f"training {out} ended with exit status {child.exitcode}"
        return True

    warm_up = context.Process(target=time.sleep, args=(0,))  # the fork server imports the stack once
    warm_up.start()
    warm_up.join()
    began = time.perf_counter()
    assert run(tmp_path / "timed")
    seconds, draw = time.perf_counter() - began, random.Random(kills)
    killed, finished, out = 0, [tmp_path / "timed"], None
    while killed < kills or out:
        out = out or tmp_path / f"run{len(finished)}"
        if run(out, draw.uniform(0, seconds) if killed < kills else None):
            finished.append(out)
            out = None
        else:
            killed += 1
    for folder in finished:
        _assert_ends_as(folder, straight)


def test_a_checkpoint_whose_run_config_is_wrong_is_a_checkpoint_error(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(Path(straight.out) / "checkpoint", run / "checkpoint")
    state = json.loads((run / "checkpoint" / STATE_FILE).read_text())
    (run / "checkpoint" / STATE_FILE).write_text(json.dumps({**state, "config": {**state["config"], "steps": "many"}}))
    with pytest.raises(CheckpointError, match=r"cannot resume from .*checkpoint: train config.steps must be an integer, got 'many'"):
        train(replace(straight, out=str(run)), progress=False)


def test_a_truncated_init_is_a_checkpoint_error(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x10" + bytes(7) + b'{"a": ')
    with pytest.raises(CheckpointError, match=rf"init .*{WEIGHTS_FILE} is not a readable safetensors file"):
        read_init_weights(tmp_path)


def test_init_from_an_empty_folder_is_a_checkpoint_error(data, tmp_path):
    (tmp_path / "empty").mkdir()
    config = _config(data, tmp_path / "run", "pretrain", init=str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match=f"holds no {WEIGHTS_FILE}"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_read_init_prefers_the_final_model(chain, tmp_path):
    run = chain["pretrain"][1]
    assert _same(read_init_weights(run), _weights(run))
    assert _same(read_init_weights(run / "model"), _weights(run))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / WEIGHTS_FILE).write_bytes((run / "checkpoint" / WEIGHTS_FILE).read_bytes())
    assert _same(read_init_weights(tmp_path), _weights(run, "checkpoint"))


def test_check_loaded():
    assert check_loaded(["a"], {"a", "b"}, partial=True) == ["a"]
    assert check_loaded(["a", "b"], {"a", "b"}, partial=False) == ["a", "b"]
    with pytest.raises(CheckpointError, match="lacks 1 of 2"):
        check_loaded(["a"], {"a", "b"}, partial=False)
    with pytest.raises(CheckpointError):
        check_loaded([], {"a"}, partial=True)


def test_a_nan_loss_stops_training(data, tmp_path, monkeypatch):
    monkeypatch.setattr(language._Loss, "forward", lambda self, samples: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(_config(data, tmp_path / "run", "pretrain"), progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


# -- configs -----------------------------------------------------------------------------------------------


def _yaml(path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data))))  # tuples as lists
    return path


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = TrainConfig(stage="sft", data="d", out="o", steps=100, warmup=10, lr=1e-3)
    rates = [learning_rate(config, step) for step in range(config.steps + 1)]
    assert rates[:10] == pytest.approx([1e-3 * (i + 1) / 10 for i in range(10)])
    assert rates[9] == pytest.approx(1e-3)  # the peak
    after = rates[10:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert after[0] == pytest.approx(1e-3)
    assert rates[55] == pytest.approx(1e-3 * 0.55)  # half way: the middle of the cosine
    assert rates[100] == pytest.approx(1e-4)
    assert 1e-4 < rates[99] < 1.01e-4
    assert learning_rate(replace(config, warmup=0), 0) == pytest.approx(1e-3)


def test_train_config_validation():
    base = dict(stage="sft", data="d", out="o")
    bad_values = (
        dict(steps=0), dict(batch_size=0), dict(lr=0),
        dict(trainable=("decoder",)), dict(mix={"chat": 1.0}), dict(mix={"vqa": 0}), dict(precision="fp16"),
    )
    for bad in bad_values:
        with pytest.raises(ValueError):
            TrainConfig(**base, **bad)
    config = TrainConfig(**base)
    assert config.parts == ("image_projector", "point_projector", "object_encoder", "lora")
    assert config.sample_mix == {"vqa": 0.45, "plan": 0.3, "dialogue": 0.1, "text": 0.15}
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_yaml_with_an_unknown_key_or_stage_is_refused(tmp_path):
    good = {"stage": "ulip", "data": "d", "out": "o"}
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.load(_yaml(tmp_path / "a.yaml", {**good, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"train config\.model\.lora.*'rnak'"):
        TrainConfig.load(_yaml(tmp_path / "b.yaml", {**good, "model": {"lora": {"rnak": 2}}}))
    with pytest.raises(ValueError, match="unknown stage 'finetune'"):
        TrainConfig.load(_yaml(tmp_path / "c.yaml", {**good, "stage": "finetune"}))
    with pytest.raises(FileNotFoundError):
        TrainConfig.load(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="no model config"):
        TrainConfig.load(_yaml(tmp_path / "d.yaml", {**good, "model": "nowhere.yaml"}))


def test_model_path_is_relative_to_the_config_and_overrides_apply(tmp_path, monkeypatch):
    _yaml(tmp_path / "configs" / "model" / "tiny.yaml", TINY.to_dict())
    path = _yaml(
        tmp_path / "configs" / "train" / "sft.yaml",
        {"stage": "sft", "data": "d", "out": "o", "model": "../model/tiny.yaml", "steps": 3},
    )
    monkeypatch.chdir(tmp_path / "configs")  # relative to the file, not to the working folder
    config = TrainConfig.load(path)
    assert config.model == TINY and config.steps == 3
    changed = TrainConfig.load(path, {"model.lora.rank": 2, "steps": 7, "mix.vqa": 1.0})
    assert changed.model == replace(TINY, lora=replace(TINY.lora, rank=2))
    assert changed.steps == 7 and changed.mix == {"vqa": 1.0}
    assert TrainConfig.load(path) == config  # the file is untouched
    with pytest.raises(ValueError, match="steps is not a section"):
        TrainConfig.load(path, {"steps.x": 1})
    with pytest.raises(ValueError, match="rnak"):
        TrainConfig.load(path, {"model.lora.rnak": 2})


@pytest.mark.parametrize("stage", ["ulip", "pretrain", "sft"])
def test_shipped_configs_load(stage):
    config = TrainConfig.load(CONFIGS / "train" / f"{stage}.yaml")
    assert config.stage == stage
    assert config.model == ModelConfig.from_dict(yaml.safe_load((CONFIGS / "model" / "default.yaml").read_text()))
    assert config.model == ModelConfig()  # the recipe's model is the library's default model


def test_shipped_rl_config_loads():
    from agents.rl import RLConfig

    config = RLConfig.load(CONFIGS / "train" / "rl.yaml")
    assert config.group >= 2 and config.init.endswith("sft/model")


def test_cli_refuses_a_config_of_another_stage(tmp_path, capsys):
    path = _yaml(tmp_path / "ulip.yaml", {"stage": "ulip", "data": str(tmp_path / "d"), "out": str(tmp_path / "out")})
    assert main(["train", "sft", "--config", str(path), "--workers", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "embodied train: error" in error and "'ulip'" in error and "'sft'" in error
    assert not (tmp_path / "out").exists()
    bad = _yaml(tmp_path / "bad.yaml", {"stage": "sft", "data": "d", "out": "o", "stepz": 3})
    assert main(["train", "sft", "--config", str(bad), "--workers", "0"]) == 2
    assert "stepz" in capsys.readouterr().err


# -- VQA metrics ---------------------------------------------------------------------------------------------


def test_exact_and_refined_exact_match():
    candidates = {"red", "blue", "green", "yes", "no", "2", "3"}
    assert exact_match("Red.", "red")
    assert exact_match("two", "2") and exact_match("The red cube", "red cube")
    assert not exact_match("it is red", "red")
    assert refined_exact_match("it is red", "red", candidates)
    assert refined_exact_match("Red.", "red", candidates)
    assert not refined_exact_match("red or blue", "red", candidates)
    assert not refined_exact_match("it is blue", "red", candidates)
    assert not refined_exact_match("reddish", "red", candidates)  # whole words only
    assert refined_exact_match("there are two", "2", candidates)
    # a reply that lists the objects it read the answer from is scored on what follows its last ", so "
    assert exact_match("cubes: red cube, green cube, so 2", "2")
    assert exact_match("bowls: none, so no", "no") and not exact_match("bowls: none, so no", "yes")
    assert not refined_exact_match("reds: red cube, so no", "red", candidates)


def test_length_groups_pad_less_and_keep_the_loss():
    model = EmbodiedModel(ModelConfig.tiny()).eval()
    lengths = [5, 30, 6, 28, 7, 31]
    sequences = [(torch.randn(n, model.llm.config.hidden_size), torch.randint(0, 50, (n,))) for n in lengths]
    groups = language.by_length(sequences)
    assert [[len(e) for e, _ in g] for g in groups] == [[5, 6, 7], [28, 30, 31]]
    assert sum(len(g) * len(g[-1][0]) for g in groups) < len(lengths) * max(lengths)
    whole = model.target_logprobs(sequences)[0]
    grouped = torch.cat([model.target_logprobs(g)[0] for g in groups])
    assert torch.allclose(whole.mean(), grouped.mean(), atol=1e-5)
    same = [sequences[0]] * 3
    assert language.by_length(sequences[:1]) == [sequences[:1]] and language.by_length(same) == [same]


def test_random_answers_come_from_the_question_form(data):
    train_data, val = SplitData(data, "train"), SplitData(data, "val")
    rows = val.select(("vqa",))
    answers = random_answers(rows, train_data, seed=0)
    assert answers == random_answers(rows, train_data, seed=0)
    pools = {}
    for row in train_data.select(("vqa",)):
        pools.setdefault(question_form(row), set()).add(normalize_answer(row["answer"]))
    everything = set().union(*pools.values())
    for row, answer in zip(rows, answers):
        assert answer in pools.get(question_form(row), everything)
        form = question_form(row)
        if form == "yes/no":
            assert answer in ("yes", "no")
        elif form == "number":
            assert answer.isdigit()
    assert question_form({"answer": "Yes", "question_type": "existence"}) == "yes/no"
    assert question_form({"answer": "three", "question_type": "count"}) == "number"
    assert question_form({"answer": "red", "question_type": "attribute"}) == "attribute"


# -- the text tower ------------------------------------------------------------------------------------------


def test_text_tower_embeds_unit_vectors_by_meaning():
    tower = TextTower()
    embeddings = tower.embed(["a small red cube", "a red cube", "a blue sphere"])
    assert embeddings.shape == (3, tower.dim) and tower.dim == 384
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    similar, different = float(embeddings[0] @ embeddings[1]), float(embeddings[0] @ embeddings[2])
    assert similar > different
    assert torch.allclose(tower.embed(["a red cube"], batch_size=1)[0], embeddings[1], atol=1e-5)
    assert tower.embed([]).shape == (0, tower.dim)
