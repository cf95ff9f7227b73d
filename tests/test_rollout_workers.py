"""Parallel rollouts on Ray actors: the same records as a serial run, and faults that lose nothing."""

import json
import threading
import time

import pytest

from agents import runtime
from agents.rollout_workers import MAX_ATTEMPTS, parallel_rollout
from embodied.rollout import RolloutConfig, rollout

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    runtime.start(runtime.RuntimeConfig(num_cpus=2))
    yield
    runtime.shutdown()


def _records(folder):
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in (folder / "episodes").glob("*.json")}


def test_two_workers_give_the_serial_results(cluster, tmp_path):
    config = RolloutConfig("object_nav", "oracle", episodes=4, seed=5, gifs=1)
    serial = rollout(RolloutConfig(**{**config.__dict__, "out": tmp_path / "serial"}), progress=False)
    parallel = parallel_rollout(RolloutConfig(**{**config.__dict__, "out": tmp_path / "parallel"}), workers=2, progress=False)
    assert parallel["episodes"] == serial["episodes"] == 4
    assert parallel["success_rate"] == serial["success_rate"] and parallel["spl"] == pytest.approx(serial["spl"])
    a, b = _records(tmp_path / "serial"), _records(tmp_path / "parallel")
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert all(a[i]["plan"] == b[i]["plan"] and a[i]["success"] == b[i]["success"] for i in a)
    assert (tmp_path / "parallel" / "gifs" / "episode_0000.gif").is_file()


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(cluster, tmp_path):
    """Kill a worker while episodes run: Ray restarts it, its episode runs again, and every episode ends
    up recorded exactly once."""
    config = RolloutConfig("pick_place", "oracle", episodes=6, seed=0, gifs=0, out=tmp_path)
    result = {}
    thread = threading.Thread(target=lambda: result.update(parallel_rollout(config, workers=2, progress=False)))
    thread.start()
    ray = pytest.importorskip("ray")
    names = []
    deadline = time.monotonic() + 60
    while len(names) < 2 and time.monotonic() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("rollout-")]
        time.sleep(0.1)
    while not (tmp_path / "episodes").is_dir() and time.monotonic() < deadline:  # episodes are under way
        time.sleep(0.05)
    ray.kill(ray.get_actor(names[0]), no_restart=False)
    thread.join(timeout=180)
    assert not thread.is_alive()
    records = _records(tmp_path)
    assert result["episodes"] == 6 and sorted(records) == list(range(6))
    assert all(r["episode"] == i for i, r in records.items())


def test_hung_episodes_are_retried_then_recorded_once_as_failed(cluster, tmp_path):
    """Every episode outlives a 1 ms limit: its worker is killed and restarted and the episode retried, then
    recorded as failed after the last attempt, or run by the restarted worker: once either way."""
    config = RolloutConfig("rearrange", "oracle", episodes=3, seed=0, gifs=0, out=tmp_path)
    summary = parallel_rollout(config, workers=2, progress=False, episode_timeout=0.001)
    records = _records(tmp_path)
    assert summary["episodes"] == 3 and sorted(records) == [0, 1, 2]
    assert any(r.get("error", "").startswith("worker died") for r in records.values())
    assert MAX_ATTEMPTS > 1
