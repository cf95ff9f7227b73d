"""Plan generation for one observation (image + point cloud + instruction, grammar-constrained, real
SmolLM2-135M backbone with random-initialised encoders) against the bare backbone's own HF ``generate``
writing the same number of new tokens from a text prompt of the same length."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import torch

from benchmarks.run import Ratio, side_by_side
from embodied.backbone import SMOLLM2, load_backbone
from embodied.decoding import REFERENCE, PlanConstraint
from embodied.model import EmbodiedModel, load_model
from embodied.prompts import PLAN_SYSTEM, plan_sample

MAX_NEW_TOKENS = 64
OBSERVATION_TRIES = 10
ROUNDS = 5
# Equal on both sides: both cores of this machine, which must be otherwise idle (a second OpenMP thread
# stalls whenever the other core is busy: single plan calls went from ~5 s to 20-30 s beside a test run).
THREADS = 2
INSTRUCTION = "put the red cube in the green bowl, then look at the blue plate and tell me what is on it"


def observation(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    cloud = np.concatenate([rng.uniform(-1, 1, (1024, 3)), rng.uniform(0, 1, (1024, 3))], axis=1).astype(np.float32)
    return image, cloud


def count_plan_tokens(model: EmbodiedModel, samples: list, max_new_tokens: int) -> tuple[list[int], list[str]]:
    """The new tokens each reply of ``model.plan`` takes, and the plans (one untimed run, counting the tokens
    the constraint picks)."""
    eos = model.tokenizer.eos_token_id
    counts: dict[int, int] = {}
    choose = PlanConstraint.choose

    def counting(rule, text, logits):
        token = choose(rule, text, logits)
        counts[id(rule)] = counts.get(id(rule), 0) + (token not in (-1, eos))
        return token

    with mock.patch.object(PlanConstraint, "choose", counting):
        plans = model.plan(samples, max_new_tokens=max_new_tokens, decoding=REFERENCE)
    return list(counts.values()), plans


def text_prompt(tokenizer, length: int) -> torch.Tensor:
    """A ChatML planning prompt cut to exactly ``length`` tokens, (1, length)."""
    filler = "the table holds a red cube, a green bowl and a blue plate near the wall. " * (length // 4 + 8)
    text = f"<|im_start|>system\n{PLAN_SYSTEM}<|im_end|>\n<|im_start|>user\n{filler}"
    ids = tokenizer(text, add_special_tokens=False).input_ids[:length]
    assert len(ids) == length
    return torch.tensor([ids])


def untrained_model() -> EmbodiedModel:
    """The default model (SmolLM2-135M + LoRA), encoders and projectors random-initialised from seed 0."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # peft asks about gradient checkpointing through a deprecated name
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return load_model("untrained")


def run() -> list[Ratio]:
    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        model = untrained_model()
        bare, tokenizer = load_backbone(SMOLLM2)
        # An untrained model's plan may end early: take the first observation whose plan runs the full length.
        for seed in range(OBSERVATION_TRIES):
            sample = plan_sample(INSTRUCTION, *observation(seed))
            (new_tokens,), _ = count_plan_tokens(model, [sample], MAX_NEW_TOKENS)
            if new_tokens == MAX_NEW_TOKENS:
                break
        with torch.no_grad():
            prompt_length = len(model._sequences([sample])[0][0])  # text tokens + projected image and cloud tokens
        ids = text_prompt(tokenizer, prompt_length)
        mask = torch.ones_like(ids)

        def plan():
            model.plan([sample], max_new_tokens=MAX_NEW_TOKENS, decoding=REFERENCE)

        def generate():
            out = bare.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            assert out.shape[1] == prompt_length + new_tokens

        with torch.no_grad():
            plan(), generate()  # warm up both
            # rate() runs at least one call: with a tiny budget each round is one call of each, alternately
            plans_per_s, plan_rate, bare_rate = side_by_side(plan, generate, rounds=ROUNDS, seconds=0.01)
    finally:
        torch.set_num_threads(old_threads)
    ratio = 1 / plans_per_s  # time(plan) / time(bare)
    detail = (
        f"plan {1 / plan_rate:.2f} s/call, bare generate {1 / bare_rate:.2f} s/call; N={new_tokens} new tokens "
        f"(max {MAX_NEW_TOKENS}) after a {prompt_length}-token prompt, {THREADS} thread, median of {ROUNDS}"
    )
    return [Ratio("plan generation: time(plan) / time(bare generate)", ratio, "<= 1.3", detail)]
