"""Throughput of 8 concurrent planning requests through the Ray inference actor (batched by the replica)
against 8 sequential calls to it; the real SmolLM2 backbone, one replica, random-initialised encoders."""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.run import Ratio

REQUESTS = 8
ROUNDS = 3


def run() -> list[Ratio]:
    from agents import runtime
    from agents.inference import InferenceConfig, start_inference
    from embodied.prompts import PlanRequest

    ray = runtime.start(runtime.RuntimeConfig(num_cpus=2))
    try:
        router = start_inference(InferenceConfig(checkpoint="untrained", max_new_tokens=48, max_wait=0.05))
        rng = np.random.default_rng(0)
        requests = [
            PlanRequest(f"put the {c} cube in the bowl", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), rng.random((1024, 6), dtype=np.float32))
            for c in ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
        ][:REQUESTS]
        ray.get(router.plan.remote(requests[0]), timeout=600)  # model loaded and warm

        def concurrent() -> float:
            started = time.perf_counter()
            ray.get([router.plan.remote(r) for r in requests], timeout=600)
            return time.perf_counter() - started

        def sequential() -> float:
            started = time.perf_counter()
            for r in requests:
                ray.get(router.plan.remote(r), timeout=600)
            return time.perf_counter() - started

        times = [(sequential(), concurrent()) for _ in range(ROUNDS)]
    finally:
        runtime.shutdown()
    ratio = statistics.median(s / c for s, c in times)
    detail = (
        f"{REQUESTS} requests: concurrent {statistics.median(c for _, c in times):.1f} s, "
        f"sequential {statistics.median(s for s, _ in times):.1f} s, median of {ROUNDS}"
    )
    return [Ratio("inference actor: 8 concurrent against 8 sequential", ratio, ">= 3", detail)]
