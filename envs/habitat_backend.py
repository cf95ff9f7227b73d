"""habitat-sim backend: the MuJoCo backend's scenes, simulated by habitat-sim's Bullet physics and rendered by
its sensors.

habitat-sim is optional (upstream ships it through conda only), so it is imported when the backend is built,
never when this module is. habitat-sim is Y-up and the rest of the stack Z-up: positions cross over through
``_to_habitat`` and ``_from_habitat``. Its primitive shapes cannot be coloured per object, so every body is
a small generated glTF asset: coloured boxes, spheres and cylinders, one convex part per mesh.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import open3d as o3d

from envs.backend import (
    EXTEND_RANGE,
    HEAD_CAMERA,
    HEAD_FOVY,
    HEAD_HEIGHT,
    HEAD_OFFSET,
    HEAD_PITCH_DEG,
    LIFT_RANGE,
    MAX_JOINT_SPEED,
    OVERVIEW_CAMERA,
    OVERVIEW_FOVY,
    Backend,
    CameraFrame,
    RobotCommand,
    RobotState,
    WorldState,
    overview_eye,
)
from envs.scene import CONTAINER_WALL_HEIGHT, ROBOT_RADIUS, ObjectSpec, SceneSpec

SUBSTEP = 0.02  # s between updates of the kinematic robot and the held object
CAMERAS = (HEAD_CAMERA, OVERVIEW_CAMERA)  # one habitat agent each, in this order
INITIAL_SENSOR_SIZE = (128, 128)  # the env's default head camera; other sizes are added on first use
_TO_HABITAT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # Z-up world -> habitat's Y-up


def _import_habitat():
    try:
        import habitat_sim
        import magnum
    except ImportError as exc:
        raise ImportError(
            "the habitat backend needs habitat-sim, an optional dependency that upstream ships for conda only "
            "(conda install habitat-sim withbullet headless -c conda-forge -c aihabitat); the default MuJoCo "
            "backend (backend='mujoco') needs nothing extra"
        ) from exc
    return habitat_sim, magnum


def _to_habitat(point) -> np.ndarray:
    return _TO_HABITAT @ np.asarray(point, dtype=float)


def _from_habitat(vector) -> np.ndarray:
    return _TO_HABITAT.T @ np.asarray(vector, dtype=float)


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# -- cameras: placed exactly as in the MuJoCo scene, both a yaw then a downward pitch -------------------


def camera_pose(camera: str, pose, room_half: float) -> tuple[np.ndarray, float, float, float]:
    """World position, yaw, downward pitch (rad) and fovy (deg) of a camera, given the robot's (x, y, yaw)."""
    if camera == HEAD_CAMERA:
        x, y, yaw = pose
        position = np.array([x + HEAD_OFFSET * np.cos(yaw), y + HEAD_OFFSET * np.sin(yaw), HEAD_HEIGHT])
        return position, float(yaw), float(np.radians(HEAD_PITCH_DEG)), HEAD_FOVY
    if camera == OVERVIEW_CAMERA:  # above the room's -y side, looking at its centre
        eye = overview_eye(room_half)
        yaw, pitch = np.arctan2(-eye[1], -eye[0]), np.arctan2(eye[2], np.hypot(eye[0], eye[1]))
        return eye, float(yaw), float(pitch), OVERVIEW_FOVY
    raise ValueError(f"unknown camera {camera!r}; choose one of {', '.join(CAMERAS)}")


