"""The PaLM-E-style embodied model: image and point-cloud encoders, input projectors, and a frozen
pretrained language model adapted with LoRA, reading multimodal sentences and writing plans.

    model = load_model()          # the checkpoint shipped with the package; "tiny": untrained, for tests
    plans = model.plan([plan_sample("put the red cube in the green bowl", rgb, points)], [["red cube", "green bowl"]])

Checkpoints are folders of ``config.json`` + ``model.safetensors`` holding only what was trained
(encoders, projectors, LoRA); the backbone is stored by reference.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from embodied.backbone import SMOLLM2, TINY, add_lora, causal_lm, int8_backbone, load_backbone
from embodied.config import config_from_dict
from embodied.decoding import PLAN_TOKENS, DecodingConfig, EarlierReplies, PlanConstraint, decode, prefix_cache, repair_plan
from embodied.encoders.image import ImageEncoder, ImageEncoderConfig
from embodied.encoders.objects import ObjectEncoder, ObjectTokensConfig, tower_weights
from embodied.encoders.pointcloud import PointEncoder, PointEncoderConfig, prepare_cloud
from embodied.errors import CheckpointError
from embodied.inputs import as_image, check_tokens
from embodied.io import atomic_dir
from embodied.projectors import ProjectorConfig, build_projector
from embodied.prompts import IMAGE, INPUTS, OBJECTS, PLACEHOLDER_RE, POINTS, Sample
from embodied.threads import torch_threads

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "default"  # made by `make recipe`


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8  # 0 turns LoRA off
    alpha: int = 16
    dropout: float = 0.0  # 0.05 cost an eighth of a CPU training step (a random mask per adapted input)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self):
        if self.rank < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("LoRA needs rank >= 0, alpha > 0 and dropout in [0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = SMOLLM2  # "smollm2-135m", "tiny", or an HF causal LM id / folder
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    points: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    image_projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    point_projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    num_points: int = 1024  # every cloud is resampled to this many points
    objects: ObjectTokensConfig = field(default_factory=ObjectTokensConfig)  # one token per known object

    def __post_init__(self):
        if self.num_points < self.points.group_size:
            raise ValueError(f"num_points {self.num_points} must be >= the group size {self.points.group_size}")

    @classmethod
    def tiny(cls) -> ModelConfig:
        """Small enough for unit tests: a two-layer random Llama and one-layer encoders."""
        return cls(
            backbone=TINY,
            image=ImageEncoderConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2),
            points=PointEncoderConfig(num_groups=8, group_size=8, hidden_size=32, layers=1, heads=2),
            image_projector=ProjectorConfig("resampler", num_queries=4, layers=1, heads=2),
            point_projector=ProjectorConfig("mlp"),
            lora=LoraSettings(rank=4, alpha=8, dropout=0.0),
            num_points=64,
            objects=ObjectTokensConfig(max_objects=4, bands=2, hidden_size=32),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from plain data, rejecting unknown keys by name (a typo must not pass silently)."""
        return config_from_dict(cls, data, "config")


