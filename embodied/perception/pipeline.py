"""Perception end to end: RGB-D frames and odometry in; the perceived scene (tables, named objects with
poses and sizes), the skills' world state and the navigation map out. The episode loop and the ROS 2
perception node both run this one class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from embodied.perception.camera import Frame, HeadMount, frame_points, pixel_colours
from embodied.perception.memory import ObjectMemory, Track
from embodied.perception.naming import ObjectNamer
from embodied.perception.occupancy import OccupancyGrid
from embodied.perception.segments import ABOVE_SUPPORT, MAX_OBJECT_HEIGHT, Segment, SupportPlane, object_segments, self_mask, support_planes
from envs.backend import RobotState, WorldState
from envs.navmap import NavMap
from envs.scene import SceneSpec

MAX_JUMP = 0.5  # m between consecutive frames' odometry: more is a relocalisation, not motion
SEE_THROUGH = 0.05  # m: depth this far beyond a remembered object means it is no longer there


@dataclass(frozen=True)
class PerceptionConfig:
    max_depth: float = 6.0
    grid_resolution: float = 0.05
    grid_half_extent: float = 6.0  # m around the odometry origin

    def __post_init__(self):
        if not (self.max_depth > 0 and self.grid_resolution > 0 and self.grid_half_extent > self.grid_resolution):
            raise ValueError("max_depth, grid_resolution and grid_half_extent must be positive (the grid wider than a cell)")


@dataclass
class FrameReport:
    """What one frame added, or why it added nothing."""

    segments: int = 0
    objects_seen: int = 0
    skipped: str = ""  # "no depth: ...", "odometry jump: ..."


class Perception:
    def __init__(self, config: PerceptionConfig = PerceptionConfig(), namer: ObjectNamer | None = None, mount: HeadMount = HeadMount()):
        self.config, self.mount = config, mount
        self.namer = namer if namer is not None else ObjectNamer()
        self.memory = ObjectMemory()
        self.grid = OccupancyGrid(config.grid_resolution, config.grid_half_extent)
        self.frames = 0
        self._last_pose: tuple[float, float, float] | None = None
        # what the skills read between frames (every control step): the named objects' centres, the held
        # one's name and the scene, worked out once per change of the memory
        self._view: tuple[dict[str, np.ndarray], str | None, SceneSpec] | None = None

    def update(self, frame: Frame, robot: RobotState) -> FrameReport:
        """Fuse one frame taken at ``robot``'s odometry; ``robot.holding`` says only whether the gripper
        holds something (a real gripper knows that much, not what)."""
        self._view = None
        depth, rgb = np.asarray(frame.depth), np.asarray(frame.rgb)
        if depth.ndim != 2 or rgb.shape != (*depth.shape, 3):
            return FrameReport(skipped=f"bad frame: depth {depth.shape} and rgb {rgb.shape} do not match")
        if not np.isfinite(frame.pose).all():
            return FrameReport(skipped="bad odometry: the pose is not finite")
        jumped = self._last_pose is not None and np.hypot(frame.pose[0] - self._last_pose[0], frame.pose[1] - self._last_pose[1]) > MAX_JUMP
        self._last_pose = tuple(frame.pose)
        if jumped:
            return FrameReport(skipped=f"odometry jump: more than {MAX_JUMP} m since the last frame; frame not fused")
        self.track_gripper(robot)
        xyz, pixels = frame_points(frame, self.mount, self.config.max_depth)
        if len(xyz) == 0:
            return FrameReport(skipped="no depth: the frame has no valid depth")
        held_half = max((t.extent_half() for t in self.memory.held()), default=0.0)
        keep = ~self_mask(xyz, robot, held_half)
        xyz, pixels = xyz[keep], pixels[keep]
        self.frames += 1
        self.grid.add(xyz)
        planes = support_planes(xyz)
        self.memory.add_planes(planes)
        segments = self._segments(frame, xyz, pixels, planes) if planes else []
        seen = self.memory.add_segments(segments)
        self.memory.forget_unseen(self._seen_through(frame, {t.id for t in seen}))
        self._name()
        return FrameReport(len(segments), len(seen))

    def _segments(self, frame: Frame, xyz: np.ndarray, pixels: np.ndarray, planes: list[SupportPlane]) -> list[Segment]:
        """Objects at the camera's full resolution (a far one covers few pixels), from the points of the table
        tops' height band."""
        heights = [p.height for p in planes]
        z = xyz[:, 2]
        band = np.flatnonzero((z > min(heights) + ABOVE_SUPPORT) & (z < max(heights) + MAX_OBJECT_HEIGHT))
        position, _ = self.mount.pose(*frame.pose)
        return object_segments(xyz[band], pixel_colours(frame, pixels[band]), pixels[band], planes, position, self._focal(np.shape(frame.depth)[0]))

    # -- what the skills, the planner and the ROS node read ------------------------------------------

    def scene(self) -> SceneSpec:
        return self._current()[2]

    def world_state(self, robot: RobotState, time: float = 0.0) -> WorldState:
        """The robot from odometry, the named objects where perception puts them; ``holding`` names the
        object riding in the gripper."""
        centres, held, _ = self._current()
        robot = dataclasses.replace(robot, holding=held if robot.holding is not None else None)
        return WorldState(robot, dict(centres), time)

    def known_objects(self) -> list[str]:
        return list(self._current()[0])

    def object_clouds(self) -> dict[str, np.ndarray]:
        """The fused world-frame cloud of each object ``known_objects`` names: what object tokens are made of."""
        return {name: track.points for name, track in self.memory.named().items()}

    def navmap(self) -> NavMap:
        return self.grid.navmap()

    # -- internals ------------------------------------------------------------------------------------

    def _focal(self, height: int) -> float:
        return 0.5 * height / np.tan(np.radians(self.mount.fovy_deg) / 2)

    def track_gripper(self, robot: RobotState) -> None:
        """The gripper closed on something (the object nearest it rides with it from now on) or let go (the
        object drops into the container under it, or onto the nearest table top below)."""
        held = self.memory.held()
        if robot.holding is None and not held:
            return  # nothing held, nothing let go: what the skills read stands
        self._view = None
        if robot.holding is not None and not held:
            self.memory.grasp(robot.grasp_point)
        elif robot.holding is None and held:
            below = [t.height for t in self.memory.tables if t.height < robot.lift]
            self.memory.release(max(below, default=None))
        self.memory.carry(robot.grasp_point)

    def _current(self) -> tuple[dict[str, np.ndarray], str | None, SceneSpec]:
        if self._view is None:
            named = self.memory.named()
            held = next((name for name, t in named.items() if t.held_offset is not None), None)
            pose = self._last_pose or (0.0, 0.0, 0.0)
            scene = SceneSpec(-1, self.config.grid_half_extent, tuple(self.memory.table_specs()), tuple(self.memory.object_specs()), tuple(pose))
            self._view = ({name: t.centre() for name, t in named.items()}, held, scene)
        return self._view

    def _seen_through(self, frame: Frame, seen: set[int]) -> list[Track]:
        """Confirmed objects not seen in this frame although their place is in view and the depth there
        lies beyond them."""
        depth = np.asarray(frame.depth, np.float32)
        height, width = depth.shape
        position, rotation = self.mount.pose(*frame.pose)
        focal = self._focal(height)
        gone = []
        for track in self.memory.confirmed():
            if track.id in seen or track.held_offset is not None:
                continue
            cam = rotation.T @ (track.centre() - position)
            if cam[2] > -0.1:
                continue  # behind the camera
            col = int(cam[0] / -cam[2] * focal + width / 2)
            row = int(-cam[1] / -cam[2] * focal + height / 2)
            if not (2 <= col < width - 2 and 2 <= row < height - 2):
                continue
            there = depth[row, col]
            if np.isfinite(there) and there > -cam[2] + SEE_THROUGH:
                gone.append(track)
        return gone

    def _name(self) -> None:
        tracks = self.memory.to_name()
        for track, label in zip(tracks, self.namer.name([t.points for t in tracks])):
            track.name(label)
