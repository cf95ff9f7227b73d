"""Encoders and projectors: farthest-point sampling, kNN grouping, cloud preparation, output shapes, and
the configs' validation."""

import numpy as np
import pytest
import torch

from embodied.encoders.image import ImageEncoder, ImageEncoderConfig
from embodied.encoders.pointcloud import (
    PointEncoder,
    PointEncoderConfig,
    farthest_point_sample,
    group_indices,
    group_points,
    prepare_cloud,
    smallest,
)
from embodied.projectors import ProjectorConfig, Resampler, build_projector


def _cloud(n: int = 200, channels: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, generator=generator)


# -- farthest-point sampling ------------------------------------------------------------------------


def test_fps_picks_distinct_indices_in_range():
    xyz = _cloud(300, 3)[None]
    index = farthest_point_sample(xyz, 40)
    assert index.shape == (1, 40)
    assert index.dtype == torch.long
    assert len(set(index[0].tolist())) == 40
    assert 0 <= int(index.min()) and int(index.max()) < 300


def test_fps_starts_at_the_point_farthest_from_the_centroid():
    xyz = _cloud(100, 3)
    xyz[37] = torch.tensor([5.0, 5.0, 5.0])  # an outlier: the farthest point from the centroid
    assert farthest_point_sample(xyz[None], 3)[0, 0] == 37


def test_fps_gives_both_blobs_a_centre():
    torch.manual_seed(0)
    near = torch.randn(150, 3) * 0.05
    far = torch.randn(50, 3) * 0.05 + torch.tensor([10.0, 0.0, 0.0])
    xyz = torch.cat([near, far])[torch.randperm(200)]
    is_far = xyz[:, 0] > 5
    for count in (2, 6):
        picked = farthest_point_sample(xyz[None], count)[0]
        assert is_far[picked].any() and (~is_far[picked]).any(), count


def test_fps_spreads_points():
    """FPS's defining property: no two centres are closer than the farthest any point lies from its nearest
    centre; and its centres lie much farther apart than the same number of arbitrary points."""
    xyz = _cloud(400, 3, seed=1)
    count = 16

    def covering_radius(index):
        return torch.cdist(xyz, xyz[index]).min(dim=1).values.max()

    def closest_pair(index):
        distance = torch.cdist(xyz[index], xyz[index])
        return distance[~torch.eye(len(index), dtype=torch.bool)].min()

    fps = farthest_point_sample(xyz[None], count)[0]
    assert closest_pair(fps) >= covering_radius(fps) - 1e-6
    assert closest_pair(fps) > 3 * closest_pair(torch.arange(count))


def test_fps_is_deterministic_and_batched_per_cloud():
    clouds = torch.stack([_cloud(120, 3, seed=2), _cloud(120, 3, seed=3)])
    torch.manual_seed(0)
    first = farthest_point_sample(clouds, 10)
    torch.manual_seed(1)
    again = farthest_point_sample(clouds, 10)
    assert torch.equal(first, again)
    # each row of the batch is sampled as if alone
    assert torch.equal(first[1], farthest_point_sample(clouds[1:], 10)[0])
    assert not torch.equal(first[0], first[1])


# -- grouping -------------------------------------------------------------------------------------------


def test_group_points_shapes():
    points = torch.stack([_cloud(100, 6, seed=s) for s in range(3)])
    centres, groups = group_points(points, num_groups=7, group_size=5)
    assert centres.shape == (3, 7, 3)
    assert groups.shape == (3, 7, 5, 6)


