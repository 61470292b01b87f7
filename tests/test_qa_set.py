"""Validation of the hand-curated evaluation set eval/qa.jsonl.

Stdlib + pytest only; does not import the project package.

Checks: size, unique ids, schema, verbatim evidence quotes (whitespace-insensitive)
that are 10-60 words and lie on the stated page, gold answer contained in the
evidence, paraphrase rule (no shared 5-gram of word tokens between a question and
its evidence), section/page balance and unanswerable items.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QA_PATH = REPO / "eval" / "qa.jsonl"
CORPUS_PATH = REPO / "corpus" / "eu-commission-letter-migration-2023-12.txt"

KINDS = {
    "numeric",
    "entity",
    "list",
    "date",
    "explanatory",
    "multi-passage",
    "table",
    "unanswerable",
}
SECTIONS = {"letter", "annex"}
REQUIRED = ("id", "question", "answer", "aliases", "evidence", "kind", "section", "page")
N_PAGES = 19
LETTER_PAGES = range(1, 7)  # pages 1-6 are the letter, 7-19 the annex table
# First line (1-based) of each page of the OCR text, page 1..19.
PAGE_STARTS = [1, 39, 81, 131, 179, 225, 241, 324, 393, 456, 518, 555, 615, 672, 733, 797, 826, 887, 963]
NGRAM = 5
MIN_WORDS, MAX_WORDS = 10, 60

_WS = re.compile(r"\s+")
_TOKEN = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode-aware)


# ----------------------------------------------------------------------------- helpers
def collapse(text: str) -> str:
    """Collapse every whitespace run (incl. newlines) to one space and strip."""
    return _WS.sub(" ", text).strip()


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(toks: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def shared_ngrams(question: str, evidence: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Word n-grams of the question that also occur consecutively in the evidence."""
    return ngrams(tokens(question), n) & ngrams(tokens(evidence), n)


def word_count(text: str) -> int:
    return len(collapse(text).split())


def collapse_with_lines(text: str) -> tuple[str, list[int]]:
    """Collapsed text (without final strip) plus the 1-based source line of every char."""
    out: list[str] = []
    lines: list[int] = []
    line = 1
    prev_ws = False
    for ch in text:
        if ch.isspace():
            if not prev_ws:
                out.append(" ")
                lines.append(line)
            prev_ws = True
        else:
            out.append(ch)
            lines.append(line)
            prev_ws = False
        if ch == "\n":
            line += 1
    return "".join(out), lines


def page_of_line(line: int) -> int:
    page = 0
    for i, start in enumerate(PAGE_STARTS, start=1):
        if line >= start:
            page = i
    return page


def quote_pages(quote: str, flat: str, line_map: list[int]) -> list[int]:
    """Pages on which each occurrence of the (collapsed) quote starts; [] if absent."""
    q = collapse(quote)
    if not q:
        return []
    pages = []
    i = flat.find(q)
    while i != -1:
        pages.append(page_of_line(line_map[i]))
        i = flat.find(q, i + 1)
    return pages


def contains_ci(haystack: str, needle: str) -> bool:
    return collapse(needle).lower() in collapse(haystack).lower()


def evidences(item: dict) -> list[str]:
    evs = [item.get("evidence") or ""]
    if item.get("evidence2"):
        evs.append(item["evidence2"])
    return [e for e in evs if e]


# ----------------------------------------------------------------------------- data
CORPUS = CORPUS_PATH.read_text(encoding="utf-8")
FLAT, LINE_MAP = collapse_with_lines(CORPUS)


def _load() -> list[dict]:
    items = []
    with QA_PATH.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:  # pragma: no cover - reported as failure
                    raise AssertionError(f"{QA_PATH.name}:{n}: invalid JSON: {exc}") from exc
    return items


ITEMS = _load()
ANSWERABLE = [it for it in ITEMS if it.get("kind") != "unanswerable"]
UNANSWERABLE = [it for it in ITEMS if it.get("kind") == "unanswerable"]


