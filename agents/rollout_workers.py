"""Parallel rollouts on Ray: each worker actor (named ``rollout-RUN-I``) owns an environment and a planner
and runs episodes by index; results stream back and are written as they arrive.

A worker that dies is restarted by Ray and its episode run again; an episode that runs past
``episode_timeout`` gets its worker killed (and restarted) and is retried too. A record is kept once per
episode index, so nothing is lost or counted twice; after ``MAX_ATTEMPTS`` an episode is recorded as
failed with the reason.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from agents import runtime
from embodied.rollout import EpisodeRunner, RecordWriter, RolloutConfig

MAX_ATTEMPTS = 3


@ray.remote(max_restarts=-1)
class RolloutWorker:
    def __init__(self, config: dict):
        self.runner = EpisodeRunner(RolloutConfig(**config))

    def run(self, index: int) -> dict:
        return self.runner.run(index)

    def ready(self) -> bool:
        return True


def parallel_rollout(config: RolloutConfig, workers: int, progress: bool = True, episode_timeout: float = 600.0) -> dict:
    """Like ``embodied.rollout.rollout``, over ``workers`` Ray actors (one CPU each)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    runtime.start()
    run_id = uuid.uuid4().hex[:8]
    pool = [
        RolloutWorker.options(num_cpus=1, name=f"rollout-{run_id}-{i}").remote(asdict(config)) for i in range(workers)
    ]
    ray.get([worker.ready.remote() for worker in pool])  # episode timeouts count from here, not from start-up
    writer = RecordWriter(config, progress)
    todo = list(range(config.episodes))[::-1]  # popped from the end: episode 0 first
    attempts = {index: 0 for index in todo}
    running: dict = {}  # object ref -> (episode index, worker, start time)
    killed: set = set()  # refs whose hung worker was killed, waiting for the failure to arrive

    def submit(worker) -> None:
        if todo:
            index = todo.pop()
            attempts[index] += 1
            running[worker.run.remote(index)] = (index, worker, time.monotonic())

    def retry_or_fail(index: int, reason: str) -> None:
        if attempts[index] < MAX_ATTEMPTS:
            todo.append(index)
        else:
            writer.add({"episode": index, "seed": config.seed + index, "success": False, "steps": [], "error": reason})

    for worker in pool:
        submit(worker)
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=min(1.0, episode_timeout))
            for ref in done:
                index, worker, _ = running.pop(ref)
                try:
                    writer.add(ray.get(ref))
                except (RayActorError, ActorUnavailableError) as exc:  # died or killed as hung: Ray restarts it
                    retry_or_fail(index, f"worker died: {exc.__class__.__name__}")
                submit(worker)
            for ref, (index, worker, started) in list(running.items()):
                if ref not in killed and time.monotonic() - started > episode_timeout:
                    killed.add(ref)
                    ray.kill(worker, no_restart=False)  # the wait above then sees the episode fail
    finally:
        for worker in pool:
            ray.kill(worker, no_restart=True)
    return writer.finish()
