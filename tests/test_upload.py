"""Uploads into the corpus (rag.upload): hostile names, size and type checks, no silent overwrite,
atomic writes, and a clear message for files without extractable text. Exact expected values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import blank_pdf, make_pdf
from rag.errors import RagError
from rag.load import corpus_files
from rag.upload import (
    BadUploadName,
    Saved,
    UploadExists,
    UploadRefused,
    UploadTooLarge,
    UploadUnreadable,
    safe_name,
    save_upload,
)

TEXT = b"Frontex deployed 50 border guards to the eastern border.\n"


def _listing(folder: Path) -> list[str]:
    """Every entry under ``folder`` (hidden ones included), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# safe_name


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("/abs/x.md", "x.md"),
        ("C:\\Users\\me\\Notes.TXT", "Notes.txt"),
        (".hidden.txt", "hidden.txt"),
        ("...hidden.md", "hidden.md"),
        ("a b?.txt", "a_b.txt"),
        ("a  b<>|*\".txt", "a_b.txt"),
        ("v1.2 report.pdf", "v1.2_report.pdf"),
        ("Bericht März 2023.pdf", "Bericht_März_2023.pdf"),
        ("報告.pdf", "報告.pdf"),
        ("\uff52\uff45\uff50\uff4f\uff52\uff54\uff0e\uff54\uff58\uff54", "report.txt"),  # full-width look-alikes
        ("a\u202egpj.txt", "a_gpj.txt"),  # right-to-left override
        ("a\x00b\nc.md", "a_b_c.md"),
        ("x.exe.txt", "x.exe.txt"),
        ("notes.txt ", "notes.txt"),
        ("x" * 300 + ".txt", "x" * 120 + ".txt"),
    ],
)
def test_safe_name_keeps_a_plain_base_name_and_the_extension(raw, expected):
    assert safe_name(raw) == expected


