"""Stage 1: read corpus files (.txt, .md, .pdf, .docx, .html) into :class:`Document` records.

A file that cannot be read is reported by name in :class:`LoadReport` and skipped; loading never
crashes on one bad file. PDF pages are joined with form feeds (``\\f``), which the cleaning stage
reads as page breaks, so page numbers survive.

Only files that belong to the corpus are opened (:func:`scan_corpus`): a symbolic link whose target
is outside the corpus folder is refused unless ``follow_symlinks`` is set, and FIFOs, devices and
sockets are never opened (opening a FIFO blocks until someone writes to it). A file is opened
non-blocking and checked to be a regular file before it is read, so one swapped in after the scan
is refused too. A ``NAME.meta.json`` sidecar is checked against :class:`Sidecar`; a bad one (a
folder, over :data:`SIDECAR_MAX_MB`, nested too deeply, wrong types) is ignored with a notice naming
it, and its document still loads; text fields and parts over their limits are cut, with a notice.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UnreadableFile
from .text import decode_text

log = logging.getLogger(__name__)

SUPPORTED = (".txt", ".md", ".pdf", ".docx", ".html", ".htm")
SUPPORTED_SHOWN = ".txt, .md, .pdf, .docx or .html"
SIDECAR_SUFFIX = ".meta.json"
FOLLOW_HINT = "use `rag index --follow-symlinks` (or RAG_FOLLOW_SYMLINKS=1) to index it anyway"


@dataclass(frozen=True)
class Document:
    doc_id: str  # path relative to the corpus folder, with forward slashes
    path: Path
    title: str
    text: str  # the text every offset refers to (for .txt/.md: the file decoded; for .pdf: pages joined by \f)
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    doc_id: str
    reason: str


@dataclass(frozen=True)
class LoadReport:
    documents: tuple[Document, ...]
    skipped: tuple[Skipped, ...]  # opened but unusable (empty, binary, too big, no text layer, ...)
    notices: tuple[str, ...] = ()  # e.g. "decoded as cp1252", "metadata ignored"
    refused: tuple[Skipped, ...] = ()  # never opened: links out of the corpus, FIFOs, devices, sockets


@dataclass(frozen=True)
class CorpusScan:
    """What :func:`scan_corpus` found: the files that may be opened, and the ones that may not."""

    files: tuple[Path, ...]  # supported documents, sorted
    sidecars: tuple[Path, ...]  # NAME.meta.json files, sorted
    refused: tuple[Skipped, ...]  # documents and sidecars that are never opened, with why
    links: frozenset[Path] = frozenset()  # the files and sidecars above that are (allowed) symbolic links


# ---------------------------------------------------------------------------------------------
# Which files


def sha256_file(path: Path) -> str:
    """sha256 of a regular file; any other kind of file (FIFO, device, socket) is refused unopened
    for reading (``OSError``), so hashing never blocks."""
    h = hashlib.sha256()
    with open_regular(Path(path), follow=True) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_files(corpus_dir: Path, follow_symlinks: bool = False) -> list[Path]:
    """Supported files under ``corpus_dir`` that may be opened (see :func:`scan_corpus`), sorted;
    hidden files and sidecars excluded."""
    return list(scan_corpus(corpus_dir, follow_symlinks).files)


def scan_corpus(corpus_dir: Path, follow_symlinks: bool = False) -> CorpusScan:
    """Walk ``corpus_dir`` (hidden names skipped) without opening any file. A document or sidecar is
    refused when it is a FIFO, device or socket, a broken link, or (unless ``follow_symlinks``) a
    link whose real path is outside the corpus folder. Linked folders are entered only with
    ``follow_symlinks`` (each real folder once, so a link loop ends)."""
    corpus_dir = Path(corpus_dir)
    root = Path(os.path.realpath(corpus_dir))
    files: list[Path] = []
    sidecars: list[Path] = []
    refused: list[Skipped] = []
    links: set[Path] = set()
    seen = {root}

    def visit(folder: Path) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder != corpus_dir:
                refused.append(Skipped(folder.relative_to(corpus_dir).as_posix() + "/", f"cannot list folder: {exc.strerror}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            doc_id = path.relative_to(corpus_dir).as_posix()
            kind = _candidate_kind(entry.name)
            is_link = entry.is_symlink()
            try:
                st = path.stat()  # follows a link; never opens
            except OSError as exc:
                if kind:
                    why = "a broken symbolic link" if is_link else f"cannot read file: {exc.strerror}"
                    refused.append(Skipped(doc_id, why))
                continue
            outside = is_link and not _inside(Path(os.path.realpath(path)), root)
            if stat.S_ISDIR(st.st_mode):
                if kind == "sidecar":  # its documents are still read; as metadata it is ignored, said so
                    refused.append(Skipped(doc_id, "a folder, not a metadata file"))
                real = Path(os.path.realpath(path))
                if is_link and not follow_symlinks:
                    if outside:
                        refused.append(Skipped(doc_id + "/", f"a symbolic link to a folder outside the corpus: not followed ({FOLLOW_HINT})"))
                    continue
                if real not in seen:
                    seen.add(real)
                    visit(path)
                continue
            if kind is None:
                continue
            if outside and not follow_symlinks:
                refused.append(Skipped(doc_id, f"a symbolic link to a file outside the corpus folder: not read ({FOLLOW_HINT})"))
                continue
            if not stat.S_ISREG(st.st_mode):
                refused.append(Skipped(doc_id, f"not a regular file ({_file_kind(st.st_mode)}): never opened"))
                continue
            (files if kind == "document" else sidecars).append(path)
            if is_link:
                links.add(path)

    if corpus_dir.is_dir():
        visit(corpus_dir)
    order = lambda p: p.relative_to(corpus_dir).parts  # noqa: E731 - same order as sorted(rglob)
    return CorpusScan(tuple(sorted(files, key=order)), tuple(sorted(sidecars, key=order)), tuple(refused), frozenset(links))


def _candidate_kind(name: str) -> str | None:
    if name.endswith(SIDECAR_SUFFIX):
        return "sidecar"
    if Path(name).suffix.lower() in SUPPORTED:
        return "document"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


# ---------------------------------------------------------------------------------------------
# Reading


#: ``reuse(doc_id, path, sidecar)``: the record of an earlier load of this file when it has not changed
#: since (a Document, or the Skipped it was), or None to read it now (an incremental index build).
Reuse = Callable[[str, Path, "Path | None"], "Document | Skipped | None"]


def load_corpus(corpus_dir: Path, max_file_mb: float = 50.0, follow_symlinks: bool = False,
                reuse: Reuse | None = None, progress: Callable[[str, int, int], None] | None = None) -> LoadReport:
    """Every document of ``corpus_dir`` (see :func:`scan_corpus` for which files), in scan order.
    With ``reuse``, a file it knows unchanged is not read again; ``progress`` follows OCR."""
    corpus_dir = Path(corpus_dir)
    scan = scan_corpus(corpus_dir, follow_symlinks)
    docs: list[Document] = []
    skipped: list[Skipped] = []
    notices: list[str] = []
    refused: list[Skipped] = []
    for r in scan.refused:
        if r.doc_id.endswith(SIDECAR_SUFFIX):
            notices.append(f"{r.doc_id}: metadata ignored: {r.reason}")
        else:
            log.warning("skipped %s: %s", r.doc_id, r.reason)
            refused.append(r)
    usable_sidecars = set(scan.sidecars)
    for path in scan.files:
        doc_id = path.relative_to(corpus_dir).as_posix()
        side = sidecar_path(path)
        known = reuse(doc_id, path, side if side in usable_sidecars else None) if reuse else None
        if isinstance(known, Skipped):
            skipped.append(known)
            continue
        if known is not None:
            docs.append(known)
            continue
        try:
            doc, notice = load_file(
                path, doc_id, max_file_mb=max_file_mb, follow=path in scan.links,
                sidecar=side if side in usable_sidecars else None, progress=progress,
            )
        except UnreadableFile as exc:
            log.warning("skipped %s: %s", doc_id, exc)
            skipped.append(Skipped(doc_id, str(exc)))
            continue
        if notice:
            notices.append(f"{doc_id}: {notice}")
        docs.append(doc)
    return LoadReport(tuple(docs), tuple(skipped), tuple(notices), tuple(refused))


_DEFAULT_SIDECAR = object()


def sidecar_path(path: Path) -> Path:
    """``report.txt`` -> ``report.meta.json`` (same folder)."""
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def load_file(
    path: Path,
    doc_id: str | None = None,
    max_file_mb: float = 50.0,
    *,
    follow: bool = True,
    sidecar: Path | None | object = _DEFAULT_SIDECAR,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Document, str]:
    """Load one file; raises :class:`UnreadableFile` with a reason a person can act on. ``follow``
    False refuses a symbolic link; ``sidecar`` is the metadata file to use (default: the one next to
    ``path``, if any; None: none). The notice (possibly empty) covers decoding, OCR and the sidecar.
    ``progress("OCR <doc_id>", pages done, pages to do)`` follows OCR of a scanned PDF."""
    from . import formats

    path = Path(path)
    doc_id = doc_id or path.name
    raw = _read_regular(path, max_bytes=int(max_file_mb * 1024 * 1024), follow=follow, max_file_mb=max_file_mb)
    suffix = path.suffix.lower()
    notices = []
    extra: dict[str, Any] = {}
    found_title = ""
    if suffix == ".pdf":
        pages = _pdf_pages(raw)
        images = sum(1 for p in pages if not p.strip())  # pages without a text layer: scanned (or blank)
        if images and formats.tesseract_path() is None:
            if images == len(pages):
                raise UnreadableFile(f"no text layer (a scanned PDF?). {formats.OCR_HINT}")
            notices.append(f"{images} of {len(pages)} pages have no text layer and were not read. {formats.OCR_HINT}")
        elif images:
            on_page = (lambda done, total: progress(f"OCR {doc_id}", done, total)) if progress else None
            ocr = formats.ocr_pdf_pages(raw, pages, on_page)
            pages = list(ocr.pages)
            if ocr.ocr_pages:
                extra["ocr_pages"] = [i + 1 for i in ocr.ocr_pages]
            notices.append(ocr.notice)
        text = "\f".join(pages)
    elif suffix in (".txt", ".md"):
        text, notice = decode_text(raw)
        notices.append(notice)
    elif suffix == ".docx":
        text, found_title = formats.docx_text(raw)
    elif suffix in (".html", ".htm"):
        text, found_title = formats.html_text(raw)
    else:
        raise UnreadableFile(f"unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED)}")
    if not text.strip():
        raise UnreadableFile("no extractable text" + (" (nor any found by OCR)" if extra.get("ocr_pages") else ""))
    side = sidecar_path(path) if sidecar is _DEFAULT_SIDECAR else sidecar
    meta, side_notice = read_sidecar(side, max_file_mb) if isinstance(side, Path) else ({}, "")
    notices.append(side_notice)
    meta = {**extra, **meta} if extra else meta
    title = str(meta.get("title") or found_title or _guess_title(text, path))
    digest = hashlib.sha256(raw).hexdigest()
    return Document(doc_id, path, title, text, digest, meta), "; ".join(n for n in notices if n)


class _Refused(OSError):
    """Not a regular file (or a link where none is allowed): never read."""


def open_regular(path: Path, follow: bool = True) -> io.BufferedReader:
    """Open ``path`` for reading without blocking (O_NONBLOCK: a FIFO does not wait for a writer)
    and make sure it is a regular file before anything is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise _Refused(errno.ELOOP, "a symbolic link: not followed") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Refused(errno.EINVAL, f"not a regular file ({_file_kind(st.st_mode)}): not read")
    return os.fdopen(fd, "rb")


