"""The skills are only as good as their success with a perfect planner: the oracle must clear 95%."""

import pytest

from embodied.rollout import RolloutConfig, rollout
from envs import ENV_IDS


@pytest.mark.slow
@pytest.mark.parametrize("task", list(ENV_IDS))
def test_oracle_with_skills_succeeds_on_200_seeded_episodes(task, tmp_path):
    summary = rollout(RolloutConfig(task, "oracle", episodes=200, seed=0, out=tmp_path, gifs=0), progress=False)
    assert summary["episodes"] == 200
    assert summary["success_rate"] >= 0.95, summary["failure_reasons"]
    if task == "object_nav":
        assert summary["spl"] >= 0.75  # navigate() stops within arm reach, inside the 1 m success radius
