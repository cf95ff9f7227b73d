"""Ray inference: replicas batch concurrent requests, queues are bounded, one router fronts them all.

Ray starts through agents/runtime.py on loopback (make test runs this inside a private network namespace).
"""

import time

import numpy as np
import pytest

from agents import runtime
from agents.inference import InferenceConfig, QueueFull, connect_inference, start_inference
from embodied.prompts import PlanRequest
from envs.plan import parse_plan

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    yield
    runtime.shutdown()


def request(instruction: str, seed: int) -> PlanRequest:
    rng = np.random.default_rng(seed)
    return PlanRequest(instruction, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), rng.random((200, 6), dtype=np.float32))


def test_runtime_starts_once_on_loopback(cluster):
    assert runtime.start() is ray  # a second start joins the running instance
    assert runtime.address().startswith("127.0.0.1:")


def test_replicas_batch_concurrent_requests_behind_one_router(cluster):
    creator = start_inference(InferenceConfig(checkpoint="tiny", max_new_tokens=16, max_wait=0.5), replicas=2)
    router = connect_inference()  # found by name, as another process would
    refs = [router.plan.remote(request(f"go to the red cube number {i}", i)) for i in range(8)]
    plans = ray.get(refs, timeout=120)
    assert len(plans) == 8 and all(parse_plan(p) for p in plans)
    stats = ray.get(router.stats.remote())
    sizes = [size for replica in stats for size in replica["batch_sizes"]]
    assert sum(sizes) == 8
    assert all(replica["batches"] > 0 for replica in stats)  # both replicas served
    assert max(sizes) > 1  # requests were decoded together
    ray.kill(creator)


def test_a_full_queue_refuses_requests_clearly(cluster):
    router = start_inference(InferenceConfig(checkpoint="tiny", max_new_tokens=16, max_batch=1, max_queue=1))
    refs = [router.plan.remote(request("find the blue sphere", i)) for i in range(12)]
    outcomes = []
    for ref in refs:
        try:
            outcomes.append(parse_plan(ray.get(ref, timeout=120)) is not None)
        except QueueFull as exc:
            assert "full" in str(exc)
            outcomes.append(False)
    assert any(outcomes) and not all(outcomes)  # some served, the overflow refused
    ray.kill(router)


@pytest.mark.parametrize(
    "settings, message",
    [({"checkpoint": ""}, "checkpoint"), ({"max_batch": 0}, "positive"), ({"max_wait": -1}, "max_wait")],
)
def test_bad_inference_configs_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        InferenceConfig(**settings)


def test_bad_runtime_config_is_refused():
    with pytest.raises(ValueError, match="num_cpus"):
        runtime.RuntimeConfig(num_cpus=-1)


def test_a_replica_that_dies_is_restarted_and_the_request_sent_again(cluster):
    creator = start_inference(InferenceConfig(checkpoint="tiny", max_new_tokens=8), replicas=1)
    assert parse_plan(ray.get(creator.plan.remote(request("find the red cube", 0)), timeout=120))
    (replica,) = ray.get(creator.replica_handles.remote())
    ray.kill(replica, no_restart=False)
    assert parse_plan(ray.get(creator.plan.remote(request("find the red cube", 1)), timeout=120))
    ray.kill(creator)


def test_killing_a_replica_under_concurrent_requests_answers_each_request_once(cluster):
    """Chaos: 8 requests in flight on 2 replicas, one replica killed while it decodes its batch (Ray restarts
    it). Every request gets one answer, a plan that parses, and is decoded to the end exactly once: the
    surviving replica's batches and the restarted one's add up to 8 (the killed one answered nothing)."""
    router = start_inference(InferenceConfig(checkpoint="tiny", max_new_tokens=128, max_wait=0.5), replicas=2)
    victim, survivor = ray.get(router.replica_handles.remote())
    ray.get([victim.stats.remote(), survivor.stats.remote()], timeout=120)  # both loaded: 4 requests each
    refs = [router.plan.remote(request(f"go to the red cube number {i}", i)) for i in range(8)]
    deadline = time.monotonic() + 60
    while ray.get(victim.stats.remote(), timeout=60)["batches"] == 0:  # until the victim decodes its batch
        assert time.monotonic() < deadline, "the victim never started decoding"
        time.sleep(0.02)
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    ray.kill(victim, no_restart=False)
    assert not ready  # the kill came while every request was in flight
    plans = ray.get(refs, timeout=180)
    assert len(plans) == 8 and all(parse_plan(plan) for plan in plans)
    stats = ray.get(router.stats.remote(), timeout=60)
    assert sum(sum(replica["batch_sizes"]) for replica in stats) == 8, stats  # no request decoded twice
    assert ray.get(victim.stats.remote(), timeout=60)["batches"] == stats[0]["batches"]  # restarted, serving
    ray.kill(router)
