"""The checkpoint that ships in the package (made by `make recipe`): it loads offline, it is the default
model, and it plans what the skills can carry out."""

import gymnasium as gym
import pytest

import envs
from embodied.model import DEFAULT_CHECKPOINT, EmbodiedModel, ModelConfig
from embodied.model_planner import ModelPlanner
from embodied.plan import parse_plan
from embodied.rollout import RolloutConfig, rollout


def test_the_default_checkpoint_ships_and_is_small():
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert set(files) == {"config.json", "model.safetensors"}
    assert files["model.safetensors"] < 20e6


def test_it_loads_as_the_default_model_and_plans_from_the_head_camera():
    planner = ModelPlanner("default")
    assert planner.model.config == ModelConfig()
    env = gym.make(envs.ENV_IDS["pick_place"], sensors=planner.sensors)
    try:
        obs, _ = env.reset(seed=500_000)
        plan = parse_plan(planner.plan(obs, env), env.unwrapped.scene.object_names)
    finally:
        env.close()
    skills = [step.skill for step in plan.steps]
    assert skills[-1] == "done" and "pick" in skills and "place" in skills


def test_from_pretrained_default_is_the_shipped_folder():
    assert EmbodiedModel.from_pretrained("default").config == ModelConfig()


@pytest.mark.slow
@pytest.mark.parametrize("task, at_least", [("object_nav", 0.8), ("pick_place", 0.7)])
def test_it_solves_held_out_episodes(task, at_least, tmp_path):
    summary = rollout(RolloutConfig(task=task, policy="model", episodes=10, seed=600_000, out=tmp_path, gifs=0, checkpoint="default"), progress=False)
    assert summary["plan_valid_rate"] >= 0.9
    assert summary["success_rate"] >= at_least
