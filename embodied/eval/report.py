"""Evaluation reports: one JSON with every number, a Markdown table, and a grouped bar plot."""

from __future__ import annotations

from pathlib import Path

from embodied.io import pyplot, write_atomic, write_figure, write_json


def write_report(out: Path, title: str, rows: list[dict], columns: list[str], plot_metric: str, group: str, note: str = "") -> None:
    """``rows`` hold ``policy``, the ``group`` key (split, task, ...) and the metric ``columns``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", {"title": title, "note": note, "rows": rows})
    header = ["policy", group, *columns]
    lines = [f"# {title}", "", note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(k)) for k in header) + " |")
    write_atomic(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    _bar_plot(out / "report.png", title, rows, plot_metric, group)


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}" if 0 <= value <= 1 else f"{value:.3g}"
    return str(value)


def _bar_plot(path: Path, title: str, rows: list[dict], metric: str, group: str) -> None:
    import numpy as np

    plt = pyplot()

    groups = list(dict.fromkeys(r[group] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) * len(policies) / 2), 3.8))
    for i, policy in enumerate(policies):
        values = [next((r[metric] or 0.0 for r in rows if r["policy"] == policy and r[group] == g), 0.0) for g in groups]
        bars = ax.bar(np.arange(len(groups)) + (i - (len(policies) - 1) / 2) * width, values, width, label=policy)
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20)
    ax.set_ylim(0, 1.25)  # headroom for the legend above the 100% bars
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(policies), loc="upper center")
    fig.tight_layout()
    write_figure(path, fig)
