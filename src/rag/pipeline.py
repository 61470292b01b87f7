"""The Python API used by the CLI and the app: an :class:`Assistant` loaded once from an index
folder, with :meth:`Assistant.search` and :meth:`Assistant.ask`. Safe to share between threads
(queries only read the index)."""

from __future__ import annotations

import re
import time
import unicodedata
import logging
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Collection, Sequence

import numpy as np

from .answer import Answer, Citation, Composed, Scored, ShortAnswer, compose, passage, score_sentences, span_words
from .errors import BadQuestion
from .index import IndexData, load_index
from .lexical import tokenize
from .retrieve import Hit, search
from .settings import ANSWER_MODES, MODES, STRICTNESS, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    text: str
    notices: tuple[str, ...] = ()


def clean_question(raw: object, max_chars: int) -> Question:
    """Validate a question: strip control characters, refuse empty, truncate very long ones.

    Format characters (category Cf: zero-width space and joiners, soft hyphen, bidi marks and
    overrides, BOM) are invisible and sit inside words ("Fin\\u200bland"), so they are removed;
    control characters (Cc: tabs, newlines, ESC, NUL) and line/paragraph separators separate words,
    so they become spaces. Lone surrogates (undecodable bytes on the command line) are dropped."""
    if not isinstance(raw, str):
        raise BadQuestion(f"the question must be text, got {type(raw).__name__}")
    text = "".join(" " if cat in ("Cc", "Zl", "Zp") else ch
                   for ch, cat in ((ch, unicodedata.category(ch)) for ch in raw) if cat not in ("Cf", "Cs"))
    text = " ".join(text.split())
    if not text:
        raise BadQuestion("the question is empty: type a question about the documents")
    notices = []
    if len(text) > max_chars:
        notices.append(f"the question was {len(text):,} characters; only the first {max_chars:,} were used")
        cut = text[:max_chars]
        if text[max_chars] != " " and " " in cut:  # do not end inside a word
            cut = cut.rsplit(" ", 1)[0]
        text = cut.strip()
    return Question(text, tuple(notices))


_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")


def search_text(question: str) -> str:
    """What is searched for: the question without HTML elements or Markdown link targets (markup in a
    question is not part of what is asked, and must not pull hostile passages into an answer)."""
    s = _LINK_TARGET.sub("]", _TAG.sub(" ", _SCRIPT.sub(" ", question)))
    s = " ".join(s.replace("![", "[").split())
    return s or question


#: Above this many characters of documents in all, acronyms are not read from them (a few seconds at
#: the first question; see Assistant.long_forms).
LONG_FORMS_MAX_CHARS = 5_000_000


def query_tokens(text: str, forms: dict[str, str] | None = None) -> list[str]:
    """The lexical search terms of a question: its own, the name of each country it names only by an
    adjective ("Finnish head of government" also searches "Finland"; the stemmer cannot join the two),
    and the acronym of each long form in ``forms`` (:func:`rag.lexical.long_forms`) it spells out
    ("memorandum of understanding" also searches "MoU")."""
    from .cues import countries_named
    from .lexical import acronym_tokens

    tokens = tokenize(text)
    extra = [t for c in sorted(countries_named(text)) for t in tokenize(c)] + acronym_tokens(text, forms or {})
    return tokens + [t for t in dict.fromkeys(extra) if t not in tokens]


