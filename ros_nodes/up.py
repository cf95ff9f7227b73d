"""``embodied ros up``: start the node graph as processes where only the PyPI ROS 2 wheels exist (no
launch_ros), start a node marked ``respawn`` again when it exits (as launch_ros does), and stop them all
cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ros_nodes.graph import NodeSpec
from ros_nodes.params import coerce

RESPAWN_UPTIME = 10.0  # s: a respawning node that exits sooner than this after its start ...
RESPAWN_TRIES = 3  # ... this many times in a row is not started again (it cannot start: a bad parameter)


def node_command(spec: NodeSpec) -> list[str]:
    """``python -m module --ros-args`` with the node's name, parameters and remappings. Every value goes as
    a quoted string (``-p rate:="20"``): the node reads it as its parameter's type (ros_nodes/params.py),
    so a value typed on the command line never arrives as the wrong one. ``use_sim_time``, which rclpy
    itself declares as a boolean, goes as one."""
    args = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    for key, value in spec.parameters.items():
        text = json.dumps(str(value))
        if key == "use_sim_time":
            text = str(coerce(key, value, bool)).lower()
        args += ["-p", f"{key}:={text}"]
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
    """Start every node, wait until one that does not respawn exits (a respawning one is started again
    ``respawn_delay`` after it exits), Ctrl-C or ``until()`` turns true, then stop them all: SIGINT first,
    SIGTERM after ``grace`` seconds, SIGKILL last. Returns the first non-zero exit code."""
    env = ros_environment(log_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, signal.default_int_handler)
    respawner = _Respawner(specs, env)
    processes = {spec.name: respawner.start(spec.name) for spec in specs}
    print(f"started {', '.join(processes)} (ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')}, "
          f"discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}); Ctrl-C stops them")
    try:
        while respawner.check(processes) and not (until and until()):
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


class _Respawner:
    """Starts the exited nodes marked ``respawn`` again, each ``respawn_delay`` after it exited."""

    def __init__(self, specs: list[NodeSpec], env: dict):
        self.specs, self.env = {spec.name: spec for spec in specs}, env
        self.started: dict[str, float] = {}
        self.exited_at: dict[str, float] = {}
        self.quick_exits = dict.fromkeys(self.specs, 0)  # exits in a row soon after a start

    def start(self, name: str) -> subprocess.Popen:
        self.started[name] = time.monotonic()
        self.exited_at.pop(name, None)
        return subprocess.Popen(node_command(self.specs[name]), env=self.env)

    def check(self, processes: dict[str, subprocess.Popen]) -> bool:
        """Restart what is due; False once a node that does not respawn (or cannot start) has exited."""
        now = time.monotonic()
        for name, process in processes.items():
            if process.poll() is None:
                continue
            spec = self.specs[name]
            if not spec.respawn:
                return False
            if name not in self.exited_at:
                self.exited_at[name] = now
                young = now - self.started[name] < RESPAWN_UPTIME
                self.quick_exits[name] = self.quick_exits[name] + 1 if young else 0
                if self.quick_exits[name] >= RESPAWN_TRIES:
                    print(f"{name} exited with {process.returncode} {RESPAWN_TRIES} times in a row at its start; "
                          "not started again", file=sys.stderr)
                    return False
                print(f"{name} exited with {process.returncode}; starting it again in {spec.respawn_delay:g} s",
                      file=sys.stderr)
            if now - self.exited_at[name] >= spec.respawn_delay:
                processes[name] = self.start(name)
                print(f"restarted {name}", file=sys.stderr)
        return True


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
