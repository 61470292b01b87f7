"""Stage 1: loading corpus files into Documents (tiny hand-written corpora, exact values)."""

from __future__ import annotations

import hashlib
import os
import pytest

from conftest import make_pdf, write_corpus
from rag.load import Skipped, UnreadableFile, corpus_files, decode_text, load_corpus, load_file


# ---------------------------------------------------------------------------------------------
# Text and Markdown


def test_txt_is_loaded_verbatim_with_sha256_of_the_bytes(tmp_path):
    raw = "Alpha title\n\nBody text, with   spaces.\n"
    write_corpus(tmp_path, {"a.txt": raw})
    report = load_corpus(tmp_path)
    (doc,) = report.documents
    assert doc.doc_id == "a.txt"
    assert doc.path == tmp_path / "a.txt"
    assert doc.text == raw
    assert doc.title == "Alpha title"
    assert doc.sha256 == hashlib.sha256(raw.encode()).hexdigest()
    assert doc.metadata == {}
    assert report.skipped == () and report.notices == ()


def test_markdown_title_is_the_first_heading_without_hashes(tmp_path):
    write_corpus(tmp_path, {"b.md": "# Beta Report\n\nBody."})
    (doc,) = load_corpus(tmp_path).documents
    assert doc.title == "Beta Report"
    assert doc.text == "# Beta Report\n\nBody."  # the text is not rewritten


def test_title_falls_back_to_the_file_name_when_no_line_fits(tmp_path):
    write_corpus(tmp_path, {"border_guards-report.txt": "ab\n\nxy"})
    (doc,) = load_corpus(tmp_path).documents
    assert doc.title == "border guards report"


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"\xef\xbb\xbfBOM text\r\nline two\r\n", "BOM text\nline two\n"),  # BOM dropped, CRLF -> LF
        (b"old mac\rline", "old mac\nline"),  # lone CR -> LF
        ("Caf\u00e9 na\u00efve".encode("utf-8"), "Caf\u00e9 na\u00efve"),
    ],
)
def test_utf8_decoding_normalises_line_ends(raw, text):
    assert decode_text(raw) == (text, "")


@pytest.mark.parametrize(
    "raw, text, notice",
    [
        (b"caf\xe9 au lait", "caf\u00e9 au lait", "not valid UTF-8; decoded as cp1252"),
        (b"A\x81B lat", "A\x81B lat", "not valid UTF-8; decoded as latin-1"),  # 0x81 is undefined in cp1252
    ],
)
def test_non_utf8_text_is_decoded_with_a_notice(tmp_path, raw, text, notice):
    write_corpus(tmp_path, {"legacy.txt": raw})
    report = load_corpus(tmp_path)
    (doc,) = report.documents
    assert doc.text == text
    assert report.notices == (f"legacy.txt: {notice}",)


def test_sidecar_metadata_gives_the_title_and_is_kept(tmp_path):
    write_corpus(
        tmp_path,
        {
            "report.txt": "First line of the text\n\nBody.",
            "report.meta.json": '{"title": "Annual Border Report", "date": "2023-12"}',
        },
    )
    report = load_corpus(tmp_path)
    (doc,) = report.documents  # the sidecar itself is not a document
    assert doc.title == "Annual Border Report"
    assert doc.metadata == {"title": "Annual Border Report", "date": "2023-12"}


@pytest.mark.parametrize("sidecar", ["{not json", "[1, 2, 3]", '"just a string"'])
def test_unusable_sidecar_is_ignored(tmp_path, sidecar):
    write_corpus(tmp_path, {"report.txt": "Guessed title\n\nBody.", "report.meta.json": sidecar})
    (doc,) = load_corpus(tmp_path).documents
    assert doc.title == "Guessed title"
    assert doc.metadata == {}


def test_real_corpus_sidecar_title_and_parts(real_settings):
    report = load_corpus(real_settings.corpus_dir)
    (doc,) = report.documents
    assert doc.doc_id == "eu-commission-letter-migration-2023-12.txt"
    assert doc.title.startswith("Letter of President von der Leyen to the European Council on migration")
    assert [p["title"] for p in doc.metadata["parts"]] == ["Letter", "Annex"]
    assert report.skipped == ()


# ---------------------------------------------------------------------------------------------
# Which files, in which order


def test_corpus_files_are_sorted_recursive_and_skip_hidden_and_unsupported(tmp_path):
    write_corpus(
        tmp_path,
        {
            "b.txt": "b",
            "a.md": "a",
            "sub/c.txt": "c",
            "Upper.PDF": b"%PDF-1.4",
            ".hidden.txt": "h",
            ".git/d.txt": "d",
            "x.docx": "x",
            "y.doc": "old Word",
            "z.xlsx": "sheet",
            "a.meta.json": "{}",
        },
    )
    names = [p.relative_to(tmp_path).as_posix() for p in corpus_files(tmp_path)]
    assert names == ["Upper.PDF", "a.md", "b.txt", "sub/c.txt", "x.docx"]


