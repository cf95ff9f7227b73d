"""Plan-constrained decoding: every token the model emits keeps the text a valid prefix of the plan
grammar, and a plan cut off by the token limit is repaired, so the output always parses.

At each step the candidates are the model's top-k tokens; when none of them is legal, the first token of
each grammar-legal continuation (a skill name, an object name, ``)``, a newline...) is scored instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

import torch
from transformers import DynamicCache

from envs.plan import PlanError, normalize_arg, parse_plan, parse_step
from envs.skills import SKILLS

# Tokens a planner may decode: the longest plan in the dataset, a three-object rearrangement with its
# thought, is 188 SmolLM2 tokens, and a plan cut off by the limit ends early (closed with done()).
PLAN_TOKENS = 256
THOUGHT = "thought:"
THOUGHT_CHARS = re.compile(r"[a-z0-9 ,.;:'?!\-]*")
ARG_PREFIX = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)* ?)?")  # words, single spaces; linear to match
MAX_THOUGHT_CHARS = 240
TOP_K = 32
FREE_CHARS = tuple("abcdefghijklmnopqrstuvwxyz0123456789 ")


class PlanConstraint:
    """``temperature`` > 0 samples instead of taking the best token: candidates are ranked by their logits
    plus Gumbel noise (the Gumbel-max trick), so the first legal one is a draw from the model's
    distribution restricted to legal tokens; ``seed`` makes the draws repeatable."""

    def __init__(self, tokenizer, objects=None, max_thought_chars: int = MAX_THOUGHT_CHARS, temperature: float = 0.0, seed: int | None = None):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.tokenizer = tokenizer
        self.objects = None if objects is None else sorted({normalize_arg(o) for o in objects})
        self.max_thought_chars = max_thought_chars
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._piece = lru_cache(maxsize=None)(self._decode_one)

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)

    # -- the grammar, one prefix at a time -----------------------------------------------------------

    def valid(self, text: str) -> bool:
        """Is ``text`` a prefix of some plan in the grammar?"""
        lines = text.split("\n")
        if len(lines) == 1:
            return self._thought_ok(lines[0], complete=False)
        if not self._thought_ok(lines[0], complete=True):
            return False
        for number, line in enumerate(lines[1:-1], 1):
            step = self._full_step(line, number)
            if step is None or step.terminal:
                return False  # a broken line, or a line after the terminal step
        return self._step_prefix_ok(lines[-1], len(lines) - 1)

    def complete(self, text: str) -> bool:
        """Does ``text`` end with its terminal step (nothing more may follow)?"""
        if not text.endswith(")"):
            return False
        try:
            parse_plan(text, self.objects)
        except PlanError:
            return False
        return True

    def _thought_ok(self, line: str, complete: bool) -> bool:
        if len(line) < len(THOUGHT):
            return not complete and THOUGHT.startswith(line)
        rest = line[len(THOUGHT) :]
        return line.startswith(THOUGHT) and len(line) <= self.max_thought_chars and THOUGHT_CHARS.fullmatch(rest) is not None

    def _full_step(self, line: str, number: int):
        prefix = f"{number}. "
        if not line.startswith(prefix):
            return None
        try:
            return parse_step(line[len(prefix) :], objects=self.objects)
        except PlanError:
            return None

    def _step_prefix_ok(self, line: str, number: int) -> bool:
        prefix = f"{number}. "
        if len(line) <= len(prefix):
            return prefix.startswith(line)
        if not line.startswith(prefix):
            return False
        call = line[len(prefix) :]
        if "(" not in call:
            return any(name.startswith(call) for name in SKILLS)
        name, args = call.split("(", 1)
        if name not in SKILLS:
            return False
        if args.endswith(")"):
            return self._full_step(line, number) is not None
        if ")" in args:
            return False
        kinds = SKILLS[name].args
        parts = args.split(",")
        if len(parts) > max(1, len(kinds)) or (not kinds and args):
            return False
        for i, (part, kind) in enumerate(zip(parts, kinds)):
            part = part[1:] if i and part.startswith(" ") else part
            last = i == len(parts) - 1
            if not self._arg_ok(part, kind, partial=last):
                return False
        return True

    def _arg_ok(self, arg: str, kind: str, partial: bool) -> bool:
        if ARG_PREFIX.fullmatch(arg) is None:
            return False
        if kind != "object" or self.objects is None:
            return partial or bool(arg.strip())
        return any(o.startswith(arg) for o in self.objects) if partial else arg in self.objects

    def continuations(self, text: str) -> list[str]:
        """Short strings that keep ``text`` legal: the fallback when no top-k token does."""
        line = text.split("\n")[-1]
        number = text.count("\n")
        prefix = f"{number}. "
        if number == 0:
            options = [THOUGHT[len(line) :]] if len(line) < len(THOUGHT) else ["\n", *FREE_CHARS]
        elif len(line) < len(prefix):
            options = [prefix[len(line) :]]
        elif "(" not in line:
            call = line[len(prefix) :]
            options = [name[len(call) :] + "(" for name in SKILLS if name.startswith(call)]
        elif line.endswith(")"):
            options = ["\n"]
        else:
            partial = line.split("(", 1)[1].split(",")[-1].lstrip()
            names = [o[len(partial) :] for o in self.objects or [] if o.startswith(partial) and o != partial]
            options = [*names, ")", ", ", *FREE_CHARS]
        return [o for o in options if self.valid(text + o)]

    # -- choosing the next token ---------------------------------------------------------------------

    def choose(self, text: str, logits: torch.Tensor) -> int:
        """The best-scoring (or, sampling, the first drawn) token that keeps ``text`` legal."""
        if self.temperature > 0:
            uniform = torch.rand(logits.shape, generator=self.generator).clamp_(1e-10, 1.0)
            logits = logits / self.temperature - torch.log(-torch.log(uniform))
        for token in logits.topk(TOP_K).indices.tolist():
            if self.valid(text + self._piece(token)):
                return token
        firsts = []
        for option in self.continuations(text):
            ids = self.tokenizer(option, add_special_tokens=False).input_ids
            # the first token of a legal string may be legal alone, or only with what follows it
            firsts += [ids[0]] if self.valid(text + self._piece(ids[0])) else []
        if not firsts:
            return -1
        return max(firsts, key=lambda t: float(logits[t]))

    def piece(self, token: int) -> str:
        return self._piece(token)


def repair_plan(text: str, objects=None) -> str:
    """The longest legal start of ``text``, closed with ``done()`` when it lacks a terminal step."""
    lines = text.split("\n")
    first = lines[0] if lines[0].startswith(THOUGHT) else THOUGHT
    thought = " ".join(first[len(THOUGHT) :].split())
    kept = [f"{THOUGHT} {thought}".rstrip()]
    for number, line in enumerate(lines[1:], 1):
        try:
            step = parse_step(line[len(f"{number}. ") :], objects=objects) if line.startswith(f"{number}. ") else None
        except PlanError:
            step = None
        if step is None:
            break
        kept.append(f"{number}. {step}")
        if step.terminal:
            return "\n".join(kept)
    kept.append(f"{len(kept)}. done()")
    return "\n".join(kept)


class DecodingInterrupted(RuntimeError):
    """``decode()`` was asked to stop (its ``stop`` returned true) before the replies were finished."""


@torch.no_grad()
def decode(
    llm,
    tokenizer,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    constraints: list,
    max_new_tokens: int,
    stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Greedy (or constrained) replies to a left-padded batch of prompt embeddings, sharing one KV cache; a
    finished reply leaves the batch, so the others decode at its cost no longer. ``stop`` (a callable such
    as ``threading.Event().is_set``) is asked before the prompt and before every token: once it returns
    true, decoding ends with ``DecodingInterrupted`` within one forward pass (a node shutting down)."""
    if stop is not None and stop():
        raise DecodingInterrupted("decoding stopped before it began")
    device = embeds.device
    batch = len(embeds)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -1:]
    cache = DynamicCache()
    out = llm(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    eos = tokenizer.eos_token_id
    replies: list[list[int]] = [[] for _ in range(batch)]
    texts = [""] * batch
    active = list(range(batch))  # rows of the original batch still decoding, in cache order
    for step in range(max_new_tokens):
        if stop is not None and stop():
            raise DecodingInterrupted(f"decoding stopped after {step} of at most {max_new_tokens} tokens")
        logits = out.logits[:, -1].float()
        tokens, keep = [], []
        for slot, row in enumerate(active):
            rule = constraints[row]
            token = rule.choose(texts[row], logits[slot]) if rule else int(logits[slot].argmax())
            if token in (-1, eos):
                continue
            replies[row].append(token)
            if rule:
                texts[row] += rule.piece(token)
                if rule.complete(texts[row]):
                    continue
            tokens.append(token)
            keep.append(slot)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions = mask[index], positions[index]
            active = [active[slot] for slot in keep]
        mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long, device=device)], dim=1)
        positions = positions + 1
        out = llm(
            input_ids=torch.tensor(tokens, device=device)[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]
