"""Shared test setup: headless rendering, no network, and environments that are always closed."""

import os

# Before anything imports mujoco, ray or huggingface_hub.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: E402  (registers the gymnasium ids)
from envs.executor import execute_plan  # noqa: E402
from envs.plan import parse_plan  # noqa: E402
from envs.planners import OraclePlanner  # noqa: E402

SMALL = {"width": 64, "height": 64, "num_points": 256}  # small images and clouds keep the suite fast


@pytest.fixture
def make_env():
    """``make_env(task, **kwargs)``: a ``gym.make`` of the task's registered id, closed after the test.

    Without ``sensors`` it renders nothing (``sensors=()``); image sizes default to ``SMALL``.
    """
    made = []

    def make(task: str = "pick_place", **kwargs):
        kwargs.setdefault("sensors", ())
        for key, value in SMALL.items():
            kwargs.setdefault(key, value)
        env = gym.make(envs.ENV_IDS[task], **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


@pytest.fixture
def run_oracle():
    """``run_oracle(env, seed, on_step=None)``: reset to ``seed``, run the oracle's plan, return
    ``(outcomes, final_info)``."""

    def run(env, seed: int, on_step=None):
        obs, _ = env.reset(seed=seed)
        text = OraclePlanner().plan(obs, env)
        plan = parse_plan(text, env.unwrapped.scene.object_names)
        return execute_plan(env, plan, on_step=on_step)

    return run


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A dataset of a few scenes per split (about ten seconds to render), shared by the whole session."""
    from embodied.data.generate import DataConfig, generate

    root = tmp_path_factory.mktemp("dataset")
    generate(root, DataConfig(train_scenes=2, val_scenes=1, test_scenes=1, compositional_scenes=1, shard_scenes=1), progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny model saved as a checkpoint folder."""
    import torch

    from embodied.model import EmbodiedModel, ModelConfig

    torch.manual_seed(0)
    return EmbodiedModel(ModelConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("checkpoint") / "model")
