"""The synthetic scale benchmark (benchmarks.scale) at a tiny size: every index family is measured,
the numbers are sane, the data looks like what it claims to be."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag import ann
from benchmarks.scale import (DEFAULT_INDEXES, ROW_KEYS, format_scale, main, run_scale, synthetic_texts,
                              synthetic_vectors)


@pytest.fixture(scope="module")
def rows(big_index):
    calls = []
    out = run_scale([2_000], n_queries=20, progress=lambda *a: calls.append(a))
    assert calls and all(isinstance(s, str) and isinstance(d, int) and isinstance(t, int) for s, d, t in calls)
    return out


def test_every_index_family_and_the_lexical_index_are_measured(rows):
    labels = {r["index"] for r in rows}
    assert labels == {"flat", "hnsw16", "hnsw32", "ivf", "ivfpq48+refine", "bm25 (rag.lexical)"}
    assert len(DEFAULT_INDEXES) == 5
    assert all(r["n"] == 2_000 for r in rows)


def test_vector_rows_have_sane_numbers(rows):
    for r in (r for r in rows if r["data"] == "manifold"):
        assert r["build_s"] >= 0 and r["index_mb"] > 2_000 * 384 * 4 / 2**20 * 0.9  # at least the vectors
        assert 0 < r["query_p50_ms"] <= r["query_p99_ms"]
        assert 0 <= r["recall_at_10"] <= r["recall_at_10_k100"] + 1e-9 <= 1 + 1e-9
        json.loads(r["params"])
    flat = next(r for r in rows if r["index"] == "flat")
    assert flat["recall_at_10"] == 1.0  # exact search against itself


def test_lexical_row_has_latency_and_no_recall(rows):
    (lex,) = [r for r in rows if r["index"].startswith("bm25")]
    assert lex["data"] == "zipf" and lex["build_s"] > 0 and 0 < lex["query_p50_ms"] <= lex["query_p99_ms"]
    assert lex["recall_at_10"] is None and lex["recall_at_10_k100"] is None


def test_the_configuration_rag_picks_is_marked(rows):
    chosen = [r for r in rows if r["chosen"] and r["data"] == "manifold"]
    assert [r["index"] for r in chosen] == ["flat"]  # 2,000 passages: exact
    assert ann.choose(2_000)["type"] == ann.FLAT


def test_markdown_table_has_a_line_per_row(rows):
    table = format_scale(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| passages | index |") and len(lines) == 2 + len(rows)
    assert "| 2,000 | flat * |" in table


def test_synthetic_vectors_are_unit_length_and_passage_like():
    x, q = synthetic_vectors(3_000, 50, seed=1)
    assert x.shape == (3_000, 384) and q.shape == (50, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sims = x[:200] @ x.T
    sims[np.arange(200), np.arange(200)] = -1
    nearest = np.sort(sims, axis=1)[:, -1]
    assert 0.5 < np.median(nearest) < 0.9  # neighbours as close as real MiniLM passages (SciFact: 0.68)
    assert 0.05 < float(np.mean(sims[sims > -1])) < 0.25  # random pairs mildly similar (SciFact: 0.13)
    u, _ = synthetic_vectors(3_000, 50, seed=1, data="uniform")
    su = u[:200] @ u.T
    su[np.arange(200), np.arange(200)] = -1
    assert np.median(np.sort(su, axis=1)[:, -1]) < 0.3  # uniform: no structure at all


def test_synthetic_vectors_are_reproducible():
    a, _ = synthetic_vectors(500, 5, seed=7)
    b, _ = synthetic_vectors(500, 5, seed=7)
    np.testing.assert_array_equal(a, b)


def test_synthetic_texts_are_zipfian():
    texts, queries = synthetic_texts(2_000, 30)
    assert len(texts) == 2_000 and len(queries) == 30
    words = [w for t in texts for w in t.split()]
    assert 30 <= min(len(t.split()) for t in texts) and max(len(t.split()) for t in texts) <= 90
    counts = sorted(np.unique(words, return_counts=True)[1], reverse=True)
    assert counts[0] > 10 * counts[99]  # a few words are very common, most are rare
    assert all(3 <= len(q.split()) <= 7 for q in queries)


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": [10]}, "sizes must be >= 100"),
    ({"sizes": [1_000], "n_queries": 0}, "n_queries must be >= 1"),
    ({"sizes": [1_000], "indexes": ["annoy"]}, "unknown index kind 'annoy'"),
    ({"sizes": [1_000], "data": "gaussian"}, "unknown synthetic data 'gaussian'"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_scale(**kwargs)


def test_command_line_prints_json(capsys):
    assert main(["500", "--queries", "5", "--indexes", "flat,hnsw16", "--no-lexical", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["index"] for r in rows} == {"flat", "hnsw16"} and all(tuple(r) == ROW_KEYS for r in rows)
