"""The ROS 2 controller's timing while the planner is busy in another process.

Three processes on loopback: the controller (``python -m ros_nodes.controller``), the planner generating
plans back to back with the real SmolLM2 backbone (the CPU load), and this one, which plays the robot:
odometry and joint states at 50 Hz, a scene, and a plan that keeps the controller driving. It measures the
period between the controller's commands by the stamps the controller puts on them as it sends them (its
50 Hz loop; the arrival times here also carry this process's own scheduling delays behind the busy planner,
reported beside it), and the latency from each odometry message to the command computed from it.

Run it through ``tests/isolated.sh`` (loopback only): ``tests/isolated.sh .venv/bin/python -m benchmarks.run ros``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks.run import Ratio

RATE = 50.0
PRIORITY = 50  # SCHED_FIFO for the controller and the robot's clock, where the user may (root or rtprio)
SECONDS = 20.0
SCENE_SEED = 0


def run() -> list[Ratio]:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] != "LOCALHOST":
        raise RuntimeError("this benchmark runs ROS 2 on loopback only: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST")
    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState, PointCloud2
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory
    from visualization_msgs.msg import Marker, MarkerArray

    from envs.scene import generate_scene
    from ros_nodes.conversions import cloud_msg, image_msg, joint_state_msg, odometry_msg
    from ros_nodes.qos import LATCHED, STREAM
    from ros_nodes.spin import go_realtime

    env = dict(os.environ, ROS_LOG_DIR=tempfile.mkdtemp(prefix="ros_bench_"))
    python = [sys.executable, "-m"]
    controller = subprocess.Popen(
        [*python, "ros_nodes.controller", "--ros-args", "-p", f"rate:={RATE}", "-p", f"realtime_priority:={PRIORITY}"], env=env
    )
    # SmolLM2 with untrained encoders: the CPU load. Its plans go elsewhere; the controller follows ours.
    planner = subprocess.Popen([*python, "ros_nodes.planner", "--ros-args", "-r", "plan:=plan_load"], env=env)
    rclpy.init()
    node = rclpy.create_node("bench_robot")
    scene = generate_scene(SCENE_SEED)
    target = max(scene.objects, key=lambda o: np.hypot(o.x - scene.robot_start[0], o.y - scene.robot_start[1]))
    sent: list[float] = []
    received: list[tuple[float, float]] = []  # (arrival time, time the latest odometry before it was sent)
    stamps: list[float] = []  # when the controller sent each arm command, by its own clock
    lock = threading.Lock()

    def on_cmd(msg: Twist) -> None:
        now = time.perf_counter()
        with lock:
            if sent and (msg.linear.x or msg.linear.y or msg.angular.z):
                received.append((now, sent[-1]))

    def on_arm(msg: JointTrajectory) -> None:
        with lock:
            stamps.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)

    node.create_subscription(Twist, "cmd_vel", on_cmd, STREAM)
    node.create_subscription(JointTrajectory, "arm_command", on_arm, STREAM)
    status = []
    node.create_subscription(String, "controller/status", lambda m: status.append(m.data), LATCHED)
    pub_odom = node.create_publisher(Odometry, "odom", STREAM)
    pub_joints = node.create_publisher(JointState, "joint_states", STREAM)
    pub_scene = node.create_publisher(String, "scene", LATCHED)
    pub_objects = node.create_publisher(MarkerArray, "objects", STREAM)
    pub_plan = node.create_publisher(String, "plan", LATCHED)
    pub_instruction = node.create_publisher(String, "instruction", 10)
    markers = MarkerArray(markers=[Marker(ns=o.name) for o in scene.objects])
    for marker, obj in zip(markers.markers, scene.objects):
        marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = obj.x, obj.y, obj.z

    def publish_sensors() -> None:
        stamp = node.get_clock().now().to_msg()
        pub_joints.publish(joint_state_msg({"lift": 0.3, "extend": 0.25, "gripper": 0.0}, stamp))
        pub_objects.publish(markers)
        with lock:
            sent.append(time.perf_counter())
        pub_odom.publish(odometry_msg(*scene.robot_start, stamp))

    pub_image = node.create_publisher(Image, "camera/image", STREAM)
    pub_cloud = node.create_publisher(PointCloud2, "camera/points", STREAM)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    cloud = rng.random((1024, 6), dtype=np.float32)

    def keep_planner_busy() -> None:
        stamp = node.get_clock().now().to_msg()
        pub_image.publish(image_msg(image, stamp, "head_camera"))
        pub_cloud.publish(cloud_msg(cloud, stamp, "odom"))
        pub_instruction.publish(String(data=f"put the {target.name} in the bowl"))

    stop = threading.Event()

    def robot_clock() -> None:
        """Sensors on absolute deadlines from a thread of their own: the robot's clock must not add jitter
        of its own to what is measured of the controller."""
        try:  # a robot's driver runs with real-time priority too
            go_realtime(PRIORITY)
        except (AttributeError, OSError):
            pass
        start = time.perf_counter()
        tick = 0
        while not stop.is_set():
            tick += 1
            time.sleep(max(0.0, start + tick / RATE - time.perf_counter()))
            publish_sensors()

    node.create_timer(1.0, keep_planner_busy)
    threading.Thread(target=robot_clock, daemon=True).start()
    pub_scene.publish(String(data=json.dumps(scene.to_dict())))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        time.sleep(8.0)  # both nodes up, the planner's model loaded and generating
        plan = f"thought: far away.\n1. navigate({target.name})\n2. done()"
        pub_plan.publish(String(data=json.dumps({"plan": plan})))
        time.sleep(2.0)
        with lock:
            received.clear()
            stamps.clear()
        # The robot's clock thread must not wait for the GIL behind this process's other threads: Python hands
        # the GIL over every 5 ms by default, the size of the odometry jitter seen here (2-6 ms p99) when the
        # receiving thread held it; and no collection pauses while it measures.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)
        gc.disable()
        time.sleep(SECONDS)
        gc.enable()
        sys.setswitchinterval(switch)
        with lock:
            samples, sent_at = list(received), list(stamps)
            sends = [t for t in sent if t >= samples[0][1]] if samples else []
    finally:
        stop.set()
        for process in (controller, planner):
            process.send_signal(2)
        for process in (controller, planner):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()
    if len(samples) < RATE * SECONDS / 2:
        raise RuntimeError(f"only {len(samples)} commands in {SECONDS:.0f} s; controller status: {status[-3:]}")
    arrivals = np.array([a for a, _ in samples])
    period_error = np.abs(np.diff(np.array(sent_at)) - 1.0 / RATE) * 1000
    arrival_error = np.abs(np.diff(arrivals) - 1.0 / RATE) * 1000
    latency = np.array([a - s for a, s in samples]) * 1000
    sensor_error = np.abs(np.diff(sends) - 1.0 / RATE) * 1000
    detail = (
        f"{len(sent_at)} commands in {SECONDS:.0f} s, planner (SmolLM2) busy in another process; p99 period "
        f"error of their arrival here {np.percentile(arrival_error, 99):.2f} ms, of the odometry the controller "
        f"follows {np.percentile(sensor_error, 99):.2f} ms"
    )
    return [
        Ratio("controller p99 period error", float(np.percentile(period_error, 99)), "<= 2", detail, "ms"),
        Ratio("odometry -> command latency p50", float(np.percentile(latency, 50)), "<= 5", f"p99 {np.percentile(latency, 99):.2f} ms", "ms"),
    ]