class Assistant:
    def __init__(self, settings: Settings, data: IndexData, embedder=None, chat=None, engine=None) -> None:
        self.settings = settings
        self.data = data
        #: ``store = "postgres"``: the rag.engine.EngineSearch that ranks passages (None: the index folder's)
        self.engine = engine
        self._embedder = embedder
        self._chat = chat  # a LangChain chat model for answer="llm"; built from the settings when first needed
        self._chat_lock = threading.Lock()
        self._reader = None
        self._reader_loading: threading.Thread | None = None  # set by load(): the reader loading early
        self._encode = lru_cache(maxsize=1024)(self._encode_raw)  # per assistant: repeated questions are free
        self._long_forms: dict[str, str] | None = None

    @property
    def long_forms(self) -> dict[str, str]:
        """The acronyms the documents spell out (:func:`rag.lexical.long_forms`), read from the documents at
        first use (about 10 ms for the default letter, 90 ms for 15 SQuAD articles); none for documents of
        more than :data:`LONG_FORMS_MAX_CHARS` in all, or an index too large to hold them in memory."""
        if self._long_forms is None:
            from .lexical import long_forms

            docs = self.data.docs
            small = isinstance(docs, dict) and sum(len(d.text) for d in docs.values()) <= LONG_FORMS_MAX_CHARS
            self._long_forms = long_forms(d.text for d in docs.values()) if small else {}
        return self._long_forms

    @classmethod
    def load(cls, settings: Settings | None = None, check_fresh: bool = True, embedder=None) -> "Assistant":
        settings = settings or Settings()
        early = _load_reader_early(settings)  # overlaps the index and encoder loads (cold start)
        data = load_index(settings, check_fresh=check_fresh)
        engine = None
        if settings.store != "faiss":
            from .engine import for_index

            engine = for_index(settings, data)
        a = cls(settings, data, embedder, engine=engine)
        a._reader_loading = early
        return a

    def chat_model(self):
        """The configured chat model (raises rag.generate.LLMUnavailable with the fix if it cannot be built)."""
        with self._chat_lock:
            if self._chat is None:
                from .generate import make_chat_model

                self._chat = make_chat_model(self.settings)
            return self._chat

    @property
    def embedder(self):
        if self._embedder is None:
            from .embed import get_embedder

            self._embedder = get_embedder(self.settings.model, str(self.settings.cache_dir), self.settings.embed_backend)
        return self._embedder

    @property
    def reader(self):
        """The trained reader (rag.reader), loaded on first use; None with ``verifier="off"``."""
        if self.settings.verifier == "off":
            return None
        if self._reader is None:
            from .reader import get_reader

            if self._reader_loading is not None:
                self._reader_loading.join()  # its errors surface below, from the same call
            self._reader = get_reader(self.settings.cache_dir)
        return self._reader

    def warm_up(self) -> "Assistant":
        """Load the models now (otherwise the first question pays for it)."""
        self._encode("warm up")
        if self.reader is not None:
            self.reader.read("warm up", [("warm up", 0, 0)])
        return self

    def read(self, question: str, hits: Sequence[Hit], early_exit: bool = True):
        """The reader's :class:`rag.reader.Reading` of the top ``read_k`` passages (None when off);
        ``early_exit=False`` reads them all even when the first clearly answers (calibration)."""
        from .reader import reader_context

        reader = self.reader
        if reader is None or not hits:
            return None
        ctxs = []
        for h in hits[: self.settings.read_k]:
            ctx, prefix = reader_context(h.chunk, self.data.docs[h.chunk.doc_id].text)
            ctxs.append((ctx, prefix, h.chunk.start))
        cos = max((h.dense for h in hits[: self.settings.read_k] if h.dense is not None), default=0.0)
        return reader.read(question, ctxs, cos, early_exit)

    def _encode_raw(self, text: str) -> np.ndarray:
        v = self.embedder.embed([text])[0]
        v.setflags(write=False)
        return v

    def clear_cache(self) -> None:
        """Forget this assistant's cached query vectors (the eval suite times cold queries)."""
        self._encode.cache_clear()

    def _resolve(self, k: int | None, mode: str | None) -> tuple[int, str]:
        k = self.settings.k if k is None else k
        mode = self.settings.mode if mode is None else mode
        if not isinstance(k, int) or k < 1:
            raise BadQuestion(f"k must be >= 1, got {k}")
        if mode not in MODES:
            raise BadQuestion(f"unknown retrieval mode {mode!r}; expected one of: {', '.join(MODES)}")
        return k, mode

    def search(self, question: str, k: int | None = None, mode: str | None = None,
               docs: Collection[str] | None = None) -> list[Hit]:
        """The top ``k`` passages; ``docs`` (document ids) limits the search to those documents."""
        k, mode = self._resolve(k, mode)
        q = clean_question(question, self.settings.max_question_chars)
        text = search_text(q.text)
        qvec = self._encode(text) if mode != "lexical" else None
        return search(self.data, qvec, query_tokens(text, self.long_forms), k, mode, self.settings.fusion, docs=docs,
                      engine=self.engine)

    def standalone(
        self, question: str, history: Sequence[tuple[str, str]] = (), answer: str | None = None, chat=None
    ) -> str:
        """``question`` rewritten with the conversation (pairs of earlier question and answer) when it is a
        follow-up such as "and what about Egypt?"; unchanged otherwise. The LLM rewrites in "llm" mode
        (falling back to the deterministic rewrite if it fails); extractive mode uses rag.followup."""
        from .followup import is_follow_up, rewrite

        if not history or not is_follow_up(question):
            return question
        if (answer or self.settings.answer) == "llm":
            try:
                from .generate import rewrite_with_llm

                out = rewrite_with_llm(chat or self.chat_model(), history, question, settings=self.settings)
                if out.strip():
                    return out
            except Exception as exc:  # the backend failed: the deterministic rewrite still works
                log.warning("follow-up rewrite by the LLM failed (%s); using the deterministic rewrite", exc)
        return rewrite(question, [h[0] for h in history])

    def ask(
        self,
        question: str,
        k: int | None = None,
        mode: str | None = None,
        *,
        answer: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        on_token: Callable[[str], None] | None = None,
        chat=None,
        strictness: str | None = None,
        docs: Collection[str] | None = None,
    ) -> Answer:
        """Answer ``question``. ``answer`` is "extractive" or "llm" (default: the settings); ``history``
        holds earlier (question, answer) pairs of a chat, used to rewrite follow-ups; ``on_token`` gets
        the LLM's text as it streams (before verification); ``chat`` is a LangChain chat model to use
        instead of the one the settings describe; ``strictness`` overrides the settings' (see
        :data:`rag.settings.STRICTNESS`); ``docs`` (document ids) answers from those documents only."""
        t0 = time.perf_counter()
        strictness = self.settings.strictness if strictness is None else strictness
        if strictness not in STRICTNESS:
            raise BadQuestion(f"unknown strictness {strictness!r}; expected one of: {', '.join(STRICTNESS)}")
        k, mode = self._resolve(k, mode)
        answer_mode = self.settings.answer if answer is None else answer
        if answer_mode not in ANSWER_MODES:
            raise BadQuestion(f"unknown answer mode {answer_mode!r}; expected one of: {', '.join(ANSWER_MODES)}")
        q = clean_question(question, self.settings.max_question_chars)
        original = None
        if history:
            rewritten = self.standalone(q.text, history, answer_mode, chat)
            if rewritten != q.text:
                original, q = q.text, replace(q, text=clean_question(rewritten, self.settings.max_question_chars).text)
        text = search_text(q.text)
        qtokens = query_tokens(text, self.long_forms)
        qvec = self._encode(text)  # also used to score sentences in lexical mode
        hits = search(self.data, qvec if mode != "lexical" else None, qtokens, k, mode, self.settings.fusion, docs=docs,
                      engine=self.engine)
        if mode == "lexical":  # dense cosines for the answer step
            hits = [h if h.dense is not None else _with_dense(self.data, h, qvec) for h in hits]
        t1 = time.perf_counter()
        scored = score_sentences(self.data, hits, qvec, qtokens, question=text)
        reading = self.read(text, hits)
        t_read = time.perf_counter()
        short = None
        abstain_below = self.settings.abstain_below
        if reading is not None:
            abstain_below = float("-inf") if reading.answerable >= self.reader.threshold(strictness) else float("inf")
            if reading.best is not None and abstain_below < 0:
                scored, short = _pin_span(self.data, hits, scored, reading.best, self.reader.cfg.short_min_conf, text)
        keep = None
        if short is not None:  # trimming a long sentence keeps the short answer in the quote
            first = scored[0]
            keep = span_words(self.data.docs[short.doc].text, first.start, first.end, short.start, short.end)
        composed = compose(q.text, hits, scored, abstain_below, self.settings.max_answer_words, qtokens, keep)
        if reading is not None and not composed.abstained:
            composed, short = _typed_check(self.data, hits, scored, composed, short, q.text, text, reading.answerable,
                                           strictness, self.settings.read_k)
        t2 = time.perf_counter()
        result = Answer(
            question=q.text,
            answer=composed.answer,
            abstained=composed.abstained,
            message=composed.message,
            citations=composed.citations,
            passages=tuple(passage(h) for h in hits),
            support=composed.support,
            timings_ms={"retrieve": (t1 - t0) * 1000, "read": (t_read - t1) * 1000, "answer": (t2 - t1) * 1000,
                        "total": (t2 - t0) * 1000},
            notices=q.notices,
            original_question=original,
            short_answer=None if composed.abstained else short,
            answerable=None if reading is None else reading.answerable,
        )
        if answer_mode == "llm":
            result = self._generate(result, hits, on_token, t0, chat, strictness)
        return result

    def _generate(self, extractive: Answer, hits: list[Hit], on_token, t0: float, chat=None,
                  strictness: str | None = None) -> Answer:
        """The LLM's answer, verified; the extractive one with a notice if the model cannot answer.
        Every message made of the server's text goes through rag.generate.redact (no key, no password)."""
        from .answer import not_in_documents
        from .cues import evidence_gap, typed_gap
        from .generate import (REFUSAL, WITHHELD, build_messages, empty_reply_notice, failure_notice, redact, stream_text,
                               text_without_markers, verification_notices, verify)

        if not hits:
            return replace(extractive, mode="llm")
        t1 = time.perf_counter()
        model = chat
        try:
            model = chat or self.chat_model()
            text = stream_text(model, build_messages(extractive.question, hits), on_token)
            text = redact(text, self.settings, model, secrets_only=True)
        except Exception as exc:  # not built, or any backend failure (connection refused, timeout, bad reply)
            return replace(extractive, notices=extractive.notices + (failure_notice(self.settings, model, exc),))
        t2 = time.perf_counter()
        if not text_without_markers(text):  # nothing but "[1]": no answer at all
            return replace(extractive, notices=extractive.notices + (empty_reply_notice(self.settings, model),))
        v = verify(text, hits, self.data, self.embedder.embed, extractive.question)
        t3 = time.perf_counter()
        timings = dict(extractive.timings_ms, generate=(t2 - t1) * 1000, verify=(t3 - t2) * 1000, total=(t3 - t0) * 1000)
        notices = list(extractive.notices) + verification_notices(v)
        if v.refused:
            return replace(extractive, answer="", abstained=True, message=not_in_documents(extractive.question, REFUSAL),
                           citations=(), support=0.0, timings_ms=timings, notices=tuple(notices), mode="llm",
                           invalid_citations=v.invalid_citations, short_answer=None)
        support = min((c.support for c in v.claims), default=0.0)
        # The same verifier as extractive answers: do the passages the model cited answer the question?
        cited = [h for h in hits if any(c.doc == h.chunk.doc_id and c.start == h.chunk.start and c.end == h.chunk.end
                                        for c in v.citations)]
        asked = search_text(extractive.question)
        reading = self.read(asked, cited) if cited else None
        answerable = extractive.answerable if reading is None else reading.answerable
        short = extractive.short_answer
        if short is not None and not any(c.doc == short.doc and c.start <= short.start and short.end <= c.end
                                         for c in v.citations):
            short = None  # the phrase must come from a passage the answer cites
        strictness = strictness or self.settings.strictness
        why: str | None = None  # withheld when set ("" = no reason to give)
        if reading is not None and reading.answerable < self.reader.threshold(strictness):
            why = ""
        elif reading is None and extractive.abstained and extractive.answerable is not None:
            why = ""  # it cites none of the passages, and they do not answer: the model's own words
        elif reading is not None and (gap := evidence_gap(asked, cited_text(v.citations))):
            why = gap  # as for extractive answers: a year, a country or a negation the cited passages lack
        elif reading is not None and short is None:
            # The typed cues as for extractive answers: an amount, number or date question with no short
            # answer is withheld unless the model's answer holds one and the cited passages likely answer it.
            gap = typed_gap(asked, text_without_markers(v.answer), answerable, strictness)
            why = gap or None
        if why is not None:
            notices.append(WITHHELD)
            return replace(extractive, answer="", abstained=True, message=not_in_documents(extractive.question, why),
                           citations=(), support=support, timings_ms=timings, notices=tuple(notices), mode="llm",
                           invalid_citations=v.invalid_citations, short_answer=None, answerable=answerable)
        return replace(extractive, answer=v.answer, abstained=False, message=v.answer, citations=v.citations,
                       support=support, timings_ms=timings, notices=tuple(notices), mode="llm",
                       unsupported_sentences=v.unsupported_sentences, invalid_citations=v.invalid_citations,
                       short_answer=short, answerable=answerable)


