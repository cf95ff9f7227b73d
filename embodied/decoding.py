"""Plan-constrained decoding: every token the model emits keeps the text a valid prefix of the plan
grammar, and a plan cut off by the token limit is repaired, so the output always parses.

At each step the candidates are the model's top-k tokens; when none of them is legal, the first token of
each grammar-legal continuation (a skill name, an object name, ``)``, a newline...) is scored instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from os.path import commonprefix

import torch
from transformers import DynamicCache

from embodied.backbone import causal_lm
from embodied.plan_rules import Progress, named_objects, thought_fits, thought_forced
from envs.plan import PlanError, normalize_arg, parse_plan, parse_step
from envs.skills import OBJECT_KINDS, SKILLS, suits

# Tokens a planner may decode: the longest plan in the dataset, a rearrangement whose thought lists the
# objects of four shapes and looks up five (328 characters), is 237 SmolLM2 tokens, and a plan cut off by
# the limit ends early (closed with done()).
PLAN_TOKENS = 320
THOUGHT = "thought:"
THOUGHT_CHARS = re.compile(r"[a-z0-9 ,.;:'?!\-]*")
ARG_PREFIX = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)* ?)?")  # words, single spaces; linear to match
MAX_THOUGHT_CHARS = 416
TOP_K = 32
FREE_CHARS = tuple("abcdefghijklmnopqrstuvwxyz0123456789 ")


class PlanConstraint:
    """``temperature`` > 0 samples instead of taking the best token: candidates are ranked by their logits
    plus Gumbel noise (the Gumbel-max trick), so the first legal one is a draw from the model's
    distribution restricted to legal tokens; ``seed`` makes the draws repeatable. With ``objects``, the
    ``instruction`` (optional) names objects the thought must look up in its order (``named_objects``)."""

    def __init__(
        self,
        tokenizer,
        objects=None,
        max_thought_chars: int = MAX_THOUGHT_CHARS,
        temperature: float = 0.0,
        seed: int | None = None,
        instruction: str = "",
    ):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.tokenizer = tokenizer
        self.objects = None if objects is None else sorted({normalize_arg(o) for o in objects})
        self._known = frozenset(self.objects or ())
        self._named = named_objects(instruction, self._known)
        self._fitting = {kind: [o for o in self.objects or () if suits(kind, o)] for kind in OBJECT_KINDS}
        self.max_thought_chars = max_thought_chars
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._piece = lru_cache(maxsize=None)(self._decode_one)
        self._progress = lru_cache(maxsize=256)(self._progress_after)

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)

    # -- the grammar, one prefix at a time -----------------------------------------------------------

    def valid(self, text: str) -> bool:
        """Is ``text`` a prefix of some plan in the grammar, keeping the plan rules?"""
        lines = text.split("\n")
        if len(lines) == 1:
            return self._thought_ok(lines[0], complete=False)
        progress = self._progress("\n".join(lines[:-1]))
        return progress is not None and self._step_prefix_ok(lines[-1], len(lines) - 1, progress)

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
        return (
            line.startswith(THOUGHT) and len(line) <= self.max_thought_chars and THOUGHT_CHARS.fullmatch(rest) is not None
            and (self.objects is None or thought_fits(rest, self._known, complete, self._named))
        )  # fmt: skip

    def _progress_after(self, lines: str) -> Progress | None:
        """Where the finished ``lines`` (the thought and whole steps) leave the robot, or None when one of
        them breaks the grammar or its rules (a line after the terminal step, a step its thought rules out)."""
        thought, *steps = lines.split("\n")
        if not self._thought_ok(thought, complete=True):
            return None
        said = thought[len(THOUGHT) :]
        progress = Progress.free(said) if self.objects is None else Progress.of(said, self._known)
        for number, line in enumerate(steps, 1):
            step = self._full_step(line, number)
            if step is None or step.terminal or not progress.allows(step):
                return None
            progress = progress.after(step)
        return progress

    def _full_step(self, line: str, number: int):
        prefix = f"{number}. "
        if not line.startswith(prefix):
            return None
        try:
            return parse_step(line[len(prefix) :], objects=self.objects)
        except PlanError:
            return None

    def _names(self, progress: Progress, skill: str, index: int) -> list[str] | None:
        """The objects (or the reply) argument ``index`` of ``skill`` may name after ``progress`` (None: any)."""
        kind = SKILLS[skill].args[index]
        names = progress.candidates(skill, index)
        if kind not in OBJECT_KINDS or self.objects is None:
            return names if kind == "text" else None
        return self._fitting[kind] if names is None else names

    def _callable(self, progress: Progress) -> list[str]:
        """Skills the plan so far leaves open whose object arguments a known object can fill now (no place()
        where no container is known, or before anything is held)."""
        return [
            skill for skill, spec in SKILLS.items()
            if progress.opens(skill) and all(self._names(progress, skill, i) != [] for i in range(len(spec.args)))
        ]  # fmt: skip

    def _step_prefix_ok(self, line: str, number: int, progress: Progress) -> bool:
        prefix = f"{number}. "
        if len(line) <= len(prefix):
            return prefix.startswith(line)
        if not line.startswith(prefix):
            return False
        call = line[len(prefix) :]
        if "(" not in call:
            return any(name.startswith(call) for name in self._callable(progress))
        name, args = call.split("(", 1)
        if name not in self._callable(progress):
            return False
        if args.endswith(")"):
            step = self._full_step(line, number)
            return step is not None and progress.allows(step)
        if ")" in args:
            return False
        kinds = SKILLS[name].args
        parts = args.split(",")
        if len(parts) > max(1, len(kinds)) or (not kinds and args):
            return False
        for i, part in enumerate(parts[: len(kinds)]):
            part = part[1:] if i and part.startswith(" ") else part
            if not self._arg_ok(part, self._names(progress, name, i), partial=i == len(parts) - 1):
                return False
            if kinds[i] == "text" and not progress.may_say(part):
                return False
        return True

    @staticmethod
    def _arg_ok(arg: str, names: list[str] | None, partial: bool) -> bool:
        if ARG_PREFIX.fullmatch(arg) is None:
            return False
        if names is None:
            return partial or bool(arg.strip())
        return any(o.startswith(arg) for o in names) if partial else arg in names

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

    def forced(self, text: str) -> str:
        """What every legal continuation of ``text`` begins with (``1.`` after a newline, ``(`` after a
        skill's name, the rest of the one object a prefix names, ``)``...): jump-forward decoding feeds it
        without asking the model. It stops before a space that starts the next word, so it tokenizes as
        the plans the model was tuned on (``1.`` then `` navigate``, ``,`` then `` green``)."""
        out = ""
        while not self.complete(text + out) and (more := self._forced_piece(text + out)):
            out += more
        return out

    def _forced_piece(self, text: str) -> str:
        line = text.split("\n")[-1]
        number = text.count("\n")
        if number == 0:
            if len(line) < len(THOUGHT):
                return THOUGHT[len(line) :]
            piece = "" if self.objects is None else thought_forced(line[len(THOUGHT) :], self._known)
            return piece if piece and self.valid(text + piece) else ""
        prefix = f"{number}. "
        if len(line) < len(prefix):
            return prefix[len(line) : -1]  # "N." (its space comes with the skill's name)
        progress = self._progress(text[: len(text) - len(line) - 1])
        call = line[len(prefix) :]
        if progress is None:
            return ""
        if "(" not in call:
            names = [name for name in self._callable(progress) if name.startswith(call)]
            return names[0][len(call) :] + "(" if call and len(names) == 1 else ""
        name, args = call.split("(", 1)
        kinds = SKILLS[name].args
        if args.endswith(")"):
            return "" if SKILLS[name].terminal else "\n"
        if not kinds:
            return ")"
        parts = args.split(",")
        index, part = len(parts) - 1, parts[-1]
        names = self._names(progress, name, index)
        if names is None:
            return ""  # free text
        space = " " if index and not part.startswith(" ") else ""
        partial = part[1:] if index and part.startswith(" ") else part
        rests = [o[len(partial) :] for o in names if o.startswith(partial)]
        if len(rests) == 1:
            return space + rests[0] + (")" if index == len(kinds) - 1 else ",")
        shared = commonprefix(rests)
        shared = shared[: shared.rfind(" ")] if " " in shared else ""  # whole words only
        return space + shared if shared else ""

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


@dataclass(frozen=True)
class DecodingConfig:
    """How plans and answers are decoded. The default is the fast path every planner uses; ``REFERENCE``
    is the plain one it is checked against (same greedy plans when ``int8`` is off)."""

    jump_forward: bool = True  # grammar-forced tokens go into one forward pass, not one pass each
    drafts: bool = True  # tokens guessed from earlier replies ride along and are kept where the model agrees
    int8: bool = True  # after the prompt, the backbone's linear layers in int8 (CPU only; a GPU ignores it)
    system_cache: bool = True  # the system prompt's keys and values computed once, not in every prompt
    threads: int | None = 1  # torch threads while decoding; None leaves the process's setting

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")


REFERENCE = DecodingConfig(jump_forward=False, drafts=False, int8=False, system_cache=False, threads=None)
# by name, for configs and the command line; "exact": every technique that leaves greedy plans as they are
DECODINGS = {"fast": DecodingConfig(), "exact": DecodingConfig(int8=False), "reference": REFERENCE}
DRAFT_TOKENS = 8
DRAFT_CONTEXT = 3  # tokens of the reply a draft is looked up by (fewer when those are not found)
DRAFT_TABLE = 50_000  # entries before the table starts afresh


class EarlierReplies:
    """Drafts for speculative decoding, looked up in earlier replies (prompt-lookup decoding): what followed
    the last time a reply ended in the same few tokens. Plans repeat themselves ("thought: on table 1:",
    an object's name after its first word), so most drafted tokens are kept, and a wrong one costs only
    a row of a forward pass that runs anyway."""

    def __init__(self):
        self._following: dict[tuple[int, ...], list[int]] = {}

    def add(self, reply: list[int]) -> None:
        if len(self._following) > DRAFT_TABLE:
            self._following.clear()
        for n in range(1, DRAFT_CONTEXT + 1):
            for end in range(n, len(reply)):
                self._following[tuple(reply[end - n : end])] = reply[end : end + DRAFT_TOKENS]

    def draft(self, reply: list[int]) -> list[int]:
        for n in range(min(DRAFT_CONTEXT, len(reply)), 0, -1):
            found = self._following.get(tuple(reply[-n:]))
            if found:
                return list(found)
        return []


@torch.no_grad()
def decode(
    llm,
    tokenizer,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    constraints: list,
    max_new_tokens: int,
    stop: Callable[[], bool] | None = None,
    jump_forward: bool = False,
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    step_llm=None,
    drafts: EarlierReplies | None = None,
) -> list[str]:
    """Greedy (or constrained) replies to a left-padded batch of prompt embeddings, sharing one KV cache
    (which may start from ``prefix``, the per-layer keys and values of a prompt start every row shares); a
    finished reply leaves the batch, so the others decode at its cost no longer. ``stop`` (a callable such
    as ``threading.Event().is_set``) is asked before the prompt and before every forward pass: once it
    returns true, decoding ends with ``DecodingInterrupted`` within one pass (a node shutting down).

    A forward pass reads every weight once, however many tokens it takes, so a pass may carry more than the
    token just chosen: with ``jump_forward``, the grammar-forced text after it (``PlanConstraint.forced``);
    with ``drafts``, guessed tokens after that, each kept only if the model, reading the tokens before it,
    chooses it itself (the first it does not choose is replaced by its choice, the rest are dropped). The
    replies are the ones one token per pass would give. Rows feeding fewer tokens than others are padded;
    padding and dropped guesses stay in the cache, masked out of attention for good.

    ``step_llm`` (default ``llm``) reads the tokens after the prompt: an int8 copy, while the prompt, whose
    first token carries activations hundreds of times larger than the rest, is read at full precision."""
    if stop is not None and stop():
        raise DecodingInterrupted("decoding stopped before it began")
    device, pad, eos = embeds.device, tokenizer.pad_token_id, tokenizer.eos_token_id
    batch = len(embeds)
    if prefix:
        cache = DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix])
        mask = torch.cat([mask.new_ones(batch, prefix[0][0].shape[2]), mask], dim=1)
    else:
        cache = DynamicCache()
    replies: list[list[int]] = [[] for _ in range(batch)]
    texts = [""] * batch
    active = list(range(batch))  # rows of the original batch still decoding, in cache order

    def forced(row: int) -> list[int]:
        rule = constraints[row]
        text = rule.forced(texts[row]) if jump_forward and rule else ""
        ids = tokenizer(text, add_special_tokens=False).input_ids[: max_new_tokens - len(replies[row])] if text else []
        replies[row] += ids
        texts[row] += "".join(rule.piece(t) for t in ids)
        return ids

    def run(model, chunks: list[list[int]], guesses: list[list[int]], prompt: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Feed each row its chunk (after the prompt, if given) to ``model``: per row, the logits after
        each of its guesses' places (the last given token, then each guess)."""
        nonlocal mask
        width = max(map(len, chunks))
        ids = torch.tensor([c + [pad] * (width - len(c)) for c in chunks], dtype=torch.long, device=device)
        real = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in chunks], dtype=torch.long, device=device)
        causal = causal_lm(model)
        body = causal.get_decoder()
        inputs = body.get_input_embeddings()(ids)
        if prompt is not None:
            inputs = torch.cat([prompt.to(inputs.dtype), inputs], dim=1)
        mask = torch.cat([mask, real], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -inputs.shape[1] :]
        hidden = body(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True).last_hidden_state
        end = hidden.shape[1] - width
        rows = [torch.arange(end + len(c) - 1 - len(g), end + len(c), device=device) for c, g in zip(chunks, guesses)]
        picked = hidden[torch.cat([torch.full_like(r, slot) for slot, r in enumerate(rows)]), torch.cat(rows)]
        return list(causal.get_output_embeddings()(picked).float().split([len(r) for r in rows]))

    def finished(row: int) -> bool:
        rule = constraints[row]
        return bool(rule and rule.complete(texts[row])) or len(replies[row]) >= max_new_tokens

    def choose(row: int, scores: list[torch.Tensor], guess: list[int]) -> tuple[int | None, int]:
        """Take the row's tokens from the logits of each place of its last chunk: kept guesses, then the
        first token the pass has not read (None: the reply ended). Also how many guesses were dropped."""
        rule = constraints[row]
        for place, logits in enumerate(scores):
            if finished(row):
                return None, len(guess) - place
            token = rule.choose(texts[row], logits) if rule else int(logits.argmax())
            if token in (-1, eos):
                return None, len(guess) - place
            replies[row].append(token)
            texts[row] += rule.piece(token) if rule else ""
            if place == len(guess) or token != guess[place]:
                return (None if finished(row) else token), len(guess) - place
        raise AssertionError("the last place has no guess to match")

    chunks = [forced(row) for row in active]
    guesses: list[list[int]] = [[] for _ in active]
    logits = run(llm, chunks, guesses, prompt=embeds)
    while True:
        if stop is not None and stop():
            raise DecodingInterrupted(f"decoding stopped after {max(map(len, replies))} of at most {max_new_tokens} tokens")
        width = max(map(len, chunks))
        next_chunks, next_guesses, keep = [], [], []
        for slot, row in enumerate(active):
            token, dropped = choose(row, logits[slot], guesses[slot])
            if dropped:  # out of attention for good: the dropped guesses end the row's part of the last pass
                end = mask.shape[1] - width + len(chunks[slot])
                mask[slot, end - dropped : end] = 0
            if token is not None:
                chunk = [token, *forced(row)]
                if not finished(row):
                    guess = drafts.draft(replies[row])[: max_new_tokens - len(replies[row]) - 1] if drafts else []
                    next_chunks.append(chunk + guess)
                    next_guesses.append(guess)
                    keep.append(slot)
                    continue
            if drafts:
                drafts.add(replies[row])
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask = mask[index]
            active = [active[slot] for slot in keep]
        chunks, guesses = next_chunks, next_guesses
        logits = run(step_llm or llm, chunks, guesses)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]


@torch.no_grad()
def prefix_cache(llm, embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values of a prompt start (1, T, D) that ``decode`` can begin from."""
    causal = causal_lm(llm)
    cache = DynamicCache()
    causal.get_decoder()(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]
