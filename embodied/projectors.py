"""Input projectors: map encoder tokens into the language model's embedding space.

``linear`` and ``mlp`` keep the token count; ``resampler`` (Perceiver / Q-Former style) compresses any
number of encoder tokens to a fixed number of learnable queries, which keeps prompts short.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("linear", "mlp", "resampler")


@dataclass(frozen=True)
class ProjectorConfig:
    kind: str = "resampler"
    num_queries: int = 8  # resampler only
    layers: int = 1  # resampler only
    heads: int = 4  # resampler only; must divide the encoder's width

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown projector kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.num_queries < 1 or self.layers < 1 or self.heads < 1:
            raise ValueError("num_queries, layers and heads must be positive")


class Resampler(nn.Module):
    """Learnable queries cross-attend to the encoder tokens, then a feed-forward block, ``layers`` times;
    it works at the encoder's width and projects only its few output tokens up to the model's."""

    def __init__(self, in_dim: int, out_dim: int, config: ProjectorConfig):
        super().__init__()
        if in_dim % config.heads:
            raise ValueError(f"resampler heads {config.heads} must divide the encoder width {in_dim}")
        self.queries = nn.Parameter(torch.randn(config.num_queries, in_dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_q": nn.LayerNorm(in_dim),
                    "norm_kv": nn.LayerNorm(in_dim),
                    "attention": nn.MultiheadAttention(in_dim, config.heads, batch_first=True),
                    "norm_ff": nn.LayerNorm(in_dim),
                    "ff": nn.Sequential(nn.Linear(in_dim, 4 * in_dim), nn.GELU(), nn.Linear(4 * in_dim, in_dim)),
                }
            )
            for _ in range(config.layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.queries.expand(len(tokens), -1, -1)
        for block in self.blocks:
            kv = block["norm_kv"](tokens)
            x = x + block["attention"](block["norm_q"](x), kv, kv, need_weights=False)[0]
            x = x + block["ff"](block["norm_ff"](x))
        return self.out(x)


def build_projector(config: ProjectorConfig, in_dim: int, out_dim: int) -> nn.Module:
    if config.kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if config.kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    return Resampler(in_dim, out_dim, config)