def _read_regular(path: Path, max_bytes: int, follow: bool, max_file_mb: float) -> bytes:
    try:
        with open_regular(path, follow) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise UnreadableFile(f"file is {size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit")
            if size == 0:
                raise UnreadableFile("empty file")
            raw = fh.read(max_bytes + 1)
    except _Refused as exc:
        raise UnreadableFile(exc.strerror) from exc
    except OSError as exc:
        raise UnreadableFile(f"cannot read file: {exc.strerror}") from exc
    if len(raw) > max_bytes:  # grew while being read
        raise UnreadableFile(f"file is over the {max_file_mb:g} MB limit")
    return raw


def _pdf_text(raw: bytes) -> str:
    return "\f".join(_pdf_pages(raw))


def _pdf_pages(raw: bytes) -> list[str]:
    """The text layer of each page (empty for a scanned page)."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover - pypdf is a dependency
        raise UnreadableFile("reading PDF needs pypdf: pip install pypdf") from exc
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [(page.extract_text() or "").replace("\f", " ") for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableFile(f"cannot read PDF: {exc}") from exc
    return pages


# ---------------------------------------------------------------------------------------------
# Sidecar metadata


@dataclass(frozen=True)
class Part:
    """A named part of a document, starting at the first unit whose text starts with ``anchor``."""

    title: str
    anchor: str

    def __post_init__(self) -> None:
        for name in ("title", "anchor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {brief_repr(value)}")


@dataclass(frozen=True)
class Sidecar:
    """``NAME.meta.json``: optional text fields and parts; other keys are kept as given."""

    title: str | None = None
    author: str | None = None
    date: str | None = None
    reference: str | None = None
    source: str | None = None
    parts: tuple[Part, ...] = ()

    TEXT_FIELDS = ("title", "author", "date", "reference", "source")

    def __post_init__(self) -> None:
        for name in self.TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}: expected a string, got {brief_repr(value)}")
        if not isinstance(self.parts, tuple) or not all(isinstance(p, Part) for p in self.parts):
            raise ValueError("parts: expected a tuple of Part")

    @classmethod
    def from_json(cls, obj: Any) -> "Sidecar":
        """Validate parsed JSON; raises ValueError naming the first bad field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"expected a JSON object, got {brief_repr(obj)}")
        parts = obj.get("parts", [])
        if not isinstance(parts, list):
            raise ValueError(f'parts: expected a list of {{"title", "anchor"}} objects, got {brief_repr(parts)}')
        checked = []
        for i, p in enumerate(parts):
            if not isinstance(p, Mapping):
                raise ValueError(f'parts[{i}]: expected a {{"title", "anchor"}} object, got {brief_repr(p)}')
            try:
                checked.append(Part(p.get("title"), p.get("anchor")))
            except ValueError as exc:
                raise ValueError(f"parts[{i}]: {exc}") from None
        return cls(**{k: obj.get(k) for k in cls.TEXT_FIELDS}, parts=tuple(checked))


