"""Instruction-tuning throughput: one SFT step of the embodied model (default config: SmolLM2-135M with
LoRA, encoders and projectors training, 8 multimodal samples) against plain peft LoRA training of the same
backbone on text-only sequences of exactly the same lengths, in tokens per second; and the same SFT step
with its matrix products in bfloat16 (``precision: bf16``, as configs/train/sft.yaml trains) against fp32."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.bench_plan_generation import observation, text_prompt
from benchmarks.run import Ratio, side_by_side
from embodied.backbone import add_lora, load_backbone
from embodied.model import EmbodiedModel
from embodied.prompts import plan_sample, vqa_sample
from embodied.train.config import TrainConfig
from embodied.train.language import freeze_all_but

ROUNDS = 3
THREADS = 2  # equal on both sides
SFT_CONFIG = Path(__file__).parents[1] / "configs" / "train" / "sft.yaml"
PLAN = "thought: on table 1: red cube, green bowl.\n1. navigate(red cube)\n2. pick(red cube)\n3. navigate(green bowl)\n4. place(red cube, green bowl)\n5. done()"


def _samples() -> list:
    samples = []
    for seed in range(8):
        image, cloud = observation(seed)
        if seed % 2:
            samples.append(vqa_sample("how many cubes are there?", image, cloud, "2"))
        else:
            samples.append(plan_sample("put the red cube in the green bowl", image, cloud, PLAN))
    return samples


def run() -> list[Ratio]:
    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        config = TrainConfig.load(SFT_CONFIG)
        model = EmbodiedModel(config.model).train()
        freeze_all_but(model, config.parts)
        ours = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        samples = _samples()
        lengths = [len(e) for e, _ in model._sequences(samples)]

        lora = config.model.lora
        plain, tokenizer = load_backbone(config.model.backbone)
        plain = add_lora(plain, lora.rank, lora.alpha, lora.dropout, lora.targets).train()
        theirs = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=1e-4)
        width = max(lengths)
        ids = torch.full((len(lengths), width), tokenizer.pad_token_id or 0)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        for row, length in enumerate(lengths):
            ids[row, :length], mask[row, :length] = text_prompt(tokenizer, length)[0], 1
        labels = ids.masked_fill(mask == 0, -100)

        def sft_step(bf16: bool = False):
            ours.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(samples).loss
            loss.backward()
            ours.step()

        def plain_step():
            theirs.zero_grad(set_to_none=True)
            plain(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            theirs.step()

        sft_step(), plain_step()  # warm-up
        ratio, sft_rate, plain_rate = side_by_side(sft_step, plain_step, rounds=ROUNDS, seconds=0.01)
        sft_step(bf16=True)
        speedup, bf16_rate, fp32_rate = side_by_side(lambda: sft_step(bf16=True), sft_step, rounds=ROUNDS, seconds=0.01)
    finally:
        torch.set_num_threads(old_threads)
    tokens = sum(lengths)
    detail = (
        f"SFT {tokens * sft_rate:.0f} tok/s, plain LoRA {tokens * plain_rate:.0f} tok/s; batch of {len(lengths)}, "
        f"{tokens} tokens ({min(lengths)}-{max(lengths)} each), {THREADS} threads, median of {ROUNDS}"
    )
    return [
        Ratio("SFT tokens/s / plain peft LoRA on text of the same lengths", ratio, ">= 0.8", detail),
        Ratio(
            "SFT step in bf16 autocast / fp32", speedup, "report",
            f"{tokens * bf16_rate:.0f} against {tokens * fp32_rate:.0f} tok/s, {THREADS} threads, median of {ROUNDS}",
        ),
    ]
