"""Stage 0, ULIP-2: tri-modal contrastive alignment of object point clouds, object renders and the frozen
all-MiniLM-L6-v2 embeddings of their generated descriptions.

The point-cloud and image encoders are the ones the embodied model uses (same configs), so their weights
start the later stages. Zero-shot 3D classification (nearest class prompt) measures the alignment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from embodied.data.dataset import SplitData, decode_cloud, decode_png
from embodied.encoders.image import ImageEncoder
from embodied.encoders.objects import ulip_embedding
from embodied.encoders.pointcloud import PointEncoder, align_footprint, prepare_cloud, unit_sphere
from embodied.encoders.zero_shot import CLASSES, class_prompts
from embodied.io import atomic_dir, write_json
from embodied.model import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from embodied.train.checkpoints import check_loaded
from embodied.train.text_tower import TextTower


class UlipModel(nn.Module):
    def __init__(self, config: ModelConfig, text_dim: int):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image)
        self.point_encoder = PointEncoder(config.points)
        self.point_head = nn.Linear(self.point_encoder.out_dim, text_dim)
        self.image_head = nn.Linear(self.image_encoder.out_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_points(self, clouds: torch.Tensor) -> torch.Tensor:
        return ulip_embedding(self.point_encoder, self.point_head, clouds)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(self.image_encoder(images).mean(dim=1)), dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        points, images, texts = self.embed_points(batch["clouds"]), self.embed_images(batch["images"]), batch["texts"]
        same = (batch["labels"][:, None] == batch["labels"][None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)  # objects of one class are all positives of each other
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        pairs = ((points, texts), (points, images), (images, texts))
        loss = sum(_clip_loss(scale * a @ b.T, targets) for a, b in pairs) / len(pairs)
        # Against every training description too (a text memory bank): a batch rarely holds two objects
        # of one colour, so without this, colour alone separates a batch and shape is barely learned.
        bank, bank_targets = batch["bank"], batch["bank_targets"]
        return loss + sum(F.cross_entropy(scale * x @ bank.T, bank_targets) for x in (points, images)) / 2


def _clip_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class UlipStage:
    unit = "objects"

    def __init__(self, config):
        self.config = config
        self.tower = TextTower()
        self.module = UlipModel(config.model, self.tower.dim)
        self.train = SplitData(config.data, "train").objects
        self.val = SplitData(config.data, "val").objects
        if not self.train:
            raise ValueError(f"{config.data} has no training objects")
        described = {d: CLASSES.index((row["colour"], row["shape"])) for row in self.train for d in row["descriptions"]}
        descriptions = sorted(described)
        self.text_index = {d: i for i, d in enumerate(descriptions)}
        self.text_embeddings = self.tower.embed(descriptions)
        self.description_class = torch.tensor([described[d] for d in descriptions])
        self.class_embeddings = self.tower.embed(class_prompts())

    def batch(self, rng: np.random.Generator) -> dict:
        rows = [self.train[i] for i in rng.choice(len(self.train), min(self.config.batch_size, len(self.train)), replace=False)]
        texts = [row["descriptions"][int(rng.integers(len(row["descriptions"])))] for row in rows]
        views = [row["views"][int(rng.integers(len(row["views"])))] for row in rows]
        labels = torch.tensor([CLASSES.index((r["colour"], r["shape"])) for r in rows])  # size: scaled away
        own = (labels[:, None] == self.description_class[None, :]).float()
        return {
            "clouds": object_clouds(rows, self.config.model.points),
            "images": torch.as_tensor(np.stack([decode_png(v) for v in views])),
            "texts": self.text_embeddings[[self.text_index[t] for t in texts]],
            "labels": labels,
            "bank": self.text_embeddings,
            "bank_targets": own / own.sum(dim=1, keepdim=True),
        }

    def size(self, batch: dict) -> int:
        return len(batch["labels"])

    @torch.no_grad()
    def evaluate(self, module: UlipModel) -> dict[str, float]:
        return {"zero_shot_accuracy": zero_shot_accuracy(module, self.val[: self.config.eval_samples * 4], self.class_embeddings)}

    def write_files(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps({"stage": "ulip", "model": self.config.model.to_dict()}, indent=2))
        save_file({k: v.contiguous() for k, v in self.module.state_dict().items()}, str(folder / WEIGHTS_FILE))

    def load_weights(self, weights: dict[str, torch.Tensor], partial: bool = False) -> list[str]:
        state = self.module.state_dict()
        matching = {k: v for k, v in weights.items() if k in state and state[k].shape == v.shape}
        self.module.load_state_dict(matching, strict=False)
        return check_loaded(sorted(matching), set(state), partial)

    def export(self, folder: Path) -> None:
        """The aligned encoders, and their zero-shot accuracy on the held-out splits' objects beside them."""
        with atomic_dir(folder) as tmp:
            self.write_files(tmp)
        report = {}
        for split in ("test", "compositional"):
            rows = SplitData(self.config.data, split).objects
            report[split] = {"objects": len(rows), "zero_shot_accuracy": zero_shot_accuracy(self.module, rows, self.class_embeddings)}
        write_json(folder.parent / "zero_shot.json", report)


@torch.no_grad()
def zero_shot_accuracy(module: UlipModel, rows: list[dict], class_embeddings: torch.Tensor, batch_size: int = 64) -> float:
    """Share of objects whose point-cloud embedding is nearest the prompt of their own colour and shape."""
    if not rows:
        return float("nan")
    module.eval()
    correct = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        predicted = (module.embed_points(object_clouds(chunk, module.config.points)) @ class_embeddings.T).argmax(dim=1)
        correct += sum(CLASSES[int(p)] == (r["colour"], r["shape"]) for p, r in zip(predicted, chunk))
    module.train()
    return correct / len(rows)


def object_clouds(rows: list[dict], config) -> torch.Tensor:
    """The rows' object clouds, each squared to the axes and in the unit sphere, as the object tower reads them
    (``embodied.encoders.objects.ulip_input``)."""
    clouds = []
    for row in rows:
        raw = decode_cloud(row["cloud"])
        clouds.append(unit_sphere(align_footprint(prepare_cloud(raw, len(raw), config.group_size, config.in_channels))))
    return torch.stack(clouds)
