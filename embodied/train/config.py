"""Training-run configuration: one YAML file per stage, validated before any work starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from embodied.config import config_from_dict
from embodied.model import ModelConfig

STAGES = ("ulip", "pretrain", "sft")
# object_encoder: its projector learns; its ULIP tower is frozen however it is listed (embodied.encoders.objects)
PARTS = ("image_encoder", "point_encoder", "image_projector", "point_projector", "object_encoder", "lora")
PRECISIONS = ("fp32", "bf16")
SAMPLE_KINDS = ("caption", "vqa", "plan", "dialogue", "text")
DEFAULT_PARTS = {
    "ulip": ("image_encoder", "point_encoder"),
    "pretrain": ("image_projector", "point_projector", "object_encoder"),
    "sft": ("image_projector", "point_projector", "object_encoder", "lora"),
}
DEFAULT_MIX = {"pretrain": {"caption": 1.0}, "sft": {"vqa": 0.45, "plan": 0.3, "dialogue": 0.1, "text": 0.15}}


@dataclass(frozen=True)
class TrainConfig:
    stage: str
    data: str  # a dataset folder written by `embodied data`
    out: str  # the run folder: checkpoint/, model/, metrics.jsonl, curves.png
    model: ModelConfig = field(default_factory=ModelConfig)
    init: str | tuple[str, ...] | None = None  # run or checkpoint folders whose matching weights start this stage, later ones winning
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 5
    eval_every: int = 100
    eval_samples: int = 64
    save_every: int = 50
    threads: int = 2
    # bf16: matrix products under bfloat16 autocast (weights and optimizer stay fp32). On a CPU with
    # AVX512-BF16 or AMX (and on CUDA) a step is about 1.4x as fast; elsewhere it is emulated and slower.
    precision: str = "fp32"
    trainable: tuple[str, ...] = ()  # empty: the stage's default parts
    mix: dict = field(default_factory=dict)  # sample kind -> weight; empty: the stage's default mix

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if not self.data or not self.out:
            raise ValueError("data and out must name folders")
        for name in ("steps", "batch_size", "log_every", "eval_every", "eval_samples", "save_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup", "weight_decay", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        unknown = set(self.trainable) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
        kinds = set(self.mix) - set(SAMPLE_KINDS)
        if kinds or any(not isinstance(w, (int, float)) or w < 0 for w in self.mix.values()):
            raise ValueError(f"mix maps sample kinds ({', '.join(SAMPLE_KINDS)}) to weights >= 0, got {self.mix}")
        if self.mix and not sum(self.mix.values()) > 0:
            raise ValueError("mix weights must not all be zero")

    @property
    def inits(self) -> tuple[str, ...]:
        return (self.init,) if isinstance(self.init, str) else self.init or ()

    @property
    def parts(self) -> tuple[str, ...]:
        return self.trainable or DEFAULT_PARTS[self.stage]

    @property
    def sample_mix(self) -> dict[str, float]:
        return self.mix or DEFAULT_MIX.get(self.stage, {})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return config_from_dict(cls, data, "train config")

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> TrainConfig:
        """A YAML file, with ``overrides`` ("model.lora.rank": 8, ...) applied on top."""
        path = Path(path)
        data = read_yaml(path, "training config")
        if isinstance(data.get("model"), str):  # a model config file of its own, shared by the stages
            model_file = path.parent / data["model"]
            if not model_file.is_file():
                raise FileNotFoundError(f"{path}: no model config at {model_file}")
            data["model"] = read_yaml(model_file, "model config")
        for key, value in (overrides or {}).items():
            _set(data, key.split("."), value)
        return cls.from_dict(data)


def read_yaml(path: str | Path, what: str) -> dict:
    """A YAML file of config keys; a missing, unreadable or broken one is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path} is not valid YAML{at}: {problem}") from exc
    if not isinstance(data, dict | None):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data or {}


def _set(data: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ValueError(f"cannot set {'.'.join(keys)}: {key} is not a section")
    data[keys[-1]] = value
