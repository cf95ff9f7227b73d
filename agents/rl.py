"""RL fine-tuning in simulation on Ray actors (``embodied train rl``).

Each iteration, rollout workers reset seeded training episodes, ask the inference router for a group of
sampled plans per episode, run every plan with the skills, and score it (task success, plus a small bonus
for a valid plan). The learner actor takes a GRPO step on LoRA and projector weights and pushes the new
weights to the inference replicas. Every ``eval_every`` iterations the current policy plans held-out
episodes greedily: the success curve. Checkpoints are atomic and a rerun resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from agents import runtime
from agents.inference import InferenceConfig, start_inference
from embodied.config import config_from_dict
from embodied.decoding import PLAN_TOKENS
from embodied.eval.plan import EVAL_SEED
from embodied.train.config import PARTS, read_yaml

TRAIN_SEED = 7_000_000  # training episodes draw their seeds from here (evaluation: EVAL_SEED)


@dataclass(frozen=True)
class RLConfig:
    init: str = "default"  # the instruction-tuned checkpoint to start from
    out: str = "runs/rl"
    tasks: tuple[str, ...] = ("object_nav", "pick_place", "rearrange", "eqa")
    iterations: int = 20
    episodes: int = 4  # training episodes per iteration
    group: int = 4  # plans sampled per episode
    temperature: float = 1.0
    lr: float = 1e-4
    grad_clip: float = 1.0
    micro_batch: int = 8  # plans per forward and backward pass of the learner: bounds its memory
    validity_bonus: float = 0.1  # reward for a plan that parses with known skills and objects
    kl: float = 0.1  # weight of the KL penalty to the starting policy (0: none)
    trainable: tuple[str, ...] = ("image_projector", "point_projector", "object_encoder", "lora")
    eval_every: int = 5
    eval_episodes: int = 8  # held-out episodes per task
    eval_seed: int = EVAL_SEED
    save_every: int = 5
    workers: int = 2
    threads: int = 1  # torch threads for the learner and the inference replica
    seed: int = 0
    max_new_tokens: int = PLAN_TOKENS

    def __post_init__(self):
        from envs import ENV_IDS

        unknown = set(self.tasks) - set(ENV_IDS)
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be some of {', '.join(ENV_IDS)}, got {list(self.tasks)}")
        if set(self.trainable) - set(PARTS) or not self.trainable:
            raise ValueError(f"trainable parts must be some of {', '.join(PARTS)}, got {list(self.trainable)}")
        for name in ("iterations", "episodes", "eval_every", "eval_episodes", "save_every", "workers", "threads", "max_new_tokens", "micro_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group < 2:
            raise ValueError("group must be >= 2: GRPO compares plans within a group")
        for name in ("temperature", "lr", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("validity_bonus", "kl", "seed", "eval_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.out:
            raise ValueError("out must name a folder")

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> RLConfig:
        data = {**read_yaml(path, "rl config"), **(overrides or {})}
        return config_from_dict(cls, data, "rl config")


@ray.remote
class Learner:
    """The policy being trained: GRPO steps on the trainable parts, checkpoints, the weights to push."""

    def __init__(self, config: dict):
        import torch

        from embodied.model import load_model
        from embodied.train.checkpoints import CHECKPOINT, has_checkpoint, load_checkpoint
        from embodied.train.language import freeze_all_but

        self.config = RLConfig(**config)
        torch.set_num_threads(self.config.threads)
        torch.manual_seed(self.config.seed)
        self.model = load_model(self.config.init).train()
        freeze_all_but(self.model, self.config.trainable)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        # the policy the KL penalty measures from: the starting one, also when a run resumes
        self.reference = [p.detach().clone() for p in self.parameters]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=self.config.lr, weight_decay=0.0)
        self.step = 0
        folder = Path(self.config.out) / CHECKPOINT
        if has_checkpoint(folder):
            weights, optimizer_state, state = load_checkpoint(folder)
            self.model.load_matching(weights)
            self.optimizer.load_state_dict(optimizer_state)
            self.step = int(state["step"])

    def iteration(self) -> int:
        return self.step

    def weights(self) -> dict:
        return {k: v.detach().cpu().numpy() for k, v in self.model.trainable_state().items()}

    def update(self, groups: list[dict]) -> dict:
        import torch

        from embodied.train.grpo import backward_policy_loss, group_advantages

        samples, advantages = [], []
        for group in groups:
            for plan, advantage in zip(group["plans"], group_advantages(group["rewards"])):
                if advantage != 0.0:
                    samples.append(group["request"].sample(self.model.inputs, plan))
                    advantages.append(float(advantage))
        self.step += 1
        if not samples:  # every group scored all its plans alike: no signal this time
            return {"loss": 0.0, "trained_plans": 0}
        self.optimizer.zero_grad(set_to_none=True)
        loss = backward_policy_loss(self.model, samples, advantages, self.config.micro_batch, self._reference_logprobs, self.config.kl)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        return {"loss": loss, "grad_norm": float(norm), "trained_plans": len(samples)}

    def _swap_reference(self) -> None:
        """Exchange the trained weights with the starting ones, without copying: a second call undoes it."""
        for i, parameter in enumerate(self.parameters):
            parameter.data, self.reference[i] = self.reference[i], parameter.data

    def _reference_logprobs(self, samples: list):
        """The starting policy's token log-probabilities of ``samples`` (its weights swapped in for one pass)."""
        import torch

        from embodied.train.grpo import token_logprobs

        if self.config.kl == 0.0:
            return None
        self._swap_reference()
        try:
            with torch.no_grad():
                return token_logprobs(self.model, samples)[0]
        finally:
            self._swap_reference()

    def save(self) -> None:
        from embodied.train.checkpoints import CHECKPOINT, save_checkpoint

        save_checkpoint(Path(self.config.out) / CHECKPOINT, self.model.write_files, self.optimizer, {"step": self.step, "config": asdict(self.config)})

    def export(self) -> str:
        from embodied.train.checkpoints import FINAL

        return str(self.model.save_pretrained(Path(self.config.out) / FINAL))


