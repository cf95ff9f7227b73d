"""The rules a plan keeps once the decoder knows what the robot perceives: lists that hold what fits their
heading, descriptions and lookups that fit their objects, steps that carry out the thought's lookups. The
oracle keeps them all (or tuning data would teach what decoding forbids); a model that slips is steered."""

import pytest
import torch

import envs
from embodied.backbone import TINY, load_tokenizer
from embodied.decoding import PlanConstraint
from embodied.plan_rules import Progress, named_objects, thought_fits
from envs.plan import parse_plan
from envs.planners import OraclePlanner

KNOWN = frozenset({"red cube", "green cube", "blue sphere", "yellow bowl", "green bin"})
SEEDS = range(4_000_000, 4_000_030)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


def _fits(thought: str, complete: bool = False) -> bool:
    return thought_fits(thought, KNOWN, complete)


@pytest.mark.parametrize("task", sorted(envs.TASKS))
def test_every_oracle_plan_keeps_the_rules(task, make_env, tokenizer):
    env = make_env(task)
    for seed in SEEDS:
        obs, _ = env.reset(seed=seed)
        plan, names = OraclePlanner().plan(obs, env), env.unwrapped.scene.object_names
        rule = PlanConstraint(tokenizer, names, instruction=obs["instruction"])
        assert rule.valid(plan) and rule.complete(plan), (seed, plan)
        if seed == SEEDS[0]:  # every prefix, once per task (slower)
            assert [i for i in range(len(plan)) if not rule.valid(plan[:i])] == [], plan


def test_a_list_holds_every_object_that_fits_its_heading_once():
    for ok in ("cubes: red cube, green cube.", "cubes: green cube, red cube;", "cubes: green c", "cubes: red cube,",
               "green things: green cube, green bin.", "cylinders: none.", "cylinders: no", "bowls: yellow bowl; bins: green bin."):  # fmt: skip
        assert _fits(ok), ok
    for bad in ("cubes: red cube, blue sphere", "cubes: red cube, red cube", "cubes: red cube.", "cubes: none",
                "cylinders: red cube", "spheres: blue sphere. spheres: blue sphere.", "green things: green cube;", "cubes:red"):  # fmt: skip
        assert not _fits(bad), bad
    assert not _fits("cubes: red cube", complete=True) and _fits("cubes: red cube, green cube", complete=True)


def test_a_description_resolves_to_an_object_it_fits():
    for ok in ("the sphere: blue sphere.", "the green container: green bin.", "the blue thing: blue sphere",
               "closest to the red cube: green cube.", "the large cube: red c", "the red cube: red cube."):  # fmt: skip
        assert _fits(ok), ok
    for bad in ("the sphere: red cube", "the green container: green cube", "the green thing: green bin", "the yellow thing: yellow bowl",
                "closest to the red cube: red cube.", "the cube: purple cube", "the large cube: blue"):  # fmt: skip
        assert not _fits(bad), bad


def test_each_item_is_looked_up_once_by_a_role_it_can_play():
    for ok in ("take red cube: table 1. into green bin: table 2.", "go to yellow bowl: table 1.", "take purple cube: none.",
               "take red cube: t. into green bin: t. take green cube: t. into green bin: t.",
               "into purple bowl: n", "take red", "go to green b"):  # fmt: skip
        assert _fits(ok), ok
    for bad in ("take green bin", "into red cube: table 1.", "take red cube: table 1. take red cube: table 1.",
                "take red cube: none.", "take purple cube: table 1.", "take red cubes"):  # fmt: skip
        assert not _fits(bad), bad


def _step(text: str):
    return parse_plan(f"thought: x\n1. {text}\n2. done()").steps[0]


