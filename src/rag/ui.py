"""Pure helpers for the chat app (``app.py``): safe Markdown from document text, highlight
segments, context windows, labels, the read-only LLM settings, build progress and the background
index builder, the Markdown export of a conversation, and the Evaluation view's tables, progress
and per-question drill-down.

No Streamlit here, so everything is unit-testable. The app renders every piece of document text
through :func:`md_text` / :func:`segments_markdown`, never with ``unsafe_allow_html``: all
characters that Markdown, HTML, math (``$``) or Streamlit directives (``:color[...]``) could
interpret are backslash-escaped, and bare URLs get an invisible WORD JOINER so GFM does not link
them; a document containing ``<script>`` or ``[x](javascript:...)`` shows as literal text.

Known cosmetic limits (not security): Streamlit still turns emoji shortcodes such as ``:smile:``
and arrows such as ``->`` in the *rendered* text into symbols.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .answer import Answer, Citation
from .text import collapse_ws

if TYPE_CHECKING:
    from .evaluate import QuestionRow
    from .index import BuildResult, Manifest

log = logging.getLogger(__name__)

#: Every character CommonMark may treat as syntax plus what GFM and Streamlit add: ``$`` (math),
#: ``:`` (``:red[...]`` directives), ``&`` (entities), ``=`` (setext headings). CommonMark allows a
#: backslash escape before any ASCII punctuation character.
MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|<>~$:&=")
HIGHLIGHT = "orange-background"  # Streamlit's ``:orange-background[...]``
CONTEXT_CHARS = 600


#: GFM turns bare URLs and e-mail addresses into links by pattern-matching the *rendered* text, so
#: backslashes cannot stop it. A WORD JOINER (U+2060, invisible) inside the pattern does: after
#: ``http``/``https``/``www`` and after ``@``, only where GFM would otherwise make a link.
WORD_JOINER = "\u2060"
_AUTOLINK_URL = re.compile(r"(?<![0-9a-z])(https?(?=://)|www(?=\.))(?=\W*[\w-]*\.[\w.-]*)", re.IGNORECASE)
_AUTOLINK_EMAIL = re.compile(r"(?<=[\w+.-])@(?=[\w-]+(?:\.[\w-]+)+)")


def defuse_autolinks(text: str) -> str:
    """Insert an invisible WORD JOINER where GFM would turn a bare URL or e-mail address into a link."""
    return _AUTOLINK_EMAIL.sub("@" + WORD_JOINER, _AUTOLINK_URL.sub(r"\1" + WORD_JOINER, text))


def escape_markdown(text: str) -> str:
    """Backslash-escape every Markdown/HTML-significant character (and defuse bare-URL autolinks):
    Streamlit renders the result as exactly ``text``, never as a link, image, HTML or math."""
    return "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in defuse_autolinks(text))


def md_text(text: str) -> str:
    """Document or user text as one safe Markdown paragraph (whitespace collapsed, so OCR line
    breaks and indentation cannot start a code block or a list)."""
    return escape_markdown(collapse_ws(text))


def message_markdown(message: str) -> str:
    """A library message (error, notice) as safe Markdown, keeping its `command` spans as code.

    Code spans render their content literally, so only the text between them needs escaping."""
    parts = message.split("`")
    if len(parts) % 2 == 0:  # unpaired backtick: escape everything
        return md_text(message)
    out = []
    for i, part in enumerate(parts):
        if i % 2 and part.strip():
            out.append(f"`{collapse_ws(part, strip=False)}`")
        else:
            out.append(escape_markdown(collapse_ws(part, strip=False)))
    return "".join(out).strip()


# ---------------------------------------------------------------------------------------------
# Highlighting


class Segment(NamedTuple):
    text: str
    marked: bool
    strong: bool = False  # the short answer, inside a marked sentence: bold as well


def merge_spans(spans: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Spans clipped to ``[lo, hi)``, sorted, overlapping or touching ones merged, empty ones dropped."""
    clipped = sorted((max(s, lo), min(e, hi)) for s, e in spans)
    out: list[tuple[int, int]] = []
    for s, e in clipped:
        if s >= e:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def segments(text: str, spans: Iterable[tuple[int, int]], offset: int = 0,
             strong: tuple[int, int] | None = None) -> tuple[Segment, ...]:
    """Cut ``text`` into plain and marked pieces. ``spans`` are absolute offsets; ``text`` starts at
    ``offset`` in the same coordinates (e.g. a passage ``doc[start:end]`` with ``offset=start``).
    ``strong`` (the short answer) is marked and strong. The pieces concatenate back to ``text``."""
    spans = list(spans) + ([strong] if strong else [])
    out: list[Segment] = []
    pos = 0
    for s, e in merge_spans(spans, offset, offset + len(text)):
        s, e = s - offset, e - offset
        if s > pos:
            out.append(Segment(text[pos:s], False))
        if strong is not None and strong[0] - offset < e and s < strong[1] - offset:
            a, b = max(s, strong[0] - offset), min(e, strong[1] - offset)
            out += [Segment(t, True, st) for t, st in ((text[s:a], False), (text[a:b], True), (text[b:e], False)) if t]
        else:
            out.append(Segment(text[s:e], True))
        pos = e
    if pos < len(text):
        out.append(Segment(text[pos:], False))
    return tuple(out)


