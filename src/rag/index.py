"""Stage 4c: the index folder. Plain files and a manifest, no pickle anywhere:

- ``manifest.json``: format version, model id and dimension, chunking settings, sha256 and size of
  every corpus file, and sha256, size and mtime of every index file (so truncation or edits are
  detected; a file whose size and mtime are as recorded is trusted without re-hashing it);
- ``docs.jsonl`` (document texts, for showing a citation in context), ``chunks.jsonl``, with the
  byte offset of every line (``docs.offsets.npy``, ``chunks.offsets.npy``), the document ids in
  order (``docs.ids.json``) and each chunk's sentence count (``sentence_counts.npy``), so a large
  index reads a record only when it is used (:data:`LAZY_ABOVE`);
- ``chunks.faiss``: inner product over L2-normalised chunk vectors, FAISS's own format; exact
  (``IndexFlatIP``) for small corpora, HNSW past :data:`rag.ann.EXACT_MAX` vectors, as recorded
  in the manifest's ``"faiss"`` entry; memory-mapped at load;
- ``sentences.npy``: sentence vectors for answer extraction (``np.load(allow_pickle=False)``,
  memory-mapped);
- ``lexical/``: the BM25 index (bm25s's plain files) and document frequencies.

Built into a temporary folder next to the target and renamed into place, under a lock, so a crash
mid-build leaves the previous index intact and two builders cannot interleave.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import mmap
import operator
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import ann
from .chunk import Chunk, chunk_documents
from .clean import collapse_ws, search_form
from .errors import CorpusEmpty, IndexCorrupt, IndexLocked, IndexMismatch, IndexMissing, IndexStale
from .lexical import LexicalIndex
from .load import Document, LoadReport, corpus_files, load_corpus, sha256_file
from .settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _noop(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class DocRecord:
    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any]


@dataclass
class IndexData:
    """A loaded index: everything a query needs, read once."""

    path: Path
    manifest: dict[str, Any]
    docs: Mapping[str, DocRecord]  # a dict; a LazyDocs for large indexes
    chunks: Sequence[Chunk]  # a list; a LazyChunks for large indexes
    vectors: Any  # faiss.Index (IndexFlatIP or IndexHNSWFlat: see manifest["faiss"]), memory-mapped
    sentence_vecs: np.ndarray  # (n_sentences, dim)
    sentence_chunk: np.ndarray  # chunk index of each sentence
    sentence_first: np.ndarray  # first sentence index of each chunk
    lexical: LexicalIndex


@dataclass(frozen=True)
class BuildResult:
    status: str  # "built" | "up-to-date"
    manifest: dict[str, Any]
    skipped: tuple = ()
    notices: tuple = ()
    reasons: tuple[str, ...] = ()  # why it was rebuilt


# ---------------------------------------------------------------------------------------------
# Freshness


def _code_fingerprint() -> str:
    """Hash of the code that decides what goes into an index (cleaning, chunking, tokenising):
    changing it makes existing indexes stale, so `rag index` rebuilds them."""
    h = hashlib.sha256()
    for name in ("clean.py", "chunk.py", "lexical.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def _settings_fingerprint(settings: Settings) -> dict[str, Any]:
    return {"model": settings.model, "chunking": dataclasses.asdict(settings.chunking), "code": _code_fingerprint()}


def read_manifest(index_dir: Path) -> dict[str, Any]:
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if not path.exists():
        if index_dir.exists() and any(index_dir.glob("*.faiss")):
            raise IndexCorrupt(f"index at {index_dir} has no {MANIFEST}: rebuild it with `rag index --force`")
        raise IndexMissing(f"no index at {index_dir}: build it with `rag index` (or `make index`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"{path} is unreadable ({exc}): rebuild with `rag index --force`") from exc
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexMismatch(
            f"index at {index_dir} has format version {version!r}; this rag reads version {FORMAT_VERSION}. "
            "Upgrade rag, or rebuild the index with `rag index --force`"
        )
    if version < FORMAT_VERSION:
        raise IndexMismatch(f"index at {index_dir} has old format version {version}: rebuild with `rag index --force`")
    return manifest


def stale_reasons(manifest: dict[str, Any], settings: Settings, corpus_dir: Path | None = None) -> list[str]:
    """Why an index no longer matches the corpus and settings; empty when it is up to date."""
    reasons = []
    fp = _settings_fingerprint(settings)
    if manifest.get("settings", {}).get("model") != fp["model"]:
        reasons.append(f"model changed: index has {manifest.get('settings', {}).get('model')!r}, settings say {fp['model']!r}")
    if manifest.get("settings", {}).get("chunking") != fp["chunking"]:
        reasons.append("chunking settings changed")
    if manifest.get("settings", {}).get("code") != fp["code"]:
        reasons.append("rag's cleaning or chunking code changed since the build")
    corpus_dir = Path(corpus_dir or settings.corpus_dir)
    recorded: dict[str, dict] = manifest.get("files", {})
    current = {p.relative_to(corpus_dir).as_posix(): p for p in corpus_files(corpus_dir)} if corpus_dir.is_dir() else {}
    for doc_id in sorted(set(recorded) - set(current)):
        reasons.append(f"file removed from the corpus: {doc_id}")
    for doc_id in sorted(set(current) - set(recorded)):
        reasons.append(f"new file in the corpus: {doc_id}")
    for doc_id in sorted(set(current) & set(recorded)):
        rec, p = recorded[doc_id], current[doc_id]
        st = p.stat()
        if st.st_size == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns"):
            continue  # fast path: unchanged size and time
        if st.st_size != rec.get("size") or sha256_file(p) != rec.get("sha256"):
            reasons.append(f"file changed since the build: {doc_id}")
    sidecars = manifest.get("sidecars", {})
    if sidecars != _sidecar_hashes(corpus_dir):
        reasons.append("document metadata (*.meta.json) changed")
    return reasons


def _sidecar_hashes(corpus_dir: Path) -> dict[str, str]:
    if not corpus_dir.is_dir():
        return {}
    return {
        p.relative_to(corpus_dir).as_posix(): sha256_file(p)
        for p in sorted(corpus_dir.rglob("*.meta.json"))
        if not any(part.startswith(".") for part in p.relative_to(corpus_dir).parts)
    }


# ---------------------------------------------------------------------------------------------
# Build


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    index_dir = Path(index_dir).resolve()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = index_dir.parent / f".{index_dir.name}.lock"
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(
                    f"another `rag index` is building {index_dir}; wait for it to finish and try again"
                ) from exc
            raise
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_index(
    settings: Settings,
    force: bool = False,
    progress: Progress = _noop,
    embedder=None,
) -> BuildResult:
    """Build ``settings.index_dir`` from ``settings.corpus_dir`` unless it is already up to date."""
    index_dir = Path(settings.index_dir)
    corpus_dir = Path(settings.corpus_dir)
    with index_lock(index_dir):
        reasons: list[str] = []
        if not force:
            try:
                manifest = read_manifest(index_dir)
                reasons = stale_reasons(manifest, settings, corpus_dir)
                if not reasons:
                    verify_files(index_dir, manifest)
                    return BuildResult("up-to-date", manifest, tuple(manifest.get("skipped", [])))
            except (IndexMissing, IndexCorrupt, IndexMismatch) as exc:
                reasons = [str(exc)]
        else:
            reasons = ["--force"]
        t0 = time.perf_counter()
        if not corpus_dir.is_dir():
            raise CorpusEmpty(f"corpus folder {corpus_dir} does not exist: create it and add .txt, .md or .pdf files")
        progress("load", 0, 1)
        report = load_corpus(corpus_dir, max_file_mb=settings.max_file_mb)
        if not report.documents:
            names = "; ".join(f"{s.doc_id}: {s.reason}" for s in report.skipped) or "no .txt, .md or .pdf files"
            raise CorpusEmpty(f"no readable documents in {corpus_dir} ({names})")
        manifest = write_index(settings, index_dir, report, progress, embedder, started=t0)
        return BuildResult("built", manifest, tuple(manifest["skipped"]), report.notices, tuple(reasons))


def write_index(
    settings: Settings,
    index_dir: Path,
    report: LoadReport,
    progress: Progress = _noop,
    embedder=None,
    extra: dict[str, Any] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Chunk, embed and write ``report``'s documents to ``index_dir`` (temporary folder, then rename).
    The caller holds the lock. ``extra`` is merged into the manifest."""
    t0 = time.perf_counter() if started is None else started
    progress("chunk", 0, len(report.documents))
    chunks = chunk_documents(report.documents, settings.chunking)
    progress("chunk", len(report.documents), len(report.documents))
    if embedder is None:
        from .embed import get_embedder

        embedder = get_embedder(settings.model, str(settings.cache_dir), settings.embed_backend)
    for leftover in index_dir.parent.glob(f".{index_dir.name}.*-*"):  # from builds that were killed
        if leftover.is_dir() and leftover.name.split(".")[-1].startswith(("tmp-", "old-")):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        manifest = _write(tmp, settings, report, chunks, embedder, progress)
        manifest.update(extra or {})
        manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
        _write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("done", 1, 1)
    return manifest