class _GivenPlan:
    """A planner that returns the plan it was given: lets ``run_episode`` score a sampled plan."""

    name, sensors = "given", ()

    def __init__(self, text: str):
        self.text = text

    def plan(self, observation, env) -> str:
        return self.text


@ray.remote
class RLWorker:
    """Owns one environment per task; collects groups of sampled plans and scores them in simulation."""

    def __init__(self, tasks: list[str]):
        import gymnasium as gym

        from envs import ENV_IDS

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.envs = {task: gym.make(ENV_IDS[task], sensors=("rgb", "points")) for task in tasks}

    def collect(self, task: str, seed: int, group: int, temperature: float, draw_seed: int, router, bonus: float) -> dict:
        from embodied.model_planner import env_request
        from embodied.rollout import run_episode

        env = self.envs[task]
        obs, _ = env.reset(seed=seed)
        request = env_request(obs, env)  # with object clouds: the replica shows the model what it reads
        refs = [router.plan.remote(dataclasses.replace(request, temperature=temperature, seed=draw_seed + k)) for k in range(group)]
        plans = ray.get(refs)
        records = [run_episode(env, _GivenPlan(plan), seed)[0] for plan in plans]
        return {
            "task": task,
            "seed": seed,
            "request": request,
            "plans": plans,
            "success": [bool(r["success"]) for r in records],
            "valid": [bool(r["plan_valid"]) for r in records],
            "rewards": [float(r["success"]) + bonus * float(r["plan_valid"]) for r in records],
        }


