"""What the model accepts as an image or a point cloud (embodied/inputs.py): arrays with one obvious meaning
are converted, the rest raise a ValueError naming the input, never a crash deep in torch or a silent
wrong picture."""

import re

import numpy as np
import pytest
import torch

from embodied.inputs import MAX_MAGNITUDE, as_cloud, as_image
from embodied.model import EmbodiedModel, ModelConfig
from embodied.prompts import plan_sample


def _image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _cloud(seed: int, n: int = 100) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    """A read-only tiny model in eval mode (tests must not change it, or must restore it)."""
    torch.manual_seed(0)
    return EmbodiedModel(ModelConfig.tiny()).eval()


def _tokens(model, images):
    with torch.no_grad():
        return model.encode_images(images)


# -- images: conversions -------------------------------------------------------------------------------


def test_a_float_image_in_0_1_encodes_like_its_uint8_original(tiny):
    image = _image(0)
    tokens = _tokens(tiny, [image.astype(np.float32) / 255])
    torch.testing.assert_close(tokens, _tokens(tiny, [image]))
    assert not torch.allclose(tokens, _tokens(tiny, [np.zeros_like(image)]))  # not cast to black


def test_integer_images_in_range_keep_their_values(tiny):
    image = _image(1)
    torch.testing.assert_close(_tokens(tiny, [image.astype(np.int64)]), _tokens(tiny, [image]))
    torch.testing.assert_close(_tokens(tiny, [torch.from_numpy(image)]), _tokens(tiny, [image]))


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1)], ids=["HxW", "HxWx1"])
def test_a_grayscale_image_becomes_grey_rgb(tiny, shape):
    grey = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    torch.testing.assert_close(_tokens(tiny, [grey.reshape(shape)]), _tokens(tiny, [rgb]))


def test_rgba_drops_its_alpha(tiny):
    image = _image(3)
    rgba = np.concatenate([image, np.full((32, 32, 1), 7, np.uint8)], axis=-1)
    torch.testing.assert_close(_tokens(tiny, [rgba]), _tokens(tiny, [image]))


def test_a_batch_of_mixed_sizes_encodes_each_as_alone(tiny):
    small, big, wide = _image(4, 32), _image(5, 64), np.random.default_rng(6).integers(0, 256, (24, 40, 3), np.uint8)
    batch = _tokens(tiny, [small, big, wide])
    alone = torch.cat([_tokens(tiny, [image]) for image in (small, big, wide)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)


def test_as_image_returns_uint8_rgb():
    out = as_image(np.full((5, 6), 0.5))
    assert out.dtype == torch.uint8 and out.shape == (5, 6, 3) and int(out[0, 0, 0]) == 128


# -- images: rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            np.full((32, 32, 3), 300, np.int64),
            r"images\[0\] has int64 values in \[300, 300\]; integer images must be in \[0, 255\]",
        ),
        (np.full((32, 32, 3), -1, np.int16), r"int16 values in \[-1, -1\]"),
        (
            np.full((32, 32, 3), 200.0),
            r"images\[0\] is a float image with values in \[200, 200\]; float images must be in \[0, 1\]",
        ),
        (np.full((32, 32, 3), -0.5, np.float32), r"values in \[-0.5, -0.5\]"),
        (np.full((32, 32, 3), np.nan), r"images\[0\] has non-finite values"),
        (np.zeros((0, 0, 3), np.uint8), r"images\[0\] is empty: shape \(0, 0, 3\)"),
        (np.zeros((0, 0), np.uint8), r"images\[0\] is empty: shape \(0, 0\)"),
        (np.zeros((3, 32, 32), np.uint8), r"images\[0\] has shape \(3, 32, 32\), channels first; expected .*transpose"),
        (np.zeros((32, 32, 2), np.uint8), r"images\[0\] has shape \(32, 32, 2\); expected \(H, W, 3\) RGB"),
        (np.zeros((2, 32, 32, 3), np.uint8), r"images\[0\] has shape \(2, 32, 32, 3\)"),
        (np.zeros(32, np.uint8), r"images\[0\] has shape \(32,\)"),
        (np.zeros((32, 32, 3), bool), r"images\[0\] has dtype bool; expected uint8"),
        (np.full((32, 32, 3), "a"), r"images\[0\] has dtype <U1"),
        (None, r"images\[0\] has dtype object"),
    ],
    ids=["int-300", "int-negative", "float-0-255", "float-negative", "nan", "0x0", "0x0-grey", "chw", "two-channels",
         "batched", "flat", "bool", "strings", "none"],
)
def test_images_without_one_obvious_meaning_are_rejected_by_name(tiny, image, message):
    with pytest.raises(ValueError, match=message):
        tiny.encode_images([image])


