"""Scale-out on a real Ray cluster: a head and a second node started with `ray start` on loopback (the
README's recipe, token authentication on), joined by address. Work spreads over both nodes, a node lost
mid-rollout loses, doubles and miscounts nothing, and a two-worker training run ends with its model in
--out. Run through tests/isolated.sh (a private network namespace), as `make test-slow` does."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from agents import runtime
from agents.loopback_cluster import LoopbackCluster
from agents.rollout_workers import parallel_rollout
from embodied.model import ModelConfig
from embodied.rollout import RolloutConfig
from embodied.train.config import TrainConfig

pytest.importorskip("ray")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(nodes=2, cpus=1) as cluster:
        ray = runtime.start(runtime.RuntimeConfig(address=cluster.address))
        assert len(cluster.wait_for_nodes(ray, 2)) == 2
        try:
            yield cluster
        finally:
            runtime.shutdown()


def _embodied(*args: str, **popen) -> subprocess.Popen:
    """The command line in a process of its own, as a user on a cluster machine runs it."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "embodied.cli", *args], cwd=ROOT, env=env, text=True, **popen)


def _episodes(folder: Path) -> list[int]:
    return sorted(json.loads(p.read_text())["episode"] for p in (folder / "episodes").glob("episode_*.json"))


def test_rollout_workers_run_on_both_nodes_and_records_reach_the_driver(cluster, tmp_path):
    import ray

    config = RolloutConfig("object_nav", "oracle", episodes=8, seed=3, gifs=2, out=tmp_path)
    summary = parallel_rollout(config, workers=2, progress=False)
    alive = cluster.wait_for_nodes(ray, 2)
    assert sorted(summary["episodes_by_node"]) == sorted(alive)
    assert sum(summary["episodes_by_node"].values()) == 8 and _episodes(tmp_path) == list(range(8))
    assert sorted(p.name for p in (tmp_path / "gifs").iterdir()) == ["episode_0000.gif", "episode_0001.gif"]


def test_a_rollout_joins_through_ray_address_from_the_command_line(cluster, tmp_path):
    """RAY_ADDRESS alone (no --address) joins the cluster: no private Ray starts beside it."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_ADDRESS": cluster.address}
    done = subprocess.run(
        [sys.executable, "-m", "embodied.cli", "rollout", "--task", "object_nav", "--episodes", "4", "--workers", "2",
         "--gifs", "0", "--out", str(tmp_path), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 4 and len(summary["episodes_by_node"]) == 2


def test_a_node_lost_mid_rollout_loses_doubles_and_miscounts_nothing(cluster, tmp_path):
    """Three times: kill the second node while episodes run on it; its episodes run on the head's worker,
    each recorded once as what it was, and the lost attempts are counted apart from task results."""
    import ray

    for run in range(3):
        out = tmp_path / f"run{run}"
        config = RolloutConfig("pick_place", "oracle", episodes=16, seed=10 * run, gifs=0, out=out)
        result = {}
        thread = threading.Thread(target=lambda: result.update(parallel_rollout(config, workers=2, progress=False)))
        thread.start()
        deadline = time.monotonic() + 120
        while len(list(out.glob("episodes/*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.kill_node(len(cluster.folders) - 1)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert _episodes(out) == list(range(16)) and result["not_run"] == []
        assert result["success_rate"] == 1.0  # the oracle succeeds at every pick and place: nothing miscounted
        assert sum(result["infrastructure_errors"].values()) >= 1  # the node was lost under a running episode
        assert sum(result["episodes_by_node"].values()) == 16
        assert len(cluster.wait_for_nodes(ray, 1)) == 1
        cluster.add_node()  # a new machine joins in its place
        assert len(cluster.wait_for_nodes(ray, 2)) == 2


def test_serve_puts_a_replica_on_each_node(cluster):
    import ray

    from agents.inference import connect_inference

    alive = cluster.wait_for_nodes(ray, 2)
    server = _embodied("serve", "--replicas", "2", "--checkpoint", "tiny", "--address", cluster.address, stdout=subprocess.PIPE)
    try:
        assert "inference router up" in server.stdout.readline()
        router = connect_inference()
        stats = ray.get(router.stats.remote(), timeout=120)
        assert sorted(s["node"] for s in stats) == sorted(alive)
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0


def test_two_worker_training_lands_its_model_in_out(cluster, tiny_dataset, tmp_path):
    config = TrainConfig(
        stage="sft", data=str(tiny_dataset), out=str(tmp_path / "unused"), model=ModelConfig.tiny(), steps=2, batch_size=2,
        eval_every=2, eval_samples=2, save_every=2, threads=1,
    )  # fmt: skip
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out, storage = tmp_path / "out", tmp_path / "shared"
    trainer = _embodied(
        "train", "sft", "--config", str(path), "--workers", "2", "--address", cluster.address, "--storage", str(storage),
        "--set", f"out={out}", "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = trainer.communicate(timeout=600)
    assert trainer.returncode == 0, stderr[-3000:]
    assert (out / "model" / "model.safetensors").is_file() and (out / "curves.png").is_file()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == 2
    assert any(storage.rglob("*.safetensors"))  # the checkpoints went through Ray Train's storage


def test_a_wrong_token_is_refused_in_one_line(cluster, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}
    done = subprocess.run(
        [sys.executable, "-m", "embodied.cli", "rollout", "--address", cluster.address, "--out", str(tmp_path / "r"), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot join the Ray cluster at {cluster.address}: the cluster refused this machine's token" in done.stderr


def test_rl_fine_tuning_joins_the_cluster_and_its_model_lands_in_out(cluster, tiny_checkpoint, tmp_path):
    from dataclasses import asdict

    from agents.rl import RLConfig

    config = asdict(RLConfig(
        init=str(tiny_checkpoint), out=str(tmp_path / "rl"), tasks=("object_nav",), iterations=1, episodes=2, group=2,
        eval_every=1, eval_episodes=1, save_every=1, workers=1, max_new_tokens=24,
    ))  # fmt: skip
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump({**config, "tasks": list(config["tasks"])}))
    trainer = _embodied("train", "rl", "--config", str(path), "--address", cluster.address, "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = trainer.communicate(timeout=600)
    assert trainer.returncode == 0, stderr[-3000:]
    assert "held-out success by iteration: 0:" in stdout
    assert (tmp_path / "rl" / "model").is_dir() and (tmp_path / "rl" / "curves.png").is_file()
