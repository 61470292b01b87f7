"""Stage 4c: the index folder. Plain files and a manifest, no pickle anywhere:

- ``manifest.json``: format version, model id and dimension, chunking settings, sha256 and size of
  every corpus file, and sha256, size, mtime and ctime of every index file; checked against
  :class:`Manifest` at every load (a wrong type is "index damaged", never a traceback);
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

Integrity at load (:func:`verify_files`): the manifest must record every index file rag writes
(:data:`REQUIRED_ARTIFACTS`, and any other of its names the folder holds), and names nothing else;
every index file up to :data:`HASH_AT_LOAD_MAX` bytes is re-hashed (sha256) at every load; a larger
one is trusted while its size, mtime *and ctime* are as recorded at build (the kernel sets ctime on
every write, ``chmod`` or ``touch``, and nothing can set it back, so ``touch -r`` does not hide an
edit) and re-hashed otherwise. A load that a rebuild's swap overlapped (the folder or manifest
changed while it was read) starts again, so it never mixes two builds nor calls a swap "damage".

Safety of the folder (:func:`check_index_target`): ``rag index`` only replaces a folder that is
missing, empty (or holds only a ``README.md``) or recognisably a rag index (a manifest that parses
as rag's, or the vectors, and nothing but the names rag writes, in ``lexical/`` too); it refuses
anything else, a file, a read-only folder, a corpus that is missing or a file, and any folder that
is, contains or is inside the corpus, before anything is touched (a refusal that comes after the
lock removes the lock file and folders it created).

Built into a temporary folder next to the target and renamed into place, under a lock, so a crash
mid-build leaves the previous index intact and two builders cannot interleave. The swap is two
renames (the old index aside as ``.NAME.old-PID``, the new one in); a build killed between them
leaves no index folder, and the next load or build puts the previous index back
(:func:`recover_index`).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import mmap
import operator
import os
import re
import shutil
import stat
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from . import ann
from .chunk import Chunk, chunk_document
from .text import collapse_ws, search_form
from .errors import (CorpusEmpty, IndexCorrupt, IndexError_, IndexLocked, IndexMismatch, IndexMissing, IndexRefused,
                     IndexStale)
from .lexical import LexicalIndex
from .load import SUPPORTED_SHOWN, Document, LoadReport, Skipped, brief_repr, load_corpus, open_regular, scan_corpus, sha256_file, sidecar_path
from .settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
README = "README.md"  # the repository's placeholder in index/: kept across builds, never an index file
LEXICAL = "lexical"
#: Every top-level file name an index folder holds (plus the ``lexical/`` folder and a README.md).
INDEX_FILES = frozenset({
    MANIFEST, "docs.jsonl", "docs.offsets.npy", "docs.ids.json", "chunks.jsonl", "chunks.offsets.npy",
    "sentence_counts.npy", "chunks.faiss", "sentences.npy",
})
#: The files :meth:`LexicalIndex.save` writes in ``lexical/`` (bm25s's arrays and parameters, and
#: ``df.json``); nothing else may be there.
LEXICAL_FILES = frozenset({
    "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "params.index.json", "vocab.index.json",
    "df.json",
})
#: Index files every manifest must record (sha256 and size), so none is read unchecked.
REQUIRED_ARTIFACTS = frozenset({"docs.jsonl", "chunks.jsonl", "chunks.faiss", "sentences.npy"}
                               | {f"{LEXICAL}/{name}" for name in LEXICAL_FILES})
#: Index files a manifest must record when the folder holds them (indexes built before the offset
#: files existed have none of them, and are read eagerly).
ARTIFACTS = REQUIRED_ARTIFACTS | (INDEX_FILES - {MANIFEST})
#: Index files up to this size are re-hashed at every load. sha256 runs at ~1.1 GB/s here, so this
#: costs at most ~60 ms a file. The default index (137 passages: 14 files, 0.96 MB) is hashed in
#: full in 2.0 ms (the stat-only check took 0.5 ms; the whole warm load_index 13 ms). At 1M passages
#: the folder is ~7 GB: hashing all of it would take ~6 s (page cache warm) against a 0.75 s load, so
#: the big files (vectors, JSON lines, BM25 matrices) take the size+mtime+ctime path instead.
HASH_AT_LOAD_MAX = 64 * 2**20
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _noop(stage: str, done: int, total: int) -> None:
    pass


#: Called with the name of each step of the swap ("ready", "set-aside", "renamed"); tests make a
#: build kill itself there to check that no step leaves the index lost.
_swap_step: Callable[[str], None] = lambda step: None  # noqa: E731


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
    manifest: "Manifest"
    docs: Mapping[str, DocRecord]  # a dict; a LazyDocs for large indexes
    chunks: Sequence[Chunk]  # a list; a LazyChunks for large indexes
    vectors: Any  # faiss.Index (IndexFlatIP or IndexHNSWFlat: see manifest.faiss), memory-mapped
    sentence_vecs: np.ndarray  # (n_sentences, dim)
    sentence_chunk: np.ndarray  # chunk index of each sentence
    sentence_first: np.ndarray  # first sentence index of each chunk
    lexical: LexicalIndex


@dataclass(frozen=True)
class BuildResult:
    status: str  # "built" | "up-to-date"
    manifest: "Manifest"
    skipped: tuple[Skipped, ...] = ()  # files not indexed, with the reason (refused ones too)
    notices: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # why it was rebuilt
    changes: "Changes | None" = None  # an incremental build: which files it read again; None: everything


@dataclass(frozen=True)
class Changes:
    """What an incremental build did, by document id: only ``added`` and ``changed`` files were read
    and embedded; ``unchanged`` ones kept their passages and vectors from the previous index."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0


def _damaged(index_dir: Path, rel: str, why: str) -> IndexCorrupt:
    where = Path(index_dir) / rel if rel else Path(index_dir)
    return IndexCorrupt(f"index damaged: {where}: {why}; run `rag index --force`")


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "unreadable"
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if type(exc) is ValueError else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# The manifest, as typed records (each checks the JSON it is made from)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = object()
T = TypeVar("T")


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    """``obj[key]``, which must be a ``kind`` (an int counts as a float, a bool as neither);
    ``default`` when absent."""
    if key not in obj:
        if default is _REQUIRED:
            raise ValueError(f"{where}{key}: missing")
        return default
    value = obj[key]
    ok = isinstance(value, (int, float) if kind is float else kind)
    if isinstance(value, bool) and kind in (int, float):
        ok = False
    if not ok:
        raise ValueError(f"{where}{key}: expected {_KINDS.get(kind, kind.__name__)}, got {brief_repr(value)}")
    return value


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _table(obj: Mapping[str, Any], key: str, where: str, make: Callable[[Any, str], T]) -> dict[str, T]:
    """``obj[key]``: an object of records, each made by ``make(value, where)``."""
    table = _get(obj, key, dict, where)
    return {name: make(value, f"{where}{key}[{name!r}].") for name, value in table.items()}


