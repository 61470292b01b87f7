"""Incremental index builds: a file that has not changed is neither read nor embedded again, and the
result is the index a full rebuild gives (same passages, vectors, sentence vectors and BM25 statistics).
Real model, real FAISS, on copies of the tiny corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from rag import embed, load
from rag.index import build_index, load_index
from rag.lexical import tokenize
from rag.retrieve import search
from rag.settings import ChunkSettings


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Names of the corpus files :func:`rag.load.load_file` reads from now on."""
    seen: list[str] = []
    real = load.load_file

    def spy(path, doc_id=None, *a, **kw):
        seen.append(doc_id or Path(path).name)
        return real(path, doc_id, *a, **kw)

    monkeypatch.setattr(load, "load_file", spy)
    return seen


@pytest.fixture
def embedded(monkeypatch) -> list[str]:
    """Every text the embedder is asked for from now on."""
    texts: list[str] = []
    real = embed.get_embedder

    def counting(*a, **kw):
        inner = real(*a, **kw)

        class Counting:
            dim = inner.dim

            def embed(self, batch):
                texts.extend(batch)
                return inner.embed(batch)

        return Counting()

    monkeypatch.setattr(embed, "get_embedder", counting)
    return texts


def change_corpus(corpus: Path) -> None:
    (corpus / "notes.txt").write_text(
        "Meeting notes\n\nThe ministers met in Vienna on 9 June. They agreed on 12 new patrol boats.\n", encoding="utf-8")
    (corpus / "extra.md").write_text("# Extra\n\nThe harbour of Valletta received 300 tonnes of aid.\n", encoding="utf-8")


def full_copy(settings, tmp_path: Path):
    """The same corpus, built from scratch into another index folder."""
    other = settings.with_(corpus_dir=tmp_path / "corpus-full", index_dir=tmp_path / "index-full")
    shutil.copytree(settings.corpus_dir, other.corpus_dir)
    assert build_index(other, force=True).changes is None
    return other