#: A sidecar is a few lines of metadata: one larger than this is ignored (with a notice), whatever
#: ``max_file_mb`` allows documents.
SIDECAR_MAX_MB = 1.0
#: Nesting a sidecar may have (``{"x": {"y": [...]}}`` is 3): deeper ones are ignored.
SIDECAR_MAX_DEPTH = 16
#: Longest text field (title, author, ...) kept; a longer one is cut, with a notice. The title is
#: copied into every passage of its document, so a huge one would bloat the index.
SIDECAR_MAX_CHARS = 500
#: Most parts kept, and the longest part title and anchor (part titles are copied into passages).
SIDECAR_MAX_PARTS = 200
SIDECAR_MAX_PART_CHARS = 200


def read_sidecar(side: Path, max_file_mb: float = 50.0) -> tuple[dict[str, Any], str]:
    """(metadata, notice): the sidecar's object when it is valid, else ``{}`` and a notice naming it.
    A sidecar over :data:`SIDECAR_MAX_MB` or nested deeper than :data:`SIDECAR_MAX_DEPTH` is ignored;
    text fields and parts over their limits are cut, with a notice."""
    limit_mb = min(max_file_mb, SIDECAR_MAX_MB)
    try:
        if side.is_dir():
            return _ignored(side, "a folder, not a file")
        raw = _read_regular(side, max_bytes=int(limit_mb * 1024 * 1024), follow=True, max_file_mb=limit_mb)
        meta = json.loads(raw.decode("utf-8"))
        if _depth(meta) > SIDECAR_MAX_DEPTH:
            raise ValueError(f"nested more than {SIDECAR_MAX_DEPTH} levels deep")
        Sidecar.from_json(meta)
    except UnreadableFile as exc:
        if not side.exists() and not side.is_symlink():
            return {}, ""
        return _ignored(side, str(exc))
    except RecursionError:
        return _ignored(side, f"nested more than {SIDECAR_MAX_DEPTH} levels deep")
    except (UnicodeDecodeError, ValueError) as exc:
        return _ignored(side, str(exc))
    meta, cut = _capped(dict(meta))
    if cut:
        log.warning("metadata %s: %s", side.name, "; ".join(cut))
        return meta, f"metadata {side.name}: {'; '.join(cut)}"
    return meta, ""


