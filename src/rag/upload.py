"""Adding a document to the corpus from an upload (the app's sidebar), safely.

Pure library code, no Streamlit. An upload is a client-supplied name and bytes, both untrusted:

- :func:`safe_name` keeps only the base name (no folders, ``../`` or absolute paths), never a hidden
  name, only letters, digits, ``_``, ``-`` and ``.``, and only the extensions the loader reads;
- :func:`save_upload` checks the size (``Settings.max_file_mb``), that the content matches the
  extension (a ``.pdf`` starts with ``%PDF``, a ``.docx`` is a zip package; a ``.txt``/``.md`` decodes as text), and that the
  file has extractable text, by reading it with the corpus loader (:func:`rag.load.load_file`)
  *before* it is kept. It refuses to replace an existing file unless ``overwrite=True``, and writes
  through a hidden temporary file in the corpus folder renamed into place, so a reader (or
  `rag index`) never sees half a file.

Every refusal is an :class:`UploadRefused` (a :class:`~rag.errors.RagError`) whose message names
the file and says what to do.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import BadUploadName, UnreadableFile, UploadExists, UploadRefused, UploadTooLarge, UploadUnreadable
from .load import SUPPORTED, load_file

#: Longest base name kept (in UTF-8 bytes, extension excluded); file systems allow 255.
MAX_STEM_BYTES = 120
_UNSAFE = re.compile(r"[^\w.-]+")  # \w is Unicode-aware: letters and digits of any script, and "_"


@dataclass(frozen=True)
class Saved:
    """A file added to the corpus."""

    name: str  # its (safe) name in the corpus folder, which is also its document id
    path: Path
    size: int  # bytes
    chars: int  # characters of extracted text
    original: str = ""  # the name it was uploaded as
    replaced: bool = False  # an earlier file of the same name was overwritten
    notice: str = ""  # from the loader, e.g. "not valid UTF-8; decoded as cp1252"

    @property
    def message(self) -> str:
        """One line for a person, e.g. ``Added notes.txt (1,234 characters of text)``."""
        msg = f"Added {self.name} ({self.chars:,} characters of text)"
        if self.original and self.original != self.name:
            msg += f", uploaded as {self.original!r}"
        if self.replaced:
            msg += ", replacing the earlier file of that name"
        if self.notice:
            msg += f"; {self.notice}"
        return msg


def safe_name(name: str) -> str:
    """A file name that is safe to create in the corpus folder, from a client-supplied one.

    Keeps the last path component only (``/`` and ``\\`` both separate), normalises Unicode (NFKC,
    so full-width look-alikes become ASCII), replaces every run of other characters than letters,
    digits, ``_``, ``-`` and ``.`` with ``_``, strips leading dots (no hidden files) and lower-cases
    the extension, which must be one of ``.txt``, ``.md``, ``.pdf``.

    >>> safe_name("../../etc/passwd.txt"), safe_name("a b?.txt"), safe_name(".hidden.MD")
    ('passwd.txt', 'a_b.txt', 'hidden.md')
    """
    if not isinstance(name, str):
        raise BadUploadName(f"the file name must be text, got {type(name).__name__}")
    shown = name if len(name) <= 80 else name[:79] + "…"
    base = re.split(r"[/\\]", unicodedata.normalize("NFKC", name))[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = ext, ""
    ext = "." + ext.strip().lower() if dot and ext.strip() else ""
    if not ext:
        raise BadUploadName(f"{shown!r} has no file extension; expected one of {', '.join(SUPPORTED)}")
    if ext not in SUPPORTED:
        raise BadUploadName(f"{shown!r}: unsupported file type {ext!r}; expected one of {', '.join(SUPPORTED)}")
    stem = _UNSAFE.sub("_", stem)
    stem = re.sub(r"_{2,}", "_", stem).lstrip("._-").rstrip("._-")
    while len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip("._-")
    if not stem or not any(ch.isalnum() for ch in stem):
        raise BadUploadName(f"{shown!r} has no usable name: rename it using letters or digits")
    return stem + ext


def check_content(name: str, data: bytes, max_file_mb: float = 50.0) -> None:
    """The checks that need only the bytes: not empty, under the size limit, and a PDF where the
    name says PDF (and not a PDF where it says text). ``name`` is a :func:`safe_name`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadUnreadable(f"{name}: the content must be bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise UploadTooLarge(f"{name} is empty")
    if size > max_file_mb * 1024 * 1024:
        shown = f"{size / 2**20:.1f} MB" if size >= 0.1 * 2**20 else f"{size / 1024:.1f} KB"
        raise UploadTooLarge(f"{name} is {shown}, over the {max_file_mb:g} MB limit (RAG_MAX_FILE_MB)")
    low = name.lower()
    is_pdf = bytes(data[:5]) == b"%PDF-"
    is_zip = bytes(data[:4]) == b"PK\x03\x04"  # a .docx is a zip package
    if low.endswith(".pdf") and not is_pdf:
        raise UploadUnreadable(f"{name} is not a PDF (its content does not start with %PDF)")
    if low.endswith(".docx") and not is_zip:
        raise UploadUnreadable(f"{name} is not a Word .docx file (an old .doc, or another format?): save it as .docx")
    if not low.endswith(".pdf") and is_pdf:
        raise UploadUnreadable(f"{name} is a PDF, not text: give it a .pdf name")
    if not low.endswith(".docx") and is_zip:
        raise UploadUnreadable(f"{name} is a zip package (a Word file?), not text: give a .docx a .docx name")


def save_upload(
    corpus_dir: Path | str,
    name: str,
    data: bytes,
    *,
    max_file_mb: float = 50.0,
    overwrite: bool = False,
) -> Saved:
    """Check an upload and write it into ``corpus_dir`` under :func:`safe_name` of ``name``.

    Raises :class:`UploadRefused` (nothing written) when the name, size or content is refused, when
    the file has no extractable text, or when a file of that name exists and ``overwrite`` is false.
    """
    target_name = safe_name(name)
    check_content(target_name, data, max_file_mb)
    corpus_dir = Path(corpus_dir)
    try:
        corpus_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UploadRefused(f"cannot create the corpus folder {corpus_dir}: {exc.strerror}") from exc
    target = corpus_dir / target_name
    if not overwrite and os.path.lexists(target):
        raise _exists(target_name)
    if os.path.isdir(target):
        raise UploadRefused(f"{target_name} is a folder in the corpus: rename the file")

    suffix = Path(target_name).suffix
    try:  # hidden name: the loader and `rag index` skip it while it is being written
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=corpus_dir)
    except OSError as exc:
        raise UploadRefused(f"cannot write into the corpus folder {corpus_dir}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        try:
            doc, notice = load_file(tmp, doc_id=target_name, max_file_mb=max_file_mb)
        except UnreadableFile as exc:
            raise UploadUnreadable(f"{target_name}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a hostile file may break the PDF parser in other ways
            raise UploadUnreadable(f"{target_name}: cannot read the file ({type(exc).__name__}: {exc})") from exc
        replaced = _place(tmp, target, overwrite)
    except OSError as exc:
        raise UploadRefused(f"cannot write {target_name} into {corpus_dir}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(corpus_dir)
    return Saved(target_name, target, len(data), len(doc.text), name, replaced, notice)


def _exists(name: str) -> UploadExists:
    return UploadExists(f"{name} is already in the corpus: allow replacing it, or rename the file")


def _place(tmp: Path, target: Path, overwrite: bool) -> bool:
    """Move the checked temporary file to ``target``; True if an existing file was replaced.

    Without ``overwrite`` a hard link creates ``target`` only if it does not exist (no race with
    another upload of the same name); the temporary name is removed by the caller."""
    if overwrite:
        existed = os.path.lexists(target)
        os.replace(tmp, target)  # a symlink at ``target`` is replaced itself, never followed
        return existed
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists(target.name) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):  # no hard links here: check, then rename
            raise _exists(target.name) from None
        os.replace(tmp, target)
    return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Where the app's "remove" puts a document: a hidden folder of the corpus (never indexed), so a
#: removal loses nothing; delete the folder to free the space.
REMOVED_DIR = ".rag-removed"


def remove_document(corpus_dir: Path | str, doc_id: str) -> Path:
    """Take document ``doc_id`` (as in the index) out of the corpus: the file, and its
    ``NAME.meta.json`` if any, are moved to ``corpus/.rag-removed/`` (renamed if that name is
    taken). Refuses ids that leave the corpus, links and anything but a regular file. Returns where
    the document went."""
    from .load import sidecar_path

    corpus = Path(os.path.realpath(corpus_dir))
    rel = Path(doc_id)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0].startswith("."):
        raise UploadRefused(f"{doc_id!r} is not a document of the corpus")
    path = corpus / rel
    if path.is_symlink() or not path.is_file():
        raise UploadRefused(f"{doc_id!r} is not a regular file in the corpus (a link, a folder, or gone): not removed")
    bin_dir = corpus / REMOVED_DIR
    bin_dir.mkdir(exist_ok=True)
    dest = bin_dir / rel.name
    n = 1
    while os.path.lexists(dest):
        dest = bin_dir / f"{rel.stem}-{n}{rel.suffix}"
        n += 1
    os.replace(path, dest)
    side = sidecar_path(path)
    if side.is_file() and not side.is_symlink():
        os.replace(side, dest.with_name(dest.stem + side.name[len(path.stem):]))
    return dest
