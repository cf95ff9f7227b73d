"""Episodes per second with 2 Ray rollout workers against 1, on this 2-core machine (oracle rearrangement
episodes: physics and skills, the oracle needs no camera). Worker start-up is not timed."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.run import Ratio
from embodied.rollout import RolloutConfig

EPISODES = 12
ROUNDS = 3


def run() -> list[Ratio]:
    from agents import runtime
    from agents.rollout_workers import parallel_rollout

    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    rates = {1: [], 2: []}
    try:
        for _ in range(ROUNDS):
            for workers in (1, 2):
                out = Path(tempfile.mkdtemp(prefix="bench_workers_"))
                config = RolloutConfig("rearrange", "oracle", EPISODES, seed=0, out=out, gifs=0)
                rates[workers].append(parallel_rollout(config, workers, progress=False)["episodes_per_second"])
    finally:
        runtime.shutdown()
    ratios = [two / one for one, two in zip(rates[1], rates[2])]
    detail = f"{statistics.median(rates[2]):.2f} against {statistics.median(rates[1]):.2f} episodes/s, {EPISODES} episodes a run"
    return [Ratio("rollout workers: 2 against 1", statistics.median(ratios), ">= 1.6", detail)]
