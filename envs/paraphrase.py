"""Everyday ways to say what the task templates say: other words for colours, shapes and verbs, other
sentence frames, politeness, a typo. Every choice comes from one of two disjoint pools: ``"varied"`` (what
training data may use) and ``"held_out"`` (what only evaluation uses), so that success on held-out
phrasings measures understanding rather than memory of the training words. ``"template"`` leaves an
instruction as the task wrote it."""

from __future__ import annotations

import re

import numpy as np

PHRASINGS = ("template", "varied", "held_out")

# a word of the templates -> (words training may use instead, words only evaluation uses). Widening the
# training pool from two words per entry to up to six did not carry over to the held-out words (plans with
# held-out phrasings succeeded 54.5% as often as with the templates' words before, 54.7% after; README).
WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "red": (("crimson", "cherry red", "ruby", "tomato red", "blood red", "rose red"), ("scarlet",)),
    "green": (("lime", "grass green", "jade", "olive green", "forest green", "mint"), ("emerald",)),
    "blue": (("navy", "sky blue", "cobalt", "sapphire", "royal blue", "ocean blue"), ("azure",)),
    "yellow": (("lemon", "golden", "mustard", "sunflower yellow", "banana yellow", "butter yellow"), ("canary",)),
    "purple": (("violet", "lilac", "lavender", "mauve", "grape", "amethyst"), ("plum",)),
    "orange": (("tangerine", "amber", "pumpkin", "carrot orange", "marigold", "bright orange"), ("apricot",)),
    "white": (("ivory", "snow white", "cream", "pearl", "chalk white", "pure white"), ("milky",)),
    "black": (("jet black", "coal black", "charcoal", "inky", "onyx", "pitch black"), ("ebony",)),
    "cube": (("block", "box", "cuboid", "square block", "dice", "chunk"), ("brick",)),
    "sphere": (("ball", "globe", "marble", "round ball", "bead", "bauble"), ("orb",)),
    "cylinder": (("can", "tube", "tin", "pipe", "column", "roller"), ("canister",)),
    "bowl": (("dish", "basin", "salad bowl", "serving dish", "tureen", "mixing bowl"), ("pot",)),
    "bin": (("bucket", "basket", "tub", "hamper", "trash bin", "wastebasket"), ("crate",)),
    "thing": (("item", "object", "article", "toy", "one"), ("piece",)),
    "put": (("place", "set", "drop", "pop", "stash", "tuck"), ("stick",)),
    "move": (("carry", "bring", "transfer", "shift", "take"), ("haul",)),
    "go to": (("walk to", "drive to", "roll to", "head over to", "get over to"), ("make your way to",)),
    "navigate to": (("head to", "drive over to", "proceed to", "go over to"), ("travel to",)),
    "find": (("look for", "locate", "search for", "seek out", "spot"), ("track down",)),
    "closest": (("nearest",), ("next",)),
}
FRAMES: tuple[tuple[str, ...], tuple[str, ...]] = (
    (
        "please {}.",
        "could you {}?",
        "{}, thanks.",
        "i need you to {}.",
        "can you {} please?",
        "{} now.",
        "ok robot, {}.",
        "go ahead and {}.",
        "i would like you to {}.",
        "{} please.",
        "right, {}.",
        "will you {}?",
    ),
    ("hey robot, {}.", "would you kindly {}?", "{} when you get a chance."),
)
SWAP = 0.6  # chance that each replaceable word is replaced
TYPO = 0.3  # chance of one typo (two letters swapped in one word of five letters or more)
_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True)) + r")\b")


def paraphrase(instruction: str, phrasing: str, rng: np.random.Generator) -> str:
    """``instruction`` reworded from the ``phrasing`` pool (``PHRASINGS``), the same for the same draws."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}; choose one of {', '.join(PHRASINGS)}")
    if phrasing == "template":
        return instruction
    pool = phrasing == "held_out"

    def reword(match: re.Match) -> str:
        options = WORDS[match.group(1)][pool]
        return str(options[int(rng.integers(len(options)))]) if rng.random() < SWAP else match.group(1)

    text = _PATTERN.sub(reword, instruction.rstrip(".?! "))
    frames = FRAMES[pool]
    text = frames[int(rng.integers(len(frames)))].format(text)
    if rng.random() < TYPO:
        text = _typo(text, rng)
    return text


def _typo(text: str, rng: np.random.Generator) -> str:
    """Two neighbouring letters of one longer word swapped, as a hurried typist does."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    j = int(rng.integers(1, len(words[i]) - 2))
    word = words[i]
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)
