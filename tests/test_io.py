"""Atomic folder writes: a save either lands whole or leaves the previous folder, and the debris of saves
that were killed does not pile up."""

import pytest

from embodied.io import atomic_dir, previous_dir


def _save(path, text):
    with atomic_dir(path) as tmp:
        (tmp / "data.txt").write_text(text)


def test_a_save_replaces_the_folder_whole(tmp_path):
    _save(tmp_path / "checkpoint", "one")
    _save(tmp_path / "checkpoint", "two")
    assert (tmp_path / "checkpoint" / "data.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_failed_save_leaves_the_old_folder(tmp_path):
    _save(tmp_path / "checkpoint", "one")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "checkpoint") as tmp:
            (tmp / "data.txt").write_text("half")
            raise RuntimeError("killed mid-save")
    assert (tmp_path / "checkpoint" / "data.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_folders_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    killed = tmp_path / ".checkpoint.k1ll3d"  # what mkdtemp made for a save that was SIGKILLed
    killed.mkdir()
    (killed / "data.txt").write_text("half")
    other = tmp_path / ".model.abc123"  # another folder's save: not ours to touch
    other.mkdir()
    _save(tmp_path / "checkpoint", "one")
    assert not killed.exists() and other.exists()
    assert previous_dir(tmp_path / "checkpoint") == tmp_path / ".checkpoint.old"
