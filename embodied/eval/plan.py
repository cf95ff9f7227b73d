"""Planning evaluation: each policy plans seeded held-out episodes of every task, the skills execute the
plans in simulation, and success, SPL and plan validity (parses, only known skills and scene objects)
are reported side by side."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from embodied.eval.report import write_report
from embodied.prompts import MODEL_INPUTS
from embodied.rollout import RolloutConfig, rollout

EVAL_SEED = 500_000  # far from the training scenes' seeds (embodied/data/generate.py)
PLAN_METRICS = ["success", "ci95", "of_oracle", "spl", "plan_valid", "episodes"]


def evaluate_plans(
    checkpoint: str, tasks: list[str], policies: list[str], episodes: int, out: Path, seed: int = EVAL_SEED, progress: bool = True,
    worlds: tuple[str, ...] = ("privileged",), decodings: tuple[str, ...] = ("fast",), phrasings: tuple[str, ...] = ("template",),
    run: Callable[..., dict] = rollout,
) -> list[dict]:
    """Each policy in each world ("privileged": the simulator's state; "perceived": the robot's own
    perception, after a scan), the model policies with each decoding path ("fast", "reference"), each with
    the instructions in each phrasing ("template", "varied", "held_out": ``envs.paraphrase``). A row's policy
    names each of these that has more than one value: "policy (decoding)/world/phrasing". With both worlds,
    ``of_privileged`` is a row's perceived success over its privileged success; with the template phrasing
    and another, ``of_template`` is its success over the same episodes' with the template's words. ``run``
    runs a RolloutConfig's episodes: here by default, or over Ray workers (``agents.rollout_workers``)."""
    rows = []
    for task in tasks:
        for world in worlds:
            for phrasing in phrasings:
                for policy in policies:
                    model = policy in MODEL_INPUTS
                    for decoding in decodings if model else (None,):
                        kind = f"{policy} ({decoding})" if model and len(decodings) > 1 else policy
                        name = "/".join([kind] + [v for v, many in ((world, len(worlds) > 1), (phrasing, len(phrasings) > 1)) if many])
                        folder = f"{task}_{name.replace('/', '_').replace(' (', '_').rstrip(')')}"
                        config = RolloutConfig(
                            task=task, policy=policy, episodes=episodes, seed=seed, out=out / "rollouts" / folder,
                            gifs=1 if policy == "model" else 0, checkpoint=checkpoint if model else None,
                            overwrite=True,  # each evaluation replaces the rollouts of the last one in these fixed folders
                            world=world, decoding=decoding, phrasing=phrasing,
                        )  # fmt: skip
                        summary = run(config, progress=progress)
                        rows.append(
                            {
                                "policy": name,
                                "kind": kind,
                                "task": task,
                                "world": world,
                                "phrasing": phrasing,
                                "success": summary["success_rate"],
                                "ci95": summary["success_ci95"],
                                "spl": summary["spl"],
                                "plan_valid": summary["plan_valid_rate"],
                                "episodes": summary["episodes"],
                            }
                        )
    keys = [(r["task"], r.pop("kind"), r.pop("world"), r.pop("phrasing")) for r in rows]
    success = {key: r["success"] for key, r in zip(keys, rows)}
    for row, (task, kind, world, phrasing) in zip(rows, keys):
        if success.get((task, "oracle", world, phrasing)):
            row["of_oracle"] = row["success"] / success[(task, "oracle", world, phrasing)]
        if world == "perceived" and success.get((task, kind, "privileged", phrasing)):
            row["of_privileged"] = row["success"] / success[(task, kind, "privileged", phrasing)]
        if phrasing != "template" and success.get((task, kind, world, "template")):
            row["of_template"] = row["success"] / success[(task, kind, world, "template")]
    names = list(dict.fromkeys(r["policy"] for r in rows))
    rows += [mean_over_tasks(name, [r for r in rows if r["policy"] == name]) for name in names]
    note = (
        f"{episodes} episodes per task from seed {seed}; checkpoint {checkpoint}; worlds: {', '.join(worlds)}; "
        f"decoding: {', '.join(decodings)}; phrasings: {', '.join(phrasings)}. SPL for object navigation only. "
        "ci95: half-width of the 95% interval of the success rate (normal approximation; for the mean, tasks independent)."
    )
    write_report(out, "Planning in simulation", rows, plan_columns(rows), "success", "task", note)
    return rows


def plan_columns(rows: list[dict]) -> list[str]:
    """The report's columns: ``PLAN_METRICS``, then the shares that these rows have."""
    return PLAN_METRICS + [key for key in ("of_privileged", "of_template") if any(row.get(key) is not None for row in rows)]


def mean_over_tasks(policy: str, rows: list[dict]) -> dict:
    """A policy's mean over tasks, each task weighing the same (the headline figure: success relative to
    the oracle's, averaged over tasks)."""
    mean = {"policy": policy, "task": "mean", "episodes": sum(r["episodes"] for r in rows)}
    for key in ("success", "of_oracle", "of_privileged", "of_template", "plan_valid"):
        values = [r[key] for r in rows if r.get(key) is not None]
        mean[key] = sum(values) / len(values) if len(values) == len(rows) else None
    mean["ci95"] = math.sqrt(sum(r["ci95"] ** 2 for r in rows)) / len(rows)
    return mean
