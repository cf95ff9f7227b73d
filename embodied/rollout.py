"""Simulated episode rollouts: plan, execute with the skills, measure, and record JSON, GIFs and a summary."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from numbers import Integral
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from embodied.io import write_atomic, write_json
from embodied.prompts import MODEL_INPUTS
from envs import ENV_IDS
from envs.executor import execute_plan
from envs.paraphrase import PHRASINGS
from envs.plan import PlanError, Step, parse_plan
from envs.planners import PLANNERS, Planner

POLICIES = (*PLANNERS, *MODEL_INPUTS)  # the model, and shown less (embodied.prompts.MODEL_INPUTS)
GIF_EVERY = 3  # keep every third control step (0.3 s of simulated time per frame)
GIF_MAX_FRAMES = 200
CAPTION_HEIGHT = 30
RUN_FILE = "config.json"  # the run a folder holds, written as it starts: resuming checks it
OUTPUTS = ("episodes", "gifs", "recordings", "summary.json", RUN_FILE)  # what a rollout writes, and all that overwriting removes
SAME_RUN = ("task", "policy", "seed", "replans", "checkpoint", "world", "decoding", "phrasing")  # what decides an episode: a resumed run keeps these
WORLDS = ("perceived", "privileged")
DECODING_NAMES = ("fast", "exact", "reference")  # embodied.decoding.DECODINGS, named here without importing torch


@dataclass(frozen=True)
class RolloutConfig:
    task: str = "pick_place"
    policy: str = "oracle"
    episodes: int = 10
    seed: int = 0
    out: Path = Path("runs/rollout")
    gifs: int = 2
    replans: int = 0  # closed loop: plans again after a failed skill, up to this many times
    checkpoint: str | None = None  # model policies: a folder, "tiny" or "untrained"; None or "default": the shipped one
    overwrite: bool = False  # replace the records, GIFs and summary of an earlier run in ``out``
    resume: bool = False  # continue the (killed) run in ``out``: its finished episodes are read back, not rerun
    # what the skills and the planner see: "perceived" (the robot's own camera and odometry, the default for
    # the model and random policies) or "privileged" (the simulator's state, the oracle's default); None: the default
    world: str | None = None
    decoding: str | None = None  # model policies: "fast" (None: the default) or "reference" (embodied.decoding.DECODINGS)
    phrasing: str = "template"  # instructions as the task writes them, or reworded: "varied", "held_out" (envs.paraphrase)

    def __post_init__(self):
        """Types and ranges here, so that a wrong value fails in one line before anything loads or runs."""
        for name, kinds, what in (
            ("task", str, "text"), ("policy", str, "text"), ("out", (str, Path), "a path"),
            ("checkpoint", (str, type(None)), "text or None"), ("world", (str, type(None)), "text or None"),
            ("decoding", (str, type(None)), "text or None"), ("phrasing", str, "text"),
        ):  # fmt: skip
            if not isinstance(getattr(self, name), kinds):
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")
        for name in ("overwrite", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, least in (("episodes", 1), ("seed", 0), ("gifs", 0), ("replans", 0)):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.task not in ENV_IDS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(ENV_IDS)}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.overwrite and self.resume:
            raise ValueError("overwrite and resume exclude each other: replace the earlier run or continue it")
        if self.world is not None and self.world not in WORLDS:
            raise ValueError(f"unknown world {self.world!r}; choose one of {', '.join(WORLDS)}")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"unknown phrasing {self.phrasing!r}; choose one of {', '.join(PHRASINGS)}")
        if self.decoding is not None and self.decoding not in DECODING_NAMES:
            raise ValueError(f"unknown decoding {self.decoding!r}; choose one of {', '.join(DECODING_NAMES)}")
        # one spelling per run, so records and resumes compare equal: the model's weights, or none
        model = self.policy in MODEL_INPUTS
        object.__setattr__(self, "checkpoint", (self.checkpoint or "default") if model else None)
        object.__setattr__(self, "decoding", (self.decoding or "fast") if model else None)
        object.__setattr__(self, "world", self.world or ("privileged" if self.policy == "oracle" else "perceived"))


def make_planner(config: RolloutConfig) -> Planner:
    if config.policy in MODEL_INPUTS:
        from embodied.decoding import DECODINGS
        from embodied.model_planner import ModelPlanner

        return ModelPlanner(config.checkpoint, policy=config.policy, decoding=DECODINGS[config.decoding])
    return PLANNERS[config.policy](seed=config.seed) if config.policy == "random" else PLANNERS[config.policy]()


class GifRecorder:
    """Collects captioned frames of one episode (the executor's ``on_step`` callback)."""

    def __init__(self, env: gym.Env, caption: str):
        self.env, self.caption = env, caption
        self.frames: list[np.ndarray] = []
        self.calls = 0

    def __call__(self, obs: dict, info: dict, step: Step) -> None:
        ended = self.env.unwrapped.ended
        self.calls += 1
        if self.calls % GIF_EVERY == 1 or ended:
            status = f"step {info['steps']}: {step}"
            if ended:
                status += "  -> SUCCESS" if info["success"] else "  -> FAILED"
            self.frames.append(self._captioned(self._frame(), status))

    def _frame(self) -> np.ndarray:
        """Overview and head camera; in a perceived world, the robot's perceived objects drawn on its view."""
        frame = self.env.render()
        base = self.env.unwrapped
        if base.world is not None:
            from embodied.perception.drawing import draw_objects

            head = frame[:, -frame.shape[0] :]
            robot = base.robot_state()
            frame = frame.copy()
            frame[:, -frame.shape[0] :] = draw_objects(head, list(base.world.scene().objects), (robot.x, robot.y, robot.yaw))
        return frame

    def _captioned(self, frame: np.ndarray, status: str) -> np.ndarray:
        canvas = Image.new("RGB", (frame.shape[1], frame.shape[0] + CAPTION_HEIGHT), (24, 24, 28))
        canvas.paste(Image.fromarray(frame), (0, CAPTION_HEIGHT))
        draw = ImageDraw.Draw(canvas)
        draw.text((6, 2), self.caption[:95], fill=(235, 235, 235))
        draw.text((6, 16), status[:95], fill=(170, 220, 170))
        return np.asarray(canvas)

    def encode(self) -> bytes | None:
        """The GIF's bytes (None without frames): a worker on another machine sends them to the writer."""
        frames = self.frames[:: max(1, -(-len(self.frames) // GIF_MAX_FRAMES))]
        if not frames:
            return None
        frames[-1:] = frames[-1:] * 8  # hold the last frame, where the verdict is
        return iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=100, loop=0)


def run_episode(
    env: gym.Env, planner: Planner, seed: int, gif: bool = False, replans: int = 0, recording=None
) -> tuple[dict, GifRecorder | None]:
    """One episode: reset, plan, parse, execute, measure, closed loop: when a skill fails (or a plan does
    not parse) and ``replans`` remain, the planner plans again from the current observation with the
    failure in its instruction (PaLM-E / SayCan style). It never raises for a bad plan or a failing skill.
    With ``gif``, also its frames. A ``recording`` (made before the reset: ros_nodes/episode_recording.py)
    hears every step and every plan."""
    started = time.perf_counter()
    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    instruction = base.task.instruction
    record = {"seed": seed, "task": base.task.name, "instruction": instruction, "goal": base.task.goal()}
    recorder = GifRecorder(env, instruction) if gif else None
    on_step = _every(recorder, recording)
    plans, outcomes, feedback = [], [], ""
    if base.world is not None:  # a perceived world starts empty: look around before planning
        from embodied.perception.episode import look_around

        outcomes += look_around(base, on_step, instruction)
        record["perceived_objects"] = base.known_objects()
        obs = base.observation()
    for attempt in range(replans + 1):
        last = attempt == replans
        text = planner.plan({**obs, "instruction": instruction + feedback} if feedback else obs, env)
        plans.append(text)
        try:
            plan, error = parse_plan(text, base.known_objects()), ""
        except PlanError as exc:
            plan, error = None, str(exc)
        if recording is not None:
            recording.plan(instruction + feedback, text, error)
        if plan is None:
            record.setdefault("plan_error", error)
            feedback = f"\nyour plan did not parse ({error}); write it again."
            continue
        record.setdefault("plan_valid", attempt == 0)
        done, info = execute_plan(env, plan, on_step=on_step, finish=last)
        outcomes += done
        if base.ended or base.steps >= base.max_steps or not done or done[-1].success:
            break
        feedback = f"\n{done[-1].step} failed: {done[-1].reason}. plan again from here."
        obs = base.observation()
    record.setdefault("plan_valid", False)
    if not base.ended:
        obs, _, _, _, info = base.submit(None)
        if on_step is not None:
            on_step(obs, info, Step("done"))
    record.update(
        plan=plans[0],
        steps=[o.to_dict() for o in outcomes],
        success=bool(info["success"]),
        env_steps=info["steps"],
        path_length=info["path_length"],
        answer=info["answer"],
        seconds=time.perf_counter() - started,
        **{k: info[k] for k in ("spl", "progress", "distance_to_goal") if k in info},
    )
    if replans:
        record["plans"] = plans
    return record, recorder


def _every(*callbacks):
    """One ``on_step`` callback calling each of ``callbacks`` that is not None (None when none is)."""
    callbacks = [c for c in callbacks if c is not None]
    if not callbacks:
        return None

    def on_step(obs: dict, info: dict, step: Step) -> None:
        for callback in callbacks:
            callback(obs, info, step)

    return on_step


def summarize(records: list[dict], config: RolloutConfig) -> dict:
    """The policy's figures over the episodes that ran (None for a rate when none did)."""

    def mean(key):
        values = [r[key] for r in records if key in r]
        return float(np.mean(values)) if values else None

    success = np.array([r["success"] for r in records], float)
    ci95 = float(1.96 * success.std() / np.sqrt(len(success))) if records else None
    failures: dict[str, int] = {}
    for r in records:
        for step in r["steps"]:
            if not step["success"]:
                reason = step["reason"].split(":")[0]
                failures[reason] = failures.get(reason, 0) + 1
    return {
        "task": config.task,
        "policy": config.policy,
        "episodes": len(records),
        "seed": config.seed,
        "success_rate": mean("success"),
        "success_ci95": ci95,
        "spl": mean("spl"),
        "plan_valid_rate": mean("plan_valid"),
        "mean_env_steps": mean("env_steps"),
        "mean_seconds": mean("seconds"),
        "failure_reasons": failures,
    }


class EpisodeRunner:
    """One environment and one planner, running the episodes of a rollout by index: the serial loop
    below and each parallel rollout worker (agents/rollout_workers.py) hold one."""

    def __init__(self, config: RolloutConfig, recording=None):
        """``recording(env, path, policy)``: makes an episode's recording (``--record``:
        ros_nodes.episode_recording.EpisodeRecording, handed down by the command line)."""
        self.config, self.recording = config, recording
        self.planner = make_planner(config)
        render = "rgb_array" if config.gifs else None
        self.env = gym.make(ENV_IDS[config.task], sensors=self.planner.sensors, render_mode=render, phrasing=config.phrasing)
        if config.world == "perceived":
            from embodied.perception.episode import PerceivedWorld

            self.env.unwrapped.world = PerceivedWorld()

    def run(self, index: int) -> tuple[dict, bytes | None]:
        """Episode ``index`` (seed ``config.seed + index``): its record, and its GIF's bytes if it has one. Both
        go to ``RecordWriter.add``, on the machine that writes the run."""
        config = self.config
        recording = None
        if self.recording is not None:
            recording = self.recording(self.env, Path(config.out) / "recordings" / f"episode_{index:04d}.mcap", config.policy)
        try:
            record, recorder = run_episode(self.env, self.planner, config.seed + index, index < config.gifs, config.replans, recording)
        finally:
            if recording is not None:
                recording.close()
        record["episode"] = index
        return record, recorder.encode() if recorder is not None else None

    def close(self) -> None:
        self.env.close()


class RecordWriter:
    """Writes each episode's record as it arrives, with a progress bar, and the summary at the end. It first
    claims the output folder: an earlier run's files there are refused unless the config says to replace
    them (``overwrite``) or to continue that run (``resume``), so that two runs never mix."""

    def __init__(self, config: RolloutConfig, progress: bool):
        self.config, self.out = config, Path(config.out)
        self.records = self._claim()
        self.infrastructure_errors: dict[str, int] = {}  # failed attempts to run an episode, retried or not
        self.not_run: dict[int, str] = {}  # episodes that never ran, and why
        self.ran = 0
        self.progress, self._bar = progress, None
        self.started = time.perf_counter()

    def begin(self) -> None:
        """Episodes start now (the policy has loaded, the workers are up): the progress bar shows from here,
        and the episode rate counts from here."""
        self.started = time.perf_counter()
        self.bar.refresh()

    @property
    def bar(self) -> tqdm:
        """The progress bar, opened at its first use: once the policy has loaded, so that a load error reads
        as one line."""
        if self._bar is None:
            config = self.config
            self._bar = tqdm(
                total=config.episodes, initial=len(self.records), desc=f"{config.task}/{config.policy}", unit="ep",
                disable=not self.progress,
            )  # fmt: skip
        return self._bar

    def _claim(self) -> dict[int, dict]:
        """The episodes already finished (when resuming), after checking and preparing ``out``."""
        config, out = self.config, self.out
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a folder for the run's records")
        held = out.is_dir() and any(out.iterdir())
        if held and not (config.overwrite or config.resume):
            raise ValueError(
                f"{out} already holds files (an earlier run?); --overwrite replaces that run, --resume continues it"
            )
        if held and config.overwrite:
            for name in OUTPUTS:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        records = self._resumed() if held and config.resume else {}
        try:
            (out / "summary.json").unlink(missing_ok=True)  # a continued run's summary is stale until it ends
            write_json(out / RUN_FILE, {**asdict(config), "out": str(out)})
        except OSError as exc:
            raise ValueError(f"cannot write to {out}: {exc.strerror}") from exc
        return records

    def _resumed(self) -> dict[int, dict]:
        """The records of the run in ``out``, which must be this config's run."""
        config, out = self.config, self.out
        if not (out / RUN_FILE).is_file():
            raise ValueError(f"{out} holds no {RUN_FILE}, so no run to resume; --overwrite replaces what is there")
        earlier = json.loads((out / RUN_FILE).read_text())
        for key in SAME_RUN:
            was, now = earlier.get(key), getattr(config, key)
            if was != now:
                raise ValueError(f"{out} holds a run with {key} {was!r}, not {now!r}; resume it with the same {key}")
        records = {}
        for path in sorted((out / "episodes").glob("episode_*.json")):
            record = json.loads(path.read_text())
            index = record["episode"]
            if index >= config.episodes or record["seed"] != config.seed + index or record["task"] != config.task:
                raise ValueError(f"{path} is not one of this run's {config.episodes} episodes from seed {config.seed}")
            records[index] = record
        return records

    def todo(self) -> list[int]:
        """The episodes left to run, in order."""
        return [index for index in range(self.config.episodes) if index not in self.records]

    def add(self, record: dict, gif: bytes | None = None) -> None:
        if gif is not None:
            write_atomic(self.out / "gifs" / f"episode_{record['episode']:04d}.gif", lambda tmp: tmp.write_bytes(gif))
        write_json(self.out / "episodes" / f"episode_{record['episode']:04d}.json", record)
        self.records[record["episode"]] = record
        self.ran += 1
        self.bar.update(1)
        self.bar.set_postfix(success=f"{np.mean([r['success'] for r in self.records.values()]):.0%}")

    def failed_attempt(self, reason: str) -> None:
        """An attempt to run an episode that the infrastructure (not the policy) brought down."""
        self.infrastructure_errors[reason] = self.infrastructure_errors.get(reason, 0) + 1

    def give_up(self, index: int, reason: str) -> None:
        """Episode ``index`` could not run: it is reported apart and counts in no rate; no record is written,
        so a resumed run tries it again."""
        self.not_run[index] = reason
        self.bar.update(1)

    def finish(self, **extra) -> dict:
        """The summary, written to ``summary.json``; ``extra`` adds what a runner knows (where episodes ran)."""
        self.bar.close()
        summary = summarize([self.records[i] for i in sorted(self.records)], self.config) | extra
        summary["infrastructure_errors"] = self.infrastructure_errors
        seed = self.config.seed
        summary["not_run"] = [{"episode": i, "seed": seed + i, "error": e} for i, e in sorted(self.not_run.items())]
        summary["episodes_per_second"] = self.ran / (time.perf_counter() - self.started)
        write_json(self.out / "summary.json", {"config": {**asdict(self.config), "out": str(self.config.out)}, **summary})
        return summary


def rollout(config: RolloutConfig, progress: bool = True, recording=None) -> dict:
    """Run ``config.episodes`` seeded episodes; write one JSON per episode as it ends, GIFs of the
    first ``config.gifs``, and ``summary.json``. Returns the summary. With ``config.resume`` the episodes
    already recorded in ``config.out`` are read back, not run again. ``recording``: see ``EpisodeRunner``."""
    writer = RecordWriter(config, progress)  # claims the output folder before anything loads
    todo = writer.todo()
    if todo:
        runner = EpisodeRunner(config, recording)
        writer.begin()
        try:
            for index in todo:
                writer.add(*runner.run(index))
        finally:
            runner.close()
    return writer.finish()
