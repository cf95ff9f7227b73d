"""Planners that are not the model: the oracle (privileged scene state) and a random baseline.

Both write plan text in the grammar of ``envs/plan.py``, so every policy goes through the same parser
and the same skills.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from envs.env import EmbodiedEnv
from envs.plan import ABSENT, LOOKUP_VERBS, REQUEST, Plan, Step
from envs.scene import COLOURS, SHAPES, SIZES, SceneSpec
from envs.skills import SKILLS, suits
from envs.tasks import EmbodiedQA, evidence
from envs.vision_tasks import REFUSAL_THOUGHTS


class Planner(Protocol):
    name: str
    sensors: tuple[str, ...]  # the observations the planner needs from the environment

    def plan(self, observation: dict, env: EmbodiedEnv) -> str:
        """Plan text for the episode that ``env`` has just reset to."""


def plan_from_goal(goal: dict, scene: SceneSpec, origin: Sequence[float] | None = None) -> str:
    """The oracle's plan for a navigation goal ``{"target": name}``, a rearrangement goal
    ``{"moves": [[item, container], ...]}`` (the shapes ``Task.goal()`` and ``parse_instruction`` give), or
    a goal that is a reply ``{"answer": text}`` (a question, a refusal and its reason).

    The thought first says what kind of request it is (``request_kind``: "request: move."), then which
    object each of the request's descriptions means (``"refers"``: "closest to the yellow bin: red cube."),
    then lists the objects of each shape the plan goes to or moves, or the request names and the scene lacks
    (``"missing"``, wanted as ``"missing_as"``: a target or an item), or those of each shape or colour a
    question or a set asks about (``"checks"``), nearest ``origin`` (default: the scene's robot start)
    first: "cubes: red cube, green cube." Then it looks up each object the plan needs by name, with what the
    plan does with it (``LOOKUP_VERBS``), each item beside its own container even where another item shares
    it: "take green cube: table 2. into red bin: table 1." or "take green cube: none.": right after writing
    a name, the model decides whether the scene has it, where its object tokens' words can answer (an
    induction-style copy), rather than at the first step. A request refused for what it asks states why
    instead."""
    opening = f"{REQUEST}{request_kind(goal)}."
    if goal.get("kind") in REFUSAL_THOUGHTS:
        return Plan(f"{opening} {REFUSAL_THOUGHTS[goal['kind']]}", (Step("answer", (goal["answer"],)),)).to_text()
    where = {o.name: o.table for o in scene.objects}
    shape = {o.name: o.shape for o in scene.objects}
    lookups = (
        [(goal["target"], "target")]
        if "target" in goal
        else [(name, role) for move in goal.get("moves", ()) for name, role in zip(move, ("item", "container"))]
    )
    roles = dict(lookups)
    missing = [goal["missing"]] if "missing" in goal else []
    checks = goal.get("checks", [*(shape[n] for n in roles), *(n.split()[-1] for n in missing)])
    listed = evidence(checks, scene, scene.robot_start[:2] if origin is None else origin) + "." if checks else ""
    resolved = [f"{phrase}: {name}." for phrase, name in goal.get("refers", ())]
    found = [f"{LOOKUP_VERBS[role]} {name}: {where[name]}." for name, role in lookups]
    found += [f"{LOOKUP_VERBS[goal.get('missing_as', 'item')]} {name}{ABSENT}." for name in missing]
    body = " ".join([*resolved, listed, *found]).strip()
    if "answer" in goal and not body:
        body = "i see " + ", ".join(f"a {o.size} {o.name}" for o in scene.objects) + "."
    thought = f"{opening} {body}".rstrip()
    if "answer" in goal:
        return Plan(thought, (Step("answer", (goal["answer"],)),)).to_text()
    if "target" in goal:
        return Plan(thought, (Step("navigate", (goal["target"],)), Step("done"))).to_text()
    steps = []
    for item, box in goal["moves"]:
        steps += [Step("navigate", (item,)), Step("pick", (item,)), Step("navigate", (box,)), Step("place", (item, box))]
    return Plan(thought, (*steps, Step("done"))).to_text()


def request_kind(goal: dict) -> str:
    """What the request behind ``goal`` asks, as the words say it whatever the scene holds (``REQUESTS``):
    a move or a visit stays one when its object is missing, a set is "move all", and only a question or a
    refusal replies."""
    if goal.get("kind") in REFUSAL_THOUGHTS:
        return "refusal"
    if "target" in goal or goal.get("missing_as") == "target":
        return "go"
    if "moves" in goal:
        return "move all" if "checks" in goal else "move"  # a set lists what it checks, then moves all of it
    return "move" if "missing" in goal else "question"


class OraclePlanner:
    """Reads the task's goal and the scene: the upper bound that measures the skills."""

    name = "oracle"
    sensors: tuple[str, ...] = ()

    def plan(self, observation: dict, env: EmbodiedEnv) -> str:
        task = env.unwrapped.task
        return plan_from_goal(task.goal(), task.scene, task.start[:2])


class RandomPlanner:
    """Random skills on random known objects: the floor any learned planner must clear."""

    name = "random"
    sensors: tuple[str, ...] = ()
    answers = ("yes", "no", *map(str, range(9)), *COLOURS, *SHAPES, *SIZES)

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def plan(self, observation: dict, env: EmbodiedEnv) -> str:
        task = env.unwrapped.task
        names = env.unwrapped.known_objects()  # in a perceived world, what the robot has seen
        if isinstance(task, EmbodiedQA):
            answer = str(self.rng.choice([*self.answers, *names]))
            return Plan("a guess.", (Step("answer", (answer,)),)).to_text()
        if not names:
            return Plan("nothing in sight.", (Step("done"),)).to_text()
        steps = []
        for _ in range(int(self.rng.integers(1, 6))):
            skill = str(self.rng.choice(["navigate", "pick", "place", "look_at"]))
            fits = [[n for n in names if suits(kind, n)] for kind in SKILLS[skill].args]
            if all(fits):
                steps.append(Step(skill, tuple(str(self.rng.choice(f)) for f in fits)))
        return Plan("random steps.", (*steps, Step("done"))).to_text()


PLANNERS = {"oracle": OraclePlanner, "random": RandomPlanner}
