"""rag.atomic: a folder or file appears whole or not at all."""

from __future__ import annotations

import pytest

from rag.atomic import atomic_dir, atomic_file


def test_a_folder_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "cache" / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists() and tmp.parent == target.parent
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no temporary folder left


def test_an_error_leaves_nothing(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_the_first_folder_wins_a_race(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "mine.txt").write_text("mine")
        target.mkdir()  # another process finished first
        (target / "theirs.txt").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_file_is_replaced_whole_or_kept(tmp_path):
    target = tmp_path / "reader.onnx"
    target.write_text("old")
    with pytest.raises(OSError):
        with atomic_file(target) as tmp:
            tmp.write_text("ne")
            raise OSError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["reader.onnx"]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["reader.onnx"]
