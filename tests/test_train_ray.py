"""Ray Train: the same stage through TorchTrainer, data-parallel (one worker here), on loopback Ray."""

import pytest
import torch
from safetensors.torch import load_file

from embodied.model import ModelConfig
from embodied.train.config import TrainConfig
from embodied.train.loop import train

pytest.importorskip("ray.train")
from agents.train_workers import train_with_ray  # noqa: E402


def test_one_ray_train_worker_learns_exactly_what_local_training_does(tiny_dataset, tmp_path):
    def config(out):
        return TrainConfig(
            stage="sft", data=str(tiny_dataset), out=str(out), model=ModelConfig.tiny(), steps=3, batch_size=2,
            eval_every=3, eval_samples=2, save_every=3, threads=1,
        )

    local = tmp_path / "local"
    train(config(local), progress=False)
    metrics = train_with_ray(config(tmp_path / "ray"), workers=1, progress=False)
    assert metrics["step"] == 3
    ours, theirs = load_file(str(local / "model" / "model.safetensors")), load_file(str(tmp_path / "ray" / "model" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)
    assert (tmp_path / "ray" / "curves.png").is_file()


def test_ray_training_needs_a_worker(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        train_with_ray(TrainConfig(stage="sft", data=str(tiny_dataset), out=str(tmp_path)), workers=0)