def train_rl(config: RLConfig, address: str | None = None, progress: bool = True) -> list[dict]:
    """Run (or resume) RL fine-tuning; returns the evaluation records (the success curve)."""
    from embodied.io import write_json
    from embodied.train.checkpoints import CHECKPOINT, has_checkpoint, load_checkpoint
    from embodied.train.metrics import CURVES, METRICS, append_metrics, plot_curves, read_metrics, truncate_metrics

    # actors do not start in this folder: the paths they read and write must be absolute
    init = config.init if config.init == "default" else str(Path(config.init).resolve())
    config = dataclasses.replace(config, out=str(Path(config.out).resolve()), init=init)
    out = Path(config.out)
    if has_checkpoint(out / CHECKPOINT):
        load_checkpoint(out / CHECKPOINT)  # a damaged one fails here, in one line, not inside the learner actor
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))
    runtime.start(runtime.RuntimeConfig(address=address))
    try:
        # on the driver's node: its checkpoints and model are written where the user asked (``out``), on any cluster
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        learner = Learner.options(num_cpus=0, scheduling_strategy=here).remote(asdict(config))
        start = ray.get(learner.iteration.remote())
        truncate_metrics(out / METRICS, start)
        inference = InferenceConfig(checkpoint=config.init, max_batch=config.episodes * config.group, threads=config.threads, max_new_tokens=config.max_new_tokens)
        router = start_inference(inference, replicas=1, num_cpus=0)
        if start:
            ray.get(router.load_weights.remote(learner.weights.remote()))
        workers = [RLWorker.options(num_cpus=0).remote(list(config.tasks)) for _ in range(config.workers)]

        def evaluate(step: int) -> None:
            jobs = [
                (task, config.eval_seed + i) for task in config.tasks for i in range(config.eval_episodes)
            ]
            results = ray.get(
                [workers[k % len(workers)].collect.remote(task, seed, 1, 0.0, 0, router, config.validity_bonus) for k, (task, seed) in enumerate(jobs)]
            )
            record = {"step": step, "eval/success": float(np.mean([r["success"][0] for r in results]))}
            for task in config.tasks:
                record[f"eval/success_{task}"] = float(np.mean([r["success"][0] for r in results if r["task"] == task]))
            append_metrics(out / METRICS, record)
            plot_curves(out / METRICS, out / CURVES, title=f"RL: {out.name}")

        if start == 0:
            evaluate(0)
        bar = tqdm(total=config.iterations, initial=start, desc="rl", unit="iter", disable=not progress)
        for step in range(start, config.iterations):
            rng = np.random.default_rng([config.seed, step])
            tasks = [config.tasks[int(i)] for i in rng.integers(len(config.tasks), size=config.episodes)]
            seeds = [TRAIN_SEED + 1000 * step + k for k in range(config.episodes)]
            groups = ray.get(
                [
                    workers[k % len(workers)].collect.remote(task, seed, config.group, config.temperature, seed * config.group, router, config.validity_bonus)
                    for k, (task, seed) in enumerate(zip(tasks, seeds))
                ]
            )
            metrics = ray.get(learner.update.remote(groups))
            ray.get(router.load_weights.remote(learner.weights.remote()))
            record = {
                "step": step + 1,
                **metrics,
                "reward": float(np.mean([r for g in groups for r in g["rewards"]])),
                "sampled_success": float(np.mean([s for g in groups for s in g["success"]])),
                "sampled_valid": float(np.mean([v for g in groups for v in g["valid"]])),
            }
            append_metrics(out / METRICS, record)
            bar.update()
            bar.set_postfix(reward=f"{record['reward']:.2f}")
            done = step + 1
            if done % config.eval_every == 0 or done == config.iterations:
                evaluate(done)
            if done % config.save_every == 0 or done == config.iterations:
                ray.get(learner.save.remote())
        bar.close()
        ray.get(learner.export.remote())
        plot_curves(out / METRICS, out / CURVES, title=f"RL: {out.name}")
    finally:
        if address is None:
            runtime.shutdown()
    return [r for r in read_metrics(out / METRICS) if "eval/success" in r]
