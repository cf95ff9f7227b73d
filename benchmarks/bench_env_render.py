"""Env step + RGB-D render + point cloud at 128x128 against raw mujoco.Renderer RGB+depth of the same scene."""

from __future__ import annotations

import numpy as np

from benchmarks.run import Ratio, interleaved
from envs.backend import HEAD_CAMERA
from envs.env import EmbodiedEnv


def run() -> list[Ratio]:
    env = EmbodiedEnv(task="pick_place", width=128, height=128, sensors=("rgb", "depth", "points"))
    env.reset(seed=0)
    backend = env.backend
    import mujoco

    renderer = mujoco.Renderer(backend.model, 128, 128)
    action = np.array([0.0, 0.0, 0.3, 0.0, -1.0, -1.0], np.float32)  # turn on the spot: the view keeps changing

    def raw():
        renderer.update_scene(backend.data, HEAD_CAMERA)
        renderer.render()
        renderer.enable_depth_rendering()
        renderer.render()
        renderer.disable_depth_rendering()

    def step():
        env.step(action)

    try:
        ratio, env_rate, raw_rate = interleaved(step, raw)
    finally:
        renderer.close()
        env.close()
    detail = (
        f"env {env_rate:.0f} steps/s (obs: rgb, depth, {env.config.num_points} points), raw {raw_rate:.0f} renders/s; "
        "medians of 1500 calls, alternated call by call"
    )
    return [Ratio("env step+render+cloud / raw render", ratio, ">= 0.7", detail)]
