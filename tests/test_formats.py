"""Word, HTML and scanned-PDF documents: text with headings as section paths, tables row by row,
scripts never indexed, OCR with page numbers kept, and a clear message for each bad file. Files are
made in the tests (python-docx, HTML strings, page images rendered with Pillow saved as an
image-only PDF); OCR runs the real Tesseract."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import settings_for, write_corpus
from rag import formats
from rag.chunk import chunk_document
from rag.load import load_corpus, load_file

needs_tesseract = pytest.mark.skipif(formats.tesseract_path() is None and not __import__("os").environ.get("REQUIRE_OCR_TESTS"),
                                     reason="Tesseract is not installed (apt-get install tesseract-ocr)")


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.core_properties.title = "Harbour Report"
    d.add_heading("Harbour Report", level=1)
    d.add_paragraph("The port authority publishes this report every year.")
    d.add_heading("Arrivals", level=2)
    d.add_paragraph("In 2023 the harbour of Valletta received 412 cargo ships.")
    table = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("Vessel", "Tonnes"), ("Aurora", "1200"), ("Borealis", "860")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    d.add_heading("Staff", level=2)
    d.add_paragraph("The harbour employs 75 pilots.")
    d.save(path)
    return path


PAGE = """<!doctype html><html><head><title>Glacier Facts</title>
<style>body { color: red } .secret { display: none }</style>
<script>var leaked = "SCRIPT-TEXT-MUST-NOT-BE-INDEXED";</script></head>
<body><nav><a href="/">Home</a> <a href="/x">NAVIGATION-LINK</a></nav>
<header>SITE-HEADER</header>
<main><h1>Glacier Facts</h1><p>The Aletsch glacier is 23 km long.</p>
<h2>Melting</h2><p>It lost <b>2.4 km</b> of length since 1880.</p>
<table><tr><th>Year</th><th>Length</th></tr><tr><td>1880</td><td>25.4 km</td></tr></table>
<noscript>NOSCRIPT-TEXT</noscript></main>
<footer>FOOTER-TEXT</footer><script>document.write("MORE-SCRIPT")</script></body></html>"""


# ---------------------------------------------------------------------------------------------
# Word


def test_docx_headings_become_section_paths_and_tables_rows(tmp_path):
    doc, notice = load_file(make_docx(tmp_path / "harbour.docx"), "harbour.docx")
    assert doc.title == "Harbour Report" and notice == ""
    lines = doc.text.splitlines()
    assert "# Harbour Report" in lines and "## Arrivals" in lines
    assert "Aurora | 1200" in lines and "Vessel | Tonnes" in lines
    chunks = chunk_document(doc)
    ships = next(c for c in chunks if "412 cargo ships" in c.text)
    assert ships.section[-1] == "Arrivals"
    assert doc.text[ships.start:ships.end].count("412 cargo ships") == 1
    assert next(c for c in chunks if "75 pilots" in c.text).section[-1] == "Staff"


@pytest.mark.parametrize("content, why", [
    (b"PK\x03\x04" + b"\x00" * 200, "cannot read Word file"),
    (b"this is not a zip at all" * 10, "cannot read Word file"),
])
def test_a_broken_docx_is_skipped_with_its_reason(tmp_path, content, why):
    corpus = write_corpus(tmp_path / "c", {"broken.docx": content, "ok.txt": "A fine text document about ports."})
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["ok.txt"]
    assert [s.doc_id for s in report.skipped] == ["broken.docx"] and why in report.skipped[0].reason


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_main_text_headings_and_tables_without_scripts_or_chrome(tmp_path):
    doc, _ = load_file(write_corpus(tmp_path / "c", {"glacier.html": PAGE}) / "glacier.html", "glacier.html")
    assert doc.title == "Glacier Facts"
    for hidden in ("SCRIPT-TEXT", "MORE-SCRIPT", "NAVIGATION-LINK", "SITE-HEADER", "FOOTER-TEXT", "NOSCRIPT", "color: red"):
        assert hidden not in doc.text
    lines = doc.text.splitlines()
    assert "# Glacier Facts" in lines and "## Melting" in lines and "Year | Length" in lines and "1880 | 25.4 km" in lines
    assert "It lost 2.4 km of length since 1880." in lines  # inline markup does not split a sentence
    chunk = next(c for c in chunk_document(doc) if "2.4 km" in c.text)
    assert chunk.section[-1] == "Melting"


def test_htm_and_pages_without_main_use_the_body(tmp_path):
    page = "<html><body><div><h2>Notes</h2><p>Bees visit 40 flowers a minute.</p></div></body></html>"
    doc, _ = load_file(write_corpus(tmp_path / "c", {"bees.htm": page}) / "bees.htm", "bees.htm")
    assert doc.text.splitlines() == ["## Notes", "", "Bees visit 40 flowers a minute."]


def test_an_html_bomb_is_read_quickly_or_refused_by_name(tmp_path):
    deep = "<div>" * 200_000 + "Deep text about owls." + "</div>" * 200_000
    fine = "<div>" * 2_000 + "<p>Nested but fine: owls sleep by day." + "</div>" * 2_000
    huge_attr = '<p title="' + "x" * 5_000_000 + '">Owls hunt at night.</p>'
    corpus = write_corpus(tmp_path / "c", {"deep.html": deep, "fine.html": fine, "attr.html": huge_attr, "empty.html": "<html><script>x</script></html>"})
    t0 = time.perf_counter()
    report = load_corpus(corpus)
    assert time.perf_counter() - t0 < 20
    texts = {d.doc_id: d.text for d in report.documents}
    assert "Owls hunt at night." in texts["attr.html"] and "x" * 100 not in texts["attr.html"]
    assert "deep.html" not in texts and "owls sleep by day" in texts["fine.html"]
    assert any(s.doc_id == "deep.html" and s.reason.startswith("HTML nested 200000 elements deep") for s in report.skipped)
    assert [(s.doc_id, s.reason) for s in report.skipped if s.doc_id == "empty.html"] == [("empty.html", "no extractable text")]


# ---------------------------------------------------------------------------------------------
# Scanned PDFs


def scanned_pdf(path: Path, pages: list[list[str]]) -> Path:
    """An image-only PDF: each page's lines drawn as black text on a white A4-ish image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=40)
    images = []
    for lines in pages:
        im = Image.new("L", (1700, 2200), 255)
        draw = ImageDraw.Draw(im)
        for n, line in enumerate(lines):
            draw.text((150, 200 + n * 80), line, fill=0, font=font)
        images.append(im.convert("RGB"))
    images[0].save(path, "PDF", resolution=200.0, save_all=True, append_images=images[1:])
    return path