def segments_markdown(segs: Sequence[Segment], style: str = HIGHLIGHT) -> str:
    """Safe Markdown for segments: plain text escaped, a run of marked text escaped inside one
    ``:style[...]`` (its strong part in ``**bold**``).

    Whitespace is collapsed; a marked run's leading and trailing spaces go outside the marker."""
    out = []
    i = 0
    while i < len(segs):
        if not segs[i].marked:
            out.append(escape_markdown(collapse_ws(segs[i].text, strip=False)))
            i += 1
            continue
        run = []
        while i < len(segs) and segs[i].marked:
            run.append(segs[i])
            i += 1
        text = collapse_ws("".join(x.text for x in run), strip=False)
        if not text.strip():
            out.append(escape_markdown(text))
            continue
        parts = []
        for x in run:
            t = collapse_ws(x.text, strip=False).replace("\x00", "").replace("\x01", "")
            core = t.strip()
            if x.strong and core:
                t = t.replace(core, f"\x00{core}\x01", 1)
            parts.append(t)
        body = collapse_ws("".join(parts), strip=False)
        lead = " " if body[:1] == " " else ""
        trail = " " if body[-1:] == " " else ""
        md = escape_markdown(body.strip()).replace("\x00", "**").replace("\x01", "**")
        out.append(f"{lead}:{style}[{md}]{trail}")
    return re.sub(" {2,}", " ", "".join(out)).strip()


def passage_markdown(c: Citation, doc_text: str | None = None, short: tuple[int, int] | None = None) -> str:
    """The cited passage with its supporting sentences highlighted (and ``short``, the short answer's
    span, in bold inside them). Needs the document text for the exact offsets; without it (or if the
    offsets do not fit) the passage is shown unhighlighted."""
    if doc_text is None or not (0 <= c.start <= c.end <= len(doc_text)):
        return md_text(c.text)
    return segments_markdown(segments(doc_text[c.start : c.end], c.highlights, offset=c.start, strong=short))


def short_answer_markdown(a: Answer) -> str | None:
    """``**Answer: 50**`` above the quoted sentence (escaped), or None without a short answer."""
    if a.short_answer is None or a.abstained:
        return None
    return f"**Answer: {escape_markdown(collapse_ws(a.short_answer.text))}**"


def short_span(a: Answer, c: Citation) -> tuple[int, int] | None:
    """The short answer's span when it lies in citation ``c`` (same document, inside the passage)."""
    s = a.short_answer
    if s is None or s.doc != c.doc or not (c.start <= s.start and s.end <= c.end):
        return None
    return (s.start, s.end)


class Window(NamedTuple):
    start: int  # absolute offsets of the shown part of the document
    end: int


