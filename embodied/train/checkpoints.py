"""Resumable checkpoints, shared by the training loop, the stages and RL fine-tuning.

A checkpoint folder holds the model files, the optimizer state as safetensors + JSON (never pickled, so
loading one runs no code) and the run's JSON state; it is written to a temporary folder and replaced in
one rename, so a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from embodied.errors import CheckpointError
from embodied.io import atomic_dir
from embodied.model import WEIGHTS_FILE

CHECKPOINT = "checkpoint"  # resumable state: weights, optimizer, step
FINAL = "model"  # the stage's result, a loadable model folder
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


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


def read_init_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights to start from: a run folder (its final model, else its checkpoint) or a model folder."""
    for candidate in (path / FINAL / WEIGHTS_FILE, path / CHECKPOINT / WEIGHTS_FILE, path / WEIGHTS_FILE):
        if candidate.is_file():
            return load_file(str(candidate))
    raise CheckpointError(f"init {path} holds no {WEIGHTS_FILE} (looked in {path}, {path / FINAL}, {path / CHECKPOINT})")
