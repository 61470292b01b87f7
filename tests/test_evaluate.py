"""Stage 7, evaluation: the metric functions against hand-computed values and ir_measures (an established
implementation), answer matching, gold-span location, and run_qa / summarize / run_eval / write_report on
the real index with a small question set. Ends with the regression guard on the full curated set."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO
from rag.evaluate import (
    QAItem,
    QAResult,
    QuestionRow,
    accuracy_by_kind,
    answer_matches,
    format_table,
    gold_spans,
    load_qa,
    locate,
    mrr_at,
    ndcg_at,
    normalize_answer,
    percentile,
    prediction,
    recall_at,
    recall_curve,
    run_eval,
    run_qa,
    short_offsets_ok,
    squad_contains,
    squad_exact,
    squad_f1,
    squad_normalize,
    squad_scores,
    summarize,
    write_report,
)

QA_PATH = REPO / "eval" / "qa.jsonl"
#: A small question set copied from eval/qa.jsonl: numeric, entity, a € alias, a two-passage item, two unanswerable.
SMALL_IDS = ("q001", "q002", "q003", "q025", "q052", "q011", "q012")
ROW_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "answer_accuracy", "citation_support",
            "abstention_recall", "false_abstention", "median_passage_words", "p50_ms")
ANSWER_KEYS = ("answer_accuracy", "citation_support", "abstention_recall", "false_abstention")
SHORT_KEYS = ("short_em", "short_f1", "short_fact", "short_answer_rate", "short_offsets_ok")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def log2(x: float) -> float:
    return math.log2(x)


# ---------------------------------------------------------------------------------------------
# Retrieval metrics, hand-computed


RANKS = [1, 3, None, 6, 2]


@pytest.mark.parametrize("k, expected", [(1, 1 / 5), (2, 2 / 5), (3, 3 / 5), (5, 3 / 5), (6, 4 / 5), (10, 4 / 5)])
def test_recall_at_counts_questions_whose_first_relevant_rank_is_within_k(k, expected):
    assert recall_at(RANKS, k) == pytest.approx(expected, abs=1e-15)


def test_recall_at_of_no_questions_is_zero():
    assert recall_at([], 5) == 0.0
    assert recall_at([None, None], 10) == 0.0


@pytest.mark.parametrize(
    "ranks, k, expected",
    [
        (RANKS, 10, (1 + 1 / 3 + 0 + 1 / 6 + 1 / 2) / 5),  # = 0.4
        (RANKS, 5, (1 + 1 / 3 + 1 / 2) / 5),  # rank 6 is past the cut-off: 11/30
        (RANKS, 1, 1 / 5),
        ([11, 10], 10, (0 + 1 / 10) / 2),
        ([None], 10, 0.0),
        ([], 10, 0.0),
    ],
)
def test_mrr_at_is_mean_reciprocal_rank_with_cutoff(ranks, k, expected):
    assert mrr_at(ranks, k) == pytest.approx(expected, abs=1e-15)


def test_mrr_values_written_out():
    assert mrr_at(RANKS, 10) == pytest.approx(0.4, abs=1e-15)
    assert mrr_at(RANKS, 5) == pytest.approx(11 / 30, abs=1e-15)


@pytest.mark.parametrize(
    "relevance, k, n_relevant, expected",
    [
        ([[1, 0, 0]], 10, None, 1.0),
        ([[0, 1, 0, 1]], 10, None, (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3))),  # 0.6509...
        # three relevant passages exist, two retrieved: the ideal ranking has three
        ([[0, 1, 0, 1]], 10, [3], (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3) + 1 / log2(4))),
        # the cut-off drops rank 3; the ideal still counts the relevant one
        ([[0, 0, 1]], 2, None, 0.0),
        ([[1, 0, 1]], 2, None, 1 / (1 + 1 / log2(3))),
        ([[0, 0, 0]], 10, None, 0.0),
        ([[0, 0, 0]], 10, [0], 0.0),
        # the ideal is capped at k: 12 relevant exist, k = 10, all of the top 10 relevant -> 1
        ([[1] * 10], 10, [12], 1.0),
        # mean over queries
        ([[1], [0, 1], []], 10, None, (1 + 1 / log2(3) + 0) / 3),
        ([], 10, None, 0.0),
    ],
)
def test_ndcg_at_binary_gains(relevance, k, n_relevant, expected):
    assert ndcg_at(relevance, k, n_relevant) == pytest.approx(expected, abs=1e-12)


def test_ndcg_values_written_out():
    assert ndcg_at([[0, 1, 0, 1]]) == pytest.approx(0.6509209298071326, abs=1e-12)
    assert ndcg_at([[0, 1, 0, 1]], 10, [3]) == pytest.approx(0.49818925746641285, abs=1e-12)
    assert ndcg_at([[1, 0, 1]], 2) == pytest.approx(0.6131471927654584, abs=1e-12)


@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),  # input order does not matter
        ([1, 2, 3, 4], 95, 3.85),  # idx 2.85: 3 + 0.85 * (4 - 3)
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([10, 20, 30], 50, 20.0),
        ([7], 95, 7.0),
        ([], 50, 0.0),
    ],
)
def test_percentile_interpolates_linearly(values, p, expected):
    assert percentile(values, p) == pytest.approx(expected, abs=1e-12)


def test_percentile_agrees_with_numpy_linear():
    rng = random.Random(3)
    for _ in range(50):
        values = [rng.uniform(0, 500) for _ in range(rng.randint(1, 40))]
        for p in (0, 5, 50, 90, 95, 99, 100):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)), abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Retrieval metrics against ir_measures (binary relevance)


def binary_case() -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    """Six queries: hit at 1, hit at 3, several relevant with one past 10, first hit at 11, many relevant
    (ideal capped at 10), and a relevant document the run never returns."""
    qrels = {
        "q1": {"a1": 1, "a2": 0},
        "q2": {"b3": 1},
        "q3": {"c2": 1, "c5": 1, "c12": 1},
        "q4": {"d11": 1, "d40": 1},
        "q5": {f"e{i}": 1 for i in (1, 2, 4, 7, 8, 9, 10, 13, 14, 15, 16, 17)},
        "q6": {"f_missing": 1, "f2": 1},
    }
    run = {}
    for q, prefix in zip(qrels, "abcdef"):
        run[q] = [f"{prefix}{i}" for i in range(1, 31)]
    return qrels, run


def random_binary_case(seed: int, n: int = 40):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for qi in range(n):
        q = f"q{qi}"
        docs = [f"{q}-d{i}" for i in range(rng.randint(1, 60))]
        relevant = rng.sample(range(80), rng.randint(1, 12))  # some beyond the run's end
        qrels[q] = {f"{q}-d{i}": 1 for i in relevant}
        for d in rng.sample(docs, min(3, len(docs))):  # judged non-relevant
            qrels[q].setdefault(d, 0)
        run[q] = docs
    return qrels, run


def ir_measures_scores(qrels, run, measures):
    ir_measures = pytest.importorskip("ir_measures")  # in the eval extra
    scored = {q: {d: float(len(ranked) - i) for i, d in enumerate(ranked)} for q, ranked in run.items()}
    return ir_measures.calc_aggregate(measures, qrels, scored)


def ours_binary(qrels, run):
    rels, n_rel, ranks = [], [], []
    for q, judged in qrels.items():
        r = [int(judged.get(d, 0) > 0) for d in run[q]]
        rels.append(r)
        n_rel.append(sum(1 for g in judged.values() if g > 0))
        ranks.append(next((i + 1 for i, x in enumerate(r) if x), None))
    return rels, n_rel, ranks


@pytest.mark.parametrize("case", ["hand", "random-1", "random-2"])
def test_binary_metrics_match_ir_measures(case):
    pytest.importorskip("ir_measures")
    from ir_measures import RR, Success, nDCG

    qrels, run = binary_case() if case == "hand" else random_binary_case(int(case[-1]))
    rels, n_rel, ranks = ours_binary(qrels, run)
    ref = ir_measures_scores(qrels, run, [nDCG @ 10, RR @ 10, Success @ 1, Success @ 5, Success @ 10])
    assert ndcg_at(rels, 10, n_rel) == pytest.approx(ref[nDCG @ 10], abs=1e-9)
    assert mrr_at(ranks, 10) == pytest.approx(ref[RR @ 10], abs=1e-9)
    for k in (1, 5, 10):  # our Recall@k is the share of questions with a relevant passage in the top k
        assert recall_at(ranks, k) == pytest.approx(ref[Success @ k], abs=1e-9)


def test_hand_binary_case_is_not_trivial():
    """The comparison above would prove little if every score were 0 or 1."""
    pytest.importorskip("ir_measures")
    from ir_measures import RR, nDCG

    qrels, run = binary_case()
    ref = ir_measures_scores(qrels, run, [nDCG @ 10, RR @ 10])
    assert 0.2 < ref[nDCG @ 10] < 0.9 and 0.2 < ref[RR @ 10] < 0.9


# ---------------------------------------------------------------------------------------------
# Answer matching


@pytest.mark.parametrize(
    "text, expected",
    [
        ("73 185", "73185"),
        ("73,185", "73185"),
        ("73185", "73185"),
        ("2 000 000", "2000000"),
        ("1,234,567", "1234567"),
        ("1.5 billion", "1.5 billion"),
        ("50%", "50%"),
        ("Hello,   World!", "hello world"),
        ("Türkiye", "turkiye"),
        ("NA TO", "nato"),  # OCR repair from the search form
        ("EUR 67 million", "eur 67 million"),
        ("€67 million", "67 million"),  # the currency sign is punctuation: dropped
        ("In 2023 2024", "in 2023 2024"),  # two years are not one number
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "answer, gold, aliases, expected",
    [
        ("The total was 73 185 people.", "73,185", (), True),
        ("73,185", "73185", (), True),
        ("73185 arrivals", "73 185", (), True),
        ("Frontex deployed 50 border guards.", "50", (), True),
        ("a 50-year plan", "50", (), True),
        # word boundaries: the gold must be a whole token of the answer
        ("It is 150.", "50", (), False),
        ("1500 guards", "50", (), False),
        ("in 2050", "50", (), False),
        ("50th anniversary", "50", (), False),
        ("73 185", "185", (), False),  # joined number groups are one token
        ("Prime Minister Orpo", "orpo", (), True),  # case-insensitive
        ("Prime Minister Orpo", "Petteri Orpo", ("Orpo",), True),  # via an alias
        ("Prime Minister Orpo", "Petteri Orpo", (), False),
        ("", "50", (), False),
        ("anything at all", "", (), False),  # an empty gold never matches
        ("anything at all", "", ("",), False),
        # currency: a gold with "EUR" is not met by "€" unless an alias says so
        ("€67 million", "EUR 67 million", (), False),
        ("€67 million", "EUR 67 million", ("€67 million",), True),
        ("67 million", "EUR 67 million", ("67 million",), True),
        # ... but a gold written with "€" loses the sign in normalisation, so any "67 million" meets it
        ("EUR 67 million", "€67 million", (), True),
        ("USD 67 million", "€67 million", (), True),
    ],
)
def test_answer_matches(answer, gold, aliases, expected):
    assert answer_matches(answer, gold, aliases) is expected


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("50.5 million", "50"),  # a decimal is not the integer it starts with
        ("1.5 billion", "5 billion"),  # nor the number after its decimal point
        ("12.5 per cent", "12 per cent"),
    ],
)
def test_answer_matches_respects_decimal_points_as_part_of_a_number(answer, gold):
    """'.' is kept inside numbers by normalize_answer but is not a word character, so the boundary check
    lets a gold number match the digits on either side of a decimal point."""
    assert answer_matches(answer, gold) is False


# ---------------------------------------------------------------------------------------------
# Locating gold evidence

TEXT = "Frontex has expanded its Joint Operation:\n50   European border\nguards are deployed (in Finland)."


def test_locate_is_whitespace_insensitive_and_returns_the_exact_span():
    span = locate(TEXT, "Operation: 50 European border guards")
    assert span == (TEXT.index("Operation:"), TEXT.index("guards") + len("guards"))
    assert TEXT[span[0]:span[1]] == "Operation:\n50   European border\nguards"


@pytest.mark.parametrize("quote", ["  50 \n European\tborder  ", "deployed (in Finland).", "Frontex"])
def test_locate_finds_quotes_with_other_whitespace_and_regex_characters(quote):
    span = locate(TEXT, quote)
    assert span is not None
    assert " ".join(TEXT[span[0]:span[1]].split()) == " ".join(quote.split())


@pytest.mark.parametrize("quote", ["51 European border", "frontex has", "Operation 50", "deployed in Finland", "", "   "])
def test_locate_returns_none_when_absent(quote):
    assert locate(TEXT, quote) is None


def test_locate_returns_the_first_occurrence():
    assert locate("ab ab ab", "ab") == (0, 2)


def test_gold_spans_finds_each_quote_in_its_document():
    docs = {"one.txt": "alpha beta gamma", "two.txt": "delta  epsilon\nzeta"}
    item = QAItem("x", "q?", "a", (), ("epsilon zeta", "alpha beta", "not there"), "multi-passage")
    assert gold_spans(docs, item) == [("two.txt", 7, 19), ("one.txt", 0, 10)]


def test_load_qa_reads_both_evidence_fields_and_skips_blank_lines(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text(
        json.dumps({"id": "a", "question": "Q1?", "answer": "50", "aliases": ["fifty"], "evidence": "e1",
                    "evidence2": "e2", "kind": "numeric", "section": "letter", "page": 1}) + "\n\n"
        + json.dumps({"id": "b", "question": "Q2?", "answer": "", "evidence": "", "kind": "unanswerable"}) + "\n",
        encoding="utf-8",
    )
    a, b = load_qa(p)
    assert a == QAItem("a", "Q1?", "50", ("fifty",), ("e1", "e2"), "numeric", "letter", 1)
    assert a.answerable
    assert b == QAItem("b", "Q2?", "", (), (), "unanswerable", "", None)
    assert not b.answerable


# ---------------------------------------------------------------------------------------------
# summarize on hand-built results


def result(kind, rank, rels, answer, abstained, correct, cited_ok, total, retrieve, answer_ms, passage_words,
           cited_words=()):
    item = QAItem(f"{kind}-{total}", "q?", "" if kind == "unanswerable" else "gold", (), (), kind)
    return QAResult(item, rank, rels, answer, abstained, correct, cited_ok,
                    {"total": total, "retrieve": retrieve, "answer": answer_ms}, list(passage_words), list(cited_words))


def hand_results() -> list[QAResult]:
    return [
        result("numeric", 1, [1, 0, 0], "50 guards", False, True, True, 10, 8, 2, [10, 20], [10]),
        result("entity", 3, [0, 0, 1, 1], "some longer answer here", False, False, False, 20, 15, 5, [30], [30, 50]),
        result("numeric", None, [0, 0, 0], "", True, False, False, 30, 25, 5, [40]),
        result("date", 6, [0, 0, 0, 0, 0, 1], "x y", False, True, True, 40, 35, 5, [50], [20]),
        result("unanswerable", None, [0, 0], "", True, False, False, 50, 45, 5, [60]),
        result("unanswerable", None, [0, 0], "a guess", False, False, False, 60, 55, 5, [70]),
    ]


def test_summarize_hand_computed():
    s = summarize(hand_results())
    expected = {
        "questions": 6,
        "answerable": 4,
        "recall@1": 1 / 4,
        "recall@3": 2 / 4,
        "recall@5": 2 / 4,
        "recall@10": 3 / 4,
        "mrr@10": (1 + 1 / 3 + 1 / 6) / 4,  # 0.375
        "ndcg@10": (1 + (1 / log2(4) + 1 / log2(5)) / (1 + 1 / log2(3)) + 0 + 1 / log2(7)) / 4,
        "answer_accuracy": 2 / 4,
        "citation_support": 2 / 3,  # of the three answers given to answerable questions
        "abstention_recall": 1 / 2,
        "false_abstention": 1 / 4,
        "median_answer_words": 2.0,  # 2, 4, 2 words
        "median_passage_words": 40.0,  # 10 20 30 40 50 60 70
        "median_cited_words": 25.0,  # 10 20 30 50
        "p50_ms": 35.0,
        "p95_ms": 57.5,  # idx 4.75 between 50 and 60
        "retrieve_p50_ms": 30.0,
        "answer_p50_ms": 5.0,
        # no short answers and no predictions in these results: nothing scores
        "short_em": 0.0,
        "short_f1": 0.0,
        "short_fact": 0.0,  # of the four numeric, entity and date questions
        "short_answer_rate": 0.0,  # of the four answers given
        "short_offsets_ok": None,  # no short answer to check
    }
    assert set(s) == set(expected)
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-12), key


def short_result(kind, gold, aliases, abstained, short, offsets_ok, pred) -> QAResult:
    item = QAItem(f"{kind}-{gold}-{pred}", "q?", gold, tuple(aliases), (), kind)
    return QAResult(item, 1, [1], "" if abstained else "an answer [1]", abstained, None, None, {"total": 1.0},
                    [10], short=short, short_offsets_ok=offsets_ok, prediction=pred)


def test_summarize_short_answer_metrics_hand_computed():
    rows = [
        # EM 0 (vs "50" and "fifty"); F1 vs "50": precision 1/2, recall 1 -> 2/3; holds the fact
        short_result("numeric", "50", ["fifty"], False, "50 guards", True, "50 guards"),
        short_result("entity", "Petteri Orpo", ["Orpo"], False, "Orpo", True, "Orpo"),  # EM 1 through the alias
        # no short answer: the sentence is scored; F1 vs "3 May 2024": 2 common of 5 and 3 tokens -> 0.5
        short_result("date", "3 May 2024", [], False, None, None, "They met on 3 May."),
        # articles and punctuation are not compared: EM 1; offsets that do not reproduce the text
        short_result("explanatory", "The plan was agreed", [], False, "the plan was agreed!", False, "the plan was agreed!"),
        short_result("numeric", "7", [], True, None, None, ""),  # abstained: 0 and 0
        short_result("unanswerable", "", [], False, "a guess", True, "a guess"),  # not in EM/F1 (answerable only)
        short_result("unanswerable", "", [], True, None, None, ""),
    ]
    s = summarize(rows)
    assert s["short_em"] == pytest.approx((0 + 1 + 0 + 1 + 0) / 5)
    assert s["short_f1"] == pytest.approx((2 / 3 + 1 + 0.5 + 1 + 0) / 5)
    assert s["short_fact"] == pytest.approx(2 / 4)  # numeric, entity, date, numeric: the first two hold the gold
    assert s["short_answer_rate"] == pytest.approx(4 / 5)  # five answers given, four with a short answer
    assert s["short_offsets_ok"] == pytest.approx(3 / 4)
    assert s["answerable"] == 5 and s["false_abstention"] == pytest.approx(1 / 5)


@pytest.mark.parametrize(
    "gold, pred, em, f1",
    [
        ("France", "france", 1, 1.0),
        ("the Normans", "Normans.", 1, 1.0),  # articles and punctuation dropped
        ("10th and 11th centuries", "in the 10th and 11th centuries", 0, 2 * (4 / 5) * 1 / (4 / 5 + 1)),
        ("Rollo", "King Charles III", 0, 0.0),
        ("", "", 1, 1.0),  # no answer, and none given
        ("", "Paris", 0, 0.0),
        ("Paris", "", 0, 0.0),
        ("a", "the", 1, 1.0),  # both normalise to nothing: agree on no answer
        ("73,185", "73185", 1, 1.0),  # ASCII punctuation removed inside numbers too
        ("Türkiye", "Turkiye", 0, 0.0),  # no accent folding in SQuAD's definition
        ("1 2 2", "2 2 3", 0, 2 / 3),  # tokens counted with multiplicity
    ],
)
def test_squad_exact_and_f1_follow_the_official_definitions(gold, pred, em, f1):
    assert squad_exact(gold, pred) == em
    assert squad_f1(gold, pred) == pytest.approx(f1, abs=1e-12)


def test_squad_scores_take_the_best_gold_and_treat_empty_golds_as_no_answer():
    assert squad_scores("in the 10th century", ["10th century", "in the 10th century"]) == (1, 1.0)
    assert squad_scores("", []) == (1, 1.0)  # unanswerable: only "" is right
    assert squad_scores("", ["", "!!"]) == (1, 1.0)  # golds that normalise to nothing count as none
    assert squad_scores("Paris", ["", "Paris"]) == (1, 1.0)
    assert squad_scores("Paris", []) == (0, 0.0)
    assert squad_normalize("  The  Eiffel-Tower, (Paris)! ") == "eiffeltower paris"


@pytest.mark.parametrize(
    "text, answers, expected",
    [
        ("The Normans came from Normandy, in France.", ["France"], True),
        ("in the 10th and 11th centuries", ["10th and 11th centuries"], True),
        ("Francesca", ["France"], False),  # whole words only
        ("It was 1500", ["1"], False),
        ("anything", ["", "!"], False),  # an empty gold is never contained
    ],
)
def test_squad_contains_whole_normalised_words(text, answers, expected):
    assert squad_contains(text, answers) is expected


def _short(text, doc="d.txt", start=0, end=0, score=1.0):
    return SimpleNamespace(text=text, doc=doc, start=start, end=end, score=score)


def _answer(answer, abstained=False, short=None, **extra):
    return SimpleNamespace(answer=answer, abstained=abstained, short_answer=short, **extra)


def test_prediction_is_the_short_answer_else_the_answer_without_markers_else_nothing():
    assert prediction(_answer("Frontex sent 50 guards. [1] They arrived in May [2].", short=_short("50"))) == "50"
    assert prediction(_answer("Frontex sent 50 guards. [1] They arrived in May [2].")) == \
        "Frontex sent 50 guards. They arrived in May ."
    assert prediction(_answer("", abstained=True)) == ""
    assert prediction(_answer("Frontex [1]", short=_short("  "))) == "Frontex"  # a blank short answer is none
    # an Answer from before short answers existed (no attribute at all)
    assert prediction(SimpleNamespace(answer="Fifty [1]", abstained=False)) == "Fifty"


def test_short_offsets_ok_compares_the_span_with_whitespace_collapsed():
    docs = {"d.txt": SimpleNamespace(text="Frontex sent\n 50  border guards.")}
    assert short_offsets_ok(_short("50 border guards", start=14, end=31), docs) is True
    assert short_offsets_ok(_short("50 border guards", start=13, end=31), docs) is True  # the space is collapsed away
    assert short_offsets_ok(_short("50 border guards", start=15, end=31), docs) is False  # one character late
    assert short_offsets_ok(_short("50 border guards", start=14, end=30), docs) is False
    assert short_offsets_ok(_short("50 border guards", doc="other.txt", start=14, end=31), docs) is False
    assert short_offsets_ok(_short("", start=5, end=2), docs) is False


def test_summarize_retrieval_only_rows_have_none_answer_fields():
    rows = [QAResult(r.item, r.rank, r.rels, None, None, None, None, r.timings, r.passage_words) for r in hand_results()]
    s = summarize(rows)
    for key in (*ANSWER_KEYS, "median_answer_words", "median_cited_words", "answer_p50_ms", *SHORT_KEYS):
        assert s[key] is None, key
    assert s["recall@10"] == pytest.approx(0.75)
    assert s["median_passage_words"] == 40.0


def test_summarize_when_every_answerable_question_abstains():
    rows = [r for r in hand_results() if r.abstained]
    s = summarize(rows)
    assert (s["answer_accuracy"], s["citation_support"], s["false_abstention"], s["abstention_recall"]) == (0.0, 0.0, 1.0, 1.0)


def test_recall_curve_and_accuracy_by_kind_hand_computed():
    res = hand_results()
    assert recall_curve(res) == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75])
    assert accuracy_by_kind(res) == {"date": 1.0, "entity": 0.0, "numeric": 0.5, "unanswerable": 0.5}


@pytest.mark.parametrize(
    "kind, rank, abstained, correct, passed",
    [
        ("unanswerable", None, True, False, True),
        ("unanswerable", None, False, False, False),
        ("numeric", 1, False, True, True),
        ("numeric", 1, False, False, False),  # retrieved but answered wrong
        ("numeric", 5, None, None, True),  # retrieval-only row: rank <= 5 passes
        ("numeric", 6, None, None, False),
        ("numeric", None, None, None, False),
    ],
)
def test_qaresult_passed(kind, rank, abstained, correct, passed):
    item = QAItem("x", "q?", "" if kind == "unanswerable" else "g", (), (), kind)
    assert QAResult(item, rank, [], None, abstained, correct, None).passed is passed


# ---------------------------------------------------------------------------------------------
# run_qa / run_eval / write_report on the real index


@pytest.fixture(scope="module")
def small_qa(tmp_path_factory) -> Path:
    lines = {json.loads(line)["id"]: line for line in QA_PATH.read_text(encoding="utf-8").splitlines() if line.strip()}
    path = tmp_path_factory.mktemp("qa") / "small.jsonl"
    path.write_text("\n".join(lines[i] for i in SMALL_IDS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_report(real_settings, assistant, small_qa):
    """Every row, LangChain included, once for the module (the LangChain row is the slow one)."""
    calls = []
    report = run_eval(real_settings, small_qa, include_langchain=True, assistant=assistant,
                      progress=lambda stage, done, total: calls.append((stage, done, total)))
    return report, calls


@pytest.mark.slow
def test_run_qa_scores_each_question_on_the_real_index(assistant, small_qa):
    items = load_qa(small_qa)
    res = run_qa(assistant, items, mode="hybrid")
    assert [r.item.id for r in res] == list(SMALL_IDS)
    for r in res:
        assert len(r.rels) == 10 and set(r.rels) <= {0, 1}
        assert r.rank == next((i + 1 for i, x in enumerate(r.rels) if x), None)
        assert {"total", "retrieve", "answer"} <= set(r.timings)
        assert len(r.passage_words) == assistant.settings.k
        if not r.item.answerable:  # no evidence: nothing is relevant, nothing can be correct
            assert r.rank is None and r.correct is False and r.cited_ok is False
        else:
            assert r.correct == (not r.abstained and answer_matches(r.answer, r.item.answer, r.item.aliases))
            assert len(r.citations) == len(r.cited_words)
    first = res[0]  # q001: Frontex's 50 border guards in Finland
    assert first.rank == 1 and first.correct is True and first.cited_ok is True


@pytest.mark.slow
def test_run_eval_has_every_row_with_the_documented_keys(small_report):
    report, _ = small_report
    assert list(report.rows) == ["hybrid", "dense", "lexical", "hybrid-rrf", "langchain-stock"]
    for name, row in report.rows.items():
        assert set(ROW_KEYS) <= set(row), name
        assert row["questions"] == len(SMALL_IDS) and row["answerable"] == 5
        for key in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
        assert row["recall@1"] <= row["recall@5"] <= row["recall@10"]
        assert row["median_passage_words"] > 0 and row["p50_ms"] > 0
        for key in ANSWER_KEYS:
            if name == "langchain-stock":
                assert row[key] is None, key
            else:
                assert isinstance(row[key], float) and 0.0 <= row[key] <= 1.0, (name, key)
    # a 1000-character LangChain passage is longer than ours
    assert report.rows["langchain-stock"]["median_passage_words"] > report.rows["hybrid"]["median_passage_words"]


@pytest.mark.slow
def test_run_eval_per_question_rows_agree_with_the_primary_row(small_report):
    report, _ = small_report
    qs = report.questions
    assert [q.id for q in qs] == list(SMALL_IDS)
    by_id = {it.id: it for it in load_qa(QA_PATH)}
    for q in qs:
        it = by_id[q.id]
        assert (q.question, q.gold, q.kind) == (it.question, it.answer, it.kind)
        if it.answerable:
            assert q.passed == (not q.abstained and answer_matches(q.answer, it.answer, it.aliases))
        else:
            assert q.passed == bool(q.abstained) and q.rank is None
    assert [q["id"] for q in report.to_json()["questions"]] == list(SMALL_IDS)
    hybrid = report.rows["hybrid"]
    ans = [q for q in qs if q.gold]
    una = [q for q in qs if not q.gold]
    assert hybrid["recall@5"] == pytest.approx(sum(q.rank is not None and q.rank <= 5 for q in ans) / len(ans))
    assert hybrid["answer_accuracy"] == pytest.approx(sum(q.passed for q in ans) / len(ans))
    assert hybrid["abstention_recall"] == pytest.approx(sum(bool(q.abstained) for q in una) / len(una))
    assert hybrid["false_abstention"] == pytest.approx(sum(bool(q.abstained) for q in ans) / len(ans))
    assert [QuestionRow.from_json(q) for q in report.to_json()["questions"]] == qs  # the JSON round-trips


@pytest.mark.slow
def test_run_eval_curves_kinds_config_and_progress(small_report, real_index):
    report, calls = small_report
    assert set(report.curves) == set(report.rows)
    for name, curve in report.curves.items():
        assert len(curve) == 10 and curve == sorted(curve), name
        assert curve[0] == report.rows[name]["recall@1"] and curve[4] == report.rows[name]["recall@5"]
    assert set(report.by_kind) == {"numeric", "entity", "multi-passage", "unanswerable"}
    assert report.config["chunks"] == real_index.manifest.counts.chunks
    assert report.model == "sentence-transformers/all-MiniLM-L6-v2"
    # each row reports its progress up to the last question
    for stage in report.rows:
        assert (stage, len(SMALL_IDS), len(SMALL_IDS)) in calls, stage


@pytest.mark.slow
def test_write_report_writes_json_markdown_and_two_pngs(small_report, tmp_path):
    report, _ = small_report
    paths = write_report(report, tmp_path / "reports")
    assert set(paths) == {"json", "md", "recall_png", "kinds_png"}
    assert paths["json"] == tmp_path / "reports" / "latest.json" and paths["md"] == tmp_path / "reports" / "latest.md"

    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["rows"] == report.rows and list(data["rows"]) == list(report.rows)
    assert data["rows"]["langchain-stock"]["answer_accuracy"] is None
    assert [q["id"] for q in data["questions"]] == list(SMALL_IDS)
    assert {"dataset", "model", "created", "config", "curves", "by_kind"} <= set(data)

    for key in ("recall_png", "kinds_png"):
        png = paths[key].read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000, key

    md = paths["md"].read_text(encoding="utf-8")
    assert ("| row | R@1 | R@5 | R@10 | MRR@10 | nDCG@10 | acc | cited | abst | abst-near | false-abst | sEM | sF1 | sFact "
            "| words | p50 ms |") in md  # abst-near: the small set's unanswerable items are near-misses
    for name in report.rows:
        assert f"\n| {name} | " in md, name
    lc_line = next(line for line in md.splitlines() if line.startswith("| langchain-stock | "))
    assert lc_line.count("—") == 8  # acc, cited, abst, abst-near, false-abst, sEM, sF1, sFact
    assert f"![recall_png]({paths['recall_png'].name})" in md and f"![kinds_png]({paths['kinds_png'].name})" in md
    failed = sum(not q.passed for q in report.questions)
    assert f"## Questions ({failed} of {len(SMALL_IDS)} failed)" in md
    assert "| id | kind | question | gold | our answer | rank | pass |" in md
    for q in report.questions:
        line = next(line for line in md.splitlines() if line.startswith(f"| {q.id} | "))
        assert line.endswith("| pass |" if q.passed else "| FAIL |"), line


@pytest.mark.slow
def test_format_table_lists_every_row(small_report):
    report, _ = small_report
    lines = format_table(report).splitlines()
    assert lines[0].startswith(str(report.dataset))
    assert lines[1].split() == ["row", "R@1", "R@5", "R@10", "MRR@10", "nDCG@10", "acc", "cited", "abst", "abst-near",
                                "false-abst", "sEM", "sF1", "sFact", "words", "p50", "ms"]
    names = [line.split()[0] for line in lines[2:]]
    assert names == list(report.rows)
    hybrid = lines[2].split()
    assert hybrid[1] == f"{report.rows['hybrid']['recall@1']:.3f}"
    assert lines[-1].split()[6:14] == ["—"] * 8  # langchain-stock: acc, cited, abst, abst-near, false-abst, sEM, sF1, sFact


# ---------------------------------------------------------------------------------------------
# Regression guard (issue 3, item 7)


@pytest.mark.slow
def test_regression_guard_hybrid_on_the_curated_set(real_settings, assistant):
    # Floors set a little under the values measured on 2026-12-06 with the third reader and the typed
    # cues (default 40/120/20-word passages, the reader on): R@1 0.888, R@5 0.980, accuracy 0.919,
    # citation support 0.964, false abstention 0.010, abstention recall 0.622 (off-topic 1.000),
    # short-answer F1 0.827, short answer holds the fact 0.891 (two thirds of these questions trained
    # the reader). With the two-seed soup and quotes that keep their short answer: accuracy 0.929,
    # citation support 0.954, abstention recall 0.595, short F1 0.822, short fact 0.882. With the year,
    # count and day cues and the country search terms: R@1 0.898, accuracy 0.934, false abstention 0.005,
    # abstention recall 0.838 (out of corpus 1.000, near-miss 0.714), short F1 0.827, short fact 0.891.
    # With dates from headings, the signature and acronyms (eighth session): R@1 0.898, accuracy 0.949,
    # citation support 0.964, false abstention 0.000, short F1 0.841, short fact 0.918. With the legal-step,
    # name, numbered-name, ordinal, tense and vague-count cues (ninth session): abstention recall 0.919
    # (near-miss 0.857), false abstention 0.010, the rest unchanged.
    report = run_eval(real_settings, QA_PATH, rows=("hybrid",), include_langchain=False, assistant=assistant)
    assert list(report.rows) == ["hybrid"]  # no LangChain row when include_langchain=False
    row = report.rows["hybrid"]
    assert row["questions"] == len(load_qa(QA_PATH))
    measured = {k: round(row[k], 3) for k in ("recall@1", "recall@5", "answer_accuracy", "citation_support", "false_abstention")}
    assert row["recall@1"] >= 0.85, measured
    assert row["recall@5"] >= 0.97, measured
    assert row["answer_accuracy"] >= 0.93, measured
    assert row["citation_support"] >= 0.93, measured
    assert row["false_abstention"] <= 0.02, measured
    assert row["abstention_off-topic"] >= 0.9 and row["abstention_recall"] >= 0.88, row
    assert row["abstention_out-of-corpus"] >= 0.85 and row["abstention_near-miss"] >= 0.8, row
    assert row["short_f1"] >= 0.81 and row["short_fact"] >= 0.88 and row["short_offsets_ok"] == 1.0, row
