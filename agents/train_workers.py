"""Data-parallel training through Ray Train: the same stage and loop as a local run, on N workers.

Each worker runs ``embodied.train.loop.train`` with its rank; ``prepare_model`` wraps the trainable
module in DistributedDataParallel (gloo on CPU, NCCL on GPUs), each rank draws its own batches, and rank 0
writes the checkpoints, metrics and curves, so resuming works the same as without Ray.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agents import runtime
from embodied.train.config import TrainConfig


def _worker_loop(settings: dict) -> None:
    import ray.train
    import ray.train.torch

    from embodied.train.loop import train

    rank = ray.train.get_context().get_world_rank()

    def wrap(module):
        # text-only batches leave the encoders unused, so DDP must allow unused parameters
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": True})

    metrics = train(TrainConfig.from_dict(settings["config"]), progress=settings["progress"], rank=rank, wrap=wrap)
    ray.train.report({"step": metrics.get("step", 0)})


def train_with_ray(config: TrainConfig, workers: int, address: str | None = None, progress: bool = True) -> dict:
    """Train ``config`` on ``workers`` Ray Train workers (one GPU each where the cluster has them)."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # workers do not start in this folder: every path they read or write must be absolute
    absolute = {k: str(Path(v).resolve()) for k in ("data", "out", "init") if (v := getattr(config, k))}
    config = dataclasses.replace(config, **absolute)
    runtime.start(runtime.RuntimeConfig(address=address, log_to_driver=progress))
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"config": config.to_dict(), "progress": progress},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=torch.cuda.is_available(), resources_per_worker={"CPU": 1}
            ),
            run_config=RunConfig(storage_path=str(Path(config.out).resolve() / "ray"), name=config.stage),
        )
        trainer.fit()
    finally:
        if address is None:
            runtime.shutdown()
    from embodied.train.metrics import METRICS, read_metrics

    records = read_metrics(Path(config.out) / METRICS)
    return records[-1] if records else {}
