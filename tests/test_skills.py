"""Skills, the skill runner and the plan executor, driven by the oracle and by deliberately bad steps."""

import numpy as np
import pytest

from envs.backend import EXTEND_RANGE
from envs.executor import execute_plan
from envs.plan import Step, parse_plan
from envs.plan_runner import SkillRunner
from envs.skills import REACH, SkillContext, SkillResult

ORACLE_SEEDS = {"object_nav": [0, 1, 2], "pick_place": [0, 1, 2], "rearrange": [2, 3], "eqa": [0, 1, 2, 3, 4]}


def run_skill(env, ctx: SkillContext, step: Step, budget: int | None = None) -> SkillResult:
    """Drive one skill in ``env`` until it returns its result."""
    base = env.unwrapped
    runner = SkillRunner(ctx, step, base.world_state(), budget)
    while not isinstance(action := runner.act(base.world_state()), SkillResult):
        env.step(action)
    return action


def distance_to(env, name: str) -> float:
    state = env.unwrapped.world_state()
    return float(np.hypot(*(state.objects[name][:2] - [state.robot.x, state.robot.y])))


@pytest.fixture
def pick_place(make_env):
    """A pick_place episode (seed 1) and its skill context."""
    env = make_env("pick_place")
    env.reset(seed=1)
    return env, SkillContext(env.unwrapped.scene, env.unwrapped.navmap)


@pytest.mark.parametrize("task, seed", [(t, s) for t, seeds in ORACLE_SEEDS.items() for s in seeds])
def test_oracle_succeeds(make_env, run_oracle, task, seed):
    env = make_env(task)
    outcomes, info = run_oracle(env, seed)
    assert info["success"] is True, outcomes
    assert all(o.success for o in outcomes), outcomes
    assert env.unwrapped.ended
    if task == "eqa":
        assert info["answer"] == env.unwrapped.task.answer
    if task in ("pick_place", "rearrange"):
        assert info["progress"] == 1.0
        assert info["holding"] is None


def test_oracle_nav_spl(make_env, run_oracle):
    env = make_env("object_nav")
    spls = []
    for seed in range(5):
        _, info = run_oracle(env, seed)
        assert 0.0 < info["spl"] <= 1.0
        assert info["path_length"] >= env.unwrapped.task.shortest_path - 0.05  # no shortcut through walls
        spls.append(info["spl"])
    # navigate() stops within arm's reach (< 0.72 m), deeper than the 1 m success radius the shortest
    # path is measured to, so the oracle's SPL is a little below 1
    assert np.mean(spls) > 0.7


def test_spl_is_zero_without_success(make_env):
    env = make_env("object_nav")
    _, info = env.reset(seed=0)
    assert info["distance_to_goal"] > 1.0
    *_, info = env.unwrapped.submit()
    assert info["success"] is False and info["spl"] == 0.0


@pytest.mark.parametrize(
    "step",
    [
        Step("navigate", ("pink elephant",)),
        Step("look_at", ("pink elephant",)),
        Step("pick", ("pink elephant",)),
        Step("place", ("pink elephant", "red bowl")),
    ],
)
def test_unknown_object(pick_place, step):
    env, ctx = pick_place
    result = run_skill(env, ctx, step)
    assert result.success is False
    assert result.reason.startswith("object not found"), result.reason
    assert "pink elephant" in result.reason
    assert result.steps == 0 and env.unwrapped.steps == 0


def test_place_without_holding(pick_place):
    env, ctx = pick_place
    item, box = env.unwrapped.task.moves[0]
    result = run_skill(env, ctx, Step("place", (item.name, box.name)))
    assert result.success is False
    assert result.reason.startswith("not holding"), result.reason


def test_pick_from_far_away(pick_place):
    env, ctx = pick_place
    far = max(env.unwrapped.scene.object_names, key=lambda name: distance_to(env, name))
    assert distance_to(env, far) > EXTEND_RANGE[1]
    result = run_skill(env, ctx, Step("pick", (far,)))
    assert result.success is False
    assert result.reason.startswith("unreachable"), result.reason
    assert env.unwrapped.world_state().robot.holding is None


def test_pick_then_place_into_a_non_container(pick_place):
    env, ctx = pick_place
    items = [o.name for o in env.unwrapped.scene.objects if not o.is_container]
    assert len(items) >= 2
    item, other = items[:2]
    assert run_skill(env, ctx, Step("navigate", (item,))).success
    assert EXTEND_RANGE[0] <= distance_to(env, item) <= EXTEND_RANGE[1]
    assert run_skill(env, ctx, Step("pick", (item,))).success
    assert env.unwrapped.world_state().robot.holding == item
    hands_full = run_skill(env, ctx, Step("pick", (other,)))
    assert not hands_full.success and hands_full.reason.startswith("hands full")
    result = run_skill(env, ctx, Step("place", (item, other)))
    assert result.success is False
    assert "not a container" in result.reason and other in result.reason, result.reason
    assert env.unwrapped.world_state().robot.holding == item  # a refused place lets nothing go


def test_runner_budget_times_out(pick_place):
    env, ctx = pick_place
    far = max(env.unwrapped.scene.object_names, key=lambda name: distance_to(env, name))
    result = run_skill(env, ctx, Step("navigate", (far,)), budget=5)
    assert result.success is False
    assert result.reason.startswith("timeout"), result.reason
    assert result.steps == 5 and env.unwrapped.steps == 5


def test_runner_refuses_terminal_skills(pick_place):
    env, ctx = pick_place
    for step in (Step("done"), Step("answer", ("yes",))):
        with pytest.raises(ValueError, match="not a motion skill"):
            SkillRunner(ctx, step, env.unwrapped.world_state())


def test_executor_stops_at_the_first_failed_step(pick_place):
    env, _ = pick_place
    task = env.unwrapped.task
    item, box = task.moves[0]
    scene = env.unwrapped.scene
    far = max((o for o in scene.objects if not o.is_container), key=lambda o: np.hypot(o.x - item.x, o.y - item.y))
    assert np.hypot(far.x - item.x, far.y - item.y) > REACH[1] + EXTEND_RANGE[1]  # out of reach from the item
    far = far.name
    plan = parse_plan(
        f"thought: x\n1. navigate({item.name})\n2. pick({far})\n3. navigate({box.name})\n4. done()",
        env.unwrapped.scene.object_names,
    )
    seen = []
    outcomes, info = execute_plan(env, plan, on_step=lambda obs, info, step: seen.append(str(step)))
    assert [o.success for o in outcomes] == [True, False]
    assert outcomes[1].step == f"pick({far})" and outcomes[1].reason.startswith("unreachable")
    assert outcomes[0].env_steps > 0
    assert "success" in info and info["success"] is False
    assert env.unwrapped.ended
    assert f"navigate({box.name})" not in seen
    assert len(seen) == info["steps"] + 1  # every env step, then the final submit


def test_executor_reports_the_step_limit(make_env):
    env = make_env("object_nav", max_steps=4)
    env.reset(seed=0)
    target = env.unwrapped.task.target.name
    outcomes, info = execute_plan(env, parse_plan(f"thought: x\n1. navigate({target})\n2. done()"))
    assert len(outcomes) == 1 and not outcomes[0].success
    assert outcomes[0].reason.startswith("timeout"), outcomes[0].reason
    assert info["steps"] == 4 and info["success"] is False
