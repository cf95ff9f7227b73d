"""The training loop every stage shares: seeded batches, AdamW with warm-up and cosine decay, metrics to
JSONL, curves to PNG, a progress bar with ETA, and checkpoints written atomically that a rerun of the
same command resumes from.

Batches are drawn from a generator seeded by (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted one would have. Checkpoints are in ``checkpoints.py``, metrics and curves in
``metrics.py``, so the stages and RL use them without importing the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embodied.errors import CheckpointError
from embodied.io import write_json
from embodied.train.checkpoints import (
    CHECKPOINT,
    FINAL,
    has_checkpoint,
    load_checkpoint,
    read_init_weights,
    save_checkpoint,
)
from embodied.train.config import TrainConfig
from embodied.train.metrics import CURVES, METRICS, append_metrics, plot_curves, truncate_metrics


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
    saved: Callable[[int, dict], None] | None = None,
) -> dict:
    """Run (or resume) one stage; returns the last metrics. ``wrap`` makes the module data-parallel
    (Ray Train passes its ``prepare_model``); only rank 0 writes files. ``saved(step, metrics)`` runs on every
    rank once the folder holds a new checkpoint, the last time with the final model, so that Ray Train can
    persist the folder where the driver reaches it."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out = Path(config.out)
    stage = build_stage(config)
    for init in config.inits:
        stage.load_weights(read_init_weights(Path(init)), partial=True)
    module = wrap(stage.module) if wrap else stage.module
    parameters = [p for p in stage.module.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"stage {config.stage} has nothing to train (trainable: {config.parts})")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    start = _resume(out, config, stage, optimizer) if has_checkpoint(out / CHECKPOINT) else 0
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
        with torch.autocast(parameters[0].device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
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
        if saved and done % config.save_every == 0 and done < config.steps:  # the last one waits for the model
            saved(done, last)
    bar.close()
    if rank == 0:
        stage.export(out / FINAL)
        plot_curves(out / METRICS, out / CURVES, title=f"{config.stage}: {out.name}")
    if saved:
        saved(max(start, config.steps), last)
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
    try:
        saved = TrainConfig.from_dict(state.get("config"))
    except ValueError as exc:
        raise CheckpointError(f"cannot resume from {folder}: {exc}") from exc
    changed = [k for k in ("stage", "model", "batch_size", "seed", "trainable", "mix") if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise CheckpointError(f"{folder} was written by a run with other {changed}; use another out folder or delete it")
    stage.load_weights(weights)
    optimizer.load_state_dict(optimizer_state)
    return int(state["step"])
