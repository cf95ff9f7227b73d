"""MuJoCo backend: builds MJCF from a ``SceneSpec`` and renders headless on the CPU (EGL, else OSMesa)."""

from __future__ import annotations

import ctypes.util
import os

import numpy as np


def _choose_gl() -> None:
    """Pick a headless GL before mujoco is imported: EGL when its library is present, else OSMesa."""
    if "MUJOCO_GL" not in os.environ and ctypes.util.find_library("EGL"):
        os.environ["MUJOCO_GL"] = "egl"
    elif "MUJOCO_GL" not in os.environ and ctypes.util.find_library("OSMesa"):
        os.environ["MUJOCO_GL"] = "osmesa"
    if os.environ.get("MUJOCO_GL") == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        # llvmpipe's rasteriser threads are process-wide in OSMesa and do not survive fork (a forked env's
        # first render hangs); rasterising on the calling thread does
        os.environ.setdefault("LP_NUM_THREADS", "0")


_choose_gl()
import mujoco  # noqa: E402  (must follow _choose_gl)

from envs.backend import (  # noqa: E402
    EXTEND_RANGE,
    FREE_CAMERA,
    HEAD_CAMERA,
    HEAD_FOVY,
    HEAD_HEIGHT,
    HEAD_OFFSET,
    HEAD_PITCH_DEG,
    LIFT_RANGE,
    OVERVIEW_CAMERA,
    OVERVIEW_FOVY,
    Backend,
    CameraFrame,
    RobotCommand,
    RobotState,
    WorldState,
    overview_eye,
)
from envs.mujoco_render import OffscreenRenderer  # noqa: E402
from envs.scene import CONTAINER_WALL_HEIGHT, ObjectSpec, SceneSpec, TableSpec  # noqa: E402

TIMESTEP = 0.01

# Collision bits: an object (2) meets objects, floor, table tops and walls; the robot base (4) meets
# walls and the tables' full-height volumes; the arm and gripper meet nothing (the grasp is "magic").
_OBJECT = 'contype="2" conaffinity="2"'
_STATIC = 'contype="2" conaffinity="2"'
_WALL = 'contype="2" conaffinity="6"'
_BASE_BLOCKER = 'contype="0" conaffinity="4" group="3" rgba="0 0 0 0"'
_ROBOT = 'contype="4" conaffinity="0"'
_GHOST = 'contype="0" conaffinity="0"'


def _f(*values: float) -> str:
    return " ".join(f"{v:.4f}" for v in values)


