"""Throughput of 8 concurrent planning requests decoded as one batch (shared KV cache, left padding) against
the same 8 requests planned one after another; real SmolLM2-135M backbone, random-initialised encoders,
the reference decoding path (bench_inference_actor batches the fast one)."""

from __future__ import annotations

import torch

from benchmarks.bench_plan_generation import count_plan_tokens, observation, untrained_model
from benchmarks.run import Ratio, side_by_side
from embodied.decoding import REFERENCE
from embodied.prompts import plan_sample

MAX_NEW_TOKENS = 48
ROUNDS = 3
THREADS = 2  # equal on both sides: both cores of this machine, which must be otherwise idle
INSTRUCTIONS = (
    "put the red cube in the green bowl",
    "bring the blue mug to the kitchen table",
    "what colour is the ball next to the sofa?",
    "pick up the yellow block and place it on the shelf",
    "find the apple",
    "look at the plant by the window and tell me if it needs water",
    "move the green bowl onto the red plate",
    "scan the room for the remote control, then pick it up",
)


def run() -> list[Ratio]:
    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        model = untrained_model()
        samples = [plan_sample(text, *observation(seed)) for seed, text in enumerate(INSTRUCTIONS)]
        # one untimed pass of each, counting tokens; it doubles as the warm-up
        counts, batched_plans = count_plan_tokens(model, samples, MAX_NEW_TOKENS)
        batched_tokens = sum(counts)
        sequential_tokens, sequential_plans = 0, []
        for sample in samples:
            (count,), (text,) = count_plan_tokens(model, [sample], MAX_NEW_TOKENS)
            sequential_tokens += count
            sequential_plans.append(text)
        same = sum(a == b for a, b in zip(batched_plans, sequential_plans))

        def batched():
            model.plan(samples, max_new_tokens=MAX_NEW_TOKENS, decoding=REFERENCE)

        def sequential():
            for sample in samples:
                model.plan([sample], max_new_tokens=MAX_NEW_TOKENS, decoding=REFERENCE)

        ratio, batched_rate, sequential_rate = side_by_side(batched, sequential, rounds=ROUNDS, seconds=0.01)
    finally:
        torch.set_num_threads(old_threads)
    n = len(samples)
    detail = (
        f"batch of {n}: {n * batched_rate:.2f} plans/s ({batched_tokens * batched_rate:.1f} tok/s), "
        f"sequential: {n * sequential_rate:.2f} plans/s ({sequential_tokens * sequential_rate:.1f} tok/s); "
        f"{batched_tokens} vs {sequential_tokens} new tokens (max {MAX_NEW_TOKENS} each), {same}/{n} plans identical, "
        f"{THREADS} thread, median of {ROUNDS}"
    )
    return [Ratio(f"batched generation: throughput(batch of {n}) / sequential", ratio, ">= 3", detail)]
