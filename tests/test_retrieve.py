"""Stage 5: retrieval. Pure fusion functions on hand-made rankings; dense, lexical and hybrid search on
the real index, checked against brute-force oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import FINLAND_Q
from rag.chunk import Chunk
from rag.lexical import tokenize
from rag import retrieve
from rag.retrieve import Hit, dense_search, fuse, merge_overlapping, rrf, search, weighted

MODES = ["dense", "lexical", "hybrid"]


# ---------------------------------------------------------------------------------------------
# Fusion: exact values on hand-made rankings


def test_rrf_sums_reciprocal_ranks():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 5.0), (1, 4.0)]
    got = rrf([dense, lexical], k=10)
    assert [i for i, _ in got] == [1, 3, 2]
    assert [s for _, s in got] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])


def test_rrf_constant_and_cut_off():
    got = rrf([[(7, 1.0), (8, 0.5)], [(8, 3.0)]], k=1, c=0.0)
    assert got == [(8, pytest.approx(1 / 2 + 1 / 1))]


def test_rrf_breaks_ties_by_smaller_index():
    assert rrf([[(5, 1.0)], [(2, 1.0)]], k=2) == [(2, pytest.approx(1 / 61)), (5, pytest.approx(1 / 61))]


def test_weighted_combines_cosine_and_max_normalised_bm25():
    dense = [(1, 0.8), (2, 0.5)]
    lexical = [(2, 10.0), (3, 5.0)]
    got = weighted(dense, lexical, k=10, alpha=0.6)
    # id 3 is outside the dense list: it gets the lowest seen cosine (0.5)
    assert got == [
        (2, pytest.approx(0.6 * 0.5 + 0.4 * 1.0)),
        (3, pytest.approx(0.6 * 0.5 + 0.4 * 0.5)),
        (1, pytest.approx(0.6 * 0.8 + 0.4 * 0.0)),
    ]


def test_weighted_without_lexical_evidence_keeps_the_dense_order():
    got = weighted([(4, 0.9), (1, 0.3)], [], k=5, alpha=0.6)
    assert got == [(4, pytest.approx(0.54)), (1, pytest.approx(0.18))]


def test_weighted_with_only_zero_bm25_scores_does_not_divide_by_zero():
    got = weighted([(1, 0.5)], [(2, 0.0)], k=5, alpha=0.5)
    assert got == [(1, pytest.approx(0.25))]  # no lexical evidence at all: the dense ranking alone


@pytest.mark.parametrize("method, expected", [("rrf", [1, 3, 2]), ("weighted", [3, 1, 2])])
def test_fuse_dispatches_on_method(method, expected):
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 5.0), (1, 1.0)]
    assert [i for i, _ in fuse(dense, lexical, 3, method)] == expected


def test_fuse_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="unknown fusion 'max'; expected one of: rrf, weighted"):
        fuse([], [], 3, "max")


ranking = st.lists(st.tuples(st.integers(0, 30), st.floats(0, 10, allow_nan=False)), max_size=25, unique_by=lambda t: t[0])


@settings(max_examples=200, deadline=None)
@given(ranking, ranking, st.integers(1, 40), st.sampled_from(["rrf", "weighted"]))
def test_fusion_never_returns_duplicates(dense, lexical, k, method):
    got = fuse(dense, lexical, k, method)
    ids = [i for i, _ in got]
    assert len(ids) == len(set(ids))
    # every candidate with evidence is kept (a BM25 score of 0 is no lexical evidence for weighted fusion)
    lexical_evidence = {i for i, s in lexical if s > 0 or method == "rrf"}
    assert len(ids) == min(k, len({i for i, _ in dense} | lexical_evidence))
    assert set(ids) <= {i for i, _ in dense} | {i for i, _ in lexical}
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


# ---------------------------------------------------------------------------------------------
# merge_overlapping on synthetic hits


def _hit(doc_id: str, start: int, end: int, score: float, text: str = "") -> Hit:
    chunk = Chunk(f"{doc_id}#{start}", doc_id, "T", 1, 1, (), start, end, text, ((start, end),))
    return Hit(chunk, score)


DOC = "0123456789abcdefghijklmnopqrstuvwxyz"


def test_overlapping_hits_merge_into_the_better_ranked_one():
    hits = [_hit("a", 10, 20, 0.9), _hit("b", 0, 5, 0.8), _hit("a", 15, 30, 0.7), _hit("a", 30, 35, 0.6)]
    got = merge_overlapping(hits, lambda doc_id: DOC)
    assert [(h.chunk.doc_id, h.chunk.start, h.chunk.end, h.score) for h in got] == [
        ("a", 10, 30, 0.9),  # grew to the union, kept its place and score
        ("b", 0, 5, 0.8),
        ("a", 30, 35, 0.6),  # touching, not overlapping: kept apart
    ]
    assert got[0].chunk.text == DOC[10:30]
    assert got[0].chunk.sentences == ((10, 20), (15, 30))


def test_a_hit_inside_a_better_one_disappears():
    hits = [_hit("a", 0, 30, 0.9, "whole"), _hit("a", 5, 10, 0.5, "part")]
    got = merge_overlapping(hits, lambda doc_id: DOC)
    assert [(h.chunk.start, h.chunk.end, h.chunk.text) for h in got] == [(0, 30, "whole")]


def test_same_span_in_another_document_is_not_merged():
    hits = [_hit("a", 0, 10, 0.9), _hit("b", 0, 10, 0.8)]
    assert merge_overlapping(hits) == hits


# ---------------------------------------------------------------------------------------------
# Search on the real index


@pytest.mark.parametrize("mode", MODES)
def test_finland_question_finds_the_border_guards_passage_first(assistant, mode):
    hits = assistant.search(FINLAND_Q, k=5, mode=mode)
    assert 1 <= len(hits) <= 5
    assert "50 European border guards" in hits[0].chunk.text
    assert hits[0].chunk.page == 1


@pytest.mark.parametrize("mode", MODES)
def test_search_is_deterministic(assistant, mode):
    a = assistant.search(FINLAND_Q, k=8, mode=mode)
    b = assistant.search(FINLAND_Q, k=8, mode=mode)
    assert [(h.index, h.score) for h in a] == [(h.index, h.score) for h in b]


@pytest.mark.parametrize("mode", MODES)
def test_hits_are_ranked_unique_and_reported_with_both_scores(assistant, mode):
    hits = assistant.search("Frontex status agreements with partner countries", k=10, mode=mode)
    assert len(hits) == 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.index for h in hits}) == 10
    for h in hits:
        assert assistant.data.chunks[h.index].chunk_id == h.chunk.chunk_id
    if mode != "lexical":
        assert all(h.dense is not None for h in hits)
    if mode == "dense":
        assert all(h.score == pytest.approx(h.dense) for h in hits)
    if mode == "lexical":
        assert all(h.score == pytest.approx(h.lexical) and h.lexical > 0 for h in hits)


def test_k_larger_than_the_index_returns_every_chunk_once(assistant):
    n = len(assistant.data.chunks)
    hits = assistant.search("migration", k=n + 50, mode="dense")
    assert sorted(h.index for h in hits) == list(range(n))


def test_lexical_search_without_matching_words_returns_nothing(assistant):
    assert assistant.search("zzyzx qwxv", k=5, mode="lexical") == []


def test_unknown_mode_is_refused(assistant):
    with pytest.raises(ValueError, match="unknown retrieval mode 'hybird'; expected one of: hybrid, dense, lexical"):
        search(assistant.data, None, ["x"], 5, mode="hybird")


class RefusingEmbedder:
    model_id, dim = "refusing", 384

    def embed(self, texts):
        raise AssertionError("lexical search must not embed the question")


def test_lexical_search_needs_no_model(real_settings, real_index):
    from rag.pipeline import Assistant

    a = Assistant.load(real_settings, embedder=RefusingEmbedder())
    hits = a.search(FINLAND_Q, k=3, mode="lexical")
    assert "50 European border guards" in hits[0].chunk.text
    assert all(h.dense is None for h in hits)


def exhaustive_dense(data, q: np.ndarray) -> np.ndarray:
    """Brute-force dense score of every passage, from the stored vectors: the passage cosine,
    blended with the passage's best sentence cosine when the library does so (``PASSAGE_WEIGHT``)."""
    passages = data.vectors.reconstruct_n(0, data.vectors.ntotal) @ q
    sentences = data.sentence_vecs @ q
    best = np.array([sentences[data.sentence_chunk == i].max() for i in range(len(passages))])
    w = getattr(retrieve, "PASSAGE_WEIGHT", 1.0)
    return w * passages + (1 - w) * best


