"""Atomic file writes: a reader (or a crash) never sees half a checkpoint, record or picture."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def previous_dir(path: str | Path) -> Path:
    """Where ``atomic_dir`` keeps ``path``'s old folder while the new one takes its place."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


@contextmanager
def atomic_dir(path: str | Path):
    """Yield an empty temporary folder beside ``path``; on success it takes ``path``'s place (an old folder
    there stays whole until the new one is complete, then is removed).

    Folders cannot be swapped in one rename: the old one is first renamed to ``previous_dir(path)``, so a
    crash between the two renames leaves no ``path`` but a whole previous folder, which readers that must
    survive crashes (resuming a checkpoint) fall back to. The temporary folders of saves that were killed
    are removed here (one writer per ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if stale != previous_dir(path) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700, writers 0600: give them what mkdir/open would
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)
            _fsync(file)  # on disk before the renames: a power cut must not leave truncated files behind them
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(new: str | Path, path: str | Path) -> None:
    """Put folder ``new`` (on ``path``'s file system) in ``path``'s place, the old one kept whole as
    ``previous_dir(path)`` until the new one is there (see ``atomic_dir``)."""
    path = Path(path)
    old = previous_dir(path)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(new, path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n"))


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures here only ever go to files (no display on a
    server or a robot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(path: str | Path, fig, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG, written atomically, then closed."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    pyplot().close(fig)
    return Path(path)