def test_the_rejected_image_is_named_by_its_place_in_the_batch(tiny):
    with pytest.raises(ValueError, match=r"images\[2\]"):
        tiny.encode_images([_image(7), _image(8), np.zeros((0, 4, 3), np.uint8)])


# -- clouds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e30, 1e5], ids=["1e30", "1e5"])
def test_a_cloud_beyond_the_bound_is_rejected(tiny, scale):
    cloud = _cloud(10)
    cloud[5, 1] = scale
    with pytest.raises(ValueError, match=re.escape(f"clouds[0] has {scale:.3g} in column 1; expected xyz in metres")):
        tiny.encode_clouds([cloud])


def test_a_float64_cloud_too_big_for_float32_is_rejected_not_dropped(tiny):
    cloud = _cloud(11).astype(np.float64)
    cloud[3, 0] = -1e40  # inf in float32, which would pass as a missing point
    with pytest.raises(ValueError, match=r"clouds\[0\] has -1e\+40 in column 0"):
        tiny.encode_clouds([cloud])


def test_a_cloud_at_the_bound_gives_finite_tokens(tiny):
    cloud = _cloud(12)
    cloud[:, :3] *= MAX_MAGNITUDE / np.abs(cloud[:, :3]).max()
    with torch.no_grad():
        assert torch.isfinite(tiny.encode_clouds([cloud])).all()


def test_non_finite_points_are_dropped_as_before(tiny):
    cloud = _cloud(13)
    holey = cloud.copy()
    holey[[4, 40], 2] = np.nan
    with torch.no_grad():
        torch.testing.assert_close(tiny.encode_clouds([holey]), tiny.encode_clouds([np.delete(cloud, [4, 40], axis=0)]))


@pytest.mark.parametrize(
    ("cloud", "message"),
    [
        (np.zeros((0, 6), np.float32), r"clouds\[1\] has 0 finite points of 0; need at least 8"),
        (np.full((100, 6), np.nan, np.float32), r"clouds\[1\] has 0 finite points of 100"),
        (np.zeros((100, 3), np.float32), r"clouds\[1\] must be an \(N, 6\) array, got shape \(100, 3\)"),
        (np.zeros((100, 6), bool), r"clouds\[1\] has dtype bool"),
        (None, r"clouds\[1\] has dtype object"),
    ],
    ids=["empty", "all-nan", "xyz-only", "bool", "none"],
)
def test_unusable_clouds_are_rejected_by_name(tiny, cloud, message):
    with pytest.raises(ValueError, match=message):
        tiny.encode_clouds([_cloud(14), cloud])


def test_as_cloud_accepts_integers_and_tensors():
    ints = np.arange(12).reshape(2, 6)
    assert torch.equal(as_cloud(ints), torch.arange(12, dtype=torch.float32).reshape(2, 6))
    assert torch.equal(as_cloud(torch.from_numpy(ints).to(torch.bfloat16)), as_cloud(ints))


def test_tokens_that_are_not_finite_never_pass(tiny):
    weight = next(tiny.point_projector.parameters())
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] = float("nan")
            with pytest.raises(ValueError, match=r"clouds \[0, 1\] gave non-finite tokens"):
                tiny.encode_clouds([_cloud(15), _cloud(16)])
    finally:
        with torch.no_grad():
            weight.copy_(saved)


# -- plans ---------------------------------------------------------------------------------------------


def test_no_samples_no_plans(tiny):
    assert tiny.plan([]) == []
    assert tiny.generate([]) == []


def test_a_sample_with_a_float_image_reads_like_its_uint8_original(tiny):
    image, cloud = _image(17), _cloud(17)
    with torch.no_grad():
        (as_uint8, _), = tiny._sequences([plan_sample("pick the cube", image, cloud)])
        (as_float, _), = tiny._sequences([plan_sample("pick the cube", image / 255.0, cloud)])
        (black, _), = tiny._sequences([plan_sample("pick the cube", np.zeros_like(image), cloud)])
    torch.testing.assert_close(as_float, as_uint8)
    assert not torch.allclose(as_float, black)


@pytest.mark.parametrize("option", ["objects", "seeds", "temperature"])
def test_plan_options_per_sample_must_match_the_samples(tiny, option):
    samples = [plan_sample("pick the cube"), plan_sample("place the cube")]
    value = {"objects": [["cube"]], "seeds": [1], "temperature": [0.5]}[option]
    with pytest.raises(ValueError, match=f"{option}: 1 for 2 samples"):
        tiny.plan(samples, **{option: value})
