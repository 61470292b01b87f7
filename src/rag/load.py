"""Stage 1: read corpus files (.txt, .md, .pdf) into :class:`Document` records.

A file that cannot be read is reported by name in :class:`LoadReport` and skipped; loading never
crashes on one bad file. PDF pages are joined with form feeds (``\\f``), which the cleaning stage
reads as page breaks, so page numbers survive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUPPORTED = (".txt", ".md", ".pdf")
SIDECAR_SUFFIX = ".meta.json"


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
    skipped: tuple[Skipped, ...]
    notices: tuple[str, ...] = ()  # e.g. "decoded as cp1252"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_files(corpus_dir: Path) -> list[Path]:
    """Supported files under ``corpus_dir``, sorted, hidden files and sidecars excluded."""
    corpus_dir = Path(corpus_dir)
    out = []
    for p in sorted(corpus_dir.rglob("*")):
        rel = p.relative_to(corpus_dir)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in SUPPORTED:
            out.append(p)
    return out


def load_corpus(corpus_dir: Path, max_file_mb: float = 50.0) -> LoadReport:
    corpus_dir = Path(corpus_dir)
    docs: list[Document] = []
    skipped: list[Skipped] = []
    notices: list[str] = []
    for path in corpus_files(corpus_dir):
        doc_id = path.relative_to(corpus_dir).as_posix()
        try:
            doc, notice = load_file(path, doc_id, max_file_mb=max_file_mb)
        except UnreadableFile as exc:
            log.warning("skipped %s: %s", doc_id, exc)
            skipped.append(Skipped(doc_id, str(exc)))
            continue
        if notice:
            notices.append(f"{doc_id}: {notice}")
        docs.append(doc)
    return LoadReport(tuple(docs), tuple(skipped), tuple(notices))


class UnreadableFile(Exception):
    pass


def load_file(path: Path, doc_id: str | None = None, max_file_mb: float = 50.0) -> tuple[Document, str]:
    """Load one file; raises :class:`UnreadableFile` with a reason a person can act on."""
    path = Path(path)
    doc_id = doc_id or path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableFile(f"cannot read file: {exc.strerror}") from exc
    if size > max_file_mb * 1024 * 1024:
        raise UnreadableFile(f"file is {size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit")
    if size == 0:
        raise UnreadableFile("empty file")
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read file: {exc.strerror}") from exc
    notice = ""
    if suffix == ".pdf":
        text = _pdf_text(path)
    elif suffix in (".txt", ".md"):
        text, notice = decode_text(raw)
    else:
        raise UnreadableFile(f"unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED)}")
    if not text.strip():
        raise UnreadableFile("no extractable text" + (": run OCR first" if suffix == ".pdf" else ""))
    meta = _sidecar(path)
    title = str(meta.get("title") or _guess_title(text, path))
    digest = hashlib.sha256(raw).hexdigest()
    return Document(doc_id, path, title, text, digest, meta), notice


def decode_text(raw: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM); otherwise cp1252, then latin-1, with a notice. Binary data is refused."""
    if b"\x00" in raw[:8192]:
        raise UnreadableFile("looks like a binary file, not text")
    try:
        text = raw.decode("utf-8-sig")
        notice = ""
    except UnicodeDecodeError:
        try:
            text, notice = raw.decode("cp1252"), "not valid UTF-8; decoded as cp1252"
        except UnicodeDecodeError:
            text, notice = raw.decode("latin-1"), "not valid UTF-8; decoded as latin-1"
    controls = sum(1 for ch in text[:8192] if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(text[:8192]) // 50):
        raise UnreadableFile("looks like a binary file, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n"), notice


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover - pypdf is a dependency
        raise UnreadableFile("reading PDF needs pypdf: pip install pypdf") from exc
    try:
        reader = PdfReader(str(path))
        pages = [(page.extract_text() or "").replace("\f", " ") for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableFile(f"cannot read PDF: {exc}") from exc
    return "\f".join(pages)


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(path.stem + SIDECAR_SUFFIX)
    if not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignored unreadable metadata %s: %s", side.name, exc)
        return {}
    return meta if isinstance(meta, dict) else {}


def _guess_title(text: str, path: Path) -> str:
    for line in text.splitlines()[:20]:
        line = line.strip().lstrip("#").strip()
        if 3 <= len(line) <= 120:
            return line
    return re.sub(r"[_-]+", " ", path.stem).strip() or path.name
