"""Parallel rollouts on Ray actors: the same records as a serial run, and faults that lose nothing."""

import contextlib
import functools
import json
import threading
import time

import psutil
import pytest

from agents import rollout_workers, runtime
from agents.rollout_workers import MAX_ATTEMPTS, parallel_rollout
from embodied.cli import main
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
    assert result["success_rate"] == 1.0 and result["not_run"] == []


def _worker_processes(exclude: set) -> list[psutil.Process]:
    """This test's rollout worker processes (Ray titles them ``ray::RolloutWorker...``), none of another's."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in exclude and " ".join(child.cmdline()).startswith("ray::RolloutWorker"):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _kill_both_workers_twice(until: threading.Event, started) -> list[int]:
    """Once ``started()``, kill both rollout worker processes, then both restarted ones as they appear."""
    killed: set = set()
    deadline = time.monotonic() + 120
    for _ in range(2):
        found = []
        while len(found) < 2 and not until.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
            found = _worker_processes(killed) if started() else []
        for process in found:
            killed.add(process.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    return sorted(killed)


def _keep_killing_workers(until: threading.Event) -> None:
    while not until.is_set():
        for process in _worker_processes(set()):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        time.sleep(0.02)


def test_workers_killed_twice_mid_run_cost_no_episode(cluster, tmp_path):
    """The issue's run: kill both worker processes while episodes run, then the restarted ones as they come
    up. Episodes the infrastructure brought down run again once a worker answers: the oracle scores 100%
    over every episode, and the failed attempts are reported apart."""
    config = RolloutConfig("pick_place", "oracle", episodes=4, seed=0, gifs=4, out=tmp_path)  # GIFs: slower episodes
    finished = threading.Event()
    killed = []
    episodes_under_way = (tmp_path / "episodes").is_dir
    killer = threading.Thread(target=lambda: killed.extend(_kill_both_workers_twice(finished, episodes_under_way)))
    killer.start()
    try:
        summary = parallel_rollout(config, workers=2, progress=False)
    finally:
        finished.set()
        killer.join()
    assert len(killed) == 4
    assert summary["episodes"] == 4 and summary["success_rate"] == 1.0 and summary["not_run"] == []
    errors = summary["infrastructure_errors"]
    assert sum(errors.values()) >= 1 and all(reason.startswith("worker died") for reason in errors), errors
    records = _records(tmp_path)
    assert sorted(records) == list(range(4)) and all(r["success"] for r in records.values())
    assert json.loads((tmp_path / "summary.json").read_text())["infrastructure_errors"] == errors


def test_episodes_that_never_run_are_reported_apart_and_fail_the_command(cluster, tmp_path, monkeypatch, capsys):
    """Workers that die whenever they start: each is given up after ``restart_timeout``, the episodes are
    listed as never run (in no rate, with no record, so that --resume runs them) and the command exits 1."""
    monkeypatch.setattr(rollout_workers, "parallel_rollout", functools.partial(parallel_rollout, restart_timeout=3.0))
    finished = threading.Event()
    killer = threading.Thread(target=_keep_killing_workers, args=(finished,))
    killer.start()
    try:
        code = main(["rollout", "--task", "object_nav", "--policy", "oracle", "--episodes", "2", "--gifs", "0",
                     "--workers", "2", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    finally:
        finished.set()
        killer.join()
    assert code == 1
    assert "2 episode(s) never ran: 0, 1; rerun with --resume" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 0 and summary["success_rate"] is None
    assert summary["not_run"] == [{"episode": i, "seed": i, "error": "no worker came up within 3 s"} for i in range(2)]
    assert _records(tmp_path) == {}


def test_hung_episodes_are_retried_then_reported_as_never_run(cluster, tmp_path):
    """Every episode outlives a 1 ms limit: its worker is killed and restarted and the episode retried, up to
    ``MAX_ATTEMPTS`` times; then it is reported as never run, not as a failed episode."""
    config = RolloutConfig("rearrange", "oracle", episodes=2, seed=0, gifs=0, out=tmp_path)
    summary = parallel_rollout(config, workers=2, progress=False, episode_timeout=0.001)
    assert summary["episodes"] == 0 and summary["success_rate"] is None and _records(tmp_path) == {}
    assert summary["not_run"] == [{"episode": i, "seed": i, "error": "ran past 0.001 s"} for i in range(2)]
    assert summary["infrastructure_errors"] == {"ran past 0.001 s": 2 * MAX_ATTEMPTS}


def test_parallel_resume_runs_only_the_missing_episodes(cluster, tmp_path):
    first = RolloutConfig("object_nav", "oracle", episodes=2, seed=3, gifs=0, out=tmp_path)
    rollout(first, progress=False)
    kept = tmp_path / "episodes" / "episode_0001.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "marker": "kept"}))
    with pytest.raises(ValueError, match="already holds files"):  # refused before Ray is asked for workers
        parallel_rollout(RolloutConfig(**{**first.__dict__, "episodes": 3}), workers=2, progress=False)
    resumed = RolloutConfig(**{**first.__dict__, "episodes": 3, "resume": True})
    summary = parallel_rollout(resumed, workers=2, progress=False)
    records = _records(tmp_path)
    assert sorted(records) == [0, 1, 2] and records[1]["marker"] == "kept" and records[2]["seed"] == 5
    assert summary["episodes"] == 3 and summary["success_rate"] == 1.0


def test_episodes_run_here_unless_workers_or_an_address_ask_for_ray():
    from embodied.cli import _episode_runner

    assert _episode_runner(1, None) is rollout
    for workers, address in ((2, None), (1, "127.0.0.1:6379")):
        runner = _episode_runner(workers, address)
        assert runner.func is parallel_rollout and runner.keywords == {"workers": workers, "address": address}
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        _episode_runner(0, None)
