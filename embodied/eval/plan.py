"""Planning evaluation: each policy plans seeded held-out episodes of every task, the skills execute the
plans in simulation, and success, SPL and plan validity (parses, only known skills and scene objects)
are reported side by side."""

from __future__ import annotations

import math
from pathlib import Path

from embodied.eval.report import write_report
from embodied.rollout import RolloutConfig, rollout

EVAL_SEED = 500_000  # far from the training scenes' seeds (embodied/data/generate.py)
PLAN_METRICS = ["success", "ci95", "of_oracle", "spl", "plan_valid", "episodes"]


def evaluate_plans(
    checkpoint: str, tasks: list[str], policies: list[str], episodes: int, out: Path, seed: int = EVAL_SEED, progress: bool = True
) -> list[dict]:
    rows = []
    for task in tasks:
        for policy in policies:
            config = RolloutConfig(
                task=task, policy=policy, episodes=episodes, seed=seed, out=out / "rollouts" / f"{task}_{policy}",
                gifs=1 if policy == "model" else 0, checkpoint=checkpoint if policy in ("model", "blind") else None,
                overwrite=True,  # each evaluation replaces the rollouts of the last one in these fixed folders
            )
            summary = rollout(config, progress=progress)
            rows.append(
                {
                    "policy": policy,
                    "task": task,
                    "success": summary["success_rate"],
                    "ci95": summary["success_ci95"],
                    "spl": summary["spl"],
                    "plan_valid": summary["plan_valid_rate"],
                    "episodes": summary["episodes"],
                }
            )
    oracle = {r["task"]: r["success"] for r in rows if r["policy"] == "oracle"}
    for row in rows:
        if oracle.get(row["task"]):
            row["of_oracle"] = row["success"] / oracle[row["task"]]
    rows += [mean_over_tasks(policy, [r for r in rows if r["policy"] == policy]) for policy in policies]
    note = (
        f"{episodes} episodes per task from seed {seed}; checkpoint {checkpoint}. SPL for object navigation only. "
        "ci95: half-width of the 95% interval of the success rate (normal approximation; for the mean, tasks independent)."
    )
    write_report(out, "Planning in simulation", rows, PLAN_METRICS, "success", "task", note)
    return rows


def mean_over_tasks(policy: str, rows: list[dict]) -> dict:
    """A policy's mean over tasks, each task weighing the same (the headline figure: success relative to
    the oracle's, averaged over tasks)."""
    mean = {"policy": policy, "task": "mean", "episodes": sum(r["episodes"] for r in rows)}
    for key in ("success", "of_oracle", "plan_valid"):
        values = [r[key] for r in rows if r.get(key) is not None]
        mean[key] = sum(values) / len(values) if len(values) == len(rows) else None
    mean["ci95"] = math.sqrt(sum(r["ci95"] ** 2 for r in rows)) / len(rows)
    return mean