def _look_at(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A camera's x (right) and y (up) axes looking from ``eye`` at ``target``, level with the floor."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward)


def _look_at_axes(eye: np.ndarray, target: np.ndarray) -> str:
    return _f(*np.concatenate(_look_at(eye, target)))


def _table_xml(t: TableSpec) -> str:
    top = f'<geom type="box" size="{_f(t.half_x, t.half_y, 0.02)}" pos="{_f(t.x, t.y, t.height - 0.02)}" rgba="0.55 0.38 0.22 1" {_STATIC}/>'
    legs = "".join(
        f'<geom type="box" size="0.025 0.025 {t.height / 2 - 0.02:.4f}" pos="{_f(t.x + sx * (t.half_x - 0.05), t.y + sy * (t.half_y - 0.05), t.height / 2 - 0.02)}" rgba="0.35 0.24 0.14 1" {_GHOST}/>'
        for sx in (-1, 1)
        for sy in (-1, 1)
    )
    blocker = f'<geom type="box" size="{_f(t.half_x, t.half_y, t.height / 2)}" pos="{_f(t.x, t.y, t.height / 2)}" {_BASE_BLOCKER}/>'
    return top + legs + blocker


def _object_xml(index: int, o: ObjectSpec) -> str:
    rgba = _f(*o.rgb, 1.0)
    h = o.half
    if o.shape == "cube":
        geoms = f'<geom type="box" size="{_f(h, h, h)}" rgba="{rgba}" mass="0.1" {_OBJECT}/>'
    elif o.shape == "sphere":
        geoms = f'<geom type="sphere" size="{h:.4f}" rgba="{rgba}" mass="0.1" condim="6" friction="1 0.01 0.005" {_OBJECT}/>'
    elif o.shape == "cylinder":
        geoms = f'<geom type="cylinder" size="{_f(h, h)}" rgba="{rgba}" mass="0.1" {_OBJECT}/>'
    else:  # containers: a base plate with walls standing on it (so only the plate touches the table)
        wall, plate = 0.008, 0.012
        half_height = (CONTAINER_WALL_HEIGHT - plate) / 2
        base = h if o.shape == "bin" else 0.7 * h  # a square plate that stays inside the octagon
        geoms = f'<geom type="box" size="{_f(base, base, plate / 2)}" pos="0 0 {plate / 2:.4f}" rgba="{rgba}" mass="0.3" {_OBJECT}/>'
        sides = 4 if o.shape == "bin" else 8
        half_len = h if sides == 4 else h * np.tan(np.pi / 8) + wall
        for k in range(sides):
            angle = 2 * np.pi * k / sides
            c, s = np.cos(angle), np.sin(angle)
            geoms += (
                f'<geom type="box" size="{_f(wall, half_len, half_height)}" pos="{_f((h - wall) * c, (h - wall) * s, plate + half_height)}" '
                f'euler="0 0 {angle:.4f}" rgba="{rgba}" mass="0.04" {_OBJECT}/>'
            )
    return f'<body name="obj{index}" pos="{_f(o.x, o.y, o.z + 0.002)}"><freejoint/>{geoms}</body>'


def _robot_xml() -> str:
    pitch = np.radians(HEAD_PITCH_DEG)
    head_axes = _f(0, -1, 0, np.sin(pitch), 0, np.cos(pitch))
    return f"""
    <body name="base_xy">
      <inertial pos="0 0 0" mass="1" diaginertia="0.1 0.1 0.1"/>
      <joint name="base_x" type="slide" axis="1 0 0"/>
      <joint name="base_y" type="slide" axis="0 1 0"/>
      <body name="base">
        <joint name="base_yaw" type="hinge" axis="0 0 1"/>
        <geom type="cylinder" size="0.22 0.12" pos="0 0 0.14" rgba="0.25 0.27 0.3 1" mass="40" {_ROBOT}/>
        <geom type="box" size="0.05 0.02 0.01" pos="0.18 0 0.27" rgba="0.9 0.9 0.2 1" {_GHOST}/>
        <geom type="box" size="0.03 0.03 0.62" pos="-0.06 0 0.88" rgba="0.6 0.6 0.65 1" mass="2" {_GHOST}/>
        <geom type="box" size="0.05 0.07 0.04" pos="-0.02 0 {HEAD_HEIGHT:.3f}" rgba="0.2 0.2 0.25 1" {_GHOST}/>
        <camera name="{HEAD_CAMERA}" pos="{HEAD_OFFSET} 0 {HEAD_HEIGHT:.3f}" xyaxes="{head_axes}" fovy="{HEAD_FOVY}"/>
        <body name="lift" gravcomp="1">
          <joint name="lift" type="slide" axis="0 0 1" range="{_f(*LIFT_RANGE)}" damping="20"/>
          <geom type="box" size="0.06 0.05 0.03" pos="-0.06 0 0.12" rgba="0.3 0.3 0.35 1" mass="0.5" {_GHOST}/>
          <body name="arm" gravcomp="1">
            <joint name="extend" type="slide" axis="1 0 0" range="{_f(*EXTEND_RANGE)}" damping="20"/>
            <geom type="box" size="0.35 0.02 0.02" pos="-0.35 0 0.12" rgba="0.7 0.7 0.75 1" mass="0.5" {_GHOST}/>
            <body name="gripper" gravcomp="1">
              <geom type="box" size="0.03 0.06 0.015" pos="0 0 0.1" rgba="0.2 0.2 0.22 1" mass="0.2" {_GHOST}/>
              <site name="grasp" size="0.01" rgba="1 0 0 0"/>
              <body name="finger_l" gravcomp="1">
                <joint name="finger_l" type="slide" axis="0 1 0" range="0 0.05"/>
                <geom type="box" size="0.012 0.006 0.045" pos="0 0.01 0.045" rgba="0.15 0.15 0.15 1" mass="0.05" {_GHOST}/>
              </body>
              <body name="finger_r" gravcomp="1">
                <joint name="finger_r" type="slide" axis="0 -1 0" range="0 0.05"/>
                <geom type="box" size="0.012 0.006 0.045" pos="0 -0.01 0.045" rgba="0.15 0.15 0.15 1" mass="0.05" {_GHOST}/>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def scene_xml(scene: SceneSpec) -> str:
    """The MJCF for a scene: room, tables, objects, the robot and its magic-grasp welds."""
    r = scene.room_half
    eye = overview_eye(r)
    walls = "".join(
        f'<geom type="box" size="{_f(*size, 0.75)}" pos="{_f(*pos, 0.75)}" rgba="0.82 0.8 0.76 1" {_WALL}/>'
        for size, pos in [((r, 0.05), (0, r + 0.05)), ((r, 0.05), (0, -r - 0.05)), ((0.05, r), (r + 0.05, 0)), ((0.05, r), (-r - 0.05, 0))]
    )
    tables = "".join(_table_xml(t) for t in scene.tables)
    objects = "".join(_object_xml(i, o) for i, o in enumerate(scene.objects))
    welds = "".join(
        f'<weld name="grasp{i}" body1="gripper" body2="obj{i}" active="false" solref="0.005 1"/>'
        for i in range(len(scene.objects))
    )
    return f"""<mujoco model="scene_{scene.seed}">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast"/>
  <visual><headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3"/><quality shadowsize="0" offsamples="0"/><global offwidth="640" offheight="480"/><map znear="0.02" zfar="30"/></visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.78 0.76 0.72" rgb2="0.68 0.66 0.62" width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="{r:.2f} {r:.2f}"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 5" dir="0.2 0.3 -1" diffuse="0.7 0.7 0.7" castshadow="false"/>
    <light directional="true" pos="0 0 5" dir="-0.3 -0.2 -1" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom name="floor" type="plane" size="{_f(r, r)} 0.1" material="floor" {_STATIC}/>
    <camera name="{OVERVIEW_CAMERA}" pos="{_f(*eye)}" xyaxes="{_look_at_axes(eye, np.zeros(3))}" fovy="{OVERVIEW_FOVY}"/>
    <camera name="{FREE_CAMERA}" pos="0 0 {HEAD_HEIGHT:.3f}" fovy="{HEAD_FOVY}"/>
    {walls}{tables}{objects}{_robot_xml()}
  </worldbody>
  <equality>{welds}</equality>
  <actuator>
    <velocity name="base_x" joint="base_x" kv="3000"/>
    <velocity name="base_y" joint="base_y" kv="3000"/>
    <velocity name="base_yaw" joint="base_yaw" kv="400"/>
    <position name="lift" joint="lift" kp="4000" kv="300"/>
    <position name="extend" joint="extend" kp="4000" kv="300"/>
    <position name="finger_l" joint="finger_l" kp="300" kv="10"/>
    <position name="finger_r" joint="finger_r" kp="300" kv="10"/>
  </actuator>
</mujoco>"""


class MujocoBackend(Backend):
    def __init__(self):
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.scene: SceneSpec | None = None
        self._renderer: OffscreenRenderer | None = None
        self._holding: str | None = None
        self._closed = False

    def load(self, scene: SceneSpec) -> None:
        self._close_renderer()
        self.scene = scene
        self.model = mujoco.MjModel.from_xml_string(scene_xml(scene))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = {j: m.jnt_qposadr[m.joint(j).id] for j in ("base_x", "base_y", "base_yaw", "lift", "extend")}
        self._obj_bodies = [m.body(f"obj{i}").id for i in range(len(scene.objects))]
        self._gripper_body = m.body("gripper").id
        # geom id -> object index (-1 for anything that is not an object; the extra last entry maps geom -1)
        self._geom_object = np.full(m.ngeom + 1, -1, dtype=np.int32)
        for index, body in enumerate(self._obj_bodies):
            self._geom_object[np.flatnonzero(m.geom_bodyid == body)] = index
        x, y, yaw = scene.robot_start
        d = self.data
        d.qpos[self._qadr["base_x"]], d.qpos[self._qadr["base_y"]], d.qpos[self._qadr["base_yaw"]] = x, y, yaw
        d.qpos[self._qadr["lift"]], d.qpos[self._qadr["extend"]] = LIFT_RANGE[0], EXTEND_RANGE[0]
        self._holding = None
        self.apply(RobotCommand())
        mujoco.mj_forward(m, d)

    def apply(self, command: RobotCommand) -> None:
        ctrl = self.data.ctrl
        ctrl[0], ctrl[1], ctrl[2] = command.vx, command.vy, command.wz
        ctrl[3] = np.clip(command.lift, *LIFT_RANGE)
        ctrl[4] = np.clip(command.extend, *EXTEND_RANGE)
        ctrl[5] = ctrl[6] = 0.0 if command.close_gripper else 0.045

    def advance(self, seconds: float) -> None:
        mujoco.mj_step(self.model, self.data, nstep=max(1, round(seconds / TIMESTEP)))
        # mj_step leaves poses as they were before its last integration: without this, a frame rendered
        # now shows the robot one physics step behind its odometry (2 cm at 2 m while turning)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def state(self) -> WorldState:
        q, a = self.data.qpos, self._qadr
        robot = RobotState(
            x=float(q[a["base_x"]]),
            y=float(q[a["base_y"]]),
            yaw=float(np.arctan2(np.sin(q[a["base_yaw"]]), np.cos(q[a["base_yaw"]]))),
            lift=float(q[a["lift"]]),
            extend=float(q[a["extend"]]),
            gripper_closed=bool(self.data.ctrl[5] < 0.02),
            holding=self._holding,
        )
        xpos = self.data.xpos
        objects = {o.name: xpos[b].copy() for o, b in zip(self.scene.objects, self._obj_bodies)}
        return WorldState(robot, objects, float(self.data.time))

    def attach(self, name: str) -> None:
        index = self.scene.object_names.index(name)
        m, d = self.model, self.data
        eq = m.equality(f"grasp{index}").id
        # Weld at the current relative pose, so that the object does not jump into the gripper.
        g_pos, g_mat = d.xpos[self._gripper_body], d.xmat[self._gripper_body].reshape(3, 3)
        body = self._obj_bodies[index]
        rel_pos = g_mat.T @ (d.xpos[body] - g_pos)
        rel_quat, g_quat_inv = np.zeros(4), np.zeros(4)
        mujoco.mju_negQuat(g_quat_inv, d.xquat[self._gripper_body])
        mujoco.mju_mulQuat(rel_quat, g_quat_inv, d.xquat[body])
        m.eq_data[eq, 0:3] = 0.0
        m.eq_data[eq, 3:6] = rel_pos
        m.eq_data[eq, 6:10] = rel_quat
        m.eq_data[eq, 10] = 1.0
        d.eq_active[eq] = 1
        self._holding = name

    def detach(self) -> None:
        self.data.eq_active[:] = 0
        self._holding = None

    def render(self, camera: str, width: int, height: int, segmentation: bool = False) -> CameraFrame:
        if self._renderer is None:
            self._renderer = OffscreenRenderer(self.model)
        cam = self.model.camera(camera).id
        rgb, depth, geoms = self._renderer.render(self.data, cam, width, height, segmentation)
        return CameraFrame(
            rgb=rgb,
            depth=depth,
            segmentation=None if geoms is None else self._geom_object[geoms],
            fovy_deg=float(self.model.cam_fovy[cam]),
            position=self.data.cam_xpos[cam].copy(),
            rotation=self.data.cam_xmat[cam].reshape(3, 3).copy(),
        )

    def render_from(self, eye, target, width: int, height: int, segmentation: bool = False) -> CameraFrame:
        """The free camera moved to ``eye``, aimed at ``target``; only camera poses are recomputed
        (``mj_camlight``), so the simulation's state is untouched."""
        eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
        cam = self.model.camera(FREE_CAMERA).id
        right, up = _look_at(eye, target)
        rotation = np.stack([right, up, np.cross(right, up)], axis=1)  # camera-to-world; it looks along -z
        self.model.cam_pos[cam] = eye
        mujoco.mju_mat2Quat(self.model.cam_quat[cam], rotation.flatten())
        mujoco.mj_camlight(self.model, self.data)
        return self.render(FREE_CAMERA, width, height, segmentation)

    def _close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        self._close_renderer()