def camera_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation in the OpenGL convention (looks along -z, +y up)."""
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    return np.column_stack([right, np.cross(right, forward), -forward])


def habitat_rotation(yaw: float, pitch: float) -> np.ndarray:
    """The same rotation in habitat's frame, as [x, y, z, w]: a turn about +y (up), then a pitch about the
    camera's x; a habitat camera with no rotation looks along -z, which is the world's +x after -90 degrees."""
    a, b = (yaw - np.pi / 2) / 2, -pitch / 2
    return np.array([np.cos(a) * np.sin(b), np.sin(a) * np.cos(b), -np.sin(a) * np.sin(b), np.cos(a) * np.cos(b)])


# -- assets: lists of (vertices in world axes, triangles, rgb) parts, written as binary glTF -----------


def _part(mesh: o3d.geometry.TriangleMesh, rgb, centre=(0.0, 0.0, 0.0), yaw: float = 0.0) -> tuple:
    vertices = np.asarray(mesh.vertices) @ _yaw_matrix(yaw).T + centre
    return vertices, np.asarray(mesh.triangles), rgb


def _box(half, rgb, centre=(0.0, 0.0, 0.0), yaw: float = 0.0) -> tuple:
    half = np.asarray(half, dtype=float)
    return _part(o3d.geometry.TriangleMesh.create_box(*(2 * half)).translate(-half), rgb, centre, yaw)


def _cylinder(radius: float, half_height: float, rgb, centre=(0.0, 0.0, 0.0)) -> tuple:
    return _part(o3d.geometry.TriangleMesh.create_cylinder(radius, 2 * half_height, resolution=24), rgb, centre)


def object_parts(o: ObjectSpec) -> list[tuple]:
    """An object with its origin where the MuJoCo scene has it: the centre, or the bottom for containers."""
    h, rgb = o.half, o.rgb
    if o.shape == "cube":
        return [_box((h, h, h), rgb)]
    if o.shape == "sphere":
        return [_part(o3d.geometry.TriangleMesh.create_sphere(h, resolution=12), rgb)]
    if o.shape == "cylinder":
        return [_cylinder(h, h, rgb)]
    # containers: a base plate with 4 (bin) or 8 (bowl) walls standing on it
    wall, plate = 0.008, 0.012
    half_height = (CONTAINER_WALL_HEIGHT - plate) / 2
    sides, base = (4, h) if o.shape == "bin" else (8, 0.7 * h)
    half_len = h if sides == 4 else h * np.tan(np.pi / 8) + wall
    parts = [_box((base, base, plate / 2), rgb, (0.0, 0.0, plate / 2))]
    for k in range(sides):
        angle = 2 * np.pi * k / sides
        centre = ((h - wall) * np.cos(angle), (h - wall) * np.sin(angle), plate + half_height)
        parts.append(_box((wall, half_len, half_height), rgb, centre, angle))
    return parts


def _room_parts(scene: SceneSpec) -> list[tuple]:
    r, wall_rgb = scene.room_half, (0.82, 0.8, 0.76)
    parts = [_box((r, r, 0.05), (0.73, 0.71, 0.67), (0.0, 0.0, -0.05))]
    for sign in (-1, 1):
        parts.append(_box((r, 0.05, 0.75), wall_rgb, (0.0, sign * (r + 0.05), 0.75)))
        parts.append(_box((0.05, r, 0.75), wall_rgb, (sign * (r + 0.05), 0.0, 0.75)))
    for t in scene.tables:
        parts.append(_box((t.half_x, t.half_y, 0.02), (0.55, 0.38, 0.22), (t.x, t.y, t.height - 0.02)))
        for sx in (-1, 1):
            for sy in (-1, 1):
                leg = (t.x + sx * (t.half_x - 0.05), t.y + sy * (t.half_y - 0.05), t.height / 2 - 0.02)
                parts.append(_box((0.025, 0.025, t.height / 2 - 0.02), (0.35, 0.24, 0.14), leg))
    return parts


def _base_parts() -> list[tuple]:
    """The robot's body in the base frame: wheel base, mast and head."""
    return [
        _cylinder(ROBOT_RADIUS, 0.12, (0.25, 0.27, 0.3), (0.0, 0.0, 0.14)),
        _box((0.03, 0.03, 0.62), (0.6, 0.6, 0.65), (-0.06, 0.0, 0.88)),
        _box((0.05, 0.07, 0.04), (0.2, 0.2, 0.25), (-0.02, 0.0, HEAD_HEIGHT)),
    ]


