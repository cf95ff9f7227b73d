"""Plan-constrained decoding: the prefix grammar, its continuations, token choice, and plan repair."""

import random
import signal
import time
from contextlib import contextmanager

import pytest
import torch

from embodied.backbone import TINY, load_tokenizer
from embodied.decoding import MAX_THOUGHT_CHARS, THOUGHT, TOP_K, PlanConstraint, repair_plan
from envs.plan import parse_plan
from envs.planners import OraclePlanner
from envs.skills import SKILLS

OBJECTS = ["red cube", "green bowl", "blue sphere", "red bowl"]

HANDWRITTEN = [
    "thought: the red cube is on table 1, the green bowl on table 2.\n"
    "1. navigate(red cube)\n2. pick(red cube)\n3. navigate(green bowl)\n4. place(red cube, green bowl)\n5. done()",
    "thought: how many bowls: i'll look; then count - carefully.\n1. scan()\n2. look_at(red bowl)\n3. answer(2)",
    "thought:\n1. done()",
    "thought: a long one.\n" + "\n".join(f"{i}. look_at(blue sphere)" for i in range(1, 12)) + "\n12. answer(blue)",
]

# (task, seed): oracle plans of every task
ORACLE_CASES = [("object_nav", 0), ("pick_place", 1), ("rearrange", 2), ("eqa", 0), ("eqa", 1)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


def _oracle(make_env, task, seed):
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    return OraclePlanner().plan(obs, env), env.unwrapped.scene.object_names


def _prefixes(text):
    return [text[:i] for i in range(len(text) + 1)]


def _open_argument(text: str) -> str:
    """The argument being written on the last line, or '' outside one."""
    line = text.split("\n")[-1]
    return line.split("(", 1)[1].split(",")[-1] if "(" in line and not line.endswith(")") else ""


# Random walks mostly pick single free characters, so arguments would grow without end: past this length
# the walks below close the argument, so that most of them finish as plans.
SHORT_ARGUMENT = 12


@contextmanager
def _deadline(seconds: float):
    """Raise TimeoutError in the block after ``seconds`` (re checks for signals while it backtracks)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- valid prefixes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", HANDWRITTEN)
@pytest.mark.parametrize("objects", [None, OBJECTS], ids=["free", "objects"])
def test_every_prefix_of_a_handwritten_plan_is_valid(tokenizer, plan, objects):
    rule = PlanConstraint(tokenizer, objects)
    parse_plan(plan, objects)  # the cases themselves are plans
    assert [p for p in _prefixes(plan) if not rule.valid(p)] == []


@pytest.mark.parametrize(("task", "seed"), ORACLE_CASES)
def test_every_prefix_of_an_oracle_plan_is_valid(tokenizer, make_env, task, seed):
    plan, names = _oracle(make_env, task, seed)
    for objects in (None, names):
        rule = PlanConstraint(tokenizer, objects)
        assert [p for p in _prefixes(plan) if not rule.valid(p)] == [], objects


def test_every_oracle_plan_fits_the_constraint(tokenizer, make_env):
    """The oracle writes the training targets: constrained decoding must be able to reproduce each one."""
    for seed in range(200):
        plan, names = _oracle(make_env, "rearrange", seed)
        assert len(plan.split("\n")[0]) <= MAX_THOUGHT_CHARS, seed
        assert PlanConstraint(tokenizer, names).valid(plan), seed


def test_thought_length_limit(tokenizer):
    rule = PlanConstraint(tokenizer)
    longest = THOUGHT + " " + "a" * (MAX_THOUGHT_CHARS - len(THOUGHT) - 1)
    assert len(longest) == MAX_THOUGHT_CHARS
    assert rule.valid(longest)
    assert rule.valid(longest + "\n1. done()")
    assert not rule.valid(longest + "a")
    assert not rule.valid(longest + "a\n1. done()")
    short = PlanConstraint(tokenizer, max_thought_chars=20)
    assert short.valid("thought: " + "b" * 11)
    assert not short.valid("thought: " + "b" * 12)


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "Thought:",
        "thoughts:",
        "thought: The cube",  # upper case
        "thought: 50%",
        "thought: a_b",
        "thought: x\nnavigate(red cube)",  # no number
        "thought: x\n2. ",  # wrong number
        "thought: x\n1.navigate(",
        "thought: x\n1. navigate(red cube)\n3",
        "thought: x\n1. fly(",  # unknown skill
        "thought: x\n1. fl",
        "thought: x\n1. Navigate(",
        "thought: x\n1. navigate(Red",
        "thought: x\n1. navigate( red",
        "thought: x\n1. navigate(red  cube",
        "thought: x\n1. navigate(purple",  # not in the list
        "thought: x\n1. navigate(red cube ",
        "thought: x\n1. navigate(red cube, green bowl",  # too many arguments
        "thought: x\n1. place(red cube, green bowl, ",
        "thought: x\n1. scan(r",
        "thought: x\n1. navigate()",  # too few
        "thought: x\n1. place(red cube)",
        "thought: x\n1. answer()",
        "thought: x\n1. navigate(red cube))",
        "thought: x\n1. navigate(red cube)x",
        "thought: x\n1. navigate(red cube) ",
        "thought: x\n1. done()\n",  # after the terminal step
        "thought: x\n1. done()\n2. scan()",
        "thought: x\n1. answer(yes)\n2",
        "thought: x\n1. scan()\n\n2. done()",  # blank line
    ],
)
def test_clear_violations_are_rejected(tokenizer, text):
    assert not PlanConstraint(tokenizer, OBJECTS).valid(text)


def test_the_thought_names_only_objects_the_robot_knows(tokenizer):
    rule = PlanConstraint(tokenizer, ["red cube", "green bowl"])
    valid = ("thought: the red cube", "thought: the red c", "thought: a red thing, a green", "thought: on table 2: green bowl.")
    for text in valid:
        assert rule.valid(text), text
    for text in ("thought: the red bowl.", "thought: two blue  cubes,", "thought: the green cubes.", "thought: the red sphere."):
        assert not rule.valid(text), text
    assert PlanConstraint(tokenizer).valid("thought: the blue cylinder.")  # no list: anything goes
    # the model's favourite, an imagined blue cube, may only be said to be absent
    text = "thought: cubes: red cube. "
    blue, red = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("blue", "red"))
    is_, colon = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" is", ":"))
    assert rule.choose(text + "blue cube", _logits_preferring(tokenizer, [is_, colon])) == colon
    assert rule.choose(text, _logits_preferring(tokenizer, [blue, red])) == blue  # a colour alone names nothing yet
    # in a list of what the robot sees it names the known red one instead
    blue, red = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" blue", " red"))
    assert rule.choose("thought: cubes:", _logits_preferring(tokenizer, [blue, red])) == red


def test_the_thought_may_name_an_unknown_object_only_to_say_it_is_not_there(tokenizer):
    rule = PlanConstraint(tokenizer, ["red cube", "green bowl"])
    for text in (
        "thought: cubes: red cube. blue cube: none.", "thought: blue c", "thought: blue cube: n",
        "thought: cubes: red cube. take blue cube: none.", "thought: go to blue c", "thought: x. into blue cube: n",
    ):  # a lookup may say what the plan would do with it
        assert rule.valid(text), text
    for text in (
        "thought: blue cube: table 1.", "thought: blue cube is", "thought: blue cube: none. blue cube.",
        "thought: cubes: red cube, blue c", "thought: cubes: blue cube: none.",  # never in a list of what it sees
        "thought: cubes: take blue cube: none.", "thought: take blue cube: table 1.", "thought: retake blue c",
    ):
        assert not rule.valid(text), text


def test_free_objects_allow_any_name_but_a_list_restricts_them(tokenizer):
    text = "thought: x\n1. navigate(purple dinosaur"
    assert PlanConstraint(tokenizer).valid(text)
    assert PlanConstraint(tokenizer).valid(text + ")")
    assert not PlanConstraint(tokenizer, OBJECTS).valid(text)
    # the list is normalised: case and spaces do not matter
    assert PlanConstraint(tokenizer, ["Purple   Dinosaur"]).valid(text + ")")
    # text arguments are never checked against the list
    assert PlanConstraint(tokenizer, OBJECTS).valid("thought: x\n1. answer(purple dinosaur)")


def test_plans_carry_items_into_containers(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    assert rule.continuations("thought: x\n1. pick(red ") == ["cube", "c"]  # not the red bowl
    assert rule.continuations("thought: x\n1. place(blue sphere, red ") == ["bowl", "b"]
    assert not rule.valid("thought: x\n1. pick(green b")
    assert not rule.valid("thought: x\n1. place(red cube, blue s")
    assert rule.forced("thought: x\n1. place(blue") == " sphere,"
    # with no container known, place cannot be written at all: "p" can only be pick
    items = PlanConstraint(tokenizer, ["red cube", "blue sphere"])
    assert items.forced("thought: x\n1. p") == "ick("
    assert not items.valid("thought: x\n1. place(")


def test_long_arguments_are_checked_quickly(tokenizer):
    rule = PlanConstraint(tokenizer)
    # an earlier ARG_PREFIX, (?:[a-z0-9]+ ?)*, backtracked exponentially here (~30 letters: seconds)
    text = "thought: x\n1. answer(the blue sphere is on the left table next to the window" + " abcdefghij" * 10
    assert rule.valid(text)
    started = time.perf_counter()
    with _deadline(2.0):
        assert not rule.valid(text + "_")
        assert not rule.valid(text + "  ")
    assert time.perf_counter() - started < 2.0


# -- completeness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", HANDWRITTEN)
def test_complete_only_at_the_end(tokenizer, plan):
    rule = PlanConstraint(tokenizer, OBJECTS)
    assert [p for p in _prefixes(plan) if rule.complete(p)] == [plan]


def test_complete_needs_a_terminal_step_and_known_objects(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    assert not rule.complete("thought: x\n1. navigate(red cube)")
    assert not rule.complete("thought: x\n1. navigate(purple box)\n2. done()")
    assert PlanConstraint(tokenizer).complete("thought: x\n1. navigate(purple box)\n2. done()")
    assert not rule.complete("")


# -- continuations --------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", HANDWRITTEN[:2])
@pytest.mark.parametrize("objects", [None, OBJECTS], ids=["free", "objects"])
def test_continuations_are_valid_and_never_dead_ends(tokenizer, plan, objects):
    rule = PlanConstraint(tokenizer, objects)
    for prefix in _prefixes(plan):
        options = rule.continuations(prefix)
        assert all(rule.valid(prefix + o) for o in options), prefix
        assert options or rule.complete(prefix), f"dead end at {prefix!r}"
        if rule.complete(prefix):
            assert options == []
        rest = plan[len(prefix) :]
        if "\n" in prefix and rest:  # on step lines the plan's own next characters are among the options
            assert any(rest.startswith(o) for o in options), (prefix, options)


def test_continuations_offer_skills_and_objects(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    assert sorted(rule.continuations("thought: x\n1. ")) == sorted(f"{name}(" for name in SKILLS)
    assert rule.continuations("thought: x\n1. pi") == ["ck("]
    assert rule.continuations("thought: x\n1. navigate(red ") == ["bowl", "cube", "b", "c"]
    assert rule.continuations("thought: x\n1. place(red cube") == [", "]
    assert rule.continuations("thought: x\n1. place(red cube, green bowl") == [")"]
    assert rule.continuations("thought: x\n1. done()") == []
    assert rule.continuations("tho") == ["ught:"]


def test_random_walks_over_continuations_end_in_plans(tokenizer):
    """Following random legal continuations always keeps the text valid, and a walk that reaches a
    complete text is a plan that parses."""
    rng = random.Random(0)
    finished = 0
    for _ in range(60):
        rule = PlanConstraint(tokenizer, OBJECTS, max_thought_chars=30)
        text = ""
        for _ in range(120):
            options = rule.continuations(text)
            if len(_open_argument(text)) >= SHORT_ARGUMENT:
                options = [o for o in options if o in (")", ", ")] or options
            if not options:
                break
            text += rng.choice(options)
            assert rule.valid(text), text
        if rule.complete(text):
            parse_plan(text, OBJECTS)
            finished += 1
        else:
            assert rule.continuations(text), f"dead end at {text!r}"
    assert finished > 0


# -- choosing tokens ------------------------------------------------------------------------------------


def _logits_preferring(tokenizer, ids, size=None):
    logits = torch.zeros(size or len(tokenizer))
    for rank, token in enumerate(ids):
        logits[token] = 100.0 - rank
    return logits


def test_choose_takes_the_best_legal_token(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    text = "thought: x\n1. navigate(red "
    cube = tokenizer("cube", add_special_tokens=False).input_ids[0]
    shout = tokenizer("CUBE", add_special_tokens=False).input_ids[0]
    token = rule.choose(text, _logits_preferring(tokenizer, [shout, cube]))
    assert token == cube
    assert rule.valid(text + rule.piece(token))


def test_choose_falls_back_to_continuations_when_no_top_token_is_legal(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    text = "thought: x\n1. "
    illegal = [t for t in range(len(tokenizer)) if not rule.valid(text + rule.piece(t))][: TOP_K + 5]
    logits = _logits_preferring(tokenizer, illegal)
    place = tokenizer("place(", add_special_tokens=False).input_ids[0]
    logits[place] = 1.0  # the best of the legal first tokens; everything else legal scores 0
    token = rule.choose(text, logits)
    assert token == place
    assert rule.valid(text + rule.piece(token))


def test_choose_gives_up_when_nothing_is_legal(tokenizer):
    rule = PlanConstraint(tokenizer, OBJECTS)
    plan = HANDWRITTEN[0]
    assert rule.choose(plan, torch.randn(len(tokenizer))) == -1


def test_greedy_decoding_with_random_logits_stays_valid_and_repairs_to_a_plan(tokenizer):
    generator = torch.Generator().manual_seed(0)
    for objects in (None, OBJECTS):
        for _ in range(3):
            rule = PlanConstraint(tokenizer, objects, max_thought_chars=60)
            text = ""
            for _ in range(60):
                if rule.complete(text) or len(_open_argument(text)) >= SHORT_ARGUMENT:
                    break
                token = rule.choose(text, torch.randn(len(tokenizer), generator=generator))
                if token == -1:
                    break
                text += rule.piece(token)
                assert rule.valid(text), text
            final = text if rule.complete(text) else repair_plan(text, rule.objects)
            parse_plan(final, objects)


# -- repair ---------------------------------------------------------------------------------------------

FRAGMENTS = [
    "thought:", "thought: ", "thought", "Thought:", " the red cube", " is on table 1", ", ", ".", "\n", "\n", "\n",
    "\r\n", "1. ", "2. ", "3. ", "4. ", "1.", "12. ", "navigate(", "pick(", "place(", "look_at(", "scan(", "answer(",
    "done(", "fly(", "red cube", "green bowl", "blue sphere", "Purple Box", "yes", "2", ")", ")", "(", ",", " ",
    "  ", "\t", "done()", "scan()", "answer(no)", "navigate(red cube)", "\u00dc", "\u2028", "\x0b", "_", "-",
    "#", "<|im_end|>", "", "..", "thought: again",
]  # fmt: skip


def _garbage(rng: random.Random) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))


@pytest.mark.parametrize("objects", [None, OBJECTS], ids=["free", "objects"])
def test_repair_always_returns_a_plan(objects):
    rng = random.Random(1234)
    for _ in range(1500):
        text = _garbage(rng)
        repaired = repair_plan(text, objects)
        plan = parse_plan(repaired, objects)  # never raises
        assert plan.steps[-1].terminal
        assert repair_plan(repaired, objects) == repaired, text  # repairing a repaired plan changes nothing


@pytest.mark.parametrize("plan", HANDWRITTEN)
def test_repair_leaves_a_plan_alone(plan):
    assert repair_plan(plan) == plan
    assert repair_plan(plan, OBJECTS) == plan


@pytest.mark.parametrize("objects", [None, OBJECTS], ids=["free", "objects"])
def test_repair_keeps_the_valid_leading_steps(objects):
    rng = random.Random(99)
    full = parse_plan(HANDWRITTEN[0], OBJECTS)
    lines = HANDWRITTEN[0].split("\n")
    for keep in range(1, len(lines) - 1):  # the thought and `keep - 1` non-terminal steps
        head = "\n".join(lines[:keep])
        for _ in range(40):
            text = head + "\n" + _garbage(rng)
            plan = parse_plan(repair_plan(text, objects), objects)
            assert plan.thought == full.thought
            assert plan.steps[: keep - 1] == full.steps[: keep - 1], text


def test_repair_cases():
    assert repair_plan("thought: x\n1. navigate(red cube)\n2. pi") == "thought: x\n1. navigate(red cube)\n2. done()"
    assert repair_plan("thought: x\n1. done()\n2. navigate(red cube)") == "thought: x\n1. done()"
    assert repair_plan("thought: x\n1. answer(Yes )\n2. scan()") == "thought: x\n1. answer(yes)"
    assert repair_plan("thought:   a    b  ") == "thought: a b\n1. done()"
    assert repair_plan("") == "thought:\n1. done()"
    assert repair_plan("thought: x\n1. navigate(purple box)\n2. done()", OBJECTS) == "thought: x\n1. done()"
    assert repair_plan("thought: x\n2. navigate(red cube)") == "thought: x\n1. done()"
