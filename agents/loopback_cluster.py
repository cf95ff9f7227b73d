"""A Ray cluster of several nodes on this one machine, over loopback: what the README's cluster recipe
builds across machines (``ray start --head``, then ``ray start --address`` on each other node, token
authentication on), for the scale-out test and benchmark, and to try the recipe on a laptop.

Each node keeps its files in a folder of its own, so one node can be killed alone (``kill_node``), as a
machine that dies would be; nothing here uses ``ray stop``, which would end every Ray of the user.

    with LoopbackCluster(nodes=2) as cluster:
        runtime.start(runtime.RuntimeConfig(address=cluster.address))
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agents import ray_session

START_TIMEOUT_S = 120.0


class LoopbackCluster:
    """``nodes`` Ray nodes on 127.0.0.1 (more with ``add_node``), ``cpus`` CPUs each. Run it inside a private
    network namespace (tests/isolated.sh)."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        if nodes < 1 or cpus < 1:
            raise ValueError(f"a cluster needs nodes >= 1 and cpus >= 1, got {nodes} and {cpus}")
        self.nodes, self.cpus = nodes, cpus
        self.folders: list[Path] = []
        self.address = ""
        self._ray = str(Path(sys.executable).with_name("ray"))
        self._ray_dir = os.path.dirname(os.path.abspath(__import__("ray").__file__))

    def __enter__(self) -> LoopbackCluster:
        try:
            self.address = f"127.0.0.1:{_free_port()}"
            for _ in range(self.nodes):
                self.add_node()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_node(self) -> int:
        """Start one more node (the first is the head); returns its index."""
        index = len(self.folders)
        folder = Path(tempfile.mkdtemp(prefix=f"embodied_node{index}_", dir="/tmp"))  # short: unix sockets live in it
        self.folders.append(folder)
        port = self.address.rsplit(":", 1)[1]
        head = ["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={_free_port()}"]
        where = head if index == 0 else [f"--address={self.address}"]
        command = [
            self._ray, "start", *where, "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
            f"--temp-dir={folder}", "--disable-usage-stats",
        ]  # fmt: skip
        env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"`ray start` of node {index} failed: " + " / ".join(tail))
        return index

    def wait_for_nodes(self, ray, count: int, timeout: float = 60.0) -> list[str]:
        """The ids of the nodes alive, once ``count`` are or ``timeout`` has passed (from a driver that joined)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            if len(alive) == count or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def kill_node(self, index: int) -> None:
        """SIGKILL every Ray process of node ``index`` (raylet, workers, agents): the cluster loses it."""
        ray_session.end_processes(self.folders[index], self._ray_dir, grace=0.0, remove=False)

    def stop(self) -> None:
        """End every node, the head last, and remove their folders."""
        for folder in reversed(self.folders):
            ray_session.end_processes(folder, self._ray_dir, grace=1.0, remove=True)
        self.folders = []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