def _ids(items):
    return [str(it.get("id", f"#{i}")) for i, it in enumerate(items)]


# ----------------------------------------------------------------------------- helper self-tests
def test_helper_collapse_and_tokens():
    assert collapse("a \n\n b\tc ") == "a b c"
    assert tokens("EU’s 73 185 Türkiye-route") == ["eu", "s", "73", "185", "türkiye", "route"]


def test_helper_paraphrase_detects_copying():
    ev = "Frontex has already expanded its Joint Operation: 50 European border guards are deployed"
    bad = "Why has Frontex already expanded its joint operation?"  # 'frontex has already expanded its'
    good = "How many European border guards were sent north?"
    assert shared_ngrams(bad, ev), "a copied 5-gram must be detected"
    assert not shared_ngrams(good, ev)
    # punctuation / case / line breaks must not hide copying
    assert shared_ngrams("FRONTEX, has\nalready-expanded its", ev)


def test_helper_quote_lookup_and_pages():
    assert quote_pages("Dear colleagues, Our work, on migration", FLAT, LINE_MAP) == [1]
    # a quote broken across lines in the file is still found
    assert quote_pages("73 185 interceptions (compared to 31 859", FLAT, LINE_MAP) == [7]
    assert quote_pages("this sentence is not in the corpus at all", FLAT, LINE_MAP) == []
    # a character-level change (OCR spelling) must not match
    assert quote_pages("dialogue on migration and security with Turkiye took place", FLAT, LINE_MAP) == []
    assert page_of_line(1) == 1 and page_of_line(240) == 6 and page_of_line(241) == 7
    assert page_of_line(1034) == 19


def test_helper_answer_check():
    ev = "resulting in 73 185 interceptions"
    assert contains_ci(ev, "73  185")
    assert not contains_ci(ev, "73,185")
    assert word_count("one  two\nthree") == 3


# ----------------------------------------------------------------------------- global checks
def test_item_count():
    assert len(ITEMS) >= 100, f"only {len(ITEMS)} items"


def test_unique_ids():
    ids = [it.get("id") for it in ITEMS]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate ids: {dupes}"


def test_unique_questions():
    qs = [collapse(it.get("question", "")).lower() for it in ITEMS]
    dupes = sorted({q for q in qs if qs.count(q) > 1})
    assert not dupes, f"duplicate questions: {dupes}"


def test_annex_share():
    annex = sum(1 for it in ITEMS if it.get("section") == "annex")
    assert annex / len(ITEMS) >= 0.40, f"annex share {annex}/{len(ITEMS)} < 40%"


def test_unanswerable_count():
    assert len(UNANSWERABLE) >= 15, f"only {len(UNANSWERABLE)} unanswerable items"


def test_unanswerable_items_cover_the_three_kinds():
    """Off-topic (nothing about it in the corpus), out-of-corpus (another document's topic) and
    near-miss (on topic, but the fact asked for is not there): each is abstained on differently."""
    types = [it.get("unanswerable_type") for it in UNANSWERABLE]
    assert set(types) == {"off-topic", "out-of-corpus", "near-miss"}, set(types)
    assert all(types.count(t) >= 8 for t in set(types)), {t: types.count(t) for t in set(types)}


def test_every_page_covered():
    counts = {p: 0 for p in range(1, N_PAGES + 1)}
    for it in ITEMS:
        if it.get("page") in counts:
            counts[it["page"]] += 1
    thin = {p: c for p, c in counts.items() if c < 2}
    assert not thin, f"pages with fewer than 2 items: {thin}"


def test_kinds_are_mixed():
    present = {it.get("kind") for it in ITEMS}
    missing = KINDS - present
    assert not missing, f"kinds never used: {missing}"