@pytest.mark.parametrize(
    "raw,message",
    [
        ("x.exe", "'x.exe': unsupported file type '.exe'; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("x.pdf.exe", "'x.pdf.exe': unsupported file type '.exe'; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("x.meta.json", "'x.meta.json': unsupported file type '.json'; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("README", "'README' has no file extension; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("file.", "'file.' has no file extension; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("../", "'../' has no file extension; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("", "'' has no file extension; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        (".txt", "'.txt' has no usable name: rename it using letters or digits"),
        ("???.txt", "'???.txt' has no usable name: rename it using letters or digits"),
        ("../.md", "'../.md' has no usable name: rename it using letters or digits"),
    ],
)
def test_safe_name_refuses_other_types_and_empty_names(raw, message):
    with pytest.raises(BadUploadName) as info:
        safe_name(raw)
    assert str(info.value) == message


def test_upload_errors_are_rag_errors():
    for cls in (BadUploadName, UploadTooLarge, UploadExists, UploadUnreadable):
        assert issubclass(cls, UploadRefused) and issubclass(cls, RagError)
    with pytest.raises(BadUploadName, match="must be text, got bytes"):
        safe_name(b"x.txt")


# ---------------------------------------------------------------------------------------------
# save_upload: what is kept


def test_save_upload_writes_the_file_under_its_safe_name_and_nothing_else(tmp_path):
    corpus = tmp_path / "corpus"
    saved = save_upload(corpus, "../../etc/passwd.txt", TEXT)
    assert saved == Saved("passwd.txt", corpus / "passwd.txt", len(TEXT), len(TEXT.decode()), "../../etc/passwd.txt")
    assert saved.message == "Added passwd.txt (57 characters of text), uploaded as '../../etc/passwd.txt'"
    assert (corpus / "passwd.txt").read_bytes() == TEXT
    assert _listing(tmp_path) == ["corpus", "corpus/passwd.txt"]  # nothing outside, no temporary file left
    assert corpus_files(corpus) == [corpus / "passwd.txt"]
    assert (corpus / "passwd.txt").stat().st_mode & 0o777 == 0o644


def test_save_upload_keeps_a_text_pdf_and_reports_decoding_notices(tmp_path):
    pdf = make_pdf(tmp_path / "src.pdf", [["Ferry inspections in Malta rose in 2023."]]).read_bytes()
    saved = save_upload(tmp_path / "corpus", "Malta ferries.pdf", pdf)
    assert (saved.name, saved.size, saved.replaced, saved.notice) == ("Malta_ferries.pdf", len(pdf), False, "")
    assert saved.chars >= len("Ferry inspections in Malta rose in 2023.")
    latin = save_upload(tmp_path / "corpus", "caf\u00e9.md", "Caf\u00e9 cr\u00e8me, 5 \u20ac.".encode("cp1252"))
    assert latin.notice == "not valid UTF-8; decoded as cp1252"
    assert latin.message == "Added café.md (16 characters of text); not valid UTF-8; decoded as cp1252"


# ---------------------------------------------------------------------------------------------
# save_upload: what is refused (and then nothing is written)


@pytest.mark.parametrize(
    "name,data,error,message",
    [
        ("x.exe", TEXT, BadUploadName, "'x.exe': unsupported file type '.exe'; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
        ("empty.txt", b"", UploadTooLarge, "empty.txt is empty"),
        ("blank.md", b" \n\t\n", UploadUnreadable, "blank.md: no extractable text"),
        ("evil.txt", bytes(range(256)) * 4, UploadUnreadable, "evil.txt: looks like a binary file, not text"),
        ("elf.md", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, UploadUnreadable, "elf.md: looks like a binary file, not text"),
        ("fake.pdf", TEXT, UploadUnreadable, "fake.pdf is not a PDF (its content does not start with %PDF)"),
        ("doc.txt", b"%PDF-1.4\n%binary", UploadUnreadable, "doc.txt is a PDF, not text: give it a .pdf name"),
    ],
)
def test_save_upload_refuses_bad_types_and_contents(tmp_path, name, data, error, message):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with pytest.raises(error) as info:
        save_upload(corpus, name, data)
    assert str(info.value) == message
    assert _listing(corpus) == []


def test_save_upload_says_install_ocr_for_a_pdf_without_a_text_layer(tmp_path, monkeypatch):
    from rag import formats

    monkeypatch.setattr(formats, "tesseract_path", lambda: None)
    with pytest.raises(UploadUnreadable) as info:
        save_upload(tmp_path, "scan.pdf", blank_pdf())
    assert str(info.value) == "scan.pdf: no text layer (a scanned PDF?). OCR is not installed: install Tesseract (Debian/Ubuntu: apt-get install tesseract-ocr) and index again"
    assert _listing(tmp_path) == []


def test_save_upload_reports_a_broken_pdf_without_a_traceback(tmp_path):
    with pytest.raises(UploadUnreadable, match=r"^broken\.pdf: cannot read"):
        save_upload(tmp_path, "broken.pdf", b"%PDF-1.4\n" + b"garbage " * 50)
    assert _listing(tmp_path) == []


def test_save_upload_refuses_a_file_over_the_size_limit(tmp_path):
    data = b"word " * 1000  # 5000 bytes
    with pytest.raises(UploadTooLarge) as info:
        save_upload(tmp_path, "big.txt", data, max_file_mb=0.004)  # 4194 bytes
    assert str(info.value) == "big.txt is 4.9 KB, over the 0.004 MB limit (RAG_MAX_FILE_MB)"
    assert _listing(tmp_path) == []
    assert save_upload(tmp_path, "big.txt", data, max_file_mb=0.005).size == 5000
    with pytest.raises(UploadTooLarge, match=r"^huge\.md is 51\.0 MB, over the 50 MB limit"):
        save_upload(tmp_path, "huge.md", b"a" * (51 * 2**20))


def test_save_upload_never_overwrites_without_consent(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"the original")
    with pytest.raises(UploadExists) as info:
        save_upload(tmp_path, "../notes.txt", TEXT)
    assert str(info.value) == "notes.txt is already in the corpus: allow replacing it, or rename the file"
    assert (tmp_path / "notes.txt").read_bytes() == b"the original"
    assert _listing(tmp_path) == ["notes.txt"]

    saved = save_upload(tmp_path, "notes.txt", TEXT, overwrite=True)
    assert saved.replaced and saved.message == "Added notes.txt (57 characters of text), replacing the earlier file of that name"
    assert (tmp_path / "notes.txt").read_bytes() == TEXT
    assert _listing(tmp_path) == ["notes.txt"]


def test_save_upload_refuses_a_name_taken_by_a_dangling_symlink(tmp_path):
    (tmp_path / "corpus").mkdir()
    os.symlink(tmp_path / "outside.txt", tmp_path / "corpus" / "link.txt")
    with pytest.raises(UploadExists):
        save_upload(tmp_path / "corpus", "link.txt", TEXT)
    assert not (tmp_path / "outside.txt").exists()


def test_overwriting_a_symlink_replaces_the_link_not_the_file_it_points_to(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    os.symlink(outside, corpus / "link.txt")
    save_upload(corpus, "link.txt", TEXT, overwrite=True)
    assert outside.read_bytes() == b"keep me"
    assert not (corpus / "link.txt").is_symlink() and (corpus / "link.txt").read_bytes() == TEXT


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_bytes(b"the original")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(UploadRefused) as info:
        save_upload(tmp_path, "notes.txt", TEXT, overwrite=True)
    assert str(info.value) == f"cannot write notes.txt into {tmp_path}: No space left on device"
    assert (tmp_path / "notes.txt").read_bytes() == b"the original"
    assert _listing(tmp_path) == ["notes.txt"]


def test_save_upload_creates_a_missing_corpus_folder(tmp_path):
    saved = save_upload(tmp_path / "new" / "corpus", "a.md", b"# A\n\nSome text.\n")
    assert saved.path == tmp_path / "new" / "corpus" / "a.md" and saved.path.is_file()


def test_concurrent_uploads_of_one_name_keep_exactly_one_and_refuse_the_rest(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def upload(i: int):
        try:
            return save_upload(tmp_path, "same.txt", f"version {i} of the notes\n".encode())
        except UploadExists:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, range(16)))
    kept = [r for r in results if r is not None]
    assert len(kept) == 1
    winner = results.index(kept[0])
    assert (tmp_path / "same.txt").read_text() == f"version {winner} of the notes\n"
    assert _listing(tmp_path) == ["same.txt"]
