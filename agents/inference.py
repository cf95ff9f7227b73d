"""Model replicas as Ray actors: concurrent planning requests are batched dynamically (up to ``max_batch``
requests, waiting at most ``max_wait`` seconds for more), queues are bounded, and a router puts several
replicas behind one named handle.

    runtime.start()
    router = start_inference(InferenceConfig(checkpoint="tiny"), replicas=2)
    plan = ray.get(router.plan.remote(PlanRequest("go to the red cube", rgb, points, objects=["red cube"])))
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from embodied.decoding import DECODINGS, PLAN_TOKENS
from embodied.prompts import PlanRequest

ROUTER_NAME = "inference"
RESTART_WAIT_S = 120.0  # how long a request waits for its replica's restart (loading a model on a busy machine)


class QueueFull(RuntimeError):
    """Every replica's queue is full: the caller should back off and retry."""


@dataclass(frozen=True)
class InferenceConfig:
    checkpoint: str = "default"  # as ``embodied.model.load_model`` reads it: a folder, "default", "tiny"
    max_batch: int = 8
    max_wait: float = 0.02  # seconds a batch waits for more requests after its first
    max_queue: int = 64  # waiting requests per replica
    max_new_tokens: int = PLAN_TOKENS
    # torch threads per replica; 0: every core. One decodes a plan as fast as two (a token is memory-bound)
    # and never stalls when another process holds the other core.
    threads: int = 1
    decoding: str = "fast"  # or "reference": the plain decoding path (embodied.decoding.DECODINGS)

    def __post_init__(self):
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise ValueError(f"checkpoint must name a folder, 'default', 'tiny' or 'untrained', got {self.checkpoint!r}")
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait < 0 or self.max_new_tokens < 1:
            raise ValueError("max_batch, max_queue and max_new_tokens must be positive, max_wait >= 0")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: every core), got {self.threads}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {self.decoding!r}; choose one of {', '.join(DECODINGS)}")


@ray.remote(max_restarts=-1)
class InferenceReplica:
    """One model; requests queue up and are decoded together."""

    def __init__(self, config: dict):
        import torch

        from embodied.model import load_model
        from embodied.model_planner import ModelPlanner

        self.config = InferenceConfig(**config)
        torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        self.model = load_model(self.config.checkpoint).to("cuda" if torch.cuda.is_available() else "cpu")
        decoding = dataclasses.replace(DECODINGS[self.config.decoding], threads=self.config.threads or None)
        self.planner = ModelPlanner(model=self.model, max_new_tokens=self.config.max_new_tokens, decoding=decoding)
        self.queue: asyncio.Queue | None = None
        self.worker = ThreadPoolExecutor(max_workers=1)  # the model runs off the event loop, which keeps queueing
        self.batch_sizes: list[int] = []

    async def plan(self, request: PlanRequest) -> str:
        if self.queue is None:  # the actor's event loop exists only once a call arrives
            self.queue = asyncio.Queue(maxsize=self.config.max_queue)
            asyncio.get_running_loop().create_task(self._serve())
        if self.queue.full():
            raise QueueFull(f"{self.config.max_queue} requests are already waiting")
        reply = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((request, reply))
        return await reply

    async def load_weights(self, weights: dict) -> int:
        """New trainable weights (from the RL learner), loaded between batches; returns how many tensors."""
        import torch

        tensors = {k: torch.as_tensor(v) for k, v in weights.items()}
        loaded = await asyncio.get_running_loop().run_in_executor(self.worker, self.model.load_matching, tensors)
        return len(loaded)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.config.max_wait
            while len(batch) < self.config.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.batch_sizes.append(len(batch))
            decode = partial(self.planner.plan_many, [request for request, _ in batch])
            try:
                plans = await loop.run_in_executor(self.worker, decode)
            except Exception as exc:  # noqa: BLE001  a bad request fails its batch, not the replica
                for _, reply in batch:
                    reply.set_exception(exc)
            else:
                for (_, reply), plan in zip(batch, plans):
                    reply.set_result(plan)

    def stats(self) -> dict:
        node = ray.get_runtime_context().get_node_id()
        return {"batches": len(self.batch_sizes), "batch_sizes": list(self.batch_sizes), "node": node}


@ray.remote(max_restarts=-1)
class InferenceRouter:
    """Several replicas behind one handle: each request goes to the replica with the fewest in flight; one
    whose replica dies mid-request (Ray restarts it) is sent again, for up to ``RESTART_WAIT_S`` seconds."""

    def __init__(self, replicas: list):
        self.replicas = replicas
        self.in_flight = [0] * len(replicas)

    async def plan(self, request: PlanRequest) -> str:
        deadline, pause = time.monotonic() + RESTART_WAIT_S, 0.5
        while True:
            try:
                return await self._least_busy(request)
            except (RayActorError, ActorUnavailableError):  # a replica died or is restarting: wait, send again
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(2 * pause, 4.0)

    async def _least_busy(self, request: PlanRequest) -> str:
        """The request on the least busy replica whose queue has room; QueueFull when none has."""
        for index in sorted(range(len(self.replicas)), key=self.in_flight.__getitem__):
            self.in_flight[index] += 1
            try:
                return await self.replicas[index].plan.remote(request)
            except QueueFull:
                continue
            finally:
                self.in_flight[index] -= 1
        raise QueueFull("every replica's queue is full")

    async def load_weights(self, weights: dict) -> list[int]:
        """Push new weights to every replica (the RL learner's update); returns the tensors each loaded."""
        return list(await asyncio.gather(*(replica.load_weights.remote(weights) for replica in self.replicas)))

    def replica_handles(self) -> list:
        return list(self.replicas)

    async def stats(self) -> list[dict]:
        return [await replica.stats.remote() for replica in self.replicas]


def start_inference(config: InferenceConfig, replicas: int = 1, gpus_per_replica: float = 0.0, num_cpus: float | None = None):
    """Start ``replicas`` model actors, spread over the cluster's nodes, and the named router in front of them
    (Ray must be running: see ``agents.runtime.start``). Each replica reserves ``num_cpus`` CPUs (default: its
    torch threads, at least one), so that Ray places them where there is room rather than by luck. Other
    processes find the router with ``connect_inference()``; it lives as long as the returned handle does."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    cpus = max(1, config.threads) if num_cpus is None else num_cpus
    options = {"num_gpus": gpus_per_replica, "num_cpus": cpus, "scheduling_strategy": "SPREAD"}
    actors = [InferenceReplica.options(**options).remote(asdict(config)) for _ in range(replicas)]
    return InferenceRouter.options(name=ROUTER_NAME, max_concurrency=1000).remote(actors)


def connect_inference(timeout: float = 30.0):
    """The running router's handle, waiting up to ``timeout`` seconds for it to register."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ray.get_actor(ROUTER_NAME)
        except ValueError:
            if time.monotonic() > deadline:
                raise ValueError(f"no inference router named {ROUTER_NAME!r}: start one with `embodied serve`") from None
            time.sleep(0.2)
