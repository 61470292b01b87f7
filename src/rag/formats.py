"""Stage 1b: text out of file formats other than plain text (Word, HTML, PDF with OCR).

Each function takes the file's bytes and returns the text every offset will refer to (stored in the
index, so citations and "show in context" work for every format). Headings come out as Markdown
heading lines (``## Title``), which the layout stage (:mod:`rag.clean`) turns into section paths;
table rows come out one per line, cells separated by `` | ``. Failures raise
:class:`rag.errors.UnreadableFile` with a reason a person can act on. Heavy imports stay inside the
functions.

- ``.docx``: python-docx, body paragraphs and tables in document order; ``Heading N`` and ``Title``
  styles become headings.
- ``.html`` / ``.htm``: selectolax (the Lexbor engine: an HTML5 parser in C, no recursion in Python,
  so deep nesting cannot exhaust the stack). Scripts, styles, templates, forms and page chrome
  (``nav``, ``header``, ``footer``, ``aside``) are removed before any text is read; the ``main`` or
  ``article`` element is the text when the page has one.
- ``.pdf`` pages without a text layer: rendered with pypdfium2 and read by Tesseract (the Debian
  ``tesseract-ocr`` package), page by page, with a page limit and a time limit per file.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: An OCR progress callback: (pages done, pages to do).
OcrProgress = Callable[[int, int], None]


def _unreadable(reason: str) -> Exception:
    from .errors import UnreadableFile

    return UnreadableFile(reason)


def _squash(text: str) -> str:
    """Spaces and tabs collapsed inside lines, trailing space dropped, runs of blank lines cut to one."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", ln).strip() for ln in text.split("\n")]
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out).strip() + "\n"


# ---------------------------------------------------------------------------------------------
# Word


def docx_text(raw: bytes) -> tuple[str, str]:
    """(text, title) of a .docx: paragraphs and table rows in document order."""
    try:
        import docx
        from docx.document import Document as _Doc  # noqa: F401 - checks the package is python-docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError as exc:  # pragma: no cover - a dependency
        raise _unreadable("reading .docx needs python-docx: pip install python-docx") from exc
    try:
        doc = docx.Document(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - zip, XML and package errors: all mean "not a readable .docx"
        raise _unreadable(f"cannot read Word file ({type(exc).__name__}: {str(exc)[:120]}); is it a .docx, "
                          "not encrypted or an old .doc?") from exc
    blocks: list[str] = []
    title = (doc.core_properties.title or "").strip()
    body = doc.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = Paragraph(child, doc)
            text = para.text.strip()
            if not text:
                continue
            level = _heading_level(para.style.name if para.style is not None else "")
            blocks.append(("#" * level + " " + text) if level else text)
            if level and not title:
                title = text
        elif tag == "tbl":
            for row in Table(child, doc).rows:
                cells = _unique_cells(c.text for c in row.cells)
                if cells:
                    blocks.append(" | ".join(cells))
    return _squash("\n\n".join(blocks)), title


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    m = re.fullmatch(r"Heading (\d)", style)
    return min(6, int(m.group(1))) if m else 0


def _unique_cells(cells) -> list[str]:
    """Cell texts of a row, merged cells (python-docx repeats them) once."""
    out: list[str] = []
    for c in cells:
        c = " ".join(c.split())
        if c and (not out or out[-1] != c):
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# HTML

#: Never text: removed with everything inside them before the text is read.
HTML_DROP = ("script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
             "form", "button", "select", "textarea", "nav", "header", "footer", "aside", "head")
_BLOCKS = ("p", "div", "section", "article", "main", "li", "dt", "dd", "blockquote", "pre", "figcaption",
           "caption", "table", "ul", "ol", "dl", "address", "hr", "br")


#: Deepest element nesting read. Real pages stay under a few hundred levels; the HTML5 parser's cost
#: grows with the square of the depth (20,000 nested divs: 2.5 s here, 200,000: minutes), so a
#: deeper file is refused by name before it is parsed.
HTML_MAX_DEPTH = 3000
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr "
                  "p li dt dd option tr td th thead tbody tfoot rt rp".split())  # void, or closed implicitly
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")


def html_depth(html: str) -> int:
    """How deep elements nest, counting open tags without their close tag (void and implicitly
    closed elements aside); a quick scan, no parse."""
    depth = deepest = 0
    for m in _TAG.finditer(html):
        if m.group(2).lower() in _VOID or m.group(3):
            continue
        depth = max(0, depth - 1) if m.group(1) else depth + 1
        deepest = max(deepest, depth)
    return deepest


