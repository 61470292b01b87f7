"""Stage 6: extractive answers with citations (no LLM needed).

From the retrieved passages, pick the one to three sentences that best answer the question, using
the sentence vectors computed at index time (one dot product each) plus lexical evidence, and cite
each with ``[n]``. When the best support is weak, abstain and still return the closest passages.
Deterministic for the same index and question.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from .chunk import SECTION_SEP
from .text import MONTHS, collapse_ws
from .index import IndexData
from .lexical import tokenize, weighted_overlap
from .retrieve import Hit

_LEAD_MARKER = re.compile(r"^(?:[•▪◦●■>\-–*]|o(?=\s))\s*")
W_COS, W_LEX, W_RANK = 0.85, 0.60, 0.20  # chosen on eval/qa.jsonl (grid search)
W_TYPE = 0.12  # bonus when a sentence holds the kind of answer the question asks for (penalty when not)
W_ECHO = 0.05  # penalty for a sentence that only repeats the question
SECOND_RATIO = 0.80  # a further sentence joins the answer when it scores this close to the best

# ---------------------------------------------------------------------------------------------
# Expected answer type: "how many" wants a quantity, "when" a date. Cheap, language-specific cues.


_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:\s*[-–/]\s*\d{{1,2}})?\s*{MONTHS}\w*|{MONTHS}\w*|(?:19|20)\d\d|Q[1-4]|H[12]|"
    r"spring|summer|autumn|winter|end of (?:the )?year|next year|this year|last year|early|mid-|"
    r"today|yesterday|tomorrow|week|month|\d{1,2}/\d{1,2}/\d{2,4})\b",
    re.I,
)
_QTY_WORD = re.compile(r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen|hundreds?|thousands?|millions?|billions?|double|half|twice|several|nearly|almost)\b", re.I)
_WANTS_QTY = re.compile(r"\b(?:how (?:much|many|large|big|long|far)|what (?:amount|sum|number|percentage|share|proportion|total|value|figure|size)|which (?:amount|sum|number|percentage)|how high)\b", re.I)
_WANTS_DATE = re.compile(r"\b(?:when|what (?:date|day|month|year|time)|which (?:date|day|month|year|quarter)|by when|until when|since when|how soon)\b", re.I)


def expected_type(question: str) -> str | None:
    if _WANTS_QTY.search(question):
        return "quantity"
    if _WANTS_DATE.search(question):
        return "date"
    return None


def has_type(text: str, kind: str | None) -> bool:
    if kind is None:
        return True
    if kind == "date":
        return bool(_DATE.search(text))
    # quantity: a number that is not part of a date, or a number word
    stripped = re.sub(rf"\b\d{{1,2}}(?:\s*[-–]\s*\d{{1,2}})?\s+{MONTHS}\b|\b(?:19|20)\d\d\b|\bQ[1-4]\b|\b\d+(?:st|nd|rd|th)\b", " ", text)
    return bool(re.search(r"\d", stripped) or _QTY_WORD.search(stripped))


@dataclass(frozen=True)
class Citation:
    n: int
    doc: str
    title: str
    page: int
    section: str
    start: int
    end: int
    text: str
    score: float
    highlights: tuple[tuple[int, int], ...] = ()  # supporting sentence spans (absolute offsets)
    #: Does the passage back what the answer says with this marker? Extractive answers quote it, so
    #: always; generated answers are checked (rag.generate.verify).
    supported: bool = True

    def to_json(self, with_n: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["highlights"] = [list(h) for h in self.highlights]
        if not with_n:  # a retrieved passage, not a citation: no number, nothing to support
            d.pop("n")
            d.pop("supported")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Citation":
        """A citation or passage of an answer's JSON (``to_json``'s output) back as a record."""
        return cls(int(d.get("n", 0)), str(d["doc"]), str(d.get("title", "")), int(d.get("page", 1)), str(d.get("section", "")),
                   int(d["start"]), int(d["end"]), str(d["text"]), float(d.get("score", 0.0)),
                   tuple((int(a), int(b)) for a, b in d.get("highlights", ())), bool(d.get("supported", True)))


@dataclass(frozen=True)
class ShortAnswer:
    """The exact phrase that answers the question: ``collapse_ws(document[start:end]) == text``, inside
    the first cited sentence."""

    text: str
    doc: str
    start: int
    end: int
    #: source "reader": the reader's confidence in this span; "cue" and "heading": the reader's probability
    #: that the passages answer the question (the span was picked by its type, see rag.cues)
    score: float
    #: who picked the span: "reader" (the trained reader), "cue" (the one amount, number or date of the
    #: quoted sentence, for a question asking for one that the reader answered without a confident span)
    #: or "heading" (the one such candidate of a heading the question names; the quote is the heading)
    source: str = "reader"

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "doc": self.doc, "start": self.start, "end": self.end, "score": round(self.score, 4),
                "source": self.source}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ShortAnswer":
        return cls(str(d["text"]), str(d["doc"]), int(d["start"]), int(d["end"]), float(d.get("score", 0.0)),
                   str(d.get("source", "reader")))


@dataclass(frozen=True)
class Scored:
    hit_rank: int
    start: int
    end: int
    text: str
    score: float
    cos: float
    lex: float


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str  # empty when abstained
    abstained: bool
    message: str  # what to show a person (the answer, or "The documents do not say ...")
    citations: tuple[Citation, ...]
    passages: tuple[Citation, ...]
    support: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    mode: str = "extractive"  # how the answer was written: "extractive" or "llm"
    #: Generated sentences that no cited passage supports (flagged in the app and the JSON).
    unsupported_sentences: tuple[str, ...] = ()
    #: Markers the model wrote that named no given passage (removed from the answer).
    invalid_citations: tuple[int, ...] = ()
    #: The question as typed, when a follow-up was rewritten into ``question`` before retrieval.
    original_question: str | None = None
    #: The phrase that answers the question (None: abstained, a long answer, or no confident span).
    short_answer: ShortAnswer | None = None
    #: The reader's probability that the passages answer the question (None with the verifier off).
    answerable: float | None = None

    def to_json(self, id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if id is None else {"id": id}
        out.update(
            question=self.question,
            answer=self.answer,
            abstained=self.abstained,
            message=self.message,
            support=round(self.support, 4),
            citations=[c.to_json() for c in self.citations],
            passages=[p.to_json(with_n=False) for p in self.passages],
            timings_ms={k: round(v, 2) for k, v in self.timings_ms.items()},
            mode=self.mode,
            unsupported_sentences=list(self.unsupported_sentences),
            invalid_citations=list(self.invalid_citations),
            short_answer=self.short_answer.to_json() if self.short_answer else None,
            answerable=None if self.answerable is None else round(self.answerable, 4),
        )
        if self.original_question is not None:
            out["original_question"] = self.original_question
        if self.notices:
            out["notices"] = list(self.notices)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Answer":
        """An answer's JSON (``rag ask --json``, ``POST /ask``) back as a record (its ``id`` dropped)."""
        short = d.get("short_answer")
        return cls(
            question=str(d["question"]), answer=str(d.get("answer", "")), abstained=bool(d["abstained"]),
            message=str(d.get("message", "")), citations=tuple(Citation.from_json(c) for c in d.get("citations", ())),
            passages=tuple(Citation.from_json(p) for p in d.get("passages", ())), support=float(d.get("support", 0.0)),
            timings_ms={str(k): float(v) for k, v in (d.get("timings_ms") or {}).items()},
            notices=tuple(d.get("notices", ())), mode=str(d.get("mode", "extractive")),
            unsupported_sentences=tuple(d.get("unsupported_sentences", ())),
            invalid_citations=tuple(int(n) for n in d.get("invalid_citations", ())),
            original_question=d.get("original_question"),
            short_answer=ShortAnswer.from_json(short) if short else None,
            answerable=None if d.get("answerable") is None else float(d["answerable"]),
        )


