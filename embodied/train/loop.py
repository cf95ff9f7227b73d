"""The training loop every stage shares: seeded batches, AdamW with warm-up and cosine decay, metrics to
JSONL, curves to PNG, a progress bar with ETA, and checkpoints written atomically that a rerun of the
same command resumes from.

Batches are drawn from a generator seeded by (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted one would have. Optimizer state is stored as safetensors + JSON, never pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from embodied.errors import CheckpointError
from embodied.io import atomic_dir, pyplot, write_atomic, write_figure, write_json
from embodied.model import WEIGHTS_FILE
from embodied.train.config import TrainConfig

CHECKPOINT = "checkpoint"  # resumable state: weights, optimizer, step
FINAL = "model"  # the stage's result, a loadable model folder
METRICS = "metrics.jsonl"
CURVES = "curves.png"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def build_stage(config: TrainConfig):
    if config.stage == "ulip":
        from embodied.train.ulip import UlipStage

        return UlipStage(config)
    from embodied.train.language import LanguageStage

    return LanguageStage(config)


def train(
    config: TrainConfig,
    progress: bool = True,
    rank: int = 0,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> dict:
    """Run (or resume) one stage; returns the last metrics. ``wrap`` makes the module data-parallel
    (Ray Train passes its ``prepare_model``); only rank 0 writes files."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out = Path(config.out)
    stage = build_stage(config)
    if config.init:
        stage.load_weights(_read_init(Path(config.init)), partial=True)
    module = wrap(stage.module) if wrap else stage.module
    parameters = [p for p in stage.module.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"stage {config.stage} has nothing to train (trainable: {config.parts})")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    start = _resume(out, config, stage, optimizer) if (out / CHECKPOINT).exists() else 0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        truncate_metrics(out / METRICS, start)
    module.train()
    last: dict = {}
    bar = tqdm(total=config.steps, initial=start, desc=config.stage, unit="step", disable=not (progress and rank == 0))
    window_seconds, window_units = 0.0, 0  # training time only: evaluations and saves do not count
    for step in range(start, config.steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = stage.batch(np.random.default_rng([config.seed, step, rank]))
        loss = module(batch)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step}; lower the learning rate or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        window_units += stage.size(batch)
        window_seconds += time.perf_counter() - began
        done = step + 1
        bar.update()
        bar.set_postfix(loss=f"{value:.3f}")
        if rank == 0 and (done % config.log_every == 0 or done == config.steps):
            rate = window_units / window_seconds
            last = {"step": done, "loss": value, "lr": learning_rate(config, step), f"{stage.unit}_per_s": rate}
            append_metrics(out / METRICS, last)
            window_seconds, window_units = 0.0, 0
        if rank == 0 and (done % config.eval_every == 0 or done == config.steps):
            last = {"step": done, **{f"eval/{k}": v for k, v in stage.evaluate(module).items()}}
            append_metrics(out / METRICS, last)
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
            plot_curves(out / METRICS, out / CURVES, title=f"{config.stage}: {out.name}")
        if rank == 0 and (done % config.save_every == 0 or done == config.steps):
            _save(out, config, stage, optimizer, done)
    bar.close()
    if rank == 0:
        stage.export(out / FINAL)
        plot_curves(out / METRICS, out / CURVES, title=f"{config.stage}: {out.name}")
    return last


def learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# -- checkpoints -------------------------------------------------------------------------------------


def _save(out: Path, config: TrainConfig, stage, optimizer: torch.optim.Optimizer, step: int) -> None:
    save_checkpoint(out / CHECKPOINT, stage.write_files, optimizer, {"step": step, "config": config.to_dict()})


def _resume(out: Path, config: TrainConfig, stage, optimizer: torch.optim.Optimizer) -> int:
    folder = out / CHECKPOINT
    weights, optimizer_state, state = load_checkpoint(folder)
    saved = TrainConfig.from_dict(state["config"])
    changed = [k for k in ("stage", "model", "batch_size", "seed", "trainable", "mix") if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise CheckpointError(f"{folder} was written by a run with other {changed}; use another out folder or delete it")
    stage.load_weights(weights)
    optimizer.load_state_dict(optimizer_state)
    return int(state["step"])


def save_checkpoint(folder: Path, write_model: Callable[[Path], None], optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Model files, optimizer state (safetensors + JSON) and ``state`` (JSON), replaced in one rename."""
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value for index, entry in optimizer_state["state"].items() for key, value in entry.items()}
    with atomic_dir(folder) as tmp:
        write_model(tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / OPTIMIZER_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "param_groups": optimizer_state["param_groups"]}, indent=2))


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """What ``save_checkpoint`` wrote: model weights, the optimizer's state dict, and the JSON state."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        weights, tensors = load_file(str(folder / WEIGHTS_FILE)), load_file(str(folder / OPTIMIZER_FILE))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {folder}: {exc}; delete it to start over") from exc
    entries: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        entries.setdefault(int(index), {})[key] = value
    return weights, {"state": entries, "param_groups": state.pop("param_groups")}, state


def check_loaded(loaded: list[str], expected: set[str], partial: bool) -> list[str]:
    """Resuming needs every weight back; starting from an earlier stage (``partial``) needs at least one."""
    missing = expected - set(loaded)
    if not loaded or (missing and not partial):
        raise CheckpointError(f"the checkpoint lacks {len(missing)} of {len(expected)} weights of this model, e.g. {sorted(missing)[:3]}")
    return loaded


def _read_init(path: Path) -> dict[str, torch.Tensor]:
    """Weights to start from: a run folder (its final model, else its checkpoint) or a model folder."""
    for candidate in (path / FINAL / WEIGHTS_FILE, path / CHECKPOINT / WEIGHTS_FILE, path / WEIGHTS_FILE):
        if candidate.is_file():
            return load_file(str(candidate))
    raise CheckpointError(f"init {path} holds no {WEIGHTS_FILE} (looked in {path}, {path / FINAL}, {path / CHECKPOINT})")


# -- metrics and curves ------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records past the step a run resumes from, so the curve has no steps twice."""
    records = [r for r in read_metrics(path) if r["step"] <= step]
    write_atomic(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in records)))


def plot_curves(metrics: Path, out: Path, title: str) -> None:
    """Training loss and every eval metric against step, one panel each."""
    plt = pyplot()

    records = read_metrics(metrics)
    keys = ["loss"] + sorted({k for r in records for k in r if k.startswith("eval/")})
    keys = [k for k in keys if any(k in r for r in records)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        ax.set_title(key.removeprefix("eval/"))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    write_figure(out, fig, dpi=90)