SCAN = [
    ["Annual Report of the Lighthouse Service", "", "The service keeps the coast safe."],
    ["Lamps", "", "The Fastnet lighthouse has a range of 27 nautical miles.", "It was first lit in 1904."],
]


def test_the_scan_helper_makes_pdfs_without_a_text_layer(tmp_path):
    from rag.load import _pdf_pages

    raw = scanned_pdf(tmp_path / "s.pdf", SCAN).read_bytes()
    assert [p.strip() for p in _pdf_pages(raw)] == ["", ""]


@needs_tesseract
def test_a_scanned_pdf_is_read_by_ocr_page_by_page(spawn, tmp_path):
    seen = []
    doc, _ = load_file(scanned_pdf(tmp_path / "scan.pdf", SCAN), "scan.pdf", progress=lambda *a: seen.append(a))
    pages = doc.text.split("\f")
    assert len(pages) == 2 and "Lighthouse" in pages[0] and "27 nautical miles" in pages[1]
    assert doc.metadata["ocr_pages"] == [1, 2]
    assert seen == [("OCR scan.pdf", 1, 2), ("OCR scan.pdf", 2, 2)]


@needs_tesseract
def test_ocr_stops_at_the_page_limit_and_says_so(spawn, tmp_path):
    raw = scanned_pdf(tmp_path / "scan.pdf", SCAN).read_bytes()
    out = formats.ocr_pdf_pages(raw, ["", ""], max_pages=1)
    assert out.ocr_pages == (0,) and out.pages[1] == ""
    assert out.notice.startswith("OCR stopped after 1 of 2 image pages")


def test_without_tesseract_a_scan_is_skipped_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "tesseract_path", lambda: None)
    corpus = tmp_path / "c"
    corpus.mkdir()
    scanned_pdf(corpus / "scan.pdf", SCAN)
    (corpus / "ok.txt").write_text("Ports and harbours.")
    report = load_corpus(corpus)
    (skip,) = report.skipped
    assert skip.doc_id == "scan.pdf" and "OCR is not installed" in skip.reason and "apt-get install tesseract-ocr" in skip.reason


@needs_tesseract
@pytest.mark.slow
def test_ask_a_scanned_pdf_and_get_the_cited_page(tmp_path):
    from rag.index import build_index
    from rag.pipeline import Assistant

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    scanned_pdf(corpus / "lighthouse.pdf", SCAN)
    make_docx(corpus / "harbour.docx")
    write_corpus(corpus, {"glacier.html": PAGE})
    settings = settings_for(corpus, tmp_path / "index")
    result = build_index(settings)
    assert result.manifest.counts.documents == 3, result.skipped
    a = Assistant.load(settings)
    ans = a.ask("What is the range of the Fastnet lighthouse?")
    top = ans.citations[0]
    assert top.doc == "lighthouse.pdf" and top.page == 2
    doc_text = a.data.docs["lighthouse.pdf"].text
    assert "27 nautical miles" in doc_text[top.start:top.end]
    ans = a.ask("How many cargo ships did Valletta receive in 2023?")
    assert ans.citations[0].doc == "harbour.docx" and "412" in ans.answer
    ans = a.ask("How long is the Aletsch glacier?")
    assert ans.citations[0].doc == "glacier.html" and "23 km" in ans.answer


@needs_tesseract
def test_installing_ocr_later_makes_rag_index_read_the_skipped_scans(spawn, tmp_path, monkeypatch):
    from rag.index import build_index, load_manifest, stale_reasons

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    scanned_pdf(corpus / "scan.pdf", SCAN)
    (corpus / "ok.txt").write_text("Ports and harbours of the coast.")
    settings = settings_for(corpus, tmp_path / "index")
    real = formats.tesseract_path
    monkeypatch.setattr(formats, "tesseract_path", lambda: None)
    first = build_index(settings)
    assert [s.doc_id for s in first.manifest.skipped] == ["scan.pdf"]
    assert build_index(settings).status == "up-to-date"  # nothing changed, no OCR yet
    monkeypatch.setattr(formats, "tesseract_path", real)  # Tesseract installed
    assert stale_reasons(load_manifest(settings.index_dir), settings) == ["OCR is installed now: scanned PDFs to read (scan.pdf)"]
    again = build_index(settings)
    assert again.changes.changed == ("scan.pdf",) and again.manifest.counts.documents == 2
