"""Running one node as a process: init, spin, and a clean shutdown on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def spin_node(node_class, argv: list[str] | None = None) -> None:
    # Discovery stays on this host unless the user asks for more (a robot on the LAN: SUBNET).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=argv)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = node_class()
    executor = SingleThreadedExecutor()  # one thread: the sim bridge's GL context lives on it
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