def _sha(value: str, where: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError(f"{where}sha256: expected 64 hex digits, got {brief_repr(value)}")
    return value


def _non_negative(value: int, where: str) -> int:
    if value < 0:
        raise ValueError(f"{where}: must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class FileRecord:
    """A corpus file as it was at build: sha256, size and (when recorded) mtime and when it was read."""

    sha256: str
    size: int
    mtime_ns: int | None = None
    indexed_at: str | None = None  # "%Y-%m-%dT%H:%M:%S%z" of the build that last read it

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "FileRecord":
        if not isinstance(obj, dict):
            raise ValueError(f"{where[:-1]}: expected an object, got {brief_repr(obj)}")
        return cls(_sha(_get(obj, "sha256", str, where), where), _non_negative(_get(obj, "size", int, where), where + "size"),
                   _get(obj, "mtime_ns", int, where, None), _get(obj, "indexed_at", str, where, None))


@dataclass(frozen=True)
class ArtifactRecord:
    """An index file as written: sha256, size, and (when recorded) mtime and ctime."""

    sha256: str
    bytes: int
    mtime_ns: int | None = None
    ctime_ns: int | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ArtifactRecord":
        if not isinstance(obj, dict):
            raise ValueError(f"{where[:-1]}: expected an object, got {brief_repr(obj)}")
        return cls(_sha(_get(obj, "sha256", str, where), where), _non_negative(_get(obj, "bytes", int, where), where + "bytes"),
                   _get(obj, "mtime_ns", int, where, None), _get(obj, "ctime_ns", int, where, None))


@dataclass(frozen=True)
class Counts:
    documents: int
    chunks: int
    sentences: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> "Counts":
        return cls(*(_non_negative(_get(obj, k, int, where), where + k) for k in ("documents", "chunks", "sentences")))


@dataclass(frozen=True)
class Manifest:
    """A checked ``manifest.json``. :meth:`from_json` raises ValueError naming the first bad field
    (``counts: expected an object, got "x"``); ``raw`` is the object as read (extra keys kept)."""

    format_version: int
    model_id: str
    dim: int
    settings: Mapping[str, Any]  # {"model": str, "chunking": {name: int}, "code": "pipeline-<PIPELINE_VERSION>"}
    files: Mapping[str, FileRecord]
    counts: Counts
    artifacts: Mapping[str, ArtifactRecord]
    faiss: Mapping[str, Any] = field(default_factory=lambda: {"type": ann.FLAT})
    sidecars: Mapping[str, str] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()
    corpus_dir: str = ""
    follow_symlinks: bool = False
    created: str = ""  # "%Y-%m-%dT%H:%M:%S%z"
    build_seconds: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_name(self) -> str:
        """The model setting the index was built with (a name or a local folder)."""
        return str(self.settings.get("model", self.model_id))

    @classmethod
    def from_json(cls, obj: Any) -> "Manifest":
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {brief_repr(obj)}")
        model = _get(obj, "model", dict, "")
        settings = _get(obj, "settings", dict, "")
        _get(settings, "model", str, "settings.")
        _get(settings, "code", str, "settings.")
        for name, value in _get(settings, "chunking", dict, "settings.").items():
            _get({name: value}, name, int, "settings.chunking.")
        dim = _get(model, "dim", int, "model.")
        if dim < 1:
            raise ValueError(f"model.dim: must be >= 1, got {dim}")
        artifacts = _table(obj, "artifacts", "", ArtifactRecord.from_json)
        for rel in artifacts:
            if _safe_rel(rel) not in ARTIFACTS:
                raise ValueError(f"artifacts: {_shown(rel)} is not a file rag writes in an index folder")
        unlisted = sorted(REQUIRED_ARTIFACTS - set(artifacts))
        if unlisted:
            raise ValueError(f"artifacts: the manifest lists no {_names(unlisted)} (every index file must be recorded)")
        faiss_spec = _get(obj, "faiss", dict, "", None) or {"type": ann.FLAT}
        if _get(faiss_spec, "type", str, "faiss.") == ann.HNSW and _get(faiss_spec, "efSearch", int, "faiss.") < 1:
            raise ValueError(f"faiss.efSearch: must be >= 1, got {faiss_spec['efSearch']}")
        sidecars = _get(obj, "sidecars", dict, "", {})
        for name, digest in sidecars.items():
            _sha(_get(sidecars, name, str, "sidecars."), f"sidecars[{name!r}].")
        skipped = _get(obj, "skipped", list, "", [])
        for i, s in enumerate(skipped):
            if not isinstance(s, dict):
                raise ValueError(f"skipped[{i}]: expected an object, got {brief_repr(s)}")
            _get(s, "doc_id", str, f"skipped[{i}].")
            _get(s, "reason", str, f"skipped[{i}].")
        return cls(
            format_version=_get(obj, "format_version", int, ""),
            model_id=_get(model, "id", str, "model."),
            dim=dim,
            settings=settings,
            files=_table(obj, "files", "", FileRecord.from_json),
            counts=Counts.from_json(_get(obj, "counts", dict, ""), "counts."),
            artifacts=artifacts,
            faiss=faiss_spec,
            sidecars=sidecars,
            skipped=tuple(Skipped(s["doc_id"], s["reason"]) for s in skipped),
            corpus_dir=_get(obj, "corpus_dir", str, "", ""),
            follow_symlinks=_get(obj, "follow_symlinks", bool, "", False),
            # informational: shown, never relied on, so a null or odd value is not damage
            created=obj["created"] if isinstance(obj.get("created"), str) else "",
            build_seconds=_informational_seconds(obj.get("build_seconds")),
            raw=obj,
        )


def _informational_seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _shown(rel: str) -> str:
    """A file name for a message: repr (control characters escaped), cut to 60 characters."""
    return repr(rel) if len(repr(rel)) <= 60 else repr(rel)[:57] + "..."


def _safe_rel(rel: str) -> str:
    shown = _shown(rel)
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in rel):  # NUL, newlines, terminal escapes
        raise ValueError(f"artifacts: {shown} is not a file name inside the index folder (it holds a control character)")
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or "\\" in rel:
        raise ValueError(f"artifacts: {shown} is not a file name inside the index folder")
    return rel


def _names(names: Sequence[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _typed(manifest: Mapping[str, Any] | Manifest, index_dir: Path | str = "") -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    try:
        return Manifest.from_json(manifest)
    except ValueError as exc:
        raise _damaged(Path(index_dir or "."), MANIFEST, str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# Freshness


#: The version of what loading, cleaning, chunking and lexical tokenising put into an index. Bump it
#: whenever their output changes (passages, offsets, section paths, search texts, tokens): indexes
#: built by another version are stale, so `rag index` rebuilds them. Edits that change no output (a
#: docstring, a refactor) keep it, and keep every index fresh. ``tests/test_index.py`` fails when the
#: output changes and this does not.
PIPELINE_VERSION = "4"


def _settings_fingerprint(settings: Settings) -> dict[str, Any]:
    return {"model": settings.model, "chunking": dataclasses.asdict(settings.chunking), "code": f"pipeline-{PIPELINE_VERSION}"}


def load_manifest(index_dir: Path) -> Manifest:
    """The checked manifest of ``index_dir``. Raises IndexMissing, IndexCorrupt ("index damaged: …")
    or IndexMismatch (another format version). A build killed mid-swap is recovered first."""
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if os.path.lexists(index_dir) and not index_dir.is_dir():
        raise IndexMissing(f"index folder {index_dir} is a file, not a folder: point --index (or RAG_INDEX_DIR) "
                           "at the folder `rag index` built")
    if not os.path.lexists(path):
        _recover_for_reader(index_dir)
    if not os.path.lexists(path):
        if index_dir.is_dir() and any(index_dir.glob("*.faiss")):
            raise _damaged(index_dir, "", f"no {MANIFEST} (the folder holds index files)")
        raise IndexMissing(f"no index at {index_dir}: build it with `rag index` (or `make index`)")
    try:
        with open_regular(path) as fh:
            raw = json.loads(fh.read().decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {brief_repr(raw)}")
    except (OSError, ValueError, RecursionError) as exc:
        raise _damaged(index_dir, MANIFEST, _why(exc)) from exc
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise IndexMismatch(
            f"index at {index_dir} has format version {version!r}; this rag reads version {FORMAT_VERSION}. "
            "Upgrade rag, or rebuild the index with `rag index --force`"
        )
    if version < FORMAT_VERSION:
        raise IndexMismatch(f"index at {index_dir} has old format version {version}: rebuild with `rag index --force`")
    return _typed(raw, index_dir)


def stale_reasons(manifest: Mapping[str, Any] | Manifest, settings: Settings, corpus_dir: Path | None = None) -> list[str]:
    """Why an index no longer matches the corpus and settings; empty when it is up to date."""
    m = _typed(manifest, settings.index_dir)
    reasons = settings_reasons(m, settings)
    corpus_dir = Path(corpus_dir or settings.corpus_dir)
    scan = scan_corpus(corpus_dir, settings.follow_symlinks) if corpus_dir.is_dir() else None
    current = {p.relative_to(corpus_dir).as_posix(): p for p in scan.files} if scan else {}
    recorded = m.files
    for doc_id in sorted(set(recorded) - set(current)):
        reasons.append(f"file removed from the corpus: {doc_id}")
    for doc_id in sorted(set(current) - set(recorded)):
        reasons.append(f"new file in the corpus: {doc_id}")
    for doc_id in sorted(set(current) & set(recorded)):
        if not _unchanged(recorded[doc_id], current[doc_id]):
            reasons.append(f"file changed since the build: {doc_id}")
    if dict(m.sidecars) != _sidecar_hashes(corpus_dir, settings.follow_symlinks):
        reasons.append("document metadata (*.meta.json) changed")
    waiting = sorted(s.doc_id for s in m.skipped if _needs_ocr(s.reason) and s.doc_id in current)
    if waiting and _ocr_ready():
        reasons.append(f"OCR is installed now: scanned PDFs to read ({', '.join(waiting[:3])})")
    return reasons


def _needs_ocr(reason: str) -> bool:
    """A skip that only missing OCR caused (see rag.formats.OCR_HINT)."""
    return "OCR is not installed" in reason


def _ocr_ready() -> bool:
    from .formats import tesseract_path

    return tesseract_path() is not None


def _unchanged(rec: FileRecord, path: Path) -> bool:
    """The file is as recorded: same size and mtime (not read), or else same sha256."""
    try:
        st = path.stat()
        if st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns:
            return True
        return st.st_size == rec.size and sha256_file(path) == rec.sha256
    except OSError:
        return False


def settings_reasons(manifest: Mapping[str, Any] | Manifest, settings: Settings) -> list[str]:
    """Why every passage of the index must be made again (model, chunking, rag's cleaning code,
    symlink policy), as opposed to the files that changed; empty when none applies."""
    m = _typed(manifest, settings.index_dir)
    reasons = []
    fp = _settings_fingerprint(settings)
    if m.settings.get("model") != fp["model"]:
        reasons.append(f"model changed: index has {m.settings.get('model')!r}, settings say {fp['model']!r}")
    if m.settings.get("chunking") != fp["chunking"]:
        reasons.append("chunking settings changed")
    if m.settings.get("code") != fp["code"]:
        reasons.append(f"rag's cleaning or chunking output changed since the build (index: {m.settings.get('code')!r}, "
                       f"this rag: {fp['code']!r})")
    if m.follow_symlinks != settings.follow_symlinks:
        reasons.append(f"follow_symlinks changed: index built with {m.follow_symlinks}, settings say {settings.follow_symlinks}")
    return reasons


def _sidecar_hashes(corpus_dir: Path, follow_symlinks: bool = False) -> dict[str, str]:
    if not corpus_dir.is_dir():
        return {}
    out = {}
    for p in scan_corpus(corpus_dir, follow_symlinks).sidecars:
        try:
            out[p.relative_to(corpus_dir).as_posix()] = sha256_file(p)
        except OSError:
            continue  # vanished or not readable: the load reports it
    return out


# ---------------------------------------------------------------------------------------------
# Where an index may be written


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _foreign_entries(folder: Path) -> list[str]:
    """What ``folder`` holds that rag does not write: other names (in ``lexical/`` too), or rag's
    names of the wrong kind (a folder called ``chunks.jsonl``, a link called ``manifest.json``)."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name == LEXICAL and e.is_dir(follow_symlinks=False):
                with os.scandir(e.path) as sub:
                    out += [f"{LEXICAL}/{s.name}" + ("/" if s.is_dir(follow_symlinks=False) else "") for s in sub
                            if not (s.name in LEXICAL_FILES and s.is_file(follow_symlinks=False))]
            elif not ((e.name in INDEX_FILES or e.name == README) and e.is_file(follow_symlinks=False)):
                out.append(e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
    return sorted(out)


def _written_by_rag(folder: Path) -> bool:
    """The folder is rag's: its manifest.json is one (it passes :meth:`Manifest.from_json`), or the
    vectors are there (a rag index whose manifest is damaged, to be rebuilt)."""
    if (folder / "chunks.faiss").is_file():
        return True
    try:
        with open_regular(folder / MANIFEST) as fh:
            Manifest.from_json(json.loads(fh.read().decode("utf-8")))
    except (OSError, ValueError, TypeError, RecursionError):
        return False
    return True


def check_index_target(index_dir: Path, corpus_dir: Path | None = None) -> Path:
    """The real path of ``index_dir`` (symlinks resolved) if ``rag index`` may replace it: missing,
    empty (or only a README.md), or a rag index (manifest.json and only the names rag writes). Raises
    IndexRefused, naming the folder, for a file, any other folder, and a folder that is, contains or
    is inside ``corpus_dir``. Reads only; nothing is touched."""
    shown = Path(index_dir)
    target = Path(os.path.realpath(shown))
    if corpus_dir is not None:
        corpus = Path(os.path.realpath(corpus_dir))
        if _inside(target, corpus) or _inside(corpus, target):
            how = "is" if target == corpus else "is inside" if _inside(target, corpus) else "contains"
            raise IndexRefused(
                f"index folder {shown} {how} the corpus folder {corpus_dir}: building replaces the index folder, so the "
                "two must not overlap; choose an index folder outside the corpus (--index or RAG_INDEX_DIR)"
            )
    if os.path.lexists(target) and not target.is_dir():
        raise IndexRefused(f"index folder {shown} is a file, not a folder: choose a new or empty folder for --index")
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise IndexRefused(f"cannot create index folder {shown}: {ancestor} is a file, not a folder")
    if target.is_dir():
        try:
            foreign = _foreign_entries(target)
        except OSError as exc:
            raise IndexRefused(f"index folder {shown} cannot be read ({exc.strerror}): choose another --index") from exc
        names = set(os.listdir(target)) - {README}
        if foreign or (names and (MANIFEST not in names or not _written_by_rag(target))):
            held = ", ".join(foreign[:3] or sorted(names)[:3]) + (", ..." if len(foreign or names) > 3 else "")
            raise IndexRefused(
                f"{shown} is not a rag index (it holds {held}): `rag index` replaces only its own index folders; "
                "choose a new or empty folder for --index"
            )
    return target


def _existing_ancestor(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_index_writable(target: Path, shown: Path | None = None) -> None:
    """Refuse (IndexRefused) before a build when the index cannot be replaced: its parent folder is
    not writable, or the index folder is read-only (kept as the owner asked, not replaced)."""
    shown = shown or target
    parent = _existing_ancestor(target.parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise IndexRefused(f"cannot write index folder {shown}: {parent} is not writable (permission denied); choose another --index")
    for folder in (target, target / LEXICAL):
        if folder.is_dir() and (not folder.stat().st_mode & stat.S_IWUSR or not os.access(folder, os.W_OK | os.X_OK)):
            raise IndexRefused(
                f"index folder {shown} is read-only ({folder.name}/ is not writable): `rag index` will not replace it; "
                f"make it writable (chmod -R u+w {shown}) or choose another --index"
            )


# ---------------------------------------------------------------------------------------------
# Build


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` next to the index (flock; IndexLocked if another process holds it). The
    folders it had to create and the lock file are removed again when the body raises (a refused
    build leaves nothing behind)."""
    index_dir = Path(index_dir).resolve()
    lock_path = index_dir.parent / f".{index_dir.name}.lock"
    made = _missing_folders(index_dir.parent)
    try:
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        fh, created = _lock_file(lock_path)
    except OSError as exc:
        _remove_empty(made)
        raise IndexRefused(
            f"cannot write in {index_dir.parent} ({exc.strerror}), where `rag index` keeps the lock and temporary "
            f"folder of index {index_dir}: choose another --index, or make that folder writable"
        ) from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(
                    f"another `rag index` is building {index_dir}; wait for it to finish and try again"
                ) from exc
            raise
        try:
            if not _same_file(fh, lock_path):  # deleted by a refused build after we opened it: take the new one
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
                with index_lock(index_dir):
                    yield
                return
            try:
                yield
            except BaseException:
                if created and _same_file(fh, lock_path):
                    os.unlink(lock_path)  # still held: whoever opens the name next gets a new file
                    _remove_empty(made)
                raise
        finally:
            if not fh.closed:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_file(path: Path) -> tuple[Any, bool]:
    """``path`` opened for writing (never truncated, never blocking on a FIFO), and whether this
    call created it."""
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            return os.fdopen(os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), "w"), True
        except FileExistsError:
            pass
        try:
            return os.fdopen(os.open(path, flags), "w"), False
        except FileNotFoundError:
            continue  # deleted in between: create it


def _same_file(fh: Any, path: Path) -> bool:
    try:
        a, b = os.fstat(fh.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not os.path.lexists(folder) and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first that is not empty
        try:
            os.rmdir(folder)
        except OSError:
            return


def build_index(
    settings: Settings,
    force: bool = False,
    progress: Progress = _noop,
    embedder=None,
    refresh: Collection[str] = (),
) -> BuildResult:
    """Build ``settings.index_dir`` from ``settings.corpus_dir`` unless it is already up to date.
    Refuses (IndexRefused, nothing touched) a target that is not an index, overlaps the corpus, is a
    file or is read-only; an index whose manifest is damaged is rebuilt. Files unchanged since the
    previous build keep their passages and vectors (see :class:`_Previous`) except those named in
    ``refresh`` (document ids: read and embedded again, e.g. after OCR was installed)."""
    shown = Path(settings.index_dir)
    corpus_dir = Path(settings.corpus_dir)
    index_dir = check_index_target(shown, corpus_dir)  # at once: before the lock, the corpus or the model
    _check_corpus(corpus_dir)  # and before any folder or lock file is created
    with index_lock(index_dir):
        recover_index(index_dir)
        _clean_leftovers(index_dir)
        check_index_target(index_dir, corpus_dir)
        reasons: list[str] = []
        if not force:
            try:
                manifest = load_manifest(index_dir)
                reasons = stale_reasons(manifest, settings, corpus_dir)
                reasons += [f"asked to read again: {d}" for d in sorted(refresh)]
                if not reasons:
                    verify_files(index_dir, manifest)
                    return BuildResult("up-to-date", manifest, manifest.skipped)
            except (IndexMissing, IndexCorrupt, IndexMismatch) as exc:
                reasons = [str(exc)]
        else:
            reasons = ["--force"]
        check_index_writable(index_dir, shown)
        t0 = time.perf_counter()
        _check_corpus(corpus_dir)
        previous = None if force else _previous_index(settings, index_dir, corpus_dir, reasons, refresh)
        progress("load", 0, 1)
        report = load_corpus(corpus_dir, max_file_mb=settings.max_file_mb, follow_symlinks=settings.follow_symlinks,
                             reuse=previous.reuse if previous else None, progress=progress)
        if not report.documents:
            unusable = report.skipped + report.refused
            names = "; ".join(f"{s.doc_id}: {s.reason}" for s in unusable) or f"no {SUPPORTED_SHOWN} files"
            raise CorpusEmpty(f"no readable documents in {corpus_dir} ({names})")
        manifest = write_index(settings, index_dir, report, progress, embedder, started=t0, previous=previous)
        changes = previous.changes(report) if previous else None
        return BuildResult("built", manifest, manifest.skipped, report.notices, tuple(reasons), changes)


class _Previous:
    """The index a build replaces, as a source of passages and vectors for the files that have not
    changed since it was built (same size and mtime, or same sha256; same metadata file). What it
    hands out is exactly what a full build would make again: passages depend only on their own
    document (text, metadata) and the settings, which :func:`settings_reasons` has checked."""

    def __init__(self, data: IndexData, manifest: Manifest, corpus_dir: Path, follow_symlinks: bool,
                 refresh: Collection[str] = ()) -> None:
        self.data, self.manifest, self.corpus_dir = data, manifest, corpus_dir
        self.refresh = set(refresh)
        self.sidecars = _sidecar_hashes(corpus_dir, follow_symlinks)
        self.first: dict[str, int] = {}  # document -> index of its first passage
        self.count: dict[str, int] = {}
        for i, c in enumerate(data.chunks):
            self.first.setdefault(c.doc_id, i)
            self.count[c.doc_id] = self.count.get(c.doc_id, 0) + 1
        self.skipped = {s.doc_id: s.reason for s in manifest.skipped}
        self.reused: set[str] = set()
        self.seen: set[str] = set()

    def reuse(self, doc_id: str, path: Path, sidecar: Path | None) -> Document | Skipped | None:
        self.seen.add(doc_id)
        rec = self.manifest.files.get(doc_id)
        side_rel = sidecar_path(Path(doc_id)).as_posix()
        if rec is None or doc_id in self.refresh or self.sidecars.get(side_rel) != self.manifest.sidecars.get(side_rel) \
                or not _unchanged(rec, path):
            return None
        if doc_id in self.data.docs and doc_id in self.first:
            d = self.data.docs[doc_id]
            self.reused.add(doc_id)
            return Document(doc_id, path, d.title, d.text, rec.sha256, dict(d.metadata))
        if doc_id in self.skipped and not (_needs_ocr(self.skipped[doc_id]) and _ocr_ready()):
            self.reused.add(doc_id)
            return Skipped(doc_id, self.skipped[doc_id])
        return None

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        i = self.first[doc_id]
        return [self.data.chunks[j] for j in range(i, i + self.count[doc_id])]

    def changes(self, report: LoadReport) -> Changes:
        fresh = sorted(self.seen - self.reused)
        return Changes(
            added=tuple(d for d in fresh if d not in self.manifest.files),
            changed=tuple(d for d in fresh if d in self.manifest.files),
            removed=tuple(sorted(set(self.manifest.files) - self.seen)),
            unchanged=len(self.reused),
        )


def _previous_index(settings: Settings, index_dir: Path, corpus_dir: Path, reasons: list[str],
                    refresh: Collection[str] = ()) -> _Previous | None:
    """The current index as a source for an incremental build, or None (a full build) when the model,
    chunking or PIPELINE_VERSION changed, or it cannot be read intact; ``reasons`` then says why."""
    try:
        manifest = load_manifest(index_dir)
    except IndexError_:
        return None
    if settings_reasons(manifest, settings):
        return None  # the reasons are there already
    try:
        data = _load_index_once(settings, index_dir, check_fresh=False)
    except (IndexError_, OSError, ValueError) as exc:
        reasons.append(f"the previous index cannot be reused ({exc})")
        return None
    return _Previous(data, manifest, corpus_dir, settings.follow_symlinks, refresh)


def _check_corpus(corpus_dir: Path) -> None:
    if not os.path.lexists(corpus_dir) or (corpus_dir.is_symlink() and not corpus_dir.exists()):
        raise CorpusEmpty(f"corpus folder {corpus_dir} does not exist: create it and add {SUPPORTED_SHOWN} files")
    if not corpus_dir.is_dir():
        raise CorpusEmpty(f"corpus folder {corpus_dir} is a file, not a folder: point --corpus (or RAG_CORPUS_DIR) "
                          "at the folder that holds the documents")


def write_index(
    settings: Settings,
    index_dir: Path,
    report: LoadReport,
    progress: Progress = _noop,
    embedder=None,
    extra: dict[str, Any] | None = None,
    started: float | None = None,
    previous: _Previous | None = None,
) -> Manifest:
    """Chunk, embed and write ``report``'s documents to ``index_dir`` (temporary folder, then rename).
    The caller holds the lock. ``extra`` is merged into the manifest. Documents ``previous`` reused
    keep their passages and vectors; only the others are chunked and embedded."""
    t0 = time.perf_counter() if started is None else started
    index_dir = check_index_target(index_dir, settings.corpus_dir)
    check_index_writable(index_dir)
    progress("chunk", 0, len(report.documents))
    reused = previous.reused if previous else set()
    chunks: list[Chunk] = []
    for d in report.documents:
        chunks.extend(previous.chunks_of(d.doc_id) if d.doc_id in reused else chunk_document(d, settings.chunking))
    progress("chunk", len(report.documents), len(report.documents))
    if embedder is None and any(c.doc_id not in reused for c in chunks):
        from .embed import get_embedder

        embedder = get_embedder(settings.model, str(settings.cache_dir), settings.embed_backend)
    recover_index(index_dir)
    _clean_leftovers(index_dir)
    tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise IndexRefused(f"cannot create {tmp} ({exc.strerror}): choose another --index") from exc
    try:
        manifest = _write(tmp, settings, report, chunks, embedder, progress, previous)
        manifest.update(extra or {})
        manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
        _write_json(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, index_dir, Path(settings.corpus_dir))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexRefused(
            f"could not write the index next to {index_dir} ({exc.strerror or exc}); the previous index is unchanged"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("done", 1, 1)
    return Manifest.from_json(manifest)


def _batched_embed(embedder, texts: list[str], stage: str, progress: Progress, batch: int = 64) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), batch):
        parts.append(embedder.embed(texts[i : i + batch]))
        progress(stage, min(i + batch, len(texts)), len(texts))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.vstack(parts).astype(np.float32)


def _write(tmp: Path, settings: Settings, report: LoadReport, chunks: list[Chunk], embedder, progress: Progress,
           previous: _Previous | None = None) -> dict:
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
    old = _old_rows(chunks, previous)  # previous index's passage number of each passage, -1: new
    new = np.flatnonzero(old < 0)
    dim = previous.manifest.dim if previous else int(embedder.dim)
    vecs = np.zeros((len(chunks), dim), dtype=np.float32)
    if len(new):
        vecs[new] = _batched_embed(embedder, [search_texts[i] for i in new], "embed passages", progress)
    if len(new) < len(chunks):
        vecs[old >= 0] = previous.data.vectors.reconstruct_batch(old[old >= 0])
    spec = ann.choose(len(chunks), sum(len(c.sentences) for c in chunks))
    faiss.write_index(ann.build(vecs, spec), str(tmp / "chunks.faiss"))
    del vecs

    sent_texts = [search_form(collapse_ws(docs[c.doc_id].text[s:e])) for c in chunks for s, e in c.sentences]
    svecs = np.zeros((len(sent_texts), dim), dtype=np.float32)
    counts = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(chunks) else counts
    fresh = np.concatenate([np.arange(first[i], first[i] + counts[i]) for i in new]) if len(new) else np.zeros(0, np.int64)
    if len(fresh):
        svecs[fresh] = _batched_embed(embedder, [sent_texts[i] for i in fresh], "embed sentences", progress)
    kept = np.flatnonzero(old >= 0)
    if len(kept):
        src = np.concatenate([np.arange(previous.data.sentence_first[old[i]], previous.data.sentence_first[old[i]] + counts[i])
                              for i in kept])
        dst = np.concatenate([np.arange(first[i], first[i] + counts[i]) for i in kept])
        svecs[dst] = previous.data.sentence_vecs[src]
    np.save(tmp / "sentences.npy", svecs, allow_pickle=False)

    progress("lexical index", 0, 1)
    LexicalIndex.build(search_texts).save(tmp / LEXICAL)
    progress("lexical index", 1, 1)

    files = {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    kept = previous.reused if previous else set()

    def when(doc_id: str) -> str:  # when the file was last read: kept from the previous build if reused
        before = previous.manifest.files.get(doc_id) if previous else None
        return (before.indexed_at or now) if before is not None and doc_id in kept else now

    for d in report.documents:
        st = d.path.stat()
        files[d.doc_id] = {"sha256": d.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "indexed_at": when(d.doc_id)}
    for s in report.skipped:  # skipped files are recorded too, so they don't make the index look stale
        p = Path(settings.corpus_dir) / s.doc_id  # (refused ones are not: they are never opened)
        try:
            st = p.stat()
            rec = previous.manifest.files.get(s.doc_id) if s.doc_id in kept else None
            files[s.doc_id] = {"sha256": rec.sha256 if rec else sha256_file(p), "size": st.st_size,
                               "mtime_ns": st.st_mtime_ns, "indexed_at": when(s.doc_id)}
        except OSError:
            continue
    return {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"id": settings.model, "dim": dim},
        "settings": _settings_fingerprint(settings),
        "corpus_dir": str(Path(settings.corpus_dir).resolve()),
        "follow_symlinks": settings.follow_symlinks,
        "files": files,
        "sidecars": _sidecar_hashes(Path(settings.corpus_dir), settings.follow_symlinks),
        "skipped": [{"doc_id": s.doc_id, "reason": s.reason} for s in report.skipped + report.refused],
        "counts": {"documents": len(report.documents), "chunks": len(chunks), "sentences": len(sent_texts)},
        "faiss": spec,
        "artifacts": _artifact_hashes(tmp),
    }


def _old_rows(chunks: Sequence[Chunk], previous: _Previous | None) -> np.ndarray:
    """For each passage, its row in the previous index when its document was reused, else -1."""
    out = np.full(len(chunks), -1, dtype=np.int64)
    if previous is None:
        return out
    at: dict[str, int] = {}
    for i, c in enumerate(chunks):
        if c.doc_id in previous.reused:
            j = at.get(c.doc_id, 0)
            out[i] = previous.first[c.doc_id] + j
            at[c.doc_id] = j + 1
    return out


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


def _swap_into_place(tmp: Path, index_dir: Path, corpus_dir: Path | None = None) -> None:
    """Two renames: the previous index aside (``.NAME.old-PID``), the new one in; then the previous
    one is deleted. Killed between the renames, the index folder is missing and the previous index
    sits aside complete: :func:`recover_index` (next load or build) puts it back."""
    check_index_target(index_dir, corpus_dir)  # again: the folder may have changed during the build
    old = index_dir.parent / f".{index_dir.name}.old-{os.getpid()}"
    if (index_dir / README).is_file():
        shutil.copy2(index_dir / README, tmp / README)
    _swap_step("ready")
    if index_dir.exists():
        os.replace(index_dir, old)
        _swap_step("set-aside")
    try:
        os.replace(tmp, index_dir)
    except OSError:
        if os.path.lexists(old) and not os.path.lexists(index_dir):
            os.replace(old, index_dir)  # the previous index back at once
        raise
    _swap_step("renamed")
    _remove_tree(old)


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-\d+")


def _leftovers(index_dir: Path, kind: str | None = None) -> list[Path]:
    """Temporary (``tmp``) and set-aside (``old``) folders of earlier builds of ``index_dir``; only
    real folders that hold nothing but index files (anything else is never deleted)."""
    index_dir = Path(index_dir)
    out = []
    try:
        entries = list(os.scandir(index_dir.parent))
    except OSError:
        return []
    for e in entries:
        m = _LEFTOVER.fullmatch(e.name)
        if not m or m["name"] != index_dir.name or (kind and m["kind"] != kind) or not e.is_dir(follow_symlinks=False):
            continue
        try:
            if not _foreign_entries(Path(e.path)):
                out.append(Path(e.path))
        except OSError:
            continue
    return sorted(out)


def _clean_leftovers(index_dir: Path) -> None:
    """Delete the temporary folders of killed builds, and set-aside ones once an index is in place
    (while it is missing, a set-aside index is the one to restore, never deleted). Caller holds the lock."""
    for leftover in _leftovers(index_dir, None if os.path.lexists(index_dir) else "tmp"):
        _remove_tree(leftover)


def _remove_tree(folder: Path) -> None:
    if not os.path.lexists(folder):
        return
    shutil.rmtree(folder, ignore_errors=True)
    if os.path.lexists(folder):
        log.warning("could not delete %s (left from an earlier build); delete it by hand", folder)


def recover_index(index_dir: Path) -> Path | None:
    """Undo a build killed between the two renames of its swap: when ``index_dir`` is missing and the
    previous index sits aside as ``.NAME.old-PID``, rename it back (the newest, if several). The
    caller holds the lock. Returns the folder it restored, or None."""
    index_dir = Path(index_dir)
    if os.path.lexists(index_dir):
        return None
    olds = _leftovers(index_dir, "old")
    if not olds:
        return None
    newest = max(olds, key=lambda p: p.stat().st_ctime_ns)
    try:
        os.rename(newest, index_dir)
    except OSError as exc:
        log.warning("cannot restore the previous index %s from %s: %s", index_dir, newest, exc.strerror)
        return None
    log.warning("restored the previous index %s from %s (a build was interrupted)", index_dir, newest.name)
    return newest


#: How long a loader waits for a build that holds the lock to finish its swap (two renames).
READER_WAIT_S = 2.0


def _recover_for_reader(index_dir: Path) -> None:
    """:func:`recover_index` for a loader, which holds no lock: take it if free; if a build holds it,
    it is between its two renames, so wait a moment for the new index instead."""
    index_dir = Path(os.path.realpath(index_dir))
    if os.path.lexists(index_dir) or not _leftovers(index_dir, "old"):
        return
    try:
        with index_lock(index_dir):
            recover_index(index_dir)
    except IndexLocked:
        deadline = time.monotonic() + READER_WAIT_S
        while not os.path.lexists(index_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
    except (IndexRefused, OSError) as exc:  # cannot lock here (read-only place): `rag index` will
        log.warning("cannot restore the previous index %s here: %s", index_dir, exc)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _artifact_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, README):
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = {
                "sha256": sha256_file(p), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            }
    return out


def verify_files(index_dir: Path, manifest: Mapping[str, Any] | Manifest, full: bool = False) -> None:
    """Check every index file against the manifest: present, a regular file, of the recorded size
    and sha256. Files up to :data:`HASH_AT_LOAD_MAX` bytes are always re-hashed; a larger one whose
    size, mtime and ctime are those recorded at build is trusted without re-hashing (a 1M-passage
    index holds gigabytes; ``touch -r`` cannot reset a ctime). ``full=True`` re-hashes every file."""
    index_dir = Path(index_dir)
    m = _typed(manifest, index_dir)
    unlisted = sorted(rel for rel in ARTIFACTS - set(m.artifacts) if os.path.lexists(index_dir / rel))
    if unlisted:  # a file the loader reads must be checked: the manifest must name it
        raise _damaged(index_dir, MANIFEST, f"the manifest lists no {_names(unlisted)}, which the folder holds")
    for rel, info in m.artifacts.items():
        p = index_dir / rel
        try:
            st = p.lstat()
        except (OSError, ValueError):  # ValueError: a name the system cannot take (a NUL)
            raise _damaged(index_dir, rel, "missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise _damaged(index_dir, rel, "not a regular file")
        if st.st_size != info.bytes:
            raise IndexCorrupt(
                f"index damaged: {p} is {st.st_size} bytes, expected {info.bytes} (truncated or replaced); "
                "run `rag index --force`"
            )
        unchanged = info.mtime_ns == st.st_mtime_ns and info.ctime_ns == st.st_ctime_ns and info.ctime_ns is not None
        if not full and st.st_size > HASH_AT_LOAD_MAX and unchanged:
            continue
        try:
            digest = sha256_file(p)
        except (OSError, ValueError) as exc:
            raise _damaged(index_dir, rel, f"unreadable ({getattr(exc, 'strerror', None) or _why(exc)})") from exc
        if digest != info.sha256:
            raise _damaged(index_dir, rel, "modified after the build (its sha256 differs)")


def verify_index(index_dir: Path) -> Manifest:
    """Full check of an index folder: its manifest and the sha256 of every file. Returns the manifest."""
    manifest = load_manifest(Path(index_dir))
    verify_files(Path(index_dir), manifest, full=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# Load


def _chunk_to_json(c: Chunk) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    d["section"] = list(c.section)
    d["sentences"] = [list(s) for s in c.sentences]
    return d


def _int(d: Mapping[str, Any], key: str) -> int:
    return _get(d, key, int, "")


def _chunk_from_json(d: Any) -> Chunk:
    if not isinstance(d, dict):
        raise ValueError(f"a chunk record must be an object, got {brief_repr(d)}")
    section = _get(d, "section", list, "")
    sentences = _get(d, "sentences", list, "")
    if not all(isinstance(s, str) for s in section):
        raise ValueError(f"section: expected a list of strings, got {brief_repr(section)}")
    spans = []
    for s in sentences:
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in s)):
            raise ValueError(f"sentences: expected [start, end] pairs of integers, got {brief_repr(s)}")
        spans.append((s[0], s[1]))
    return Chunk(
        chunk_id=_get(d, "chunk_id", str, ""), doc_id=_get(d, "doc_id", str, ""), title=_get(d, "title", str, ""),
        page=_int(d, "page"), page_end=_int(d, "page_end"), section=tuple(section), start=_int(d, "start"),
        end=_int(d, "end"), text=_get(d, "text", str, ""), sentences=tuple(spans),
    )


def _doc_from_json(d: Any) -> DocRecord:
    if not isinstance(d, dict):
        raise ValueError(f"a document record must be an object, got {brief_repr(d)}")
    return DocRecord(_get(d, "doc_id", str, ""), _get(d, "title", str, ""), _get(d, "text", str, ""),
                     _get(d, "metadata", dict, "", {}))


def _parse(index_dir: Path, rel: str, read: Callable[[], T]) -> T:
    """``read()``; any failure to parse a file rag wrote is "index damaged: FILE: …", never a traceback."""
    try:
        return read()
    except IndexError_:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes a parser raise
        raise _damaged(index_dir, rel, _why(exc)) from exc


#: How often a load starts again when a rebuild swapped the index folder while it was read, and the
#: pause between tries.
LOAD_ATTEMPTS = 8
LOAD_RETRY_S = 0.05


def _version(index_dir: Path) -> tuple | None:
    """What tells one build of ``index_dir`` from the next: the folder's and the manifest's inode,
    and the manifest's mtime, ctime and size (a rebuild renames a new folder into place). None while
    there is no index folder (between a swap's two renames)."""
    try:
        folder = os.stat(index_dir)
        man = os.stat(index_dir / MANIFEST)
    except (OSError, ValueError):
        return None
    return folder.st_dev, folder.st_ino, man.st_ino, man.st_mtime_ns, man.st_ctime_ns, man.st_size


def load_index(settings: Settings, check_fresh: bool = True) -> IndexData:
    """Load and check an index. Raises IndexMissing / IndexStale / IndexCorrupt / IndexMismatch.

    The load sees one build: when a rebuild renames a new index into place while the files are
    being read (the folder or manifest changed between the start and the end of the load), it
    starts again; an error met while the folder changed is a reason to retry, not "index damaged".
    IndexLocked when the index kept changing for :data:`LOAD_ATTEMPTS` tries."""
    index_dir = Path(settings.index_dir)
    for attempt in range(LOAD_ATTEMPTS):
        if attempt:
            time.sleep(LOAD_RETRY_S)
        before = _version(index_dir)
        try:
            data = _load_index_once(settings, index_dir, check_fresh)
        except IndexError_:
            if _version(index_dir) == before:
                raise
            log.info("index %s changed while it was read (attempt %d): reading it again", index_dir, attempt + 1)
            continue
        if _version(index_dir) == before:
            return data
        log.info("index %s changed while it was read (attempt %d): reading it again", index_dir, attempt + 1)
    raise IndexLocked(
        f"index at {index_dir} was replaced {LOAD_ATTEMPTS} times while being read (is `rag index` rebuilding it "
        "in a loop?): try again when the build has finished"
    )


def _load_index_once(settings: Settings, index_dir: Path, check_fresh: bool) -> IndexData:
    import faiss

    manifest = load_manifest(index_dir)
    if manifest.model_id != settings.model:
        raise IndexMismatch(
            f"index at {index_dir} was built with model {manifest.model_id!r}, but the settings "
            f"ask for {settings.model!r}: rebuild with `rag index --force`, or set RAG_MODEL to the index's model"
        )
    if check_fresh:
        as_built = settings.with_(follow_symlinks=manifest.follow_symlinks)  # `rag ask` takes the index as built
        corpus_dir = Path(settings.corpus_dir)
        if not corpus_dir.is_dir():  # e.g. run from another folder: check against the corpus it was built from
            corpus_dir = Path(manifest.corpus_dir)
        if corpus_dir.is_dir():
            reasons = stale_reasons(manifest, as_built, corpus_dir)
        else:
            log.warning("corpus folder %s not found: cannot check that the index is up to date", settings.corpus_dir)
            reasons = [r for r in stale_reasons(manifest, as_built, corpus_dir) if not r.startswith("file removed")]
            reasons = [r for r in reasons if "meta.json" not in r]
        if reasons:
            raise IndexStale(f"index at {index_dir} is out of date ({'; '.join(reasons[:3])}): run `rag index`")
    verify_files(index_dir, manifest)
    lazy = manifest.counts.chunks > LAZY_ABOVE and (index_dir / "chunks.offsets.npy").is_file()
    if lazy:  # a large index: records are parsed when first used, not all at load
        docs, chunks, counts = _lazy_records(index_dir)
    else:
        docs = _parse(index_dir, "docs.jsonl", lambda: _read_docs(index_dir / "docs.jsonl"))
        chunks = _parse(index_dir, "chunks.jsonl", lambda: _read_chunks(index_dir / "chunks.jsonl"))
        unknown = next((c for c in chunks if c.doc_id not in docs), None)
        if unknown is not None:
            raise _damaged(index_dir, "chunks.jsonl", f"inconsistent (passage {brief_repr(unknown.chunk_id)} names "
                                                      f"document {brief_repr(unknown.doc_id)}, which docs.jsonl does not hold)")
        counts = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
    # memory-mapped: loading costs no copy, queries touch only the pages they need
    vectors = _parse(index_dir, "chunks.faiss", lambda: faiss.read_index(
        str(index_dir / "chunks.faiss"), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY))
    _parse(index_dir, "chunks.faiss", lambda: ann.configure(vectors, manifest.faiss))
    svecs = _parse(index_dir, "sentences.npy", lambda: _sentence_vectors(index_dir / "sentences.npy"))
    lexical = _parse(index_dir, LEXICAL + "/", lambda: _lexical(index_dir / LEXICAL))
    dim = manifest.dim
    if vectors.d != dim:
        raise IndexMismatch(
            f"index at {index_dir} holds {vectors.d}-dimension vectors but its manifest says {dim}: "
            "rebuild with `rag index --force`"
        )
    n_sent = int(counts.sum())
    if vectors.ntotal != len(chunks) or len(counts) != len(chunks) or svecs.shape != (n_sent, dim) or lexical.n_docs != len(chunks):
        raise _damaged(index_dir, "", "inconsistent (vector and chunk counts differ)")
    counts = counts.astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(chunks)), counts)
    return IndexData(index_dir, manifest, docs, chunks, vectors, svecs, owner, first, lexical)


def _sentence_vectors(path: Path) -> np.ndarray:
    svecs = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    if svecs.dtype != np.float32 or svecs.ndim != 2:
        raise ValueError(f"holds {svecs.dtype} of shape {svecs.shape}, expected float32 (n, dim)")
    return svecs


def _lexical(folder: Path) -> LexicalIndex:
    lexical = LexicalIndex.load(folder)
    if not isinstance(lexical.df, dict) or not isinstance(lexical.n_docs, int):
        raise ValueError("df.json does not hold {n_docs, df}")
    return lexical


def _int_array(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"holds {arr.dtype} of shape {arr.shape}, expected a 1-d integer array")
    return arr


def _read_docs(path: Path) -> dict[str, DocRecord]:
    docs = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            d = _line(n, line, _doc_from_json)
            if d.doc_id in docs:
                raise ValueError(f"line {n}: document {brief_repr(d.doc_id)} is there twice: inconsistent")
            docs[d.doc_id] = d
    return docs


def _read_chunks(path: Path) -> list[Chunk]:
    with open(path, encoding="utf-8") as fh:
        return [_line(n, line, _chunk_from_json) for n, line in enumerate(fh, 1)]


def _line(n: int, line: str | bytes, convert: Callable[[Any], T]) -> T:
    try:
        return convert(json.loads(line))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"line {n}: {_why(exc)}") from exc


def _read_ids(path: Path) -> list[str]:
    ids = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        raise ValueError("not a list of document ids")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        twice = next(d for d in ids if d in seen or seen.add(d))
        raise ValueError(f"document {brief_repr(twice)} is listed twice: inconsistent")
    return ids


def _lazy_records(index_dir: Path) -> tuple["LazyDocs", "LazyChunks", np.ndarray]:
    ids = _parse(index_dir, "docs.ids.json", lambda: _read_ids(index_dir / "docs.ids.json"))
    doc_offsets = _parse(index_dir, "docs.offsets.npy", lambda: _int_array(index_dir / "docs.offsets.npy"))
    docs = _parse(index_dir, "docs.offsets.npy", lambda: LazyDocs(index_dir / "docs.jsonl", ids, doc_offsets))
    chunk_offsets = _parse(index_dir, "chunks.offsets.npy", lambda: _int_array(index_dir / "chunks.offsets.npy"))
    chunks = _parse(index_dir, "chunks.offsets.npy", lambda: LazyChunks(index_dir / "chunks.jsonl", chunk_offsets, docs))
    counts = _parse(index_dir, "sentence_counts.npy", lambda: _int_array(index_dir / "sentence_counts.npy"))
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
        self._path = path

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def record(self, i: int, convert: Callable[[Any], T]) -> T:
        """Line ``i`` parsed by ``convert``; a damaged line is IndexCorrupt, at query time too."""
        try:
            return _line(i + 1, self._map[self._offsets[i] : self._offsets[i + 1]], convert)
        except ValueError as exc:
            raise _damaged(self._path.parent, self._path.name, str(exc)) from exc


class LazyChunks(Sequence[Chunk]):
    """``IndexData.chunks`` of a large index: a read-only sequence of :class:`Chunk`, parsed on access."""

    def __init__(self, path: Path, offsets: np.ndarray, docs: Mapping[str, Any] | None = None) -> None:
        self._lines = _Lines(path, offsets)
        self._docs = docs  # the document ids a passage may name (checked when the passage is first read)
        self._get = lru_cache(maxsize=LAZY_CACHE)(self._read)

    def _read(self, i: int) -> Chunk:
        chunk = self._lines.record(i, _chunk_from_json)
        if self._docs is not None and chunk.doc_id not in self._docs:
            raise _damaged(self._lines._path.parent, self._lines._path.name,
                           f"line {i + 1}: inconsistent (passage {brief_repr(chunk.chunk_id)} names document "
                           f"{brief_repr(chunk.doc_id)}, which docs.jsonl does not hold)")
        return chunk

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
        if len(self._pos) != len(ids):
            raise ValueError("docs.ids.json names a document twice: inconsistent")
        self._ids = ids
        self._get = lru_cache(maxsize=LAZY_CACHE)(self._read)

    def _read(self, i: int) -> DocRecord:
        doc = self._lines.record(i, _doc_from_json)
        if doc.doc_id != self._ids[i]:
            raise _damaged(self._lines._path.parent, self._lines._path.name,
                           f"line {i + 1}: inconsistent (document {brief_repr(doc.doc_id)}, but docs.ids.json "
                           f"says {brief_repr(self._ids[i])})")
        return doc

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
