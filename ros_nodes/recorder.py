"""Recorder (``record:=true``): the graph's topics, as they pass, into one MCAP file, the same topics and types
an episode recording holds (``embodied replay`` plays either). Messages are written as they arrive, in CDR
(raw subscriptions: nothing is decoded), stamped with the node's clock (the recording's time under
``use_sim_time``). Latched topics are subscribed latched, so the task and scene published before the
recorder started are in the file too. The file is finished (indexed) when the node stops; a recorder killed
outright leaves every chunk written before readable.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from geometry_msgs.msg import Twist
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from ros_nodes.params import declare
from ros_nodes.qos import LATCHED
from ros_nodes.recording import RecordingWriter, type_name

# Every message counts in a recording: a queue deep enough for a burst (a frame's image, depth and cloud).
QUEUE = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
TOPICS = {
    "camera/image": Image, "camera/depth": Image, "camera/camera_info": CameraInfo, "camera/points": PointCloud2,
    "odom": Odometry, "joint_states": JointState, "gripper/holding": Bool,
    "task": String, "instruction": String, "plan": String, "task/status": String,
    "objects": MarkerArray, "scene": String, "map": OccupancyGrid, "grasped": String,
    "cmd_vel": Twist, "arm_command": JointTrajectory,
    "planner/status": String, "perception/status": String, "controller/status": String,
}  # fmt: skip
LATCHED_TOPICS = ("task", "plan", "scene", "map", "planner/status", "perception/status", "controller/status")


class Recorder(Node):
    def __init__(self, **node_options):
        super().__init__("recorder", **node_options)
        param = declare(self, {"record_path": ""})  # "": runs/ros/recording_YYYYmmdd_HHMMSS.mcap
        path = Path(param["record_path"] or f"runs/ros/recording_{time.strftime('%Y%m%d_%H%M%S')}.mcap")
        self.out = RecordingWriter(path, LATCHED_TOPICS)
        for topic, kind in TOPICS.items():
            name = self.resolve_topic_name(topic)  # the robot's own name for it, when remapped
            qos = LATCHED if topic in LATCHED_TOPICS else QUEUE
            self.create_subscription(kind, topic, self._writer(name, type_name(kind)), qos, raw=True)
        self.get_logger().info(f"recording {len(TOPICS)} topics to {path}")

    def _writer(self, topic: str, kind: str):
        def write(data: bytes) -> None:
            self.out.write_serialized(topic, kind, data, self.get_clock().now().nanoseconds)

        return write

    def destroy_node(self):
        self.out.close()
        counts = ", ".join(f"{topic} {n}" for topic, n in sorted(self.out.counts.items()))
        self.get_logger().info(f"wrote {self.out.path}: {counts or 'no messages'}")
        super().destroy_node()


def main(argv: list[str] | None = None) -> None:
    from ros_nodes.spin import spin_node

    spin_node(Recorder, argv)


if __name__ == "__main__":
    main(sys.argv)