def test_steps_carry_out_the_lookups_as_a_robot_can():
    progress = Progress.of(
        "cubes: red cube. take red cube: table 1. into green bin: table 1. take green cube: table 2.", KNOWN
    )
    assert progress.pairs == {"red cube": "green bin", "green cube": None}  # the second has no container of its own
    assert progress.candidates("navigate", 0) == ["red cube", "green cube"]  # empty-handed: to an item still to move
    assert progress.candidates("pick", 0) == [] and not progress.opens("done")  # nothing to stand at yet
    assert not progress.opens("answer")  # it found what it looked up: it acts
    at_cube = progress.after(_step("navigate(red cube)"))
    assert at_cube.candidates("pick", 0) == ["red cube"] and at_cube.candidates("place", 0) == []
    holding = at_cube.after(_step("pick(red cube)"))
    assert holding.candidates("pick", 0) == [] and holding.candidates("place", 0) == []  # not at the bin
    assert holding.candidates("navigate", 0) == ["green bin"]  # where its lookup carries the cube
    at_bin = holding.after(_step("navigate(green bin)"))
    assert at_bin.candidates("place", 0) == ["red cube"] and at_bin.candidates("place", 1) == ["green bin"]
    placed = at_bin.after(_step("place(red cube, green bin)"))
    assert not placed.opens("done") and placed.candidates("pick", 0) == []  # the green cube is still to go
    assert placed.candidates("navigate", 0) == ["green cube"]  # not back and forth between containers
    green = placed.after(_step("navigate(green cube)")).after(_step("pick(green cube)"))
    assert green.candidates("navigate", 0) == ["green bin", "yellow bowl"]  # no container of its own: any
    done = green.after(_step("navigate(yellow bowl)")).after(_step("place(green cube, yellow bowl)"))
    assert done.opens("done") and done.candidates("navigate", 0) is None  # free to move what the thought missed
    going = Progress.of("go to yellow bowl: table 1.", KNOWN)
    assert going.candidates("navigate", 0) == ["yellow bowl"] and going.after(_step("navigate(yellow bowl)")).opens("done")
    # a thought without lookups leaves the steps free; one that did not find what it looked up only replies
    free = Progress.of("i see a red cube.", KNOWN)
    assert free.candidates("pick", 0) is None and free.opens("answer") and free.opens("done")
    missing = Progress.of("take purple cube: none. into green bin: table 1.", KNOWN)
    assert missing.opens("answer") and not missing.opens("done") and missing.candidates("navigate", 0) == []


def test_a_refusal_thought_has_one_reply_its_reason(tokenizer):
    thought = "thought: no skill of mine does that."
    for rule in (PlanConstraint(tokenizer, sorted(KNOWN)), PlanConstraint(tokenizer, None)):  # blind too
        assert rule.valid(thought + "\n1. answer(i cannot do that)")
        for bad in ("\n1. answer(none", "\n1. answer(no)", "\n1. navigate(", "\n1. done()"):
            assert not rule.valid(thought + bad), bad
        assert rule.forced(thought + "\n1. answer(") == "i cannot do that)"  # fed without asking the model
    assert PlanConstraint(tokenizer, None).valid("thought: i see a cube.\n1. answer(no)")  # other replies stay free


def test_the_request_kind_decides_the_lookups_and_the_steps(tokenizer):
    for ok in ("request: mo", "request: go. go to red cube: table 1.", "request: question. cubes: red cube, green cube.",
               "request: refusal. no skill", "cubes: red cube, green cube. take red cube: table 1."):  # fmt: skip
        assert _fits(ok, complete=ok.endswith(".")), ok
    for bad in ("request: fly.", "request: question. take red cube: table 1.", "request: go. take red cube: table 1.",
                "request: move. go to red cube: table 1.", "request: refusal. cubes: red cube.", "request: move.take",
                "request: move. spheres: blue sphere.", "request: go. cubes: red cube, green cube."):  # fmt: skip
        assert not _fits(bad, complete=True), bad
    for rule in (PlanConstraint(tokenizer, sorted(KNOWN)), PlanConstraint(tokenizer, None)):  # blind too
        assert rule.valid("thought: request: question. cubes: red cube, green cube.\n1. answer(2)")
        for bad in ("\n1. navigate(", "\n1. done()"):
            assert not rule.valid("thought: request: question. cubes: red cube, green cube." + bad), bad
        assert not rule.valid("thought: request: go. go to red cube: table 1.\n1. navigate(red cube)\n2. pick(")
        assert rule.valid("thought: request: refusal. no skill of mine does that.\n1. answer(i cannot do that)")
    known = PlanConstraint(tokenizer, sorted(KNOWN))
    assert known.valid("thought: request: go. go to red cube: table 1.\n1. navigate(red cube)\n2. done()")
    assert not known.valid("thought: request: move. take red cube: table 1. into green bin: table 1.\n1. answer(")
    assert not known.valid("thought: request: move. spheres: blue sphere.\n")  # nothing looked up: no steps yet
    assert known.valid("thought: request: move. spheres: blue sphere. take purple cube: none.\n1. answer(")
    assert known.forced("thought: request: refusal. no") == " skill of mine does that."  # one reason begins so
    assert Progress.of("request: refusal. doing that could hurt someone or break something.", KNOWN).reply == (
        "that would be unsafe"
    )


