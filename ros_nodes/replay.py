"""Replay: a recording published into a running graph (``embodied replay FILE.mcap``), each message on its topic
at its recorded time (``rate`` times faster), with the recorded time on ``/clock``: nodes started with
``use_sim_time:=true`` live in the recording's time, so perception pairs frames with odometry and judges
their age as it did when they were recorded. No simulator runs: perception and the planner work on the
recorded sensor data.

Latched topics (task, plan, scene, map) are published latched, as their nodes do; the rest as sensor
streams. Messages go out as recorded (the CDR bytes, not decoded and encoded again).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from ros_nodes.qos import LATCHED
from ros_nodes.recording import Recorded, RecordingError, message_class, read_messages

STREAM = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
TICK = 0.002  # s between looks at what is due


def select(messages: list[Recorded], topics: list[str] | None) -> list[Recorded]:
    """The messages on ``topics`` (with or without the leading slash); all of them for None. A topic the
    recording does not hold is an error that lists what it holds."""
    if not topics:
        return messages
    wanted = {"/" + t.lstrip("/") for t in topics}
    held = {m.topic for m in messages}
    missing = sorted(wanted - held)
    if missing:
        raise ValueError(f"the recording has no {', '.join(missing)}; it holds {', '.join(sorted(held))}")
    return [m for m in messages if m.topic in wanted]


class Replay(Node):
    """Publishes ``messages`` (in file order) from ``delay`` seconds after it starts (subscribers need a moment
    to be discovered); ``finished`` is set once the last one is out."""

    def __init__(
        self, messages: list[Recorded], rate: float = 1.0, clock: bool = True, delay: float = 1.0, **node_options
    ):
        super().__init__("replay", **node_options)
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not messages:
            raise ValueError("nothing to replay: the recording (or the topics chosen) holds no messages")
        self.messages, self.rate = messages, rate
        self.publishers_by_topic = {}
        for m in messages:
            if m.topic not in self.publishers_by_topic:
                qos = LATCHED if m.latched else STREAM
                self.publishers_by_topic[m.topic] = self.create_publisher(message_class(m.type), m.topic, qos)
        self.clock = self.create_publisher(Clock, "/clock", STREAM) if clock else None
        self.first = min(m.stamp_ns for m in messages)
        self.start = time.monotonic() + delay
        self.next, self.clock_ns = 0, -1
        self.published: Counter = Counter()
        self.finished = threading.Event()
        self.create_timer(TICK, self.tick)

    def tick(self) -> None:
        """Everything whose time has come, in file order."""
        due = self.first + (time.monotonic() - self.start) * self.rate * 1e9
        while self.next < len(self.messages) and self.messages[self.next].stamp_ns <= due:
            m = self.messages[self.next]
            if self.clock is not None and m.stamp_ns > self.clock_ns:
                self.clock_ns = m.stamp_ns
                self.clock.publish(
                    Clock(clock=Time(sec=m.stamp_ns // 1_000_000_000, nanosec=m.stamp_ns % 1_000_000_000))
                )
            self.publishers_by_topic[m.topic].publish(m.data)
            self.published[m.topic] += 1
            self.next += 1
        if self.next == len(self.messages):
            self.finished.set()


def load(path: str | Path, salvage: bool = False, warn=print) -> list[Recorded]:
    """Every message of a recording. A damaged or cut-short file is a ``RecordingError`` (file and byte
    offset); with ``salvage``, the messages before the damage, after a warning."""
    messages: list[Recorded] = []
    try:
        messages.extend(read_messages(path))
    except RecordingError as exc:
        if not salvage:
            raise
        warn(f"warning: {exc}; replaying the {len(messages)} messages before it")
    return messages


def play(
    messages: list[Recorded], rate: float = 1.0, clock: bool = True, delay: float = 1.0, progress: bool = True
) -> Counter:
    """Publish ``messages`` in a process of their own (``embodied replay``); returns what went out per topic."""
    from tqdm import tqdm

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # as every node here: this host only
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Replay(messages, rate, clock, delay, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            with tqdm(total=len(messages), unit="msg", desc="replay", disable=not progress) as bar:
                while not node.finished.is_set():
                    executor.spin_once(timeout_sec=0.05)
                    bar.update(node.next - bar.n)
            return node.published
        finally:
            executor.shutdown()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