def test_groups_are_the_k_nearest_points_relative_to_their_centre():
    points = torch.stack([_cloud(60, 6, seed=4), _cloud(60, 6, seed=5)])
    k = 6
    centres, groups = group_points(points, num_groups=5, group_size=k)
    for b in range(2):
        cloud = points[b].numpy().astype(np.float64)
        for g in range(5):
            centre = centres[b, g].numpy()
            # the centre is one of the cloud's points
            assert np.abs(cloud[:, :3] - centre).sum(axis=1).min() < 1e-6
            nearest = np.argsort(np.linalg.norm(cloud[:, :3] - centre, axis=1))[:k]
            expected = cloud[nearest].copy()
            expected[:, :3] -= centre
            got = groups[b, g].numpy()
            # the same rows, in any order: sort both by their first coordinate
            expected = expected[np.lexsort(expected.T[::-1])]
            got = got[np.lexsort(got.T[::-1])]
            np.testing.assert_allclose(got, expected, atol=1e-5)
            # colours are carried unchanged
            np.testing.assert_allclose(np.sort(got[:, 3:], axis=0), np.sort(cloud[nearest, 3:], axis=0), atol=1e-6)


def test_each_group_contains_its_own_centre_at_the_origin():
    points = _cloud(80, 6, seed=6)[None]
    _, groups = group_points(points, num_groups=8, group_size=4)
    distance = groups[0, :, :, :3].norm(dim=-1)  # (G, K)
    assert torch.all(distance.min(dim=1).values < 1e-6)


@pytest.mark.parametrize(("num_points", "group_size"), [(1000, 8), (1003, 8), (4096, 32), (40, 32)])
def test_group_indices_match_a_full_nearest_neighbour_search(num_points, group_size):
    """The block-pruned kNN (and the padded width when N does not split evenly) finds the same neighbour sets
    as sorting every exact distance, for every cloud of a batch."""
    xyz = torch.stack([_cloud(num_points, 3, seed=10 + s) * 4 - 2 for s in range(2)])
    centres, neighbours = group_indices(xyz, num_groups=12, group_size=group_size)
    assert torch.equal(centres, farthest_point_sample(xyz, 12))
    assert neighbours.shape == (2, 12, group_size)
    for b in range(2):
        exact = ((xyz[b, centres[b], None].double() - xyz[b].double()) ** 2).sum(-1)  # (G, N)
        expected = exact.argsort(dim=1)[:, :group_size]
        for g in range(12):
            assert set(neighbours[b, g].tolist()) == set(expected[g].tolist())


@pytest.mark.parametrize("width", [5000, 4096, 300])
def test_smallest_finds_the_k_smallest_of_every_row(width):
    """Two levels of block pruning with padding at each (5000 -> 625 -> 79 columns), one level, and none."""
    values = torch.rand(3, 5, width, generator=torch.Generator().manual_seed(width))
    found = smallest(values, 10)
    expected = values.argsort(dim=-1)[..., :10]
    assert found.shape == (3, 5, 10)
    assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(found.flatten(0, 1), expected.flatten(0, 1)))


def test_fps_is_exact_far_from_the_origin():
    """The distance expansion |p|^2 + |c|^2 - 2 p.c runs on a centred cloud, so a cloud metres away from the
    origin is sampled as it would be at the origin."""
    xyz = _cloud(500, 3, seed=11)[None]
    assert torch.equal(farthest_point_sample(xyz + torch.tensor([300.0, -200.0, 50.0]), 20), farthest_point_sample(xyz, 20))


def test_groups_stay_differentiable_in_the_points_dtype():
    """Grouping picks its indices off the autograd graph (in numpy, on the CPU); the gathered centres and
    groups keep the points' dtype and carry gradients back to every point they contain."""
    points = _cloud(64, 6, seed=12)[None].double().requires_grad_()
    centres, groups = group_points(points, num_groups=4, group_size=8)
    assert centres.dtype == groups.dtype == torch.float64
    groups[..., 3:].sum().backward()
    used = torch.unique(group_indices(points[..., :3].detach(), 4, 8)[1])
    assert torch.all(points.grad[0, used, 3:] > 0) and points.grad[0, :, 3:].count_nonzero() == 3 * len(used)


def test_grouping_needs_enough_points():
    with pytest.raises(ValueError, match="groups of 32 need at least that many points, got 20"):
        group_indices(_cloud(20, 3)[None], num_groups=4, group_size=32)


# -- preparing clouds -----------------------------------------------------------------------------------


