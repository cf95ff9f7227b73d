"""The GRPO objective (group-relative policy optimisation, as in DeepSeekMath): several plans are sampled
for one episode, each plan's reward is compared with its group's mean (in units of the group's spread),
and the policy gradient raises the log-likelihood of plans that beat their group and lowers the others.

One gradient step per batch of fresh samples (on-policy), so the PPO ratio is 1 and needs no clipping;
log-likelihoods are the model's own (unconstrained) token probabilities of the plan text. A KL penalty to
the starting policy (DeepSeekMath's k3 estimator, per token) keeps the policy near what instruction tuning
taught it: without one, a run on tasks where answering is right for some episodes (refusals, conditionals)
learned to answer "there is no ..." to every instruction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from embodied.model import EmbodiedModel
from embodied.prompts import Sample

MIN_SPREAD = 1e-6


def group_advantages(rewards: list[float]) -> np.ndarray:
    """(r - mean) / std within one group; all zeros when every plan earned the same (nothing to learn)."""
    r = np.asarray(rewards, dtype=np.float64)
    spread = r.std()
    return np.zeros_like(r) if spread < MIN_SPREAD else (r - r.mean()) / spread


def token_logprobs(model: EmbodiedModel, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of every reply token (teacher-forced), and the sample each belongs to."""
    return model.target_logprobs(model._sequences(samples))


def per_sample_mean(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) the mean of the token ``values`` of each sample (``rows`` says whose each is): a plan's score
    that does not grow with its length."""
    sums = torch.zeros(n, device=values.device).index_add(0, rows, values)
    counts = torch.zeros(n, device=values.device).index_add(0, rows, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def policy_loss(
    model: EmbodiedModel, samples: list[Sample], advantages: list[float], reference: torch.Tensor | None = None, kl: float = 0.0
) -> torch.Tensor:
    """The policy-gradient loss, plus ``kl`` times the KL divergence from the policy whose token
    log-probabilities (``token_logprobs`` of the same samples) are ``reference``."""
    logprobs, rows = token_logprobs(model, samples)
    advantage = torch.as_tensor(advantages, dtype=torch.float32, device=model.device)
    loss = -(advantage * per_sample_mean(logprobs, rows, len(samples))).mean()
    if reference is None or kl == 0.0:
        return loss
    log_ratio = reference.to(logprobs.device) - logprobs
    return loss + kl * per_sample_mean(log_ratio.exp() - log_ratio - 1, rows, len(samples)).mean()


def backward_policy_loss(
    model: EmbodiedModel,
    samples: list[Sample],
    advantages: list[float],
    micro_batch: int,
    reference: Callable[[list[Sample]], torch.Tensor | None] = lambda _: None,
    kl: float = 0.0,
) -> float:
    """Backpropagate ``policy_loss`` over ``samples`` in slices of ``micro_batch``; returns the loss. The
    gradient is the one pass over all of them would give, but memory grows with the slice, not the batch:
    32 rearrangement plans in one pass took more than the 23 GB of a 2-core machine. ``reference`` gives
    the starting policy's token log-probabilities of a slice (None: no KL term)."""
    total = 0.0
    for start in range(0, len(samples), micro_batch):
        part = slice(start, start + micro_batch)
        weight = len(samples[part]) / len(samples)  # the slices' means, weighted, are the batch's mean
        loss = weight * policy_loss(model, samples[part], advantages[part], reference(samples[part]), kl)
        loss.backward()
        total += float(loss)
    return total
