"""The object memory: segments fused across frames and views into tracked objects, named once they are seen
well enough, moved with the gripper while held, and forgotten when the camera looks where one was and sees
past it. Tables are fused the same way, from their top planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embodied.perception.naming import Label, label_of
from embodied.perception.segments import FOOTPRINT_CELL, Segment, SupportPlane, one_object
from envs.scene import CONTAINERS, HALF_SIZE, ObjectSpec, TableSpec

FUSE_VOXEL = 0.005  # m: fused points keep one per voxel
MAX_TRACK_POINTS = 3000
MATCH_MARGIN = 0.04  # m beyond an object's footprint within which a segment is the same object
CONFIRM_FRAMES = 2  # detections before an object is reported...
CONFIRM_POINTS = 40  # ...unless one detection already had this many points
FORGET_FRAMES = 3  # frames that saw through an object's place before it is forgotten...
FORGET_MOVED_FRAMES = 30  # ...or, for one let go and not seen since, this many (where it landed is a guess)
CONTAINER_FLOOR = 0.012  # m, a container's floor plate above what it stands on
NAME_POINTS = 16  # an object is first named once its fused cloud has this many points...
RENAME_GROWTH = 1.5  # ...and again when the cloud has grown this much since (more points, a surer name)...
SETTLED = (0.95, 256)  # ...unless its name is this sure, from at least this many points


@dataclass(eq=False)  # a tracked thing is itself, not its values: list.remove must not compare point arrays
class Track:
    id: int
    points: np.ndarray  # (N, 6) fused world xyz + rgb
    support: float  # height of the surface it stands on
    group: int  # colour group of most of its points
    seen: int = 1
    missed: int = 0
    label: Label | None = None
    named_at: int = 0  # point count when last named
    held_offset: np.ndarray | None = None  # points relative to the grasp point while held
    moved: bool = False  # released since last seen: the next detection replaces its points
    half: float | None = None  # footprint half-extent, fixed once seen resting on a table
    evidence: np.ndarray | None = None  # the namings' class probabilities, each weighted by its cloud's points
    weight: int = 0  # the sum of those weights

    def name(self, label: Label) -> None:
        """One more naming of the (grown) cloud, averaged with the earlier ones, each weighing as many points
        as its cloud had (a naming of 16 points counts little): a view from closer is not always surer (a
        sphere named at 0.97 from afar, then "cylinder" at 0.8 from near), and a name the plan relies on
        should not flip on one vaguer look. A naming without scores (a cloud the namer could not take)
        changes nothing already named."""
        self.named_at = len(self.points)
        if label.scores is not None:
            self._add_evidence(self.named_at * label.scores, self.named_at)
        elif self.evidence is None:
            self.label = label

    def absorb(self, piece: Track) -> None:
        """Join a piece of this object seen apart; both namings still count, and the whole is named again
        (an item's part showing above a container's rim, joined to it, must not cost the item its name)."""
        self.points = _fuse(np.vstack([piece.points, self.points]))
        self.seen = max(self.seen, piece.seen)
        if piece.evidence is not None:
            self._add_evidence(piece.evidence, piece.weight)
        self.named_at = 0

    def _add_evidence(self, evidence: np.ndarray, weight: int) -> None:
        self.evidence = evidence if self.evidence is None else self.evidence + evidence
        self.weight += weight
        self.label = label_of(self.evidence / self.weight)

    @property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]

    @property
    def top(self) -> float:
        return float(self.xyz[:, 2].max())

    @property
    def is_container(self) -> bool:
        return self.label is not None and self.label.shape in CONTAINERS

    def footprint_centre(self) -> np.ndarray:
        """The footprint's middle: for an item the middle of its top (fully in view from the raised camera,
        unlike its sides), for a container the middle of its rim."""
        xyz = self.xyz
        if self.is_container:
            rim = xyz[xyz[:, 2] > self.support + 0.03]
            rim = rim if len(rim) >= 4 else xyz
            return (rim[:, :2].min(axis=0) + rim[:, :2].max(axis=0)) / 2
        cap = xyz[xyz[:, 2] > self.top - 0.01]
        return cap[:, :2].mean(axis=0)

    def extent_half(self) -> float:
        if self.half is not None:
            return self.half
        if self.is_container:
            return float((self.xyz[:, :2].max(axis=0) - self.xyz[:, :2].min(axis=0)).max() / 2)
        return max(0.005, (self.top - self.support) / 2)

    def centre(self) -> np.ndarray:
        """Where the skills aim: an item's centre, a container's bottom (the simulator's convention). An item
        at rest has its centre at most half its size times sqrt(3) above what it stands on (a cube on its
        corner): one that came to rest tilted (leaning in a bowl) shows a corner higher than its top face."""
        xy = self.footprint_centre()
        if self.is_container:
            z = self.support
        else:
            half = self.extent_half()
            z = self.top - half
            if self.held_offset is None:
                z = min(z, self.support + half * np.sqrt(3))
        return np.array([xy[0], xy[1], z])


@dataclass(eq=False)
class TableTrack:
    """A table top's height and footprint, as a box of ``FOOTPRINT_CELL`` cells (tables are axis-aligned)."""

    height: float
    low: np.ndarray  # (2,) lowest cell index on x and y
    high: np.ndarray  # (2,) highest

    def near(self, low: np.ndarray, high: np.ndarray, cells: int = 2) -> bool:
        return bool(np.all(np.maximum(self.low - high, low - self.high) <= cells))

    def join(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = np.minimum(self.low, low), np.maximum(self.high, high)

    def spec(self, name: str) -> TableSpec:
        low, high = self.low * FOOTPRINT_CELL, (self.high + 1) * FOOTPRINT_CELL
        centre, half = (low + high) / 2, (high - low) / 2
        return TableSpec(name, float(centre[0]), float(centre[1]), float(half[0]), float(half[1]), self.height)


class ObjectMemory:
    def __init__(self):
        self.tracks: list[Track] = []
        self.tables: list[TableTrack] = []
        self._next_id = 0

    # -- tables ---------------------------------------------------------------------------------------

    def add_planes(self, planes: list[SupportPlane]) -> None:
        for plane in planes:
            low, high = (np.floor(bound / FOOTPRINT_CELL).astype(np.int64) for bound in (plane.low, plane.high))
            same = [t for t in self.tables if abs(t.height - plane.height) < 0.02 and t.near(low, high)]
            if not same:
                self.tables.append(TableTrack(plane.height, low, high))
                continue
            keep = same[0]
            for other in same[1:]:  # one table seen in pieces, now joined
                keep.join(other.low, other.high)
                self.tables.remove(other)
            keep.join(low, high)

    # -- objects --------------------------------------------------------------------------------------

    def add_segments(self, segments: list[Segment]) -> list[Track]:
        """Fuse this frame's segments into tracks (several segments of one object join it); returns the
        tracks seen."""
        seen: dict[int, Track] = {}
        placed: dict[int, tuple[np.ndarray, float]] = {}  # footprint centre and half-extent, until a track grows
        for segment in segments:
            track = self._match(segment, placed)
            if track is None:
                track = Track(self._next_id, _fuse(segment.points), segment.support, segment.group)
                self._next_id += 1
                self.tracks.append(track)
            elif track.id in seen:
                track.points = _fuse(np.vstack([track.points, segment.points]))
            else:
                track.points = _fuse(segment.points if track.moved else np.vstack([track.points, segment.points]))
                track.support, track.moved = segment.support, False
                track.seen += 1
            track.missed = 0
            placed.pop(track.id, None)
            if track.seen == 1 and len(segment.points) >= CONFIRM_POINTS:
                track.seen = CONFIRM_FRAMES
            if track.half is None and track.seen >= CONFIRM_FRAMES and track.label is not None and track.label.known:
                track.half = track.extent_half()  # an object's size does not change
            seen[track.id] = track
        for track in list(seen.values()):
            self._absorb_pieces(track)
        return [t for t in seen.values() if t in self.tracks]

    def _absorb_pieces(self, track: Track) -> None:
        """Tracks that turn out to be pieces of one object (a container's walls seen apart at first) join;
        two objects already named apart do not (a cube dropped into a bowl of its own colour)."""
        if track not in self.tracks or track.held_offset is not None:
            return
        box = (track.xyz[:, :2].min(axis=0), track.xyz[:, :2].max(axis=0))
        for other in [t for t in self.tracks if t is not track and t.group == track.group and t.held_offset is None and not _named_apart(t, track)]:
            if abs(other.support - track.support) < 0.03 and one_object(box, (other.xyz[:, :2].min(axis=0), other.xyz[:, :2].max(axis=0))):
                track.absorb(other)
                self.tracks.remove(other)

    def _match(self, segment: Segment, placed: dict[int, tuple[np.ndarray, float]]) -> Track | None:
        xy = (segment.points[:, :2].min(axis=0) + segment.points[:, :2].max(axis=0)) / 2
        best, best_gap = None, np.inf
        for track in self.tracks:
            if track.held_offset is not None or abs(track.support - segment.support) > 0.03 or track.group != segment.group:
                continue
            if track.id not in placed:
                placed[track.id] = track.footprint_centre(), track.extent_half()
            centre, half = placed[track.id]
            gap = np.linalg.norm(centre - xy) - half
            if gap < MATCH_MARGIN and gap < best_gap:
                best, best_gap = track, gap
        return best

    def forget_unseen(self, expected: list[Track]) -> None:
        """``expected``: tracks whose place this frame saw through (in view, nothing in front, nothing
        there). Each such frame counts; after ``FORGET_FRAMES`` the object is gone."""
        for track in expected:
            track.missed += 1
            if track.missed >= (FORGET_MOVED_FRAMES if track.moved else FORGET_FRAMES) and track.held_offset is None:
                self.tracks.remove(track)

    # -- the gripper ----------------------------------------------------------------------------------

    def grasp(self, grasp_point: np.ndarray) -> Track | None:
        """The gripper closed on something: the confirmed object nearest the grasp point rides with it."""
        candidates = [t for t in self.tracks if t.seen >= CONFIRM_FRAMES]
        if not candidates:
            return None
        track = min(candidates, key=lambda t: np.linalg.norm(t.centre() - grasp_point))
        if np.linalg.norm(track.centre() - grasp_point) > 0.15:
            return None
        track.held_offset = track.points.copy()
        track.held_offset[:, :3] -= grasp_point
        return track

    def carry(self, grasp_point: np.ndarray) -> None:
        for track in self.held():
            track.points = track.held_offset.copy()
            track.points[:, :3] += grasp_point

    def release(self, table_height: float | None) -> None:
        """The gripper opened: the object drops straight down, into a container under it or onto the table,
        and stays there until it is seen again."""
        for track in self.held():
            track.held_offset = None
            track.moved = True
            xy = track.footprint_centre()
            under = [t for t in self.confirmed() if t.is_container and t is not track and np.linalg.norm(t.footprint_centre() - xy) < t.extent_half()]
            floor = under[0].support + CONTAINER_FLOOR if under else table_height
            if floor is not None:
                track.points[:, 2] += floor - track.xyz[:, 2].min()
                track.support = floor

    def held(self) -> list[Track]:
        return [t for t in self.tracks if t.held_offset is not None]

    # -- naming ---------------------------------------------------------------------------------------

    def to_name(self) -> list[Track]:
        """Confirmed tracks never named, or whose fused cloud has grown enough to name again."""
        return [
            t for t in self.tracks
            if t.seen >= CONFIRM_FRAMES and t.held_offset is None and len(t.points) >= max(NAME_POINTS, RENAME_GROWTH * t.named_at)
            and not (t.label is not None and t.label.confidence >= SETTLED[0] and t.named_at >= SETTLED[1])
        ]  # fmt: skip

    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.seen >= CONFIRM_FRAMES or t.held_offset is not None]

    # -- the scene the skills see ----------------------------------------------------------------------

    def named(self) -> dict[str, Track]:
        """One object per name: where two tracks claim a name, the more confident keeps it."""
        names: dict[str, Track] = {}
        ranked = sorted((t for t in self.confirmed() if t.label is not None and t.label.known), key=lambda t: -t.label.confidence)
        for track in ranked:
            names.setdefault(track.label.name, track)
        return names

    def table_specs(self) -> list[TableSpec]:
        return [t.spec(f"table {i + 1}") for i, t in enumerate(self.tables)]

    def object_specs(self) -> list[ObjectSpec]:
        tables = self.table_specs()
        specs = []
        for name, track in self.named().items():
            x, y, z = track.centre()
            half = track.extent_half()
            kind = "container" if track.is_container else "item"
            size = "large" if half > (HALF_SIZE[(kind, "small")] + HALF_SIZE[(kind, "large")]) / 2 else "small"
            table = min(tables, key=lambda t: abs(t.height - track.support) + 10 * (not t.contains_xy(x, y, 0.05)), default=None)
            specs.append(ObjectSpec(name, track.label.shape, track.label.colour, size, float(x), float(y), float(z), half, table.name if table else ""))
        return specs


def _named_apart(a: Track, b: Track) -> bool:
    return a.label is not None and b.label is not None and a.label.known and b.label.known and a.label.name != b.label.name


def _fuse(points: np.ndarray) -> np.ndarray:
    """One point per ``FUSE_VOXEL`` voxel (the newest), at most ``MAX_TRACK_POINTS``."""
    keys = np.floor(points[:, :3] / FUSE_VOXEL).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    _, last = np.unique(flat[::-1], return_index=True)
    fused = points[::-1][np.sort(last)][::-1]
    return fused[-MAX_TRACK_POINTS:] if len(fused) > MAX_TRACK_POINTS else fused
