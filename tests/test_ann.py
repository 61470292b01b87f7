"""Stage 4d: the vector index chosen by size (exact, then HNSW), its recall against exact search, and
the manifest that records it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from benchmarks.scale import synthetic_vectors
from conftest import FINLAND_Q
from rag import ann
from rag.errors import IndexCorrupt
from rag.index import build_index, load_index
from rag.retrieve import dense_search


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found.tolist(), truth.tolist())]))


@pytest.fixture(scope="module")
def clustered(big_index):
    """20k passage-like vectors and 200 queries (see benchmarks.scale), and the exact top 10 of each query."""
    x, q = synthetic_vectors(20_000, 200, seed=3)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, truth = exact.search(q, 10)
    return x, q, truth


@pytest.fixture(scope="module")
def hnsw(clustered):
    x, _, _ = clustered
    return ann.build(x, ann.choose(len(x), exact_max=1_000))


# ---------------------------------------------------------------------------------------------
# Choice by size


@pytest.mark.parametrize(
    "n, sentences, kind",
    [(1, 0, ann.FLAT), (ann.EXACT_MAX, 0, ann.FLAT), (ann.EXACT_MAX + 1, 0, ann.HNSW),
     (ann.EXACT_MAX // 4, ann.EXACT_MAX - ann.EXACT_MAX // 4, ann.FLAT), (ann.EXACT_MAX // 4, ann.EXACT_MAX, ann.HNSW)],
)
def test_index_type_is_chosen_by_the_vectors_a_query_would_scan(n, sentences, kind):
    """Passages and sentences both count: an exact index also scans every sentence."""
    assert ann.choose(n, sentences)["type"] == kind


def test_hnsw_choice_records_its_parameters():
    spec = ann.choose(11, exact_max=10)
    assert spec == {
        "type": "IndexHNSWFlat", "metric": "inner_product", "M": ann.HNSW_M,
        "efConstruction": ann.HNSW_EF_CONSTRUCTION, "efSearch": ann.HNSW_EF_SEARCH, "exact_max": 10,
    }


def test_unknown_index_type_is_refused():
    with pytest.raises(ValueError, match="unknown vector index type 'IVF'; expected one of: IndexFlatIP, IndexHNSWFlat"):
        ann.build(np.eye(4, dtype=np.float32), {"type": "IVF"})


# ---------------------------------------------------------------------------------------------
# Recall against exact search


def test_hnsw_recall_at_10_against_exact_search_is_at_least_095(clustered, hnsw):
    _, q, truth = clustered
    assert isinstance(hnsw, faiss.IndexHNSWFlat) and hnsw.hnsw.efSearch == ann.HNSW_EF_SEARCH
    _, found = hnsw.search(q, 10)
    assert recall_at_10(found, truth) >= 0.95


def test_hnsw_recall_is_higher_when_retrieval_asks_for_100_candidates(clustered, hnsw):
    _, q, truth = clustered
    _, top10 = hnsw.search(q, 10)
    _, top100 = hnsw.search(q, 100)  # dense_search asks for 2 x pool
    assert recall_at_10(top100, truth) >= max(0.98, recall_at_10(top10, truth))


def test_hnsw_keeps_the_exact_vectors_and_scores(clustered, hnsw):
    x, q, _ = clustered
    np.testing.assert_array_equal(hnsw.reconstruct(123), x[123])
    d, i = hnsw.search(q[:5], 10)
    np.testing.assert_allclose(d, np.einsum("qkd,qd->qk", x[i], q[:5]), atol=1e-5)  # exact cosines of what it found


def test_a_smaller_beam_loses_recall(clustered, hnsw):
    """The recall test above can fail: a tiny efSearch on the same graph falls short."""
    _, q, truth = clustered
    small = faiss.SearchParametersHNSW(efSearch=1)
    _, found = hnsw.search(q, 10, params=small)
    assert recall_at_10(found, truth) < 0.95


def test_built_index_round_trips_through_faiss_files(tmp_path, clustered, hnsw):
    _, q, _ = clustered
    path = tmp_path / "chunks.faiss"
    faiss.write_index(hnsw, str(path))
    back = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    ann.configure(back, ann.choose(back.ntotal, exact_max=1_000))
    assert type(back) is type(hnsw) and back.ntotal == hnsw.ntotal and back.hnsw.efSearch == ann.HNSW_EF_SEARCH
    d0, i0 = hnsw.search(q[:20], 10)
    d1, i1 = back.search(q[:20], 10)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)


def test_configure_refuses_an_index_of_another_type():
    flat = ann.build(np.eye(4, dtype=np.float32), {"type": ann.FLAT})
    with pytest.raises(ValueError, match="holds a IndexFlatIP, the manifest says IndexHNSWFlat"):
        ann.configure(flat, ann.choose(10, exact_max=1))


# ---------------------------------------------------------------------------------------------
# In the index folder: recorded in the manifest, honoured at load


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(ann, "EXACT_MAX", 2)


def test_index_past_the_threshold_is_hnsw_recorded_and_honoured_at_load(tiny_copy, small_threshold):
    result = build_index(tiny_copy, force=True)  # 3 passages and 7 sentences > 2
    spec = result.manifest.faiss
    assert spec["type"] == "IndexHNSWFlat" and spec["exact_max"] == 2 and spec["efSearch"] == ann.HNSW_EF_SEARCH
    data = load_index(tiny_copy)
    assert isinstance(data.vectors, faiss.IndexHNSWFlat) and not ann.is_exact(data.vectors)
    assert data.vectors.hnsw.efSearch == ann.HNSW_EF_SEARCH
    # the manifest's query parameter is what the loaded index uses
    path = Path(tiny_copy.index_dir) / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["faiss"]["efSearch"] = 7
    path.write_text(json.dumps(m), encoding="utf-8")
    assert load_index(tiny_copy).vectors.hnsw.efSearch == 7


def test_small_index_stays_exact(tiny_copy):
    result = build_index(tiny_copy, force=True)
    assert result.manifest.faiss == {"type": "IndexFlatIP", "metric": "inner_product"}
    assert ann.is_exact(load_index(tiny_copy).vectors)


def test_manifest_naming_another_index_type_is_corrupt(tiny_copy):
    path = Path(tiny_copy.index_dir) / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["faiss"] = ann.choose(10, exact_max=1)  # says HNSW; the file holds a flat index
    path.write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="manifest says IndexHNSWFlat"):
        load_index(tiny_copy)


def test_hnsw_passage_index_gives_the_exact_ranking_on_the_real_corpus(assistant):
    """Dense search through HNSW (candidate passages' sentences only) equals the same scoring over an
    exact index: on a few hundred passages the graph finds every candidate."""
    data = assistant.data
    vecs = data.vectors.reconstruct_n(0, data.vectors.ntotal)
    graph = dataclasses.replace(data, vectors=ann.build(vecs, ann.choose(len(vecs), exact_max=1)))
    for question in (FINLAND_Q, "Which countries have visa policy alignment issues?", "migrant smuggling"):
        q = assistant.embedder.embed([question])[0]
        got = dense_search(graph, q, 10)
        want = dense_search(data, q, 10, all_sentences=False)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    top = dense_search(graph, assistant.embedder.embed([FINLAND_Q])[0], 1)[0][0]
    assert "50 European border guards" in data.chunks[top].text


def test_search_widens_the_beam_to_the_number_of_results_asked_for(clustered, hnsw):
    _, q, _ = clustered
    exact = faiss.IndexFlatIP(q.shape[1])
    exact.add(hnsw.reconstruct_n(0, hnsw.ntotal))
    n = 1_000
    assert n > ann.HNSW_EF_SEARCH
    _, truth = exact.search(q, n)

    def recall_at_n(found):
        return float(np.mean([len(set(f) & set(t)) / n for f, t in zip(found.tolist(), truth.tolist())]))

    _, plain = hnsw.search(q, n)  # beam efSearch < n: the tail is poor
    _, wide = ann.search(hnsw, q, n)
    assert recall_at_n(wide) >= 0.9 > 0.8 > recall_at_n(plain)  # measured: 0.95 and 0.70
    assert hnsw.hnsw.efSearch == ann.HNSW_EF_SEARCH  # per call, not a lasting change
    np.testing.assert_array_equal(ann.search(hnsw, q[:3], 10)[1], hnsw.search(q[:3], 10)[1])
