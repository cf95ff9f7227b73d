"""numpy <-> ROS 2 standard messages, with validation: a malformed message raises ``ValueError`` saying why,
so a node can log it and carry on instead of acting on garbage."""

from __future__ import annotations

import json
import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Twist
from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from envs.plan import Plan, parse_plan, parse_step
from envs.scene import SceneSpec

ARM_JOINTS = ("lift", "extend", "gripper")  # gripper: 1.0 closed, 0.0 open
_ENCODINGS = {"rgb8": (np.uint8, 3), "32FC1": (np.float32, 1)}
_CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
_OBJECTS_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("object", "<u4")])


def scene_spec(msg: String) -> SceneSpec:
    """The scene description a ``scene`` topic carries as JSON (what the skills need of the world)."""
    try:
        return SceneSpec.from_dict(json.loads(msg.data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a scene description: {exc}") from exc


def image_msg(array: np.ndarray, stamp: Time, frame: str) -> Image:
    """rgb8 from (H, W, 3) uint8, 32FC1 from (H, W) or (H, W, 1) float32 metres."""
    array = np.ascontiguousarray(array)
    encoding = "rgb8" if array.dtype == np.uint8 else "32FC1"
    dtype, channels = _ENCODINGS[encoding]
    array = array.astype(dtype, copy=False).reshape(array.shape[0], array.shape[1], channels)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.step = array.shape[1] * channels * array.itemsize
    msg.data = array.tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (want {', '.join(_ENCODINGS)})")
    dtype, channels = _ENCODINGS[msg.encoding]
    row = msg.width * channels * np.dtype(dtype).itemsize
    if msg.height == 0 or msg.width == 0 or msg.step != row or len(msg.data) != row * msg.height:
        raise ValueError(f"image of {msg.width}x{msg.height} {msg.encoding} has step {msg.step} and {len(msg.data)} bytes")
    array = np.frombuffer(bytes(msg.data), dtype=np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<"))
    array = array.reshape(msg.height, msg.width, channels).astype(dtype)
    return array if channels == 3 else array[..., 0]


def depth_array(msg: Image) -> np.ndarray:
    """A depth image in metres, float32 (H, W): 32FC1 metres, or 16UC1 millimetres (REP 118; 0 is no
    return and becomes NaN), as RGB-D drivers publish it."""
    if msg.encoding == "32FC1":
        return image_array(msg)
    if msg.encoding != "16UC1":
        raise ValueError(f"a depth image is 32FC1 (metres) or 16UC1 (millimetres), got {msg.encoding!r}")
    row = msg.width * 2
    if msg.height == 0 or msg.width == 0 or msg.step != row or len(msg.data) != row * msg.height:
        raise ValueError(f"image of {msg.width}x{msg.height} 16UC1 has step {msg.step} and {len(msg.data)} bytes")
    raw = np.frombuffer(bytes(msg.data), dtype=np.dtype(np.uint16).newbyteorder(">" if msg.is_bigendian else "<"))
    depth = raw.reshape(msg.height, msg.width).astype(np.float32) / 1000.0
    depth[depth == 0] = np.nan
    return depth


def camera_info_msg(width: int, height: int, fovy_deg: float, stamp: Time, frame: str) -> CameraInfo:
    focal = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2  # pixel centres are integers in ROS: the image centre sits between
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.d = [0.0] * 5
    msg.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def cloud_msg(points: np.ndarray, stamp: Time, frame: str, ids: np.ndarray | None = None) -> PointCloud2:
    """(N, 6) xyz + rgb in [0, 1] -> PointCloud2 with RViz's packed ``rgb`` field; NaN points stay NaN. With
    ``ids`` (N,), each point's object in a uint32 ``object`` field (``object_clouds_msg``)."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 6:
        raise ValueError(f"a cloud is (N, 6) xyz + rgb, got {points.shape}")
    dtype = _CLOUD_DTYPE if ids is None else _OBJECTS_DTYPE
    packed = np.empty(len(points), dtype=dtype)
    packed["x"], packed["y"], packed["z"] = points[:, 0], points[:, 1], points[:, 2]
    rgb = (np.clip(np.nan_to_num(points[:, 3:6]), 0, 1) * 255).astype(np.uint32)
    packed["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    if ids is not None:
        packed["object"] = ids
    msg = PointCloud2(height=1, width=len(points), is_bigendian=False, point_step=dtype.itemsize)
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.fields = [
        PointField(name=name, offset=dtype.fields[name][1], datatype=PointField.FLOAT32 if name in ("x", "y", "z") else PointField.UINT32, count=1)
        for name in dtype.names
    ]
    msg.row_step = msg.point_step * len(points)
    msg.is_dense = bool(np.isfinite(points).all())
    msg.data = packed.tobytes()
    return msg


def cloud_array(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 with float32 x, y, z (and optionally packed rgb) -> (N, 6); NaN points are kept."""
    fields = {f.name: f for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in fields or fields[name].datatype != PointField.FLOAT32:
            raise ValueError(f"point cloud lacks a float32 {name!r} field")
    count = msg.width * msg.height
    if msg.point_step == 0 or len(msg.data) != count * msg.point_step or msg.row_step != msg.width * msg.point_step:
        raise ValueError(f"point cloud of {count} points x {msg.point_step} bytes has {len(msg.data)} bytes")
    names = ["x", "y", "z"] + (["rgb"] if "rgb" in fields else [])
    dtype = np.dtype(
        {
            "names": names,
            "formats": ["<f4"] * 3 + (["<u4"] if "rgb" in fields else []),
            "offsets": [fields[n].offset for n in names],
            "itemsize": msg.point_step,
        }
    )
    raw = np.frombuffer(bytes(msg.data), dtype=dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    out = np.zeros((count, 6), np.float32)
    out[:, 0], out[:, 1], out[:, 2] = raw["x"], raw["y"], raw["z"]
    if "rgb" in fields:
        rgb = raw["rgb"].astype(np.uint32)
        out[:, 3:6] = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1) / 255.0
    return out


def object_clouds_msg(clouds: dict[int, np.ndarray], stamp: Time, frame: str) -> PointCloud2:
    """Objects' (N, 6) clouds, by the ``id`` of the marker that names each on the ``objects`` topic, as one
    PointCloud2 whose ``object`` field says whose each point is: what the planner makes object tokens of."""
    ids = np.concatenate([np.full(len(c), i, np.uint32) for i, c in clouds.items()]) if clouds else np.zeros(0, np.uint32)
    points = np.concatenate([np.asarray(c, np.float32) for c in clouds.values()]) if clouds else np.zeros((0, 6), np.float32)
    return cloud_msg(points, stamp, frame, ids)


def object_cloud_arrays(msg: PointCloud2) -> dict[int, np.ndarray]:
    """What ``object_clouds_msg`` packed: marker id -> (N, 6) cloud."""
    fields = {f.name: f for f in msg.fields}
    if "object" not in fields or fields["object"].datatype != PointField.UINT32:
        raise ValueError("object clouds lack a uint32 'object' field")
    points = cloud_array(msg)  # checks the sizes
    dtype = np.dtype({"names": ["object"], "formats": ["<u4"], "offsets": [fields["object"].offset], "itemsize": msg.point_step})
    ids = np.frombuffer(bytes(msg.data), dtype=dtype.newbyteorder(">" if msg.is_bigendian else "<"))["object"]
    return {int(i): points[ids == i] for i in np.unique(ids)}


def odometry_msg(x: float, y: float, yaw: float, stamp: Time, frame: str = "odom", child: str = "base_link") -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, frame, child
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return msg


def odometry_pose(msg: Odometry) -> tuple[float, float, float]:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    values = (p.x, p.y, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in values):
        raise ValueError("odometry holds NaN or infinite values")
    if abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) > 1e-3:
        raise ValueError("odometry orientation is not a unit quaternion")
    yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
    return p.x, p.y, yaw


def joint_state_msg(positions: dict[str, float], stamp: Time) -> JointState:
    msg = JointState(name=list(positions), position=[float(v) for v in positions.values()])
    msg.header.stamp = stamp
    return msg


def joint_positions(msg: JointState, required=ARM_JOINTS) -> dict[str, float]:
    if len(msg.name) != len(msg.position):
        raise ValueError(f"joint state has {len(msg.name)} names and {len(msg.position)} positions")
    positions = dict(zip(msg.name, msg.position))
    missing = [j for j in required if j not in positions]
    if missing:
        raise ValueError(f"joint state lacks {missing}")
    if not all(math.isfinite(positions[j]) for j in required):
        raise ValueError("joint state holds NaN or infinite positions")
    return positions


def twist_velocity(msg: Twist) -> tuple[float, float, float]:
    """Forward, left and yaw-rate velocities of a base command; NaN or infinity is an error."""
    values = (msg.linear.x, msg.linear.y, msg.angular.z)
    if not all(math.isfinite(v) for v in values):
        raise ValueError("velocity command holds NaN or infinite values")
    return values


def twist_msg(forward: float, left: float, yaw_rate: float) -> Twist:
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.angular.z = float(forward), float(left), float(yaw_rate)
    return msg


def arm_trajectory_msg(lift: float, extend: float, gripper: float, stamp: Time) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(ARM_JOINTS))
    msg.header.stamp = stamp
    msg.points = [JointTrajectoryPoint(positions=[float(lift), float(extend), float(gripper)])]
    return msg


def arm_targets(msg: JointTrajectory) -> dict[str, float]:
    """Target positions from the first point of an arm command; unknown joints or NaN are errors."""
    if not msg.points:
        raise ValueError("arm command has no trajectory points")
    positions = msg.points[0].positions
    if len(positions) != len(msg.joint_names):
        raise ValueError(f"arm command has {len(msg.joint_names)} joints and {len(positions)} positions")
    unknown = set(msg.joint_names) - set(ARM_JOINTS)
    if unknown:
        raise ValueError(f"arm command names unknown joints {sorted(unknown)} (known: {', '.join(ARM_JOINTS)})")
    targets = dict(zip(msg.joint_names, positions))
    if not all(math.isfinite(v) for v in targets.values()):
        raise ValueError("arm command holds NaN or infinite positions")
    return targets


def camera_fovy(msg: CameraInfo) -> float:
    """The vertical field of view (degrees) of a camera_info: 2 atan(height / 2 / fy)."""
    fy = msg.k[4] if len(msg.k) == 9 else math.nan
    if msg.height == 0 or msg.width == 0 or not math.isfinite(fy) or fy <= 0:
        raise ValueError(f"camera_info of {msg.width}x{msg.height} has no usable focal length (fy = {fy})")
    return math.degrees(2 * math.atan(msg.height / 2 / fy))


def occupancy_grid_msg(
    values: np.ndarray, origin: float | tuple[float, float], resolution: float, stamp: Time, frame: str = "odom"
) -> OccupancyGrid:
    """An occupancy grid indexed [x cell, y cell] (-1 unknown, 0 free, 100 occupied: ``OccupancyGrid.values``)
    as nav_msgs/OccupancyGrid, whose data is row-major with x fastest (``data[y * width + x]``)."""
    values = np.asarray(values)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"an occupancy grid is a non-empty 2D array, got shape {values.shape}")
    if not np.all((values == -1) | ((values >= 0) & (values <= 100))):
        raise ValueError("occupancy values must be -1 (unknown) or 0..100")
    ox, oy = (origin, origin) if np.isscalar(origin) else origin
    if not (math.isfinite(resolution) and resolution > 0 and math.isfinite(ox) and math.isfinite(oy)):
        raise ValueError(f"an occupancy grid needs a positive resolution and a finite origin, got {resolution}, {origin}")
    msg = OccupancyGrid()
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.info.map_load_time = stamp
    msg.info.resolution = float(resolution)
    msg.info.width, msg.info.height = values.shape  # [x, y]: width cells along x
    msg.info.origin.position.x, msg.info.origin.position.y = float(ox), float(oy)
    msg.info.origin.orientation.w = 1.0
    msg.data = values.T.astype(np.int8).tobytes()  # rows of constant y, x fastest
    return msg


def occupancy_grid_array(msg: OccupancyGrid) -> tuple[np.ndarray, tuple[float, float], float]:
    """nav_msgs/OccupancyGrid -> (values indexed [x cell, y cell] as int8, origin (x, y) m, resolution m)."""
    info = msg.info
    width, height, resolution = info.width, info.height, info.resolution
    if width == 0 or height == 0 or len(msg.data) != width * height:
        raise ValueError(f"occupancy grid of {width}x{height} cells has {len(msg.data)} values")
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"occupancy grid resolution must be positive, got {resolution}")
    p, q = info.origin.position, info.origin.orientation
    if not all(math.isfinite(v) for v in (p.x, p.y, q.x, q.y, q.z, q.w)):
        raise ValueError("occupancy grid origin holds NaN or infinite values")
    if abs(q.z) > 1e-6 or abs(q.x) > 1e-6 or abs(q.y) > 1e-6 or abs(abs(q.w) - 1.0) > 1e-6:
        raise ValueError("occupancy grid origin is rotated; only axis-aligned maps are read")
    values = np.frombuffer(bytes(msg.data), dtype=np.int8).reshape(height, width).T.copy()
    return values, (float(p.x), float(p.y)), float(resolution)