def test_a_move_that_lists_a_colours_things_looks_up_each_of_them(tokenizer):
    known = frozenset({"red cube", "red sphere", "green bin"})
    one = "request: move. red things: red cube, red sphere; bins: green bin. take red cube: table 1. into green bin: table 1."
    both = one + " take red sphere: table 2. into green bin: table 1."
    assert not thought_fits(one, known, complete=True) and thought_fits(one, known, complete=False)
    assert thought_fits(both, known, complete=True)
    assert thought_fits("request: question. red things: red cube, red sphere.", known, complete=True)  # nothing moves
    assert thought_fits("cubes: red cube. take red cube: table 1. into green bin: table 1.", known, complete=True)
    rule = PlanConstraint(tokenizer, sorted(known))
    assert not rule.valid(f"thought: {one}\n") and rule.valid(f"thought: {both}\n1. navigate(red cube)")


def test_a_set_looks_up_every_item_its_lists_hold(tokenizer):
    known = frozenset({"red cube", "blue cube", "green bin"})
    lists = "cubes: red cube, blue cube; bins: green bin. take red cube: table 1. into green bin: table 1."
    rest = " take blue cube: table 2. into green bin: table 1."
    assert not thought_fits(f"request: move all. {lists}", known, complete=True)  # a shape list, not only a colour's
    assert thought_fits(f"request: move all. {lists}{rest}", known, complete=True)
    assert thought_fits(f"request: move. {lists}", known, complete=True)  # a move's list: what else is there
    assert thought_fits("request: move a", known, complete=False)  # "move all" still being written
    rule = PlanConstraint(tokenizer, sorted(known))
    assert not rule.valid(f"thought: request: move all. {lists}\n")


def test_the_decoder_holds_the_steps_to_the_thought(tokenizer):
    rule = PlanConstraint(tokenizer, sorted(KNOWN))
    thought = "thought: cubes: red cube, green cube; bins: green bin. take red cube: table 1. into green bin: table 1. take green cube: table 1."
    assert rule.valid(
        thought + "\n1. navigate(red cube)\n2. pick(red cube)\n3. navigate(green bin)\n4. place(red cube, green bin)"
    )
    for bad in ("\n1. navigate(red cube)\n2. pick(green cube)", "\n1. pick(", "\n1. navigate(red cube)\n2. pick(red cube)\n3. navigate(yellow bowl)",
                "\n1. navigate(red cube)\n2. pick(red cube)\n3. place(", "\n1. navigate(red cube)\n2. d"):  # fmt: skip
        assert not rule.valid(thought + bad), bad
    # what the rules leave one way to write is fed without asking the model (jump-forward decoding)
    assert rule.forced(thought + "\n1. navigate(red cube)\n2. pick(") == "red cube)\n3."
    assert (
        rule.forced(thought + "\n1. navigate(red cube)\n2. pick(red cube)\n3. navigate(green bin)\n4. p")
        == "lace(red cube, green bin)\n5."
    )
    # the model's slip, picking what it did not go to, becomes the one pick the plan allows
    text = thought + "\n1. navigate(red cube)\n2. pick("
    green, red = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("green", "red"))
    logits = torch.zeros(len(tokenizer))
    logits[green], logits[red] = 10.0, 5.0
    assert rule.piece(rule.choose(text, logits)) == "red"
    # done() only once both cubes are in the bin
    moved = "\n1. navigate(red cube)\n2. pick(red cube)\n3. navigate(green bin)\n4. place(red cube, green bin)"
    assert not rule.valid(thought + moved + "\n5. done()")
    assert rule.valid(
        thought
        + moved
        + "\n5. navigate(green cube)\n6. pick(green cube)\n7. navigate(green bin)\n8. place(green cube, green bin)\n9. done()"
    )
    assert not rule.valid(thought + "\n1. answer(")  # it found what it looked up: it acts


