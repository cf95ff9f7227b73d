"""The tasks that need looking: their instructions single objects out without naming them, their goals are
what the words mean in the scene, and a refusal succeeds only with a reason and with nothing moved."""

import numpy as np
import pytest

from envs.backend import RobotState, WorldState
from envs.executor import execute_plan
from envs.plan import parse_plan
from envs.planners import OraclePlanner, plan_from_goal
from envs.scene import ObjectSpec, SceneSpec, TableSpec
from envs.tasks import evidence, final_answer, looked_for, reasoned
from envs.vision_tasks import REFUSAL_THOUGHTS, AllOf, IfPresent, Refer, Refuse, references

SEEDS = range(3_000_000, 3_000_040)


def _object(colour, shape, size="small", x=0.0, y=0.0):
    return ObjectSpec(f"{colour} {shape}", shape, colour, size, x, y, 0.5, 0.025, "table 1")


def _scene(*objects):
    return SceneSpec(0, 3.0, (TableSpec("table 1", 0.0, 0.0, 0.6, 0.4, 0.45),), objects, (2.0, 0.0, np.pi))


def _state(task, moved=(), holding=None):
    objects = {o.name: np.array([o.x, o.y, o.z]) + (0.3 if o.name in moved else 0.0) for o in task.scene.objects}
    return WorldState(RobotState(*task.start, 0.5, 0.1, holding is not None, holding), objects, 0.0)


def test_references_single_an_object_out_by_what_no_other_object_shares():
    red_cube, blue_cube = _object("red", "cube", "small", 0.0, 0.0), _object("blue", "cube", "large", 0.3, 0.0)
    green_sphere, bowl = _object("green", "sphere", "small", 0.05, 0.0), _object("yellow", "bowl", "small", -0.3, 0.1)
    objects = (red_cube, blue_cube, green_sphere, bowl)
    assert set(references(green_sphere, objects)) == {
        "the sphere",
        "the small sphere",
        "the green thing",
        "whatever is closest to the red cube",
    }
    assert set(references(red_cube, objects)) == {
        "the small cube",
        "the red thing",
        "whatever is closest to the green sphere",
    }
    assert "the cube" not in references(blue_cube, objects)  # two cubes
    assert "the yellow container" in references(bowl, objects)


@pytest.mark.parametrize("task_cls", [Refer, AllOf, IfPresent, Refuse])
def test_every_seed_gives_a_task_whose_words_need_the_scene(task_cls, make_env):
    env = make_env(task_cls.name)
    for seed in SEEDS:
        env.reset(seed=seed)
        task = env.unwrapped.task
        text = task.instruction
        goal = task.goal()
        if task_cls is Refer:
            ((item, _),) = task.moves
            assert item.name not in text  # never both its colour and its shape
        elif task_cls is AllOf:
            items = [item for item, _ in task.moves]
            assert len(items) >= 2 and len({box.name for _, box in task.moves}) == 1
            assert len({i.colour for i in items}) == 1 or len({i.shape for i in items}) == 1
            assert not any(i.name in text for i in items)
            thought = plan_from_goal(goal, task.scene, task.start[:2]).split("\n")[0]
            # the whole set first, in the order it moves
            first = thought.removeprefix("thought: request: move all. ").split("; ")[0]
            assert first.endswith(": " + ", ".join(i.name for i in items)) and first.split(":")[0].removesuffix("s") in text
        elif "answer" in goal:  # an absent object, or a request to refuse: the reply says why
            assert len(goal["answer"].split()) >= 2 and task.evaluate(_state(task), goal["answer"])["success"]
            if task_cls is IfPresent or task.kind == "absent":
                assert (
                    goal["answer"].startswith("there is no ")
                    and goal["answer"][len("there is no ") :] not in env.unwrapped.scene.object_names
                )
                assert (goal.get("missing_as") == "target") == text.startswith("go to")  # what the thought says


def test_the_oracle_lists_the_objects_a_request_names_then_looks_each_up_with_what_it_does_with_it():
    red, green = _object("red", "cube", x=0.2), _object("green", "cube", x=-0.2)
    scene = _scene(red, green, _object("white", "bowl", "large", y=0.15))
    thought = lambda goal, origin=(2.0, 0.0): plan_from_goal(goal, scene, origin).split("\n")[0]
    assert thought({"answer": "there is no blue cube", "missing": "blue cube"}) == (
        "thought: request: move. cubes: red cube, green cube. take blue cube: none."
    )
    assert thought({"answer": "there is no blue cube", "missing": "blue cube", "missing_as": "target"}) == (
        "thought: request: go. cubes: red cube, green cube. go to blue cube: none."
    )
    assert thought({"moves": [["green cube", "white bowl"]]}, (-2.0, 0.0)) == (
        "thought: request: move. cubes: green cube, red cube; bowls: white bowl. take green cube: table 1. into white bowl: "
        "table 1."
    )  # nearest first
    assert thought({"moves": [["green cube", "white bowl"], ["red cube", "white bowl"]]}).endswith(
        "take green cube: table 1. into white bowl: table 1. take red cube: table 1. into white bowl: table 1."
    )  # each item beside its own container, even a shared one
    assert thought({"target": "white bowl"}) == "thought: request: go. bowls: white bowl. go to white bowl: table 1."
    assert thought({"moves": [["green cube", "white bowl"]], "refers": [["closest to the red cube", "green cube"]]}).startswith(
        "thought: request: move. closest to the red cube: green cube. cubes: "
    )  # which object a description means, first
    assert thought({"answer": "0", "checks": ["sphere"]}) == "thought: request: question. spheres: none."
    assert thought({"answer": "red cube", "checks": [], "refers": [["closest to the white bowl", "red cube"]]}) == (
        "thought: request: question. closest to the white bowl: red cube."
    )  # a question about what is nearest resolves it, then answers
    assert evidence(["red", "cube"], scene, (2.0, 0.0)) == "red things: red cube; cubes: red cube, green cube"
    assert thought({"answer": "i cannot fly"}).startswith("thought: request: question. i see a small red cube")  # nothing to check
    assert thought({"answer": "that would be unsafe", "kind": "unsafe"}) == f"thought: request: refusal. {REFUSAL_THOUGHTS['unsafe']}"


