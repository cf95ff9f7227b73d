"""Where the head camera is, from the robot's odometry and its fixed head mount, and the world-frame points
of a depth image seen from there. The simulator's own camera pose is never read: on a robot, odometry and
the mount are all there is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from envs.backend import HEAD_FOVY, HEAD_HEIGHT, HEAD_OFFSET, HEAD_PITCH_DEG
from envs.pointcloud import pixel_rays


@dataclass(frozen=True)
class HeadMount:
    """The head camera in the base frame: ahead of the base centre, at a height, pitched down."""

    offset: float = HEAD_OFFSET
    height: float = HEAD_HEIGHT
    pitch_deg: float = HEAD_PITCH_DEG
    fovy_deg: float = HEAD_FOVY

    def pose(self, x: float, y: float, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre and camera-to-world rotation (OpenGL axes: looking along -z, +y up)."""
        c, s = np.cos(yaw), np.sin(yaw)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ self.tilt
        return np.array([x + c * self.offset, y + s * self.offset, self.height]), rotation

    @cached_property
    def tilt(self) -> np.ndarray:
        """The camera's axes in the base frame (right, up, back), the same at any yaw."""
        pitch = np.radians(self.pitch_deg)
        right, up = np.array([0.0, -1.0, 0.0]), np.array([np.sin(pitch), 0.0, np.cos(pitch)])
        return np.column_stack([right, up, np.cross(right, up)])


@dataclass
class Frame:
    """One RGB-D frame and the odometry it was taken at."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float, metres along the optical axis; 0, NaN or inf where unknown
    pose: tuple[float, float, float]  # x, y, yaw of the base when the frame was taken


def frame_points(frame: Frame, mount: HeadMount, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """World-frame xyz (N, 3) and flat pixel index (N,) of every pixel with a valid depth, at full
    resolution."""
    depth = np.asarray(frame.depth, np.float32)
    height, width = depth.shape[:2]
    position, rotation = mount.pose(*frame.pose)
    rays = _rays(height, width, mount.fovy_deg)
    depth = depth.reshape(-1)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0) & (depth < max_depth)
    keep = np.arange(len(depth))
    if not valid.all():  # the usual indoor frame is all valid: no gathering needed
        keep = np.flatnonzero(valid)
        rays, depth = rays[keep], depth[keep]
    xyz = (rays * depth[:, None]) @ rotation.T.astype(np.float32)
    xyz += position.astype(np.float32)
    return xyz, keep


@lru_cache(maxsize=8)
def _rays(height: int, width: int, fovy_deg: float) -> np.ndarray:
    """``pixel_rays``, made once per camera (every frame of a camera has the same rays)."""
    rays = pixel_rays(height, width, fovy_deg, 1)
    rays.flags.writeable = False
    return rays


def pixel_colours(frame: Frame, pixels: np.ndarray) -> np.ndarray:
    """The colour in [0, 1] (N, 3) of flat pixel indices."""
    return np.asarray(frame.rgb).reshape(-1, 3)[pixels].astype(np.float32) * np.float32(1 / 255)