QUESTIONS = [
    FINLAND_Q,
    "How many interceptions did the Tunisian Coast Guard carry out?",
    "What is the Global Alliance to counter migrant smuggling?",
    "Which countries have visa policy alignment issues?",
]


@pytest.mark.parametrize("question", QUESTIONS)
def test_dense_search_equals_exhaustive_numpy_scoring(assistant, question):
    data = assistant.data
    q = assistant.embedder.embed([question])[0]
    scores = exhaustive_dense(data, q)
    order = np.argsort(-scores, kind="stable")[:10]
    got = dense_search(data, q, 10)
    assert [i for i, _ in got] == order.tolist()
    assert [s for _, s in got] == pytest.approx(scores[order].tolist(), abs=1e-5)


@pytest.mark.parametrize("question", QUESTIONS)
def test_hybrid_search_equals_exhaustive_weighted_scoring(assistant, question):
    data = assistant.data
    n = len(data.chunks)
    q = assistant.embedder.embed([question])[0]
    tokens = tokenize(question)
    cos = exhaustive_dense(data, q)
    bm25 = data.lexical.scores(tokens)
    oracle = 0.6 * cos + 0.4 * (bm25 / bm25.max())
    expected = sorted(range(n), key=lambda i: (-oracle[i], i))[:10]
    hits = search(data, q, tokens, 10, mode="hybrid", pool=n)  # pool = everything: no cut-off effects
    assert [h.index for h in hits] == expected
    assert [h.score for h in hits] == pytest.approx([oracle[i] for i in expected], abs=1e-5)


