"""numpy <-> ROS 2 message conversions: round trips, and malformed messages that raise ValueError saying why."""

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image, JointState, PointCloud2, PointField
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from envs.pointcloud import pixel_rays
from ros_nodes.conversions import (
    ARM_JOINTS,
    arm_targets,
    arm_trajectory_msg,
    camera_info_msg,
    cloud_array,
    cloud_msg,
    image_array,
    image_msg,
    joint_positions,
    joint_state_msg,
    object_cloud_arrays,
    object_clouds_msg,
    odometry_msg,
    odometry_pose,
    twist_msg,
    twist_velocity,
)

pytestmark = pytest.mark.ros

STAMP = Time(sec=12, nanosec=345)


# -- images --------------------------------------------------------------------------------------------


def test_rgb8_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = image_msg(rgb, STAMP, "head_camera")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("rgb8", 4, 5, 15, 0)
    assert (msg.header.frame_id, msg.header.stamp) == ("head_camera", STAMP)
    out = image_array(msg)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("shape", [(3, 6), (3, 6, 1)])
def test_32fc1_round_trip_keeps_nan_and_inf(shape):
    depth = np.random.default_rng(1).uniform(0.1, 9.0, (3, 6)).astype(np.float32)
    depth[0, 0], depth[2, 5] = np.nan, np.inf  # no return, beyond range
    msg = image_msg(depth.reshape(shape), STAMP, "head_camera")
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC1", 3, 6, 24)
    out = image_array(msg)
    assert out.dtype == np.float32 and out.shape == (3, 6)
    np.testing.assert_array_equal(out, depth)


def test_32fc1_big_endian_message_is_decoded():
    depth = np.array([[1.5, 2.25], [np.nan, 4.0]], dtype=np.float32)
    msg = Image(height=2, width=2, encoding="32FC1", is_bigendian=1, step=8, data=depth.astype(">f4").tobytes())
    np.testing.assert_array_equal(image_array(msg), depth)


def test_float64_depth_is_sent_as_32fc1():
    depth = np.full((2, 3), 1.25)  # float64 in, float32 on the wire
    msg = image_msg(depth, STAMP, "cam")
    assert msg.encoding == "32FC1" and len(msg.data) == 2 * 3 * 4
    np.testing.assert_array_equal(image_array(msg), depth.astype(np.float32))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(encoding="bgr8"), "unsupported image encoding 'bgr8'"),
        (dict(encoding="16UC1"), "unsupported image encoding '16UC1'"),
        (dict(step=23), "has step 23"),
        (dict(data=bytes(24 * 3 - 4)), "68 bytes"),
        (dict(data=bytes(24 * 3 + 4)), "76 bytes"),
        (dict(height=0, data=b""), "6x0 32FC1"),
        (dict(width=7), "image of 7x3"),  # width and step disagree
    ],
)
def test_malformed_32fc1_raises(change, match):
    msg = image_msg(np.ones((3, 6), np.float32), STAMP, "cam")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=match):
        image_array(msg)


def test_rgb8_with_depth_sized_data_raises():
    msg = image_msg(np.zeros((2, 2, 3), np.uint8), STAMP, "cam")
    msg.data = bytes(2 * 2 * 4)  # 16 bytes where 12 belong
    with pytest.raises(ValueError, match="has step 6 and 16 bytes"):
        image_array(msg)


# -- camera info -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height, fovy", [(128, 128, 60.0), (160, 120, 45.0), (64, 48, 90.0)])
def test_camera_info_intrinsics_from_fovy(width, height, fovy):
    msg = camera_info_msg(width, height, fovy, STAMP, "head_camera")
    fx, fy = msg.k[0], msg.k[4]
    assert fx == pytest.approx(0.5 * height / math.tan(math.radians(fovy) / 2))
    assert fy == pytest.approx(fx)  # square pixels
    assert math.degrees(2 * math.atan(0.5 * height / fy)) == pytest.approx(fovy)  # the vertical field of view back
    assert (msg.width, msg.height, msg.header.frame_id, msg.header.stamp) == (width, height, "head_camera", STAMP)
    assert msg.distortion_model == "plumb_bob" and list(msg.d) == [0.0] * 5
    assert msg.k[1] == msg.k[3] == msg.k[6] == msg.k[7] == 0.0 and msg.k[8] == 1.0
    assert list(msg.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    # P = [K | 0] for a monocular camera
    assert [msg.p[0], msg.p[2], msg.p[5], msg.p[6], msg.p[10]] == [fx, msg.k[2], fy, msg.k[5], 1.0]
    assert msg.p[3] == msg.p[7] == msg.p[11] == 0.0
    assert 0 < msg.k[2] < width and 0 < msg.k[5] < height


def test_camera_info_matches_the_bridges_own_backprojection():
    width, height, fovy = 8, 6, 60.0
    msg = camera_info_msg(width, height, fovy, STAMP, "cam")
    fx, cx, fy, cy = msg.k[0], msg.k[2], msg.k[4], msg.k[5]
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u, dtype=float)], axis=-1).reshape(-1, 3)
    np.testing.assert_allclose(rays, pixel_rays(height, width, fovy, 1), atol=1e-6)


