"""Config dataclasses from plain data (parsed YAML or JSON), checked at the edge: every value against its
field's annotated type, then the dataclass's own range checks, so a wrong value fails in one line naming
its key before anything is built or loaded from it."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing


def config_from_dict(cls, data, where: str):
    """A (nested) config dataclass from plain data such as parsed JSON or YAML. Every value is checked
    against its field's annotated type, naming its key (``where.key``), so a wrong one (``steps: abc``)
    fails here in one line, before anything is built or loaded from it; unknown keys fail too (a typo
    must not pass silently)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown keys in {where}: {sorted(unknown, key=str)} (known: {sorted(fields)})")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{where} lacks the required keys {missing}")
    hints = typing.get_type_hints(cls)  # the annotations are strings (``from __future__ import annotations``)
    values = {name: _typed(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # a range check in __post_init__
        raise ValueError(f"{where}: {exc}") from exc


_KINDS = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", type(None): "null"}


def _typed(value, hint, key: str):
    """``value`` as the annotated type ``hint`` (an int where a float is expected, a list where a tuple
    is), or a ValueError naming ``key``."""
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, key)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for kind in args:
            try:
                return _typed(value, kind, key)
            except ValueError:
                pass
        raise ValueError(f"{key} must be {' or '.join('a list' if typing.get_origin(k) is tuple else _KINDS.get(k, k.__name__) for k in args)}, got {value!r}")
    if origin is tuple:  # tuple[X, ...]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return tuple(_typed(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if hint is dict:  # its entries are the config's own to check
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
            return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key} must be {_KINDS.get(hint, hint.__name__)}, got {value!r}")
