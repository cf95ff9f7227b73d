"""Evaluation scripts: VQA and planning reports with their baselines, on a tiny dataset and model."""

import json

import pytest

from embodied.cli import main
from embodied.eval.plan import evaluate_plans, mean_over_tasks
from embodied.eval.vqa import evaluate_vqa
from embodied.model_planner import ModelPlanner
from envs.plan import parse_plan

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def vqa_report(tiny_dataset, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa")
    rows = evaluate_vqa(str(tiny_checkpoint), str(tiny_dataset), ["test", "compositional"], ["model", "blind", "random", "oracle"], out, limit=5)
    return out, rows


def test_vqa_report_has_every_policy_split_and_question_type(vqa_report):
    out, rows = vqa_report
    assert {r["policy"] for r in rows} == {"model", "blind", "random", "oracle"}
    assert {r["split"].split("/")[0] for r in rows} == {"test", "compositional"}
    assert {"test/all", "compositional/all"} <= {r["split"] for r in rows}
    for name in ("report.json", "report.md", "answers.jsonl"):
        assert (out / name).stat().st_size > 0
    assert (out / "report.png").read_bytes().startswith(PNG)
    assert "| oracle | test/all | 100.0% |" in (out / "report.md").read_text()
    for split in ("test", "compositional"):  # a sheet of observations with their questions and replies
        assert (out / f"examples_{split}.png").read_bytes().startswith(PNG)


def test_vqa_scores_are_consistent_with_the_answers(vqa_report):
    out, rows = vqa_report
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 * sum(r["questions"] for r in rows if r["policy"] == "oracle" and r["split"].endswith("/all"))
    for row in rows:
        assert 0.0 <= row["exact_match"] <= row["refined_exact_match"] <= 1.0
        if row["policy"] == "oracle":
            assert row["exact_match"] == 1.0
    assert all(isinstance(a["reply"], str) for a in answers if a["policy"] in ("model", "blind"))


def test_vqa_evaluation_is_reproducible(vqa_report, tiny_dataset, tiny_checkpoint, tmp_path):
    out, rows = vqa_report
    again = evaluate_vqa(str(tiny_checkpoint), str(tiny_dataset), ["test", "compositional"], ["model", "blind", "random", "oracle"], tmp_path, limit=5)
    assert again == rows


def test_vqa_rejects_an_unknown_policy(tiny_dataset, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown VQA policies"):
        evaluate_vqa(str(tiny_checkpoint), str(tiny_dataset), ["test"], ["psychic"], tmp_path)


def test_plan_report_puts_the_model_beside_its_baselines(tiny_checkpoint, tmp_path):
    rows = evaluate_plans(str(tiny_checkpoint), ["object_nav", "eqa"], ["model", "blind", "random", "oracle"], 1, tmp_path, progress=False)
    assert len(rows) == 8 + 4  # each policy on each task, then each policy's mean over the tasks
    oracle = [r for r in rows if r["policy"] == "oracle"]
    assert all(r["success"] == 1.0 and r["of_oracle"] == 1.0 and r["ci95"] == 0.0 for r in oracle)
    for policy in ("model", "blind", "random"):
        *tasks, mean = [r for r in rows if r["policy"] == policy]
        assert mean["task"] == "mean" and mean["episodes"] == 2
        assert mean["of_oracle"] == pytest.approx(sum(r["of_oracle"] for r in tasks) / 2)
    model = [r for r in rows if r["policy"] in ("model", "blind")]
    assert all(r["plan_valid"] in (0.0, 1.0) for r in model)
    assert (tmp_path / "report.png").read_bytes().startswith(PNG)
    assert "| oracle | object_nav | 100.0% |" in (tmp_path / "report.md").read_text()
    assert list((tmp_path / "rollouts" / "object_nav_model" / "gifs").glob("*.gif"))


def test_plan_report_mean_weighs_tasks_alike_and_combines_their_margins():
    task = {"success": 0.5, "of_oracle": 0.5, "plan_valid": 1.0, "episodes": 40, "ci95": 0.16}
    mean = mean_over_tasks("model", [task, {**task, "success": 1.0, "of_oracle": 1.0, "episodes": 10, "ci95": 0.0}])
    assert mean["success"] == mean["of_oracle"] == 0.75 and mean["episodes"] == 50
    assert mean["ci95"] == pytest.approx(0.08)  # independent tasks: sqrt(0.16^2 + 0^2) / 2


def test_blind_planner_sees_nothing_perceived_and_still_writes_a_plan(tiny_checkpoint, make_env, monkeypatch):
    planner = ModelPlanner(str(tiny_checkpoint), policy="blind", max_new_tokens=24)
    assert planner.sensors == () and planner.name == "blind"
    env = make_env("pick_place")
    obs, _ = env.reset(seed=3)
    assert "rgb" not in obs
    parse_plan(planner.plan(obs, env))
    # not even the known objects' names reach its decoder; the model policy's decoder gets them
    decoded = []
    for policy in ("blind", "model"):
        other = ModelPlanner(model=planner.model, policy=policy, max_new_tokens=24)
        monkeypatch.setattr(other.model, "plan", lambda samples, objects, *args, **kwargs: decoded.append(objects) or [""])
        other.plan(obs, env)
    assert decoded == [[None], [env.unwrapped.known_objects()]]


def test_eval_command_line(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    code = main(["eval", "vqa", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_dataset), "--splits", "test",
                 "--policies", "oracle", "random", "--limit", "3", "--out", str(tmp_path)])
    assert code == 0
    assert "oracle" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["rows"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ("eval plan --checkpoint {tmp}/nowhere --policies model --out {tmp}/out", "not a checkpoint: {tmp}/nowhere/config.json is missing"),
        ("eval vqa --data {tmp}/nowhere --policies oracle --out {tmp}/out", "{tmp}/nowhere is not a dataset"),
        ("train sft --config {tmp}/nowhere.yaml --quiet", "no training config at {tmp}/nowhere.yaml"),
    ],
)
def test_command_line_reports_a_missing_input_in_one_line(tmp_path, capsys, argv, message):
    argv = argv.format(tmp=tmp_path).split()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"embodied {argv[0]}: error: ") and message.format(tmp=tmp_path) in error
    assert len(error.strip().splitlines()) == 1  # no traceback