def test_nested_files_get_posix_doc_ids(tmp_path):
    write_corpus(tmp_path, {"sub/deeper/h.txt": "Nested doc"})
    (doc,) = load_corpus(tmp_path).documents
    assert doc.doc_id == "sub/deeper/h.txt"


# ---------------------------------------------------------------------------------------------
# Unreadable files are reported by name and skipped


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("binary.txt", b"\x00\x01\x02\x03binary payload", "looks like a binary file, not text"),
        ("controls.txt", bytes(range(1, 9)) * 20, "looks like a binary file, not text"),
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"  \n\n \t\n", "no extractable text"),
    ],
)
def test_unreadable_file_is_skipped_with_its_name_and_the_rest_loads(tmp_path, name, content, reason):
    write_corpus(tmp_path, {name: content, "good.txt": "Good document\n\nIt has text."})
    report = load_corpus(tmp_path)
    assert [d.doc_id for d in report.documents] == ["good.txt"]
    assert report.skipped == (Skipped(name, reason),)


def test_oversize_file_is_skipped_with_the_limit_in_the_reason(tmp_path):
    write_corpus(tmp_path, {"big.txt": "word " * 1000, "small.txt": "tiny"})  # 5000 bytes vs 3 kB
    report = load_corpus(tmp_path, max_file_mb=0.003)
    assert [d.doc_id for d in report.documents] == ["small.txt"]
    (skipped,) = report.skipped
    assert skipped.doc_id == "big.txt"
    assert skipped.reason == "file is 0.0 MB, over the 0.003 MB limit"


def test_load_file_on_a_missing_path_raises_unreadable(tmp_path):
    with pytest.raises(UnreadableFile, match="cannot read file"):
        load_file(tmp_path / "nope.txt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_file_without_read_permission_is_skipped(tmp_path):
    write_corpus(tmp_path, {"secret.txt": "Secret text", "ok.txt": "Fine text"})
    (tmp_path / "secret.txt").chmod(0)
    report = load_corpus(tmp_path)
    assert [d.doc_id for d in report.documents] == ["ok.txt"]
    assert report.skipped[0].doc_id == "secret.txt"
    assert report.skipped[0].reason.startswith("cannot read file")


# ---------------------------------------------------------------------------------------------
# PDF


def test_pdf_pages_are_joined_with_form_feeds(tmp_path):
    make_pdf(tmp_path / "p.pdf", [["Border report", "The first page has text."], ["Second page text here."]])
    (doc,) = load_corpus(tmp_path).documents
    pages = doc.text.split("\f")
    assert [p.strip() for p in pages] == ["Border report\nThe first page has text.", "Second page text here."]
    assert doc.title == "Border report"
    assert doc.sha256 == hashlib.sha256((tmp_path / "p.pdf").read_bytes()).hexdigest()


def test_pdf_pages_become_chunk_pages(tmp_path):
    from rag.chunk import chunk_document

    make_pdf(tmp_path / "p.pdf", [["The first page has one sentence."], ["The second page has another sentence."]])
    (doc,) = load_corpus(tmp_path).documents
    chunks = chunk_document(doc)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "The first page has one sentence."),
        (2, "The second page has another sentence."),
    ]


def test_pdf_without_text_asks_for_ocr_when_tesseract_is_missing(tmp_path, monkeypatch):
    from rag import formats

    monkeypatch.setattr(formats, "tesseract_path", lambda: None)
    make_pdf(tmp_path / "scan.pdf", [[], []])
    report = load_corpus(tmp_path)
    assert report.documents == ()
    assert report.skipped == (Skipped("scan.pdf", "no text layer (a scanned PDF?). OCR is not installed: install Tesseract (Debian/Ubuntu: apt-get install tesseract-ocr) and index again"),)


@pytest.mark.skipif(__import__("shutil").which("tesseract") is None, reason="Tesseract is not installed")
def test_a_blank_pdf_is_ocrd_and_still_has_no_text(spawn, tmp_path):
    make_pdf(tmp_path / "scan.pdf", [[], []])
    report = load_corpus(tmp_path)
    assert report.skipped == (Skipped("scan.pdf", "no extractable text (nor any found by OCR)"),)


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.7\n", b"this is not a pdf at all", "half"],
    ids=["header-only", "not-a-pdf", "truncated"],
)
def test_corrupt_pdf_is_skipped_with_a_reason(tmp_path, content):
    if content == "half":
        good = make_pdf(tmp_path / "good.pdf.bin", [["Some text on a page."]]).read_bytes()
        content = good[: len(good) // 2]
    write_corpus(tmp_path, {"broken.pdf": content, "ok.txt": "Fine text"})
    report = load_corpus(tmp_path)
    assert [d.doc_id for d in report.documents] == ["ok.txt"]
    (skipped,) = report.skipped
    assert skipped.doc_id == "broken.pdf"
    assert skipped.reason.startswith("cannot read PDF")
