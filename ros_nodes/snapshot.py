"""A recording's moment as a picture (``embodied replay FILE --snapshot PNG``): the head camera's frame with the
objects perception believed in at that moment drawn over it, and its occupancy map beside it with the
robot on it, for a look without Foxglove or RViz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nav_msgs.msg import OccupancyGrid, Odometry
from PIL import Image as Picture
from PIL import ImageDraw
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String

from embodied.perception.drawing import draw_objects
from ros_nodes.conversions import image_array, occupancy_grid_array, odometry_pose, scene_spec
from ros_nodes.recording import Recorded, read_messages

MAP_SHADES = {-1: 128, 0: 255, 100: 0}  # unknown grey, free white, occupied black


def snapshot(path: str | Path, at: float | None = None) -> np.ndarray:
    """RGB (H, W, 3): the camera frame nearest ``at`` seconds into the recording (the last one for None)."""
    messages = list(read_messages(path))
    images = [m for m in messages if m.topic.endswith("camera/image")]
    if not images:
        raise ValueError(f"{path} holds no camera/image: nothing to draw")
    start = messages[0].stamp_ns
    chosen = images[-1] if at is None else min(images, key=lambda m: abs(m.stamp_ns - start - at * 1e9))
    frame = image_array(deserialize_message(chosen.data, Image))
    pose = odometry_pose(deserialize_message(_at(messages, "odom", chosen.stamp_ns).data, Odometry))
    scene = _at(messages, "scene", chosen.stamp_ns)
    if scene is not None:
        objects = list(scene_spec(deserialize_message(scene.data, String)).objects)
        frame = draw_objects(frame, objects, pose)
    grid = _at(messages, "map", chosen.stamp_ns)
    if grid is None:
        return frame
    return np.concatenate(
        [frame, _map_picture(deserialize_message(grid.data, OccupancyGrid), pose, frame.shape[0])], axis=1
    )


def _at(messages: list[Recorded], topic: str, stamp_ns: int) -> Recorded | None:
    """The last message on ``topic`` (any namespace) at or before ``stamp_ns``."""
    earlier = [m for m in messages if m.topic.rsplit("/", 1)[-1] == topic and m.stamp_ns <= stamp_ns]
    return earlier[-1] if earlier else None


def _map_picture(msg: OccupancyGrid, pose: tuple[float, float, float], size: int) -> np.ndarray:
    """The map, x to the right and y up, cropped to what is known, scaled to ``size`` pixels, the robot a dot."""
    values, (ox, oy), resolution = occupancy_grid_array(msg)
    shades = np.full(values.shape, MAP_SHADES[-1], np.uint8)
    for value, shade in MAP_SHADES.items():
        shades[values == value] = shade
    known = np.argwhere(values >= 0)
    low, high = (known.min(axis=0), known.max(axis=0) + 1) if len(known) else ((0, 0), values.shape)
    crop = shades[low[0] : high[0], low[1] : high[1]].T[::-1]  # rows of y, top row the highest y
    picture = Picture.fromarray(crop).convert("RGB").resize((size, size), Picture.NEAREST)
    scale = np.array([size / crop.shape[1], size / crop.shape[0]])
    cell = np.array([(pose[0] - ox) / resolution - low[0], high[1] - (pose[1] - oy) / resolution])
    x, y = cell * scale
    ImageDraw.Draw(picture).ellipse([x - 4, y - 4, x + 4, y + 4], fill=(220, 40, 40))
    return np.asarray(picture)
