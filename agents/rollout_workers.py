"""Parallel rollouts on Ray: each worker actor (named ``rollout-RUN-I``) owns an environment and a planner
and runs episodes by index; results stream back and are written as they arrive.

The workers reserve a CPU each and are spread over the cluster's nodes. An episode the infrastructure could
not run is not a failed episode. A worker that dies, or whose node is lost, is restarted by Ray wherever
there is room, and gets no episode until it answers a probe (sent again after a growing backoff), so retries
are not spent on a worker still restarting; its episode runs again on the first healthy worker free, up to
``MAX_ATTEMPTS`` times (an episode that runs past ``episode_timeout`` gets its worker killed and counts the
same). A worker that does not come up
within ``restart_timeout`` is given up. Episodes that never ran are reported in the summary's ``not_run``,
apart from every rate, and each failed attempt in ``infrastructure_errors``. A record is kept once per
episode index, so nothing is lost or counted twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

import ray
from ray.exceptions import ObjectLostError, RayActorError

from agents import runtime
from embodied.rollout import EpisodeRunner, RecordWriter, RolloutConfig

MAX_ATTEMPTS = 3  # runs of one episode that may end with its worker dead (or killed as hung)
RESTART_TIMEOUT = 300.0  # seconds a worker may take to start or restart before it is given up
BACKOFF = (0.25, 2.0)  # the first and the longest wait between probes of a worker that is restarting


@ray.remote(max_restarts=-1)
class RolloutWorker:
    def __init__(self, config: dict, recording=None):
        self.runner = EpisodeRunner(RolloutConfig(**config), recording)

    def run(self, index: int) -> tuple[dict, bytes | None]:
        return self.runner.run(index)

    def ready(self) -> str:
        """The worker's node: it answers once its environment and planner are up."""
        return ray.get_runtime_context().get_node_id()


@dataclass
class _Down:
    """A worker being started or restarted: probed with ``ready`` after a growing backoff until it answers."""

    since: float
    probe_at: float | None  # None while a probe is out
    backoff: float = BACKOFF[0]


def parallel_rollout(
    config: RolloutConfig,
    workers: int,
    progress: bool = True,
    episode_timeout: float = 600.0,
    restart_timeout: float = RESTART_TIMEOUT,
    address: str | None = None,
    recording=None,
) -> dict:
    """Like ``embodied.rollout.rollout``, over ``workers`` Ray actors (one CPU each, spread over the
    cluster's nodes; ``address`` joins a cluster, see ``agents.runtime``; each worker writes its episodes'
    ``recording`` files itself, on its own machine). The summary's ``not_run`` lists the
    episodes that never ran (each attempt the infrastructure brought down is counted in
    ``infrastructure_errors``); they count in no rate. ``episodes_by_node`` says where the episodes ran."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    writer = RecordWriter(config, progress)  # claims the output folder before Ray starts
    todo = writer.todo()[::-1]  # popped from the end: the first episode first, a retried one next
    if not todo:
        return writer.finish(episodes_by_node={})
    runtime.start(runtime.RuntimeConfig(address=address))
    run_id = uuid.uuid4().hex[:8]
    pool = [
        RolloutWorker.options(num_cpus=1, scheduling_strategy="SPREAD", name=f"rollout-{run_id}-{i}").remote(asdict(config), recording)
        for i in range(workers)
    ]
    node_of: dict[int, str] = {}  # worker number -> the node it last answered from
    by_node: dict[str, int] = {}  # node -> episodes recorded from it
    attempts = dict.fromkeys(todo, 0)
    running: dict = {}  # episode ref -> (episode index, worker number, start time)
    killed: set = set()  # refs whose hung worker was killed, waiting for the failure to arrive
    idle: set = set()  # workers that answered and wait for an episode
    start = time.monotonic()
    down = {i: _Down(start, start) for i in range(workers)}  # workers (re)starting, by number
    probes: dict = {}  # ready() ref -> worker number; episodes go to a worker only once it has answered
    began = False

    def finished(ref, index: int, i: int) -> None:
        try:
            writer.add(*ray.get(ref))
            by_node[node_of[i]] = by_node.get(node_of[i], 0) + 1
            idle.add(i)
        except (RayActorError, ObjectLostError) as exc:  # died, killed as hung, or its node (and result) lost:
            # Ray restarts it, wherever there is room; it is probed before it gets another episode
            reason = f"ran past {episode_timeout:g} s" if ref in killed else f"worker died: {exc.__class__.__name__}"
            writer.failed_attempt(reason)
            if attempts[index] < MAX_ATTEMPTS:
                todo.append(index)
            else:
                writer.give_up(index, reason)
            down[i] = _Down(time.monotonic(), time.monotonic())

    def answered(ref, i: int) -> None:
        nonlocal began
        try:
            node_of[i] = ray.get(ref)
        except RayActorError as exc:
            if exc.actor_init_failed:  # its constructor raised: a wrong config or checkpoint, not a crash
                raise
            down[i].probe_at = time.monotonic() + down[i].backoff
            down[i].backoff = min(2 * down[i].backoff, BACKOFF[1])
            return
        del down[i]
        idle.add(i)
        if not down and not began:  # every worker has come up once: start-up is not timed
            began = True
            writer.begin()

    try:
        while todo or running:
            now = time.monotonic()
            for i, worker in list(down.items()):
                if now - worker.since > restart_timeout:  # give it up; its probe, if out, is dropped
                    del down[i]
                    probes = {ref: j for ref, j in probes.items() if j != i}
                    ray.kill(pool[i], no_restart=True)
                elif worker.probe_at is not None and worker.probe_at <= now:
                    probes[pool[i].ready.remote()] = i
                    worker.probe_at = None
            while todo and idle:
                index, i = todo.pop(), idle.pop()
                attempts[index] += 1
                running[pool[i].run.remote(index)] = (index, i, time.monotonic())
            if not (running or down):  # every worker given up
                for index in reversed(todo):
                    writer.give_up(index, f"no worker came up within {restart_timeout:g} s")
                break
            due = [started + episode_timeout for ref, (_, _, started) in running.items() if ref not in killed]
            due += [worker.probe_at for worker in down.values() if worker.probe_at is not None]
            timeout = max(0.0, min([1.0, *(at - now for at in due)]))
            refs = [*running, *probes]
            if not refs:  # every worker left waits out its backoff
                time.sleep(timeout)
                continue
            done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            for ref in done:
                if ref in probes:
                    answered(ref, probes.pop(ref))
                else:
                    index, i, _ = running.pop(ref)
                    finished(ref, index, i)
            for ref, (index, i, started) in list(running.items()):
                if ref not in killed and time.monotonic() - started > episode_timeout:
                    killed.add(ref)
                    ray.kill(pool[i], no_restart=False)  # the wait above then sees the episode fail
    finally:
        for worker in pool:
            ray.kill(worker, no_restart=True)
    return writer.finish(episodes_by_node=by_node)