def test_a_count_is_the_length_of_the_thoughts_one_list(tokenizer):
    rule = PlanConstraint(tokenizer, sorted(KNOWN))
    thought = "thought: request: question. cubes: red cube, green cube."
    assert rule.valid(thought + "\n1. answer(2)") and not rule.valid(thought + "\n1. answer(1)")
    assert rule.valid("thought: request: question. spheres: blue sphere; bowls: yellow bowl.\n1. answer(1)")  # two lists
    assert Progress.of("request: question. cylinders: none.", KNOWN).may_say("0")
    assert Progress.of("request: question. cubes: red cube, green cube.", KNOWN).may_say("yes")


def test_a_reply_names_only_colours_and_shapes_its_thought_named(tokenizer):
    rule = PlanConstraint(tokenizer, sorted(KNOWN))
    for ok in ("thought: bins: green bin.\n1. answer(green)", "thought: spheres: blue sphere.\n1. answer(1)",
               "thought: closest to the red cube: green cube.\n1. answer(green cube)",
               "thought: cylinders: none.\n1. answer(there are no cylinders)",
               "thought: a guess.\n1. answer(i cannot fly to the purple moon)"):  # fmt: skip
        assert rule.valid(ok), ok
    for bad in ("thought: bins: green bin.\n1. answer(black", "thought: closest to the red cube: green cube.\n1. answer(orange",
                "thought: spheres: blue sphere.\n1. answer(bowls)"):  # fmt: skip
        assert not rule.valid(bad), bad
    # the model's "orange" after a resolved description becomes a word of the resolution
    text = "thought: closest to the red cube: green cube.\n1. answer("
    orange, green = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("orange", "green"))
    logits = torch.zeros(len(tokenizer))
    logits[orange], logits[green] = 10.0, 5.0
    assert rule.piece(rule.choose(text, logits)) == "green"


def test_a_move_looks_up_what_the_request_names_in_its_order(tokenizer):
    request = "put the red cube in the yellow bowl, then the blue sphere in the green bin"
    feedback = "\nplace(red cube, yellow bowl) failed: missed."  # a replan's: not the request
    named = named_objects(request + feedback, KNOWN)
    assert named == ("red cube", "yellow bowl", "blue sphere", "green bin")
    assert named_objects("put the red cubes in it", KNOWN) == () and named_objects("go to the red cube", ()) == ()
    first = "request: move. take red cube: table 1. into "
    assert thought_fits(first + "yellow b", KNOWN, complete=False, named=named)
    assert not thought_fits(first + "green bi", KNOWN, complete=False, named=named)  # the second item's container
    second = first + "yellow bowl: table 2. take blue sphere: table 1. into "
    assert not thought_fits(second + "yellow bo", KNOWN, complete=False, named=named)  # the first one's, again
    whole = first + "yellow bowl: table 2. take blue sphere: table 1. into green bin: table 2."
    assert thought_fits(whole, KNOWN, complete=True, named=named)
    assert not thought_fits(first + "yellow bowl: table 2.", KNOWN, complete=True, named=named)  # a move left out
    assert thought_fits(first + "yellow bowl: table 2.", KNOWN, complete=True)  # no request given: no such rule
    # an object a description mentions is not what moves; a missing one makes the plan a reply
    refer = named_objects("put whatever is closest to the red cube into the green bin", KNOWN)
    assert refer == ("green bin",)
    resolved = "request: move. closest to the red cube: green cube. take green cube: table 1. into green bin: table 1."
    assert thought_fits(resolved, KNOWN, complete=True, named=refer)
    assert thought_fits(resolved.replace("closest to the red cube: green cube. ", ""), KNOWN, complete=True, named=refer)
    missing = named_objects("if there is a purple cube, put it in the yellow bowl, otherwise tell me", KNOWN)
    absent = "request: move. cubes: red cube, green cube. take purple cube: none."
    assert thought_fits(absent, KNOWN, complete=True, named=missing)
    rule = PlanConstraint(tokenizer, sorted(KNOWN), instruction=request)
    assert rule.valid(f"thought: {whole}\n1. navigate(red cube)") and not rule.valid(f"thought: {first}green bin:")
