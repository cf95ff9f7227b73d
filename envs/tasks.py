"""Tasks: what an episode asks for, its language instruction, and how success is measured.

Each task samples its goal from the scene with the episode's generator, so a seed fixes the episode.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence

import numpy as np

from envs.backend import WorldState
from envs.navmap import NavMap
from envs.scene import COLOURS, CONTAINER_WALL_HEIGHT, SHAPES, ObjectSpec, SceneConfig, SceneSpec

NAV_SUCCESS_DISTANCE = 1.0  # m from the base centre to the object centre


class TaskUnavailable(Exception):
    """The scene cannot host this task (say, a rearrangement without a container)."""


def inside(obj: np.ndarray, container: ObjectSpec, container_pos: np.ndarray) -> bool:
    """Is an object centre within a container's walls, below its rim?"""
    inner = container.half - 0.01
    dx, dy = np.abs(obj[:2] - container_pos[:2])
    within = np.hypot(dx, dy) <= inner if container.shape == "bowl" else max(dx, dy) <= inner
    return bool(within and container_pos[2] - 0.01 < obj[2] < container_pos[2] + CONTAINER_WALL_HEIGHT + 0.03)


def final_answer(reply: str) -> str:
    """The answer a reply ends with: what follows its last ", so " (``reasoned``), else all of it."""
    return reply.rsplit(REASONED, 1)[-1]


def same_answer(reply: str | None, answer: str) -> bool:
    """Does a reply's final answer say ``answer``, normalised? (Exact match, for VQA and embodied QA.)"""
    return normalize_answer(final_answer(reply or "")) == normalize_answer(answer)


def normalize_answer(text: str | None) -> str:
    """Lower-case words without articles or punctuation, number words as digits."""
    if text is None:
        return ""
    numbers = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
    words = "".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split()
    return " ".join(numbers.get(w, w) for w in words if w not in {"a", "an", "the"})


class Task(abc.ABC):
    name: str
    max_steps: int
    scene_config = SceneConfig()
    commands = True  # the instruction asks for something done (it may be reworded: envs.paraphrase), not a question

    def __init__(self, scene: SceneSpec, rng: np.random.Generator):
        self.scene = scene
        self.instruction = ""
        self.start = self.start_pose(rng) or scene.robot_start
        self.sample(rng)

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> None:
        """Choose the goal and the instruction; raise TaskUnavailable when the scene cannot host it."""

    @abc.abstractmethod
    def evaluate(self, state: WorldState, answer: str | None) -> dict:
        """Metrics of the episode as it stands; always has a boolean "success"."""

    def start_pose(self, rng: np.random.Generator) -> tuple[float, float, float] | None:
        """Override the scene's robot start pose; None keeps it."""
        return None

    def goal(self) -> dict:
        return {}

    def items(self) -> list[ObjectSpec]:
        return [o for o in self.scene.objects if not o.is_container]

    def containers(self) -> list[ObjectSpec]:
        return [o for o in self.scene.objects if o.is_container]


