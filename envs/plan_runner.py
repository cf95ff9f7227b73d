"""The one plan runner: a parsed plan carried out skill by skill, fed one world state at a time.

Whoever owns the robot drives it: ``envs/executor.py`` feeds it the simulator's state once per gymnasium
step (10 Hz), the ROS 2 controller feeds it states assembled from its topics at 50 Hz. Both therefore agree
on what ends a plan, how long a skill may take, and why a step failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from envs.backend import WorldState
from envs.plan import Plan, Step
from envs.skills import OBJECT_KINDS, SKILLS, SkillContext, SkillResult
from envs.survey import TableSearch


@dataclass(frozen=True)
class StepOutcome:
    step: str
    success: bool
    reason: str = ""  # "category: detail", e.g. "unreachable: no free path to the red cube"
    env_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def missing_objects(step: Step, state: WorldState) -> list[str]:
    """The objects ``step`` names that ``state`` holds no pose for."""
    return [a for a, kind in zip(step.args, SKILLS[step.skill].args) if kind in OBJECT_KINDS and a not in state.objects]


class SkillRunner:
    """Drives one skill step by step: ``act(state)`` returns the next action, or the ``SkillResult`` once
    the skill has finished, failed or run out of its time limit (``budget`` actions, if given)."""

    def __init__(self, ctx: SkillContext, step: Step, state: WorldState, budget: int | None = None):
        spec = SKILLS[step.skill]
        if spec.terminal:
            raise ValueError(f"{step.skill}() is not a motion skill")
        self.step = step
        self.budget = round(spec.time_limit / ctx.control_dt) if budget is None else budget
        self.steps = 0
        self._skill = spec.controller(ctx, state, *step.args)
        self._started = False

    def act(self, state: WorldState) -> np.ndarray | SkillResult:
        if self.steps >= self.budget:
            self._skill.close()
            return SkillResult(False, f"timeout: {self.step} did not finish in {self.budget} steps", self.steps)
        if lost := missing_objects(self.step, state):  # a perceived world can lose sight of an object mid-skill
            self._skill.close()
            return SkillResult(False, f"object not found: lost track of the {', '.join(lost)}", self.steps)
        try:
            action = self._skill.send(state) if self._started else next(self._skill)
        except StopIteration as stop:
            result: SkillResult = stop.value
            return SkillResult(result.success, result.reason, self.steps)
        self._started = True
        self.steps += 1
        return action


class PlanRunner:
    """Runs ``plan`` until its terminal step or the first failure. ``act(state)`` gives the next action, or
    None once the plan has ended; ``outcomes`` then say how each step went. Terminal steps need no state, so
    a plan that only answers ends at construction. ``on_step(index, step)`` hears each motion step begin.

    With ``look_for`` (a perceived world, where an object not found yet may still be there), a step that
    names an unknown object is first preceded by a detour: to a table seen only from afar and a scan there
    (``envs.survey``), one table at a time, until the object is known or no such table is left. The detour's
    steps are in ``outcomes`` too, and ``on_step`` hears them under the index of the step they precede."""

    def __init__(self, plan: Plan, ctx: SkillContext, on_step: Callable[[int, Step], None] | None = None, look_for: bool = False):
        self.plan, self.ctx, self.on_step = plan, ctx, on_step
        self.index = -1
        self.outcomes: list[StepOutcome] = []
        self.finished = False
        self._skill: SkillRunner | None = None
        self._detour: list[Step] = []
        self._search = TableSearch() if look_for else None
        self._advance()

    @property
    def step(self) -> Step:
        """The step being carried out (the last one tried, once the plan has ended)."""
        return self._detour[0] if self._detour else self.plan.steps[self.index]

    @property
    def completed(self) -> bool:
        """Did the plan reach its terminal step?"""
        return self.finished and bool(self.outcomes) and self.outcomes[-1].success

    def act(self, state: WorldState) -> np.ndarray | None:
        while not self.finished:
            if self._skill is None:
                if missing := missing_objects(self.step, state):
                    if not self._plan_detour(state):
                        return self._end(False, f"object not found: no pose known for the {', '.join(missing)}")
                    continue
                self._skill = SkillRunner(self.ctx, self.step, state)
            out = self._skill.act(state)
            if not isinstance(out, SkillResult):
                return out
            self._skill = None
            self.outcomes.append(StepOutcome(str(self.step), out.success, out.reason, out.steps))
            if self._search is not None and out.success and self.step.skill == "scan":
                self._search.viewpoints.append((state.robot.x, state.robot.y))
            if self._detour:
                del self._detour[: 1 if out.success else len(self._detour)]
                if not self._detour:
                    self._search.ended(out.reason)
                self._announce()
            elif not out.success:
                self.finished = True
            else:
                self._advance()
        return None

    def abort(self, reason: str) -> None:
        """End the plan from outside (the episode ran out of steps, the robot was stopped): the current step
        fails with ``reason``."""
        if not self.finished:
            self._end(False, reason)

    def _plan_detour(self, state: WorldState) -> bool:
        """With ``look_for``, set a detour to the next table to search; False when none is left."""
        found = self._search.next(self.ctx.scene, state.objects, state.robot.x, state.robot.y) if self._search else None
        if found is None:
            return False
        self._detour = list(found[1])
        self._announce()
        return True

    def _end(self, success: bool, reason: str = "") -> None:
        steps = self._skill.steps if self._skill is not None else 0
        self._skill = None
        self.outcomes.append(StepOutcome(str(self.step), success, reason, steps))
        self.finished = True

    def _advance(self) -> None:
        if self.index + 1 == len(self.plan.steps):  # a hand-built plan without a terminal step
            self.finished = True
            return
        self.index += 1
        if self.step.terminal:
            self._end(True)
        else:
            self._announce()

    def _announce(self) -> None:
        if self.on_step is not None:
            self.on_step(self.index, self.step)
