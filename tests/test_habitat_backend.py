"""The habitat-sim backend: a clear error without habitat-sim, cameras and assets that agree with the MuJoCo
scene, and (where habitat-sim is installed) loading, stepping, grasping and rendering."""

from __future__ import annotations

import sys

import numpy as np
import open3d as o3d
import pytest

from envs.backend import HEAD_CAMERA, MAX_JOINT_SPEED, OVERVIEW_CAMERA, RobotCommand
from envs.scene import CONTAINER_WALL_HEIGHT, ROBOT_RADIUS, SHAPES, ObjectSpec, generate_scene


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_missing_habitat_sim_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # makes `import habitat_sim` fail
    from envs.env import make_backend

    with pytest.raises(ImportError) as excinfo:
        make_backend("habitat")
    message = str(excinfo.value)
    assert "habitat-sim" in message and "mujoco" in message.lower()


def test_cameras_sit_where_the_mujoco_scene_puts_them():
    from envs import habitat_backend
    from envs.mujoco_backend import MujocoBackend

    scene = generate_scene(0)
    mujoco_backend = MujocoBackend()
    mujoco_backend.load(scene)
    robot = mujoco_backend.state().robot
    model, data = mujoco_backend.model, mujoco_backend.data
    for camera in (HEAD_CAMERA, OVERVIEW_CAMERA):
        position, yaw, pitch, fovy = habitat_backend.camera_pose(camera, (robot.x, robot.y, robot.yaw), scene.room_half)
        rotation = habitat_backend.camera_rotation(yaw, pitch)
        cam = model.camera(camera).id
        np.testing.assert_allclose(position, data.cam_xpos[cam], atol=1e-3)  # the MJCF rounds to 4 decimals
        np.testing.assert_allclose(rotation, data.cam_xmat[cam].reshape(3, 3), atol=1e-3)
        assert fovy == pytest.approx(model.cam_fovy[cam])
        # the agent rotation handed to habitat is the same rotation, in habitat's Y-up frame
        habitat_matrix = _quaternion_matrix(habitat_backend.habitat_rotation(yaw, pitch))
        np.testing.assert_allclose(habitat_matrix, habitat_backend._TO_HABITAT @ rotation, atol=1e-9)
    mujoco_backend.close()


@pytest.mark.parametrize("shape", SHAPES)
def test_object_assets_read_back_as_coloured_y_up_gltf(shape, tmp_path):
    from envs import habitat_backend

    spec = ObjectSpec(f"red {shape}", shape, "red", "large", 0.0, 0.0, 0.5, 0.1, "table 1")
    parts = habitat_backend.object_parts(spec)
    path = tmp_path / f"{shape}.glb"
    path.write_bytes(habitat_backend.glb(parts))
    model = o3d.io.read_triangle_model(str(path))
    box = o3d.geometry.AxisAlignedBoundingBox()
    for mesh in model.meshes:
        box += mesh.mesh.get_axis_aligned_bounding_box()
    expected = np.vstack([vertices for vertices, _, _ in parts]) @ habitat_backend._TO_HABITAT.T
    np.testing.assert_allclose(box.get_min_bound(), expected.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(box.get_max_bound(), expected.max(axis=0), atol=1e-6)
    height = (0.0, CONTAINER_WALL_HEIGHT) if spec.is_container else (-spec.half, spec.half)
    np.testing.assert_allclose([box.get_min_bound()[1], box.get_max_bound()[1]], height, atol=1e-6)  # y is up
    for mesh in model.meshes:
        np.testing.assert_allclose(model.materials[mesh.material_idx].base_color[:3], spec.rgb, atol=1e-6)


# -- with habitat-sim ------------------------------------------------------------------------------------


@pytest.fixture
def backend():
    pytest.importorskip("habitat_sim", reason="habitat-sim is optional (conda-only upstream)")
    from envs.habitat_backend import HabitatBackend

    backend = HabitatBackend()
    backend.load(generate_scene(0))
    yield backend
    backend.close()


def test_load_puts_the_robot_and_objects_where_the_scene_says(backend):
    scene = backend.scene
    state = backend.state()
    assert (state.robot.x, state.robot.y) == pytest.approx(scene.robot_start[:2])
    assert state.robot.holding is None and not state.robot.gripper_closed and state.time == 0.0
    assert set(state.objects) == set(scene.object_names)
    for o in scene.objects:
        np.testing.assert_allclose(state.objects[o.name], (o.x, o.y, o.z + 0.002), atol=1e-4)


def test_advance_moves_the_base_and_joints_and_objects_settle(backend):
    start = backend.state()
    backend.apply(RobotCommand(vx=0.1, lift=1.05))
    backend.advance(0.5)
    state = backend.state()
    assert state.time == pytest.approx(0.5)
    assert state.robot.x == pytest.approx(start.robot.x + 0.05, abs=1e-6)
    assert state.robot.lift == pytest.approx(start.robot.lift + MAX_JOINT_SPEED * 0.5, abs=1e-6)
    for name, position in start.objects.items():
        np.testing.assert_allclose(state.objects[name], position, atol=0.02)
    backend.apply(RobotCommand(vx=-0.6, vy=-0.6))
    backend.advance(15.0)
    robot = backend.state().robot
    limit = backend.scene.room_half - ROBOT_RADIUS
    assert abs(robot.x) <= limit and abs(robot.y) <= limit


def test_render_gives_frames_that_back_project_into_the_room(backend):
    from envs.pointcloud import backproject

    n = len(backend.scene.objects)
    for camera, size in ((HEAD_CAMERA, (64, 48)), (OVERVIEW_CAMERA, (80, 60)), (HEAD_CAMERA, (64, 48))):
        frame = backend.render(camera, *size, segmentation=True)
        assert frame.rgb.shape == (size[1], size[0], 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (size[1], size[0]) and frame.depth.dtype == np.float32
        assert frame.segmentation.shape == (size[1], size[0]) and frame.segmentation.dtype == np.int32
        assert frame.segmentation.min() >= -1 and frame.segmentation.max() < n
        np.testing.assert_allclose(frame.rotation @ frame.rotation.T, np.eye(3), atol=1e-9)
        xyz, _, _ = backproject(frame, max_depth=20.0)
        assert len(xyz) > 0
        room = backend.scene.room_half + 0.15
        assert np.all(np.abs(xyz[:, :2]) < room) and np.all(xyz[:, 2] > -0.15)
    assert backend.render(HEAD_CAMERA, 32, 32).segmentation is None


def test_attach_carries_the_object_and_detach_drops_it(backend):
    name = backend.scene.objects[0].name
    backend.attach(name)
    before = backend.state()
    assert before.robot.holding == name
    backend.apply(RobotCommand(lift=before.robot.lift + 0.2, extend=before.robot.extend))
    backend.advance(1.0)
    held = backend.state()
    offset = before.objects[name] - before.robot.grasp_point
    np.testing.assert_allclose(held.objects[name] - held.robot.grasp_point, offset, atol=1e-4)
    assert held.objects[name][2] == pytest.approx(before.objects[name][2] + 0.2, abs=1e-4)
    backend.detach()
    backend.advance(1.0)
    dropped = backend.state()
    assert dropped.robot.holding is None
    assert dropped.objects[name][2] < held.objects[name][2] - 0.1
