"""Rollouts end to end: the CLI, episode records, GIFs, the summary, bad plans, bad configs, atomic writes."""

import json
import os
import stat
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from agents import runtime
from embodied import rollout as rollout_module
from embodied.cli import main
from embodied.io import write_json
from embodied.rollout import RolloutConfig, run_episode, summarize
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
    assert "episodes must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.fixture
def nothing_may_load(monkeypatch):
    """Fails the test if an episode runner (environment, planner, model) or Ray is started."""

    def boom(*args, **kwargs):
        raise AssertionError("started before the arguments were checked")

    monkeypatch.setattr(rollout_module, "EpisodeRunner", boom)
    monkeypatch.setattr(runtime, "start", boom)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["rollout", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["rollout", "--workers", "-2"], "--workers must be >= 1, got -2"),
        (["rollout", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["rollout", "--overwrite", "--resume"], "overwrite and resume exclude each other"),
        (["serve", "--replicas", "0"], "--replicas must be >= 1, got 0"),
        (["serve", "--gpus-per-replica", "-1"], "--gpus-per-replica must be >= 0, got -1"),
    ],
)
def test_cli_rejects_bad_values_in_one_line_before_anything_loads(tmp_path, capsys, nothing_may_load, argv, message):
    out = ["--out", str(tmp_path / "run"), "--quiet"] if argv[0] == "rollout" else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"embodied {argv[0]}: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_is_refused_before_anything_runs(tmp_path, capsys, nothing_may_load):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert _rollout(notes, "--episodes", "1") == 2
    assert capsys.readouterr().err == f"embodied rollout: error: {notes} is a file, not a folder for the run's records\n"
    assert notes.read_text() == "mine"
    assert _rollout(notes / "run", "--episodes", "1") == 2  # a file where a parent folder would go
    assert capsys.readouterr().err == f"embodied rollout: error: cannot write to {notes / 'run'}: Not a directory\n"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "fly_to_moon"}, "unknown task"),
        ({"policy": "psychic"}, "unknown policy"),
        ({"episodes": 0}, "episodes"),
        ({"gifs": -1}, "gifs"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"episodes": 2.5}, "episodes must be an integer"),
        ({"replans": True}, "replans must be an integer"),
        ({"overwrite": "yes"}, "overwrite must be True or False"),
        ({"task": None}, "task must be text"),
        ({"overwrite": True, "resume": True}, "exclude each other"),
    ],
)
def test_rollout_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RolloutConfig(**kwargs)


def _oracle(out: Path, episodes: int, *flags: str, task: str = "object_nav", seed: str = "0") -> int:
    return main(["rollout", "--task", task, "--policy", "oracle", "--episodes", str(episodes), "--seed", seed,
                 "--gifs", "1", "--out", str(out), "--quiet", *flags])  # fmt: skip


def test_rerun_into_an_earlier_runs_folder_is_refused_unless_asked(tmp_path, capsys):
    assert _oracle(tmp_path, 3) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert _oracle(tmp_path, 2) == 2
    assert capsys.readouterr().err.startswith(f"embodied rollout: error: {tmp_path} already holds files")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # untouched

    (tmp_path / "notes.txt").write_text("mine")
    assert _oracle(tmp_path, 2, "--overwrite", "--seed", "7") == 0  # the last --seed wins
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == ["episode_0000.json", "episode_0001.json"]
    assert json.loads((tmp_path / "episodes" / "episode_0000.json").read_text())["seed"] == 7
    assert [p.name for p in (tmp_path / "gifs").iterdir()] == ["episode_0000.gif"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["seed"] == 7
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwriting removes only what a rollout writes


def test_resume_continues_a_killed_run_without_repeating_finished_episodes(tmp_path, capsys):
    assert _oracle(tmp_path, 3) == 0
    killed = tmp_path / "episodes" / "episode_0002.json"
    killed.unlink()  # as if killed during episode 2, after an earlier run's summary was written
    kept = tmp_path / "episodes" / "episode_0001.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "marker": "read back, not rerun"}))

    assert _oracle(tmp_path, 4, "--resume") == 0  # and extended by one episode
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "episodes").iterdir()}
    assert sorted(records) == [f"episode_{i:04d}.json" for i in range(4)]
    assert records["episode_0001.json"]["marker"] == "read back, not rerun"
    assert records["episode_0002.json"]["seed"] == 2 and records["episode_0003.json"]["seed"] == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 4 and summary["success_rate"] == 1.0 and summary["not_run"] == []

    assert _oracle(tmp_path, 4, "--resume") == 0  # nothing left: nothing runs, the summary is the same
    assert json.loads((tmp_path / "summary.json").read_text())["episodes"] == 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "1"], "holds a run with seed 0, not 1"),
        (["--task", "eqa"], "holds a run with task 'object_nav', not 'eqa'"),
        (["--policy", "random"], "holds a run with policy 'oracle', not 'random'"),
        (["--replans", "1"], "holds a run with replans 0, not 1"),
        (["--episodes", "1"], "is not one of this run's 1 episodes from seed 0"),
    ],
)
def test_resume_refuses_another_runs_folder(tmp_path, capsys, flags, message):
    assert _oracle(tmp_path, 2) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["rollout", "--task", "object_nav", "--policy", "oracle", "--episodes", "2", "--gifs", "1",
                 "--out", str(tmp_path), "--quiet", "--resume", *flags]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("embodied rollout: error: ") and message in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_resume_refuses_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert _oracle(tmp_path, 1, "--resume") == 2
    assert f"{tmp_path} holds no config.json, so no run to resume" in capsys.readouterr().err
    assert _oracle(tmp_path / "new", 1, "--resume") == 0  # an empty or new folder: a resumed run starts afresh


def test_summary_of_a_run_where_nothing_ran_has_no_rates():
    summary = summarize([], RolloutConfig())
    assert summary["episodes"] == 0 and summary["success_rate"] is None and summary["success_ci95"] is None


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
