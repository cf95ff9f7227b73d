"""The gymnasium environments: API conformance, observations, determinism, actions, episode ends, config."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.env import SENSORS, EmbodiedEnv, EnvConfig

ALL_SENSORS = ("rgb", "depth", "points", "segmentation")


def _xy(obs) -> np.ndarray:
    return obs["proprio"][:2].copy()


@pytest.mark.parametrize("env_id", sorted(envs.ENV_IDS.values()))
def test_check_env(env_id):
    env = gym.make(env_id, width=64, height=64, num_points=256)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded xyz / proprio boxes
            check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_registered_ids():
    assert set(envs.ENV_IDS) == {"object_nav", "pick_place", "rearrange", "eqa", "refer", "sets", "conditional", "refuse"} == set(envs.TASKS)
    for task, env_id in envs.ENV_IDS.items():
        assert gym.spec(env_id).kwargs["task"] == task


def test_observation_keys_shapes_dtypes(make_env):
    env = make_env("eqa", sensors=ALL_SENSORS, width=80, height=48, num_points=200)
    obs, info = env.reset(seed=1)
    assert set(obs) == {"proprio", "instruction", "rgb", "depth", "points", "point_ids"}
    expected = {
        "proprio": ((8,), np.float32),
        "rgb": ((48, 80, 3), np.uint8),
        "depth": ((48, 80, 1), np.float32),
        "points": ((200, 6), np.float32),
        "point_ids": ((200,), np.int32),
    }
    for key, (shape, dtype) in expected.items():
        assert obs[key].shape == shape, key
        assert obs[key].dtype == dtype, key
    assert isinstance(obs["instruction"], str) and obs["instruction"] == env.unwrapped.task.instruction
    assert env.observation_space.contains(obs)
    assert info["task"] == "eqa" and info["seed"] == 1 and info["steps"] == 0 and info["success"] is False


def test_sensors_select_the_observations(make_env):
    obs, _ = make_env("pick_place", sensors=("depth",)).reset(seed=0)
    assert set(obs) == {"proprio", "instruction", "depth"}
    obs, _ = make_env("pick_place", sensors=()).reset(seed=0)
    assert set(obs) == {"proprio", "instruction"}


def test_instructions_fit_the_text_space(make_env):
    for task in envs.ENV_IDS:
        env = make_env(task)
        for seed in range(15):
            obs, _ = env.reset(seed=seed)
            assert env.observation_space.contains(obs), (task, seed, obs["instruction"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_labels_objects_in_front(make_env, seed):
    env = make_env("eqa", sensors=ALL_SENSORS)
    obs, _ = env.reset(seed=seed)
    scene = env.unwrapped.scene
    table = scene.tables[0]
    robot = env.unwrapped.world_state().robot
    bearing = np.arctan2(table.y - robot.y, table.x - robot.x)
    assert abs((bearing - robot.yaw + np.pi) % (2 * np.pi) - np.pi) < 1e-6  # EQA starts facing its table
    ids = obs["point_ids"]
    assert ids.min() >= -1 and ids.max() < len(scene.objects)
    labelled = sorted(set(ids.tolist()) - {-1})
    assert labelled, "no object points although the robot faces the table"
    for index in labelled:  # each labelled point lies on its object, in the world frame
        o = scene.objects[index]
        points = obs["points"][ids == index]
        assert np.all(np.hypot(points[:, 0] - o.x, points[:, 1] - o.y) <= 1.45 * o.half + 0.02), o.name
        assert np.all(points[:, 2] >= table.height - 0.01), o.name
        assert np.all(points[:, 2] <= table.height + o.height + 0.02), o.name


def test_same_seed_same_observations(make_env):
    first, second = make_env("pick_place", sensors=ALL_SENSORS), make_env("pick_place", sensors=ALL_SENSORS)
    a, _ = first.reset(seed=11)
    b, _ = second.reset(seed=11)
    first.step(np.ones(6))
    again, _ = first.reset(seed=11)  # the same env, after stepping, resets to the same episode
    for other in (b, again):
        assert other["instruction"] == a["instruction"]
        for key in ("rgb", "depth", "points", "point_ids", "proprio"):
            np.testing.assert_array_equal(other[key], a[key], err_msg=key)
    c, _ = second.reset(seed=12)
    assert not np.array_equal(c["points"], a["points"])


def test_points_are_finite_and_in_the_world_frame(make_env):
    env = make_env("pick_place", sensors=("points",))
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        room = env.unwrapped.scene.room_half
        xyz, rgb = obs["points"][:, :3], obs["points"][:, 3:]
        assert np.all(np.isfinite(obs["points"]))
        assert np.all((xyz[:, 2] >= -0.05) & (xyz[:, 2] <= 2.0))
        assert np.all(np.abs(xyz[:, :2]) <= room + 0.02)
        assert np.all((rgb >= 0) & (rgb <= 1))
        assert np.min(xyz[:, 2]) < 0.05  # the floor (z = 0) is in view


@pytest.mark.parametrize(
    "action",
    [
        np.full(6, np.nan),
        np.array([1.0, 0, 0, 0, 0, np.nan]),
        np.array([np.inf, 0, 0, 0, 0, 0]),
        np.ones(5),
        np.ones(7),
        np.ones(0),
        np.float64(1.0),
    ],
    ids=["nan", "one-nan", "inf", "short", "long", "empty", "scalar"],
)
def test_invalid_actions_hold_still(make_env, action):
    env = make_env("object_nav")
    obs, _ = env.reset(seed=4)
    for _ in range(3):
        obs2, reward, terminated, truncated, info = env.step(action)
        assert info["invalid_action"] is True
    np.testing.assert_allclose(_xy(obs2), _xy(obs), atol=1e-5)
    np.testing.assert_allclose(obs2["proprio"][4:], obs["proprio"][4:], atol=1e-3)  # joints and gripper too
    assert info["path_length"] < 1e-4
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_a_matrix_action_is_invalid(make_env):
    env = make_env("object_nav")
    env.reset(seed=4)
    assert not env.action_space.contains(np.zeros((2, 3), np.float32))
    *_, info = env.step(np.zeros((2, 3)))
    assert info["invalid_action"] is True


def test_valid_action_moves_and_is_not_flagged(make_env):
    env = make_env("object_nav")
    obs, _ = env.reset(seed=4)
    for _ in range(3):
        obs2, *_, info = env.step(np.array([1.0, 0, 0, 0, 0, -1]))
    assert info["invalid_action"] is False
    assert np.linalg.norm(_xy(obs2) - _xy(obs)) > 0.05
    assert info["path_length"] > 0.05


def test_out_of_range_actions_are_clipped(make_env):
    clipped, wild = make_env("object_nav"), make_env("object_nav")
    clipped.reset(seed=5)
    wild.reset(seed=5)
    for raw in ([3.0, -7.0, 2.0, 9.0, -9.0, 5.0], [-4.0, 4.0, -4.0, -4.0, 4.0, -4.0]):
        a, *_ = clipped.step(np.clip(raw, -1, 1))
        b, *_, info = wild.step(np.array(raw))
        assert info["invalid_action"] is False
        np.testing.assert_array_equal(b["proprio"], a["proprio"])


def test_submit_ends_the_episode_with_reward_equal_to_success(make_env):
    env = make_env("eqa")
    env.reset(seed=3)
    correct = env.unwrapped.task.answer
    _, reward, terminated, truncated, info = env.unwrapped.submit("definitely not " + correct)
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert info["answer"] == "definitely not " + correct

    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.unwrapped.submit(correct.upper() + "!")  # answers are normalised
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    _, reward, terminated, *_ = env.step(np.zeros(6))  # stepping an ended episode keeps it ended
    assert terminated is True


def test_submit_without_doing_the_task_fails(make_env):
    env = make_env("pick_place")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.unwrapped.submit()
    assert terminated is True and reward == 0.0 and info["success"] is False


def test_truncation_at_max_steps(make_env):
    env = make_env("pick_place", max_steps=3)
    env.reset(seed=0)
    for step in range(1, 4):
        _, reward, terminated, truncated, info = env.step(np.zeros(6))
        assert terminated is False
        assert truncated is (step == 3)
        assert info["steps"] == step
    assert reward == float(info["success"]) == 0.0


def test_task_step_limits(make_env):
    limits = {task: make_env(task).unwrapped.max_steps for task in envs.ENV_IDS}
    assert limits == {"object_nav": 300, "pick_place": 700, "rearrange": 2400, "eqa": 200, "refer": 700, "sets": 2400, "conditional": 700, "refuse": 200}


def test_step_before_reset_raises():
    env = EmbodiedEnv(task="eqa", sensors=())
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(6))
        with pytest.raises(RuntimeError, match="reset"):
            env.submit()
    finally:
        env.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "fly_to_moon"}, "unknown task 'fly_to_moon'"),
        ({"sensors": ("rgb", "lidar")}, "unknown sensors \\['lidar'\\]"),
        ({"sensors": ("segmentation",)}, "'segmentation' sensor"),
        ({"width": 8}, "image size"),
        ({"height": 2048}, "image size"),
        ({"num_points": 0}, "num_points"),
        ({"voxel_size": 0.0}, "voxel_size"),
        ({"max_depth": -1.0}, "max_depth"),
        ({"control_dt": 0.0}, "control_dt"),
        ({"max_steps": 0}, "max_steps"),
        ({"backend": "bullet"}, "unknown backend 'bullet'"),
    ],
)
def test_env_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnvConfig(**kwargs)
    with pytest.raises(ValueError, match=message):  # gym.make reaches the same validation
        gym.make(envs.ENV_IDS["pick_place"], **kwargs)


def test_env_config_accepts_every_sensor():
    assert EnvConfig(sensors=SENSORS).sensors == SENSORS


def test_bad_render_mode():
    with pytest.raises(ValueError, match="render_mode"):
        EmbodiedEnv(render_mode="human", sensors=())


def test_render(make_env):
    plain = make_env("eqa")
    plain.reset(seed=0)
    assert plain.render() is None  # no render mode
    env = make_env("eqa", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320 + 240, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # a picture, not a blank


FORKED_VECTOR_ENV = """
import gymnasium as gym, numpy as np, envs
env = gym.make("embodied/PickPlace-v0", width=64, height=64, num_points=256)
first, _ = env.reset(seed=0)  # the parent renders before it forks, as a user checking spaces does
vec = gym.make_vec("embodied/PickPlace-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"context": "fork"},
                   width=64, height=64, num_points=256)
obs, _ = vec.reset(seed=[1, 2])
obs, *_ = vec.step(np.zeros((2, 6), np.float32))
assert obs["rgb"].shape == (2, 64, 64, 3) and obs["rgb"].any(), "the forked envs rendered black"
vec.close()
again, _ = env.reset(seed=0)
assert np.array_equal(first["rgb"], again["rgb"]), "the parent renders differently after the fork"
print("ok")
"""


@pytest.mark.parametrize("gl", ["egl", "osmesa"])
def test_envs_forked_after_the_parent_rendered_do_not_hang(gl):
    """gymnasium's AsyncVectorEnv forks; GL state inherited from a parent that rendered used to hang the child."""
    import os
    import signal
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LP_NUM_THREADS")}
    process = subprocess.Popen(
        [sys.executable, "-c", FORKED_VECTOR_ENV], env={**environment, "MUJOCO_GL": gl},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the forked envs too
        process.communicate()
        pytest.fail(f"the vector env hung with MUJOCO_GL={gl}")
    assert process.returncode == 0 and output.strip().endswith("ok"), output
