"""Episodes per second with 2 Ray rollout workers against 1 (oracle rearrangement episodes: physics and
skills, the oracle needs no camera; worker start-up is not timed): on a private local Ray of this 2-core
machine, and on a two-node cluster made on it with `ray start` over loopback (one CPU a node), where the
second worker runs on the second node."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.run import Ratio
from embodied.rollout import RolloutConfig

EPISODES = 12
ROUNDS = 3


def _two_against_one(name: str, where: str) -> Ratio:
    from agents.rollout_workers import parallel_rollout

    rates = {1: [], 2: []}
    for _ in range(ROUNDS):
        for workers in (1, 2):
            out = Path(tempfile.mkdtemp(prefix="bench_workers_"))
            config = RolloutConfig("rearrange", "oracle", EPISODES, seed=0, out=out, gifs=0)
            rates[workers].append(parallel_rollout(config, workers, progress=False)["episodes_per_second"])
    ratios = [two / one for one, two in zip(rates[1], rates[2])]
    detail = f"{statistics.median(rates[2]):.2f} against {statistics.median(rates[1]):.2f} episodes/s {where}, {EPISODES} episodes a run"
    return Ratio(name, statistics.median(ratios), ">= 1.6", detail)


def run() -> list[Ratio]:
    from agents import runtime
    from agents.loopback_cluster import LoopbackCluster

    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    try:
        local = _two_against_one("rollout workers: 2 against 1", "on a local Ray")
    finally:
        runtime.shutdown()
    with LoopbackCluster(nodes=2, cpus=1) as cluster:
        runtime.start(runtime.RuntimeConfig(address=cluster.address))
        try:
            cluster_ratio = _two_against_one("rollout workers on a two-node cluster: 2 against 1", "over two nodes")
        finally:
            runtime.shutdown()
    return [local, cluster_ratio]