def cited_text(citations: Sequence[Citation]) -> str:
    """What a reader of the citations sees: each cited passage's title, section path and text."""
    return "\n".join(f"{c.title}\n{c.section}\n{c.text}" for c in citations)


#: A span longer than this is a long answer (a list, a reason): the sentence stays the answer.
SHORT_MAX_WORDS = 12
_LONG_QUESTION = re.compile(r"^\s*(?:why|how (?:do|does|did|is|are|can|could|should|will|would)\b|explain|describe|"
                            r"what (?:are|were) the (?:reasons?|steps|measures|actions|priorities)\b)", re.I)


def _pin_span(data: IndexData, hits: Sequence[Hit], scored: list[Scored], best, min_conf: float,
              question: str) -> tuple[list[Scored], ShortAnswer | None]:
    """When the reader is confident of a short span inside one sentence (and the question does not ask
    for a reason or a description), that span is the short answer and its sentence goes first (the
    answer's first, cited sentence). Otherwise the sentences stay as scored and there is no short
    answer. The reader's sentence goes first even when the sentence scorer ranked it lower: on held-out
    questions that raised answer accuracy (curated third 0.905 -> 0.919) and short answers (SQuAD
    held-out articles, HasAns F1 0.343 -> 0.355) over asking the two to agree (top three). A span that
    cuts a proper name is completed to the whole name (:func:`rag.cues.complete_name`), and a name of a
    pair or list the question asks for becomes the pair or the list (:func:`rag.cues.pair_name`,
    :func:`rag.cues.list_name`)."""
    from .cues import complete_name, list_name, pair_name
    from .text import collapse_ws

    if best.conf < min_conf or _LONG_QUESTION.search(question):
        return scored, None
    i = next((j for j, s in enumerate(scored) if s.hit_rank == best.rank and s.start <= best.start < s.end), None)
    if i is None or best.end > scored[i].end:  # the span must sit inside one sentence
        return scored, None
    doc = hits[best.rank].chunk.doc_id
    original = data.docs[doc].text
    start, end = complete_name(original, best.start, best.end, scored[i].start, scored[i].end)
    start, end = pair_name(question, original, start, end, scored[i].start, scored[i].end)
    start, end = list_name(question, original, start, end, scored[i].start, scored[i].end)
    text = collapse_ws(original[start:end])
    if not text or len(text.split()) > SHORT_MAX_WORDS:
        return scored, None
    return [scored[i]] + scored[:i] + scored[i + 1:], ShortAnswer(text, doc, start, end, best.conf)