# -- point clouds ----------------------------------------------------------------------------------------


def test_cloud_round_trip_keeps_nan_points_and_colours():
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.uniform(-3, 3, (50, 3)), rng.uniform(0, 1, (50, 3))], axis=1).astype(np.float32)
    points[[3, 17, 40], :3] = np.nan  # invalid returns stay in the cloud, as NaN
    points[0, 3:] = [0.0, 1.0, 1 / 255]
    msg = cloud_msg(points, STAMP, "odom")
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 16, 800)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert not msg.is_dense and msg.header.frame_id == "odom"
    out = cloud_array(msg)
    assert out.shape == (50, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out[:, :3]), np.isnan(points[:, :3]))
    np.testing.assert_array_equal(out[:, :3], points[:, :3])  # NaN == NaN for assert_array_equal
    assert np.all(np.abs(out[:, 3:] - points[:, 3:]) <= 1 / 255 + 1e-6)
    np.testing.assert_allclose(out[0, 3:], [0.0, 1.0, 1 / 255], atol=1e-6)


def test_dense_cloud_is_marked_dense_and_colours_are_clipped():
    points = np.array([[0, 0, 1, -0.5, 2.0, 0.5]], np.float32)
    msg = cloud_msg(points, STAMP, "odom")
    assert msg.is_dense
    np.testing.assert_allclose(cloud_array(msg)[0, 3:], [0.0, 1.0, 127 / 255], atol=1e-6)


def test_cloud_without_rgb_and_with_padding_is_read():
    """A driver's cloud: x, y, z, intensity at its own offsets, 32-byte points, two rows; no colour."""
    names, offsets = ["x", "y", "z", "intensity"], [0, 4, 8, 16]
    dtype = np.dtype({"names": names, "formats": ["<f4"] * 4, "offsets": offsets, "itemsize": 32})
    raw = np.zeros(6, dtype)
    raw["x"], raw["y"], raw["z"], raw["intensity"] = np.arange(6), -np.arange(6), np.nan, 7.0
    fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in zip("xyz", (0, 4, 8))]
    fields.append(PointField(name="intensity", offset=16, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2(height=2, width=3, fields=fields, point_step=32, row_step=96, data=raw.tobytes())
    out = cloud_array(msg)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[:, 0], np.arange(6))
    np.testing.assert_array_equal(out[:, 1], -np.arange(6))
    assert np.isnan(out[:, 2]).all() and (out[:, 3:] == 0).all()


def _cloud(**change) -> PointCloud2:
    msg = cloud_msg(np.zeros((4, 6), np.float32), STAMP, "odom")
    for key, value in change.items():
        setattr(msg, key, value)
    return msg


def _as_float64(field: PointField) -> PointField:
    return PointField(name=field.name, offset=field.offset, datatype=PointField.FLOAT64, count=1)


@pytest.mark.parametrize(
    "msg, match",
    [
        (_cloud(fields=[f for f in _cloud().fields if f.name != "x"]), "lacks a float32 'x' field"),
        (_cloud(fields=[f for f in _cloud().fields if f.name != "z"]), "lacks a float32 'z' field"),
        (_cloud(fields=[_as_float64(f) if f.name == "y" else f for f in _cloud().fields]), "lacks a float32 'y' field"),
        (_cloud(data=bytes(60)), "4 points x 16 bytes has 60 bytes"),
        (_cloud(width=5), "5 points x 16 bytes has 64 bytes"),
        (_cloud(point_step=0, row_step=0), "0 bytes has 64 bytes"),
        (_cloud(row_step=12), "has 64 bytes"),
    ],
)
def test_malformed_cloud_raises(msg, match):
    with pytest.raises(ValueError, match=match):
        cloud_array(msg)


def test_cloud_msg_wants_n_by_6():
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        cloud_msg(np.zeros((4, 3), np.float32), STAMP, "odom")


def test_object_clouds_round_trip_by_marker_id():
    rng = np.random.default_rng(3)
    clouds = {7: rng.uniform(0, 1, (20, 6)).astype(np.float32), 2: rng.uniform(0, 1, (5, 6)).astype(np.float32)}
    msg = object_clouds_msg(clouds, STAMP, "odom")
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "object"] and msg.width == 25
    out = object_cloud_arrays(msg)
    assert set(out) == {7, 2}
    for i, cloud in clouds.items():
        np.testing.assert_array_equal(out[i][:, :3], cloud[:, :3])
        assert np.all(np.abs(out[i][:, 3:] - cloud[:, 3:]) <= 1 / 255 + 1e-6)
    assert cloud_array(msg).shape == (25, 6)  # an ordinary cloud to any other reader (RViz)
    assert object_cloud_arrays(object_clouds_msg({}, STAMP, "odom")) == {}
    with pytest.raises(ValueError, match="'object' field"):
        object_cloud_arrays(cloud_msg(clouds[7], STAMP, "odom"))