def _arm_parts() -> list[tuple]:
    """The arm and gripper in the grasp-point frame."""
    return [
        _box((0.35, 0.02, 0.02), (0.7, 0.7, 0.75), (-0.35, 0.0, 0.12)),
        _box((0.03, 0.06, 0.015), (0.2, 0.2, 0.22), (0.0, 0.0, 0.1)),
    ]


def glb(parts: list[tuple]) -> bytes:
    """A binary glTF with one node, mesh and material per part (so habitat keeps each part a convex hull)."""
    blob, views, accessors, meshes = bytearray(), [], [], []
    for vertices, triangles, rgb in parts:
        positions = (vertices @ _TO_HABITAT.T).astype("<f4")
        for array, target in ((positions, 34962), (triangles.astype("<u4"), 34963)):  # vertex / index buffers
            views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": array.nbytes, "target": target})
            blob += array.tobytes()
        accessors += [
            {"bufferView": len(views) - 2, "componentType": 5126, "count": len(positions), "type": "VEC3",
             "min": positions.min(axis=0).tolist(), "max": positions.max(axis=0).tolist()},
            {"bufferView": len(views) - 1, "componentType": 5125, "count": triangles.size, "type": "SCALAR"},
        ]
        primitive = {"attributes": {"POSITION": len(accessors) - 2}, "indices": len(accessors) - 1}
        meshes.append({"primitives": [{**primitive, "material": len(meshes)}]})
    materials = [
        {"pbrMetallicRoughness": {"baseColorFactor": [*map(float, rgb), 1.0], "metallicFactor": 0.0}}
        for _, _, rgb in parts
    ]
    document = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(parts)))}],
        "nodes": [{"mesh": i} for i in range(len(parts))],
        "meshes": meshes,
        "materials": materials,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(blob), 0x004E4942) + bytes(blob)
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