def _typed_check(data: IndexData, hits: Sequence[Hit], scored: Sequence[Scored], composed: Composed,
                 short: ShortAnswer | None, question: str, text: str, answerable: float,
                 strictness: str, read_k: int = 3) -> tuple[Composed, ShortAnswer | None]:
    """Typed cues (rag.cues) after the reader. Any question naming a year its quoted sentences never
    mention is abstained on, and so is a question about what is not so that they answer with nothing in
    the negative, and an amount, number or date question about a country the cited passages never
    name. Without a confident short answer, the assistant abstains on an amount, number or date
    question, saying why, unless the quoted sentences hold an answer of that kind and the reader is
    fairly sure. An answer that stands, and a country question whose reader span names no country, gets
    the one candidate of that kind in its first quoted sentence (not one the question already has) as its
    short answer, when there is exactly one (else none). A question that the quoted sentences would be
    abstained on, or a date question about a heading's subject and nothing else, is answered from that
    heading when one above the passages read names what it asks about (:func:`_heading_answer`).
    A date question about a legal step (signed, in force, ratified) whose first quoted sentence never
    takes that step is abstained on, and a short answer that dates another step of that sentence moves to
    the step's own date (:func:`rag.cues.step_gap`, :func:`rag.cues.step_date`). Without a short answer,
    a question a proper name answers ("Which three Member States ...?") whose first quoted sentence
    names no one is abstained on (:func:`rag.cues.name_gap`), and so is a question about who holds a post
    when that sentence names no one with a title (:func:`rag.cues.person_gap`), and a "Where ...?" question gets the one
    place its first quoted sentence names (:func:`rag.cues.place_answer`). A question about the past whose first quoted
    sentence speaks only of what is to come is abstained on (:func:`rag.cues.tense_gap`).
    Measured on held-out data in the README (How it works 6, "typed cues")."""
    from .answer import not_in_documents
    from .cues import (evidence_gap, expected_type, holds_type, name_gap, person_gap, place_answer, step_date,
                       step_gap, tense_gap, typed_answer, typed_gap, wrong_kind)
    from .generate import text_without_markers
    from .text import collapse_ws

    if not scored:
        return composed, short
    kind = expected_type(text)
    if short is not None and wrong_kind(text, short.text):
        short = None  # "How much budget money ...?" answered "50" (guards), "How many ...?" answered an amount
    # "What did the 2020 Pact propose?", "What do beroids not have?" or "How many officers in Moldova?"
    # answered from sentences that never mention 2020 or say nothing in the negative, or from passages that
    # never name Moldova, whatever the reader found; then a number question without a short answer whose
    # quotes hold no number
    said = text_without_markers(composed.answer)
    quoted = "\n".join([said] + [f"{c.title}\n{c.section}" for c in composed.citations])  # with the passages' heads
    first = scored[0]  # compose quotes it first (a reader's short answer is in it)
    doc = hits[first.hit_rank].chunk.doc_id
    sentence = data.docs[doc].text[first.start:first.end]
    why = evidence_gap(text, cited_text(composed.citations), quoted)
    if not why:  # "When did the Council adopt the Pact?" quoting "... by the end of this year will allow ..."
        why = tense_gap(text, sentence)
    if not why and kind == "date":  # "When was it signed?" answered from "negotiations took place on 7 November"
        why = step_gap(text, sentence, "the sentence found")
    if not why and short is None:  # "Which three Member States ...?" quoting "Three more Member States ..."
        why = name_gap(text, sentence, "the sentence found") or person_gap(text, sentence)
    if not why and short is None and kind is not None:
        why = typed_gap(text, said, answerable, strictness)
        if why and (headed := _heading_answer(data, hits[:read_k], kind, text, answerable)) is not None:
            return headed  # "When was the X action plan adopted?": the date is in its heading only
    if why:
        return replace(composed, answer="", abstained=True, message=not_in_documents(question, why), citations=()), None
    if kind is None:
        if short is None and (found := place_answer(text, sentence)) is not None:  # "Where ...?": "in Cairo"
            span = collapse_ws(sentence[found[0]:found[1]])
            if span in composed.answer.split("[")[0]:
                return composed, ShortAnswer(span, doc, first.start + found[0], first.start + found[1], answerable, "cue")
        return composed, short
    if kind == "date" and (headed := _heading_answer(data, hits[:read_k], kind, text, answerable, only=True)) is not None:
        return headed  # about the heading's subject and nothing else: its date, not one of the text below it
    if short is not None and kind == "date" and first.start <= short.start < first.end:
        # "When was it signed?" answered with the date it "entered into force on", in "Signed on X and ..."
        start, end = step_date(text, sentence, short.start - first.start, short.end - first.start)
        moved = collapse_ws(sentence[start:end])
        if moved != short.text and moved in composed.answer.split("[")[0]:
            short = replace(short, text=moved, start=first.start + start, end=first.start + end)
    # A country question answered "EU Agencies": the reader's span names no country of rag.text's list, and
    # its sentence names exactly one other. Otherwise the reader's span stands: the list is not every country
    # ever ("Dutch Republic"), and for numbers and dates overriding the reader lost SQuAD held-out EM/F1
    # (0.227/0.363 -> 0.221/0.356).
    if short is not None and (kind != "country" or holds_type(kind, short.text, text)):
        return composed, short
    found = typed_answer(kind, sentence, text)
    span = "" if found is None else collapse_ws(sentence[found[0]:found[1]])
    if not span or span not in composed.answer.split("[")[0]:  # none, or trimmed out of the quoted sentence
        return composed, short
    return composed, ShortAnswer(span, doc, first.start + found[0], first.start + found[1], answerable, "cue")


