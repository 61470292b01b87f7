"""The ONNX encoder backend (rag.onnx_encoder): same vectors as sentence-transformers, no torch on the
query path, and a clean fall-back to torch when the model cannot run on onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CACHE_DIR, FINLAND_Q, REPO

pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (pip install onnxruntime)")

from rag.embed import SentenceTransformerEmbedder, get_embedder, resolve_model  # noqa: E402
from rag.onnx_encoder import MIN_COSINE, OnnxUnsupported, export_dir, read_layout  # noqa: E402
from rag.settings import DEFAULT_MODEL  # noqa: E402


@pytest.fixture(scope="module")
def onnx_embedder():
    e = get_embedder(DEFAULT_MODEL, str(CACHE_DIR), "onnx")
    assert e.backend == "onnx"  # exported (once per cache folder) and loaded
    return e


@pytest.fixture(scope="module")
def torch_embedder():
    return get_embedder(DEFAULT_MODEL, str(CACHE_DIR), "torch")


def _questions() -> list[str]:
    lines = (REPO / "eval" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


@pytest.mark.slow
def test_onnx_vectors_equal_sentence_transformers_on_every_passage_and_eval_question(onnx_embedder, torch_embedder,
                                                                                    real_chunks):
    texts = [c.search_text() for c in real_chunks] + _questions() + ["", "   ", "Finland", "naïve café – “quoted”"]
    a, b = onnx_embedder.embed(texts), torch_embedder.embed(texts)
    assert a.shape == b.shape == (len(texts), 384) and a.dtype == np.float32
    cos = (a * b).sum(axis=1)
    assert cos.min() > MIN_COSINE, texts[int(cos.argmin())]
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_batches_sorted_by_length_keep_the_input_order(onnx_embedder):
    texts = [("word " * (n % 37 + 1)).strip() + f" {n}" for n in range(80)]  # more than one batch, mixed lengths
    together = onnx_embedder.embed(texts)
    alone = np.vstack([onnx_embedder.embed([t]) for t in texts])
    assert ((together * alone).sum(axis=1) > 0.99999).all()


@pytest.mark.slow
def test_the_export_was_checked_against_sentence_transformers(onnx_embedder):
    folder = Path(resolve_model(DEFAULT_MODEL, CACHE_DIR))
    info = json.loads((export_dir(folder, CACHE_DIR) / "export.json").read_text(encoding="utf-8"))
    assert info["min_cosine_vs_torch"] >= MIN_COSINE
    assert (info["pooling"], info["max_seq_length"], info["dim"]) == ("mean", 256, 384)


@pytest.mark.slow
def test_export_into_an_empty_cache_folder_is_checked_and_reused(tmp_path):
    from rag.onnx_encoder import ensure_exported

    cache = tmp_path / "cache"
    folder = Path(resolve_model(DEFAULT_MODEL, cache))
    path = ensure_exported(folder, cache)
    info = json.loads((path.parent / "export.json").read_text(encoding="utf-8"))
    assert path.name == "model.onnx" and path.stat().st_size > 1_000_000
    assert info["min_cosine_vs_torch"] >= MIN_COSINE
    assert [p.name for p in (cache / "onnx").iterdir()] == [path.parent.name]  # no temporary folder left
    mtime = path.stat().st_mtime_ns
    assert ensure_exported(folder, cache) == path and path.stat().st_mtime_ns == mtime  # exported once


QUERY_PATH = """
import json, sys
from rag.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.slow
def test_a_fresh_rag_ask_on_onnx_never_imports_torch(real_settings, real_index, onnx_embedder, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CACHE_DIR=str(CACHE_DIR), RAG_EMBED_BACKEND="onnx")
    out = subprocess.run(
        [sys.executable, "-c", QUERY_PATH, "ask", FINLAND_Q, "--json", "--index", str(real_settings.index_dir),
         "--corpus", str(real_settings.corpus_dir)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer, report = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert "50" in answer["answer"]
    assert report == {"code": 0, "heavy": []}


def test_get_embedder_falls_back_to_torch_without_onnxruntime(real_model, monkeypatch):
    import rag.embed

    monkeypatch.setattr(rag.embed, "onnx_available", lambda: False)
    rag.embed.get_embedder.cache_clear()
    try:
        e = rag.embed.get_embedder(DEFAULT_MODEL, str(CACHE_DIR), "onnx")
        assert isinstance(e, SentenceTransformerEmbedder) and e.backend == "torch"
    finally:
        rag.embed.get_embedder.cache_clear()


@pytest.mark.slow
def test_an_export_that_failed_its_check_falls_back_to_torch(tmp_path, torch_embedder):
    """A ``failed.json`` left by an export whose vectors disagreed: later processes use torch at once."""
    cache = tmp_path / "cache"
    folder = Path(resolve_model(DEFAULT_MODEL, cache))  # the bundled model, extracted into this cache
    target = export_dir(folder, cache)
    target.mkdir(parents=True)
    (target / "failed.json").write_text(json.dumps({"reason": "cosine 0.5 against sentence-transformers"}))
    e = get_embedder(DEFAULT_MODEL, str(cache), "onnx")
    got = e.embed([FINLAND_Q])
    assert e.backend == "torch"
    assert np.allclose(got, torch_embedder.embed([FINLAND_Q]), atol=1e-6)


def _model_folder(root: Path, modules: list[str], pooling: dict | None = None, st_config: dict | None = None,
                  tokenizer: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{m}", "type": f"sentence_transformers.models.{m}"}
         for i, m in enumerate(modules)]))
    (root / "config.json").write_text(json.dumps({"hidden_size": 8, "max_position_embeddings": 512}))
    (root / "sentence_bert_config.json").write_text(json.dumps(st_config or {"max_seq_length": 128}))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"pooling_mode_mean_tokens": True}))
    if tokenizer:
        (root / "tokenizer.json").write_text("{}")
    return root


def test_layout_of_a_mean_pooled_model(tmp_path):
    layout = read_layout(_model_folder(tmp_path / "m", ["Transformer", "Pooling", "Normalize"]))
    assert (layout.pooling, layout.max_seq_length, layout.dim) == ("mean", 128, 8)
    cls = read_layout(_model_folder(tmp_path / "c", ["Transformer", "Pooling"], {"pooling_mode_cls_token": True}))
    assert cls.pooling == "cls"


@pytest.mark.parametrize("modules, pooling, st_config, tokenizer, why", [
    (["Transformer", "Pooling", "Dense", "Normalize"], None, None, True, "Transformer \\+ Pooling"),
    (["Transformer", "Pooling"], {"pooling_mode_max_tokens": True}, None, True, "mean or CLS pooling"),
    (["Transformer", "Pooling"], None, {"max_seq_length": 128, "do_lower_case": True}, True, "lower-case"),
    (["Transformer", "Pooling"], None, None, False, "no tokenizer.json"),
])
def test_models_the_onnx_backend_cannot_run_are_named_with_the_reason(tmp_path, modules, pooling, st_config,
                                                                      tokenizer, why):
    with pytest.raises(OnnxUnsupported, match=why):
        read_layout(_model_folder(tmp_path / "m", modules, pooling, st_config, tokenizer))