def _depth(obj: Any) -> int:
    """How deeply ``obj`` (parsed JSON) nests lists and objects; without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, level)
            if level > SIDECAR_MAX_DEPTH:
                break
            todo.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _capped(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``meta`` (a valid sidecar) with text fields and parts cut to their limits, and what was cut."""
    cut = []
    for name in Sidecar.TEXT_FIELDS:
        value = meta.get(name)
        if isinstance(value, str) and len(value) > SIDECAR_MAX_CHARS:
            meta[name] = _cut(value, SIDECAR_MAX_CHARS)
            cut.append(f"{name} cut to {SIDECAR_MAX_CHARS} characters (it has {len(value)})")
    parts = meta.get("parts")
    if isinstance(parts, list) and parts:
        if len(parts) > SIDECAR_MAX_PARTS:
            cut.append(f"only the first {SIDECAR_MAX_PARTS} of {len(parts)} parts kept")
            parts = parts[:SIDECAR_MAX_PARTS]
        capped = [{**p, "title": _cut(p["title"], SIDECAR_MAX_PART_CHARS), "anchor": p["anchor"][:SIDECAR_MAX_PART_CHARS]}
                  for p in parts]
        if any(c["title"] != p["title"] or c["anchor"] != p["anchor"] for c, p in zip(capped, parts)):
            cut.append(f"part titles and anchors cut to {SIDECAR_MAX_PART_CHARS} characters")
        meta["parts"] = capped
    return meta, cut


def _ignored(side: Path, why: str) -> tuple[dict[str, Any], str]:
    log.warning("ignored metadata %s: %s", side.name, why)
    return {}, f"metadata {side.name} ignored ({why})"


def brief_repr(value: Any) -> str:
    """A value as a short JSON-ish string, for messages that say what was given."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _guess_title(text: str, path: Path) -> str:
    for line in text.splitlines()[:20]:
        line = line.strip().lstrip("#").strip()
        if 3 <= len(line) <= 120:
            return line
    return re.sub(r"[_-]+", " ", path.stem).strip() or path.name
