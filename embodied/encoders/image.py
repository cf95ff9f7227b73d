"""The image encoder: a ViT built with transformers from a config (trained here: no pretrained vision
weights are available offline), or any HF vision model by id or local path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, ViTConfig, ViTModel


@dataclass(frozen=True)
class ImageEncoderConfig:
    name: str = "vit"  # "vit": built from the numbers below; anything else: an HF model id or folder
    image_size: int = 128
    patch_size: int = 16
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4

    def __post_init__(self):
        if self.name == "vit":
            small = [f"{k} {v}" for k, v in vars(self).items() if k != "name" and v < 1]
            if small:
                raise ValueError(f"image encoder sizes must be positive, got {', '.join(small)}")
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
            if self.hidden_size % self.heads:
                raise ValueError(f"hidden_size {self.hidden_size} must be divisible by heads {self.heads}")


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        if config.name == "vit":
            vit = ViTConfig(
                image_size=config.image_size,
                patch_size=config.patch_size,
                hidden_size=config.hidden_size,
                num_hidden_layers=config.layers,
                num_attention_heads=config.heads,
                intermediate_size=4 * config.hidden_size,
            )
            self.vision = ViTModel(vit, add_pooling_layer=False)
        else:
            self.vision = AutoModel.from_pretrained(config.name, local_files_only=True)
        self.size = getattr(self.vision.config, "image_size", config.image_size)

    @property
    def out_dim(self) -> int:
        return self.vision.config.hidden_size

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB, or a list of (H, W, 3) uint8 images of any sizes -> (B, T, D) tokens. Each
        image is resized to the encoder's input size on its own, so a batch may mix sizes and an image
        encodes the same in any batch."""
        if isinstance(images, torch.Tensor):
            batches = [images]
        else:
            batches = [torch.stack(images)] if len({i.shape for i in images}) == 1 else [i[None] for i in images]
        return self.vision(pixel_values=torch.cat([self._pixels(b) for b in batches])).last_hidden_state

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, size, size) floats in [-1, 1]."""
        pixels = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return pixels
