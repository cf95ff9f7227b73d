"""Runs a parsed plan in a gymnasium episode: the plan runner, fed the simulator's state each step."""

from __future__ import annotations

from collections.abc import Callable

from envs.env import EmbodiedEnv
from envs.plan import Plan, Step
from envs.plan_runner import PlanRunner, StepOutcome
from envs.skills import SkillContext


def execute_plan(
    env: EmbodiedEnv, plan: Plan, on_step: Callable[[dict, dict, Step], None] | None = None, finish: bool = True
) -> tuple[list[StepOutcome], dict]:
    """Execute ``plan`` until its terminal step, a failed skill, or the episode's step limit.

    With ``finish`` the episode always ends here (a failed plan ends it as if ``done()`` were called), so
    the returned info holds the task's final metrics; without it only a terminal step ends it: a failed skill
    (for a replan) or a plan of motions alone (a ``scan()`` before planning) leaves the episode running. ``on_step(obs, info, plan_step)`` sees every environment step.
    """
    env = env.unwrapped
    ctx = SkillContext(*env.skill_view(), env.config.control_dt, env.world_state())
    runner = PlanRunner(plan, ctx)
    while (action := runner.act(env.world_state())) is not None:
        obs, _, terminated, truncated, info = env.step(action)
        ctx.scene, ctx.navmap = env.skill_view()  # a perceived world changes as the robot looks
        _notify(on_step, obs, info, runner.step)
        if terminated or truncated:
            runner.abort("timeout: the episode's step limit was reached")
            return runner.outcomes, info
    if not finish and not (runner.completed and runner.step.terminal):  # a failure, or a plan of motions only
        return runner.outcomes, env.info()
    step = runner.step if runner.completed else Step("done")
    obs, _, _, _, info = env.submit(plan.answer if runner.completed else None)
    _notify(on_step, obs, info, step)
    return runner.outcomes, info


def _notify(callback, obs, info, step) -> None:
    if callback is not None:
        callback(obs, info, step)
