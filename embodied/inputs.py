"""What the model accepts as an image or a point cloud, checked at its edge: an array with one obvious meaning
is converted, anything else raises a ValueError that names the input and says what was expected, instead of
a crash deep in torch or, worse, a silently wrong picture (a float image cast to uint8 is black).

Images (``as_image``) become (H, W, 3) uint8 RGB:

- uint8 (H, W, 3) is taken as is;
- integer arrays must hold values in [0, 255] (no wrapping: 300 is an error, not 44);
- float arrays must be finite and in [0, 1], and are scaled to 0-255 (rounded); floats beyond 1 are an error
  rather than a guess at 0-255 (a dark 0-255 image would read as bright), pass those as uint8;
- (H, W, 4) RGBA drops its alpha; grayscale (H, W) or (H, W, 1) is repeated into three equal channels;
- channels first (C, H, W), bool or non-numeric dtypes, other channel counts, more or fewer dimensions and
  images without pixels are errors. Any size is fine: the image encoder resizes each image on its own.

Point clouds (``as_cloud``) become float32 (N, C): xyz in metres, then C - 3 feature channels, colour in
[0, 1] for the default six (as ``envs/pointcloud.py`` and the ROS conversions make them). Rows holding NaN
or inf are kept for ``prepare_cloud`` to drop (sensors mark missing depth that way); every finite value must
lie within +-``MAX_MAGNITUDE``, since far larger ones overflow the encoder into non-finite tokens.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_MAGNITUDE = 1e4  # metres for xyz: 10 km is no robot's workspace; a value this far off is a unit or sensor bug


def as_image(image, where: str = "image") -> torch.Tensor:
    """``image`` (an array or tensor) as a (H, W, 3) uint8 tensor, by the rules in the module docstring."""
    array = _numeric(image, where, "uint8 (H, W, 3) RGB")
    if array.size == 0:
        raise ValueError(f"{where} is empty: shape {array.shape}; expected at least one pixel")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{where} has shape {array.shape}, channels first; expected channels last (H, W, 3): "
            "pass array.transpose(1, 2, 0)"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{where} has shape {array.shape}; expected (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) / (H, W, 1) grayscale"
        )
    array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{where} has non-finite values; expected a float image in [0, 1]")
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise ValueError(
                f"{where} is a float image with values in [{low:g}, {high:g}]; float images must be in [0, 1] "
                "(pass 0-255 images as uint8)"
            )
        array = np.rint(array * 255)
    elif array.dtype != np.uint8:
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise ValueError(f"{where} has {array.dtype} values in [{low}, {high}]; integer images must be in [0, 255]")
    return torch.tensor(array.astype(np.uint8, copy=False))


def as_cloud(cloud, channels: int = 6, where: str = "point cloud") -> torch.Tensor:
    """``cloud`` (an array or tensor) as a float32 (N, channels) tensor, non-finite rows kept, by the rules in
    the module docstring."""
    array = _numeric(cloud, where, f"float (N, {channels}) xyz + features")
    if array.ndim != 2 or array.shape[1] != channels:
        raise ValueError(f"{where} must be an (N, {channels}) array, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
    magnitude = np.abs(np.where(np.isfinite(array), array, 0))
    if magnitude.size and magnitude.max() > MAX_MAGNITUDE:
        row, column = np.unravel_index(magnitude.argmax(), magnitude.shape)
        raise ValueError(
            f"{where} has {array[row, column]:.3g} in column {column}; expected xyz in metres and features "
            f"(rgb in [0, 1]) within +-{MAX_MAGNITUDE:g}"
        )
    return torch.tensor(np.ascontiguousarray(array), dtype=torch.float32)  # a reversed view too


def check_tokens(tokens: torch.Tensor, where: str) -> torch.Tensor:
    """``tokens`` (B, T, D) unchanged, or a ValueError naming the items whose tokens are not all finite: the
    checks above keep inputs in range, so this is the last guard that a bad input never reaches the language
    model (and a plan never "parses" from garbage)."""
    bad = (~torch.isfinite(tokens).flatten(1).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{where} {bad} gave non-finite tokens: an input out of range, or non-finite weights")
    return tokens


def _numeric(value, where: str, expected: str) -> np.ndarray:
    """``value`` as a numpy array of integers or floats (tensors from any device; bfloat16 widened to float32)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        array = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} is not an array: {exc}; expected {expected}") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where} has dtype {array.dtype}; expected {expected}")
    return array