@lru_cache(maxsize=16)
def _headings(text: str) -> tuple[tuple[int, int, int, str], ...]:
    """(start, end, page, display title) of a document's headings, as the chunker saw them."""
    from .clean import analyse, heading_title

    return tuple((u.start, u.end, u.page, heading_title(text[u.start:u.end])) for u in analyse(text).units
                 if u.kind == "heading")


def _heading_answer(data: IndexData, hits: Sequence[Hit], kind: str, question: str,
                    answerable: float, only: bool = False) -> tuple[Composed, ShortAnswer] | None:
    """An amount, number or date question that the quoted sentences do not answer, about what a heading
    above one of the passages read names ("When was the Eastern Mediterranean action plan adopted?" under
    "EASTERN MEDITERRANEAN ACTION PLAN OCTOBER 2023"): the heading is quoted and cited, with its offsets,
    and its one candidate of the kind asked for (:func:`rag.cues.heading_answer`) is the short answer.
    ``only``: the question is about the heading's subject and nothing else (see the function). None when
    no heading of the passages read (deepest first) qualifies."""
    from .chunk import SECTION_SEP
    from .cues import heading_answer
    from .text import collapse_ws

    for hit in hits:
        c = hit.chunk
        for depth in range(len(c.section) - 1, -1, -1):
            found = heading_answer(kind, c.section[depth], question, only)
            if found is None:
                continue
            text = data.docs[c.doc_id].text
            unit = next((h for h in reversed(_headings(text)) if h[1] <= c.start and h[3] == c.section[depth]), None)
            if unit is None:
                continue
            start, end, page, _ = unit
            words = c.section[depth][found[0]:found[1]].split()
            m = re.search(r"\s+".join(re.escape(w) for w in words), text[start:end], re.I)
            if m is None:
                continue
            quote = collapse_ws(text[start:end])
            cit = Citation(1, c.doc_id, c.title, page, SECTION_SEP.join(c.section[:depth]), start, end, quote,
                           round(float(hit.score), 4), ((start, end),))
            answer = f"{quote} [1]"
            short = ShortAnswer(collapse_ws(m.group()), c.doc_id, start + m.start(), start + m.end(), answerable, "heading")
            return Composed(answer, False, answer, (cit,), float(hit.score)), short
    return None


def _load_reader_early(settings: Settings) -> threading.Thread | None:
    """Start loading the reader in a thread (hashing and opening it takes about as long as the rest of
    a cold start); :attr:`Assistant.reader` waits for it."""
    if settings.verifier == "off":
        return None

    def load() -> None:
        from .reader import get_reader

        try:
            get_reader(settings.cache_dir)
        except Exception:  # raised again, with its message, where the reader is used
            pass

    t = threading.Thread(target=load, name="rag-reader-load", daemon=True)
    t.start()
    return t


def _with_dense(data: IndexData, h: Hit, qvec: np.ndarray) -> Hit:
    from dataclasses import replace

    return replace(h, dense=float(data.vectors.reconstruct(h.index) @ qvec))