@pytest.mark.parametrize("question", QUESTIONS)
def test_lexical_search_equals_exhaustive_bm25(assistant, question):
    data = assistant.data
    tokens = tokenize(question)
    bm25 = data.lexical.scores(tokens)
    expected = [i for i in sorted(range(len(bm25)), key=lambda i: (-bm25[i], i)) if bm25[i] > 0][:10]
    assert [i for i, _ in data.lexical.search(tokens, 10)] == expected


def test_real_index_chunks_never_overlap_so_search_merges_nothing(assistant):
    chunks = assistant.data.chunks
    hits = search(assistant.data, assistant.embedder.embed(["migration"])[0], tokenize("migration"), len(chunks), "dense")
    assert len(hits) == len(chunks)
    assert all(h.chunk == chunks[h.index] for h in hits)


def test_tokenize_folds_accents_repairs_ocr_and_drops_stop_words():
    assert tokenize("Türkiye and the Tiirkiye border; NA TO's guards") == ["turkiy", "turkiy", "border", "nato", "s", "guard"]
    assert tokenize("Smuqqling of migrants, 50 European border guards") == ["smuggl", "migrant", "50", "european", "border", "guard"]
    assert tokenize("the of and") == []


def loop_dense_search(data, q: np.ndarray, k: int, all_sentences: bool = True) -> list[tuple[int, float]]:
    """The per-passage Python loop the vectorised :func:`dense_search` replaced: the reference."""
    n = data.vectors.ntotal
    k = min(k, n)
    _, ids = data.vectors.search(q.reshape(1, -1), min(n, 2 * k))
    sent_scores = data.sentence_vecs @ q
    cand = {int(i) for i in ids[0] if i >= 0}
    if all_sentences:
        top_sent = np.argpartition(-sent_scores, 2 * k - 1)[: 2 * k]
        cand |= {int(data.sentence_chunk[j]) for j in top_sent}
    scored = []
    for i in sorted(cand):
        p = float(data.vectors.reconstruct(i) @ q)
        own = sent_scores[data.sentence_chunk == i]
        best = float(own.max()) if len(own) else p
        scored.append((i, retrieve.PASSAGE_WEIGHT * p + (1 - retrieve.PASSAGE_WEIGHT) * best))
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:k]


@pytest.fixture(scope="module")
def qa_vectors(assistant):
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "eval" / "qa.jsonl"
    questions = [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return assistant.embedder.embed(questions)


@pytest.mark.parametrize("k", [1, 5, 50])
def test_vectorised_dense_search_equals_the_per_passage_loop_on_every_eval_question(assistant, qa_vectors, k):
    assert len(qa_vectors) >= 200
    for q in qa_vectors:
        got = dense_search(assistant.data, q, k)
        want = loop_dense_search(assistant.data, q, k)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)


def test_dense_search_without_the_sentence_scan_scores_the_candidates_sentences(assistant, qa_vectors):
    """The large-corpus path (approximate index): only the sentences of the passage candidates count."""
    changed = 0
    for q in qa_vectors[:60]:
        got = dense_search(assistant.data, q, 10, all_sentences=False)
        want = loop_dense_search(assistant.data, q, 10, all_sentences=False)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
        changed += got != dense_search(assistant.data, q, 10)
    assert changed > 0  # the sentence scan does add candidates: the two paths are really different
