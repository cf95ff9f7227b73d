"""The plan grammar: the contract between the model that writes plans and the executors that run them.

A plan is one ``thought:`` line followed by numbered skill calls, ending with ``answer(...)`` or
``done()``::

    thought: the red cube is on the left table, the green bowl on the right one.
    1. navigate(red cube)
    2. pick(red cube)
    3. navigate(green bowl)
    4. place(red cube, green bowl)
    5. done()

The grammar is deliberately terse (few tokens to decode) and regular (easy to constrain while decoding).
Which skills exist, and what arguments they take, comes from the one registry, ``envs.skills.SKILLS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from envs.skills import OBJECT_KINDS, SKILLS, suits

# How a thought says that an object the request names is not there ("take blue cube: none."): the one place
# a thought may name an object the robot does not know of (the constrained decoder allows nothing else).
ABSENT = ": none"
# What a thought's lookup says the plan does with each object it looks up, by the object's role in the
# request: "go to red cube: table 1.", "take red cube: table 1. into yellow bin: table 2.". Going to an
# object and carrying it read differently before the first step is written.
LOOKUP_VERBS = {"target": "go to", "item": "take", "container": "into"}
# What a thought says first: the kind of request, read from its words alone ("request: move."), and the
# lookup roles that kind may use. Its steps follow from it: a question or a refusal only replies, a "go"
# never picks, and "move all" (a set) moves every item its lists hold. (A model that began with the scene's
# lists wrote a move's lookups for questions, refusals and navigation; one that read a set as a move moved
# its first item and stopped.)
REQUEST = "request: "
REQUESTS = {
    "move": ("item", "container"),
    "move all": ("item", "container"),
    "go": ("target",),
    "question": (),
    "refusal": (),
}
_WORD = r"[a-z0-9]+(?: [a-z0-9]+)*"
_ARG_RE = re.compile(rf"^{_WORD}$")
_STEP_RE = re.compile(r"^(\d+)\.\s*([a-z_]+)\((.*)\)$")
_THOUGHT_RE = re.compile(r"^thought:(.*)$")


class PlanError(ValueError):
    """A plan that does not follow the grammar; ``line`` is 1-based (0 when the plan is empty)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class Step:
    skill: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.skill}({', '.join(self.args)})"

    @property
    def terminal(self) -> bool:
        """Does this step end the plan (``answer(x)``, ``done()``)?"""
        return SKILLS[self.skill].terminal


@dataclass(frozen=True)
class Plan:
    thought: str
    steps: tuple[Step, ...]

    def to_text(self) -> str:
        lines = [f"thought: {self.thought}".rstrip()]
        lines += [f"{i}. {step}" for i, step in enumerate(self.steps, 1)]
        return "\n".join(lines)

    @property
    def answer(self) -> str | None:
        last = self.steps[-1] if self.steps else None
        return last.args[0] if last is not None and last.skill == "answer" else None


def normalize_arg(text: str) -> str:
    """Lower-case, strip, collapse spaces: the canonical spelling of an argument."""
    return " ".join(text.lower().split())


def parse_step(text: str, line: int = 0, objects: Iterable[str] | None = None) -> Step:
    """Parse ``navigate(red cube)`` (without its number) into a ``Step``."""
    match = re.match(r"^([a-z_]+)\((.*)\)$", text.strip())
    if not match:
        raise PlanError(f"expected 'skill(args)', got {text.strip()!r}", line)
    name, raw_args = match.groups()
    if name not in SKILLS:
        raise PlanError(f"unknown skill {name!r} (known: {', '.join(SKILLS)})", line)
    kinds = SKILLS[name].args
    args = tuple(normalize_arg(a) for a in raw_args.split(",")) if raw_args.strip() else ()
    if len(args) != len(kinds):
        raise PlanError(f"{name}() takes {len(kinds)} argument(s), got {len(args)}", line)
    known = None if objects is None else {normalize_arg(o) for o in objects}
    for arg, kind in zip(args, kinds):
        if not _ARG_RE.match(arg):
            raise PlanError(f"bad argument {arg!r} in {name}(): use lower-case words and digits", line)
        if kind in OBJECT_KINDS and known is not None and arg not in known:
            raise PlanError(f"{name}() names unknown object {arg!r}", line)
        if not suits(kind, arg):
            raise PlanError(f"{name}() takes {'a container' if kind == 'container' else 'an item, not a container'}, got {arg!r}", line)
    return Step(name, args)


def parse_plan(text: str, objects: Iterable[str] | None = None) -> Plan:
    """Parse plan text into a typed ``Plan``, or raise ``PlanError`` naming the offending line.

    ``objects``, when given, are the names a plan may refer to: anything else is an error.
    """
    objects = None if objects is None else list(objects)
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise PlanError("empty plan")
    first_no, first = lines[0]
    match = _THOUGHT_RE.match(first)
    if not match:
        raise PlanError(f"a plan starts with 'thought: ...', got {first!r}", first_no)
    thought = match.group(1).strip()
    steps: list[Step] = []
    for line_no, line in lines[1:]:
        match = _STEP_RE.match(line)
        if not match:
            raise PlanError(f"expected 'N. skill(args)', got {line!r}", line_no)
        number, name, raw_args = match.groups()
        if int(number) != len(steps) + 1:
            raise PlanError(f"step numbered {number}, expected {len(steps) + 1}", line_no)
        if steps and steps[-1].terminal:
            raise PlanError(f"step {number} comes after the terminal step {steps[-1]}", line_no)
        steps.append(parse_step(f"{name}({raw_args})", line_no, objects))
    if not steps:
        raise PlanError("a plan needs at least one step", first_no)
    if not steps[-1].terminal:
        raise PlanError(f"the last step must be answer(...) or done(), got {steps[-1]}", lines[-1][0])
    return Plan(thought, tuple(steps))
