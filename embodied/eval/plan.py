"""Planning evaluation: each policy plans seeded held-out episodes of every task, the skills execute the
plans in simulation, and success, SPL and plan validity (parses, only known skills and scene objects)
are reported side by side."""

from __future__ import annotations

from pathlib import Path

from embodied.eval.report import write_report
from embodied.rollout import RolloutConfig, rollout

EVAL_SEED = 500_000  # far from the training scenes' seeds (embodied/data/generate.py)


def evaluate_plans(
    checkpoint: str, tasks: list[str], policies: list[str], episodes: int, out: Path, seed: int = EVAL_SEED, progress: bool = True
) -> list[dict]:
    rows = []
    for task in tasks:
        for policy in policies:
            config = RolloutConfig(
                task=task, policy=policy, episodes=episodes, seed=seed, out=out / "rollouts" / f"{task}_{policy}",
                gifs=1 if policy == "model" else 0, checkpoint=checkpoint if policy in ("model", "blind") else None,
            )
            summary = rollout(config, progress=progress)
            rows.append(
                {
                    "policy": policy,
                    "task": task,
                    "success": summary["success_rate"],
                    "spl": summary["spl"],
                    "plan_valid": summary["plan_valid_rate"],
                    "episodes": summary["episodes"],
                }
            )
    oracle = {r["task"]: r["success"] for r in rows if r["policy"] == "oracle"}
    for row in rows:
        if oracle.get(row["task"]):
            row["of_oracle"] = row["success"] / oracle[row["task"]]
    note = f"{episodes} episodes per task from seed {seed}; checkpoint {checkpoint}. SPL for object navigation only."
    write_report(out, "Planning in simulation", rows, ["success", "of_oracle", "spl", "plan_valid", "episodes"], "success", "task", note)
    return rows
