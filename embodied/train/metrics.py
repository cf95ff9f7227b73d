"""Run metrics as JSONL (one record per line, appended as training goes) and their curves as PNG, shared
by the training loop, Ray Train and RL fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

from embodied.io import pyplot, write_atomic, write_figure

METRICS = "metrics.jsonl"
CURVES = "curves.png"


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
