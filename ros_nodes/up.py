"""``embodied ros up``: start the node graph as processes where only the PyPI ROS 2 wheels exist (no
launch_ros), and stop them all cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ros_nodes.graph import NodeSpec



def node_command(spec: NodeSpec) -> list[str]:
    """``python -m module --ros-args`` with the node's name, parameters and remappings. Every value goes as
    a quoted string (``-p rate:="20"``): the node reads it as its parameter's type (ros_nodes/params.py),
    so a value typed on the command line never arrives as the wrong one."""
    args = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    for key, value in spec.parameters.items():
        args += ["-p", f"{key}:={json.dumps(str(value))}"]
    for source, target in spec.remappings.items():
        args += ["-r", f"{source}:={target}"]
    return args


def ros_environment(log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # SUBNET to reach a robot on the LAN
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("ROS_LOG_DIR", str(log_dir))
    return env


def run_graph(specs: list[NodeSpec], log_dir: Path, grace: float = 5.0, until=None) -> int:
    """Start every node, wait until one exits, Ctrl-C or ``until()`` turns true, then stop them all:
    SIGINT first, SIGTERM after ``grace`` seconds, SIGKILL last. Returns the first non-zero exit code."""
    env = ros_environment(log_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, signal.default_int_handler)
    processes = {spec.name: subprocess.Popen(node_command(spec), env=env) for spec in specs}
    print(f"started {', '.join(processes)} (ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')}, "
          f"discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}); Ctrl-C stops them")
    try:
        while all(p.poll() is None for p in processes.values()) and not (until and until()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(processes, grace)
    codes = {name: p.returncode for name, p in processes.items()}
    failed = {name: code for name, code in codes.items() if code not in (0, -signal.SIGINT, -signal.SIGTERM)}
    for name, code in failed.items():
        print(f"{name} exited with {code}", file=sys.stderr)
    return next(iter(failed.values()), 0)


def _stop(processes: dict[str, subprocess.Popen], grace: float) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in processes.values() if p.poll() is None]
        for p in alive:
            p.send_signal(sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if p.poll() is None]
            time.sleep(0.05)
        if not alive:
            return