def test_prepare_cloud_drops_non_finite_rows_and_resamples():
    cloud = _cloud(50, 6, seed=7).numpy()
    cloud[3, 0] = np.nan
    cloud[10, 4] = np.inf
    cloud[20, 2] = -np.inf
    out = prepare_cloud(cloud, num_points=64, min_points=8)
    assert out.shape == (64, 6)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    finite = {tuple(row) for row in np.delete(cloud, [3, 10, 20], axis=0).astype(np.float32).tolist()}
    rows = {tuple(row) for row in out.tolist()}
    assert rows <= finite
    assert len(rows) == 47  # every finite point is kept when upsampling


def test_prepare_cloud_downsamples_to_distinct_points():
    cloud = _cloud(500, 6, seed=8)
    out = prepare_cloud(cloud, num_points=64, min_points=8)
    assert out.shape == (64, 6)
    assert len({tuple(row) for row in out.tolist()}) == 64
    assert torch.equal(out, prepare_cloud(cloud, num_points=64, min_points=8))  # deterministic


def test_prepare_cloud_keeps_an_exact_count():
    cloud = _cloud(64, 6, seed=9)
    assert torch.equal(prepare_cloud(cloud, 64, 8), cloud)


@pytest.mark.parametrize(
    ("cloud", "message"),
    [
        (np.zeros((0, 6), np.float32), "0 finite points of 0"),
        (np.full((100, 6), np.nan, np.float32), "0 finite points of 100"),
        (np.random.default_rng(0).random((5, 6)), "5 finite points of 5; need at least 8"),
        (np.random.default_rng(0).random((100, 2)), r"\(N, 6\) array, got shape \(100, 2\)"),
        (np.random.default_rng(0).random((100, 3)), r"\(N, 6\) array, got shape \(100, 3\)"),
        (np.random.default_rng(0).random(100), r"got shape \(100,\)"),
        (np.random.default_rng(0).random((2, 100, 6)), r"got shape \(2, 100, 6\)"),
    ],
    ids=["empty", "all-nan", "too-few", "two-columns", "xyz-only", "flat", "batched"],
)
def test_prepare_cloud_rejects_unusable_clouds(cloud, message):
    with pytest.raises(ValueError, match=message):
        prepare_cloud(cloud, num_points=64, min_points=8)


def test_prepare_cloud_counts_only_finite_points_against_the_minimum():
    cloud = _cloud(20, 6, seed=10).numpy()
    cloud[:15, 1] = np.nan  # 5 finite points left
    with pytest.raises(ValueError, match="5 finite points of 20"):
        prepare_cloud(cloud, num_points=64, min_points=8)


# -- encoders -------------------------------------------------------------------------------------------


def test_point_encoder_output_shape_and_finite():
    torch.manual_seed(0)
    config = PointEncoderConfig(num_groups=8, group_size=8, hidden_size=32, layers=1, heads=2)
    encoder = PointEncoder(config).eval()
    tokens = encoder(torch.stack([_cloud(64, 6, seed=s) for s in range(2)]))
    assert tokens.shape == (2, 1 + 8, 32)
    assert encoder.out_dim == 32
    assert torch.isfinite(tokens).all()


def test_point_encoder_does_not_depend_on_point_order():
    torch.manual_seed(0)
    config = PointEncoderConfig(num_groups=4, group_size=8, hidden_size=32, layers=1, heads=2)
    encoder = PointEncoder(config).eval()
    cloud = _cloud(64, 6, seed=11)
    shuffled = cloud[torch.randperm(64)]
    with torch.no_grad():
        torch.testing.assert_close(encoder(cloud[None]), encoder(shuffled[None]), atol=1e-5, rtol=1e-4)