def _batched_embed(embedder, texts: list[str], stage: str, progress: Progress, batch: int = 64) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), batch):
        parts.append(embedder.embed(texts[i : i + batch]))
        progress(stage, min(i + batch, len(texts)), len(texts))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.vstack(parts).astype(np.float32)


def _write(tmp: Path, settings: Settings, report: LoadReport, chunks: list[Chunk], embedder, progress: Progress) -> dict:
    import faiss

    docs = {d.doc_id: d for d in report.documents}
    doc_lines = (
        json.dumps({"doc_id": d.doc_id, "title": d.title, "text": d.text,
                    "metadata": {k: v for k, v in d.metadata.items() if k != "parts"}}, ensure_ascii=False)
        for d in report.documents
    )
    np.save(tmp / "docs.offsets.npy", _write_lines(tmp / "docs.jsonl", doc_lines), allow_pickle=False)
    _write_json(tmp / "docs.ids.json", [d.doc_id for d in report.documents])
    chunk_lines = (json.dumps(_chunk_to_json(c), ensure_ascii=False) for c in chunks)
    np.save(tmp / "chunks.offsets.npy", _write_lines(tmp / "chunks.jsonl", chunk_lines), allow_pickle=False)
    np.save(tmp / "sentence_counts.npy", np.array([len(c.sentences) for c in chunks], dtype=np.int32), allow_pickle=False)

    search_texts = [c.search_text() for c in chunks]
    vecs = _batched_embed(embedder, search_texts, "embed passages", progress)
    dim = int(vecs.shape[1])
    spec = ann.choose(len(chunks), sum(len(c.sentences) for c in chunks))
    faiss.write_index(ann.build(vecs, spec), str(tmp / "chunks.faiss"))
    del vecs

    sent_texts = [search_form(collapse_ws(docs[c.doc_id].text[s:e])) for c in chunks for s, e in c.sentences]
    svecs = _batched_embed(embedder, sent_texts, "embed sentences", progress)
    np.save(tmp / "sentences.npy", svecs, allow_pickle=False)

    progress("lexical index", 0, 1)
    LexicalIndex.build(search_texts).save(tmp / "lexical")
    progress("lexical index", 1, 1)

    files = {}
    for d in report.documents:
        st = d.path.stat()
        files[d.doc_id] = {"sha256": d.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    for s in report.skipped:  # skipped files are recorded too, so they don't make the index look stale
        p = Path(settings.corpus_dir) / s.doc_id
        if p.exists():
            st = p.stat()
            files[s.doc_id] = {"sha256": sha256_file(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"id": settings.model, "dim": dim},
        "settings": _settings_fingerprint(settings),
        "corpus_dir": str(Path(settings.corpus_dir).resolve()),
        "files": files,
        "sidecars": _sidecar_hashes(Path(settings.corpus_dir)),
        "skipped": [{"doc_id": s.doc_id, "reason": s.reason} for s in report.skipped],
        "counts": {"documents": len(report.documents), "chunks": len(chunks), "sentences": len(sent_texts)},
        "faiss": spec,
        "artifacts": _artifact_hashes(tmp),
    }


def _write_lines(path: Path, lines: Iterable[str]) -> np.ndarray:
    """Write JSON lines; return the byte offset of each line and of the end (so line i can be read
    alone: ``data[off[i]:off[i + 1]]``)."""
    offsets = [0]
    with open(path, "wb") as fh:
        for line in lines:
            raw = (line + "\n").encode("utf-8")
            fh.write(raw)
            offsets.append(offsets[-1] + len(raw))
    return np.array(offsets, dtype=np.int64)


def _swap_into_place(tmp: Path, index_dir: Path) -> None:
    old = index_dir.parent / f".{index_dir.name}.old-{os.getpid()}"
    keep = [p for p in index_dir.iterdir() if p.name == "README.md"] if index_dir.exists() else []
    for p in keep:
        shutil.copy2(p, tmp / p.name)
    if index_dir.exists():
        os.replace(index_dir, old)
    os.replace(tmp, index_dir)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _artifact_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, "README.md"):
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = {"sha256": sha256_file(p), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def verify_files(index_dir: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Check every index file against the manifest: present, of the recorded size, and of the
    recorded sha256. A file whose size and mtime are those recorded at build is trusted without
    re-hashing it (a 1M-passage index holds gigabytes); ``full=True`` re-hashes every file."""
    for rel, info in manifest.get("artifacts", {}).items():
        p = Path(index_dir) / rel
        if not p.is_file():
            raise IndexCorrupt(f"index file {rel} is missing from {index_dir}: rebuild with `rag index --force`")
        st = p.stat()
        if st.st_size != info.get("bytes"):
            raise IndexCorrupt(
                f"index file {rel} is {st.st_size} bytes, expected {info.get('bytes')} (truncated or replaced): "
                "rebuild with `rag index --force`"
            )
        if not full and info.get("mtime_ns") is not None and st.st_mtime_ns == info["mtime_ns"]:
            continue
        if sha256_file(p) != info.get("sha256"):
            raise IndexCorrupt(f"index file {rel} was modified after the build: rebuild with `rag index --force`")


def verify_index(index_dir: Path) -> dict[str, Any]:
    """Full check of an index folder: its manifest and the sha256 of every file. Returns the manifest."""
    manifest = read_manifest(Path(index_dir))
    verify_files(Path(index_dir), manifest, full=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# Load


def _chunk_to_json(c: Chunk) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    d["section"] = list(c.section)
    d["sentences"] = [list(s) for s in c.sentences]
    return d


def _chunk_from_json(d: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=d["chunk_id"], doc_id=d["doc_id"], title=d["title"], page=int(d["page"]),
        page_end=int(d["page_end"]), section=tuple(d["section"]), start=int(d["start"]), end=int(d["end"]),
        text=d["text"], sentences=tuple((int(a), int(b)) for a, b in d["sentences"]),
    )


def load_index(settings: Settings, check_fresh: bool = True) -> IndexData:
    """Load and check an index. Raises IndexMissing / IndexStale / IndexCorrupt / IndexMismatch."""
    import faiss

    index_dir = Path(settings.index_dir)
    manifest = read_manifest(index_dir)
    if manifest.get("model", {}).get("id") != settings.model:
        raise IndexMismatch(
            f"index at {index_dir} was built with model {manifest.get('model', {}).get('id')!r}, but the settings "
            f"ask for {settings.model!r}: rebuild with `rag index --force`, or set RAG_MODEL to the index's model"
        )
    if check_fresh:
        corpus_dir = Path(settings.corpus_dir)
        if not corpus_dir.is_dir():  # e.g. run from another folder: check against the corpus it was built from
            corpus_dir = Path(manifest.get("corpus_dir", ""))
        if corpus_dir.is_dir():
            reasons = stale_reasons(manifest, settings, corpus_dir)
        else:
            log.warning("corpus folder %s not found: cannot check that the index is up to date", settings.corpus_dir)
            reasons = [r for r in stale_reasons(manifest, settings, corpus_dir) if not r.startswith("file removed")]
            reasons = [r for r in reasons if "meta.json" not in r]
        if reasons:
            raise IndexStale(f"index at {index_dir} is out of date ({'; '.join(reasons[:3])}): run `rag index`")
    verify_files(index_dir, manifest)
    try:
        lazy = manifest.get("counts", {}).get("chunks", 0) > LAZY_ABOVE and (index_dir / "chunks.offsets.npy").is_file()
        if lazy:  # a large index: records are parsed when first used, not all at load
            docs, chunks, counts = _lazy_records(index_dir)
        else:
            docs, chunks = _read_records(index_dir)
            counts = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
        # memory-mapped: loading costs no copy, queries touch only the pages they need
        vectors = faiss.read_index(str(index_dir / "chunks.faiss"), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        ann.configure(vectors, manifest.get("faiss") or {"type": ann.FLAT})
        svecs = np.asarray(np.load(index_dir / "sentences.npy", mmap_mode="r", allow_pickle=False))
        if svecs.dtype != np.float32 or svecs.ndim != 2:
            raise ValueError(f"sentences.npy holds {svecs.dtype} of shape {svecs.shape}, expected float32 (n, dim)")
        lexical = LexicalIndex.load(index_dir / "lexical")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise IndexCorrupt(f"index at {index_dir} cannot be read ({type(exc).__name__}: {exc}): rebuild with `rag index --force`") from exc
    dim = manifest["model"]["dim"]
    if vectors.d != dim:
        raise IndexMismatch(
            f"index at {index_dir} holds {vectors.d}-dimension vectors but its manifest says {dim}: "
            "rebuild with `rag index --force`"
        )
    n_sent = int(counts.sum())
    if vectors.ntotal != len(chunks) or len(counts) != len(chunks) or svecs.shape != (n_sent, dim) or lexical.n_docs != len(chunks):
        raise IndexCorrupt(f"index at {index_dir} is inconsistent (vector and chunk counts differ): rebuild with `rag index --force`")
    counts = counts.astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(chunks)), counts)
    return IndexData(index_dir, manifest, docs, chunks, vectors, svecs, owner, first, lexical)


def _read_records(index_dir: Path) -> tuple[dict[str, DocRecord], list[Chunk]]:
    docs = {}
    with open(index_dir / "docs.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = _doc_from_json(json.loads(line))
            docs[d.doc_id] = d
    with open(index_dir / "chunks.jsonl", encoding="utf-8") as fh:
        chunks = [_chunk_from_json(json.loads(line)) for line in fh]
    return docs, chunks


def _doc_from_json(d: dict[str, Any]) -> DocRecord:
    return DocRecord(d["doc_id"], d["title"], d["text"], d.get("metadata", {}))


def _lazy_records(index_dir: Path) -> tuple["LazyDocs", "LazyChunks", np.ndarray]:
    ids = json.loads((index_dir / "docs.ids.json").read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        raise ValueError("docs.ids.json is not a list of document ids")
    docs = LazyDocs(index_dir / "docs.jsonl", ids, np.load(index_dir / "docs.offsets.npy", allow_pickle=False))
    chunks = LazyChunks(index_dir / "chunks.jsonl", np.load(index_dir / "chunks.offsets.npy", allow_pickle=False))
    counts = np.load(index_dir / "sentence_counts.npy", allow_pickle=False)
    return docs, chunks, counts


#: Indexes with more passages than this are read lazily: a record is parsed from its JSON line
#: when first used (then cached), instead of parsing every line at load (15 s for 1M passages).
LAZY_ABOVE = 50_000
#: Parsed records kept per lazy store (a query touches at most a few hundred).
LAZY_CACHE = 65_536


class _Lines:
    """The JSON lines of one file, memory-mapped, with the byte offset of each line. The mapping
    keeps the file's contents even if a rebuild renames a new index into place."""

    def __init__(self, path: Path, offsets: np.ndarray) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        size = path.stat().st_size
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != size or np.any(np.diff(offsets) <= 0):
            raise ValueError(f"the line offsets of {path.name} do not match the file ({size} bytes): inconsistent")
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def record(self, i: int) -> dict[str, Any]:
        return json.loads(self._map[self._offsets[i] : self._offsets[i + 1]])


class LazyChunks(Sequence[Chunk]):
    """``IndexData.chunks`` of a large index: a read-only sequence of :class:`Chunk`, parsed on access."""

    def __init__(self, path: Path, offsets: np.ndarray) -> None:
        self._lines = _Lines(path, offsets)
        self._get = lru_cache(maxsize=LAZY_CACHE)(lambda i: _chunk_from_json(self._lines.record(i)))

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"chunk index {i} out of range (the index has {len(self)} passages)")
        return self._get(i)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyChunks({len(self)} passages)"


class LazyDocs(Mapping[str, DocRecord]):
    """``IndexData.docs`` of a large index: document id -> :class:`DocRecord`, parsed on access."""

    def __init__(self, path: Path, ids: list[str], offsets: np.ndarray) -> None:
        self._lines = _Lines(path, offsets)
        if len(ids) != len(self._lines):
            raise ValueError(f"docs.ids.json names {len(ids)} documents, docs.jsonl holds {len(self._lines)}: inconsistent")
        self._pos = {d: i for i, d in enumerate(ids)}
        self._get = lru_cache(maxsize=LAZY_CACHE)(lambda i: _doc_from_json(self._lines.record(i)))

    def __getitem__(self, doc_id: str) -> DocRecord:
        return self._get(self._pos[doc_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._pos)

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos

    def __repr__(self) -> str:
        return f"LazyDocs({len(self)} documents)"
