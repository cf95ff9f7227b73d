"""The simulator interface: what the environment, the tasks and the skills need from a physics backend.

MuJoCo is the default (``envs/mujoco_backend.py``); habitat-sim sits behind the same interface
(``envs/habitat_backend.py``) and is imported only when asked for.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from envs.scene import SceneSpec

# Robot kinematics shared by every backend: the grasp point sits at (extend, 0, lift) in the base frame.
LIFT_RANGE = (0.30, 1.05)
EXTEND_RANGE = (0.25, 0.85)
MAX_LINEAR_SPEED = 0.6  # m/s
MAX_ANGULAR_SPEED = 1.5  # rad/s
MAX_JOINT_SPEED = 0.5  # m/s, lift and extend
HEAD_CAMERA = "head"
HEAD_HEIGHT = 1.35  # m above the floor
HEAD_PITCH_DEG = 40.0  # looking down, so the table tops in front fill the image
HEAD_FOVY = 60.0
HEAD_OFFSET = 0.04  # m, the head camera ahead of the base centre
OVERVIEW_FOVY = 45.0


def overview_eye(room_half: float) -> np.ndarray:
    """Where the overview camera (for GIFs) sits: high above the room's near side, looking at its centre."""
    return np.array([0.0, -0.75 * room_half, 2.4 * room_half])
OVERVIEW_CAMERA = "overview"
FREE_CAMERA = "free"  # aimed anywhere by ``Backend.render_from``


def to_unit(value: float, bounds: tuple[float, float]) -> float:
    """A joint position as the action's [-1, 1] over the joint's range."""
    low, high = bounds
    return float(np.clip(2 * (value - low) / (high - low) - 1, -1.0, 1.0))


def from_unit(unit: float, bounds: tuple[float, float]) -> float:
    """The inverse of ``to_unit``."""
    low, high = bounds
    return float(low + (unit + 1) / 2 * (high - low))


@dataclass
class RobotState:
    x: float
    y: float
    yaw: float
    lift: float
    extend: float
    gripper_closed: bool
    holding: str | None

    @property
    def grasp_point(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([self.x + c * self.extend, self.y + s * self.extend, self.lift])


@dataclass
class WorldState:
    """What the skills see: the robot and the object positions (privileged in simulation)."""

    robot: RobotState
    objects: dict[str, np.ndarray] = field(default_factory=dict)  # name -> xyz of its centre (bottom for containers)
    time: float = 0.0


@dataclass
class RobotCommand:
    """Low-level set-points: base velocity in the world frame, joint position targets, gripper."""

    vx: float = 0.0
    vy: float = 0.0
    wz: float = 0.0
    lift: float = LIFT_RANGE[0]
    extend: float = EXTEND_RANGE[0]
    close_gripper: bool = False


@dataclass
class CameraFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, metres along the optical axis
    segmentation: np.ndarray | None  # (H, W) int32 object index, -1 for background
    fovy_deg: float
    position: np.ndarray  # (3,) camera centre in the world
    rotation: np.ndarray  # (3, 3) camera-to-world; camera looks along -z with +y up (OpenGL)


class Backend(abc.ABC):
    """A physics simulator holding one scene at a time."""

    @abc.abstractmethod
    def load(self, scene: SceneSpec) -> None:
        """Build the scene and put the robot at its start pose."""

    @abc.abstractmethod
    def apply(self, command: RobotCommand) -> None:
        """Set the command that holds until the next call."""

    @abc.abstractmethod
    def advance(self, seconds: float) -> None:
        """Step the physics forward."""

    @abc.abstractmethod
    def state(self) -> WorldState: ...

    @abc.abstractmethod
    def attach(self, name: str) -> None:
        """Rigidly attach an object to the gripper (the "magic grasp")."""

    @abc.abstractmethod
    def detach(self) -> None: ...

    @abc.abstractmethod
    def render(self, camera: str, width: int, height: int, segmentation: bool = False) -> CameraFrame: ...

    def render_from(self, eye, target, width: int, height: int, segmentation: bool = False) -> CameraFrame:
        """A head-camera-like frame from ``eye`` looking at ``target`` (world xyz), the robot left where it is:
        how the privileged world sees every table's objects as a robot that looked at each would
        (``envs.object_views``)."""
        raise NotImplementedError(f"{type(self).__name__} renders only its mounted cameras, not from a free viewpoint")

    def close(self) -> None:
        """Free renderer and simulator resources."""
