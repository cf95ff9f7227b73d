"""The GRPO objective (group-relative policy optimisation, as in DeepSeekMath): several plans are sampled
for one episode, each plan's reward is compared with its group's mean (in units of the group's spread),
and the policy gradient raises the log-likelihood of plans that beat their group and lowers the others.

One gradient step per batch of fresh samples (on-policy), so the PPO ratio is 1 and needs no clipping;
log-likelihoods are the model's own (unconstrained) token probabilities of the plan text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
    sequences = model._sequences(samples)
    logits = model.score(sequences).logits[:, :-1].float()
    _, _, labels = model._pad(sequences, left=False)
    targets = labels[:, 1:]
    mask = targets != -100
    logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.clamp(min=0)[..., None])[..., 0]
    return (logprobs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def policy_loss(model: EmbodiedModel, samples: list[Sample], advantages: list[float]) -> torch.Tensor:
    advantage = torch.as_tensor(advantages, dtype=torch.float32, device=model.device)
    return -(advantage * mean_token_logprobs(model, samples)).mean()