class HabitatBackend(Backend):
    def __init__(self):
        self._hs, self._mn = _import_habitat()  # fails here, with its reason, when habitat-sim is missing
        self._assets = tempfile.TemporaryDirectory(prefix="habitat_assets_")
        self.sim = None
        self.scene: SceneSpec | None = None
        self._sensors: set[str] = set()

    # -- scene ---------------------------------------------------------------------------------------

    def load(self, scene: SceneSpec) -> None:
        hs = self._hs
        if self.sim is None:
            self.sim = hs.Simulator(self._configuration())
        self.sim.get_rigid_object_manager().remove_all_objects()
        self.scene = scene
        motion = hs.physics.MotionType
        self._add(_room_parts(scene), motion.STATIC)
        self._objects = []
        for index, o in enumerate(scene.objects):
            obj = self._add(object_parts(o), motion.DYNAMIC, mass=0.5 if o.is_container else 0.1)
            obj.translation = _to_habitat((o.x, o.y, o.z + 0.002))
            obj.semantic_id = index + 1  # 0 is everything else; render() maps ids back to object indices
            self._objects.append(obj)
        self._base, self._arm = (self._add(parts, motion.KINEMATIC) for parts in (_base_parts(), _arm_parts()))
        self._base.collidable = self._arm.collidable = False  # the grasp is "magic", as in MuJoCo
        self._pose = np.array(scene.robot_start, dtype=float)  # x, y, yaw
        self._joints = np.array([LIFT_RANGE[0], EXTEND_RANGE[0]])  # lift, extend
        self._held: int | None = None
        self._time = 0.0
        self.apply(RobotCommand())
        self._place_kinematic()

    def _configuration(self):
        """habitat decides at construction what it loads for rendering (textures, semantic ids), so the head
        camera's colour, depth and semantic sensors are declared up front; others are added on first use."""
        hs = self._hs
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = "NONE"  # an empty stage: the room is built from objects
        sim_cfg.enable_physics = True
        prefix = self._sensor_prefix(HEAD_CAMERA, *INITIAL_SENSOR_SIZE)
        self._sensors.add(prefix)
        head = hs.agent.AgentConfiguration(
            sensor_specifications=self._sensor_specs(prefix, *INITIAL_SENSOR_SIZE, HEAD_FOVY)
        )
        return hs.Configuration(sim_cfg, [head, hs.agent.AgentConfiguration()])

    def _add(self, parts: list[tuple], motion_type, mass: float = 1.0):
        """An object from a generated asset; the file is named by its content, as habitat caches assets by name."""
        data = glb(parts)
        path = Path(self._assets.name) / f"{hashlib.sha1(data).hexdigest()}.glb"
        if not path.exists():
            path.write_bytes(data)
        templates = self.sim.get_object_template_manager()
        template = templates.create_new_template(str(path))
        template.compute_COM_from_shape = False  # keep the asset's origin, so positions mean what they do in MuJoCo
        template.join_collision_meshes = False  # one convex hull per part: containers stay hollow
        template.force_flat_shading = True  # the scene's colours, whatever habitat's light setup
        template.margin = 0.0  # as habitat's own primitives: small objects rest on their true surfaces
        template.mass = mass
        templates.register_template(template, str(path))
        obj = self.sim.get_rigid_object_manager().add_object_by_template_handle(str(path))
        obj.motion_type = motion_type
        return obj

    # -- control -------------------------------------------------------------------------------------

    def apply(self, command: RobotCommand) -> None:
        self._command = command

    def advance(self, seconds: float) -> None:
        """habitat has no actuators for the robot, so the base and the joints move kinematically between
        physics steps: the base at the commanded velocity, stopped by walls and tables; the joints towards
        their targets at ``MAX_JOINT_SPEED``."""
        steps = max(1, round(seconds / SUBSTEP))
        dt = seconds / steps
        c = self._command
        targets = np.array([np.clip(c.lift, *LIFT_RANGE), np.clip(c.extend, *EXTEND_RANGE)])
        for _ in range(steps):
            x, y, yaw = self._pose
            nx, ny = x + c.vx * dt, y + c.vy * dt
            for x_new, y_new in ((nx, ny), (nx, y), (x, ny), (x, y)):  # slide along whatever blocks the move
                if self._base_free(x_new, y_new):
                    break
            self._pose = np.array([x_new, y_new, yaw + c.wz * dt])
            self._joints += np.clip(targets - self._joints, -MAX_JOINT_SPEED * dt, MAX_JOINT_SPEED * dt)
            self._place_kinematic()
            self.sim.step_physics(dt)
        self._time += seconds

    def _base_free(self, x: float, y: float) -> bool:
        """Whether the base (a disc of ``ROBOT_RADIUS``) at (x, y) clears the walls and every table."""
        limit = self.scene.room_half - ROBOT_RADIUS
        if abs(x) > limit or abs(y) > limit:
            return False
        return all(
            np.hypot(max(abs(x - t.x) - t.half_x, 0.0), max(abs(y - t.y) - t.half_y, 0.0)) > ROBOT_RADIUS
            for t in self.scene.tables
        )

    def _grasp_point(self) -> np.ndarray:
        x, y, yaw = self._pose
        lift, extend = self._joints
        return np.array([x + np.cos(yaw) * extend, y + np.sin(yaw) * extend, lift])

    def _turn(self, yaw: float):
        """A rotation about the world's up axis, as a magnum quaternion in habitat's frame."""
        return self._mn.Quaternion.rotation(self._mn.Rad(yaw), self._mn.Vector3.y_axis())

    def _place_kinematic(self) -> None:
        """Move the robot's body, its arm and the held object to the robot's current pose."""
        x, y, yaw = self._pose
        grasp, turn = self._grasp_point(), self._turn(yaw)
        self._base.translation, self._base.rotation = _to_habitat((x, y, 0.0)), turn
        self._arm.translation, self._arm.rotation = _to_habitat(grasp), turn
        if self._held is not None:
            held = self._objects[self._held]
            held.translation = _to_habitat(grasp + _yaw_matrix(yaw) @ self._held_offset)
            held.rotation = turn * self._held_rotation

    # -- state and grasping --------------------------------------------------------------------------

    def state(self) -> WorldState:
        x, y, yaw = self._pose
        robot = RobotState(
            x=float(x),
            y=float(y),
            yaw=float(np.arctan2(np.sin(yaw), np.cos(yaw))),
            lift=float(self._joints[0]),
            extend=float(self._joints[1]),
            gripper_closed=bool(self._command.close_gripper),
            holding=None if self._held is None else self.scene.objects[self._held].name,
        )
        objects = {o.name: _from_habitat(obj.translation) for o, obj in zip(self.scene.objects, self._objects)}
        return WorldState(robot, objects, self._time)

    def attach(self, name: str) -> None:
        """Hold the object at its current pose relative to the grasp point (kinematic while held)."""
        self.detach()
        index = self.scene.object_names.index(name)
        obj, yaw = self._objects[index], self._pose[2]
        self._held_offset = _yaw_matrix(-yaw) @ (_from_habitat(obj.translation) - self._grasp_point())
        self._held_rotation = self._turn(-yaw) * obj.rotation
        obj.motion_type = self._hs.physics.MotionType.KINEMATIC
        self._held = index

    def detach(self) -> None:
        if self._held is not None:
            self._objects[self._held].motion_type = self._hs.physics.MotionType.DYNAMIC
        self._held = None

    # -- rendering -----------------------------------------------------------------------------------

    @staticmethod
    def _sensor_prefix(camera: str, width: int, height: int) -> str:
        return f"{camera}_{width}x{height}"

    def _sensor_specs(self, prefix: str, width: int, height: int, fovy: float) -> list:
        """Colour, depth and semantic pinhole sensors at the agent's origin; habitat takes the horizontal fov."""
        hs = self._hs
        hfov = np.degrees(2 * np.arctan(np.tan(np.radians(fovy) / 2) * width / height))
        specs = []
        kinds = {"rgb": hs.SensorType.COLOR, "depth": hs.SensorType.DEPTH, "semantic": hs.SensorType.SEMANTIC}
        for kind, sensor_type in kinds.items():
            spec = hs.CameraSensorSpec()
            spec.uuid = f"{prefix}_{kind}"
            spec.sensor_type = sensor_type
            spec.sensor_subtype = hs.SensorSubType.PINHOLE
            spec.resolution = [height, width]
            spec.position = [0.0, 0.0, 0.0]
            spec.orientation = [0.0, 0.0, 0.0]
            spec.hfov = float(hfov)
            specs.append(spec)
        return specs

    def render(self, camera: str, width: int, height: int, segmentation: bool = False) -> CameraFrame:
        position, yaw, pitch, fovy = camera_pose(camera, self._pose, self.scene.room_half)
        agent_id, prefix = CAMERAS.index(camera), self._sensor_prefix(camera, width, height)
        if prefix not in self._sensors:
            for spec in self._sensor_specs(prefix, width, height, fovy):
                self.sim.add_sensor(spec, agent_id)
            self._sensors.add(prefix)
        state = self._hs.AgentState(position=_to_habitat(position), rotation=habitat_rotation(yaw, pitch))
        self.sim.get_agent(agent_id).set_state(state)
        obs = self.sim.get_sensor_observations(agent_id)  # views of buffers reused by the next render: copied
        seg = obs[f"{prefix}_semantic"].astype(np.int32) - 1 if segmentation else None
        return CameraFrame(
            rgb=obs[f"{prefix}_rgb"][..., :3].copy(),
            depth=np.array(obs[f"{prefix}_depth"], dtype=np.float32),
            segmentation=seg,
            fovy_deg=fovy,
            position=position,
            rotation=camera_rotation(yaw, pitch),
        )

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        self._assets.cleanup()
