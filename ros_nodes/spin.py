"""Running one node as a process: init, spin, and a clean shutdown on Ctrl-C or SIGTERM.

rclpy's own SIGINT handler tears the context down under a running callback (which then fails on a
destroyed publisher), so the signals here only ask the loop to stop; teardown happens after it has. Then the
process ends without the interpreter's module-by-module teardown, which takes over a second with torch
loaded on a busy machine: a node stops within a second or two of Ctrl-C, as launch expects.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def go_realtime(priority: int) -> None:
    """SCHED_FIFO at ``priority`` for every thread of this process, the middleware's receive threads too
    (a message waits on the slowest thread it passes through). Raises OSError where not allowed (no root
    or rtprio allowance) and AttributeError off Linux."""
    for thread in os.listdir("/proc/self/task"):
        os.sched_setscheduler(int(thread), os.SCHED_FIFO, os.sched_param(priority))


def exit_now(code: int = 0) -> None:
    """End the process now: exit handlers run (logging, rclpy, Ray) and output is flushed; the interpreter's
    teardown of every module is skipped, the operating system reclaims the rest."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe
            pass
    os._exit(code)


def spin_node(node_class, argv: list[str] | None = None, exit_process: bool = True) -> None:
    # Discovery stays on this host unless the user asks for more (a robot on the LAN: SUBNET).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = node_class()
    executor = SingleThreadedExecutor()  # one thread: the sim bridge's GL context lives on it
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if exit_process:  # a clean stop; an exception above ends the process the usual way, with its traceback
        exit_now(0)
