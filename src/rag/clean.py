"""Stage 2: repair the layout of (often OCR'd) text without losing provenance.

Nothing here edits the document text. :func:`analyse` reads it line by line and returns
:class:`Unit` spans (paragraphs, bullet items, "next step" items, headings) with page numbers,
skipping page furniture (footers, registration stamps, repeated headers). Every unit is an exact
span of the original, so a chunk built from units maps back to the source. OCR slips are repaired
only in the *search* form of a text (:func:`rag.text.search_form`), which feeds the embeddings and
the lexical index, never the text shown as a citation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from .text import collapse_ws, is_place, search_form

#: Lines that are page furniture, not content (matched against the stripped line).
FURNITURE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^Ref\.\s*Ares\(\d{4}\)\d+"),  # Commission registration stamp
    re.compile(r"^Commission europ[ée]enne\s*/\s*Europese Commissie"),  # Commission address footer
    re.compile(r"^(page\s*)?\d{1,4}\s*(/|of)\s*\d{1,4}$", re.I),  # "3 / 12", "page 3 of 12"
    re.compile(r"^[-–]?\s*\d{1,4}\s*[-–]?$"),  # a lone page number
)

#: Markers that start a list item. ">" marks a "next step" item in tables such as the default annex.
_BULLET = re.compile(r"^(?:[•▪◦●■□◆\-–*]|o(?=\s+[A-Z0-9])|\(?[a-z0-9]{1,2}[.)](?=\s+[A-Z]))\s+")
_STEP = re.compile(r"^>\s*")
_MD_HEADING = re.compile(r"^(#{1,6})\s+\S")
_TERMINAL = (".", "!", "?", ":", ";", ",")


@dataclass(frozen=True)
class Unit:
    kind: str  # "heading" | "subtitle" | "text" | "bullet" | "step"
    start: int  # first non-space character, in the document text
    end: int  # one past the last non-space character
    page: int
    page_end: int
    level: int = 0  # headings only: 1 all-caps section, 2 all-caps sub-section, 3 topic, 4 lead-in ("...:"), 5 place
    lines: int = 1


@dataclass(frozen=True)
class Layout:
    units: tuple[Unit, ...]
    page_starts: tuple[int, ...]  # offset where page n+1 starts
    furniture: tuple[tuple[int, int], ...]  # spans skipped as page furniture

    def page_at(self, offset: int) -> int:
        import bisect

        return max(1, bisect.bisect_right(self.page_starts, offset))


@dataclass
class _Line:
    start: int
    end: int
    raw: str
    page: int = 1
    blank_before: int = 0
    page_break_before: bool = False
    furniture: bool = False

    @property
    def text(self) -> str:
        return self.raw.strip()

    @property
    def blank(self) -> bool:
        return not self.raw.strip()


def _split_lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    for m in re.finditer(r"[^\n\f]*(\n|\f|$)", text):
        if m.start() == len(text) and m.group() == "":
            break
        body_end = m.end() - len(m.group(1))
        lines.append(_Line(m.start(), body_end, text[m.start() : body_end]))
        if m.group(1) == "\f":
            lines.append(_Line(m.end(), m.end(), "\f"))  # sentinel: page break
        if m.group(1) == "":
            break
    return lines


def _is_all_caps(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return len(letters) >= 3 and all(c.isupper() for c in letters)


def analyse(text: str) -> Layout:
    """Split ``text`` into units with pages, skipping furniture. Pure function of the text."""
    lines = _split_lines(text)
    content = [ln for ln in lines if not ln.blank and ln.raw != "\f"]
    # A line indented by exactly one space after a non-blank line marks a page start in OCR output
    # (the page's first line keeps the leading space). Only trusted when such lines are rare.
    single_indent = [ln for ln in content if re.match(r"^ \S", ln.raw)]
    indent_marks_page = 0 < len(single_indent) <= max(1, len(content) // 20)

    page, blanks, seen = 1, 0, False
    page_starts = [0]
    for ln in lines:
        if ln.raw == "\f":
            page += 1
            page_starts.append(ln.start)
            blanks, ln.page = 0, page
            continue
        if ln.blank:
            blanks += 1
            continue
        brk = False
        if lines and seen:
            if blanks >= 3:
                brk = True
            elif indent_marks_page and re.match(r"^ \S", ln.raw) and blanks == 0:
                brk = True
        if brk:
            page += 1
            page_starts.append(ln.start)
        ln.page, ln.blank_before, ln.page_break_before = page, blanks, brk
        blanks, seen = 0, True
    # \f sentinels mark the following line as a page break too
    for i, ln in enumerate(lines):
        if ln.raw == "\f":
            for nxt in lines[i + 1 :]:
                if not nxt.blank and nxt.raw != "\f":
                    nxt.page_break_before = True
                    break

    _mark_furniture(content, page)
    furniture = tuple((ln.start, ln.end) for ln in content if ln.furniture)
    units = _build_units(content)
    return Layout(tuple(_merge_caps_headings(units, text)), tuple(page_starts), furniture)


def _mark_furniture(content: list[_Line], pages: int) -> None:
    for ln in content:
        if any(p.search(ln.text) for p in FURNITURE_PATTERNS):
            ln.furniture = True
    if pages >= 4:  # repeated running headers/footers: same short line on many pages
        seen: dict[str, set[int]] = defaultdict(set)
        for ln in content:
            if len(ln.text) <= 80 and not ln.text.endswith((".", "!", "?")):  # headers are not sentences
                seen[collapse_ws(ln.text).lower()].add(ln.page)
        repeated = {t for t, ps in seen.items() if len(ps) >= max(3, pages // 2)}
        for ln in content:
            if collapse_ws(ln.text).lower() in repeated:
                ln.furniture = True


def _marker(s: str) -> str | None:
    if _STEP.match(s):
        return "step"
    if _BULLET.match(s):
        return "bullet"
    return None


#: a letter's complimentary close ("Yours sincerely,"): the line after it is the signature, not a heading
CLOSE = (r"(?:yours (?:sincerely|faithfully|truly)|sincerely(?: yours)?|(?:with )?(?:kind|best|warm)(?:est)? "
         r"(?:regards|wishes)|regards|respectfully(?: yours)?)")
_CLOSING = re.compile(rf"^{CLOSE}\W*$", re.I)


def _looks_like_heading(ln: _Line, prev: _Line | None, nxt: _Line | None, prev_unit_closed: bool) -> bool:
    s = ln.text
    words = s.split()
    if not (1 <= len(words) <= 12) or s.endswith(_TERMINAL) or _marker(s):
        return False
    if prev is not None and _CLOSING.match(prev.text.strip()):
        return False  # "Yours sincerely," then the signature: "Ursula von der Leyen" is who wrote it
    if not (s[0].isupper() or s[0].isdigit()):
        return False
    if not (ln.blank_before or ln.page_break_before or prev is None or prev_unit_closed):
        return False
    if nxt is not None and nxt.text[:1].islower() and not nxt.page_break_before:
        return False  # the sentence goes on after a blank line
    if nxt is None or nxt.blank_before or nxt.page_break_before or nxt.furniture or _marker(nxt.text):
        return True
    # heading directly followed by its text: a short line, then a capitalised line
    if _is_all_caps(s) and _is_all_caps(nxt.text) and len(nxt.text.split()) <= 6:
        return True
    return len(s) <= 45 and nxt.text[:1].isupper() and not _is_all_caps(nxt.text)


def _looks_like_leadin(ln: _Line, nxt: _Line | None, prev_unit_closed: bool) -> bool:
    """A short label that introduces a list: "Frontex Status Agreements to conclude:"."""
    s = ln.text
    if not s.endswith(":") or len(s.split()) > 8 or any(c.isdigit() for c in s) or _marker(s):
        return False
    if not s[0].isupper() or not (ln.blank_before or ln.page_break_before or prev_unit_closed):
        return False
    return nxt is None or nxt.blank_before or bool(_marker(nxt.text))


def _build_units(content: list[_Line]) -> list[Unit]:
    units: list[list] = []  # [kind, first_line, last_line]
    prev: _Line | None = None
    for i, ln in enumerate(content):
        nxt = content[i + 1] if i + 1 < len(content) else None
        if ln.furniture:
            prev = ln
            units.append(["furniture", ln, ln])
            continue
        cur = units[-1] if units else None
        cur_closed = cur is None or cur[0] in ("heading", "furniture") or cur[2].text.endswith((".", "!", "?", ":"))
        s = ln.text
        mk = _marker(s)
        if _MD_HEADING.match(s):
            units.append(["heading", ln, ln])
        elif mk:
            units.append([mk, ln, ln])
        elif cur is not None and cur[0] == "heading" and _is_all_caps(s) and _is_all_caps(cur[2].text) \
                and not ln.blank_before and not ln.page_break_before:
            cur[2] = ln  # multi-line all-caps heading
        elif _looks_like_heading(ln, prev, nxt, cur_closed) or _looks_like_leadin(ln, nxt, cur_closed):
            units.append(["heading", ln, ln])
        elif cur is None or cur[0] in ("heading", "furniture"):
            units.append(["text", ln, ln])
        elif ln.page_break_before:
            # a paragraph continues on the next page only when it was cut mid-sentence
            if s[:1].islower() and not cur_closed:
                cur[2] = ln
            else:
                units.append(["text", ln, ln])
        elif ln.blank_before:
            if s[:1].islower() or (cur[0] in ("bullet", "step") and not cur_closed):
                cur[2] = ln
            else:
                units.append(["text", ln, ln])
        else:
            cur[2] = ln
        prev = ln
    out = []
    for kind, first, last in units:
        if kind == "furniture":
            continue
        start = first.start + (len(first.raw) - len(first.raw.lstrip()))
        end = last.end - (len(last.raw) - len(last.raw.rstrip()))
        nlines = sum(1 for ln in content if first.start <= ln.start <= last.start)
        out.append(Unit(kind, start, end, first.page, last.page, 0, nlines))
    return out


def _merge_caps_headings(units: list[Unit], text: str) -> list[Unit]:
    """Give headings a level. Consecutive all-caps headings form one heading, except that a one-line
    all-caps heading followed by more all-caps headings is their parent (``ACTION PLANS`` over
    ``WESTERN BALKANS ACTION PLAN DECEMBER 2022``)."""
    out: list[Unit] = []
    i = 0
    in_parent = False  # under a one-line all-caps parent whose children are wrapped (multi-line) headings
    while i < len(units):
        u = units[i]
        if u.kind != "heading":
            out.append(u)
            i += 1
            continue
        raw = text[u.start : u.end]
        md = _MD_HEADING.match(raw)
        if md:  # Markdown: the number of #s is the level
            out.append(Unit("heading", u.start, u.end, u.page, u.page_end, min(len(md.group(1)), 5), u.lines))
            i += 1
            continue
        if not _is_all_caps(raw):
            level = 4 if raw.rstrip().endswith(":") else 5 if is_place(raw) else 3
            out.append(Unit("heading", u.start, u.end, u.page, u.page_end, level, u.lines))
            i += 1
            continue
        j = i
        while j + 1 < len(units) and units[j + 1].kind == "heading" and _is_all_caps(text[units[j + 1].start : units[j + 1].end]):
            j += 1
        group = units[i : j + 1]
        if len(group) >= 3 and group[0].lines == 1 and group[1].lines > 1:
            out.append(Unit("heading", u.start, u.end, u.page, u.page_end, 1, 1))
            rest = group[1:]
            out.append(Unit("heading", rest[0].start, rest[-1].end, rest[0].page, rest[-1].page_end, 2, 1))
            in_parent = True
        else:
            # a later wrapped heading under the same parent is a sibling of the first child
            level = 2 if in_parent and group[0].lines > 1 else 1
            in_parent = in_parent and level == 2
            out.append(Unit("heading", group[0].start, group[-1].end, group[0].page, group[-1].page_end, level, 1))
        i = j + 1
        # a narrow, multi-line block right under an all-caps heading is its subtitle (a table's
        # first column: "Strengthening external borders and prevention of irregular Migration")
        if i < len(units) and units[i].kind == "text" and units[i].lines >= 2:
            sub = units[i]
            raw_lines = [ln.strip() for ln in text[sub.start : sub.end].splitlines() if ln.strip()]
            if sum(map(len, raw_lines)) / len(raw_lines) < 30 and len(raw_lines) <= 8:
                out.append(Unit("subtitle", sub.start, sub.end, sub.page, sub.page_end, 2, sub.lines))
                i += 1
    return out


def heading_title(raw: str) -> str:
    """Display form of a heading: whitespace collapsed, trailing colon dropped, ALL CAPS title-cased."""
    s = collapse_ws(raw).lstrip("#").strip().rstrip(":").strip()
    if _is_all_caps(s):
        small = {"and", "of", "the", "for", "in", "on", "to", "a"}
        words = s.lower().split()
        s = " ".join(w if (k and w in small) else w[:1].upper() + w[1:] for k, w in enumerate(words))
    return search_form(s)


_LABEL = re.compile(r"^(?:[•▪◦●■\-–*>o]\s+)?([A-Z][\w'’ .-]{1,40}?):\s")


def place_label(unit_text: str) -> str | None:
    """The place an item is labelled with ("• Serbia: latest round ..." -> "Serbia"), if any."""
    m = _LABEL.match(collapse_ws(unit_text))
    if m and is_place(m.group(1)):
        return heading_title(m.group(1))
    return None