def draw(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


class ObjectNav(Task):
    """Go to a named object; success within ``NAV_SUCCESS_DISTANCE`` of it at the end, with SPL."""

    name = "object_nav"
    max_steps = 300
    templates = ("go to the {}", "find the {}", "navigate to the {}", "move next to the {}")

    def sample(self, rng):
        self.target = draw(rng, self.scene.objects)
        self.instruction = draw(rng, self.templates).format(self.target.name)
        start = self.start
        path = NavMap(self.scene).plan(start[:2], (self.target.x, self.target.y), 0.0, NAV_SUCCESS_DISTANCE - 0.05)
        if path is None:
            raise TaskUnavailable(f"{self.target.name} cannot be reached")
        self.shortest_path = NavMap.path_length(start[:2], path)

    def goal(self):
        return {"target": self.target.name, "shortest_path": self.shortest_path}

    def evaluate(self, state, answer):
        robot = state.robot
        distance = float(np.hypot(robot.x - self.target.x, robot.y - self.target.y))
        return {"success": distance <= NAV_SUCCESS_DISTANCE, "distance_to_goal": distance}


class PickPlace(Task):
    """Put one item into one container."""

    name = "pick_place"
    max_steps = 700
    templates = ("put the {} in the {}", "place the {} into the {}", "move the {} to the {}")

    def sample(self, rng):
        items, containers = self.items(), self.containers()
        if not items or not containers:
            raise TaskUnavailable("needs an item and a container")
        self.moves = [(draw(rng, items), draw(rng, containers))]
        self.instruction = draw(rng, self.templates).format(self.moves[0][0].name, self.moves[0][1].name)

    def goal(self):
        return {"moves": [[item.name, box.name] for item, box in self.moves]}

    def evaluate(self, state, answer):
        done = [
            inside(state.objects[item.name], box, state.objects[box.name]) and state.robot.holding != item.name
            for item, box in self.moves
        ]
        return {"success": all(done), "progress": sum(done) / len(done)}


def pack(items: Sequence[ObjectSpec], containers: Sequence[ObjectSpec], rng: np.random.Generator) -> list[tuple[ObjectSpec, ObjectSpec]]:
    """Moves of ``items`` in turn into containers drawn among those still with room (their free inner width
    used up side by side); an item no container has room for is left out."""
    room = {box.name: room_in(box) for box in containers}
    moves = []
    for item in items:
        fits = [box for box in containers if room[box.name] >= width_of(item)]
        if fits:
            box = draw(rng, fits)
            room[box.name] -= width_of(item)
            moves.append((item, box))
    return moves


def room_in(container: ObjectSpec) -> float:
    """A container's free inner width (m), which items placed in it use up side by side."""
    return 2 * (container.half - 0.02)


def width_of(item: ObjectSpec) -> float:
    """The width an item takes up in a container, a margin included."""
    return 2 * item.half + 0.015


class Rearrange(PickPlace):
    """Two to four pick-and-place moves in one instruction, in order."""

    name = "rearrange"
    max_steps = 2400
    scene_config = SceneConfig(min_objects=4, min_containers=2)

    def sample(self, rng):
        items, containers = list(self.items()), self.containers()
        if len(items) < 2 or not containers:
            raise TaskUnavailable("needs two items and a container")
        steps = int(rng.integers(2, min(4, len(items)) + 1))
        self.moves = pack(rng.permutation(items)[:steps], containers, rng)
        if len(self.moves) < 2:
            raise TaskUnavailable("the containers cannot take two items")
        parts = [f"the {item.name} in the {box.name}" for item, box in self.moves]
        self.instruction = "put " + ", then ".join(parts)


# What is nearest an object, as questions and references ask for it and as a plan's thought resolves it.
CLOSEST_TO = "closest to the {}"
# Question form -> how the EQA task phrases it (the data generator adds more phrasings of each form).
QUESTIONS = {
    "colour": "what colour is the {}?",
    "shape": "what shape is the {} object?",
    "size": "what size is the {}?",
    "count_colour": "how many {} objects are there?",
    "count_shape": "how many {}s are there?",
    "left_of": "is the {} left of the {}?",
    "closest": f"what is {CLOSEST_TO}?",
    "exists": "is there a {}?",
}
QUESTION_TYPES = ("attribute", "count", "spatial", "existence")


def ask(question_type: str, scene: SceneSpec, yaw: float, rng: np.random.Generator) -> tuple[str, tuple[str, ...], str]:
    """A question about ``scene`` as seen facing ``yaw``: its form (a key of ``QUESTIONS``), the words
    that fill the form, and the answer. Raises TaskUnavailable when no unambiguous question exists."""
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {question_type!r}; choose one of {', '.join(QUESTION_TYPES)}")
    return _ASK[question_type](scene, yaw, rng)


def _ask_attribute(scene, yaw, rng):
    objects = scene.objects
    obj = draw(rng, objects)
    same_shape = [o for o in objects if o.shape == obj.shape]
    same_colour = [o for o in objects if o.colour == obj.colour]
    if len(same_shape) == 1 and rng.random() < 0.5:
        return "colour", (obj.shape,), obj.colour
    if len(same_colour) == 1 and rng.random() < 0.5:
        return "shape", (obj.colour,), obj.shape
    return "size", (obj.name,), obj.size


def _ask_count(scene, yaw, rng):
    objects = scene.objects
    if rng.random() < 0.5:
        colour = draw(rng, sorted({o.colour for o in objects}))
        return "count_colour", (colour,), str(sum(o.colour == colour for o in objects))
    shape = draw(rng, SHAPES)
    return "count_shape", (shape,), str(sum(o.shape == shape for o in objects))


def _ask_spatial(scene, yaw, rng):
    """Left of (as seen facing ``yaw``) or closest to; only unambiguous pairs."""
    objects = scene.objects
    left = np.array([-np.sin(yaw), np.cos(yaw)])
    for i, j in rng.permutation([(i, j) for i in range(len(objects)) for j in range(len(objects)) if i != j]):
        a, b = objects[i], objects[j]
        offset = float(left @ np.array([a.x - b.x, a.y - b.y]))
        if rng.random() < 0.5 and abs(offset) > 0.06:
            return "left_of", (a.name, b.name), "yes" if offset > 0 else "no"
        others = sorted((np.hypot(o.x - a.x, o.y - a.y), o.name) for o in objects if o is not a)
        if len(others) == 1 or others[1][0] - others[0][0] > 0.05:
            return "closest", (a.name,), others[0][1]
    raise TaskUnavailable("no unambiguous spatial question")


def _ask_existence(scene, yaw, rng):
    if rng.random() < 0.5:
        return "exists", (draw(rng, scene.objects).name,), "yes"
    return "exists", (draw(rng, absent_names(scene)),), "no"


def absent_names(scene: SceneSpec, shapes: Sequence[str] = SHAPES) -> list[str]:
    """The names ("blue cube") of every colour with each of ``shapes`` that ``scene`` does not hold."""
    present = {(o.colour, o.shape) for o in scene.objects}
    return [f"{c} {s}" for c in COLOURS for s in shapes if (c, s) not in present]


_ASK = {"attribute": _ask_attribute, "count": _ask_count, "spatial": _ask_spatial, "existence": _ask_existence}

# The question forms whose answer is read off a short list of objects (attribute, count, existence; the
# spatial ones compare places instead), and what joins that list to the answer.
_LISTED = frozenset({"colour", "shape", "count_colour", "count_shape", "exists"})
REASONED = ", so "


def looked_for(form: str, words: Sequence[str]) -> tuple[str, ...]:
    """The shape or colour word whose objects a reply to a question of ``form`` lists first."""
    return (words[0].split()[-1],) if form in _LISTED else ()  # "exists": the shape of the name asked about


def evidence_heading(word: str) -> str:
    """The heading of an evidence list for a shape or colour word: "cubes", "red things"."""
    return f"{word}s" if word in SHAPES else f"{word} things"


def nearest_first(objects: Sequence[ObjectSpec], origin: Sequence[float]) -> list[ObjectSpec]:
    """The order a thought lists objects in: the order the model's object tokens come in."""
    return sorted(objects, key=lambda o: float(np.hypot(o.x - origin[0], o.y - origin[1])))


def evidence(words: Sequence[str], scene: SceneSpec, origin: Sequence[float]) -> str:
    """The check a reply reasons from, before it answers or acts: per shape or colour word, the scene's
    objects it fits, nearest ``origin`` first (the order the model's object tokens come in), e.g.
    "cubes: green cube, red cube; red things: red cube" or "bins: none". A small model that copies the
    matching names before answering counts and checks presence far better than one that must answer at
    once (the chain of thought PaLM-E plans with)."""
    near = nearest_first(scene.objects, origin)
    parts = []
    for word in dict.fromkeys(words):
        fits = [o.name for o in near if word in (o.shape, o.colour)]
        parts.append(f"{evidence_heading(word)}: {', '.join(fits) or 'none'}")
    return "; ".join(parts)


def reasoned(evidence: str, answer: str) -> str:
    """A reply that states its evidence, then the answer (``final_answer`` reads it back)."""
    return f"{evidence}{REASONED}{answer}" if evidence else answer


class EmbodiedQA(Task):
    """Answer a question about the one table in front of the robot: attribute, count, spatial relation,
    existence."""

    name = "eqa"
    max_steps = 200
    commands = False
    scene_config = SceneConfig(min_tables=1, max_tables=1)
    question_types = QUESTION_TYPES

    def start_pose(self, rng):
        table = self.scene.tables[0]
        distance, bearing = rng.uniform(1.3, 1.8), rng.uniform(-np.pi, np.pi)
        for _ in range(100):
            x, y = table.x + distance * np.cos(bearing), table.y + distance * np.sin(bearing)
            if max(abs(x), abs(y)) < self.scene.room_half - 0.4:
                return float(x), float(y), float(bearing + np.pi)
            bearing = rng.uniform(-np.pi, np.pi)
        return None

    def sample(self, rng):
        self.question_type = draw(rng, self.question_types)
        form, words, self.answer = ask(self.question_type, self.scene, self.start[2], rng)
        self.question = QUESTIONS[form].format(*words)
        self.instruction = self.question
        self.checks = looked_for(form, words)
        self.refers = [(CLOSEST_TO.format(words[0]), self.answer)] if form == "closest" else []

    def goal(self):
        refers = {"refers": [list(r) for r in self.refers]} if self.refers else {}
        return {"question_type": self.question_type, "answer": self.answer, "checks": list(self.checks), **refers}

    def evaluate(self, state, answer):
        return {"success": same_answer(answer, self.answer), "answered": answer is not None}


def parse_instruction(text: str, scene: SceneSpec) -> dict:
    """The goal of a templated navigation or rearrangement instruction, in ``Task.goal()``'s shape: how a
    planner with privileged state (the oracle behind ROS 2) reads an instruction it did not sample."""
    text = " ".join(text.lower().strip().rstrip(".").split())
    names = "|".join(re.escape(n) for n in sorted(scene.object_names, key=len, reverse=True))
    for template in ObjectNav.templates:
        match = re.fullmatch(re.escape(template).replace(r"\{\}", f"({names})"), text)
        if match:
            return {"target": match.group(1)}
    moves = []
    first, *rest = text.split(", then ")
    for i, part in enumerate([first, *rest]):
        templates = PickPlace.templates if i == 0 else ("the {} in the {}",)
        for template in templates:
            match = re.fullmatch(re.escape(template).replace(r"\{\}", f"({names})"), part)
            if match:
                moves.append(list(match.groups()))
                break
        else:
            raise ValueError(f"cannot read the instruction {text!r} (part {part!r}) against this scene's objects")
    return {"moves": moves}


TEMPLATED_TASKS: tuple[type[Task], ...] = (ObjectNav, PickPlace, Rearrange, EmbodiedQA)