def test_point_tokens_are_the_mini_pointnet_over_each_point_beside_its_groups_pooled_feature():
    """The second MLP's first layer takes [pooled, point] per point (the checkpoints' layout); the encoder
    adds its pooled half once per group. Both must give the same tokens, gradients included."""
    torch.manual_seed(0)
    encoder = PointEncoder(PointEncoderConfig(num_groups=4, group_size=8, hidden_size=32, layers=1, heads=2)).eval()
    cloud = _cloud(64, 6, seed=3)[None]
    centres, groups = group_points(cloud, 4, 8)
    features = encoder.first(groups)
    pooled = features.max(dim=2, keepdim=True).values.expand_as(features)
    expected = encoder.second(torch.cat([pooled, features], dim=-1)).max(dim=2).values
    tokens = encoder(cloud)
    reference = torch.cat([encoder.cls_token, expected], dim=1) + torch.cat([encoder.cls_position, encoder.position(centres)], dim=1)
    torch.testing.assert_close(tokens, encoder.norm(encoder.transformer(reference)), atol=1e-5, rtol=1e-4)
    tokens.sum().backward()
    assert encoder.second[0].weight.grad.abs().sum() > 0


def _image_encoder():
    torch.manual_seed(0)
    return ImageEncoder(ImageEncoderConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2)).eval()


def test_image_encoder_output_shape():
    encoder = _image_encoder()
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    tokens = encoder(images)
    assert tokens.shape == (3, 1 + (32 // 8) ** 2, 32)
    assert encoder.out_dim == 32
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (16, 16)])
def test_image_encoder_resizes_other_sizes(size):
    encoder = _image_encoder()
    images = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8)
    assert encoder(images).shape == (2, 17, 32)


def test_image_encoder_resizing_matches_a_downscaled_image():
    """A 64x64 image made of 2x2 blocks encodes like its 32x32 original (bilinear resize is exact there)."""
    encoder = _image_encoder()
    small = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    big = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    with torch.no_grad():
        torch.testing.assert_close(encoder(big), encoder(small), atol=1e-4, rtol=1e-4)


# -- projectors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_linear_and_mlp_projectors_keep_the_token_count(kind):
    projector = build_projector(ProjectorConfig(kind), 32, 64)
    assert projector(torch.randn(2, 9, 32)).shape == (2, 9, 64)
    assert projector(torch.randn(1, 17, 32)).shape == (1, 17, 64)


def test_resampler_gives_num_queries_tokens():
    torch.manual_seed(0)
    projector = build_projector(ProjectorConfig("resampler", num_queries=5, layers=2, heads=4), 32, 64)
    assert isinstance(projector, Resampler)
    assert projector(torch.randn(2, 9, 32)).shape == (2, 5, 64)
    assert projector(torch.randn(3, 100, 32)).shape == (3, 5, 64)


def test_resampler_depends_on_its_input():
    torch.manual_seed(0)
    projector = build_projector(ProjectorConfig("resampler", num_queries=3, layers=1, heads=2), 16, 8).eval()
    a, b = torch.randn(1, 7, 16), torch.randn(1, 7, 16)
    assert not torch.allclose(projector(a), projector(b))


# -- config validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ProjectorConfig("transformer"), "unknown projector kind 'transformer'"),
        (lambda: ProjectorConfig("resampler", num_queries=0), "must be positive"),
        (lambda: ProjectorConfig("resampler", layers=0), "must be positive"),
        (lambda: ProjectorConfig("resampler", heads=0), "must be positive"),
        (lambda: build_projector(ProjectorConfig("resampler", heads=5), 32, 64), "heads 5 must divide"),
        (lambda: ImageEncoderConfig(image_size=30, patch_size=8), "image_size 30 must be a multiple of patch_size 8"),
        (lambda: ImageEncoderConfig(hidden_size=30, heads=4), "hidden_size 30 must be divisible by heads 4"),
        (lambda: PointEncoderConfig(num_groups=0), "must be positive"),
        (lambda: PointEncoderConfig(group_size=0), "must be positive"),
        (lambda: PointEncoderConfig(hidden_size=30, heads=4), "hidden_size 30 must be divisible by heads 4"),
        (lambda: PointEncoderConfig(in_channels=2), "in_channels >= 3"),
    ],
)
def test_bad_configs_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
