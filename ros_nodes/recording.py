"""Recordings: ROS 2 messages in MCAP files, as ``ros2 bag`` writes them (``ros2msg`` schemas from the installed
message packages, CDR-serialized messages), so Foxglove, ``ros2 bag`` and the ``mcap`` tools open them.

Written in chunks: a recording killed midway keeps every chunk flushed before, and ``read_messages`` hands
those back before it reports where the file breaks off.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from mcap.exceptions import EndOfFile
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer
from rclpy.serialization import serialize_message

from embodied.errors import InputError

CHUNK_BYTES = 1 << 20  # a chunk holds about two 256x256 RGB-D frames: a killed recording loses at most that
LATCHED = "transient_local"  # channel metadata "durability": replay publishes these latched
PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "uint64", "string", "wstring",
}  # fmt: skip
_RULE = "=" * 80


class RecordingError(InputError):
    """A recording that cannot be read: says which file and from which byte."""


def type_name(msg_or_class) -> str:
    """``sensor_msgs/msg/Image`` for a message or its class."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    package = cls.__module__.split(".")[0]
    return f"{package}/msg/{cls.__name__}"


def message_class(name: str):
    """The installed message class of a type name (``sensor_msgs/msg/Image``)."""
    package, kind, cls = name.split("/")
    if kind != "msg":
        raise ValueError(f"{name} is not a message type")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


def message_definition(name: str) -> str:
    """The full ``ros2msg`` definition of a type: its ``.msg`` text, then every type it uses, each after a
    rule and ``MSG: package/Type`` (the form rosbag2 writes and MCAP readers parse)."""
    text, seen, order = _msg_text(name), {_short(name)}, []
    pending = _dependencies(text, _short(name).split("/")[0])
    while pending:
        dependency = pending.pop(0)
        if dependency in seen:
            continue
        seen.add(dependency)
        body = _msg_text(dependency)
        order.append((dependency, body))
        pending += _dependencies(body, dependency.split("/")[0])
    return text + "".join(f"\n{_RULE}\nMSG: {dependency}\n{body}" for dependency, body in order)


def _short(name: str) -> str:
    parts = name.split("/")
    return f"{parts[0]}/{parts[-1]}"


def _msg_text(name: str) -> str:
    package, cls = _short(name).split("/")
    for prefix in [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]:
        path = Path(prefix) / "share" / package / "msg" / f"{cls}.msg"
        if prefix and path.is_file():
            return path.read_text()
    raise FileNotFoundError(
        f"no {package}/msg/{cls}.msg under AMENT_PREFIX_PATH or {sys.prefix}/share: is the ROS 2 package installed?"
    )


def _dependencies(text: str, package: str) -> list[str]:
    """The non-primitive field types of a ``.msg`` text, as ``package/Type``."""
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or "=" in words[1]:
            continue  # blank, comment or constant
        kind = words[0].split("[", 1)[0].split("<=", 1)[0]
        if kind in PRIMITIVES:
            continue
        if "/" not in kind:
            kind = "std_msgs/Header" if kind == "Header" else f"{package}/{kind}"
        found.append(_short(kind))
    return found


class RecordingWriter:
    """Writes messages to one MCAP file: ``write(topic, msg, stamp_ns)``; ``close()`` writes the index."""

    def __init__(self, path: str | Path, latched: tuple[str, ...] = ()):
        self.path = Path(path)
        self.latched = set(latched)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115  closed in close()
        self._mcap = Writer(self._file, chunk_size=CHUNK_BYTES, compression=CompressionType.LZ4)
        self._mcap.start(profile="ros2", library="embodied-agent")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        self.write_serialized(topic, type_name(msg), serialize_message(msg), stamp_ns)

    def write_serialized(self, topic: str, kind: str, data: bytes, stamp_ns: int) -> None:
        """A message already in CDR (what a raw subscription hands over), of type ``kind``."""
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._channels[topic] = self._channel(topic, kind)
        self._mcap.add_message(channel, int(stamp_ns), data, int(stamp_ns), self.counts.get(topic, 0))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _channel(self, topic: str, kind: str) -> int:
        if kind not in self._schemas:
            self._schemas[kind] = self._mcap.register_schema(kind, "ros2msg", message_definition(kind).encode())
        metadata = {"durability": LATCHED if topic.lstrip("/") in self.latched else "volatile"}
        return self._mcap.register_channel(topic, "cdr", self._schemas[kind], metadata)

    def close(self) -> None:
        if not self._file.closed:
            self._mcap.finish()
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Recorded:
    """One message as recorded: its topic, type (``sensor_msgs/msg/Image``), time and CDR bytes."""

    topic: str
    type: str
    stamp_ns: int
    data: bytes
    latched: bool


def read_messages(path: str | Path) -> Iterator[Recorded]:
    """Every message in file order. A file that breaks off (a recording killed midway) or is damaged yields
    what comes before the break, then raises ``RecordingError`` naming the file and the byte offset."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording")
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    with open(path, "rb") as f:
        good = 0  # where the record being read starts: everything before it was read whole
        try:
            for record in StreamReader(f, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    channel = channels.get(record.channel_id)
                    if channel is None or channel.schema_id not in schemas:
                        raise ValueError(f"a message on channel {record.channel_id}, which no record declares")
                    latched = channel.metadata.get("durability") == LATCHED
                    yield Recorded(
                        channel.topic, schemas[channel.schema_id].name, record.log_time, record.data, latched
                    )
                good = f.tell()
        except Exception as exc:  # noqa: BLE001  a damaged file raises whatever its decompressor or parser meets
            cut = isinstance(exc, (EndOfFile, struct.error))  # a record that breaks off, or its length field
            reason = "it ends before its footer (cut short?)" if cut else f"{type(exc).__name__}: {exc}"
            raise RecordingError(f"{path}: unreadable from byte {good} of {path.stat().st_size}: {reason}") from None


def summary(path: str | Path) -> dict:
    """What ``ros2 bag info`` says of a recording: each topic's type and message count, and the time span."""
    topics: dict[str, dict] = {}
    first = last = None
    for m in read_messages(path):
        entry = topics.setdefault(m.topic, {"type": m.type, "messages": 0})
        entry["messages"] += 1
        first = m.stamp_ns if first is None else min(first, m.stamp_ns)
        last = m.stamp_ns if last is None else max(last, m.stamp_ns)
    seconds = 0.0 if first is None else (last - first) * 1e-9
    return {"path": str(path), "bytes": Path(path).stat().st_size, "seconds": seconds, "topics": topics}