def html_text(raw: bytes) -> tuple[str, str]:
    """(text, title) of an HTML page: its main text, headings as Markdown headings, table rows one per line."""
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError as exc:  # pragma: no cover - a dependency
        raise _unreadable("reading HTML needs selectolax: pip install selectolax") from exc
    from .text import decode_text

    html, _ = decode_text(raw)
    depth = html_depth(html)
    if depth > HTML_MAX_DEPTH:
        raise _unreadable(f"HTML nested {depth} elements deep (limit {HTML_MAX_DEPTH}): not read, as a page that "
                          "deep is not a document (or is built to stall a parser)")
    tree = LexborHTMLParser(html)
    head_title = tree.css_first("title")
    title = " ".join(head_title.text().split()) if head_title is not None else ""
    for tag in HTML_DROP:
        for node in tree.css(tag):
            node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.css_first("[role=main]") or tree.body
    if root is None:
        return "", title
    for level in range(1, 7):
        for h in root.css(f"h{level}"):
            text = " ".join(h.text().split())
            if not title and level == 1:
                title = text
            h.replace_with(f"\n\n{'#' * level} {text}\n\n" if text else "\n")
    for tr in root.css("tr"):
        cells = _unique_cells(c.text() for c in tr.css("th, td"))
        tr.replace_with("\n" + " | ".join(cells) + "\n" if cells else "\n")
    for tag in _BLOCKS:
        for node in root.css(tag):
            node.insert_before("\n\n")
            node.insert_after("\n\n")
    text = root.text(deep=True, separator="")
    return _squash(text), title


# ---------------------------------------------------------------------------------------------
# OCR of PDF pages without a text layer

#: Per file: pages OCR'd at most, and seconds spent at most (a 500-page scan is cut, said so).
OCR_MAX_PAGES = 200
OCR_MAX_SECONDS = 600.0
OCR_DPI = 300
OCR_HINT = "OCR is not installed: install Tesseract (Debian/Ubuntu: apt-get install tesseract-ocr) and index again"


@dataclass(frozen=True)
class OcrResult:
    pages: tuple[str, ...]  # one text per page of the PDF ("" for pages left unread)
    ocr_pages: tuple[int, ...]  # the pages (0-based) read by OCR
    notice: str = ""  # pages left out by the limits


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def ocr_pdf_pages(raw: bytes, pages: list[str], progress: OcrProgress | None = None,
                  max_pages: int = OCR_MAX_PAGES, max_seconds: float = OCR_MAX_SECONDS, dpi: int = OCR_DPI,
                  lang: str = "eng") -> OcrResult:
    """OCR the pages of ``raw`` (a PDF) whose text layer in ``pages`` is empty; the others are kept."""
    todo = [i for i, t in enumerate(pages) if not t.strip()]
    if not todo:
        return OcrResult(tuple(pages), ())
    exe = tesseract_path()
    if exe is None:
        raise _unreadable(f"no text layer ({len(todo)} of {len(pages)} pages are images). {OCR_HINT}")
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:  # pragma: no cover - a dependency
        raise _unreadable("OCR needs pypdfium2 to render pages: pip install pypdfium2") from exc
    try:
        pdf = pdfium.PdfDocument(raw)
    except Exception as exc:  # noqa: BLE001 - pdfium raises its own PdfiumError for bad or encrypted files
        raise _unreadable(f"cannot render PDF pages for OCR: {exc}") from exc
    out = list(pages)
    done: list[int] = []
    notice = ""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rag-ocr-") as tmp:
        for n, i in enumerate(todo):
            if n >= max_pages or time.monotonic() - t0 > max_seconds:
                notice = (f"OCR stopped after {n} of {len(todo)} image pages "
                          f"(limits: {max_pages} pages, {max_seconds:g} s per file); the rest is not indexed")
                break
            image = pdf[i].render(scale=dpi / 72).to_pil().convert("L")
            png = Path(tmp) / f"page-{i}.png"
            image.save(png)
            left = max(5.0, max_seconds - (time.monotonic() - t0))
            try:
                proc = subprocess.run([exe, str(png), "stdout", "-l", lang, "--psm", "3"], capture_output=True,
                                      timeout=left, check=False)
            except subprocess.TimeoutExpired:
                notice = f"OCR timed out on page {i + 1} (limit {max_seconds:g} s per file); the rest is not indexed"
                break
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise _unreadable(f"Tesseract failed on page {i + 1}: {err[-1] if err else proc.returncode}")
            out[i] = proc.stdout.decode("utf-8", "replace").replace("\f", "").strip()
            done.append(i)
            if progress:
                progress(n + 1, len(todo))
    pdf.close()
    return OcrResult(tuple(out), tuple(done), notice)
