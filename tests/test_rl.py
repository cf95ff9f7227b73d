"""RL fine-tuning: the GRPO objective, sampled plans, and the whole loop on Ray actors with a tiny model."""

import json

import numpy as np
import pytest
import torch

from embodied.model import EmbodiedModel, ModelConfig
from embodied.prompts import plan_sample
from embodied.train.grpo import backward_policy_loss, group_advantages, per_sample_mean, policy_loss, token_logprobs
from envs.plan import parse_plan

PLAN = "thought: go.\n1. navigate(red cube)\n2. done()"


def test_group_advantages_are_relative_to_the_group():
    a = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert np.allclose(a, [1, -1, -1, 1]) and abs(a.sum()) < 1e-9
    assert not group_advantages([1.1, 1.1, 1.1]).any()  # no spread, no signal


def mean_token_logprobs(model, samples):
    return per_sample_mean(*token_logprobs(model, samples), len(samples))


def test_a_grpo_step_makes_the_better_plan_more_likely():
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny())
    rng = np.random.default_rng(0)
    image, cloud = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), rng.random((64, 6), dtype=np.float32)
    good, bad = plan_sample("find the red cube", image, cloud, PLAN), plan_sample("find the red cube", image, cloud, "thought: no.\n1. done()")
    before = mean_token_logprobs(model, [good, bad]).detach()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        policy_loss(model, [good, bad], [1.0, -1.0]).backward()
        optimizer.step()
    after = mean_token_logprobs(model, [good, bad]).detach()
    assert after[0] > before[0] and after[1] < before[1]


def test_the_kl_penalty_is_zero_at_the_reference_and_grows_away_from_it():
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny()).eval()
    samples = [plan_sample("find the red cube", plan=PLAN), plan_sample("find the red cube", plan="thought: no.\n1. done()")]
    with torch.no_grad():
        reference, _ = token_logprobs(model, samples)
        plain = policy_loss(model, samples, [1.0, -1.0])
        assert torch.isclose(policy_loss(model, samples, [1.0, -1.0], reference, kl=0.5), plain)
        shifted = policy_loss(model, samples, [1.0, -1.0], reference + 0.3, kl=0.5)
    assert shifted > plain + 0.5 * 0.01  # exp(0.3) - 0.3 - 1 = 0.05 per token


def test_micro_batches_give_the_gradient_of_one_pass():
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny())
    plans = [PLAN, "thought: no.\n1. done()", "thought: look.\n1. navigate(red cube)\n2. pick(red cube)\n3. done()"]
    samples = [plan_sample("find the red cube", plan=p) for p in plans]
    advantages = [1.0, -1.0, 0.5]
    with torch.no_grad():
        reference, rows = token_logprobs(model, samples)
    reference = reference + 0.1  # a KL term that is not zero
    index = {id(s): i for i, s in enumerate(samples)}

    def slice_reference(part):  # the reference log-probabilities of the samples of one slice, in order
        return torch.cat([reference[rows == index[id(s)]] for s in part])

    def gradient(micro_batch):
        model.zero_grad(set_to_none=True)
        loss = backward_policy_loss(model, samples, advantages, micro_batch, slice_reference, kl=0.5)
        return loss, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole_loss, whole = gradient(len(samples))
    assert whole.abs().sum() > 0
    for micro_batch in (1, 2):
        loss, grad = gradient(micro_batch)
        assert loss == pytest.approx(whole_loss, rel=1e-5) and torch.allclose(grad, whole, atol=1e-6)


def test_sampled_plans_parse_differ_and_repeat_with_their_seed():
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny()).eval()
    sample = plan_sample("find the red cube")
    draws = model.plan([sample] * 4, max_new_tokens=24, temperature=1.0, seeds=[0, 1, 2, 3])
    assert all(parse_plan(d) for d in draws) and len(set(draws)) > 1
    assert model.plan([sample] * 4, max_new_tokens=24, temperature=1.0, seeds=[0, 1, 2, 3]) == draws
    assert model.plan([sample], max_new_tokens=24) == model.plan([sample], max_new_tokens=24, temperature=0.0)


def test_rl_config_is_validated():
    from agents.rl import RLConfig

    with pytest.raises(ValueError, match="group"):
        RLConfig(group=1)
    with pytest.raises(ValueError, match="tasks"):
        RLConfig(tasks=("juggling",))
    with pytest.raises(ValueError, match="kl"):
        RLConfig(kl=-0.1)
    with pytest.raises(ValueError, match="micro_batch"):
        RLConfig(micro_batch=0)


def test_rl_loop_on_ray_trains_logs_evaluates_and_resumes(tiny_checkpoint, tmp_path):
    pytest.importorskip("ray")
    from agents.rl import RLConfig, train_rl

    config = RLConfig(
        init=str(tiny_checkpoint), out=str(tmp_path / "rl"), tasks=("object_nav", "eqa"), iterations=2, episodes=2, group=2,
        eval_every=2, eval_episodes=1, save_every=1, workers=1, max_new_tokens=24,
    )
    curve = train_rl(config, progress=False)
    assert [r["step"] for r in curve] == [0, 2]
    assert all(0.0 <= r["eval/success"] <= 1.0 for r in curve)
    records = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "reward" in r] == [1, 2]
    assert (tmp_path / "rl" / "curves.png").is_file()
    trained = EmbodiedModel.from_pretrained(tmp_path / "rl" / "model")
    assert trained.trainable_state().keys() == EmbodiedModel.from_pretrained(tiny_checkpoint).trainable_state().keys()
    # a rerun with more iterations resumes at iteration 2, without repeating it
    curve = train_rl(RLConfig(**{**config.__dict__, "iterations": 3, "eval_every": 3}), progress=False)
    records = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "reward" in r] == [1, 2, 3]
    assert curve[-1]["step"] == 3