class EmbodiedModel(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        llm, self.tokenizer = load_backbone(config.backbone)
        if config.lora.rank:
            lora = config.lora
            llm = add_lora(llm, lora.rank, lora.alpha, lora.dropout, lora.targets)
        self.llm = llm
        width = llm.get_input_embeddings().embedding_dim
        self.image_encoder = ImageEncoder(config.image)
        self.point_encoder = PointEncoder(config.points)
        self.image_projector = build_projector(config.image_projector, self.image_encoder.out_dim, width)
        self.point_projector = build_projector(config.point_projector, self.point_encoder.out_dim, width)
        self.object_encoder = ObjectEncoder(config.objects, config.points, width) if config.objects.enabled else None
        self._derived: dict[str, tuple] = {}  # decoding's int8 copy and system-prompt cache, with the adapters they hold
        self._earlier = EarlierReplies()  # drafts for the fast decoding path

    @property
    def inputs(self) -> tuple[str, ...]:
        """What this model reads besides the words (``embodied.prompts.INPUTS``)."""
        return INPUTS if self.object_encoder is not None else ("image", "cloud")

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- multimodal sentences ------------------------------------------------------------------------

    def encode_images(self, images: list) -> torch.Tensor:
        """Projected tokens (B, T, D) of images of any sizes; ``embodied.inputs.as_image`` says what counts as an
        image, and anything else raises a ValueError naming ``images[i]``."""
        pixels = [as_image(image, f"images[{i}]").to(self.device) for i, image in enumerate(images)]
        return check_tokens(self.image_projector(self.image_encoder(pixels)), "images")

    def encode_clouds(self, clouds: list) -> torch.Tensor:
        """Projected tokens (B, T, D) of point clouds, each checked (``embodied.inputs.as_cloud``) and resampled
        to ``num_points``; a bad one raises a ValueError naming ``clouds[i]``."""
        config = self.config
        points = torch.stack(
            [
                prepare_cloud(c, config.num_points, config.points.group_size, config.points.in_channels, f"clouds[{i}]")
                for i, c in enumerate(clouds)
            ]
        )
        return check_tokens(self.point_projector(self.point_encoder(points.to(self.device))), "clouds")

    def encode_objects(self, sets: list) -> list[tuple[torch.Tensor, list[str]]]:
        """Per set of object clouds (robot frame), its tokens (n, D), one per object (the nearest
        ``objects.max_objects``, nearest first), and the words that follow each (``ObjectEncoder``). A bad
        cloud raises a ValueError naming ``objects[i][j]``, a model without object tokens one saying so."""
        if self.object_encoder is None:
            raise ValueError(f"this model has no object tokens (its config's objects.enabled is false): leave {OBJECTS} out")
        return [self.object_encoder(list(clouds), f"objects[{i}]") for i, clouds in enumerate(sets)]

    def _sequences(self, samples: list[Sample]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sample: input embeddings (T, D) and labels (T,), -100 wherever the loss must not look."""
        for sample in samples:
            sample.check()  # items may have changed since the sample was made
        images = [i for s in samples for i in s.images]
        clouds = [c for s in samples for c in s.clouds]
        sets = [o for s in samples for o in s.objects]
        tokens_of = {
            IMAGE: iter(self.encode_images(images)) if images else iter(()),
            POINTS: iter(self.encode_clouds(clouds)) if clouds else iter(()),
            OBJECTS: iter(self.encode_objects(sets)) if sets else iter(()),
        }
        sequences = []
        for sample in samples:
            pieces = []  # (embeddings, labels)
            for text, is_target in sample.segments():
                for piece in PLACEHOLDER_RE.split(text):
                    if piece == OBJECTS:  # each object's token, then its words
                        tokens, words = next(tokens_of[piece])
                        for token, said in zip(tokens, words):
                            pieces += [(token[None], torch.full((1,), -100))] + ([self._text(said)] if said else [])
                    elif piece in tokens_of:
                        tokens = next(tokens_of[piece])
                        pieces.append((tokens, torch.full((len(tokens),), -100)))
                    elif piece:
                        pieces.append(self._text(piece, is_target))
            sequences.append((torch.cat([e for e, _ in pieces]), torch.cat([lab for _, lab in pieces]).to(self.device)))
        return sequences

    def _text(self, text: str, is_target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of ``text``'s tokens and their labels (-100 unless a target)."""
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids)
        return self.llm.get_input_embeddings()(ids.to(self.device)), ids if is_target else torch.full_like(ids, -100)

    def forward(self, samples: list[Sample]):
        """Language-model loss on the assistant replies of ``samples`` (right-padded batch)."""
        return self.score(self._sequences(samples))

    def score(self, sequences: list[tuple[torch.Tensor, torch.Tensor]]):
        """The language model's output and loss on sequences ``_sequences`` made."""
        embeds, mask, labels = self._pad(sequences, left=False)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels)

    def target_logprobs(self, sequences: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probability of every target token, and the row each belongs to. The vocabulary head
        (49k wide for SmolLM2) runs only where the loss looks, on the replies, not the whole sequence:
        what training needs, at a fraction of the head's time and memory."""
        embeds, mask, labels = self._pad(sequences, left=False)
        causal = causal_lm(self.llm)
        hidden = causal.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != -100
        logits = causal.get_output_embeddings()(hidden[:, :-1][keep]).float()
        return logits.log_softmax(dim=-1).gather(1, targets[keep][:, None])[:, 0], keep.nonzero()[:, 0]

    def _pad(self, sequences: list[tuple[torch.Tensor, torch.Tensor]], left: bool):
        """A batch of (embeddings, labels) sequences as padded tensors and the attention mask; left padding
        for decoding, so every reply starts in the same column."""
        length = max(len(e) for e, _ in sequences)
        batch, width = len(sequences), sequences[0][0].shape[1]
        embeds = torch.zeros(batch, length, width, device=self.device)
        labels = torch.full((batch, length), -100, dtype=torch.long, device=self.device)
        mask = torch.zeros(batch, length, dtype=torch.long, device=self.device)
        for row, (e, lab) in enumerate(sequences):
            span = slice(length - len(e), length) if left else slice(0, len(e))
            embeds[row, span], labels[row, span], mask[row, span] = e, lab, 1
        return embeds, mask, labels

    # -- generation ----------------------------------------------------------------------------------

    @contextmanager
    def _merged_lora(self):
        """Fold LoRA into the backbone weights while decoding (one matmul per projection instead of three),
        and unfold after, so training and loading weights always see the adapters apart."""
        merge = self.config.lora.rank > 0
        if merge:
            self.llm.merge_adapter()
        try:
            yield self.llm
        finally:
            if merge:
                self.llm.unmerge_adapter()

    def _adapters(self) -> tuple:
        """Changes whenever training or loading changes the adapters (every in-place write bumps a tensor's
        version), so whatever is derived from them is made again."""
        return tuple((name, p._version) for name, p in self.llm.named_parameters() if "lora_" in name)

    def _int8_copy(self, key: tuple | None = None) -> nn.Module:
        """The int8 decoding copy of the backbone; ``key``: ``_adapters()``, when the caller has read it."""
        key = self._adapters() if key is None else key
        if self._derived.get("int8", (None,))[0] != key:
            self._derived.pop("int8", None)  # the stale copy goes before the new one is made
            self._derived["int8"] = (key, int8_backbone(self.llm))
        return self._derived["int8"][1]

    def _system_prefix(self, samples: list[Sample], llm, adapters: tuple) -> tuple[list | None, int]:
        """The keys and values of the system prompt all ``samples`` share (computed once per prompt and
        adapters version), and how many tokens it spans; (None, 0) when they do not share one."""
        firsts = {s.segments()[0][0] if s.system else None for s in samples}
        if len(firsts) != 1 or None in firsts:
            return None, 0
        (text,) = firsts
        key = (text, adapters)
        if self._derived.get("prefix", (None,))[0] != key:
            ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, device=self.device)
            self._derived["prefix"] = (key, prefix_cache(llm, self.llm.get_input_embeddings()(ids)[None]))
        kv = self._derived["prefix"][1]
        return kv, kv[0][0].shape[2]

    @torch.no_grad()
    def generate(
        self,
        samples: list[Sample],
        max_new_tokens: int = 64,
        constraints: list | None = None,
        stop=None,
        decoding: DecodingConfig = DecodingConfig(),
    ) -> list[str]:
        """Greedy replies for a batch (``decoding.decode``: one KV cache, LoRA merged); ``constraints`` (one
        ``PlanConstraint`` or None per sample) restrict the tokens each reply may take; ``decoding`` says how
        (``decoding.REFERENCE``: the plain path the fast default is checked against)."""
        if not samples:
            return []
        constraints = constraints or [None] * len(samples)
        adapters = self._adapters()
        steps = self._int8_copy(adapters) if decoding.int8 and self.device.type == "cpu" else None
        # With an int8 copy for the steps, the prompt is read through the adapters as they are: merging and
        # unmerging them all costs more than their small matmuls on one prompt.
        with torch_threads(decoding.threads), (nullcontext(self.llm) if steps else self._merged_lora()) as llm:
            sequences = self._sequences(samples)
            prefix, skip = self._system_prefix(samples, llm, adapters) if decoding.system_cache else (None, 0)
            embeds, mask, _ = self._pad([(e[skip:], labels[skip:]) for e, labels in sequences], left=True)
            drafts = self._earlier if decoding.drafts else None
            return decode(llm, self.tokenizer, embeds, mask, constraints, max_new_tokens, stop, decoding.jump_forward, prefix, steps, drafts)

    def plan(
        self,
        samples: list[Sample],
        objects: list | None = None,
        max_new_tokens: int = PLAN_TOKENS,
        temperature: float | list[float] = 0.0,
        seeds: list | None = None,
        stop=None,
        decoding: DecodingConfig = DecodingConfig(),
        instructions: list[str] | None = None,
    ) -> list[str]:
        """Plans that always parse: grammar-constrained decoding, then repair if the token limit cut one off.
        ``objects`` (a list of names per sample, or None) limits the objects a plan may name, and the
        ``instructions`` (one per sample) the order it looks up those they name in; a ``temperature`` above
        0 (one for all, or one per sample) samples, ``seeds`` (one per sample) make the draws repeatable."""
        n = len(samples)
        objects, seeds, instructions = objects or [None] * n, seeds or [None] * n, instructions or [""] * n
        temperatures = temperature if isinstance(temperature, list) else [temperature] * n
        given = {"objects": objects, "seeds": seeds, "temperature": temperatures, "instructions": instructions}
        for name, values in given.items():
            if len(values) != n:
                raise ValueError(f"{name}: {len(values)} for {n} samples; give one per sample")
        constraints = [
            PlanConstraint(self.tokenizer, names, temperature=t, seed=seed, instruction=text)
            for names, t, seed, text in zip(objects, temperatures, seeds, instructions)
        ]
        texts = self.generate(samples, max_new_tokens, constraints, stop, decoding)  # stop: see decoding.decode
        return [text if rule.complete(text) else repair_plan(text, rule.objects) for text, rule in zip(texts, constraints)]

    # -- checkpoints ---------------------------------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Encoders, projectors and LoRA: everything but the frozen backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("llm.") or "lora_" in k}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``path``, replacing it in one rename."""
        with atomic_dir(path) as tmp:
            self.write_files(tmp)
        return Path(path)

    def write_files(self, folder: Path) -> None:
        """The checkpoint's files into an existing folder (a caller that adds files of its own makes the
        folder atomic)."""
        (folder / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **self.config.to_dict()}, indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.trainable_state().items()}, str(folder / WEIGHTS_FILE))

    def load_matching(self, weights: dict[str, torch.Tensor]) -> list[str]:
        """Load the entries of ``weights`` that the trainable state holds with the same shape (a ULIP run's
        encoders into a fresh model, say: its point encoder and head also become the object tokens' frozen
        tower); returns their names."""
        state = self.trainable_state()
        if self.object_encoder is not None and "point_head.weight" in weights:  # a ULIP export: the object tokens' tower
            weights = {**{f"object_encoder.tower.{k}": v for k, v in tower_weights(weights).items()}, **weights}
        matching = {k: v for k, v in weights.items() if k in state and state[k].shape == v.shape}
        self.load_state_dict(matching, strict=False)
        return sorted(matching)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> EmbodiedModel:
        """A model folder, or ``"default"``: the checkpoint that ships with the package."""
        path = DEFAULT_CHECKPOINT if str(path) == "default" else Path(path)
        if path == DEFAULT_CHECKPOINT and not path.is_dir():
            raise CheckpointError(f"the shipped checkpoint is not installed ({path}): `make recipe` trains it, or pass a checkpoint folder")
        config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        for needed in (config_file, weights_file):
            if not needed.is_file():
                raise CheckpointError(f"not a checkpoint: {needed} is missing")
        try:
            data = json.loads(config_file.read_text())
            if not isinstance(data, dict):
                raise CheckpointError(f"{config_file} must hold a JSON object, got {type(data).__name__}")
            version = data.pop("format_version", None)
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{config_file}: format_version {version!r}, this code reads {FORMAT_VERSION}")
            data.setdefault("objects", {"enabled": False})  # written before object tokens
            if isinstance(data["objects"], dict):
                data["objects"].setdefault("words", False)  # written before their words
                data["objects"].setdefault("nearest", False)  # written before the words named the nearest object
            config = ModelConfig.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{config_file}: {exc}") from exc
        try:
            weights = load_file(str(weights_file))
        except SafetensorError as exc:
            raise CheckpointError(f"{weights_file} is not a readable safetensors file: {exc}") from exc
        model = cls(config)
        expected = model.trainable_state()
        problems = [f"missing {k}" for k in sorted(set(expected) - set(weights))]
        problems += [f"unexpected {k}" for k in sorted(set(weights) - set(expected))]
        problems += [
            f"{k}: shape {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
            for k, v in expected.items()
            if k in weights and weights[k].shape != v.shape
        ]
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
            raise CheckpointError(f"{weights_file} does not fit its config: {shown}")
        model.load_state_dict(weights, strict=False)
        return model


UNTRAINED = {"tiny": ModelConfig.tiny, "untrained": ModelConfig}  # fresh random models, asked for by name


def load_model(checkpoint: str | Path | None = None) -> EmbodiedModel:
    """The one way every caller (rollouts, evaluation, Ray replicas, the ROS planner, RL) gets a model, in
    eval mode. ``None``, ``""`` and ``"default"`` mean the checkpoint shipped with the package; ``"tiny"``
    (for tests) and ``"untrained"`` (default size) are random models and must be asked for by name; anything
    else is a checkpoint folder."""
    name = str(checkpoint or "default")
    model = EmbodiedModel(UNTRAINED[name]()) if name in UNTRAINED else EmbodiedModel.from_pretrained(name)
    return model.eval()
