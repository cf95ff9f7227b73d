"""The skill registry is the one place a skill is declared: the parser, the constrained decoder and the plan
runner all read it, so they agree on every skill, and a skill added there is known to all three."""

import dataclasses

import numpy as np
import pytest

from embodied.backbone import TINY, load_tokenizer
from embodied.decoding import PlanConstraint
from envs.backend import RobotState, WorldState
from envs.plan import Plan, PlanError, Step, parse_plan, parse_step
from envs.plan_runner import PlanRunner, SkillRunner
from envs.scene import ObjectSpec, SceneSpec, TableSpec, generate_scene
from envs.skills import OBJECT_KINDS, SKILLS, SkillContext, SkillResult, SkillSpec

OBJECTS = ["red cube", "green bowl"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


def _call(name: str) -> str:
    args = ["text words" if kind == "text" else OBJECTS[i % 2] for i, kind in enumerate(SKILLS[name].args)]
    return f"{name}({', '.join(args)})"


def _state(scene) -> WorldState:
    robot = RobotState(0.0, 0.0, 0.0, 0.5, 0.3, False, None)
    return WorldState(robot, {o.name: np.array([o.x, o.y, o.z]) for o in scene.objects})


def test_every_registered_skill_is_well_formed():
    for name, spec in SKILLS.items():
        assert set(spec.args) <= OBJECT_KINDS | {"text"}, name
        if spec.terminal:
            assert spec.time_limit == 0.0, name
        else:
            assert callable(spec.controller) and spec.time_limit > 0, name
    assert {n for n, s in SKILLS.items() if s.terminal} == {"answer", "done"}


@pytest.mark.parametrize("name", sorted(SKILLS))
def test_parser_and_decoder_agree_on_each_skill(name, tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    call = _call(name)
    step = parse_step(call, objects=OBJECTS)
    assert step.skill == name and len(step.args) == len(SKILLS[name].args)
    line = f"thought: x\n1. {call}"
    assert all(rule.valid(line[:i]) for i in range(len(line) + 1)), f"the decoder refuses a prefix of {call}"
    assert f"{name}(" in rule.continuations("thought: x\n1. ")
    text = line if step.terminal else f"{line}\n2. done()"
    assert rule.complete(text) and parse_plan(text, OBJECTS).steps[0] == step
    wrong = f"thought: x\n1. {name}({', '.join(['red cube'] * (len(step.args) + 1))})"
    assert not rule.valid(wrong)
    with pytest.raises(PlanError, match="argument"):
        parse_plan(wrong + "\n2. done()", OBJECTS)


@pytest.mark.parametrize("name", sorted(n for n, s in SKILLS.items() if not s.terminal))
def test_runner_drives_each_motion_skill_within_its_time_limit(name):
    scene = generate_scene(0)
    names = scene.object_names[:2]
    args = tuple(names[i % 2] for i in range(len(SKILLS[name].args)))
    ctx = SkillContext(scene, control_dt=0.1)
    runner = SkillRunner(ctx, Step(name, args), _state(scene))
    assert runner.budget == round(SKILLS[name].time_limit / 0.1)


def test_a_skill_added_to_the_registry_is_known_to_parser_decoder_and_runner(monkeypatch, tokenizer):
    def wave(ctx, state, times):
        for _ in range(int(times)):
            state = yield ctx.action(state, wz=1.0)
        return SkillResult(True)

    monkeypatch.setitem(SKILLS, "wave", SkillSpec(("text",), wave, 1.0))
    monkeypatch.setitem(SKILLS, "give_up", SkillSpec(()))
    text = "thought: hello.\n1. wave(3)\n2. give_up()"
    plan = parse_plan(text)
    assert [s.skill for s in plan.steps] == ["wave", "give_up"] and plan.steps[-1].terminal
    rule = PlanConstraint(tokenizer, OBJECTS)
    assert {"wave(", "give_up("} <= set(rule.continuations("thought: x\n1. "))
    assert rule.complete(text)
    scene = generate_scene(0)
    runner = PlanRunner(plan, SkillContext(scene, control_dt=0.1))
    actions = []
    while (action := runner.act(_state(scene))) is not None:
        actions.append(action)
    assert len(actions) == 3 and all(a[2] > 0 for a in actions)
    assert runner.completed and [o.step for o in runner.outcomes] == ["wave(3)", "give_up()"]


def test_plan_runner_ends_an_answer_at_once_and_reports_a_missing_pose():
    scene = generate_scene(0)
    answered = PlanRunner(parse_plan("thought: x\n1. answer(blue)"), SkillContext(scene))
    assert answered.finished and answered.completed and answered.act(_state(scene)) is None
    name = scene.object_names[0]
    started = []
    runner = PlanRunner(
        Plan("x", (Step("navigate", (name,)), Step("done"))), SkillContext(scene), on_step=lambda i, s: started.append((i, str(s)))
    )
    unseen = WorldState(_state(scene).robot, {})
    assert runner.act(unseen) is None
    assert runner.finished and not runner.completed
    assert runner.outcomes[-1].reason.startswith("object not found") and name in runner.outcomes[-1].reason
    assert started == [(0, f"navigate({name})")]


def test_plan_runner_abort_fails_the_running_step():
    scene = generate_scene(0)
    runner = PlanRunner(Plan("x", (Step("scan"), Step("done"))), SkillContext(scene))
    state = _state(scene)
    assert runner.act(state) is not None and runner.act(state) is not None
    runner.abort("timeout: the episode's step limit was reached")
    assert runner.finished and runner.act(state) is None
    assert runner.outcomes[-1].step == "scan()" and runner.outcomes[-1].env_steps == 2


def _instant(ctx, state, *args):
    """A stand-in motion skill: one action, then success (the test moves the robot itself)."""
    yield ctx.action(state)
    return SkillResult(True)


@pytest.mark.parametrize("found_at", ["far", "nowhere"])
def test_look_for_visits_the_tables_seen_from_afar_nearest_first_until_the_object_is_known(monkeypatch, found_at):
    """A perceived world: the plan names the green sphere, not found yet. The runner detours to each table
    seen only from afar (navigate to a known object on it, scan), nearest first, until the sphere is known;
    found nowhere, the step fails after the last table, as without ``look_for`` it fails at once. The blue
    cube, seen from afar, is renamed purple on the way (perception sees it better): on to the purple one."""
    monkeypatch.setitem(SKILLS, "navigate", SkillSpec(("object",), _instant, 1.0))
    monkeypatch.setitem(SKILLS, "scan", SkillSpec((), _instant, 1.0))
    tables = (TableSpec("table_0", 0.8, 0.0, 0.3, 0.3, 0.4), TableSpec("table_1", 3.5, 0.0, 0.3, 0.3, 0.4), TableSpec("table_2", -5.0, 0.0, 0.3, 0.3, 0.4))
    objects = tuple(ObjectSpec(f"{c} cube", "cube", c, "small", t.x, t.y, 0.45, 0.03, t.name) for c, t in zip(("red", "blue", "white"), tables))
    sphere = ObjectSpec("green sphere", "sphere", "green", "small", -5.1, 0.1, 0.45, 0.03, "table_2")
    scene = SceneSpec(-1, 6.0, tables, objects, (0.0, 0.0, 0.0))
    plan = Plan("x", (Step("navigate", ("green sphere",)), Step("done")))
    heard = []
    for look_for in (False, True):
        ctx = SkillContext(scene, control_dt=0.1)
        heard.clear()
        runner = PlanRunner(plan, ctx, on_step=lambda i, s: heard.append((i, str(s))), look_for=look_for)
        robot, known = RobotState(0.0, 0.0, 0.0, 0.5, 0.3, False, None), {o.name: o for o in objects}
        while runner.act(WorldState(robot, {n: np.array([o.x, o.y, o.z]) for n, o in known.items()})) is not None:
            step = runner.step
            if step == Step("navigate", ("blue cube",)):
                known["purple cube"] = dataclasses.replace(known.pop("blue cube"), name="purple cube", colour="purple")
                ctx.scene = SceneSpec(-1, 6.0, tables, tuple(known.values()), (0.0, 0.0, 0.0))
            elif step.skill == "navigate" and step.args[0] in known:
                robot = RobotState(known[step.args[0]].x - 0.5, known[step.args[0]].y, 0.0, 0.5, 0.3, False, None)
            if step.skill == "scan" and found_at == "far" and robot.x < -4:  # at table 2 the sphere comes into view
                known["green sphere"] = sphere
                ctx.scene = SceneSpec(-1, 6.0, tables, tuple(known.values()), (0.0, 0.0, 0.0))
        steps = [o.step for o in runner.outcomes]
        if not look_for:
            assert steps == ["navigate(green sphere)"] and runner.outcomes[-1].reason.startswith("object not found")
            continue
        visits = ["navigate(blue cube)", "navigate(purple cube)", "scan()", "navigate(white cube)", "scan()"]  # table 0 is near
        if found_at == "far":
            assert steps == [*visits, "navigate(green sphere)", "done()"] and runner.completed
            assert runner.outcomes[0].reason == "object not found: lost track of the blue cube"
        else:
            assert steps == [*visits, "navigate(green sphere)"] and not runner.completed
            assert runner.outcomes[-1].reason == "object not found: no pose known for the green sphere"
        assert all(i == 0 for i, _ in heard) and heard[0] == (0, "navigate(green sphere)")
