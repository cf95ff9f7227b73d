"""Rollouts end to end: the CLI, episode records, GIFs, the summary, bad plans, bad configs, atomic writes."""

import json
import os
import stat
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from embodied.cli import main
from embodied.io import write_json
from embodied.rollout import RolloutConfig, run_episode
from envs import ENV_IDS
from envs.plan import parse_plan
from envs.planners import OraclePlanner


class GarbagePlanner:
    """A planner whose output is not a plan."""

    name = "garbage"
    sensors = ()

    def __init__(self, text: str = "garbage"):
        self.text = text

    def plan(self, observation, env) -> str:
        return self.text


def _rollout(tmp_path: Path, *args: str) -> int:
    return main(["rollout", *args, "--out", str(tmp_path), "--quiet"])


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*")]


def test_cli_oracle_rollout(tmp_path):
    assert _rollout(tmp_path, "--task", "pick_place", "--policy", "oracle", "--episodes", "2", "--gifs", "1") == 0

    records = [json.loads((tmp_path / "episodes" / f"episode_{i:04d}.json").read_text()) for i in range(2)]
    for i, record in enumerate(records):
        assert record["episode"] == i and record["seed"] == i and record["task"] == "pick_place"
        assert record["success"] is True and record["plan_valid"] is True
        assert record["plan"].startswith("thought: ")
        assert [s["success"] for s in record["steps"]] == [True] * 5  # navigate, pick, navigate, place, done
        assert record["steps"][-1]["step"] == "done()"
        assert record["env_steps"] > 0 and record["progress"] == 1.0

    gif = tmp_path / "gifs" / "episode_0000.gif"
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] > 2, frames.shape
    assert frames.shape[1] > 240 and frames.shape[2] == 320 + 240  # overview + head camera, with a caption
    assert not (tmp_path / "gifs" / "episode_0001.gif").exists()  # only the first --gifs episodes

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["task"] == "pick_place" and summary["policy"] == "oracle"
    assert summary["success_rate"] == 1.0 and summary["plan_valid_rate"] == 1.0
    assert summary["failure_reasons"] == {}
    assert summary["config"]["out"] == str(tmp_path)
    assert _leftovers(tmp_path) == []


def test_cli_random_rollout(tmp_path):
    assert _rollout(tmp_path, "--task", "eqa", "--policy", "random", "--episodes", "2", "--gifs", "0", "--seed", "5") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["policy"] == "random" and summary["episodes"] == 2 and summary["seed"] == 5
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert summary["plan_valid_rate"] == 1.0  # random plans still follow the grammar
    record = json.loads((tmp_path / "episodes" / "episode_0001.json").read_text())
    assert record["seed"] == 6 and record["answer"] is not None
    assert not (tmp_path / "gifs").exists()


def test_random_policy_on_a_motion_task(tmp_path):
    assert _rollout(tmp_path, "--task", "object_nav", "--policy", "random", "--episodes", "1", "--gifs", "0") == 0
    record = json.loads((tmp_path / "episodes" / "episode_0000.json").read_text())
    assert record["plan_valid"] is True and record["steps"]
    assert 0.0 <= record["spl"] <= 1.0


@pytest.mark.parametrize("text", ["garbage", "thought: x\n1. navigate(pink elephant)\n2. done()", ""])
def test_unparseable_plan_is_recorded(make_env, text):
    env = make_env("pick_place")
    record, recorder = run_episode(env, GarbagePlanner(text), seed=0)
    assert record["plan_valid"] is False
    assert record["plan"] == text
    assert record["plan_error"]
    assert record["success"] is False and record["steps"] == [] and record["env_steps"] == 0
    assert recorder is None
    assert env.unwrapped.ended
    json.dumps(record)  # the record is writable as it is


def test_unknown_task_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _rollout(tmp_path, "--task", "fly_to_moon")
    assert exit_info.value.code == 2
    assert "fly_to_moon" in capsys.readouterr().err


