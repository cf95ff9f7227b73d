"""Point clouds from RGB-D: back-projection to the world frame, open3d voxel down-sampling, fixed-size sampling."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import open3d as o3d

from envs.backend import CameraFrame


@lru_cache(maxsize=8)
def pixel_rays(height: int, width: int, fovy_deg: float, stride: int) -> np.ndarray:
    """Camera-frame direction of every ``stride``-th pixel, scaled so that times depth gives the point."""
    focal = 0.5 * height / np.tan(np.radians(fovy_deg) / 2)
    u = (np.arange(0, width, stride) + 0.5 - width / 2) / focal
    v = (np.arange(0, height, stride) + 0.5 - height / 2) / focal
    rays = np.stack(np.broadcast_arrays(u[None, :], -v[:, None], -np.ones((len(v), len(u)))), axis=-1)
    return rays.reshape(-1, 3).astype(np.float32)


def backproject(
    frame: CameraFrame, max_depth: float, stride: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """World-frame xyz, colour in [0, 1] and object index of every ``stride``-th pixel (in each direction)
    closer than ``max_depth``."""
    height, width = frame.depth.shape
    depth = frame.depth[::stride, ::stride].reshape(-1)
    keep = np.flatnonzero(np.isfinite(depth) & (depth > 0) & (depth < max_depth))
    cam_points = pixel_rays(height, width, frame.fovy_deg, stride)[keep] * depth[keep, None]
    xyz = cam_points @ frame.rotation.T.astype(np.float32) + frame.position.astype(np.float32)
    rgb = frame.rgb[::stride, ::stride].reshape(-1, 3)[keep].astype(np.float32) / 255.0
    seg = None if frame.segmentation is None else frame.segmentation[::stride, ::stride].reshape(-1)[keep]
    return xyz, rgb, seg


def sample_cloud(
    xyz: np.ndarray,
    rgb: np.ndarray,
    seg: np.ndarray | None,
    num_points: int,
    voxel_size: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Voxel down-sample, then draw exactly ``num_points`` (with repeats when too few survive).

    Returns an (N, 6) float32 array of xyz + rgb and, when ``seg`` is given, the (N,) object index of
    each point (a voxel takes the label of one of its pixels). An empty input gives zeros
    and labels of -1, so the observation keeps its shape.
    """
    if len(xyz) == 0:
        return np.zeros((num_points, 6), np.float32), None if seg is None else np.full(num_points, -1, np.int32)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64))
    bound = np.abs(xyz).max() + voxel_size
    if seg is None:
        down = cloud.voxel_down_sample(voxel_size)
        labels = None
    else:
        down, members, _ = cloud.voxel_down_sample_and_trace(voxel_size, -np.full(3, bound), np.full(3, bound))
        labels = seg[members.max(axis=1)].astype(np.int32)  # members: source indices per voxel, -1 padded
    points = np.hstack([np.asarray(down.points), np.asarray(down.colors)]).astype(np.float32)
    pick = rng.choice(len(points), num_points, replace=len(points) < num_points)
    return points[pick], None if labels is None else labels[pick]
