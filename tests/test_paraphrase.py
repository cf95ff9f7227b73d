"""Reworded instructions: the same draws give the same words, the pools training and evaluation draw from
never share a word or a frame, and the env rewords what it asks for while the episode stays the same."""

import numpy as np
import pytest

from embodied.eval.plan import evaluate_plans
from embodied.rollout import RolloutConfig
from envs.env import INSTRUCTION_CHARSET, EnvConfig
from envs.paraphrase import FRAMES, WORDS, paraphrase

TEMPLATE = "put the red cube in the yellow bowl, then the blue sphere in the black bin"


def test_the_template_phrasing_keeps_the_words_and_the_others_reword_them_reproducibly():
    assert paraphrase(TEMPLATE, "template", np.random.default_rng(0)) == TEMPLATE
    for phrasing in ("varied", "held_out"):
        texts = [paraphrase(TEMPLATE, phrasing, np.random.default_rng(seed)) for seed in range(50)]
        assert texts == [paraphrase(TEMPLATE, phrasing, np.random.default_rng(seed)) for seed in range(50)]
        assert TEMPLATE not in texts and len(set(texts)) > 40
        assert all(set(t) <= set(INSTRUCTION_CHARSET) for t in texts)


def test_training_and_evaluation_pools_share_no_word_and_no_frame():
    varied = {w for train, _ in WORDS.values() for w in train}
    held_out = {w for _, held in WORDS.values() for w in held}
    assert not varied & held_out and not varied & set(WORDS) and not held_out & set(WORDS)
    assert not set(FRAMES[0]) & set(FRAMES[1])
    texts = " ".join(paraphrase(TEMPLATE, "held_out", np.random.default_rng(seed)) for seed in range(100))
    assert not [w for w in varied if f" {w} " in f" {texts} "]


def test_an_unknown_phrasing_fails_at_the_edge():
    with pytest.raises(ValueError, match="unknown phrasing 'poetic'"):
        EnvConfig(phrasing="poetic")
    with pytest.raises(ValueError, match="unknown phrasing 'poetic'"):
        RolloutConfig(phrasing="poetic")
    with pytest.raises(ValueError, match="unknown phrasing"):
        paraphrase(TEMPLATE, "poetic", np.random.default_rng(0))


@pytest.mark.parametrize("task", ["pick_place", "refer", "eqa"])
def test_the_env_rewords_a_command_but_not_a_question_and_the_episode_stays_the_same(task, make_env):
    template, held_out = make_env(task), make_env(task, phrasing="held_out")
    for seed in range(3):
        asked = template.reset(seed=seed)[0]["instruction"]
        reworded = held_out.reset(seed=seed)[0]["instruction"]
        assert held_out.unwrapped.task.goal() == template.unwrapped.task.goal()
        assert (reworded == asked) == (task == "eqa")


def test_the_plan_report_gives_each_phrasing_as_a_share_of_the_templates(tmp_path):
    rates = {"template": 0.8, "held_out": 0.4}

    def run(config, progress):
        return {
            "success_rate": rates[config.phrasing],
            "success_ci95": 0.1,
            "spl": None,
            "plan_valid_rate": 1.0,
            "episodes": 10,
        }

    rows = evaluate_plans(
        "default", ["pick_place"], ["random"], 10, tmp_path, progress=False, phrasings=("template", "held_out"), run=run
    )
    by_policy = {r["policy"]: r for r in rows if r["task"] == "pick_place"}
    assert set(by_policy) == {"random/template", "random/held_out"}
    assert by_policy["random/held_out"]["of_template"] == pytest.approx(0.5)
    assert "of_template" not in by_policy["random/template"]
    report = (tmp_path / "report.md").read_text()
    assert "of_template" in report and "of_privileged" not in report  # one world: no share of the other