# ----------------------------------------------------------------------------- per-item checks
@pytest.mark.parametrize("item", ITEMS, ids=_ids(ITEMS))
def test_schema(item):
    missing = [f for f in REQUIRED if f not in item]
    assert not missing, f"missing fields {missing}"
    assert isinstance(item["id"], str) and item["id"]
    assert isinstance(item["question"], str) and item["question"].strip()
    assert isinstance(item["answer"], str)
    assert isinstance(item["aliases"], list) and all(isinstance(a, str) and a.strip() for a in item["aliases"])
    assert isinstance(item["evidence"], str)
    assert "evidence2" not in item or isinstance(item["evidence2"], str)
    assert item["kind"] in KINDS, f"bad kind {item['kind']!r}"
    assert item["section"] in SECTIONS, f"bad section {item['section']!r}"
    assert isinstance(item["page"], int) and 1 <= item["page"] <= N_PAGES, f"bad page {item['page']!r}"
    expected = "letter" if item["page"] in LETTER_PAGES else "annex"
    assert item["section"] == expected, f"page {item['page']} belongs to the {expected}"


@pytest.mark.parametrize("item", UNANSWERABLE, ids=_ids(UNANSWERABLE))
def test_unanswerable_is_empty(item):
    assert item["answer"] == ""
    assert item["aliases"] == []
    assert item["evidence"] == ""
    assert not item.get("evidence2")


@pytest.mark.parametrize("item", ANSWERABLE, ids=_ids(ANSWERABLE))
def test_answerable_has_answer(item):
    assert item["answer"].strip(), "answerable item needs a non-empty answer"
    assert item["evidence"].strip(), "answerable item needs evidence"
    if item["kind"] == "multi-passage":
        assert item.get("evidence2", "").strip(), "multi-passage item needs evidence2"


@pytest.mark.parametrize("item", ANSWERABLE, ids=_ids(ANSWERABLE))
def test_evidence_verbatim_and_length(item):
    for field in ("evidence", "evidence2"):
        quote = item.get(field)
        if not quote:
            continue
        assert quote_pages(quote, FLAT, LINE_MAP), f"{field} not found verbatim in corpus: {quote[:80]!r}"
        n = word_count(quote)
        assert MIN_WORDS <= n <= MAX_WORDS, f"{field} has {n} words (want {MIN_WORDS}-{MAX_WORDS})"


@pytest.mark.parametrize("item", ANSWERABLE, ids=_ids(ANSWERABLE))
def test_evidence_on_stated_page(item):
    pages = quote_pages(item["evidence"], FLAT, LINE_MAP)
    assert item["page"] in pages, f"evidence starts on page(s) {pages}, item says {item['page']}"


@pytest.mark.parametrize("item", ANSWERABLE, ids=_ids(ANSWERABLE))
def test_answer_in_evidence(item):
    assert any(contains_ci(ev, item["answer"]) for ev in evidences(item)), (
        f"answer {item['answer']!r} not in evidence"
    )


@pytest.mark.parametrize("item", ANSWERABLE, ids=_ids(ANSWERABLE))
def test_question_is_paraphrased(item):
    for ev in evidences(item):
        shared = shared_ngrams(item["question"], ev)
        assert not shared, f"question copies {NGRAM}-gram(s) from evidence: {sorted(shared)}"


PROBES = sorted((REPO / "eval" / "probes").glob("*.jsonl"))


@pytest.mark.parametrize("path", PROBES, ids=[p.name for p in PROBES])
def test_probe_sets_quote_the_document(path):
    """eval/probes/: unique ids, known kinds, answers inside their evidence and evidence verbatim in the
    document (whitespace-insensitive); unanswerable items carry no answer and say which kind they are."""
    flat = " ".join(CORPUS_PATH.read_text(encoding="utf-8").split())
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(items) >= 90 and len({i["id"] for i in items}) == len(items)
    for i in items:
        assert i["kind"] in KINDS and i["question"].strip(), i["id"]
        answer, evidence = " ".join(i["answer"].split()), " ".join(i["evidence"].split())
        if i["kind"] == "unanswerable":
            assert not answer and i["unanswerable_type"] in ("near-miss", "off-topic", "out-of-corpus"), i["id"]
        else:
            assert answer and answer in evidence and evidence in flat, i["id"]
