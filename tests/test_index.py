"""Stage 4: the index folder (manifest, plain files, freshness, corruption, locking).

Most tests copy the session's tiny index (``tiny_copy``) and change the copy; only the tests that
must rebuild do so (a tiny build takes well under a second once the model is loaded).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_DOC_ID, settings_for, write_corpus
from rag.chunk import chunk_documents
from rag.errors import CorpusEmpty, IndexCorrupt, IndexLocked, IndexMismatch, IndexMissing, IndexStale
from rag.index import FORMAT_VERSION, PIPELINE_VERSION, Counts, build_index, index_lock, load_index, load_manifest
from rag.load import Skipped, load_corpus
from rag.pipeline import Assistant
from rag.settings import DEFAULT_MODEL, ChunkSettings


def snapshot(index_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of the folder and every file in it: changes when anything is rewritten."""
    out = {".": (index_dir.stat().st_ino, index_dir.stat().st_mtime_ns)}
    for p in sorted(index_dir.rglob("*")):
        st = p.stat()
        out[p.relative_to(index_dir).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return out


def manifest_of(settings) -> dict:
    return json.loads((Path(settings.index_dir) / "manifest.json").read_text(encoding="utf-8"))


def edit_manifest(settings, **changes) -> None:
    path = Path(settings.index_dir) / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m.update(changes)
    path.write_text(json.dumps(m), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# What a build writes


def test_manifest_records_format_model_chunking_files_and_artifacts(tiny_source):
    corpus, index, result = tiny_source
    m = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert result.manifest.raw == m
    assert m["format_version"] == FORMAT_VERSION == 1
    assert m["model"] == {"id": DEFAULT_MODEL, "dim": 384}
    assert m["settings"] == {
        "model": DEFAULT_MODEL,
        "chunking": dataclasses.asdict(ChunkSettings()),
        "code": m["settings"]["code"],
    }
    assert m["settings"]["code"] == f"pipeline-{PIPELINE_VERSION}"  # what cleaning/chunking output the index holds
    assert m["settings"]["chunking"] == {"target_words": 40, "max_words": 120, "min_words": 20}
    # every corpus file, skipped ones included, with the sha256 of its bytes
    assert sorted(m["files"]) == ["border.md", "empty.txt", "notes.txt"]
    for name, info in m["files"].items():
        raw = (corpus / name).read_bytes()
        assert info["sha256"] == hashlib.sha256(raw).hexdigest()
        assert info["size"] == len(raw)
    assert m["sidecars"] == {"border.meta.json": hashlib.sha256((corpus / "border.meta.json").read_bytes()).hexdigest()}
    assert m["skipped"] == [{"doc_id": "empty.txt", "reason": "empty file"}]
    assert m["counts"] == {"documents": 2, "chunks": 3, "sentences": 7}
    # every index file but the manifest, with its size, sha256, modification and change time
    files = {p.relative_to(index).as_posix() for p in index.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(m["artifacts"]) == files
    assert {"chunks.faiss", "chunks.jsonl", "docs.jsonl", "sentences.npy", "lexical/df.json"} <= files
    for rel, info in m["artifacts"].items():
        data = (index / rel).read_bytes()
        st = (index / rel).stat()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "mtime_ns": st.st_mtime_ns,
                        "ctime_ns": st.st_ctime_ns}
    # a small corpus is searched exactly
    assert m["faiss"] == {"type": "IndexFlatIP", "metric": "inner_product"}


def test_build_result_reports_skipped_files_and_why_it_built(tiny_source):
    _, _, result = tiny_source
    assert result.status == "built"
    assert result.skipped == (Skipped("empty.txt", "empty file"),)
    assert len(result.reasons) == 1 and result.reasons[0].startswith("no index at")


def test_build_reports_progress_by_stage(tiny_copy):
    calls = []
    build_index(tiny_copy, force=True, progress=lambda stage, done, total: calls.append((stage, done, total)))
    stages = list(dict.fromkeys(s for s, _, _ in calls))
    assert stages == ["load", "chunk", "embed passages", "embed sentences", "lexical index", "done"]
    assert ("embed passages", 3, 3) in calls and ("embed sentences", 7, 7) in calls
    assert calls[-1] == ("done", 1, 1)


def test_no_pickle_anywhere_in_the_index(tiny_source):
    _, index, _ = tiny_source
    npys = sorted(index.rglob("*.npy"))
    assert index / "sentences.npy" in npys and len(npys) >= 2
    for p in npys:
        arr = np.load(p, allow_pickle=False)  # raises for object arrays
        assert arr.dtype != object
    assert not [p for p in index.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]


def test_sentence_vectors_are_unit_float32_one_per_sentence(tiny_source):
    _, index, _ = tiny_source
    vecs = np.load(index / "sentences.npy", allow_pickle=False)
    assert vecs.shape == (7, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_chunks_jsonl_round_trips_the_chunker_output(tiny_source):
    corpus, index, _ = tiny_source
    expected = chunk_documents(load_corpus(corpus).documents, ChunkSettings())
    data = load_index(settings_for(corpus, index))
    assert data.chunks == expected
    assert [json.loads(line)["chunk_id"] for line in (index / "chunks.jsonl").read_text().splitlines()] == [
        "border.md#0",
        "border.md#1",
        "notes.txt#0",
    ]


def test_docs_jsonl_keeps_text_title_and_metadata_without_parts(tmp_path):
    corpus = write_corpus(
        tmp_path / "c",
        {"a.txt": "Alpha text here.", "a.meta.json": '{"title": "Alpha", "parts": [{"title": "P", "anchor": "Alpha"}]}'},
    )
    build_index(settings_for(corpus, tmp_path / "i"))
    (rec,) = [json.loads(line) for line in (tmp_path / "i" / "docs.jsonl").read_text().splitlines()]
    assert rec == {"doc_id": "a.txt", "title": "Alpha", "text": "Alpha text here.", "metadata": {"title": "Alpha"}}


def test_loaded_index_is_consistent(tiny_source):
    corpus, index, _ = tiny_source
    data = load_index(settings_for(corpus, index))
    assert data.vectors.ntotal == len(data.chunks) == data.lexical.n_docs == 3
    assert data.sentence_first.tolist() == [0, 2, 4]
    assert data.sentence_chunk.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert set(data.docs) == {"border.md", "notes.txt"}
    assert data.docs["border.md"].title == "Border Report 2023"


def test_real_index_manifest_matches_the_corpus(real_settings, real_index, real_chunks):
    m = real_index.manifest
    raw = (real_settings.corpus_dir / REAL_DOC_ID).read_bytes()
    assert m.files[REAL_DOC_ID].sha256 == hashlib.sha256(raw).hexdigest()
    assert m.counts == Counts(documents=1, chunks=len(real_chunks), sentences=sum(len(c.sentences) for c in real_chunks))
    vecs = np.load(Path(real_settings.index_dir) / "sentences.npy", allow_pickle=False)
    assert vecs.shape == (m.counts.sentences, 384)


# ---------------------------------------------------------------------------------------------
# Rebuild only when something changed


def test_rebuild_is_skipped_when_nothing_changed(tiny_copy):
    before = snapshot(Path(tiny_copy.index_dir))
    manifest = manifest_of(tiny_copy)
    result = build_index(tiny_copy)
    assert result.status == "up-to-date"
    assert result.manifest.raw == manifest
    assert result.reasons == ()
    assert result.skipped == (Skipped("empty.txt", "empty file"),)  # skipped files don't look new
    assert snapshot(Path(tiny_copy.index_dir)) == before  # nothing rewritten, not even renamed


def test_up_to_date_check_does_not_load_the_model(spawn, tiny_copy):
    script = textwrap.dedent(
        f"""
        import sys
        from rag.index import build_index
        from rag.settings import Settings
        s = Settings(corpus_dir={str(tiny_copy.corpus_dir)!r}, index_dir={str(tiny_copy.index_dir)!r},
                     cache_dir={str(tiny_copy.cache_dir)!r})
        r = build_index(s)
        print(r.status, sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "up-to-date []"


def test_touching_a_file_without_changing_it_does_not_rebuild(tiny_copy):
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert build_index(tiny_copy).status == "up-to-date"


def test_editing_a_corpus_file_rebuilds(tiny_copy):
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    p.write_text(p.read_text() + "\nA third meeting was held in Vienna.\n", encoding="utf-8")
    result = build_index(tiny_copy)
    assert result.status == "built"
    assert result.reasons == ("file changed since the build: notes.txt",)
    assert result.manifest.raw["files"]["notes.txt"]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    data = load_index(tiny_copy)
    assert any("Vienna" in c.text for c in data.chunks)
    assert build_index(tiny_copy).status == "up-to-date"


def test_an_edit_that_keeps_the_file_size_is_detected_by_its_hash(tiny_copy):
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    before = p.read_bytes()
    p.write_bytes(before.replace(b"Brussels", b"Brusselz"))
    assert p.stat().st_size == len(before)
    with pytest.raises(IndexStale, match="file changed since the build: notes.txt"):
        load_index(tiny_copy)
    assert build_index(tiny_copy).reasons == ("file changed since the build: notes.txt",)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda c: (c / "extra.txt").write_text("Extra document text."), "new file in the corpus: extra.txt"),
        (lambda c: (c / "notes.txt").unlink(), "file removed from the corpus: notes.txt"),
        (lambda c: (c / "border.meta.json").write_text('{"title": "Renamed"}'), "document metadata (*.meta.json) changed"),
    ],
    ids=["new-file", "removed-file", "sidecar-edit"],
)
def test_corpus_changes_make_the_index_stale_and_rebuild(tiny_copy, change, reason):
    change(Path(tiny_copy.corpus_dir))
    with pytest.raises(IndexStale) as exc:
        load_index(tiny_copy)
    assert reason in str(exc.value)
    result = build_index(tiny_copy)
    assert result.status == "built"
    assert reason in result.reasons


def test_sidecar_edit_changes_the_title_after_rebuild(tiny_copy):
    (Path(tiny_copy.corpus_dir) / "border.meta.json").write_text('{"title": "Renamed Report"}')
    build_index(tiny_copy)
    data = load_index(tiny_copy)
    assert {c.title for c in data.chunks if c.doc_id == "border.md"} == {"Renamed Report"}


def test_changed_chunking_settings_make_the_index_stale(tiny_copy):
    other = tiny_copy.with_(chunking=ChunkSettings(target_words=50, max_words=100, min_words=10))
    with pytest.raises(IndexStale, match="chunking settings changed"):
        load_index(other)
    result = build_index(other)
    assert result.status == "built" and result.reasons == ("chunking settings changed",)


def test_force_rebuilds_an_up_to_date_index(tiny_copy):
    before = manifest_of(tiny_copy)
    result = build_index(tiny_copy, force=True)
    assert result.status == "built"
    assert result.reasons == ("--force",)
    same = ("sha256", "bytes")  # same content (written anew, so a new mtime)
    assert {k: result.manifest.raw["artifacts"]["chunks.jsonl"][k] for k in same} == {k: before["artifacts"]["chunks.jsonl"][k] for k in same}
    assert load_index(tiny_copy).chunks  # still loads


def test_readme_in_the_index_folder_survives_a_rebuild(tiny_copy):
    readme = Path(tiny_copy.index_dir) / "README.md"
    readme.write_text("Built by `rag index`.\n", encoding="utf-8")
    assert build_index(tiny_copy).status == "up-to-date"  # not an index file: does not make it corrupt
    result = build_index(tiny_copy, force=True)
    assert readme.read_text(encoding="utf-8") == "Built by `rag index`.\n"
    assert "README.md" not in result.manifest.artifacts
    assert load_index(tiny_copy).chunks


def test_failed_build_leaves_the_previous_index_intact(tiny_copy):
    (Path(tiny_copy.corpus_dir) / "notes.txt").write_text("Completely new notes.", encoding="utf-8")
    before = snapshot(Path(tiny_copy.index_dir))

    class Boom(Exception):
        pass

    def progress(stage, done, total):
        if stage == "lexical index":  # after the vectors were written to the temporary folder
            raise Boom

    with pytest.raises(Boom):
        build_index(tiny_copy, progress=progress)
    assert snapshot(Path(tiny_copy.index_dir)) == before
    parent = Path(tiny_copy.index_dir).parent
    assert sorted(p.name for p in parent.iterdir() if p.is_dir()) == ["corpus", "index"]  # no temp folder left
    assert load_index(tiny_copy, check_fresh=False).chunks[-1].text.startswith("The ministers met")


# ---------------------------------------------------------------------------------------------
# Loading: stale, missing, corrupt, mismatched


def test_stale_index_names_the_changed_file(tiny_copy):
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    p.write_text(p.read_text() + " More.", encoding="utf-8")
    with pytest.raises(IndexStale) as exc:
        Assistant.load(tiny_copy)
    msg = str(exc.value)
    assert "file changed since the build: notes.txt" in msg
    assert "`rag index`" in msg
    assert "border.md" not in msg
    assert load_index(tiny_copy, check_fresh=False).chunks  # the caller may choose to use it anyway


def test_missing_index_says_how_to_build_it(tmp_path, tiny_source):
    corpus, _, _ = tiny_source
    settings = settings_for(corpus, tmp_path / "nowhere")
    for load in (load_index, Assistant.load):
        with pytest.raises(IndexMissing) as exc:
            load(settings)
        assert "`rag index`" in str(exc.value)
        assert str(tmp_path / "nowhere") in str(exc.value)


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _flip_a_character(p: Path) -> None:
    text = p.read_text(encoding="utf-8")
    i = text.index("ministers")
    p.write_text(text[:i] + "m1nisters" + text[i + len("ministers") :], encoding="utf-8")  # same size


@pytest.mark.parametrize(
    "rel, damage, words",
    [
        ("chunks.faiss", _truncate, "truncated"),
        ("chunks.jsonl", _flip_a_character, "modified"),
        ("docs.jsonl", _flip_a_character, "modified"),
        ("sentences.npy", Path.unlink, "missing"),
        ("lexical/vocab.index.json", _truncate, "truncated"),
    ],
    ids=["truncated-faiss", "edited-chunks", "edited-docs", "deleted-sentences", "truncated-vocab"],
)
def test_damaged_index_file_is_corrupt(tiny_copy, rel, damage, words):
    damage(Path(tiny_copy.index_dir) / rel)
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy)
    msg = str(exc.value)
    assert rel in msg and words in msg
    assert "rag index --force" in msg


def test_damaged_index_is_rebuilt_not_reported_up_to_date(tiny_copy):
    _truncate(Path(tiny_copy.index_dir) / "chunks.faiss")
    result = build_index(tiny_copy)
    assert result.status == "built"
    assert "chunks.faiss" in result.reasons[0]
    assert load_index(tiny_copy).vectors.ntotal == 3


def test_index_edited_consistently_with_its_manifest_is_still_caught(tiny_copy):
    index = Path(tiny_copy.index_dir)
    lines = (index / "chunks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (index / "chunks.jsonl").write_text("".join(lines[:-1]), encoding="utf-8")  # drop a chunk
    m = manifest_of(tiny_copy)
    data = (index / "chunks.jsonl").read_bytes()
    m["artifacts"]["chunks.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="inconsistent"):
        load_index(tiny_copy)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""], ids=["bad-json", "not-an-object", "empty"])
def test_unreadable_manifest_is_corrupt(tiny_copy, content):
    (Path(tiny_copy.index_dir) / "manifest.json").write_text(content, encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="manifest.json"):
        load_index(tiny_copy)


def test_vectors_without_a_manifest_are_corrupt_not_missing(tiny_copy):
    (Path(tiny_copy.index_dir) / "manifest.json").unlink()
    with pytest.raises(IndexCorrupt, match="no manifest.json"):
        load_index(tiny_copy)


@pytest.mark.parametrize(
    "version, words",
    [(FORMAT_VERSION + 1, "Upgrade rag"), (99, "format version 99"), (0, "old format version 0"), ("1", "format version '1'"), (None, "format version None")],
)
def test_other_format_version_is_a_mismatch(tiny_copy, version, words):
    edit_manifest(tiny_copy, format_version=version)
    with pytest.raises(IndexMismatch) as exc:
        load_manifest(Path(tiny_copy.index_dir))
    assert words in str(exc.value)
    with pytest.raises(IndexMismatch):
        Assistant.load(tiny_copy)


def test_index_built_with_another_model_is_a_mismatch(tiny_copy):
    other = tiny_copy.with_(model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(IndexMismatch) as exc:
        load_index(other)
    msg = str(exc.value)
    assert "'sentence-transformers/all-MiniLM-L6-v2'" in msg and "'sentence-transformers/all-mpnet-base-v2'" in msg


# ---------------------------------------------------------------------------------------------
# Locking and empty corpora


def _lock_file(settings) -> Path:
    index = Path(settings.index_dir).resolve()
    return index.parent / f".{index.name}.lock"


def test_lock_held_through_another_file_descriptor_refuses_a_build(tiny_copy):
    with open(_lock_file(tiny_copy), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(IndexLocked, match="another `rag index` is building"):
            build_index(tiny_copy, force=True)
    assert build_index(tiny_copy).status == "up-to-date"  # released: works again


def test_lock_held_by_another_process_refuses_a_build(spawn, tiny_copy):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            f"fh = open({str(_lock_file(tiny_copy))!r}, 'w')\n"
            "fcntl.flock(fh, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLocked):
            build_index(tiny_copy)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert build_index(tiny_copy).status == "up-to-date"


def test_lock_is_released_after_a_failed_build(tmp_path):
    settings = settings_for(tmp_path / "no-corpus", tmp_path / "index")
    with pytest.raises(CorpusEmpty):
        build_index(settings)
    with index_lock(Path(settings.index_dir)):  # would raise IndexLocked if still held
        pass


def test_missing_corpus_folder(tmp_path):
    with pytest.raises(CorpusEmpty, match="does not exist"):
        build_index(settings_for(tmp_path / "no-corpus", tmp_path / "index"))
    assert not (tmp_path / "index").exists()


def test_corpus_of_unreadable_files_names_them(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"empty.txt": "", "bin.txt": b"\x00\x00\x00 binary"})
    with pytest.raises(CorpusEmpty) as exc:
        build_index(settings_for(corpus, tmp_path / "index"))
    msg = str(exc.value)
    assert "bin.txt: looks like a binary file, not text" in msg and "empty.txt: empty file" in msg


def test_corpus_without_supported_files(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"notes.doc": "x", "sheet.xlsx": "y"})  # old Word, Excel: not read
    with pytest.raises(CorpusEmpty, match="no .txt, .md, .pdf, .docx or .html files"):
        build_index(settings_for(corpus, tmp_path / "index"))



# ---------------------------------------------------------------------------------------------
# Integrity at load: small files are re-hashed every time; large ones when size, mtime or ctime moved


def _index_hashes(monkeypatch, settings) -> list[str]:
    """Record which index files ``sha256_file`` hashes (corpus files are not listed)."""
    import rag.index

    real, index, hashed = rag.index.sha256_file, Path(settings.index_dir).resolve(), []

    def recording(path):
        if index in Path(path).resolve().parents:
            hashed.append(Path(path).resolve().relative_to(index).as_posix())
        return real(path)

    monkeypatch.setattr(rag.index, "sha256_file", recording)
    return hashed


def test_every_small_index_file_is_rehashed_at_every_load(tiny_copy, monkeypatch):
    hashed = _index_hashes(monkeypatch, tiny_copy)
    load_index(tiny_copy)
    assert sorted(hashed) == sorted(manifest_of(tiny_copy)["artifacts"])  # all of them: the index is small
    hashed.clear()
    load_index(tiny_copy)
    assert sorted(hashed) == sorted(manifest_of(tiny_copy)["artifacts"])  # and again: nothing is cached


@pytest.mark.slow
def test_large_index_files_as_built_are_trusted_without_rehashing(tiny_copy, monkeypatch):
    import rag.index

    build_index(tiny_copy, force=True)  # files whose ctime the manifest recorded (a copy has new ones)
    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)  # every file counts as large
    hashed = _index_hashes(monkeypatch, tiny_copy)
    assert load_index(tiny_copy).vectors.ntotal == 3
    assert hashed == []


@pytest.mark.slow
def test_a_touched_but_identical_large_index_file_is_rehashed_and_loads(tiny_copy, monkeypatch):
    import rag.index

    build_index(tiny_copy, force=True)
    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)
    p = Path(tiny_copy.index_dir) / "chunks.jsonl"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    hashed = _index_hashes(monkeypatch, tiny_copy)
    assert load_index(tiny_copy).chunks
    assert hashed == ["chunks.jsonl"]


def test_copied_index_is_fully_hashed_since_its_ctimes_are_new(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)
    hashed = _index_hashes(monkeypatch, tiny_copy)  # tiny_copy copied the files: same mtime, new ctime
    assert load_index(tiny_copy).chunks
    assert sorted(hashed) == sorted(manifest_of(tiny_copy)["artifacts"])


def test_index_from_before_mtimes_were_recorded_is_fully_checked(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)
    m = manifest_of(tiny_copy)
    for info in m["artifacts"].values():
        del info["mtime_ns"], info["ctime_ns"]
    (Path(tiny_copy.index_dir) / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    assert load_index(tiny_copy).chunks
    _flip_a_character(Path(tiny_copy.index_dir) / "docs.jsonl")
    with pytest.raises(IndexCorrupt, match="docs.jsonl: modified after the build"):
        load_index(tiny_copy)


def test_vectors_are_memory_mapped_and_read_only(tiny_source):
    corpus, index, _ = tiny_source
    data = load_index(settings_for(corpus, index))
    assert not data.sentence_vecs.flags.writeable  # a view of the file, not a copy
    assert data.sentence_vecs.base is not None
    np.testing.assert_array_equal(data.sentence_vecs, np.load(index / "sentences.npy", allow_pickle=False))
    assert data.vectors.reconstruct(0).shape == (384,)


# ---------------------------------------------------------------------------------------------
# Large indexes are read lazily (forced here with a tiny threshold)


@pytest.fixture
def lazy(monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)


def test_lazy_records_equal_the_eager_ones(tiny_copy, lazy):
    from rag.index import LazyChunks, LazyDocs

    eager_docs, eager_chunks = _eager(tiny_copy)
    data = load_index(tiny_copy)
    assert isinstance(data.chunks, LazyChunks) and isinstance(data.docs, LazyDocs)
    assert data.chunks == eager_chunks and len(data.chunks) == 3
    assert data.chunks[-1] == eager_chunks[-1] and data.chunks[1:] == eager_chunks[1:]
    assert dict(data.docs) == eager_docs and "notes.txt" in data.docs and "nope.txt" not in data.docs
    assert data.sentence_first.tolist() == [0, 2, 4] and data.sentence_chunk.tolist() == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(IndexError, match="out of range"):
        data.chunks[3]
    with pytest.raises(KeyError):
        data.docs["nope.txt"]


def _eager(settings):
    """The records of an index folder, every line parsed."""
    index = Path(settings.index_dir)
    from rag.index import _chunk_from_json, _doc_from_json

    docs = {d["doc_id"]: _doc_from_json(d) for d in map(json.loads, (index / "docs.jsonl").read_text().splitlines())}
    chunks = [_chunk_from_json(json.loads(line)) for line in (index / "chunks.jsonl").read_text().splitlines()]
    return docs, chunks


def test_lazy_index_answers_like_the_eager_one(tiny_copy, monkeypatch):
    import rag.index

    question = "Where did the ministers meet?"
    eager = Assistant.load(tiny_copy).ask(question)
    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)
    lazy_answer = Assistant.load(tiny_copy).ask(question)
    assert lazy_answer.answer == eager.answer and lazy_answer.citations == eager.citations


def test_lazy_index_with_offsets_that_do_not_match_is_corrupt(tiny_copy, lazy):
    index = Path(tiny_copy.index_dir)
    offsets = np.load(index / "chunks.offsets.npy")
    np.save(index / "chunks.offsets.npy", offsets[:-1], allow_pickle=False)  # one line short
    m = manifest_of(tiny_copy)
    data = (index / "chunks.offsets.npy").read_bytes()
    m["artifacts"]["chunks.offsets.npy"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="inconsistent"):
        load_index(tiny_copy)


def test_index_without_offset_files_is_read_eagerly(tiny_copy, lazy):
    """Indexes built before the offset files existed still load (every record parsed at load)."""
    index = Path(tiny_copy.index_dir)
    m = manifest_of(tiny_copy)
    for rel in ("chunks.offsets.npy", "docs.offsets.npy", "docs.ids.json", "sentence_counts.npy"):
        (index / rel).unlink()
        del m["artifacts"][rel]
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    data = load_index(tiny_copy)
    assert isinstance(data.chunks, list) and len(data.chunks) == 3


def test_lazy_index_keeps_reading_its_own_files_after_a_rebuild(tiny_copy, lazy):
    _, before = _eager(tiny_copy)
    data = load_index(tiny_copy)  # nothing parsed yet
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    p.write_text("Completely new notes about Vienna.", encoding="utf-8")
    assert build_index(tiny_copy).status == "built"  # renamed into place over the loaded folder
    assert data.chunks[2] == before[2]  # first read after the rebuild: still the index that was loaded
    assert "Vienna" in load_index(tiny_copy).chunks[2].text


# ---------------------------------------------------------------------------------------------
# The pipeline version follows the pipeline's output

OTHER_FORMATS = {
    "glacier.html": "<html><head><title>Glacier Facts</title><script>x()</script></head><body><nav>Home</nav>"
                    "<main><h1>Glaciers</h1><p>The Aletsch glacier is 23 km long.</p><h2>Ice</h2>"
                    "<table><tr><td>Year</td><td>Loss</td></tr><tr><td>2022</td><td>6 %</td></tr></table></main></body></html>",
}


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Harbour Report", level=1)
    d.add_paragraph("In 2023 the harbour of Valletta received 412 cargo ships.")
    table = d.add_table(rows=2, cols=2)
    for r, (a, b) in enumerate([("Vessel", "Tonnes"), ("Aurora", "1200")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    d.save(path)
    return path


#: sha256 of what loading, cleaning, chunking and tokenising make of the real corpus, the tiny one and
#: one file of every other format (text-layer PDF, Word, HTML),
#: by PIPELINE_VERSION. When this test fails, the index output changed: bump PIPELINE_VERSION in
#: rag/index.py (existing indexes then rebuild) and record the new digest here under the new version.
PIPELINE_OUTPUT = {"2": "14250c49229732071f5b2b9b8824206de4617821e61969ed65021aecbe117bc5",
                   "3": "44c054ff803e80e9f1b6c698f518829facb395461cbedf4982b76d633f2c09e2",  # 3: a signature after "Yours sincerely," is text
                   "4": "64fe9bae60368975692c252fd39274e0bc1887ea9a926e607ef9e75eb0278e81"}  # 4: ... shown and read, not searched


def _pipeline_output_digest(tmp_path) -> str:
    import shutil

    from conftest import REAL_CORPUS, TINY_FILES, make_pdf
    from rag.lexical import tokenize

    corpus = write_corpus(tmp_path / "corpus", {**TINY_FILES, **OTHER_FORMATS})
    shutil.copy(REAL_CORPUS / REAL_DOC_ID, corpus / REAL_DOC_ID)
    make_pdf(corpus / "pages.pdf", [["Page one says the fleet has 12 boats."], ["Page two: the budget is EUR 5 million."]])
    make_docx(corpus / "harbour.docx")
    h = hashlib.sha256()
    for c in chunk_documents(load_corpus(corpus).documents, ChunkSettings()):
        record = [c.chunk_id, c.doc_id, c.title, c.page, c.page_end, list(c.section), c.start, c.end, c.text,
                  [list(s) for s in c.sentences], c.search_text(), tokenize(c.search_text())]
        h.update(json.dumps(record, ensure_ascii=False).encode())
    return h.hexdigest()


def test_pipeline_output_changes_only_with_a_new_pipeline_version(tmp_path):
    digest = _pipeline_output_digest(tmp_path)
    assert PIPELINE_OUTPUT.get(PIPELINE_VERSION) == digest, (
        f"loading/cleaning/chunking/tokenising output changed (digest {digest}): bump PIPELINE_VERSION in "
        f"rag/index.py so existing indexes rebuild, and record the digest in PIPELINE_OUTPUT under the new version")