def passage(hit: Hit, n: int = 0, highlights: Sequence[tuple[int, int]] = ()) -> Citation:
    c = hit.chunk
    return Citation(n, c.doc_id, c.title, c.page, SECTION_SEP.join(c.section), c.start, c.end, c.text,
                    round(float(hit.score), 4), tuple(highlights))


def score_sentences(
    data: IndexData, hits: Sequence[Hit], qvec: np.ndarray | None, qtokens: list[str], depth: int = 4,
    question: str = "",
) -> list[Scored]:
    out: list[Scored] = []
    idf = data.lexical.idf
    want = expected_type(question)
    qset = set(qtokens)
    for rank, h in enumerate(hits[:depth]):
        c = h.chunk
        doc = data.docs[c.doc_id].text
        path_tokens = tokenize(SECTION_SEP.join(c.section))
        first = int(data.sentence_first[h.index]) if h.index >= 0 else -1
        own = data.chunks[h.index].sentences if h.index >= 0 else ()
        for s, e in c.sentences:
            text = collapse_ws(doc[s:e])
            j = own.index((s, e)) if (s, e) in own else -1
            cos = float(data.sentence_vecs[first + j] @ qvec) if (qvec is not None and j >= 0) else 0.0
            stoks = tokenize(text)
            lex = weighted_overlap(qtokens, stoks + path_tokens, idf)
            prior = 1.0 / (1.0 + 0.5 * rank)
            score = W_COS * cos + W_LEX * lex + W_RANK * prior
            if want is not None:
                score += W_TYPE if has_type(text, want) else -W_TYPE
            if len(set(stoks) - qset) < 3:  # says nothing the question did not already say
                score -= W_ECHO
            out.append(Scored(rank, s, e, text, score, cos, lex))
    out.sort(key=lambda x: (-x.score, x.hit_rank, x.start))
    return out


