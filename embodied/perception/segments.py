"""One frame's geometry: support surfaces by plane fitting, and the points standing on them clustered into
object segments (RANSAC and open3d's ``cluster_dbscan``), at the camera's full resolution.

Only points the robot cannot explain by itself are used: its arm, gripper and a held object are cut out
by the kinematics in its odometry, as a robot masks its own body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from envs.backend import RobotState

SUPPORT_HEIGHTS = (0.15, 1.2)  # m: where a table top can be (not the floor, not over the robot's head)
MIN_TABLE_POINTS = 40  # a horizontal plane with fewer inliers is noise, not a table top
MIN_TABLE_WIDTH = 0.04  # m: the inliers' spread across their narrow direction (a wall's level strip has none)
FOOTPRINT_CELL = 0.03  # m, the grid a table top's footprint is measured on
MIN_SURFACE_FILL = 0.35  # share of a table top's footprint (in 8 cm cells: far tops are sparse) its inliers cover
RANSAC_POINTS = 300  # a level plane is fitted to at most about this many of its band's points
RANSAC_ITERATIONS = 60
_DRAWS = np.random.default_rng(0).random((RANSAC_ITERATIONS, 3))  # RANSAC's samples, as shares of the points
PLANE_TOLERANCE = 0.006  # m, a table top's inlier distance
ABOVE_SUPPORT = 0.008  # m: a point this far above a table top stands on it
MAX_OBJECT_HEIGHT = 0.30  # m above a table top
MAX_OBJECT_WIDTH = 0.3  # m: the widest object (a large container) with some margin
MIN_SEGMENT_POINTS = 12  # fewer points are too few to name: dropped, the next frame may see more
COLOUR_SPLIT = 0.12  # chromaticity distance between two objects' colours, beyond shading
PALETTE_SPLIT = 0.2  # a colour group with this share of a cluster's points becomes its own segment


@dataclass
class SupportPlane:
    """A horizontal surface: its height and the xy bounds of its inlier points in this frame."""

    height: float
    low: np.ndarray  # (2,)
    high: np.ndarray  # (2,)


@dataclass
class Segment:
    """The points of one object candidate in one frame."""

    points: np.ndarray  # (N, 6) world xyz + rgb in [0, 1]
    pixels: np.ndarray  # (N,) flat pixel indices, for drawing
    support: float  # height of the surface it stands on
    group: int  # the colour group (``colour_group``) of most of its points

    @property
    def centre(self) -> np.ndarray:
        return self.points[:, :3].mean(axis=0)


def self_mask(xyz: np.ndarray, robot: RobotState, held_half: float = 0.0) -> np.ndarray:
    """Points on the robot's own arm and gripper, or on what it holds (from its joint positions); only the
    points within the arm's reach of the base are tested."""
    dx, dy = xyz[:, 0] - robot.x, xyz[:, 1] - robot.y
    near = np.flatnonzero(dx * dx + dy * dy < (robot.extend + 0.35 + 1.5 * held_half) ** 2)
    dx, dy, z = dx[near], dy[near], xyz[near, 2]
    c, s = np.cos(robot.yaw), np.sin(robot.yaw)
    along, across = c * dx + s * dy, -s * dx + c * dy
    mine = (np.abs(across) < 0.09) & (along > -0.3) & (along < robot.extend + 0.06) & (z > robot.lift - 0.03) & (z < robot.lift + 0.17)
    mine |= dx * dx + dy * dy < 0.26**2  # the body
    if held_half > 0:
        mine |= np.linalg.norm(xyz[near] - robot.grasp_point, axis=1) < 1.5 * held_half + 0.03
    mask = np.zeros(len(xyz), bool)
    mask[near[mine]] = True
    return mask


