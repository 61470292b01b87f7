"""Stage 3: structure-aware chunking.

Chunks follow the document's own units (paragraphs, list items, "next step" items), stay inside
one section and one page, never cut a sentence, and record their exact span in the source.
The section path comes from the headings above a chunk, plus the parts a document's metadata
names (``"parts": [{"title": "Annex", "anchor": "EUCO Letter"}]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from .clean import CLOSE, Layout, Unit, analyse, heading_title, place_label
from .text import collapse_ws, search_form
from .load import Document
from .settings import ChunkSettings

SECTION_SEP = " › "
NEXT_STEPS = "Next steps"


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    page: int
    page_end: int
    section: tuple[str, ...]
    start: int
    end: int
    text: str  # collapse_ws(document.text[start:end])
    sentences: tuple[tuple[int, int], ...]  # absolute spans of the sentences inside [start, end)

    @property
    def section_path(self) -> str:
        return SECTION_SEP.join(self.section)

    @property
    def words(self) -> int:
        return len(self.text.split())

    def search_text(self) -> str:
        """What is embedded and lexically indexed: the section path, then the OCR-repaired text, without a
        letter's closing signature ("Yours sincerely, Ursula von der Leyen"): it is quoted and read, but a
        question that names the writer is about what she wrote, not about the signature."""
        path = self.section_path
        body = search_form(_SIGNATURE.sub("", self.text))
        return f"{path}: {body}" if path else body


# a letter's complimentary close and the signature after it, at the end of a passage
_SIGNATURE = re.compile(rf"\s*\b{CLOSE}\W+[^.!?]{{1,80}}$", re.I)


# ---------------------------------------------------------------------------------------------
# Sentences

_ABBREV = {
    "e.g", "i.e", "etc", "no", "nos", "art", "arts", "ref", "mr", "mrs", "ms", "dr", "st", "vs", "cf", "al",
    "fig", "approx", "inc", "ltd", "co", "jr", "sr", "para", "paras", "p", "pp", "vol", "op", "ca", "eds",
    "ed", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "prof", "gen",
}
# a sentence ends at . ! ? (and closing quotes or brackets) before a space and anything that does
# not continue it: not a lower-case word, not closing punctuation
_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[^\sa-z,;:)\]])")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans of ``text[start:end]`` (absolute offsets, trimmed of whitespace)."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cur = start
    for m in _END.finditer(text, start, end):
        word = re.search(r"([\w.]+)[.!?]?[\"'”’)\]]*$", text[cur : m.end()])
        token = (word.group(1) if word else "").rstrip(".").lower()
        if m.group()[0] == "." and (token in _ABBREV or (len(token) == 1 and token.isalpha())):
            continue
        spans.append((cur, m.end()))
        cur = m.end()
    spans.append((cur, end))
    out = []
    for s, e in spans:
        seg = text[s:e]
        ls = len(seg) - len(seg.lstrip())
        rs = len(seg) - len(seg.rstrip())
        if e - rs > s + ls:
            out.append((s + ls, e - rs))
    return out


def _words(text: str, start: int, end: int) -> int:
    return len(text[start:end].split())


# ---------------------------------------------------------------------------------------------
# Sections


def _sections(doc: Document, layout: Layout) -> list[tuple[tuple[str, ...], Unit, int]]:
    """Content units with the section path above each, in document order."""
    text = doc.text
    parts = [
        (str(p.get("anchor", "")).strip(), str(p.get("title", "")).strip())
        for p in doc.metadata.get("parts", [])
        if isinstance(p, dict) and p.get("anchor") and p.get("title")
    ]
    stack: list[tuple[int, str]] = []
    out = []
    for i, u in enumerate(layout.units):
        raw = collapse_ws(text[u.start : u.end])
        part = next((title for anchor, title in parts if raw.startswith(anchor)), None)
        if part is not None:
            stack = [(0, part)]
            if u.kind == "heading":
                continue
        if u.kind == "subtitle":
            continue
        if u.kind == "heading":
            stack = [(lv, t) for lv, t in stack if lv < u.level]
            stack.append((u.level, heading_title(text[u.start : u.end])))
            continue
        label = place_label(text[u.start : u.end])
        if label:  # an item labelled with a place sits under that place
            path = tuple(t for lv, t in stack if lv < 5) + (label,)
        else:
            path = tuple(t for _, t in stack)
        if u.kind == "step":
            path = path + (NEXT_STEPS,)
        out.append((path, u, i))
    return out


def chunk_document(doc: Document, settings: ChunkSettings = ChunkSettings(), layout: Layout | None = None) -> list[Chunk]:
    layout = layout or analyse(doc.text)
    text = doc.text
    furniture = layout.furniture

    def blocked(a: int, b: int) -> bool:  # furniture between two spans: they cannot share a chunk
        return any(a <= fs and fe <= b for fs, fe in furniture)

    # 1. group adjacent units that share a section and a page
    groups: list[list[tuple[tuple[str, ...], Unit, int]]] = []
    for item in _sections(doc, layout):
        path, u, idx = item
        g = groups[-1] if groups else None
        if (
            g
            and g[-1][0] == path
            and g[-1][1].page_end == u.page
            and g[-1][2] + 1 == idx
            and not blocked(g[-1][1].end, u.start)
        ):
            g.append(item)
        else:
            groups.append([item])

    # 2. a short intro (under min_words) joins the next group when that group is its subsection
    merged: list[list] = []
    i = 0
    while i < len(groups):
        g = groups[i]
        if i + 1 < len(groups):
            nxt = groups[i + 1]
            gw = sum(_words(text, u.start, u.end) for _, u, _ in g)
            path, nxt_path = g[0][0], nxt[0][0]
            if (
                gw < settings.min_words
                and len(nxt_path) > len(path)
                and nxt_path[: len(path)] == path
                and nxt_path[len(path)] != NEXT_STEPS
                and g[-1][1].page_end == nxt[0][1].page
                and not blocked(g[-1][1].end, nxt[0][1].start)
            ):
                groups[i + 1] = [(nxt_path, u, idx) for _, u, idx in g] + nxt
                i += 1
                continue
        merged.append(g)
        i += 1

    # 3. pack units into chunks of target size; split oversize units at sentence ends
    chunks: list[Chunk] = []
    for g in merged:
        path = g[-1][0]
        pieces: list[tuple[int, int, list[tuple[int, int]], int, int]] = []  # start, end, sentences, page, page_end
        for _, u, _ in g:
            sents = split_sentences(text, u.start, u.end)
            for part in _split_long(text, sents, settings.max_words):
                pieces.append((part[0][0], part[-1][1], part, u.page, u.page_end))
        packed: list[list] = []
        for p in pieces:
            if packed:
                cur = packed[-1]
                cw = _words(text, cur[0], cur[1])
                pw = _words(text, p[0], p[1])
                if cw < settings.target_words and cw + pw <= settings.max_words:
                    cur[1], cur[2], cur[4] = p[1], cur[2] + p[2], p[4]
                    continue
            packed.append([p[0], p[1], list(p[2]), p[3], p[4]])
        # a small trailing piece joins the previous chunk when it fits
        if len(packed) >= 2 and _words(text, packed[-1][0], packed[-1][1]) < settings.min_words:
            a, b = packed[-2], packed[-1]
            if _words(text, a[0], b[1]) <= settings.max_words:
                a[1], a[2], a[4] = b[1], a[2] + b[2], b[4]
                packed.pop()
        for start, end, sents, page, page_end in packed:
            chunks.append(
                Chunk(
                    chunk_id=f"{doc.doc_id}#{len(chunks)}",
                    doc_id=doc.doc_id,
                    title=doc.title,
                    page=page,
                    page_end=page_end,
                    section=path,
                    start=start,
                    end=end,
                    text=collapse_ws(text[start:end]),
                    sentences=tuple(sents),
                )
            )
    return chunks


def _split_long(text: str, sents: Sequence[tuple[int, int]], max_words: int) -> list[list[tuple[int, int]]]:
    """Split a unit's sentences into runs of at most ``max_words`` words, balanced in size."""
    total = sum(_words(text, s, e) for s, e in sents)
    if total <= max_words or len(sents) == 1:
        return [list(sents)]
    n = -(-total // max_words)
    goal = total / n
    runs: list[list[tuple[int, int]]] = [[]]
    acc = 0
    for s, e in sents:
        w = _words(text, s, e)
        if runs[-1] and (acc + w > max_words or acc >= goal):
            runs.append([])
            acc = 0
        runs[-1].append((s, e))
        acc += w
    return runs


def chunk_documents(docs: Iterable[Document], settings: ChunkSettings = ChunkSettings()) -> list[Chunk]:
    out: list[Chunk] = []
    for d in docs:
        out.extend(chunk_document(d, settings))
    return out
