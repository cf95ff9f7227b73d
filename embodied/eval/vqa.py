"""Embodied VQA evaluation: the model and its baselines answer held-out questions about simulated scenes.

Exact match compares normalised answers: a reply's final answer, after the objects it lists first
("cubes: red cube, green cube, so 2"). Refined exact match also accepts one that states the answer inside
a longer phrase ("it is red"), as long as it names no other candidate of the same question.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embodied.data.dataset import SplitData
from embodied.io import pyplot, write_atomic, write_figure
from embodied.prompts import MODEL_INPUTS, PLACEHOLDER_RE
from envs.tasks import final_answer, normalize_answer, same_answer

MAX_ANSWER_TOKENS = 48  # the listed objects (up to seven names and their labels), then the answer


exact_match = same_answer  # the reply's final answer (after the objects it lists) against the truth


def refined_exact_match(prediction: str, answer: str, candidates: set[str]) -> bool:
    """Exact match, or the answer appears as whole words and no other candidate answer does (words of the
    answer itself aside: "purple cube" also names "cube")."""
    if exact_match(prediction, answer):
        return True
    said, wanted = f" {normalize_answer(final_answer(prediction))} ", f" {normalize_answer(answer)} "
    if wanted.strip() == "" or wanted not in said:
        return False
    return not any(f" {c} " in said and f" {c} " not in wanted for c in candidates)


def answer_rows(model, data: SplitData, rows: list[dict], batch_size: int = 8, inputs: tuple[str, ...] | None = None) -> list[str]:
    """The model's replies to the rows' last questions, shown ``inputs`` (None: all the model takes; (): blind)."""
    inputs = model.inputs if inputs is None else inputs
    replies: list[str] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            samples = [data.sample(row, reply=False, inputs=inputs) for row in rows[start : start + batch_size]]
            replies += model.generate(samples, max_new_tokens=MAX_ANSWER_TOKENS)
    return replies


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


POLICIES = (*MODEL_INPUTS, "random", "oracle")


def evaluate_vqa(
    checkpoint: str,
    data: str,
    splits: list[str],
    policies: list[str],
    out: Path,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict]:
    """Every policy answers the VQA samples of every split (the first ``limit`` of each); per split and
    question type, exact match and refined exact match. Writes report.{json,md,png} and answers.jsonl."""
    from embodied.eval.report import write_report
    from embodied.model import load_model

    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown VQA policies {sorted(unknown)}; choose from {', '.join(POLICIES)}")
    model = load_model(checkpoint) if set(MODEL_INPUTS) & set(policies) else None
    train = SplitData(data, "train")
    candidates = {normalize_answer(row["answer"]) for row in train.select(("vqa",))}
    rows, answers_out = [], []
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(splits) * len(policies), desc="VQA", unit="policy", disable=not progress)
    for split in splits:
        split_data = SplitData(data, split)
        questions = split_data.select(("vqa",))[:limit]
        by_policy = {}
        for policy in policies:
            bar.set_postfix_str(f"{split}: {policy}")
            if policy == "oracle":
                replies = [row["answer"] for row in questions]
            elif policy == "random":
                replies = random_answers(questions, train, seed)
            else:
                replies = answer_rows(model, split_data, questions, batch_size, MODEL_INPUTS[policy])
            by_policy[policy] = replies
            bar.update()
            scored = [
                (row, reply, exact_match(reply, row["answer"]), refined_exact_match(reply, row["answer"], candidates))
                for row, reply in zip(questions, replies)
            ]
            answers_out += [
                {"split": split, "policy": policy, "id": row["id"], "question_type": row["question_type"], "answer": row["answer"], "reply": reply}
                for row, reply, _, _ in scored
            ]
            for question_type in ("all", *sorted({row["question_type"] for row in questions})):
                chosen = [s for s in scored if question_type in ("all", s[0]["question_type"])]
                rows.append(
                    {
                        "policy": policy,
                        "split": f"{split}/{question_type}",
                        "exact_match": float(np.mean([s[2] for s in chosen])),
                        "refined_exact_match": float(np.mean([s[3] for s in chosen])),
                        "questions": len(chosen),
                    }
                )
        write_examples(out / f"examples_{split}.png", split_data, questions, by_policy)
    bar.close()
    write_atomic(out / "answers.jsonl", lambda tmp: tmp.write_text("".join(json.dumps(a) + "\n" for a in answers_out)))
    note = (
        f"checkpoint {checkpoint}, dataset {data}; blind: the same model shown nothing but the question (objects_only:"
        " only its object tokens; image_only: only the image and scene cloud); random: a random answer of the question's form."
    )
    write_report(out, "Embodied VQA", rows, ["exact_match", "refined_exact_match", "questions"], "exact_match", "split", note)
    return rows


def write_examples(path: Path, data: SplitData, questions: list[dict], replies: dict[str, list[str]], count: int = 8) -> None:
    """A sheet of one question from each of the first ``count`` observations: the image at the size the
    model sees it, the question, the answer, and each policy's reply (green when it matches)."""
    plt = pyplot()
    first: dict[str, int] = {}
    for index, row in enumerate(questions):
        first.setdefault(row["observation"], index)
    shown = list(first.values())[:count]
    if not shown:
        return
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 4.6 * rows), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.94, bottom=0.1, wspace=0.1, hspace=0.65)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, shown):
        row = questions[index]
        ax.imshow(data.observation(row["observation"])[0], interpolation="nearest")
        ax.set_title(textwrap.fill(PLACEHOLDER_RE.sub("", json.loads(row["turns"])[-1][0]).strip(), 40), fontsize=8)
        lines = [(f"answer: {row['answer']}", "black")] + [
            (f"{policy}: {said[index]}", "green" if exact_match(said[index], row["answer"]) else "red")
            for policy, said in replies.items()
            if policy != "oracle"
        ]
        for line, (text, colour) in enumerate(lines):
            ax.text(0, -0.04 - 0.07 * line, text, transform=ax.transAxes, fontsize=8, color=colour, va="top")
    write_figure(path, fig)