def support_planes(xyz: np.ndarray) -> list[SupportPlane]:
    """Horizontal table tops: peaks of the points' height histogram, each refined by RANSAC plane
    fitting on the points near it, then split into surfaces by clustering the inliers' footprint cells. A
    level strip of wall at table height fits a plane too; it is dropped for having no width."""
    z = xyz[:, 2]
    bottom, top = SUPPORT_HEIGHTS
    raised = np.flatnonzero((z > bottom) & (z < top))
    if len(raised) < MIN_TABLE_POINTS:
        return []
    lifted = z[raised]
    counts = np.bincount(((lifted - bottom) * 100).astype(np.int64))  # 1 cm bins
    planes: list[SupportPlane] = []
    heights: list[float] = []
    for peak in np.argsort(counts)[::-1][:4]:
        if counts[peak] < MIN_TABLE_POINTS:
            break
        centre = bottom + (peak + 0.5) / 100
        if heights and min(abs(h - centre) for h in heights) < 0.03:
            continue
        band = raised[np.abs(lifted - centre) < 0.02]
        sample = band[:: max(1, len(band) // RANSAC_POINTS)]  # the plane from a sample, its inliers from all
        normal, inliers = _plane(xyz[sample].astype(np.float64))
        if abs(normal[2]) < 0.995 or len(inliers) * len(band) < MIN_TABLE_POINTS * len(sample):
            continue  # a slanted surface: an object's side, not a support
        height = float(np.median(z[sample[inliers]]))
        members = band[np.abs(z[band] - height) < PLANE_TOLERANCE]
        heights.append(height)
        cells, in_cell, cell_of = _footprint(xyz[members, :2])
        flat = np.column_stack([cells * FOOTPRINT_CELL, np.zeros(len(cells))])
        labels = np.asarray(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(flat)).cluster_dbscan(2.5 * FOOTPRINT_CELL, 2))
        sizes = np.bincount(labels[labels >= 0], weights=in_cell[labels >= 0])
        for label in np.flatnonzero(sizes >= MIN_TABLE_POINTS):
            mine = labels == label
            if _is_surface(cells[mine], in_cell[mine]):
                xy = xyz[members[mine[cell_of]], :2]
                low, high = xy.min(axis=0), xy.max(axis=0)
                if not _stands_on(low, high, planes):
                    planes.append(SupportPlane(height, low, high))
    return planes


def _plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC: of the planes through three of the points, the one most points lie within
    ``PLANE_TOLERANCE`` of; its unit normal refitted to those inliers (least squares), and their indices.
    The same draws every call: the same points give the same plane whatever ran before and however many
    threads run (open3d's ``segment_plane`` draws from a global generator across threads)."""
    picks = points[(_DRAWS * len(points)).astype(np.int64)]  # (iterations, 3 points, xyz)
    normals = np.cross(picks[:, 1] - picks[:, 0], picks[:, 2] - picks[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    keep = lengths > 1e-12  # three points on a line (or one point twice) span no plane
    if not keep.any():
        return np.zeros(3), np.zeros(0, np.int64)
    normals = normals[keep] / lengths[keep, None]
    offsets = (normals * picks[keep, 0]).sum(axis=1)
    near = np.abs(points @ normals.T - offsets) < PLANE_TOLERANCE  # (points, planes)
    inliers = np.flatnonzero(near[:, np.argmax(near.sum(axis=0))])
    centred = points[inliers] - points[inliers].mean(axis=0)
    return np.linalg.eigh(centred.T @ centred)[1][:, 0], inliers


def _stands_on(low: np.ndarray, high: np.ndarray, planes: list[SupportPlane]) -> bool:
    """Is this level surface (its xy bounds) mostly over one already found (the rims of containers on a
    table are level too, and side by side wider than any one object)?"""
    area = max(float(np.prod(high - low)), 1e-6)
    for plane in planes:
        overlap = np.clip(np.minimum(high, plane.high) - np.maximum(low, plane.low), 0, None)
        if np.prod(overlap) > 0.5 * area:
            return True
    return False


def _footprint(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``FOOTPRINT_CELL`` cells (K, 2) the points fall in, how many fall in each, and each point's cell
    (one count over the points' bounding box, no sort)."""
    ij = np.floor(xy / FOOTPRINT_CELL).astype(np.int64)
    origin = ij.min(axis=0)
    ij -= origin
    rows = int(ij[:, 1].max()) + 1
    flat = ij[:, 0] * rows + ij[:, 1]
    counts = np.bincount(flat)
    occupied = np.flatnonzero(counts)
    index = np.zeros(len(counts), np.int64)
    index[occupied] = np.arange(len(occupied))
    return np.column_stack([occupied // rows, occupied % rows]) + origin, counts[occupied], index[flat]


def _is_surface(cells: np.ndarray, weights: np.ndarray, coarse: float = 0.08) -> bool:
    """Footprint cells (with their point counts) that fill an area wider than any object (whose flat tops are
    level too), not a level strip of wall (no width) or a corner of two (empty inside; judged on ``coarse``
    cells, as far tops are sparse)."""
    low = cells.min(axis=0)
    span = cells.max(axis=0) - low
    if span.max() * FOOTPRINT_CELL < MAX_OBJECT_WIDTH:
        return False
    # the spread across the narrow direction: the smaller eigenvalue of the cells' weighted covariance
    centred = (cells - (weights @ cells) / weights.sum()) * FOOTPRINT_CELL
    (a, b), (_, c) = (centred.T * weights) @ centred / weights.sum()
    if (a + c) / 2 - np.hypot((a - c) / 2, b) < MIN_TABLE_WIDTH**2:
        return False
    big = ((cells - low) * (FOOTPRINT_CELL / coarse)).astype(np.int64)
    extent = big.max(axis=0) + 1
    filled = np.zeros(extent, bool)
    filled[big[:, 0], big[:, 1]] = True
    return filled.sum() >= MIN_SURFACE_FILL * extent[0] * extent[1]


# palette colours as chromaticity (r, g, b) / (r + g + b); greys are told apart by brightness
_CHROMA = {
    "red": (0.79, 0.11, 0.09), "green": (0.14, 0.67, 0.19), "blue": (0.11, 0.22, 0.67), "yellow": (0.50, 0.45, 0.05),
    "purple": (0.37, 0.13, 0.50), "orange": (0.64, 0.33, 0.03),
}
_CHROMA_TABLE = np.array(list(_CHROMA.values()), np.float32)


def colour_group(rgb: np.ndarray) -> np.ndarray:
    """The nearest palette hue of each point by chromaticity (shading scales a colour, chromaticity stays), or
    6 and 7 for light and dark greys: enough to tell an item from the container it lies in."""
    total = np.maximum(rgb.sum(axis=1, keepdims=True), 1e-6)
    chroma = rgb / total
    nearest = np.argmin(((chroma[:, None, :] - _CHROMA_TABLE[None]) ** 2).sum(axis=2), axis=1)
    grey = np.abs(chroma - 1 / 3).max(axis=1) < 0.08
    return np.where(grey, np.where(rgb.max(axis=1) > 0.4, 6, 7), nearest)


def object_segments(
    xyz: np.ndarray, rgb: np.ndarray, pixels: np.ndarray, planes: list[SupportPlane], camera: np.ndarray, focal: float
) -> list[Segment]:
    """Clusters of the points standing on each support surface, split by colour where one cluster holds
    two (an item lying in a container), and pieces of one colour that nearly touch joined again (a bowl's
    near and far walls). The clustering radius follows the gap between neighbouring pixels' rays at the
    points' distance from the ``camera`` (``focal`` in pixels)."""
    segments: list[Segment] = []
    for plane in planes:
        low, high = plane.low - 0.02, plane.high + 0.02
        above = (xyz[:, 2] > plane.height + ABOVE_SUPPORT) & (xyz[:, 2] < plane.height + MAX_OBJECT_HEIGHT)
        above &= np.all((xyz[:, :2] >= low) & (xyz[:, :2] <= high), axis=1)
        index = np.flatnonzero(above)
        if len(index) < MIN_SEGMENT_POINTS:
            continue
        spacing = float(np.median(np.linalg.norm(xyz[index] - camera, axis=1))) / focal
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[index].astype(np.float64)))
        labels = np.asarray(cloud.cluster_dbscan(eps=float(np.clip(2.5 * spacing, 0.012, 0.03)), min_points=3))
        pieces = []
        groups = np.full(len(xyz), -1)
        groups[index] = colour_group(rgb[index])
        for label in range(labels.max() + 1):
            members = index[labels == label]
            values, counts = np.unique(groups[members], return_counts=True)
            major = _distinct(rgb[members], groups[members], values[counts >= PALETTE_SPLIT * len(members)])
            if len(major) <= 1:
                pieces.append((members, values[np.argmax(counts)]))
                continue
            means = np.stack([rgb[members][groups[members] == v].mean(axis=0) for v in major])
            nearest = np.argmin(((rgb[members][:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
            pieces += [(members[nearest == k], v) for k, v in enumerate(major)]
        for members in _join_touching(xyz, pieces):
            if len(members) >= MIN_SEGMENT_POINTS and (xyz[members, :2].max(axis=0) - xyz[members, :2].min(axis=0)).max() <= MAX_OBJECT_WIDTH:
                group = int(np.bincount(groups[members]).argmax())
                segments.append(Segment(np.hstack([xyz[members], rgb[members]]), pixels[members], plane.height, group))
    return segments


def _distinct(rgb: np.ndarray, groups: np.ndarray, major: np.ndarray) -> np.ndarray:
    """The colour groups that differ from every larger one by more than shading does (a lit and a shaded
    face of one object fall into neighbouring hues or greys)."""
    kept: list[int] = []
    for value in major:
        mean = rgb[groups == value].mean(axis=0)
        if all(_colour_distance(mean, rgb[groups == k].mean(axis=0)) > COLOUR_SPLIT for k in kept):
            kept.append(int(value))
    return np.array(kept)


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Chromaticity distance, or for two greys how many times brighter one is."""
    ca, cb = a / max(a.sum(), 1e-6), b / max(b.sum(), 1e-6)
    if max(np.abs(ca - 1 / 3).max(), np.abs(cb - 1 / 3).max()) < 0.08:  # a white's shaded side is 3x darker
        return COLOUR_SPLIT * float(abs(np.log(max(a.max(), 1e-3) / max(b.max(), 1e-3))) / np.log(5))
    return float(np.linalg.norm(ca - cb))


def one_object(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], gap: float = 0.045) -> bool:
    """Can two footprints (xy low and high corners) of one colour be pieces of one object? They lie within
    ``gap`` of each other (objects stand at least 5 cm apart) and together are no wider than an object."""
    apart = np.maximum(a[0] - b[1], b[0] - a[1]).max()
    union = np.maximum(a[1], b[1]) - np.minimum(a[0], b[0])
    return bool(apart < gap and union.max() <= MAX_OBJECT_WIDTH)


def _join_touching(xyz: np.ndarray, pieces: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """Pieces of one colour group that are one object (``one_object``), as one."""
    boxes = [(xyz[m, :2].min(axis=0), xyz[m, :2].max(axis=0)) for m, _ in pieces]
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(pieces)):
        for j in range(i):
            if pieces[i][1] == pieces[j][1] and one_object(boxes[i], boxes[j]):
                parent[root(i)] = root(j)
    joined: dict[int, list[np.ndarray]] = {}
    for i, (members, _) in enumerate(pieces):
        joined.setdefault(root(i), []).append(members)
    return [np.concatenate(parts) for parts in joined.values()]
