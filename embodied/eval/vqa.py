"""Embodied VQA evaluation: the model and its baselines answer held-out questions about simulated scenes.

Exact match compares normalised answers; refined exact match also accepts a reply that states the answer
inside a longer phrase ("it is red"), as long as it names no other candidate of the same question.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from embodied.data.dataset import SplitData
from embodied.prompts import PLACEHOLDER_RE, Sample
from envs.tasks import normalize_answer

MAX_ANSWER_TOKENS = 8


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def refined_exact_match(prediction: str, answer: str, candidates: set[str]) -> bool:
    """The answer appears as whole words and no other candidate answer does."""
    said = f" {normalize_answer(prediction)} "
    named = {c for c in candidates if f" {c} " in said}
    return normalize_answer(answer) in named and len(named) == 1


def answer_rows(model, data: SplitData, rows: list[dict], batch_size: int = 8, blind: bool = False) -> list[str]:
    """The model's replies to the rows' last questions; ``blind`` strips the image and point cloud."""
    replies: list[str] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            samples = [data.sample(row, reply=False) for row in rows[start : start + batch_size]]
            if blind:
                samples = [_blind(s) for s in samples]
            replies += model.generate(samples, max_new_tokens=MAX_ANSWER_TOKENS)
    return replies


def _blind(sample: Sample) -> Sample:
    turns = [(re.sub(r"^\n", "", PLACEHOLDER_RE.sub("", user)), reply) for user, reply in sample.turns]
    return Sample(turns, system=sample.system)


def random_answers(rows: list[dict], train: SplitData, seed: int) -> list[str]:
    """A uniformly random answer among those the training split gives to questions of the same form."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[str]] = {}
    for row in train.select(("vqa",)):
        pools.setdefault(question_form(row), []).append(normalize_answer(row["answer"]))
    vocab = {form: sorted(set(answers)) for form, answers in pools.items()}
    everything = sorted({a for answers in vocab.values() for a in answers})
    return [str(rng.choice(vocab.get(question_form(row), everything))) for row in rows]


def question_form(row: dict) -> str:
    """What a question asks for, as far as the answer's vocabulary goes: yes/no, a number, a word."""
    answer = normalize_answer(row["answer"])
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else row["question_type"]
