"""Runs a parsed plan in an environment, skill by skill, recording each step's outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from embodied.plan import Plan, Step
from envs.env import EmbodiedEnv
from envs.skills import SkillContext, SkillResult, SkillRunner


@dataclass(frozen=True)
class StepOutcome:
    step: str
    success: bool
    reason: str = ""
    env_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def execute_plan(
    env: EmbodiedEnv, plan: Plan, on_step: Callable[[dict, dict, Step], None] | None = None, finish: bool = True
) -> tuple[list[StepOutcome], dict]:
    """Execute ``plan`` until its terminal step, a failed skill, or the episode's step limit.

    With ``finish`` the episode always ends here (a failed plan ends it as if ``done()`` were called), so
    the returned info holds the task's final metrics; without it a failed skill leaves the episode running,
    for a replan. ``on_step(obs, info, plan_step)`` sees every environment step.
    """
    env = env.unwrapped
    ctx = SkillContext(env.scene, env.navmap, env.config.control_dt, env.world_state())
    outcomes: list[StepOutcome] = []
    for step in plan.steps:
        if step.skill in ("answer", "done"):
            obs, _, _, _, info = env.submit(plan.answer)
            outcomes.append(StepOutcome(str(step), True))
            _notify(on_step, obs, info, step)
            return outcomes, info
        runner = SkillRunner(ctx, step, env.world_state())
        while True:
            action = runner.act(env.world_state())
            if isinstance(action, SkillResult):
                outcomes.append(StepOutcome(str(step), action.success, action.reason, action.steps))
                break
            obs, _, terminated, truncated, info = env.step(action)
            _notify(on_step, obs, info, step)
            if terminated or truncated:
                outcomes.append(StepOutcome(str(step), False, "timeout: the episode's step limit was reached", runner.steps))
                return outcomes, info
        if not outcomes[-1].success:
            if not finish:
                return outcomes, env.info()
            break
    obs, _, _, _, info = env.submit(None)
    _notify(on_step, obs, info, Step("done"))
    return outcomes, info


def _notify(callback, obs, info, step) -> None:
    if callback is not None:
        callback(obs, info, step)