# -- odometry, joints, commands --------------------------------------------------------------------------


@pytest.mark.parametrize("yaw", [0.0, 0.5, -1.2, math.pi / 2, 3.1, -3.1])
def test_odometry_round_trip(yaw):
    msg = odometry_msg(1.25, -0.5, yaw, STAMP, "odom", "base_link")
    assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp) == ("odom", "base_link", STAMP)
    x, y, out = odometry_pose(msg)
    assert (x, y) == (1.25, -0.5)
    assert out == pytest.approx(yaw, abs=1e-9)


def test_odometry_yaw_wraps_into_minus_pi_pi():
    assert odometry_pose(odometry_msg(0, 0, 4.0, STAMP))[2] == pytest.approx(4.0 - 2 * math.pi)


def test_odometry_yaw_of_a_general_quaternion():
    """A quaternion with small roll and pitch (a real IMU-fused odometry) still gives its heading."""
    roll, pitch, yaw = 0.02, -0.03, 0.8
    cr, sr, cp, sp, cy, sy = (f(a / 2) for a in (roll, pitch, yaw) for f in (math.cos, math.sin))
    msg = Odometry()
    q = msg.pose.pose.orientation
    q.w, q.x = cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy
    q.y, q.z = cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy
    assert odometry_pose(msg)[2] == pytest.approx(yaw, abs=1e-9)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("position.x", math.nan, "NaN or infinite"),
        ("position.y", math.inf, "NaN or infinite"),
        ("orientation.w", math.nan, "NaN or infinite"),
        ("orientation.z", 0.5, "not a unit quaternion"),
        ("orientation.w", 0.0, "not a unit quaternion"),  # the all-zero quaternion
    ],
)
def test_malformed_odometry_raises(field, value, match):
    msg = odometry_msg(0.0, 0.0, 0.0, STAMP)
    part, attr = field.split(".")
    setattr(getattr(msg.pose.pose, part), attr, value)
    with pytest.raises(ValueError, match=match):
        odometry_pose(msg)


def test_joint_state_round_trip():
    joints = {"lift": 0.55, "extend": 0.4, "gripper": 1.0}
    msg = joint_state_msg(joints, STAMP)
    assert list(msg.name) == list(ARM_JOINTS) and msg.header.stamp == STAMP
    assert joint_positions(msg) == pytest.approx(joints)


def test_joint_state_with_extra_joints_in_any_order():
    msg = JointState(name=["wheel_left", "gripper", "extend", "lift"], position=[3.0, 0.0, 0.3, 0.9])
    assert joint_positions(msg) == {"wheel_left": 3.0, "gripper": 0.0, "extend": 0.3, "lift": 0.9}


@pytest.mark.parametrize(
    "names, positions, match",
    [
        (["lift", "extend", "gripper"], [0.5, 0.4], "3 names and 2 positions"),
        (["lift", "extend"], [0.5, 0.4, 0.0], "2 names and 3 positions"),
        (["lift", "extend"], [0.5, 0.4], r"lacks \['gripper'\]"),
        (["lift", "extend", "gripper"], [math.nan, 0.4, 0.0], "NaN or infinite"),
        (["lift", "extend", "gripper"], [0.5, -math.inf, 0.0], "NaN or infinite"),
    ],
)
def test_malformed_joint_state_raises(names, positions, match):
    with pytest.raises(ValueError, match=match):
        joint_positions(JointState(name=names, position=positions))


