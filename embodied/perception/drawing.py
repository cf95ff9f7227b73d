"""What the robot believes, drawn over what its head camera sees: a box and a label per perceived object, so
a GIF shows where perception and reality part."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from embodied.perception.camera import HeadMount
from envs.scene import COLOURS, CONTAINER_WALL_HEIGHT, ObjectSpec


def project(points: np.ndarray, pose: tuple[float, float, float], size: tuple[int, int], mount: HeadMount = HeadMount()) -> np.ndarray | None:
    """Pixel (column, row) of world points in a head-camera image of ``size`` (width, height) taken at
    ``pose``; None if any point is behind the camera."""
    position, rotation = mount.pose(*pose)
    cam = (np.asarray(points, float) - position) @ rotation
    if np.any(cam[:, 2] > -0.05):
        return None
    width, height = size
    focal = 0.5 * height / np.tan(np.radians(mount.fovy_deg) / 2)
    return np.column_stack([cam[:, 0] / -cam[:, 2] * focal + width / 2, -cam[:, 1] / -cam[:, 2] * focal + height / 2])


def draw_objects(image: np.ndarray, objects: list[ObjectSpec], pose: tuple[float, float, float], mount: HeadMount = HeadMount()) -> np.ndarray:
    """``image``: the head camera's view at ``pose``; each object's box, outlined in its perceived colour,
    and its name."""
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        bottom = obj.z if obj.is_container else obj.z - obj.half
        top = bottom + (CONTAINER_WALL_HEIGHT if obj.is_container else 2 * obj.half)
        corners = np.array([[obj.x + dx * obj.half, obj.y + dy * obj.half, z] for dx in (-1, 1) for dy in (-1, 1) for z in (bottom, top)])
        pixels = project(corners, pose, canvas.size, mount)
        if pixels is None:
            continue
        (left, upper), (right, lower) = pixels.min(axis=0), pixels.max(axis=0)
        if right < 0 or lower < 0 or left >= canvas.width or upper >= canvas.height:
            continue
        colour = tuple(int(255 * c) for c in COLOURS.get(obj.colour, (1.0, 1.0, 1.0)))
        draw.rectangle([left, upper, right, lower], outline=colour, width=2)
        draw.text((left, max(0, upper - 11)), obj.name, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(canvas)