def test_a_reference_resolves_to_the_object_it_singles_out(make_env):
    env = make_env("refer")
    for seed in SEEDS[:10]:
        env.reset(seed=seed)
        task = env.unwrapped.task
        ((item, box),) = task.moves
        refers = dict(map(tuple, task.goal()["refers"]))
        assert refers and set(refers.values()) <= {item.name, box.name} and item.name in refers.values()
        assert all(not phrase.startswith("whatever") and phrase in task.instruction for phrase in refers)


def test_a_reply_states_its_evidence_then_the_answer():
    assert looked_for("count_shape", ("cube",)) == ("cube",) and looked_for("exists", ("blue bowl",)) == ("bowl",)
    assert looked_for("left_of", ("red cube", "blue bowl")) == ()  # spatial questions compare places
    assert reasoned("cubes: red cube", "1") == "cubes: red cube, so 1" and reasoned("", "large") == "large"
    assert final_answer("cubes: red cube, green cube, so 2") == "2" and final_answer("red cube") == "red cube"


def test_conditional_tasks_ask_for_present_and_absent_objects_about_equally(make_env):
    env = make_env("conditional")
    absent = 0
    for seed in SEEDS:
        env.reset(seed=seed)
        absent += env.unwrapped.task.missing is not None
    assert 10 <= absent <= 30


def test_a_refusal_succeeds_only_with_a_reason_and_nothing_moved():
    scene = _scene(_object("red", "cube"), _object("yellow", "bowl", x=0.3))
    task = Refuse(scene, np.random.default_rng(0))
    assert task.evaluate(_state(task), task.reason)["success"]
    assert not task.evaluate(_state(task), "no")["success"]  # no reason
    assert not task.evaluate(_state(task), None)["success"]
    assert not task.evaluate(_state(task, moved={"red cube"}), task.reason)["success"]
    assert not task.evaluate(_state(task, holding="red cube"), task.reason)["success"]


def test_an_absent_object_is_success_only_when_the_plan_says_there_is_none():
    scene = _scene(_object("red", "cube"), _object("yellow", "bowl", x=0.3))
    task = next(t for seed in range(50) if (t := IfPresent(scene, np.random.default_rng(seed))).missing)
    assert task.evaluate(_state(task), f"there is no {task.missing}")["success"]
    assert not task.evaluate(_state(task), "i put it there")["success"]  # a reply that does not say no
    assert not task.evaluate(_state(task, moved={"red cube"}), f"there is no {task.missing}")["success"]
    present = next(t for seed in range(50) if (t := IfPresent(scene, np.random.default_rng(seed))).missing is None)
    assert not present.evaluate(_state(present), "there is no red cube")["success"]  # it was there: do it


@pytest.mark.parametrize("task", ["refer", "sets", "conditional", "refuse"])
def test_the_oracle_carries_out_each_new_task(task, make_env):
    env = make_env(task)
    for seed in (3_000_002, 3_000_003):
        obs, _ = env.reset(seed=seed)
        _, info = execute_plan(env.unwrapped, parse_plan(OraclePlanner().plan(obs, env), env.unwrapped.known_objects()))
        assert info["success"], (seed, env.unwrapped.task.instruction, info)


def test_a_question_about_what_is_closest_resolves_it_in_the_thought(make_env):
    env = make_env("eqa")
    asked = 0
    for seed in range(3_000_000, 3_000_060):
        obs, _ = env.reset(seed=seed)
        task = env.unwrapped.task
        if not task.question.startswith("what is closest to the "):
            assert "refers" not in task.goal()
            continue
        asked += 1
        anchor = task.question.removeprefix("what is closest to the ").rstrip("?")
        plan = parse_plan(OraclePlanner().plan(obs, env))
        assert plan.thought == f"request: question. closest to the {anchor}: {task.answer}." and str(plan.steps[0]) == f"answer({task.answer})"
    assert asked >= 3
