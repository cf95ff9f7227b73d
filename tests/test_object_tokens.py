"""Object tokens: the privileged world's object clouds (envs.object_views), the encoder that makes one token
per object (embodied.encoders.objects), the model's ``<objects>`` placeholder, the input ablations, and
where the frozen ULIP tower's weights come from."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from embodied.encoders.objects import ObjectEncoder, ObjectTokensConfig, describe, geometry, nearest, tower_weights
from embodied.encoders.pointcloud import PointEncoderConfig, align_footprint
from embodied.model import EmbodiedModel, ModelConfig
from embodied.model_planner import ModelPlanner, env_request
from embodied.prompts import (
    IMAGE,
    INPUTS,
    MODEL_INPUTS,
    OBJECTS,
    POINTS,
    PlanRequest,
    plan_sample,
    vqa_sample,
    with_inputs,
)
from embodied.train.language import freeze_all_but
from envs.object_views import to_robot_frame
from envs.scene import COLOURS

POINTS_CONFIG = PointEncoderConfig(num_groups=8, group_size=8, hidden_size=32, layers=1, heads=2)


def _box(centre, half, colour=(1.0, 0.0, 0.0), n=200, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = np.asarray(centre) + rng.uniform(-1, 1, (n, 3)) * np.asarray(half)
    return np.hstack([xyz, np.tile(colour, (n, 1))]).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return ObjectEncoder(ObjectTokensConfig(max_objects=3, bands=2, hidden_size=16), POINTS_CONFIG, 24)


# -- the privileged world's clouds -------------------------------------------------------------------------


def test_robot_frame_puts_what_is_ahead_on_x_and_what_is_left_on_y():
    cloud = np.array([[1.0, 2.0, 0.5, 0.1, 0.2, 0.3], [0.0, 3.0, 0.5, 0.1, 0.2, 0.3]], np.float32)
    robot = to_robot_frame(cloud, x=1.0, y=1.0, yaw=np.pi / 2)  # at (1, 1) facing +y
    np.testing.assert_allclose(robot[:, :3], [[1.0, 0.0, 0.5], [2.0, 1.0, 0.5]], atol=1e-6)
    np.testing.assert_array_equal(robot[:, 3:], cloud[:, 3:])


def test_every_object_is_seen_where_it_is_and_looking_changes_nothing(make_env):
    env = make_env("sets", sensors=("rgb", "points")).unwrapped
    twin = make_env("sets", sensors=("rgb", "points")).unwrapped
    env.reset(seed=500_002)
    twin.reset(seed=500_002)
    clouds = env.object_clouds()
    assert env.object_clouds() is not clouds  # transformed anew...
    assert env._survey[0] == env.steps  # ...from the one survey of this step
    robot = env.robot_state()
    assert set(clouds) == set(env.scene.object_names)
    for obj in env.scene.objects:
        expected = to_robot_frame(np.array([[obj.x, obj.y, obj.z]]), robot.x, robot.y, robot.yaw)[0]
        centre = clouds[obj.name][:, :3].mean(axis=0)
        assert np.hypot(*(centre[:2] - expected[:2])) < 0.03, obj.name
        assert np.abs(clouds[obj.name][:, 3:] - np.array(COLOURS[obj.colour])).mean() < 0.35  # its colour, shaded
    action = np.array([0.5, 0.0, 0.2, 0.0, 0.0, 0.0])
    for _ in range(3):
        obs, *_ = env.step(action)
        twin_obs, *_ = twin.step(action)
    np.testing.assert_array_equal(obs["rgb"], twin_obs["rgb"])
    np.testing.assert_array_equal(obs["proprio"], twin_obs["proprio"])


# -- the encoder ---------------------------------------------------------------------------------------------


def test_one_token_per_object_nearest_first_whatever_the_order_given(encoder):
    clouds = [_box((d, 0.2 * d, 0.8), (0.03, 0.03, 0.03), seed=d) for d in (3, 1, 2, 4)]
    tokens, words = encoder(clouds)
    assert tokens.shape == (3, 24) and len(words) == 3  # max_objects of four
    torch.testing.assert_close(encoder(clouds[::-1])[0], tokens)
    torch.testing.assert_close(encoder([clouds[1]])[0][0], tokens[0])  # the nearest comes first
    assert [w.split(": ")[1].split(", near ")[0] for w in words] == ["100 ahead, 20 left", "200 ahead, 40 left", "300 ahead, 60 left"]
    second = words[1].split(" cm:")[0].rsplit(" ", 1)[0].strip()
    assert words[0].endswith(f", near {second};")  # the one at 2 m is nearest the one at 1 m
    empty, none = encoder([])
    assert empty.shape == (0, 24) and none == []


def test_size_and_place_change_the_token_the_normalised_shape_does_not_see(encoder):
    small = _box((1.0, 0.0, 0.8), (0.03, 0.03, 0.03))
    large = _box((1.0, 0.0, 0.8), (0.06, 0.06, 0.06))
    moved = _box((1.0, 0.5, 0.8), (0.03, 0.03, 0.03))
    a, b, c = (encoder([x])[0][0] for x in (small, large, moved))
    assert not torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-4)


def test_a_turned_object_reads_the_same_as_a_square_one():
    box = torch.tensor(_box((0.0, 0.0, 0.8), (0.05, 0.02, 0.03), n=400))
    angle = 0.6
    turned = box.clone()
    turned[:, 0] = box[:, 0] * np.cos(angle) - box[:, 1] * np.sin(angle)
    turned[:, 1] = box[:, 0] * np.sin(angle) + box[:, 1] * np.cos(angle)
    squared = align_footprint(turned)
    np.testing.assert_allclose(np.ptp(squared[:, :2].numpy(), axis=0), np.ptp(box[:, :2].numpy(), axis=0), atol=0.004)
    assert np.ptp(turned[:, 0].numpy()) * np.ptp(turned[:, 1].numpy()) > 1.5 * 0.10 * 0.04  # turned, its box was larger
    torch.testing.assert_close(geometry(turned)[3:], geometry(box)[3:], atol=0.002, rtol=0)
    torch.testing.assert_close(geometry(box)[3:], torch.tensor([0.05, 0.02, 0.03]), atol=0.002, rtol=0)


def test_the_words_say_name_width_and_place():
    box = torch.tensor([0.62, -0.12, 0.8, 0.025, 0.025, 0.025])
    assert describe("red cube", box) == " red cube 5 cm: 62 ahead, 12 right;"
    assert describe("blue bin", torch.tensor([1.5, 0.3, 0.8, 0.13, 0.13, 0.05])) == " blue bin 26 cm: 150 ahead, 30 left;"
    assert describe("red cube", box, "blue bin") == " red cube 5 cm: 62 ahead, 12 right, near blue bin;"


def test_the_nearest_object_is_nearest_on_the_floor_whatever_the_heights():
    boxes = torch.tensor([[0.0, 0.0, 0.8], [0.3, 0.0, 0.8], [0.0, 0.2, 2.0], [2.0, 2.0, 0.8]])
    boxes = torch.cat([boxes, torch.full((4, 3), 0.03)], dim=1)
    assert nearest(boxes) == [2, 0, 0, 1]
    assert nearest(boxes[:1]) == [None] and nearest(boxes[:0]) == []


def test_the_shipped_ulip_tower_names_the_objects_as_the_robot_sees_them(make_env):
    """The clouds in the robot's frame, turned by its heading: before squaring them to the axes a fifth of the
    cubes read as cylinders and bins as bowls."""
    from embodied.perception.naming import ObjectNamer

    namer = ObjectNamer()
    env = make_env("eqa", sensors=("rgb",)).unwrapped
    right = total = 0
    for seed in range(500_000, 500_008):
        env.reset(seed=seed)
        clouds = env.object_clouds()
        right += sum(label.name == name for name, label in zip(clouds, namer.name(list(clouds.values()))))
        total += len(clouds)
    assert right >= 0.95 * total, f"{right} of {total}"


def test_the_model_reads_each_token_then_its_words():
    torch.manual_seed(0)
    objects = [_box((1.0, 0.0, 0.8), (0.03,) * 3), _box((2.0, 0.5, 0.8), (0.03,) * 3, seed=1)]
    lengths = {}
    for words in (True, False):
        config = dataclasses.replace(ModelConfig.tiny(), objects=ObjectTokensConfig(max_objects=4, bands=2, hidden_size=32, words=words))
        model = EmbodiedModel(config).eval()
        ((embeds, _),) = model._sequences([plan_sample("go to the red cube", objects=objects, plan="1. done()")])
        lengths[words] = len(embeds)
        said = model.object_encoder(objects)[1]
    assert said[0] == ""
    count = sum(len(model.tokenizer(w, add_special_tokens=False).input_ids) for w in EmbodiedModel(ModelConfig.tiny()).object_encoder(objects)[1])
    assert lengths[True] - lengths[False] == count > 2 * 8


def test_only_the_projector_learns(encoder):
    model_like = torch.nn.Module()
    model_like.object_encoder = encoder
    freeze_all_but(model_like, ("object_encoder",))
    encoder.zero_grad(set_to_none=True)
    encoder([_box((1.0, 0.0, 0.8), (0.03, 0.03, 0.03))])[0].sum().backward()
    assert all(p.grad is not None for p in encoder.projector.parameters())
    assert all(not p.requires_grad and p.grad is None for p in encoder.tower.parameters())


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((50, 6), np.nan, np.float32), r"objects\[1\] has 0 finite points"),
        (np.zeros((50, 3), np.float32), r"objects\[1\] must be an \(N, 6\) array"),
        (np.full((50, 6), 1e9, np.float32), r"objects\[1\] has 1e\+09"),
    ],
)
def test_a_bad_cloud_is_named(encoder, bad, message):
    with pytest.raises(ValueError, match=message):
        encoder([_box((1.0, 0.0, 0.8), (0.03, 0.03, 0.03)), bad])


# -- prompts and ablations ----------------------------------------------------------------------------------


def test_with_inputs_shows_exactly_what_is_asked():
    image, cloud, objects = np.zeros((8, 8, 3), np.uint8), np.zeros((64, 6), np.float32), [_box((1, 0, 0.8), (0.03,) * 3)]
    request = PlanRequest("put the ball in the bin", image, cloud, ["red ball"], object_clouds=objects)
    for policy, shown in MODEL_INPUTS.items():
        sample = request.sample(INPUTS if shown is None else shown, plan="1. done()")
        user = sample.turns[0][0]
        assert user.endswith("put the ball in the bin") and sample.turns[0][1] == "1. done()"
        assert (IMAGE in user, POINTS in user, OBJECTS in user) == (len(sample.images) == 1, len(sample.clouds) == 1, len(sample.objects) == 1)
        assert (OBJECTS in user) == (shown is None or "objects" in shown), policy
        assert (IMAGE in user) == (shown is None or "image" in shown), policy
    question = vqa_sample("what colour is the cube?", image, cloud, "red")
    blind = with_inputs(question, ())
    assert blind.turns == [("Question: what colour is the cube? Answer briefly.", "red")] and blind.images == []
    assert with_inputs(question, ("image", "cloud")).turns == question.turns  # nothing to add: unchanged
    with pytest.raises(ValueError, match="unknown inputs"):
        with_inputs(question, ("depth",))


def test_a_model_without_object_tokens_says_so_and_planners_leave_them_out():
    config = dataclasses.replace(ModelConfig.tiny(), objects=ObjectTokensConfig(enabled=False))
    model = EmbodiedModel(config).eval()
    assert model.inputs == ("image", "cloud") and model.object_encoder is None
    sample = plan_sample("go to the red cube", objects=[_box((1, 0, 0.8), (0.03,) * 3)])
    with pytest.raises(ValueError, match="no object tokens"):
        model([sample])
    planner = ModelPlanner(model=model, policy="objects_only", max_new_tokens=8)
    assert planner.inputs == () and planner.sensors == ()  # the ablation shows what the model has: nothing
    with pytest.raises(ValueError, match="unknown model policy"):
        ModelPlanner(model=model, policy="deaf")


def test_a_planner_reads_the_episodes_object_clouds(make_env):
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny()).eval()
    env = make_env("refer", sensors=("rgb", "points")).unwrapped
    obs, _ = env.reset(seed=500_000)
    request = env_request(obs, env)
    assert list(request.objects) == env.known_objects() and len(request.object_clouds) == len(request.objects)
    plan = ModelPlanner(model=model, policy="objects_only", max_new_tokens=24).plan(obs, env)
    assert plan.startswith("thought:")  # the constrained decoder wrote a plan from the object tokens alone


# -- weights ---------------------------------------------------------------------------------------------------


def test_a_ulip_export_fills_the_frozen_tower_and_a_later_checkpoint_keeps_it():
    torch.manual_seed(0)
    model = EmbodiedModel(ModelConfig.tiny())
    tower = model.object_encoder.tower
    ulip = {f"point_encoder.{k}": torch.randn_like(v) for k, v in tower.encoder.state_dict().items()}
    ulip |= {"point_head.weight": torch.randn_like(tower.head.weight), "point_head.bias": torch.randn_like(tower.head.bias)}
    loaded = model.load_matching(ulip)
    assert "object_encoder.tower.head.weight" in loaded and "point_encoder.cls_token" in loaded
    torch.testing.assert_close(tower.head.weight, ulip["point_head.weight"])
    assert tower_weights(ulip).keys() == tower.state_dict().keys()
    later = {k: torch.zeros_like(v) for k, v in model.point_encoder.state_dict().items()}
    model.load_matching({f"point_encoder.{k}": v for k, v in later.items()})  # an SFT run's scene encoder: no head
    torch.testing.assert_close(tower.head.weight, ulip["point_head.weight"])
    torch.testing.assert_close(tower.encoder.cls_token, ulip["point_encoder.cls_token"])


def test_a_checkpoint_from_before_object_tokens_loads_without_them(tmp_path):
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig.tiny(), objects=ObjectTokensConfig(enabled=False))
    folder = EmbodiedModel(config).save_pretrained(tmp_path / "old")
    written = json.loads((folder / "config.json").read_text())
    del written["objects"]  # what checkpoints wrote before object tokens
    (folder / "config.json").write_text(json.dumps(written))
    model = EmbodiedModel.from_pretrained(folder)
    assert model.object_encoder is None and model.inputs == ("image", "cloud")


def test_a_checkpoint_from_before_object_words_reads_without_them(tmp_path):
    torch.manual_seed(0)
    folder = EmbodiedModel(ModelConfig.tiny()).save_pretrained(tmp_path / "old")
    written = json.loads((folder / "config.json").read_text())
    del written["objects"]["words"], written["objects"]["nearest"]
    (folder / "config.json").write_text(json.dumps(written))
    assert EmbodiedModel.from_pretrained(folder).config.objects.words is False
    assert EmbodiedModel.from_pretrained(folder).config.objects.nearest is False  # nor the nearest object