def test_bad_episode_count_is_a_clean_error(tmp_path, capsys):
    assert _rollout(tmp_path, "--episodes", "0") == 2
    assert "episodes must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "fly_to_moon"}, "unknown task"),
        ({"policy": "psychic"}, "unknown policy"),
        ({"episodes": 0}, "episodes"),
        ({"gifs": -1}, "gifs"),
    ],
)
def test_rollout_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RolloutConfig(**kwargs)


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "deep" / "record.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "list": [1.5, None]})  # replaces
    assert json.loads(path.read_text()) == {"a": 2, "list": [1.5, None]}
    assert os.listdir(path.parent) == ["record.json"]

    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # fails half-way through serialising
    assert json.loads(path.read_text()) == {"a": 2, "list": [1.5, None]}  # the old file is intact
    assert os.listdir(path.parent) == ["record.json"]  # and no temporary file is left behind


def test_write_json_writes_numpy_and_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "n.json", {"v": np.arange(3), "x": np.float32(0.5)})
    finally:
        os.umask(old)
    assert json.loads(path.read_text()) == {"v": [0, 1, 2], "x": 0.5}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # as open() would make it, not mkstemp's 0600


def test_model_policy_plans_from_the_camera_and_runs_the_episode(tmp_path):
    """The model policy sees only rgb, points and the instruction; its plan is recorded and judged."""
    code = main(["rollout", "--task", "object_nav", "--policy", "model", "--checkpoint", "tiny",
                 "--episodes", "1", "--gifs", "0", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "episodes" / "episode_0000.json").read_text())
    assert record["plan"].startswith("thought:")
    assert parse_plan(record["plan"])  # constrained decoding: it always parses
    assert isinstance(record["plan_valid"], bool) and record["success"] in (True, False)


def _seed_without(env, name: str) -> int:
    for seed in range(50):
        env.reset(seed=seed)
        if name not in env.unwrapped.scene.object_names:
            return seed
    raise AssertionError(f"every scene has a {name}")


class _WrongFirstPlan:
    """Writes ``first(env)`` as its first plan, then, told what went wrong, plans like the oracle."""

    name, sensors = "scripted", ()

    def __init__(self, first):
        self.first, self.instructions = first, []

    def plan(self, observation, env):
        self.instructions.append(observation["instruction"])
        if len(self.instructions) == 1:
            return self.first(env)
        return OraclePlanner().plan(observation, env)


def _unknown_object(env) -> str:
    return "thought: x\n1. navigate(red cube)\n2. done()"


def _pick_from_afar(env) -> str:
    return f"thought: x\n1. pick({env.unwrapped.task.target.name})\n2. done()"


def _object_nav(seed_without: str | None = None, seed: int = 3):
    env = gym.make(ENV_IDS["object_nav"], sensors=())
    return env, (_seed_without(env, seed_without) if seed_without else seed)


def test_closed_loop_replans_with_the_error_in_the_instruction():
    env, seed = _object_nav("red cube")
    planner = _WrongFirstPlan(_unknown_object)
    try:
        record, _ = run_episode(env, planner, seed, replans=1)
    finally:
        env.close()
    assert len(planner.instructions) == 2 and len(record["plans"]) == 2
    assert "did not parse" in planner.instructions[1] and "unknown object 'red cube'" in planner.instructions[1]
    assert record["plan_valid"] is False and record["success"] is True


def test_without_replans_a_failed_plan_ends_the_episode():
    env, seed = _object_nav("red cube")
    planner = _WrongFirstPlan(_unknown_object)
    try:
        record, _ = run_episode(env, planner, seed)
    finally:
        env.close()
    assert len(planner.instructions) == 1 and "plans" not in record and record["success"] is False


def test_closed_loop_replans_after_a_failed_skill():
    env, seed = _object_nav()
    planner = _WrongFirstPlan(_pick_from_afar)
    try:
        record, _ = run_episode(env, planner, seed, replans=2)
    finally:
        env.close()
    assert len(planner.instructions) == 2
    assert "failed: unreachable" in planner.instructions[1]
    assert record["steps"][0]["success"] is False and record["plan_valid"] is True and record["success"] is True