def context_window(text: str, start: int, end: int, chars: int = CONTEXT_CHARS) -> Window:
    """About ``chars`` characters either side of ``[start, end)`` in ``text``, widened to whole
    words (by at most 40 characters each side)."""
    n = len(text)
    start, end = max(0, min(start, n)), max(0, min(end, n))
    lo, hi = max(0, start - chars), min(n, end + chars)
    while lo > 0 and not text[lo - 1].isspace() and start - lo < chars + 40:
        lo -= 1
    while hi < n and not text[hi].isspace() and hi - end < chars + 40:
        hi += 1
    return Window(lo, hi)


def context_markdown(doc_text: str, start: int, end: int, chars: int = CONTEXT_CHARS,
                     short: tuple[int, int] | None = None) -> str:
    """The document around a cited span, the span highlighted (the short answer in bold), ``…`` where
    the window is cut."""
    w = context_window(doc_text, start, end, chars)
    body = segments_markdown(segments(doc_text[w.start : w.end], [(start, end)], offset=w.start, strong=short))
    return ("… " if w.start > 0 else "") + body + (" …" if w.end < len(doc_text) else "")


# ---------------------------------------------------------------------------------------------
# Labels and status


def shorten(text: str, limit: int) -> str:
    text = collapse_ws(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def citation_label(c: Citation, tag: str, title_chars: int = 70) -> str:
    """Expander label ``[n] title · p. X · section · score`` as safe Markdown (labels render Markdown)."""
    parts = [f"{escape_markdown(tag)} {escape_markdown(shorten(c.title or c.doc, title_chars))}"]
    if c.page:
        parts.append(f"p. {c.page}")
    if c.section:
        parts.append(escape_markdown(shorten(c.section, 80)))
    parts.append(f"{c.score:.2f}")
    if not c.supported:
        parts.append(":warning: does not support the answer")
    return " · ".join(parts)


def unsupported_markdown(sentence: str) -> str:
    """A generated sentence that no cited passage supports, as a flagged line (safe Markdown)."""
    return f":warning: **Not supported by the cited passages:** {md_text(sentence)}"


def answer_caption(a: Answer, mode: str, k: int) -> str:
    """``llm · hybrid · k = 5 · 812 ms`` under an answer."""
    return f"{a.mode} answer · {mode} · k = {k} · {a.timings_ms.get('total', 0):.0f} ms"


def history_pairs(turns: Sequence["Turn"], last: int = 3) -> list[tuple[str, str]]:
    """(question as searched, answer) of the last answered turns: the context for follow-ups."""
    done = [(t.answer.question, t.answer.answer or t.answer.message) for t in turns if t.answer is not None]
    return done[-last:]


def built_date(created: object) -> str:
    """``2026-11-25T00:10:52+0000`` as ``2026-11-25 00:10``; anything else as given."""
    if not isinstance(created, str):
        return "unknown"
    try:
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created


def index_status_lines(manifest: "Manifest", reasons: Sequence[str]) -> list[str]:
    """Sidebar lines (safe Markdown) describing an index manifest and whether it is up to date."""
    seconds = manifest.build_seconds
    lines = [
        f"**Documents:** {manifest.counts.documents}",
        f"**Chunks:** {manifest.counts.chunks}",
        f"**Model:** {escape_markdown(manifest.model_id)}",
        f"**Build time:** {seconds:.1f} s" if seconds is not None else "**Build time:** ?",
        f"**Built:** {escape_markdown(built_date(manifest.created or None))}",
        "**Status:** stale" if reasons else "**Status:** up to date",
    ]
    return lines


def server_status_lines(health: Mapping[str, Any]) -> list[str]:
    """Sidebar lines (safe Markdown) for a remote `rag serve`: what its ``GET /health`` said."""
    return [f"**Documents:** {escape_markdown(str(health.get('documents', '?')))}",
            f"**Passages:** {escape_markdown(str(health.get('passages', '?')))}",
            f"**Built:** {escape_markdown(built_date(health.get('built')))}",
            "**Status:** " + ("answering" if health.get("status") == "ok" else escape_markdown(str(health.get("status"))))]


def llm_settings_lines(settings: Any) -> list[str]:
    """Sidebar lines (safe Markdown) showing the operator's LLM settings read-only: backend, then the
    server (its user-info redacted) and whether an API key is set, or the GGUF file's name. The key
    itself is never shown, nor where the model file lives."""
    from pathlib import PurePath

    from .generate import DEFAULT_URLS, api_key, shown_url

    backend = settings.llm_backend
    lines = [f"**Backend:** {escape_markdown(backend)}"]
    if backend == "llamacpp":
        name = PurePath(settings.llm_model_path).name if settings.llm_model_path else "(not set)"
        return lines + [f"**Model file:** {md_text(name)}"]
    url = settings.llm_base_url or DEFAULT_URLS.get(backend) or "the OpenAI API"
    lines.append(f"**Server:** {md_text(shown_url(url, settings))}")
    if backend == "openai":
        lines.append("**API key:** " + ("set (not shown)" if api_key(settings) else "not set"))
    return lines


class BuildStep(NamedTuple):
    fraction: float
    text: str


# Share of the whole build each stage covers (embedding dominates).
_STAGES = {
    "load": (0.00, 0.03, "Reading documents"),
    "chunk": (0.03, 0.06, "Cutting passages"),
    "embed passages": (0.06, 0.30, "Embedding passages"),
    "embed sentences": (0.30, 0.95, "Embedding sentences"),
    "lexical index": (0.95, 0.99, "Building the keyword index"),
    "engine: remove": (0.99, 0.995, "Removing passages from the search engine"),
    "engine: add": (0.995, 1.00, "Adding passages to the search engine"),
    "done": (1.00, 1.00, "Done"),
}


def build_step(stage: str, done: int, total: int) -> BuildStep:
    """Overall progress (0..1) and a label for one ``build_index`` progress callback."""
    if stage.startswith("OCR "):  # "OCR scan.pdf": page by page, while documents are read
        lo, hi, label = 0.0, 0.03, f"Reading {stage[4:]} with OCR, page"
    else:
        lo, hi, label = _STAGES.get(stage, (0.0, 0.0, stage.capitalize()))
    part = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    text = f"{label} ({done}/{total})" if stage.startswith(("embed", "OCR ")) else f"{label}…"
    return BuildStep(round(lo + (hi - lo) * part, 4), text)


@dataclass(frozen=True)
class LibraryRow:
    """One corpus file as the document library shows it."""

    doc_id: str
    title: str
    pages: int | None
    passages: int
    indexed_at: str  # when rag last read it ("" if unknown)
    status: str  # "indexed" | "indexed (OCR: pages 1-3)" | "skipped: <reason>"

    def to_row(self) -> dict[str, object]:
        return {"File": self.doc_id, "Title": self.title, "Pages": self.pages, "Passages": self.passages,
                "Indexed": built_date(self.indexed_at) if self.indexed_at else "", "Status": self.status}


def library_rows(manifest: "Manifest", docs: Mapping[str, Any], chunks: Sequence[Any]) -> list[LibraryRow]:
    """The indexed documents (from the loaded index) and the skipped files (from its manifest)."""
    files = manifest.files

    def indexed_at(doc_id: str) -> str:
        rec = files.get(doc_id)
        return (rec.indexed_at or "") if rec is not None else ""

    passages: dict[str, int] = {}
    pages: dict[str, int] = {}
    for c in chunks:
        passages[c.doc_id] = passages.get(c.doc_id, 0) + 1
        pages[c.doc_id] = max(pages.get(c.doc_id, 0), c.page_end)
    rows = []
    for doc_id in docs:
        d = docs[doc_id]
        ocr = (d.metadata or {}).get("ocr_pages") or []
        status = f"indexed (OCR: {_page_list(ocr)})" if ocr else "indexed"
        n_pages = d.text.count("\f") + 1 if "\f" in d.text or doc_id.lower().endswith(".pdf") else None
        rows.append(LibraryRow(doc_id, d.title, n_pages, passages.get(doc_id, 0), indexed_at(doc_id), status))
    for s in manifest.skipped:
        rows.append(LibraryRow(s.doc_id, "", None, 0, indexed_at(s.doc_id), f"skipped: {s.reason}"))
    return sorted(rows, key=lambda r: r.doc_id)


def _page_list(pages: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``pages 1-3, 7``."""
    runs: list[list[int]] = []
    for p in sorted(pages):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    parts = [f"{a}-{b}" if b > a else f"{a}" for a, b in runs]
    return ("page " if len(pages) == 1 else "pages ") + ", ".join(parts)


def build_message(result: "BuildResult") -> str:
    """What the app says after a build: ``Index built: N documents, M chunks.``, then for an
    incremental build what it read again (``Added: a.txt. 12 unchanged.``)."""
    counts = result.manifest.counts
    message = f"Index built: {counts.documents} documents, {counts.chunks} chunks."
    changes = result.changes
    if changes is None:
        return message
    for label, names in (("Added", changes.added), ("Changed", changes.changed), ("Removed", changes.removed)):
        if names:
            message += f" {label}: {', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}."
    return message + f" {changes.unchanged} unchanged."


BUILDING_FIRST = "No index yet: building it from the documents (this happens once)."
BUILDING_BROKEN = "Rebuilding the index: the current one cannot be used. Ask when it is done."
BUILDING_AGAIN = "The index is being rebuilt. Answers come from the previous index until it is done."
ANSWERED_FROM_PREVIOUS = "answered from the previous index: the new one is still being built"
BUILD_THREAD = "rag-index-build"


@dataclass(frozen=True)
class BuildStatus:
    """The background build of one index folder, as a session of the app sees it."""

    running: bool
    step: BuildStep  # progress of the running build (or of the last one)
    finished: int  # builds finished in this process (a session shows each outcome once)
    message: str = ""  # the last finished build: "Index built: ..." or its error
    failed: bool = False


class IndexBuilder:
    """Builds an index in a background thread owned by the server process, not by a script run.

    A Streamlit script run is cut short by the next interaction (a question, a click), so a build
    inside it dies half-way. Here a click can only ask for a build: one runs at a time, and a
    request made while one runs (another upload, say) starts one more build after it, so files
    added meanwhile are indexed too. ``on_done`` runs in the build thread after each build (the app
    drops its cached, now older, assistant)."""

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self._on_done = on_done
        self._lock = threading.Lock()
        self._pending: tuple[Any, bool, frozenset[str]] | None = None  # (settings, force, refresh) of the next build
        self._thread: threading.Thread | None = None
        self._status = BuildStatus(False, BuildStep(0.0, ""), 0)

    def request(self, settings: Any, force: bool = False, refresh: Iterable[str] = ()) -> None:
        """Build ``settings.index_dir`` from ``settings.corpus_dir`` (now, or after the running build);
        ``refresh``: documents to read again even if unchanged."""
        with self._lock:
            pending = self._pending
            force = force or (pending is not None and pending[1])
            refresh = frozenset(refresh) | (pending[2] if pending is not None else frozenset())
            self._pending = (settings, force, refresh)
            if self._thread is None:
                self._status = replace(self._status, running=True, step=BuildStep(0.0, "Starting the build…"))
                # not a daemon: a server stopped mid-build finishes it (a killed build leaves the old index anyway)
                self._thread = threading.Thread(target=self._run, name=BUILD_THREAD)
                self._thread.start()

    def status(self) -> BuildStatus:
        with self._lock:
            return self._status

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no build runs (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.status().running

    def _progress(self, stage: str, done: int, total: int) -> None:
        step = build_step(stage, done, total)
        with self._lock:
            if step.fraction >= self._status.step.fraction:  # never moves backwards
                self._status = replace(self._status, step=step)

    def _run(self) -> None:
        from . import index  # looked up per build (tests put a gate in front of build_index)
        from .errors import RagError

        while True:
            with self._lock:
                if self._pending is None:
                    self._thread = None
                    self._status = replace(self._status, running=False)
                    return
                (settings, force, refresh), self._pending = self._pending, None
                self._status = replace(self._status, step=BuildStep(0.0, "Starting the build…"))
            try:
                result = index.build_index(settings, force=force, progress=self._progress, refresh=refresh)
                message, failed = build_message(result), False
                if getattr(settings, "store", "faiss") != "faiss":  # the engine follows the index folder (store = "postgres")
                    from .engine import sync_index

                    report = sync_index(settings, progress=self._progress)
                    if report is not None and report.changed:
                        message += f" Search engine: {report.added} passages added, {report.removed} removed."
            except RagError as exc:
                message, failed = str(exc), True
            except Exception as exc:  # noqa: BLE001 - shown as one line; the traceback goes to the log
                log.exception("index build failed")
                message, failed = f"the index build failed ({type(exc).__name__}: {exc})", True
            with self._lock:
                self._status = replace(self._status, finished=self._status.finished + 1, message=message, failed=failed)
            if self._on_done is not None:
                try:
                    self._on_done()
                except Exception:  # noqa: BLE001 - a failing callback must not stop later builds
                    log.exception("after-build callback failed")


# ---------------------------------------------------------------------------------------------
# Conversation


@dataclass(frozen=True)
class Turn:
    """One question and what came back: an answer, or a one-line error."""

    id: int
    question: str
    answer: Answer | None = None
    error: str | None = None
    mode: str = ""
    k: int = 0


def _source_lines(c: Citation, tag: str, doc_text: str | None, quote_chars: int) -> list[str]:
    where = [escape_markdown(shorten(c.title or c.doc, 120))]
    if c.page:
        where.append(f"p. {c.page}")
    if c.section:
        where.append(escape_markdown(collapse_ws(c.section, strip=False)))
    head = f"- {escape_markdown(tag)} " + ", ".join(where) + f" (score {c.score:.2f})"
    if doc_text is not None and c.highlights and 0 <= c.start <= c.end <= len(doc_text):
        quotes = [doc_text[s:e] for s, e in merge_spans(c.highlights, 0, len(doc_text))]
    else:
        quotes = [c.text]
    return [head] + [f"  > {md_text(shorten(q, quote_chars))}" for q in quotes if q.strip()]


def conversation_markdown(
    turns: Sequence[Turn],
    docs: Mapping[str, str] | None = None,
    title: str = "Conversation",
    quote_chars: int = 400,
) -> str:
    """The conversation as a Markdown document with every answer's sources (and, for abstentions,
    the closest passages). ``docs`` maps document id to text, to quote the supporting sentences."""
    docs = docs or {}
    lines = [f"# {escape_markdown(title)}", ""]
    for i, t in enumerate(turns, 1):
        lines += [f"## {i}. {md_text(t.question)}", ""]
        a = t.answer
        if a is None:
            lines += [f"*Error:* {md_text(t.error or 'no answer')}", ""]
            continue
        if a.original_question is not None:
            lines += [f"*Searched for:* {md_text(a.question)}", ""]
        short = short_answer_markdown(a)
        lines += ([short, ""] if short else []) + [md_text(a.message), ""]
        lines += [unsupported_markdown(u) + "  " for u in a.unsupported_sentences]
        if a.unsupported_sentences:
            lines.append("")
        if a.abstained:
            if a.passages:
                lines += ["**Closest passages**", ""]
                for j, p in enumerate(a.passages[:3], 1):
                    lines += _source_lines(p, f"#{j}", docs.get(p.doc), quote_chars)
                lines.append("")
        elif a.citations:
            lines += ["**Sources**", ""]
            for c in a.citations:
                lines += _source_lines(c, f"[{c.n}]", docs.get(c.doc), quote_chars)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Evaluation view (the report of rag.evaluate.run_eval: rows of metrics and per-question results)

#: Metric columns of the table, in order, with their headers; those no row has are left out.
METRIC_COLUMNS = (
    ("recall@1", "Recall@1"),
    ("recall@3", "Recall@3"),
    ("recall@5", "Recall@5"),
    ("recall@10", "Recall@10"),
    ("mrr@10", "MRR@10"),
    ("ndcg@10", "nDCG@10"),
    ("answer_accuracy", "Answer accuracy"),
    ("citation_support", "Citation support"),
    ("abstention_recall", "Abstention recall"),
    ("false_abstention", "False abstention"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
)


def metrics_rows(rows: Mapping[str, Mapping[str, object]]) -> list[dict[str, object]]:
    """The report's rows as table records: ``Row`` then each known metric any row has, floats
    rounded to 3 decimals (milliseconds to 1); a metric a row lacks (or has as None) is None."""
    present = [(k, h) for k, h in METRIC_COLUMNS if any(r.get(k) is not None for r in rows.values())]
    out = []
    for name, row in rows.items():
        rec: dict[str, object] = {"Row": name}
        for key, header in present:
            v = row.get(key)
            rec[header] = round(v, 1 if key.endswith("_ms") else 3) if isinstance(v, float) else v
        out.append(rec)
    return out


def eval_step(stage: str, done: int, total: int, stages: Sequence[str]) -> BuildStep:
    """Overall progress of an eval run whose ``stages`` (rows) run one after the other."""
    i = list(stages).index(stage) if stage in stages else 0
    part = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    n = max(len(stages), 1)
    return BuildStep(round(min((i + part) / n, 1.0), 4), f"{stage} ({i + 1}/{n}): question {done} of {total}")


def failure_reason(q: "QuestionRow", answer_k: int = 5) -> str:
    """Why a question of the report failed, in one sentence (empty when it passed)."""
    if q.passed:
        return ""
    rank = q.rank
    found = f"the gold evidence is at rank {rank}" if isinstance(rank, int) else "the gold evidence is not in the top 10"
    if q.kind == "unanswerable":
        return "the documents do not answer it, but the assistant answered instead of abstaining"
    if q.answer is None:
        return f"{found} (this row only retrieves)"
    if q.abstained:
        return f"the assistant abstained, although {found}"
    if not isinstance(rank, int):
        return f"{found}, so the answer came from other passages"
    if rank > answer_k:
        return f"{found}, below the {answer_k} passages the answer is taken from"
    return f"{found}, but the answer does not contain the gold answer"


def question_label(q: "QuestionRow", chars: int = 90) -> str:
    """Plain text (for a select box): pass mark, id and the question, shortened."""
    mark = "✓" if q.passed else "✗"
    return f"{mark} {q.id} · {shorten(q.question, chars)}"


def question_rows(questions: Sequence["QuestionRow"], only_failed: bool = False) -> list[dict[str, object]]:
    """Per-question table records, failed ones first (then by id)."""
    qs = sorted((q for q in questions if not (only_failed and q.passed)), key=lambda q: (q.passed, q.id))
    return [
        {
            "Id": q.id,
            "Result": "pass" if q.passed else "FAIL",
            "Kind": q.kind,
            "Rank": q.rank,
            "Question": q.question,
            "Gold answer": q.gold,
            "Our answer": "(abstained)" if q.abstained else q.answer,
        }
        for q in qs
    ]


def question_markdown(q: "QuestionRow") -> str:
    """One question of the report as safe Markdown: question, kind, gold answer (and aliases),
    our answer (or that we abstained), and where the gold evidence was retrieved."""
    gold = q.gold or "(none: the documents do not answer it)"
    aliases = list(q.aliases)
    if q.answer is None:
        ours = "*(this row only retrieves)*"
    elif q.abstained:
        ours = "*(abstained)*"
    else:
        ours = md_text(q.answer) or "*(empty)*"
    rank = q.rank
    where = f"{rank}" if isinstance(rank, int) else "not in the top 10"
    lines = [
        f"**Question:** {md_text(q.question)}",
        f"**Kind:** {md_text(q.kind or '?')}",
        f"**Gold answer:** {md_text(gold)}" + (f" (also: {md_text(', '.join(aliases))})" if aliases else ""),
        f"**Our answer:** {ours}",
        f"**Rank of the gold evidence:** {where}",
    ]
    return "  \n".join(lines)


def eval_citation_label(c: Mapping[str, object]) -> str:
    """Expander label for a citation of the report (``[n] p. X · section``), safe Markdown."""
    parts = [escape_markdown(f"[{c.get('n', '?')}]")]
    if c.get("doc"):
        parts[0] += " " + escape_markdown(shorten(str(c["doc"]), 60))
    if c.get("page"):
        parts.append(f"p. {c['page']}")
    if c.get("section"):
        parts.append(escape_markdown(shorten(str(c["section"]), 80)))
    return " · ".join(parts)
