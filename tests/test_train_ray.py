"""Ray Train: the same stage through TorchTrainer, data-parallel (one worker here), on loopback Ray; the
results come back to ``out`` through Ray Train's storage, and a rerun resumes from storage, or from what a
run without Ray left in ``out``."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from embodied.errors import CheckpointError
from embodied.model import ModelConfig
from embodied.train.checkpoints import STATE_FILE
from embodied.train.config import TrainConfig
from embodied.train.loop import train
from embodied.train.metrics import read_metrics

pytest.importorskip("ray.train")
from agents.train_workers import train_with_ray  # noqa: E402


def test_one_ray_train_worker_learns_exactly_what_local_training_does(tiny_dataset, tmp_path):
    def config(out):
        return TrainConfig(
            stage="sft", data=str(tiny_dataset), out=str(out), model=ModelConfig.tiny(), steps=3, batch_size=2,
            eval_every=3, eval_samples=2, save_every=3, threads=1,
        )

    local = tmp_path / "local"
    train(config(local), progress=False)
    metrics = train_with_ray(config(tmp_path / "ray"), workers=1, progress=False)
    assert metrics["step"] == 3
    ours, theirs = load_file(str(local / "model" / "model.safetensors")), load_file(str(tmp_path / "ray" / "model" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)
    assert (tmp_path / "ray" / "curves.png").is_file()


def test_ray_training_needs_a_worker(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        train_with_ray(TrainConfig(stage="sft", data=str(tiny_dataset), out=str(tmp_path)), workers=0)


# -- storage and resuming ------------------------------------------------------------------------------------


def _config(data, out, steps: int, **changes) -> TrainConfig:
    """A checkpoint every step, the loss logged every step and an evaluation only at the end: a run that
    resumes from step 2 keeps the evaluation its first part made there, one that starts over has none.
    Warm-up covers the first two steps, so their learning rates do not depend on ``steps``."""
    return TrainConfig(
        stage="sft", data=str(data), out=str(out), model=ModelConfig.tiny(), steps=steps, batch_size=2, warmup=2,
        log_every=1, eval_every=100, eval_samples=2, save_every=1, threads=1, **changes,
    )


@pytest.fixture(scope="module")
def straight(tiny_dataset, tmp_path_factory):
    """An uninterrupted local run of four steps: what every resumed run must end with."""
    out = tmp_path_factory.mktemp("straight")
    train(_config(tiny_dataset, out, 4), progress=False)
    return load_file(str(out / "model" / "model.safetensors"))


def _same_model(run, straight) -> bool:
    ours = load_file(str(run / "model" / "model.safetensors"))
    return ours.keys() == straight.keys() and all(torch.allclose(ours[k], straight[k], atol=1e-5) for k in ours)


def _resumed_from_step_2(records: list[dict], first: list[dict]) -> None:
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # no step twice
    assert [r["step"] for r in records if "eval/val_loss" in r] == [2, 4]  # step 2's evaluation: not started over
    assert records[: len(first)] == first  # the first part's records as written, tokens/s included


@pytest.mark.slow  # two Ray Train runs, about 50 s; the default run keeps the one-worker test above and stays under 10 min
def test_results_come_back_through_storage_and_a_rerun_resumes_from_it(tiny_dataset, straight, tmp_path):
    out, shared = tmp_path / "out", tmp_path / "shared"
    assert train_with_ray(_config(tiny_dataset, out, 2), workers=1, progress=False, storage=str(shared))["step"] == 2
    for name in ("model/model.safetensors", "checkpoint/" + STATE_FILE, "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["out"] == str(out)
    assert not (out / "ray").exists() and not list(out.glob(".*"))
    stored = [p for p in (shared / "sft").glob("checkpoint_*") if p.is_dir()]
    assert len(stored) == 1 and json.loads((stored[0] / "checkpoint" / STATE_FILE).read_text())["step"] == 2

    # The driver's disk loses out (as when the workers ran elsewhere and only storage has the run).
    first = read_metrics(out / "metrics.jsonl")
    shutil.rmtree(out)
    assert train_with_ray(_config(tiny_dataset, out, 4), workers=1, progress=False, storage=str(shared))["step"] == 4
    _resumed_from_step_2(read_metrics(out / "metrics.jsonl"), first)
    assert _same_model(out, straight)
    stored = [p for p in (shared / "sft").glob("checkpoint_*") if p.is_dir()]
    assert len(stored) == 1 and json.loads((stored[0] / "checkpoint" / STATE_FILE).read_text())["step"] == 4


@pytest.mark.slow
def test_a_ray_run_resumes_from_what_a_local_run_left_in_out(tiny_dataset, straight, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_dataset, out, 2), progress=False)
    first = read_metrics(out / "metrics.jsonl")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    # A run that fails (here: out's checkpoint is another seed's) leaves out as it was.
    with pytest.raises(CheckpointError, match=rf"^{out / 'checkpoint'} was written by a run with other \['seed'\]"):
        train_with_ray(_config(tiny_dataset, out, 4, seed=1), workers=1, progress=False)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and "ray" not in path.relative_to(out).parts} == before
    assert not list((out / "ray" / "sft").glob("seed*"))  # the copy of out's checkpoint in storage is gone

    train_with_ray(_config(tiny_dataset, out, 4), workers=1, progress=False)
    _resumed_from_step_2(read_metrics(out / "metrics.jsonl"), first)
    assert _same_model(out, straight)


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two cores")
@pytest.mark.timeout(240)  # a rank out of step with the others hangs in a collective
def test_two_workers_report_together_and_both_resume(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    train_with_ray(_config(tiny_dataset, out, 2), workers=2, progress=False)
    first = read_metrics(out / "metrics.jsonl")
    assert train_with_ray(_config(tiny_dataset, out, 4), workers=2, progress=False)["step"] == 4
    _resumed_from_step_2(read_metrics(out / "metrics.jsonl"), first)
