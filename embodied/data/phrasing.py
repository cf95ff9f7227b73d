"""Every phrasing the datasets speak in, and what the compositional split holds out.

Each list starts with the phrasing the simulated tasks use. The last phrasing of every list is never
used in training: the compositional split asks with it, in scenes that show colour-shape combinations no
training scene shows.
"""

from __future__ import annotations

import numpy as np

from envs.tasks import QUESTIONS, ObjectNav, PickPlace

HELD_OUT_COMBOS = frozenset({("red", "sphere"), ("blue", "cube"), ("green", "cylinder"), ("yellow", "bowl"), ("purple", "bin")})

QUESTION_PHRASINGS: dict[str, tuple[str, ...]] = {
    "colour": (QUESTIONS["colour"], "which colour is the {}?", "tell me the colour of the {}.", "the {} has which colour?"),
    "shape": (QUESTIONS["shape"], "which shape does the {} object have?", "what kind of thing is the {} object?", "name the shape of the {} object."),
    "size": (QUESTIONS["size"], "is the {} small or large?", "how big is the {}?", "tell me the size of the {}."),
    "count_colour": (QUESTIONS["count_colour"], "count the {} objects.", "how many objects are {}?", "what is the number of {} objects?"),
    "count_shape": (QUESTIONS["count_shape"], "count the {}s.", "how many {}s do you see?", "what is the number of {}s?"),
    "left_of": (QUESTIONS["left_of"], "is the {} to the left of the {}?", "does the {} sit left of the {}?", "from here, is the {} on the left of the {}?"),
    "closest": (QUESTIONS["closest"], "which object is nearest to the {}?", "what is next to the {}?", "name the object closest to the {}."),
    "exists": (QUESTIONS["exists"], "do you see a {}?", "is a {} on the table?", "can you find a {} here?"),
}
INSTRUCTION_PHRASINGS: dict[str, tuple[str, ...]] = {
    "object_nav": (*ObjectNav.templates, "approach the {}", "head over to the {}"),
    "pick_place": (*PickPlace.templates, "take the {} and put it in the {}", "drop the {} into the {}"),
    "rearrange": ("put {}", "please put {}", "first put {}"),  # {}: "the a in the b, then the c in the d"
}
DESCRIPTIONS = (
    "a {size} {colour} {shape}",
    "a {colour} {shape}, {size}",
    "a {size} {shape} that is {colour}",
    "a {colour} {shape} standing on a table",
    "a {shape} in {colour}, {size} size",
)
CAPTIONS = ("from left to right: {}.", "on the table, left to right: {}.", "the table holds {}, from left to right.", "i see {}, left to right.")
CLASS_PROMPT = "a {colour} {shape}"  # zero-shot 3D classification asks with this one


def choose(phrasings: tuple[str, ...], rng: np.random.Generator, held_out: bool) -> tuple[str, bool]:
    """A phrasing, and whether it is the held-out one. Training (``held_out`` False) never gets the last;
    the compositional split gets it half the time."""
    if held_out and rng.random() < 0.5:
        return phrasings[-1], True
    return phrasings[int(rng.integers(len(phrasings) - 1))], False


def listing(names: list[str]) -> str:
    """"a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