def test_an_incremental_build_equals_a_full_rebuild(tiny_copy, tmp_path):
    corpus = Path(tiny_copy.corpus_dir)
    change_corpus(corpus)
    (corpus / "border.md").unlink()
    (corpus / "border.meta.json").unlink()
    result = build_index(tiny_copy)
    assert result.status == "built"
    assert (result.changes.added, result.changes.changed, result.changes.removed) == (("extra.md",), ("notes.txt",), ("border.md",))
    assert result.changes.unchanged == 1  # empty.txt: still skipped, not read again
    inc, full = load_index(tiny_copy), load_index(full_copy(tiny_copy, tmp_path))
    assert list(inc.chunks) == list(full.chunks)
    assert dict(inc.docs) == dict(full.docs)
    va, vb = (d.vectors.reconstruct_n(0, d.vectors.ntotal) for d in (inc, full))
    np.testing.assert_allclose(va, vb, atol=1e-5)
    np.testing.assert_allclose(np.asarray(inc.sentence_vecs), np.asarray(full.sentence_vecs), atol=1e-5)
    assert (inc.lexical.n_docs, inc.lexical.df) == (full.lexical.n_docs, full.lexical.df)
    q = "Where did the ministers meet?"
    qvec = embed.get_embedder(tiny_copy.model, str(tiny_copy.cache_dir)).embed([q])[0]
    a, b = (search(d, qvec, tokenize(q), 5) for d in (inc, full))
    assert [h.chunk for h in a] == [h.chunk for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    def files(d):  # as recorded, without when each was read
        return {k: {f: v for f, v in rec.items() if f != "indexed_at"} for k, rec in d.manifest.raw["files"].items()}

    assert files(inc) == files(full) and inc.manifest.skipped == full.manifest.skipped


def test_unchanged_files_are_neither_read_nor_embedded(tiny_copy, reads, embedded):
    change_corpus(Path(tiny_copy.corpus_dir))
    result = build_index(tiny_copy)
    assert sorted(reads) == ["extra.md", "notes.txt"]
    assert result.changes.unchanged == 2  # border.md, and empty.txt (skipped as before)
    data = load_index(tiny_copy)
    fresh = [c for c in data.chunks if c.doc_id in ("extra.md", "notes.txt")]
    assert len(embedded) == len(fresh) + sum(len(c.sentences) for c in fresh)
    assert not any("Frontex" in t for t in embedded)
    assert [s.doc_id for s in result.manifest.skipped] == ["empty.txt"]
    assert any("Valletta" in c.text for c in data.chunks) and any("Frontex" in c.text for c in data.chunks)


def test_removing_a_file_needs_no_model(tiny_copy, monkeypatch, reads):
    def no_model(*a, **kw):
        raise AssertionError("the model was loaded for a build that embeds nothing")

    monkeypatch.setattr(embed, "get_embedder", no_model)
    (Path(tiny_copy.corpus_dir) / "notes.txt").unlink()
    result = build_index(tiny_copy)
    assert result.changes.removed == ("notes.txt",) and reads == []
    assert {c.doc_id for c in load_index(tiny_copy).chunks} == {"border.md"}


def test_a_metadata_edit_reads_only_its_document_again(tiny_copy, reads):
    (Path(tiny_copy.corpus_dir) / "border.meta.json").write_text('{"title": "Renamed Report"}')
    result = build_index(tiny_copy)
    assert reads == ["border.md"] and result.changes.changed == ("border.md",)
    assert {c.title for c in load_index(tiny_copy).chunks if c.doc_id == "border.md"} == {"Renamed Report"}


def test_new_chunking_settings_rebuild_everything_and_say_why(tiny_copy, reads, capsys):
    other = tiny_copy.with_(chunking=ChunkSettings(target_words=50, max_words=100, min_words=10))
    result = build_index(other)
    assert result.changes is None and result.reasons == ("chunking settings changed",)
    assert sorted(reads) == ["border.md", "empty.txt", "notes.txt"]


def test_a_damaged_previous_index_is_rebuilt_in_full(tiny_copy, reads):
    (Path(tiny_copy.corpus_dir) / "extra.txt").write_text("A short extra document about ports.")
    faiss_file = Path(tiny_copy.index_dir) / "chunks.faiss"
    raw = bytearray(faiss_file.read_bytes())
    raw[-8:] = b"\x00" * 8
    faiss_file.write_bytes(bytes(raw))
    result = build_index(tiny_copy)
    assert result.changes is None
    assert any("cannot be reused" in r and "chunks.faiss" in r for r in result.reasons), result.reasons
    assert sorted(reads) == ["border.md", "empty.txt", "extra.txt", "notes.txt"]
    assert load_index(tiny_copy).manifest.counts.documents == 3


def test_rag_index_prints_what_it_added_changed_and_removed(tiny_copy, capsys):
    corpus = Path(tiny_copy.corpus_dir)
    change_corpus(corpus)
    (corpus / "border.md").unlink()
    base = ["index", "--corpus", str(corpus), "--index", str(tiny_copy.index_dir), "--no-progress"]
    code, out, err = run_cli(base, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("built index: 2 documents")
    assert lines[1:] == ["  added: extra.md", "  changed: notes.txt", "  removed: border.md",
                         "  unchanged: 1 file (not read again)"]
    code, out, err = run_cli(base + ["--force"], capsys)
    assert code == 0 and len(out.splitlines()) == 1 and "rebuilt every document" not in err
    code, out, err = run_cli(base + ["--follow-symlinks"], capsys)  # a setting every passage depends on
    assert code == 0 and len(out.splitlines()) == 1
    assert "rebuilt every document: follow_symlinks changed" in err


# ---------------------------------------------------------------------------------------------
# Answering from chosen documents (--doc, the LangChain filter)


def test_search_and_ask_can_be_limited_to_documents(tiny_copy, capsys):
    from rag.errors import BadQuestion
    from rag.lc import RagRetriever
    from rag.pipeline import Assistant

    a = Assistant.load(tiny_copy)
    q = "Where did the ministers meet?"
    assert a.search(q, k=3)[0].chunk.doc_id == "notes.txt"
    only = a.search(q, k=3, docs=["border.md"])
    assert only and {h.chunk.doc_id for h in only} == {"border.md"}
    ans = a.ask(q, docs=["border.md"])
    assert {c.doc for c in ans.passages} <= {"border.md"}
    with pytest.raises(BadQuestion, match="no document 'nope.txt' in the index"):
        a.search(q, docs=["nope.txt"])
    r = RagRetriever(assistant=a, k=3)
    assert {d.metadata["doc_id"] for d in r.invoke(q, filter={"doc_id": "border.md"})} == {"border.md"}
    assert {d.metadata["doc_id"] for d in RagRetriever(assistant=a, filter={"source": ["border.md"]}).invoke(q)} == {"border.md"}
    with pytest.raises(BadQuestion, match="filter supports one key"):
        r.invoke(q, filter={"page": 1})
    base = ["ask", q, "--index", str(tiny_copy.index_dir), "--corpus", str(tiny_copy.corpus_dir), "--json"]
    code, out, err = run_cli(base + ["--doc", "border.md"], capsys)
    assert code == 0, err
    assert {p["doc"] for p in json.loads(out)["passages"]} == {"border.md"}
    code, out, err = run_cli(base + ["--doc", "nope.txt"], capsys)
    assert code == 2 and "no document 'nope.txt' in the index (it holds: border.md, notes.txt)" in err


def test_refresh_reads_one_unchanged_document_again_and_keeps_when_the_others_were_read(tiny_copy, reads):
    before = json.loads((Path(tiny_copy.index_dir) / "manifest.json").read_text())["files"]
    result = build_index(tiny_copy, refresh={"notes.txt"})
    assert reads == ["notes.txt"] and result.changes.changed == ("notes.txt",)
    after = result.manifest.raw["files"]
    assert after["border.md"]["indexed_at"] == before["border.md"]["indexed_at"]
    assert {k: v for k, v in after["notes.txt"].items() if k != "indexed_at"} == \
        {k: v for k, v in before["notes.txt"].items() if k != "indexed_at"}
