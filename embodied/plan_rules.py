"""What a plan may say about the scene, beyond its syntax: the rules the constrained decoder adds once it
knows which objects the robot perceives.

The thought opens with the kind of request ("request: move.", ``envs.plan.REQUESTS``), which decides the
lookups it may make and the skills its steps may call (a question or a refusal only replies), and a refusal
says only its reason; a move or a visit ends its thought only once it has looked up what it moves or goes to
(the model had ended "request: move. spheres: none." with `done()`), and a set ("request: move all.", or a
move that lists a colour's things: "orange things: orange sphere, orange cube") only once it has looked up
every item its lists hold: the model had moved the first and stopped. It says what the robot perceives, never
what it imagines: a list under a heading ("cubes:", "red things:") holds every known object that fits it,
each once, and "none" only when none does; a description resolves to a known object that fits its words
("the large bowl: blue bowl.", nothing is closest to itself); each item is looked up once, by a role it can
play ("take" an item, "into" a container), and an unknown one only to say it is not there ("take blue cube:
none."). The steps then carry out the thought's lookups as a robot can: pick what it went to, carry each
item to the container its lookup leads into, place what it holds where it stands, and end only when every
item it looked up is placed; a reply names no colour or shape its thought did not, and a number it gives
is the length of the thought's one list (the answer reads the evidence). The oracle's plans
(``envs.planners.plan_from_goal``) keep every rule, so a model tuned on them loses nothing it was taught;
one that slips is held to the scene and to its own thought.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from envs.plan import ABSENT, LOOKUP_VERBS, REQUEST, REQUESTS, Step
from envs.scene import COLOURS, SHAPES
from envs.skills import suits
from envs.tasks import CLOSEST_TO, evidence_heading
from envs.vision_tasks import REASONS, REFUSAL_THOUGHTS

NONE = ABSENT.removeprefix(": ")  # what a list or a lookup says when nothing fits
_ROLES = {verb: role for role, verb in LOOKUP_VERBS.items()}
_LOOKUP = re.compile(rf"^({'|'.join(LOOKUP_VERBS.values())}) ")
_CLOSEST = CLOSEST_TO.format("")  # "closest to the "
_COLOUR_WORD = re.compile(rf"\b({'|'.join(COLOURS)})\s+([a-z]+)")  # a colour and the word after it
_LOOKUP_VERB = re.compile(rf"(?:^|(?<=\.)) ?(?:{'|'.join(LOOKUP_VERBS.values())})$")  # "... take" opening a lookup
LABELS = {evidence_heading(w): w for w in (*SHAPES, *COLOURS)}  # the thought's list headings: "cubes", "red things"
NAMEABLE = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)  # every name a lookup may say is absent
_OBJECT_WORDS = frozenset({*COLOURS, *SHAPES})


def _object_words(text: str) -> set[str]:
    """The colour and shape words in ``text`` ("cubes" counts as "cube")."""
    words = (w.removesuffix("s") if w.removesuffix("s") in SHAPES else w for w in re.findall(r"[a-z]+", text))
    return {w for w in words if w in _OBJECT_WORDS}


def _clauses(thought: str) -> list[tuple[str, bool, str | None]]:
    """Each clause of a thought (clauses end at "." or ";"): its head, whether a colon ended the head, and
    the body after the colon's space ("" before it is written; None when the colon has no space after it,
    which no clause has)."""
    out = []
    for clause in re.split(r"[.;]", thought):
        head, colon, body = clause.lstrip(" ").partition(":")
        out.append((head, bool(colon), body[1:] if not body or body.startswith(" ") else None))
    return out


def opening(thought: str) -> tuple[str | None, str | None]:
    """The kind of request a thought opens with ("request: move." gives "move") and the rest of the thought
    after it: (None, thought) for a thought that opens otherwise, rest None while the kind is being written.
    (The decoder's thoughts begin with the space after "thought:".)"""
    stripped = thought.lstrip(" ")
    if not stripped.startswith(REQUEST):
        return None, thought
    kind, dot, rest = stripped[len(REQUEST) :].partition(".")
    return kind, rest if dot else None


def _opening_fits(kind: str, rest: str | None, complete: bool) -> bool:
    """A request kind from ``REQUESTS``; a refusal's reason (``REFUSAL_THOUGHTS``) after it and nothing else."""
    if rest is None:
        return not complete and any(k.startswith(kind) for k in REQUESTS)
    if kind == "refusal":
        return any(f" {t}" == rest if complete else f" {t}".startswith(rest) for t in REFUSAL_THOUGHTS.values())
    return kind in REQUESTS and (rest.startswith(" ") or (not complete and not rest))


def fits(word: str, name: str) -> bool:
    """Is ``name`` ("red cube") an object of the shape or colour ``word``?"""
    parts = name.split()
    return word in (parts[0], parts[-1])


def imagines(thought: str, known: frozenset[str], complete: bool) -> bool:
    """Does the thought name, or begin to name, an object by colour and shape that the robot does not know
    of? ("blue c" where no blue cube or cylinder is known; "blue cubes" too.) It may name one only in a
    lookup of its own that says it is not there ("take blue cube: none."), never in a list of what it sees,
    where the check steers the model to a known name instead."""
    for match in _COLOUR_WORD.finditer(thought):
        colour, word = match.groups()
        shapes = [s for s in SHAPES if s.startswith(word) or word.startswith(s)]
        if not shapes or any(f"{colour} {s}" in known for s in shapes):
            continue
        after = thought[match.end() :]
        said_absent = after.startswith(ABSENT) or (not complete and ABSENT.startswith(after))
        before = _LOOKUP_VERB.sub("", thought[: match.start()].rstrip())
        own_sentence = not before or before.endswith(".")  # its own lookup, not inside a list of names
        if not (said_absent and own_sentence and any(s.startswith(word) for s in shapes)):  # not "blue cubes"
            return True
    return False


def named_objects(instruction: str, known: Iterable[str]) -> tuple[str, ...]:
    """The known objects the request's first line names in full, in its order, each time it names them:
    "put the red cube in the green bin, then the blue sphere in the green bin" gives red cube, green bin,
    blue sphere, green bin. An object named only to describe another ("whatever is closest to the red
    cube") is not one: a thought that skipped the description was held to looking the anchor up, and wrote
    on and on. (Lines after the first are a replan's feedback, not the request.)"""
    request = instruction.lower().split("\n", 1)[0]
    names = "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
    found = re.finditer(rf"(?<!{_CLOSEST})\b(?:{names})\b", request) if names else ()
    return tuple(m.group(0) for m in found)


def _next_named(name: str, pending: list[str], named: tuple[str, ...], colon: bool) -> bool:
    """May a lookup of ``name`` (still being written unless ``colon``) come now, with the request's
    ``named`` objects ``pending`` in its order? An object the request names comes in its turn, and not again
    out of it (the second item had been sent into the first one's container), any other at any time."""

    def now(n: str) -> bool:
        return not pending or n == pending[0] or n not in named

    return now(name) if colon else any(n.startswith(name) and now(n) for n in NAMEABLE)


def thought_fits(thought: str, known: frozenset[str], complete: bool, named: tuple[str, ...] = ()) -> bool:
    """Do the thought's lists, descriptions and lookups (all of it, or the start of it so far) say only
    what the known objects allow, and, after a request kind, look up the objects the request ``named``
    (``named_objects``) in its order? Clauses end at "." or ";"; the last is still being written unless
    ``complete``."""
    kind, rest = opening(thought)
    if imagines(thought, known, complete) or (kind is not None and not _opening_fits(kind, rest, complete)):
        return False
    clauses = _clauses(thought)
    looked_up: set[str] = set()
    labels: set[str] = set()
    members: set[str] = set()  # the items of a set's lists: it moves them all
    pending = list(named) if kind is not None else []  # what the request names and no lookup has taken yet
    absent = False  # a lookup found an object missing: the plan only replies
    for index, (head, colon, body) in enumerate(clauses):
        open_ = not complete and index == len(clauses) - 1
        lookup = _LOOKUP.match(head)
        if body is None:
            return False
        if lookup:
            role, name = _ROLES[lookup.group(1)], head[lookup.end() :]
            if kind is not None and role not in REQUESTS[kind]:  # "take" in a question, "go to" in a move
                return False
            if not _lookup_ok(name, body, role, known, looked_up, named=colon, open_=open_):
                return False
            if not _next_named(name, pending, named, colon):
                return False
            if colon and pending and name == pending[0]:
                pending.pop(0)
            absent |= colon and name not in known
            looked_up |= {name} if role != "container" else set()  # many items may go into one container
        elif colon and head in LABELS:
            items = (body + " " if open_ and body.endswith(",") else body).split(", ")  # "red cube," goes on
            if head in labels or not _list_ok(items, [o for o in known if fits(LABELS[head], o)], open_):
                return False
            labels.add(head)
            if kind == "move all" or (kind == "move" and LABELS[head] in COLOURS):
                members |= {i for i in items if i in known and suits("item", i)}
        elif colon and head.startswith(("the ", _CLOSEST)):
            names = [o for o in known if _described(head, o)]
            if not (any(o.startswith(body) for o in names) if open_ else body in names):
                return False
    if complete and kind is not None and REQUESTS[kind]:  # a move looks up what it moves, a set all of it
        return bool(looked_up) and members <= looked_up and (absent or not pending)
    return True


def thought_forced(thought: str, known: frozenset[str]) -> str:
    """What the rules leave one way to write next in a thought being written: the next name of a list or a
    description that only one known object can fill (" red cube", ", green cube" where one cube is left to
    name), so that jump-forward decoding feeds it without asking the model. Like the decoder's other forced
    text, it stops before a space that starts a word the model has a choice of."""
    kind, rest = opening(thought)
    if kind == "refusal" and rest and rest.strip():  # the reason it began: one way to end it
        reasons = [f" {t}" for t in REFUSAL_THOUGHTS.values() if f" {t}".startswith(rest)]
        return reasons[0][len(rest) :] if len(reasons) == 1 else ""
    head, colon, body = _clauses(thought)[-1]
    if not colon or body is None or thought.endswith(" "):  # the model chose the next word's space
        return ""
    if head in LABELS:
        fitting = [o for o in sorted(known) if fits(LABELS[head], o)]
        if not body:
            return f" {fitting[0] if fitting else NONE}" if len(fitting) <= 1 else ""
        named = body.removesuffix(",").split(", ")
        left = [o for o in fitting if o not in named]
        if not set(named) <= set(fitting) or not left:
            return ""
        return f" {left[0]}" if body.endswith(",") and len(left) == 1 else "," if not body.endswith(",") else ""
    if not body and head.startswith(("the ", _CLOSEST)):
        names = [o for o in known if _described(head, o)]
        return f" {names[0]}" if len(names) == 1 else ""
    return ""


def _lookup_ok(
    name: str, body: str, role: str, known: frozenset[str], looked_up: set[str], named: bool, open_: bool
) -> bool:
    """A lookup names an object that can play its role and (but for a container) was not looked up
    before, then says where it is, or "none" for an object the robot does not know of (whatever the request
    wanted done with it)."""
    names = [
        n
        for n in (*(k for k in known if suits(role, k)), *(n for n in NAMEABLE if n not in known))
        if n not in looked_up
    ]
    if not named:
        return any(n.startswith(name) for n in names)
    if name not in names:
        return False
    if name in known:
        return not (body and NONE.startswith(body))
    return NONE.startswith(body) if open_ else body == NONE


def _list_ok(items: list[str], fitting: list[str], open_: bool) -> bool:
    """A list holds each fitting object once, all of them once it ends, and "none" only when none fits."""
    if not fitting:
        return NONE.startswith(items[0]) if open_ and len(items) == 1 else items == [NONE]
    *whole, last = items
    if len(set(whole)) < len(whole) or not set(whole) <= set(fitting):
        return False
    rest = [o for o in fitting if o not in whole]
    return any(o.startswith(last) for o in rest) if open_ else last in rest and len(rest) == 1


def _described(phrase: str, name: str) -> bool:
    """Can ``phrase`` ("the large bowl", "closest to the red cube") describe the object ``name``? Only its
    colour, shape and kind words are checked (sizes and distances are for the model to read)."""
    if phrase.startswith(_CLOSEST):
        return name != phrase[len(_CLOSEST) :]
    container = suits("container", name)
    for word in phrase.split()[1:]:
        if (word in COLOURS or word in SHAPES) and not fits(word, name):
            return False
        if (word == "container" and not container) or (word == "thing" and container):
            return False
    return True


REFUSAL_REPLIES = {thought: REASONS[kind] for kind, thought in REFUSAL_THOUGHTS.items()}  # a refusal's one reply


@dataclass(frozen=True)
class Progress:
    """Where a plan's steps so far have left the robot, against its thought's lookups. The steps of a
    thought that found all it looked up carry it out as a robot can: pick what the robot went to, carry it
    to the container its lookup leads into ("take red cube: table 1. into green bin: table 1."), or to any
    known container when its lookup leads into none of its own, place it there, and end once every item
    looked up is placed and the robot is at its target. Empty-handed, the robot goes only to an item still
    to move or a target still to reach (a model left free went back and forth between containers); once
    none is left, the steps may still move what the thought missed. A thought that did not find what it
    looked up only replies, and nothing moves; one that looked nothing up leaves the steps free (but for what
    its request kind rules out). A reply names no colour or shape the thought did not, and a thought that
    refuses for what is asked ("no skill of mine does that.") has one reply, its reason (the model had
    followed it with `answer(none)`)."""

    pairs: dict[str, str | None] = field(default_factory=dict)  # each item found: its own container, if any
    said: frozenset[str] = frozenset()  # the colours and shapes the thought named
    targets: frozenset[str] = frozenset()
    containers: tuple[str, ...] = ()  # every known container
    absent: bool = False  # a lookup said "none"
    at: str | None = None  # what the robot last went to
    held: str | None = None
    placed: frozenset[str] = frozenset()
    reply: str | None = None  # the one reply a refusal's thought allows
    request: str | None = None  # the kind of request the thought opened with (``REQUESTS``)
    count: int | None = None  # how many the thought's one list holds, where it has one list

    @classmethod
    def free(cls, thought: str) -> Progress:
        """A thought read without the known objects (a blind planner's): only its request kind and a
        refusal's reply are held."""
        kind, rest = opening(thought.strip())
        return cls(reply=REFUSAL_REPLIES.get((rest or "").strip()), request=kind)

    @classmethod
    def of(cls, thought: str, known: Iterable[str]) -> Progress:
        known = sorted(known)
        lookups, lists = [], []
        for head, colon, body in _clauses(thought):
            verb = _LOOKUP.match(head)
            if colon and head in LABELS:
                lists.append(body)
            elif verb:
                name = head[verb.end() :]
                lookups.append((_ROLES[verb.group(1)], name, name in known and body != NONE))
        found = [(role, name) for role, name, ok in lookups if ok]
        pairs = {}
        for i, (role, name) in enumerate(found):
            if role == "item":
                after = next(
                    ((r, n) for r, n in found[i + 1 :] if r != "target"), (None, None)
                )  # unless an item comes first
                pairs[name] = after[1] if after[0] == "container" else None
        targets = frozenset(name for role, name in found if role == "target")
        containers = tuple(n for n in known if suits("container", n))
        said = frozenset(_object_words(thought))
        absent = len(found) < len(lookups)
        free = cls.free(thought)
        count = None if len(lists) != 1 else 0 if lists[0] == NONE else len(lists[0].split(", "))
        return cls(pairs, said, targets, containers, absent, reply=free.reply, request=free.request, count=count)

    def _acts(self) -> bool:
        return bool(self.pairs or self.targets)

    def opens(self, skill: str) -> bool:
        """May a step of ``skill`` come now? A question or a refusal only replies, a move or a visit never
        does unless what it looked up is not there, and only a move picks and places."""
        roles = REQUESTS.get(self.request or "")
        if self.absent or self.reply or roles == ():
            return skill == "answer"
        if skill == "done":
            return self.may_end()
        if roles and skill in ("pick", "place"):
            return "item" in roles
        return skill != "answer" or not (self._acts() or roles)

    def candidates(self, skill: str, index: int) -> list[str] | None:
        """The objects (or the reply) argument ``index`` of ``skill`` may name now (None: any that suits it)."""
        if skill == "answer":
            return [self.reply] if self.reply else None
        if skill not in ("navigate", "pick", "place") or not (self._acts() or self.absent):
            return None
        if self.absent:
            return []
        own = self.pairs.get(self.held)
        boxes = ([own] if own else list(self.containers)) if self.held else []
        if skill == "navigate":
            if self.held:
                return boxes
            todo = [n for n in self.pairs if n not in self.placed]
            todo += sorted(self.targets) if self.at not in self.targets else []
            return todo or None
        if skill == "pick":
            return (
                [self.at]
                if self.held is None and self.at is not None and suits("item", self.at) and self.at not in self.placed
                else []
            )
        if self.at not in boxes:
            return []
        return [self.held] if index == 0 else [self.at]

    def may_say(self, reply: str) -> bool:
        """Does a reply (or its start) name only colours and shapes its thought named, where the thought named
        any, and is a number it gives the length of the thought's one list? The answer reads the evidence:
        "bins: green bin." then "green", not "black"; "bowls: orange bowl, green bowl." then "2", not "1"."""
        if self.count is not None and reply[:1].isdigit():
            return str(self.count).startswith(reply)
        return not self.said or _object_words(reply) <= self.said

    def may_end(self) -> bool:
        """May ``done()`` come now: every item looked up placed, nothing held, the robot at its target?"""
        if self.absent:
            return False
        carried = self.held is None and set(self.pairs) <= self.placed
        return carried and (not self.targets or self.at in self.targets)

    def after(self, step: Step) -> Progress:
        if step.skill == "navigate":
            return replace(self, at=step.args[0])
        if step.skill == "pick":
            return replace(self, held=step.args[0])
        if step.skill == "place":
            return replace(self, held=None, placed=self.placed | {step.args[0]})
        return self

    def allows(self, step: Step) -> bool:
        if not self.opens(step.skill) or (step.skill == "answer" and not self.may_say(step.args[0])):
            return False
        for index, arg in enumerate(step.args):
            names = self.candidates(step.skill, index)
            if names is not None and arg not in names:
                return False
        return True