def span_words(original: str, start: int, end: int, span_start: int, span_end: int) -> tuple[int, int]:
    """The words ``[a, b)`` of ``collapse_ws(original[start:end]).split()`` that a span of ``original``
    (inside ``[start, end)``) touches: what :func:`compose` must keep when it trims the sentence."""
    a = len(original[start:span_start].split())
    if span_start > start and not original[span_start - 1].isspace() and not original[span_start].isspace():
        a -= 1  # the span starts inside a word: keep that word
    return a, max(a + 1, len(original[start:span_end].split()))


@lru_cache(maxsize=8192)
def _word_tokens(word: str) -> tuple[str, ...]:
    return tuple(tokenize(word))


def _trim(text: str, qtokens: set[str], max_words: int, keep: tuple[int, int] | None = None) -> str:
    """Keep a long sentence's most relevant window of clauses, at most ``max_words`` words, with ``…``
    where words were left out. With ``keep`` (word indices, e.g. the short answer's), only windows
    holding those words; when no window of whole clauses fits, the best window of words."""
    words = text.split()
    n = len(words)
    if n <= max_words:
        return text
    lo, hi = keep if keep is not None else (n, 0)  # (n, 0): every window holds it
    # a clause ends after a word ending in , ; or : and before a lone dash (as in "- item")
    ends = [k + 1 for k in range(n - 1) if words[k][-1] in ",;:" or words[k + 1] == "-"] + [n]
    starts = [0] + ends[:-1]
    hit = {k: found for k, w in enumerate(words) if (found := qtokens.intersection(_word_tokens(w)))}

    def value(i: int, j: int) -> float:
        return len(set().union(*(t for k, t in hit.items() if i <= k < j))) + 0.001 * (j - i)

    windows = [(i, j) for i in starts if i <= lo for j in ends if i < j <= i + max_words and hi <= j]
    if not windows:  # no whole clauses fit: any window of max_words words
        windows = [(i, i + max_words) for i in range(n - max_words + 1) if i <= lo and hi <= i + max_words]
    if not windows:  # ``keep`` is longer than the budget: its first words
        first = max(0, min(lo, n - max_words))
        windows = [(first, first + max_words)]
    i, j = max(windows, key=lambda w: (value(*w), -w[0]))
    return ("… " if i > 0 else "") + " ".join(words[i:j]) + (" …" if j < n else "")


def not_in_documents(question: str, why: str = "") -> str:
    """The abstention message: "The documents do not say: <question>?" (and ``(why)`` when given)."""
    q = question.strip().rstrip("?")
    said = f"The documents do not say: {q}?" if q else "The documents do not say."
    return f"{said} ({why})" if why else said


@dataclass(frozen=True)
class Composed:
    """An extractive answer made of quoted sentences, before the pipeline adds timings and passages."""

    answer: str  # the quoted sentences with their [n] markers; "" when abstained
    abstained: bool
    message: str  # what to show: the answer, or "The documents do not say: ...?"
    citations: tuple[Citation, ...]
    support: float  # the best sentence's score


def compose(
    question: str,
    hits: Sequence[Hit],
    scored: Sequence[Scored],
    abstain_below: float,
    max_words: int = 60,
    qtokens: Sequence[str] = (),
    keep: tuple[int, int] | None = None,
) -> Composed:
    """The answer from scored sentences (best first; the first is always part of the answer), or an
    abstention when there is none or the best scores under ``abstain_below``. ``keep``: words of the
    first sentence (:func:`span_words`, the short answer's) that trimming a long sentence must keep."""
    support = scored[0].score if scored else 0.0
    if not scored or support < abstain_below:
        return Composed("", True, not_in_documents(question), (), support)
    chosen: list[Scored] = [scored[0]]
    used = len(scored[0].text.split())
    top = max(s.score for s in scored)  # the first may be the reader's sentence, not the best-scored one
    for s in scored[1:6]:
        if len(chosen) == 3 or s.score < SECOND_RATIO * top:
            break
        w = len(s.text.split())
        if used + w <= max_words and all(s.start != c.start for c in chosen):
            chosen.append(s)
            used += w
    order: dict[int, int] = {}
    parts = []
    qset = set(qtokens)
    for s in chosen:
        n = order.setdefault(s.hit_rank, len(order) + 1)
        budget = max_words if len(chosen) == 1 else max_words // len(chosen)
        text = _LEAD_MARKER.sub("", _trim(s.text, qset, budget, keep if s is chosen[0] else None))
        parts.append(f"{text} [{n}]")
    cits = []
    for rank, n in order.items():
        spans = tuple((s.start, s.end) for s in chosen if s.hit_rank == rank)
        cits.append(passage(hits[rank], n, spans))
    answer = " ".join(parts)
    return Composed(answer, False, answer, tuple(cits), support)