def object_marker(name: str, xyz, half: float, shape: str, rgb, stamp: Time, frame: str, marker_id: int = 0,
                  text: str = "", lifetime: float = 0.0) -> Marker:
    """One object as RViz sees it and the controller reads it: ``ns`` is the object's name, the pose its
    centre (a container's bottom), the scale its footprint (2 * half); 0 lifetime keeps it until replaced."""
    xyz = [float(v) for v in xyz]
    if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz) or not (math.isfinite(half) and half > 0):
        raise ValueError(f"object {name!r}: position {xyz} and half-extent {half} must be finite (half > 0)")
    kind = {"cube": Marker.CUBE, "bin": Marker.CUBE, "cylinder": Marker.CYLINDER, "bowl": Marker.CYLINDER}.get(shape, Marker.SPHERE)
    marker = Marker(ns=name, id=int(marker_id), type=kind, action=Marker.ADD, text=text)
    marker.header.stamp, marker.header.frame_id = stamp, frame
    marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = xyz
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = marker.scale.z = 2 * float(half)
    marker.color.r, marker.color.g, marker.color.b = (float(c) for c in rgb)
    marker.color.a = 1.0
    seconds = max(0.0, float(lifetime))
    marker.lifetime = Duration(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)) % 1_000_000_000)
    return marker


def scene_markers(scene: SceneSpec, positions: dict, stamp: Time, frame: str, only=None) -> MarkerArray:
    """The simulator's objects where they are (``positions``: name -> centre): perfect perception. ``only``:
    these names alone (a marker stands until replaced, so an update may carry just what moved)."""
    markers = MarkerArray()
    for i, obj in enumerate(scene.objects):
        if only is None or obj.name in only:
            markers.markers.append(object_marker(obj.name, positions[obj.name], obj.half, obj.shape, obj.rgb, stamp, frame, i))
    return markers


def validate_plan(text: str, objects) -> Plan:
    """``parse_plan`` against the objects known now, except that steps after a ``scan()`` may name objects
    not perceived yet (the scan may find them; the plan runner checks each step's objects when it begins)."""
    plan = parse_plan(text)
    names = list(objects)
    for index, step in enumerate(plan.steps):
        if step.skill == "scan":
            break
        parse_step(str(step), index + 2, names)  # line 1 is the thought
    return plan
