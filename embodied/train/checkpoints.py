"""Resumable checkpoints, shared by the training loop, the stages and RL fine-tuning.

A checkpoint folder holds the model files, the optimizer state as safetensors + JSON (never pickled, so
loading one runs no code) and the run's JSON state; it is written to a temporary folder that then takes
the folder's place (``embodied.io.atomic_dir``), so a crash leaves the previous checkpoint whole: in the
folder, or beside it if the crash came between the two renames of a save. Resuming takes the newest
checkpoint that reads back whole.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embodied.errors import CheckpointError
from embodied.io import atomic_dir, previous_dir
from embodied.model import CONFIG_FILE, WEIGHTS_FILE

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


def has_checkpoint(folder: Path) -> bool:
    """Whether a run can resume from ``folder``: it, or the previous checkpoint a crashed save left beside it."""
    return folder.exists() or previous_dir(folder).exists()


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """What ``save_checkpoint`` wrote: model weights, the optimizer's state dict, and the JSON state, from
    the newest checkpoint that reads back whole: ``folder``, else (with a warning) the previous one that a
    save keeps beside it until the new one is in place (a save killed between its renames leaves only that).
    The other one, what a crash left, is removed: a stale previous folder, or a damaged ``folder``, which
    the next save would otherwise move into the previous one's place while the new one is still in flight."""
    previous = previous_dir(folder)
    candidates = [candidate for candidate in (folder, previous) if candidate.exists()] or [folder]
    errors = []
    for candidate in candidates:
        try:
            loaded = _read(candidate)
        except CheckpointError as exc:
            errors.append(exc)
            continue
        if candidate == previous:
            why = errors[0] if errors else f"{folder} is missing (a save was interrupted)"
            warnings.warn(f"{why}; resuming from {previous}, step {loaded[2]['step']}", RuntimeWarning, stacklevel=2)
        shutil.rmtree(folder if candidate == previous else previous, ignore_errors=True)  # what a crash left
        return loaded
    names = " and ".join(map(str, candidates))
    raise CheckpointError(f"cannot resume: {errors[0]}; delete {names} to start over") from errors[0]


def _read(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """One checkpoint folder with every file read back whole (safetensors checks its files' lengths)."""

    def read(name: str, load: Callable[[Path], object]):
        try:
            return load(folder / name)
        except (OSError, ValueError, SafetensorError) as exc:
            raise CheckpointError(f"{folder / name} is unreadable: {exc}") from exc

    state = read(STATE_FILE, lambda path: json.loads(path.read_text()))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "param_groups" not in state:
        raise CheckpointError(f"{folder / STATE_FILE} lacks the step or the optimizer's settings")
    read(CONFIG_FILE, lambda path: json.loads(path.read_text()))
    weights = read(WEIGHTS_FILE, lambda path: load_file(str(path)))
    entries = read(OPTIMIZER_FILE, _optimizer_entries)
    return weights, {"state": entries, "param_groups": state.pop("param_groups")}, state


def _optimizer_entries(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    entries: dict[int, dict] = {}
    for name, value in load_file(str(path)).items():
        index, key = name.split(".", 1)
        entries.setdefault(int(index), {})[key] = value
    return entries


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
            try:
                return load_file(str(candidate))
            except SafetensorError as exc:
                raise CheckpointError(f"init {candidate} is not a readable safetensors file: {exc}") from exc
    raise CheckpointError(f"init {path} holds no {WEIGHTS_FILE} (looked in {path}, {path / FINAL}, {path / CHECKPOINT})")
