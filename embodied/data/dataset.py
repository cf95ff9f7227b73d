"""One split of a generated dataset, read into memory, its rows turned into model samples on demand."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from embodied.data.generate import MANIFEST, SPLITS
from embodied.errors import DatasetError
from embodied.prompts import IMAGE, POINTS, Sample, with_inputs


class SplitData:
    def __init__(self, root: str | Path, split: str):
        root = Path(root)
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise DatasetError(f"{root} is not a dataset: {manifest} is missing (make one with `embodied data`)")
        if not json.loads(manifest.read_text()).get("complete"):
            raise DatasetError(f"{root} is unfinished: run the same `embodied data` command again to resume it")
        self.root, self.split = root, split
        self.samples = self._read("samples")
        self.objects = self._read("objects")
        self._observations = {row["id"]: row for row in self._read("observations")}
        self.observation = lru_cache(maxsize=None)(self._decode_observation)

    def _read(self, table: str) -> list[dict]:
        files = sorted((self.root / self.split).glob(f"shard-*/{table}.parquet"))
        return [row for f in files for row in pq.read_table(f).to_pylist()]

    def select(self, kinds: tuple[str, ...] | None = None, compositional: bool | None = None) -> list[dict]:
        return [
            row
            for row in self.samples
            if (kinds is None or row["kind"] in kinds) and (compositional is None or row["compositional"] == compositional)
        ]

    def _decode_observation(self, obs_id: str) -> tuple[np.ndarray, np.ndarray, list | None]:
        """Image, cloud, and the known objects' clouds (None in a dataset from before object tokens)."""
        row = self._observations[obs_id]
        objects = row.get("objects")
        if objects is not None:
            objects = list(decode_cloud(objects).reshape(len(row["object_names"]), -1, 6))
        return decode_png(row["image"]), decode_cloud(row["cloud"]), objects

    def sample(self, row: dict, reply: bool = True, inputs: tuple[str, ...] = ("image", "cloud")) -> Sample:
        """The row as a model sample showing ``inputs`` (``embodied.prompts.with_inputs``); without ``reply``
        the last answer is left for the model to write."""
        turns = [tuple(turn) for turn in json.loads(row["turns"])]
        if not reply:
            turns[-1] = (turns[-1][0], None)
        text = "".join(user for user, _ in turns)
        images, clouds, objects = [], [], None
        if row["observation"]:
            image, cloud, objects = self.observation(row["observation"])
            images, clouds = [image] * text.count(IMAGE), [cloud] * text.count(POINTS)
        return with_inputs(Sample(turns, images, clouds, row["system"] or None), inputs, objects)


def decode_png(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # a writable copy: torch takes it as is


def decode_cloud(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).reshape(-1, 6).astype(np.float32)
