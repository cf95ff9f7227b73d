"""The ``embodied`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from embodied.errors import InputError

CHECKPOINT_HELP = "a checkpoint folder, default (the shipped checkpoint), or tiny / untrained (random weights)"
ADDRESS_HELP = "join the Ray cluster at HOST:PORT (default: $RAY_ADDRESS; neither: a private Ray on this machine)"
DECODING_HELP = (
    "fast: grammar-forced tokens and drafts share forward passes, int8 weights after the prompt; "
    "exact: the same at full precision (the reference's greedy plans); reference: one token per pass"
)
PHRASING_HELP = (
    "the instructions' words: template (as the tasks write them), varied (other words, frames and typos, from the pool "
    "training data may use) or held_out (from the pool only evaluation uses)"
)


def _episode_runner(workers: int, address: str | None):
    """How a command's episodes run: here, or over Ray workers (on a cluster with ``address``, else on
    $RAY_ADDRESS's or a private local one). Both take a RolloutConfig and ``progress``."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers == 1 and not address:
        from embodied.rollout import rollout

        return rollout
    from functools import partial

    from agents.rollout_workers import parallel_rollout  # agents/ composes rollouts with Ray; embodied/ knows nothing of it

    return partial(parallel_rollout, workers=workers, address=address)


def _rollout(args: argparse.Namespace) -> int:
    from embodied.rollout import RolloutConfig

    run = _episode_runner(args.workers, args.address)
    out = args.out or Path("runs") / f"rollout_{args.task}_{args.policy}_seed{args.seed}"
    config = RolloutConfig(
        task=args.task,
        policy=args.policy,
        episodes=args.episodes,
        seed=args.seed,
        out=out,
        gifs=args.gifs,
        replans=args.replans,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        resume=args.resume,
        world=args.world,
        decoding=args.decoding,
        phrasing=args.phrasing,
    )
    recording = None
    if args.record:
        from ros_nodes.episode_recording import EpisodeRecording  # the ROS 2 message packages: the [ros] extra

        recording = EpisodeRecording
    summary = run(config, progress=not args.quiet, recording=recording)

    def cell(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table = Table(title=f"{config.task} / {config.policy}: {summary['episodes']} episodes from seed {config.seed}")
    for column in ("success", "SPL", "plan valid", "env steps", "s / episode"):
        table.add_column(column, justify="right")
    success = cell(summary["success_rate"], ".1%")
    table.add_row(
        success if summary["success_ci95"] is None else f"{success} ± {summary['success_ci95']:.1%}",
        cell(summary["spl"], ".3f"),
        cell(summary["plan_valid_rate"], ".0%"),
        cell(summary["mean_env_steps"], ".0f"),
        cell(summary["mean_seconds"], ".2f"),
    )
    console = Console()
    console.print(table)
    if summary["failure_reasons"]:
        console.print("failed skills: " + ", ".join(f"{k} x{v}" for k, v in summary["failure_reasons"].items()))
    if summary["infrastructure_errors"]:
        errors = ", ".join(f"{k} x{v}" for k, v in summary["infrastructure_errors"].items())
        console.print(f"attempts the infrastructure brought down (not counted as failures): {errors}")
    recordings = f", MCAP recordings in {out}/recordings" if args.record else ""
    console.print(f"records in {out}/episodes, GIFs in {out}/gifs{recordings}, summary in {out}/summary.json")
    if summary["not_run"]:  # not failures of the policy, but the run is incomplete: say so in the exit status
        missing = ", ".join(str(e["episode"]) for e in summary["not_run"])
        console.print(f"[red]{len(summary['not_run'])} episode(s) never ran: {missing}; rerun with --resume[/red]")
        return 1
    return 0


def _plan(args: argparse.Namespace) -> int:
    from embodied.decoding import DECODINGS
    from embodied.model import load_model
    from embodied.plan_timing import scene_requests, time_plan

    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    model = load_model(args.checkpoint)
    (request,) = scene_requests(args.task, args.seed, 1, args.world, args.instruction)
    console = Console()
    console.print(f"[bold]{request.instruction}[/bold]\nobjects the robot knows of ({args.world}): {', '.join(request.objects) or 'none'}")
    table = Table(title=f"plan latency, median of {args.repeat} (image and cloud encoding and the prompt included)")
    for column in ("decoding", "seconds", "tokens", "tokens / s"):
        table.add_column(column, justify="right")
    for name in args.decoding:
        timing = time_plan(model, request, DECODINGS[name], args.repeat)
        console.print(f"\n[bold]{name}[/bold]\n{timing.plan}")
        table.add_row(name, f"{timing.seconds:.2f}", str(timing.tokens), f"{timing.tokens_per_second:.0f}")
    console.print(table)
    return 0


def _ros_up(args: argparse.Namespace) -> int:
    from ros_nodes.graph import graph
    from ros_nodes.up import run_graph

    def pairs(items, separator):
        return dict(_pair(item, separator) for item in items)

    specs = graph(args.mode, pairs(args.set, "="), pairs(args.remap, ":="))
    return run_graph(specs, Path(args.log_dir))


def _replay(args: argparse.Namespace) -> int:
    from ros_nodes.recording import summary

    console = Console()
    if args.info:
        info = summary(args.file)
        table = Table(title=f"{info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['seconds']:.1f} s of simulated time")
        for column in ("topic", "type", "messages"):
            table.add_column(column, justify="right" if column == "messages" else "left")
        for topic, entry in sorted(info["topics"].items()):
            table.add_row(topic, entry["type"], str(entry["messages"]))
        console.print(table)
        return 0
    if args.snapshot:
        from PIL import Image

        from embodied.io import write_atomic
        from ros_nodes.snapshot import snapshot

        picture = Image.fromarray(snapshot(args.file, args.at))
        write_atomic(args.snapshot, lambda tmp: picture.save(tmp, format="PNG"))
        console.print(f"wrote {args.snapshot}")
        return 0
    from ros_nodes.replay import load, play, select

    messages = select(load(args.file, args.salvage, console.print), args.topics)
    published = play(messages, args.rate, not args.no_clock, args.delay, progress=not args.quiet)
    console.print(f"published {sum(published.values())} messages on {len(published)} topics from {args.file}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import time

    from agents import runtime
    from agents.inference import InferenceConfig, start_inference

    config = InferenceConfig(checkpoint=args.checkpoint, max_batch=args.max_batch, decoding=args.decoding)
    if args.replicas < 1:  # checked before Ray starts
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    if args.gpus_per_replica < 0:
        raise ValueError(f"--gpus-per-replica must be >= 0, got {args.gpus_per_replica:g}")
    runtime.start(runtime.RuntimeConfig(address=args.address, num_cpus=args.num_cpus))
    for sig in (signal.SIGINT, signal.SIGTERM):  # after Ray's own handlers: both stop it cleanly
        signal.signal(sig, signal.default_int_handler)
    try:
        router = start_inference(config, args.replicas, args.gpus_per_replica)  # held: the actors live while it does
        print(f"inference router up with {args.replicas} replica(s) at {runtime.address()}; Ctrl-C stops it")
        print(f"plan through it from ROS 2: embodied ros up --set inference=ray --set ray_address={runtime.address()}")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        runtime.shutdown()


def _data(args: argparse.Namespace) -> int:
    from embodied.data.generate import DataConfig, generate

    config = DataConfig(
        train_scenes=args.train_scenes,
        val_scenes=args.val_scenes,
        test_scenes=args.test_scenes,
        compositional_scenes=args.compositional_scenes,
    )
    manifest = generate(args.out, config, workers=args.workers, progress=not args.quiet)
    table = Table(title=f"dataset in {args.out}")
    for column in ("split", "samples", "observations", "objects"):
        table.add_column(column, justify="right")
    for split, rows in manifest["rows"].items():
        table.add_row(split, str(rows["samples"]), str(rows["observations"]), str(rows["objects"]))
    Console().print(table)
    return 0


def _train(args: argparse.Namespace) -> int:
    import yaml

    from embodied.train.config import TrainConfig

    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    overrides = {}
    for item in args.set:
        key, value = _pair(item, "=")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "unparsable"
            raise ValueError(f"--set {item}: the value is not valid YAML ({problem})") from exc
    if args.stage == "rl":  # rollouts, learner and inference are Ray actors: agents/ composes them
        from agents.rl import RLConfig, train_rl

        curve = train_rl(RLConfig.load(args.config, overrides), address=args.address, progress=not args.quiet)
        print("held-out success by iteration: " + ", ".join(f"{r['step']}: {r['eval/success']:.0%}" for r in curve))
        return 0
    config = TrainConfig.load(args.config, overrides)
    if config.stage != args.stage:
        raise ValueError(f"{args.config} configures stage {config.stage!r}, not {args.stage!r}")
    if args.workers > 0:  # Ray Train: agents/ composes training with Ray, embodied/ knows nothing of it
        from agents.train_workers import train_with_ray

        metrics = train_with_ray(config, args.workers, address=args.address, progress=not args.quiet, storage=args.storage)
    else:
        from embodied.train.loop import train

        metrics = train(config, progress=not args.quiet)
    print(f"{config.stage} done: {metrics}; model in {config.out}/model, curves in {config.out}/curves.png")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from embodied.eval.report import format_cell

    if args.eval_command == "vqa":
        from embodied.eval.vqa import evaluate_vqa

        rows = evaluate_vqa(args.checkpoint, str(args.data), args.splits, args.policies, args.out, args.limit, args.seed, progress=not args.quiet)
        metrics = ("exact_match", "refined_exact_match", "questions")
        group = "split"
    elif args.eval_command == "decoding":
        from embodied.eval.decoding import DECODING_METRICS, evaluate_decoding

        rows = evaluate_decoding(args.checkpoint, args.observations, args.out, args.task, args.seed, tuple(args.decodings), not args.quiet)
        metrics, group = DECODING_METRICS, "task"
    elif args.eval_command == "perception":
        from embodied.eval.perception import PERCEPTION_METRICS, PERCEPTION_SEED, evaluate_perception

        seed = PERCEPTION_SEED if args.seed is None else args.seed
        rows = [evaluate_perception(args.scenes, args.out, seed, progress=not args.quiet)["summary"]]
        metrics, group = PERCEPTION_METRICS, "world"
    else:
        from embodied.eval.plan import evaluate_plans, plan_columns

        rows = evaluate_plans(
            args.checkpoint, args.tasks, args.policies, args.episodes, args.out, args.seed, not args.quiet, tuple(args.worlds), tuple(args.decodings),
            tuple(args.phrasings), run=_episode_runner(args.workers, args.address),
        )  # fmt: skip
        metrics = plan_columns(rows)
        group = "task"
    table = Table(title=f"{args.eval_command} evaluation ({args.out}/report.md)")
    for column in ("policy", group, *metrics):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(format_cell(row.get(k)) for k in ("policy", group, *metrics)))
    Console().print(table)
    return 0


def _pair(item: str, separator: str) -> tuple[str, str]:
    if separator not in item:
        raise ValueError(f"expected NAME{separator}VALUE, got {item!r}")
    name, value = item.split(separator, 1)
    return name, value


def build_parser() -> argparse.ArgumentParser:
    from embodied.data.generate import DataConfig
    from embodied.eval.plan import EVAL_SEED
    from embodied.prompts import MODEL_INPUTS
    from embodied.rollout import DECODING_NAMES, POLICIES
    from envs import ENV_IDS
    from envs.paraphrase import PHRASINGS

    parser = argparse.ArgumentParser(prog="embodied", description="Embodied-agent stack: rollouts, evaluation, training.")
    commands = parser.add_subparsers(dest="command", required=True)
    ro = commands.add_parser("rollout", help="run simulated episodes with a policy and report success")
    ro.add_argument("--task", choices=list(ENV_IDS), default="pick_place")
    ro.add_argument("--policy", choices=list(POLICIES), default="oracle")
    ro.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    ro.add_argument("--episodes", type=int, default=10)
    ro.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    ro.add_argument("--out", type=Path, help="output folder (default runs/rollout_TASK_POLICY_seedS)")
    ro.add_argument("--overwrite", action="store_true", help="replace the earlier run's records and GIFs in --out")
    ro.add_argument("--resume", action="store_true", help="continue the (killed) run in --out; finished episodes stay")
    ro.add_argument("--gifs", type=int, default=2, help="record GIFs of the first N episodes")
    ro.add_argument("--workers", type=int, default=1, help="parallel rollout workers (Ray actors, one CPU each, spread over the nodes)")
    ro.add_argument("--address", help=ADDRESS_HELP + "; runs the episodes on Ray workers even with --workers 1")
    ro.add_argument("--replans", type=int, default=0, help="closed loop: plan again after a failed skill, up to N times")
    ro.add_argument(
        "--world", choices=["perceived", "privileged"],
        help="what the skills and planner see: the robot's own perception (default for model, blind, random) or the simulator's state (default for oracle)",
    )  # fmt: skip
    ro.add_argument("--decoding", choices=list(DECODING_NAMES), help=f"model policies (default fast): {DECODING_HELP}")
    ro.add_argument("--phrasing", choices=list(PHRASINGS), default="template", help=PHRASING_HELP)
    ro.add_argument(
        "--record", action="store_true",
        help="write each episode as an MCAP file of ROS 2 messages (sensors, perception, plan, commands) to OUT/recordings; `embodied replay` plays one",
    )  # fmt: skip
    ro.add_argument("--quiet", action="store_true", help="no progress bar")
    ro.set_defaults(run=_rollout)

    pn = commands.add_parser("plan", help="plan one simulated scene with the model and print the plan and its latency")
    pn.add_argument("--task", choices=list(ENV_IDS), default="pick_place")
    pn.add_argument("--seed", type=int, default=EVAL_SEED, help="the scene (default: the first held-out evaluation scene)")
    pn.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    pn.add_argument("--instruction", help="ask this instead of the task's instruction")
    pn.add_argument("--world", choices=["perceived", "privileged"], default="perceived", help="perceived: the robot looks around first and plans over what it found")
    pn.add_argument("--decoding", nargs="+", choices=list(DECODING_NAMES), default=["fast", "reference"], help=DECODING_HELP)
    pn.add_argument("--repeat", type=int, default=3, help="timed calls per decoding path (the median is shown)")
    pn.set_defaults(run=_plan)

    serve = commands.add_parser("serve", help="run model replicas behind a Ray inference router")
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    serve.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    serve.add_argument("--decoding", choices=list(DECODING_NAMES), default="fast", help=DECODING_HELP)
    serve.add_argument("--gpus-per-replica", type=float, default=0.0)
    serve.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    serve.add_argument("--address", help=ADDRESS_HELP)
    serve.set_defaults(run=_serve)

    data = commands.add_parser("data", help="generate (or resume generating) the training and evaluation dataset")
    data.add_argument("--out", type=Path, default=Path("runs/recipe/data"))
    defaults = DataConfig()
    for split in ("train", "val", "test", "compositional"):
        data.add_argument(f"--{split}-scenes", type=int, default=defaults.scenes(split))
    data.add_argument("--workers", type=int, default=2, help="processes rendering scenes")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    data.set_defaults(run=_data)

    tr = commands.add_parser("train", help="a training stage from a YAML config (rerun to resume)")
    tr.add_argument("stage", choices=["ulip", "pretrain", "sft", "rl"])
    tr.add_argument("--config", type=Path, required=True, help="YAML file, e.g. configs/train/sft.yaml")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. steps=10")
    tr.add_argument("--workers", type=int, default=1, help="Ray Train data-parallel workers; 0 trains in this process (not rl)")
    tr.add_argument("--address", help=ADDRESS_HELP)
    tr.add_argument(
        "--storage",
        help="Ray Train's storage for checkpoints and metrics: a folder every node reaches, or s3:// and the like (default OUT/ray, right on one machine); the model is copied into OUT at the end",
    )  # fmt: skip
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(run=_train)

    ev = commands.add_parser("eval", help="evaluate a checkpoint beside baselines").add_subparsers(dest="eval_command", required=True)
    vqa = ev.add_parser("vqa", help="embodied VQA on held-out scenes: exact match per question type")
    vqa.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    vqa.add_argument("--data", type=Path, default=Path("runs/recipe/data"))
    vqa.add_argument("--splits", nargs="+", default=["test", "compositional"], choices=["val", "test", "compositional"])
    vqa.add_argument("--policies", nargs="+", default=["model", "blind", "random", "oracle"], choices=[*MODEL_INPUTS, "random", "oracle"])
    vqa.add_argument("--limit", type=int, help="questions per split (default: all)")
    vqa.add_argument("--seed", type=int, default=0)
    vqa.add_argument("--out", type=Path, default=Path("runs/eval/vqa"))
    vqa.add_argument("--quiet", action="store_true", help="no progress bar")
    vqa.set_defaults(run=_eval)
    pl = ev.add_parser("plan", help="plan, execute and measure success in simulation")
    pl.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    pl.add_argument("--tasks", nargs="+", default=list(ENV_IDS), choices=list(ENV_IDS))
    pl.add_argument("--policies", nargs="+", default=["model", "blind", "random", "oracle"], choices=list(POLICIES))
    pl.add_argument("--episodes", type=int, default=20, help="per task and policy")
    pl.add_argument("--seed", type=int, default=EVAL_SEED, help="episode i uses seed + i (training scenes use 1e6 and up)")
    pl.add_argument("--out", type=Path, default=Path("runs/eval/plan"))
    pl.add_argument(
        "--worlds", nargs="+", default=["privileged"], choices=["perceived", "privileged"],
        help="what the skills and planners see; with both, each policy's perceived success is also given as a share of its privileged",
    )  # fmt: skip
    pl.add_argument(
        "--decodings", nargs="+", default=["fast"], choices=list(DECODING_NAMES),
        help="how the model policies decode; with both, the fast path's success is shown beside the reference's",
    )  # fmt: skip
    pl.add_argument(
        "--phrasings", nargs="+", default=["template"], choices=list(PHRASINGS),
        help=f"{PHRASING_HELP}; with several, each one's success is also given as a share of the template's",
    )  # fmt: skip
    pl.add_argument("--workers", type=int, default=1, help="parallel rollout workers (Ray actors, one CPU each)")
    pl.add_argument("--address", help=ADDRESS_HELP + "; runs the episodes on Ray workers even with --workers 1")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    pl.set_defaults(run=_eval)
    de = ev.add_parser("decoding", help="plan held-out scenes with each decoding path: plans the same as the reference's, and latency")
    de.add_argument("--checkpoint", default="default", help=CHECKPOINT_HELP)
    de.add_argument("--observations", type=int, default=200)
    de.add_argument("--task", choices=list(ENV_IDS), default="pick_place")
    de.add_argument("--seed", type=int, default=EVAL_SEED, help="observation i is the start of episode seed + i")
    de.add_argument("--decodings", nargs="+", choices=[n for n in DECODING_NAMES if n != "reference"], default=["fast", "exact"])
    de.add_argument("--out", type=Path, default=Path("runs/eval/decoding"))
    de.add_argument("--quiet", action="store_true", help="no progress bar")
    de.set_defaults(run=_eval)
    pe = ev.add_parser("perception", help="scan held-out scenes with the robot's own camera: recall, precision, labels, centroid error")
    pe.add_argument("--scenes", type=int, default=200)
    pe.add_argument("--seed", type=int, help="scene i uses seed + i (default 3,500,000: held out from the ULIP training scenes)")
    pe.add_argument("--out", type=Path, default=Path("runs/eval/perception"))
    pe.add_argument("--quiet", action="store_true", help="no progress bar")
    pe.set_defaults(run=_eval)

    ros = commands.add_parser("ros", help="ROS 2 nodes").add_subparsers(dest="ros_command", required=True)
    up = ros.add_parser("up", help="start the sim or hardware node graph (what the launch files start)")
    up.add_argument("mode", nargs="?", choices=["sim", "hardware"], default="sim")
    up.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a node parameter, e.g. planner=oracle")
    up.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="a topic remapping")
    up.add_argument("--log-dir", default="runs/ros_logs")
    up.set_defaults(run=_ros_up)

    rp = commands.add_parser(
        "replay", help="publish a recording (embodied rollout --record) into a running ROS 2 graph, no simulator",
        description="Nodes started with use_sim_time:=true follow the recording's time on /clock.",
    )  # fmt: skip
    rp.add_argument("file", type=Path, help="an MCAP recording")
    rp.add_argument("--rate", type=float, default=1.0, help="times faster than recorded")
    rp.add_argument("--topics", nargs="+", help="only these topics (default: all), e.g. camera/image camera/depth odom")
    rp.add_argument("--delay", type=float, default=1.0, help="seconds to wait for subscribers before the first message")
    rp.add_argument("--no-clock", action="store_true", help="do not publish the recorded time on /clock")
    rp.add_argument("--salvage", action="store_true", help="replay what comes before the damage in a cut-short or damaged file")
    rp.add_argument("--info", action="store_true", help="list the topics, types and message counts, and publish nothing")
    rp.add_argument("--snapshot", type=Path, help="draw the camera frame (with perception's objects) and the map into this PNG, and publish nothing")
    rp.add_argument("--at", type=float, help="with --snapshot: the frame nearest this many seconds in (default: the last)")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(run=_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, InputError) as exc:  # a wrong input: say what, not a traceback
        print(f"embodied {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