def test_twist_round_trip_and_nan():
    assert twist_velocity(twist_msg(0.3, -0.1, 0.7)) == pytest.approx((0.3, -0.1, 0.7))
    for field, value in [("linear.x", math.nan), ("linear.y", math.inf), ("angular.z", -math.inf)]:
        msg = Twist()
        part, attr = field.split(".")
        setattr(getattr(msg, part), attr, value)
        with pytest.raises(ValueError, match="NaN or infinite"):
            twist_velocity(msg)


def test_arm_trajectory_round_trip():
    msg = arm_trajectory_msg(0.6, 0.45, 1.0, STAMP)
    assert list(msg.joint_names) == list(ARM_JOINTS) and msg.header.stamp == STAMP
    assert arm_targets(msg) == pytest.approx({"lift": 0.6, "extend": 0.45, "gripper": 1.0})


def test_arm_command_with_some_joints_only():
    msg = JointTrajectory(joint_names=["gripper"], points=[JointTrajectoryPoint(positions=[0.0])])
    assert arm_targets(msg) == {"gripper": 0.0}


@pytest.mark.parametrize(
    "names, points, match",
    [
        (["lift", "elbow"], [[0.5, 0.1]], r"unknown joints \['elbow'\]"),
        (["lift", "extend", "gripper"], [], "no trajectory points"),
        (["lift", "extend", "gripper"], [[0.5, math.nan, 0.0]], "NaN or infinite"),
        (["lift", "extend", "gripper"], [[0.5, 0.4]], "3 joints and 2 positions"),
    ],
)
def test_malformed_arm_command_raises(names, points, match):
    msg = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(positions=p) for p in points])
    with pytest.raises(ValueError, match=match):
        arm_targets(msg)


# -- perception: depth in millimetres, the field of view, the occupancy grid, object markers, plans -----------


def test_16uc1_depth_is_read_in_metres_with_zero_as_no_return():
    from ros_nodes.conversions import depth_array

    millimetres = np.array([[0, 1000], [2500, 65535]], np.uint16)
    msg = Image(height=2, width=2, encoding="16UC1", is_bigendian=0, step=4, data=millimetres.tobytes())
    depth = depth_array(msg)
    assert depth.dtype == np.float32 and np.isnan(depth[0, 0])
    np.testing.assert_allclose(depth[[0, 1, 1], [1, 0, 1]], [1.0, 2.5, 65.535], rtol=1e-6)
    metres = image_msg(np.full((2, 3), 1.5, np.float32), STAMP, "head_camera")
    np.testing.assert_array_equal(depth_array(metres), np.full((2, 3), 1.5, np.float32))
    with pytest.raises(ValueError, match="32FC1 .metres. or 16UC1"):
        depth_array(image_msg(np.zeros((2, 2, 3), np.uint8), STAMP, "head_camera"))
    msg.data = msg.data[:-2]
    with pytest.raises(ValueError, match="2x2 16UC1 has step 4 and 6 bytes"):
        depth_array(msg)


@pytest.mark.parametrize("width, height, fovy", [(256, 256, 60.0), (640, 480, 42.5)])
def test_camera_fovy_inverts_camera_info_msg(width, height, fovy):
    from ros_nodes.conversions import camera_fovy

    assert camera_fovy(camera_info_msg(width, height, fovy, STAMP, "cam")) == pytest.approx(fovy)
    broken = camera_info_msg(width, height, fovy, STAMP, "cam")
    broken.k[4] = 0.0
    with pytest.raises(ValueError, match="no usable focal length"):
        camera_fovy(broken)


def test_occupancy_grid_round_trip_is_row_major_with_x_fastest():
    from ros_nodes.conversions import occupancy_grid_array, occupancy_grid_msg

    values = np.full((4, 3), -1, np.int8)  # 4 cells along x, 3 along y
    values[3, 0], values[0, 2], values[1, 1] = 100, 0, 100
    msg = occupancy_grid_msg(values, (-1.0, 2.0), 0.05, STAMP, "odom")
    assert (msg.info.width, msg.info.height, msg.header.frame_id) == (4, 3, "odom")
    assert (msg.info.origin.position.x, msg.info.origin.position.y, msg.info.origin.orientation.w) == (-1.0, 2.0, 1.0)
    assert msg.info.resolution == pytest.approx(0.05)
    data = np.array(msg.data, np.int8)
    width = msg.info.width
    assert data[0 * width + 3] == 100 and data[2 * width + 0] == 0 and data[1 * width + 1] == 100  # data[y * width + x]
    out, origin, resolution = occupancy_grid_array(msg)
    np.testing.assert_array_equal(out, values)
    assert origin == (-1.0, 2.0) and resolution == pytest.approx(0.05)
    square = occupancy_grid_msg(np.zeros((2, 2), np.int8), -6.0, 0.1, STAMP)
    assert (square.info.origin.position.x, square.info.origin.position.y) == (-6.0, -6.0)


