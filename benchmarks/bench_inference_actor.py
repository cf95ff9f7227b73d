"""8 concurrent planning requests through the Ray inference actor (batched by the replica, the fast
decoding path) against the same 8 sent one after another to a replica on the reference path, as replicas
decoded before the fast path (every core); the shipped checkpoint on held-out pick-and-place scenes."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

from benchmarks.run import Ratio
from embodied.eval.plan import EVAL_SEED
from embodied.plan_timing import scene_requests

REQUESTS = 8
ROUNDS = 2


def run() -> list[Ratio]:
    import ray

    from agents import runtime
    from agents.inference import InferenceConfig, InferenceReplica

    requests = list(scene_requests("pick_place", EVAL_SEED, REQUESTS))
    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    try:
        fast = InferenceReplica.remote(asdict(InferenceConfig(max_wait=0.05)))
        reference = InferenceReplica.remote(asdict(InferenceConfig(decoding="reference", threads=0)))
        ray.get([fast.plan.remote(requests[0]), reference.plan.remote(requests[0])], timeout=600)  # loaded and warm

        def concurrent(replica) -> float:
            started = time.perf_counter()
            ray.get([replica.plan.remote(r) for r in requests], timeout=600)
            return time.perf_counter() - started

        def sequential(replica) -> float:
            started = time.perf_counter()
            for r in requests:
                ray.get(replica.plan.remote(r), timeout=600)
            return time.perf_counter() - started

        times = [(sequential(reference), concurrent(fast), sequential(fast)) for _ in range(ROUNDS)]
    finally:
        runtime.shutdown()
    reference_s, concurrent_s, sequential_s = (statistics.median(t[i] for t in times) for i in range(3))
    return [
        Ratio(
            "inference actor: 8 concurrent (fast) against 8 sequential (reference)",
            statistics.median(r / c for r, c, _ in times),
            ">= 6",
            f"{REQUESTS} requests: concurrent on the fast path {concurrent_s:.1f} s, sequential on the reference path {reference_s:.1f} s, median of {ROUNDS}",
        ),
        Ratio(
            "inference actor, fast path: 8 concurrent against 8 sequential",
            statistics.median(s / c for _, c, s in times),
            ">= 1.5",
            f"concurrent {concurrent_s:.1f} s, sequential {sequential_s:.1f} s: what batching adds once each plan is fast",
        ),
    ]
