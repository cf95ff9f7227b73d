"""The plan grammar: parsing, round trips, arities, and errors that name the offending line."""

import pytest

from envs.plan import Plan, PlanError, Step, normalize_arg, parse_plan, parse_step
from envs.skills import SKILLS

PICK_PLACE = """thought: the red cube is on the left table, the green bowl on the right one.
1. navigate(red cube)
2. pick(red cube)
3. navigate(green bowl)
4. place(red cube, green bowl)
5. done()"""

OBJECTS = ["red cube", "green bowl", "blue sphere"]


def _args(skill: str, n_args: int) -> tuple[str, ...]:
    """``n_args`` arguments for ``skill``, each of the kind it asks for (extra ones items)."""
    kinds = SKILLS[skill].args
    return tuple("green bowl" if i < len(kinds) and kinds[i] == "container" else "red cube" for i in range(n_args))


def _call(skill: str, n_args: int) -> str:
    return f"{skill}({', '.join(_args(skill, n_args))})"


def _error(text: str, **kwargs) -> PlanError:
    with pytest.raises(PlanError) as info:
        parse_plan(text, **kwargs)
    return info.value


# -- parsing and round trips ------------------------------------------------------------------------


def test_parses_the_documented_example():
    plan = parse_plan(PICK_PLACE, objects=OBJECTS)
    assert plan.thought == "the red cube is on the left table, the green bowl on the right one."
    assert plan.steps == (
        Step("navigate", ("red cube",)),
        Step("pick", ("red cube",)),
        Step("navigate", ("green bowl",)),
        Step("place", ("red cube", "green bowl")),
        Step("done"),
    )


@pytest.mark.parametrize(
    "text",
    [
        PICK_PLACE,
        "thought: how many?\n1. scan()\n2. look_at(blue sphere)\n3. answer(2)",
        "thought:\n1. done()",
        "thought: a plan with blank lines.\n\n1. navigate(red cube)\n\n   \n2. done()\n\n",
    ],
)
def test_round_trip(text):
    plan = parse_plan(text)
    again = parse_plan(plan.to_text())
    assert again == plan
    assert again.to_text() == plan.to_text()


def test_round_trip_from_a_built_plan():
    plan = Plan("go.", (Step("navigate", ("blue sphere",)), Step("scan"), Step("answer", ("yes",))))
    assert plan.to_text() == "thought: go.\n1. navigate(blue sphere)\n2. scan()\n3. answer(yes)"
    assert parse_plan(plan.to_text()) == plan


def test_arguments_are_normalised():
    plan = parse_plan("thought: x\n1.place(  Red   CUBE ,Green Bowl )\n2. done()", objects=["RED cube", "green  bowl"])
    assert plan.steps[0] == Step("place", ("red cube", "green bowl"))
    assert plan.to_text().splitlines()[1] == "1. place(red cube, green bowl)"
    assert normalize_arg("  Blue \t Sphere ") == "blue sphere"


def test_answer_property():
    assert parse_plan("thought: counted.\n1. answer(Two Bowls)").answer == "two bowls"
    assert parse_plan(PICK_PLACE).answer is None
    assert Plan("empty", ()).answer is None


# -- arity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skill", sorted(SKILLS))
def test_each_skill_takes_its_arity(skill):
    arity = len(SKILLS[skill].args)
    assert parse_step(_call(skill, arity)).args == _args(skill, arity)
    for wrong in {arity + 1, max(arity - 1, 0)} - {arity}:
        with pytest.raises(PlanError, match=rf"{skill}\(\) takes {arity} argument\(s\), got {wrong}"):
            parse_step(_call(skill, wrong))


@pytest.mark.parametrize(
    "call, message",
    [
        ("pick(green bowl)", "pick() takes an item, not a container, got 'green bowl'"),
        ("place(green bowl, green bowl)", "place() takes an item, not a container, got 'green bowl'"),
        ("place(red cube, red cube)", "place() takes a container, got 'red cube'"),
        ("place(red cube, blue sphere)", "place() takes a container, got 'blue sphere'"),
    ],
)
def test_items_are_carried_and_containers_hold_them(call, message):
    error = _error(f"thought: x\n1. navigate(red cube)\n2. {call}\n3. done()", objects=OBJECTS)
    assert error.line == 3 and message in str(error)
    assert parse_step("navigate(green bowl)", objects=OBJECTS).args == ("green bowl",)  # any object to go to


def test_wrong_arity_in_a_plan_names_its_line():
    error = _error("thought: x\n1. navigate(red cube)\n2. pick()\n3. done()")
    assert error.line == 3
    assert "pick() takes 1 argument(s), got 0" in str(error)
    assert str(error).startswith("line 3:")


# -- errors that name the line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("thought: x\n1. navigate(red cube)\n2. fly(red cube)\n3. done()", 3, "unknown skill 'fly'"),
        ("thought: x\n1. navigate(red cube)\n3. done()", 3, "step numbered 3, expected 2"),
        ("thought: x\n0. done()", 2, "step numbered 0, expected 1"),
        ("1. navigate(red cube)\n2. done()", 1, "a plan starts with 'thought: ...'"),
        ("thought: x\n1. navigate(red cube)\n2. pick(red cube)", 3, "the last step must be answer(...) or done()"),
        ("thought: x\n1. done()\n2. navigate(red cube)", 3, "comes after the terminal step done()"),
        ("thought: x\n1. answer(yes)\n2. answer(no)", 3, "comes after the terminal step answer(yes)"),
        ("thought: nothing to do", 1, "at least one step"),
        ("thought: x\n1. navigate(red cube)\nthen pick it up\n3. done()", 3, "expected 'N. skill(args)'"),
        ("thought: x\n1. navigate(red-cube!)\n2. done()", 2, "bad argument 'red-cube!'"),
        ("thought: x\n1. place(red cube,)\n2. done()", 2, "bad argument ''"),
    ],
)
def test_errors_name_the_bad_line(text, line, message):
    error = _error(text)
    assert error.line == line
    assert message in str(error)
    assert str(error).startswith(f"line {line}: ")


def test_unknown_object_only_with_objects():
    text = "thought: x\n1. navigate(red cube)\n2. pick(pink elephant)\n3. done()"
    assert parse_plan(text).steps[1] == Step("pick", ("pink elephant",))  # no object list: anything goes
    error = _error(text, objects=OBJECTS)
    assert error.line == 3
    assert "unknown object 'pink elephant'" in str(error)


def test_answer_text_is_not_an_object():
    assert parse_plan("thought: x\n1. answer(pink elephant)", objects=OBJECTS).answer == "pink elephant"


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_empty_plan(text):
    error = _error(text)
    assert error.line == 0
    assert str(error) == "empty plan"


@pytest.mark.parametrize(
    "text", ["garbage", "I would navigate to the red cube.", "{'steps': ['navigate']}", "\x00\x01\x02", "thought"]
)
def test_garbage_text(text):
    error = _error(text)
    assert error.line == 1
    assert isinstance(error, ValueError)  # callers may catch the ValueError family


def test_blank_lines_keep_line_numbers():
    error = _error("thought: x\n\n1. navigate(red cube)\n\n2. teleport()\n3. done()")
    assert error.line == 5


def test_leading_blank_lines_keep_line_numbers():
    error = _error("\n\nthought: x\n1. navigate(red cube)\n2. teleport()\n3. done()")
    assert error.line == 5