@pytest.mark.parametrize(
    "values, origin, resolution, match",
    [
        (np.zeros((0, 3)), 0.0, 0.05, "non-empty 2D"),
        (np.zeros(5), 0.0, 0.05, "non-empty 2D"),
        (np.full((2, 2), 101), 0.0, 0.05, "-1 .unknown. or 0..100"),
        (np.zeros((2, 2)), 0.0, 0.0, "positive resolution"),
        (np.zeros((2, 2)), (math.nan, 0.0), 0.05, "finite origin"),
    ],
)
def test_occupancy_grid_msg_rejects_bad_grids(values, origin, resolution, match):
    from ros_nodes.conversions import occupancy_grid_msg

    with pytest.raises(ValueError, match=match):
        occupancy_grid_msg(values, origin, resolution, STAMP)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: setattr(m.info, "width", 5), "5x3 cells has 12 values"),
        (lambda m: setattr(m.info, "resolution", 0.0), "resolution must be positive"),
        (lambda m: setattr(m.info.origin.position, "x", math.inf), "NaN or infinite"),
        (lambda m: (setattr(m.info.origin.orientation, "z", 1.0), setattr(m.info.origin.orientation, "w", 0.0)), "rotated"),
    ],
)
def test_malformed_occupancy_grid_raises(change, match):
    from ros_nodes.conversions import occupancy_grid_array, occupancy_grid_msg

    msg = occupancy_grid_msg(np.zeros((4, 3), np.int8), 0.0, 0.05, STAMP)
    change(msg)
    with pytest.raises(ValueError, match=match):
        occupancy_grid_array(msg)


def test_object_marker_carries_name_pose_size_colour_and_text():
    from visualization_msgs.msg import Marker

    from ros_nodes.conversions import object_marker

    marker = object_marker("red bowl", (1.0, -0.5, 0.42), 0.1, "bowl", (0.85, 0.12, 0.1), STAMP, "odom", 7, "red bowl 0.93", 1.5)
    assert (marker.ns, marker.id, marker.type, marker.action, marker.text) == ("red bowl", 7, Marker.CYLINDER, Marker.ADD, "red bowl 0.93")
    p = marker.pose.position
    assert (p.x, p.y, p.z, marker.pose.orientation.w) == (1.0, -0.5, 0.42, 1.0)
    assert marker.scale.x == marker.scale.y == marker.scale.z == pytest.approx(0.2)
    assert (marker.color.r, marker.color.a) == (pytest.approx(0.85), 1.0)
    assert (marker.lifetime.sec, marker.lifetime.nanosec) == (1, 500_000_000)
    assert (marker.header.frame_id, marker.header.stamp) == ("odom", STAMP)
    assert object_marker("red cube", (0, 0, 0), 0.02, "cube", (1, 0, 0), STAMP, "odom").type == Marker.CUBE
    for xyz, half in [((math.nan, 0, 0), 0.02), ((0, 0), 0.02), ((0, 0, 0), 0.0)]:
        with pytest.raises(ValueError, match="must be finite"):
            object_marker("red cube", xyz, half, "cube", (1, 0, 0), STAMP, "odom")


def test_validate_plan_allows_unknown_objects_only_after_a_scan():
    from envs.plan import PlanError
    from ros_nodes.conversions import validate_plan

    known = ["red bowl"]
    after = "thought: look first.\n1. scan()\n2. navigate(blue cube)\n3. pick(blue cube)\n4. done()"
    assert [s.skill for s in validate_plan(after, known).steps] == ["scan", "navigate", "pick", "done"]
    before = "thought: go.\n1. navigate(blue cube)\n2. scan()\n3. done()"
    with pytest.raises(PlanError, match="unknown object 'blue cube'"):
        validate_plan(before, known)
    with pytest.raises(PlanError, match="a plan starts with 'thought"):
        validate_plan("1. scan()\n2. done()", known)
    assert validate_plan("thought: go.\n1. navigate(red bowl)\n2. done()", known).steps[0].args == ("red bowl",)
