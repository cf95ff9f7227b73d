"""Stages 1 and 2: the embodied model learning to speak about what it sees.

``pretrain`` trains the projectors on captions (the encoders from ULIP, the language model frozen);
``sft`` tunes LoRA and the projectors on VQA, plans, dialogues and text-only samples, mixed by weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from embodied.data.dataset import SplitData
from embodied.model import EmbodiedModel
from embodied.train.checkpoints import check_loaded


class _Loss(nn.Module):
    """The model's language-model loss as the module output, so data-parallel wrappers see one forward."""

    def __init__(self, model: EmbodiedModel):
        super().__init__()
        self.model = model

    def forward(self, samples) -> torch.Tensor:
        sequences = self.model._sequences(samples)
        self.tokens = sum(len(embeds) for embeds, _ in sequences)  # text and projected tokens: the throughput unit
        logprobs = torch.cat([self.model.target_logprobs(group)[0] for group in by_length(sequences)])
        return -logprobs.mean()


def by_length(sequences: list) -> list[list]:
    """The sequences sorted by length, in the one or two groups that pad the fewest positions: a batch
    of 100- to 300-token samples padded as one wastes about 40% of the language model's work (on 2 CPU
    cores, a quarter of the step time); the loss, a mean over every target token, is the same."""
    ordered = sorted(sequences, key=lambda s: len(s[0]))
    lengths, n = [len(s[0]) for s in ordered], len(ordered)
    split = min(range(1, n + 1), key=lambda k: (k * lengths[k - 1] + (n - k) * lengths[-1], -k))  # ties: one group
    return [ordered[:split], ordered[split:]] if split < n else [ordered]


class LanguageStage:
    unit = "tokens"

    def __init__(self, config):
        self.config = config
        self.model = EmbodiedModel(config.model)
        freeze_all_but(self.model, config.parts)
        self.module = _Loss(self.model)
        self.mix = {kind: w for kind, w in config.sample_mix.items() if w > 0}
        train, val = SplitData(config.data, "train"), SplitData(config.data, "val")
        self.data = train
        self.rows = {kind: train.select((kind,), compositional=False) for kind in self.mix}
        empty = [kind for kind, rows in self.rows.items() if not rows]
        if empty:
            raise ValueError(f"{config.data} has no training samples of kind {empty}; drop them from the mix")
        eval_rows = val.select(tuple(self.mix))
        picks = np.random.default_rng(config.seed).permutation(len(eval_rows))[: config.eval_samples]
        self.val, self.eval_rows = val, [eval_rows[i] for i in sorted(picks)]
        self.vqa_rows = val.select(("vqa",))[: config.eval_samples] if "vqa" in self.mix else []

    def batch(self, rng: np.random.Generator) -> list:
        kinds, weights = list(self.mix), np.array(list(self.mix.values()), dtype=float)
        chosen = rng.choice(len(kinds), self.config.batch_size, p=weights / weights.sum())
        rows = [self.rows[kinds[k]][int(rng.integers(len(self.rows[kinds[k]])))] for k in chosen]
        return [self.data.sample(row, inputs=self.model.inputs) for row in rows]

    def size(self, batch: list) -> int:
        return self.module.tokens

    @torch.no_grad()
    def evaluate(self, module: nn.Module) -> dict[str, float]:
        from embodied.eval.vqa import answer_rows, exact_match

        self.model.eval()
        losses, size = [], self.config.batch_size
        for start in range(0, len(self.eval_rows), size):
            batch = [self.val.sample(row, inputs=self.model.inputs) for row in self.eval_rows[start : start + size]]
            losses.append(float(self.model(batch).loss) * len(batch))
        metrics = {"val_loss": sum(losses) / max(1, len(self.eval_rows))}
        if self.vqa_rows:
            answers = answer_rows(self.model, self.val, self.vqa_rows, batch_size=size)
            metrics["val_vqa_exact_match"] = float(np.mean([exact_match(a, r["answer"]) for a, r in zip(answers, self.vqa_rows)]))
        self.model.train()
        return metrics

    def write_files(self, folder: Path) -> None:
        self.model.write_files(folder)

    def load_weights(self, weights: dict[str, torch.Tensor], partial: bool = False) -> list[str]:
        """Resuming needs every weight; starting from an earlier stage (``partial``) takes what matches."""
        return check_loaded(self.model.load_matching(weights), set(self.model.trainable_state()), partial)

    def export(self, folder: Path) -> None:
        self.model.save_pretrained(folder)


FROZEN = ("object_encoder.tower.",)  # the object tokens' ULIP tower stays as the ULIP stage left it


def freeze_all_but(model: EmbodiedModel, parts: tuple[str, ...]) -> None:
    prefixes = tuple(f"{part}." for part in parts if part != "lora")
    for name, parameter in model.named_parameters():
        chosen = name.startswith(prefixes) or ("lora" in parts and "lora_" in name)
        parameter.requires_grad_(chosen and not name.startswith(FROZEN))

