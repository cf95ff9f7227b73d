"""Decoding evaluation: the same held-out observations planned by each decoding path, each plan compared
with the reference path's (whole text, and the steps alone), and the latency of each path."""

from __future__ import annotations

import statistics
from pathlib import Path

from tqdm import tqdm

from embodied.decoding import DECODINGS
from embodied.eval.plan import EVAL_SEED
from embodied.eval.report import write_report
from embodied.model import load_model
from embodied.plan_timing import scene_requests, time_plan
from envs.plan import PlanError, parse_plan

DECODING_METRICS = ["same_plan", "same_steps", "parses", "p50_ms", "speedup", "observations"]


def _steps(text: str, objects) -> tuple | None:
    try:
        return parse_plan(text, objects).steps
    except PlanError:
        return None


def evaluate_decoding(
    checkpoint: str, observations: int, out: Path, task: str = "pick_place", seed: int = EVAL_SEED, decodings=("fast", "exact"), progress: bool = True
) -> list[dict]:
    """Each path's plans against the reference's on ``observations`` scenes from ``seed`` (the robot's
    view at the start of the episode, the simulator's object list); one timed call per path and scene."""
    model = load_model(checkpoint)
    names = ["reference", *decodings]
    plans: dict[str, list[str]] = {n: [] for n in names}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    objects = []
    for index, request in enumerate(tqdm(scene_requests(task, seed, observations), total=observations, desc=f"decoding {task}", disable=not progress)):
        for name in names:  # alternated scene by scene: a busy moment of the machine hits every path
            timing = time_plan(model, request, DECODINGS[name], repeat=1, warm_up=index == 0)
            plans[name].append(timing.plan)
            seconds[name].append(timing.seconds)
        objects.append(request.objects)
    reference = [_steps(p, o) for p, o in zip(plans["reference"], objects)]
    rows = []
    for name in names:
        steps = [_steps(p, o) for p, o in zip(plans[name], objects)]
        rows.append(
            {
                "policy": name,
                "task": task,
                "same_plan": statistics.mean(float(a == b) for a, b in zip(plans[name], plans["reference"])),
                "same_steps": statistics.mean(float(a == b) for a, b in zip(steps, reference)),
                "parses": statistics.mean(float(s is not None) for s in steps),
                "p50_ms": round(1e3 * statistics.median(seconds[name])),
                "speedup": None if name == "reference" else statistics.median(seconds["reference"]) / statistics.median(seconds[name]),
                "observations": observations,
            }
        )
    note = (
        f"{observations} held-out {task} observations from seed {seed}, checkpoint {checkpoint}; each plan compared with the "
        "reference path's on the same observation (same_plan: the whole text; same_steps: the parsed steps). Latency: one call "
        "per path and observation, alternated, the first call of each path (int8 copy, system prompt cache) untimed."
    )
    write_report(out, "Decoding paths against the reference", rows, DECODING_METRICS, "same_steps", "task", note)
    return rows
