"""The GRPO objective (group-relative policy optimisation, as in DeepSeekMath): several plans are sampled
for one episode, each plan's reward is compared with its group's mean (in units of the group's spread),
and the policy gradient raises the log-likelihood of plans that beat their group and lowers the others.

One gradient step per batch of fresh samples (on-policy), so the PPO ratio is 1 and needs no clipping;
log-likelihoods are the model's own (unconstrained) token probabilities of the plan text.
"""

from __future__ import annotations

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


def mean_token_logprobs(model: EmbodiedModel, samples: list[Sample]) -> torch.Tensor:
    """Per sample, the mean log-probability of its reply tokens (teacher-forced), shape (B,)."""
    logprobs, rows = model.target_logprobs(model._sequences(samples))
    sums = torch.zeros(len(samples), device=logprobs.device).index_add(0, rows, logprobs)
    counts = torch.zeros(len(samples), device=logprobs.device).index_add(0, rows, torch.ones_like(logprobs))
    return sums / counts.clamp(min=1)


def policy_loss(model: EmbodiedModel, samples: list[Sample], advantages: list[float]) -> torch.Tensor:
    advantage = torch.as_tensor(advantages, dtype=torch.float32, device=model.device)
    return -(advantage * mean_token_logprobs(model, samples)).mean()
