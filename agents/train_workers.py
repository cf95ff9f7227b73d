"""Data-parallel training through Ray Train: the same stage and loop as a local run, on N workers.

Each worker runs ``embodied.train.loop.train`` with its rank; ``prepare_model`` wraps the trainable
module in DistributedDataParallel (gloo on CPU, NCCL on GPUs) and each rank draws its own batches. Workers
may sit on machines that share no disk with the driver, so no worker writes into ``out``: rank 0 trains in
a temporary folder on its own node and hands that folder to Ray Train at every checkpoint, which persists it
in ``storage`` (a folder every node reaches, or a URI such as s3://); the driver copies the last one into
``out``. A rerun resumes from storage, or from ``out`` when a run without Ray got further there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from agents import runtime
from embodied.errors import InputError
from embodied.io import previous_dir, replace_dir, write_json
from embodied.train.checkpoints import CHECKPOINT, STATE_FILE, has_checkpoint
from embodied.train.config import TrainConfig
from embodied.train.metrics import METRICS, read_metrics

SEED = "seed_from_out"  # beside Ray Train's checkpoints in storage while a run starts from out's checkpoint


def _worker_loop(settings: dict) -> None:
    import ray.train
    import ray.train.torch

    from embodied.train.loop import train

    rank = ray.train.get_context().get_world_rank()
    config = TrainConfig.from_dict(settings["config"])
    start = ray.train.get_checkpoint()
    origin = start.path if start is not None else config.out  # what the working folder stands for, in errors
    if settings["seed"] is not None and (start is None or start.path == settings["stale"]):
        start, origin = settings["seed"], config.out
    scratch = Path(tempfile.mkdtemp(prefix=f"embodied-{config.stage}-rank{rank}-"))
    work = scratch / Path(config.out).name  # the same folder name as out: the curves' title shows it
    try:
        if start is not None:  # every rank resumes: the same weights, optimizer state and step everywhere
            start.to_directory(str(work))

        def saved(step: int, metrics: dict) -> None:
            # a collective: every rank reports each time, only rank 0 has files to persist
            record = {**metrics, "step": step}
            if rank == 0:
                ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(str(work)))
            else:
                ray.train.report(record)

        def wrap(module):
            # text-only batches leave the encoders unused, so DDP must allow unused parameters
            return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": True})

        try:
            train(dataclasses.replace(config, out=str(work)), progress=settings["progress"], rank=rank, wrap=wrap, saved=saved)
        except InputError as exc:  # it names the checkpoint: where it came from, not the working folder
            raise type(exc)(str(exc).replace(str(work), origin)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_with_ray(
    config: TrainConfig, workers: int, address: str | None = None, progress: bool = True, storage: str | None = None
) -> dict:
    """Train ``config`` on ``workers`` Ray Train workers (one GPU each where the cluster has them), spread
    over the nodes; the result lands in ``config.out``. ``storage`` is Ray Train's ``storage_path``: a folder
    every node reaches or a URI (s3://, gs://); the default ``<out>/ray`` serves a single machine."""
    import pyarrow.fs
    import torch
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig, WorkerGroupError
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # workers do not start in this folder: every path they read or write must be absolute
    absolute = {k: str(Path(v).resolve()) for k in ("data", "out", "init") if (v := getattr(config, k))}
    config = dataclasses.replace(config, **absolute)
    out = Path(config.out)
    if storage is None:
        storage = str(out / "ray")
    elif "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
    experiment = Path(root, config.stage).as_posix()  # where Ray Train keeps this run (RunConfig.name)
    runtime.start(runtime.RuntimeConfig(address=address, log_to_driver=progress, dashboard=True))
    try:
        seed, stale = _seed_from_out(out, filesystem, experiment)
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"config": config.to_dict(), "progress": progress, "seed": seed, "stale": stale},
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=torch.cuda.is_available(),
                resources_per_worker={"CPU": 1},
                placement_strategy="SPREAD",
            ),
            run_config=RunConfig(storage_path=storage, name=config.stage, checkpoint_config=CheckpointConfig(num_to_keep=1)),
        )
        try:
            result = trainer.fit()
        except WorkerGroupError as exc:
            wrong = [e for e in exc.worker_failures.values() if isinstance(e, (InputError, ValueError))]
            if wrong:  # a wrong input or checkpoint: raised as a run without Ray raises it
                raise wrong[0] from exc
            raise
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train finished without a checkpoint in {storage}")
        _bring_back(result.checkpoint, out)
        write_json(out / "config.json", config.to_dict())  # the workers' copy names their temporary folder
    finally:
        _delete(filesystem, Path(experiment, SEED).as_posix())
        runtime.shutdown()
    records = read_metrics(out / METRICS)
    return records[-1] if records else {}


def _seed_from_out(out: Path, filesystem, experiment: str):
    """(out's checkpoint copied into storage, the stored checkpoint it overrides) when ``out`` got further
    than storage (a run without Ray, or storage new); (None, None) when storage has the run to resume."""
    import pyarrow.fs
    from ray.train import Checkpoint, Result

    try:
        stored = Result.from_path(experiment, storage_filesystem=filesystem)
    except RuntimeError:  # no run there yet
        stored = None
    stored_step = (stored.metrics or {}).get("step", -1) if stored and stored.checkpoint else None
    if not has_checkpoint(out / CHECKPOINT) or (stored_step is not None and _step(out / CHECKPOINT) <= stored_step):
        return None, None
    seed = Path(experiment, SEED).as_posix()
    _delete(filesystem, seed)
    for name in (CHECKPOINT, previous_dir(out / CHECKPOINT).name, METRICS):
        if (out / name).exists():
            filesystem.create_dir(f"{seed}/{name}" if (out / name).is_dir() else seed)  # local folders need it
            pyarrow.fs.copy_files(
                str(out / name), f"{seed}/{name}", source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
            )
    return Checkpoint(seed, filesystem=filesystem), stored.checkpoint.path if stored_step is not None else None


def _step(folder: Path) -> int:
    """The step of the checkpoint a local rerun resumes from (-1 when none reads back)."""
    for candidate in (folder, previous_dir(folder)):
        try:
            return int(json.loads((candidate / STATE_FILE).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return -1


def _bring_back(checkpoint, out: Path) -> None:
    """The checkpoint's files and folders into ``out``, each replacing its namesake atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".ray-result.*"):  # what a driver killed while copying left
        shutil.rmtree(stale, ignore_errors=True)
    download = Path(tempfile.mkdtemp(dir=out, prefix=".ray-result."))  # on out's disk: renames from it are atomic
    try:
        checkpoint.to_directory(str(download))
        for entry in sorted(download.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # as atomic_dir swaps one: the old kept whole until the new is in place
                replace_dir(entry, out / entry.name)
            else:
                os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _delete(filesystem, path: str) -> None:
    import pyarrow.fs

    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        filesystem.delete_dir(path)
