"""Stage 4d: the passage vector index, chosen by corpus size.

Small corpora get an exact index (``IndexFlatIP``: every passage scored). Past ``EXACT_MAX``
vectors (passages and sentences) an exhaustive scan stops being "fast enough" and an approximate
graph index takes over (``IndexHNSWFlat``, inner product). Both keep the exact float vectors, so
``reconstruct(i)`` still returns the stored passage vector (the answer step and re-scoring rely on it).

Why HNSW and not IVF: ``python -m benchmarks.scale`` at 1M passage-like vectors puts them level (1.5 ms
p50 at recall@10 0.96; IVF builds 7x faster), but on SciFact's real MiniLM vectors IVF needs far
more probes for the same recall, HNSW needs no training, and IVF-PQ saves nothing while the exact
vectors are kept anyway.

The choice and its parameters are recorded in the index manifest (key ``"faiss"``) and honoured at
load (``efSearch`` is not stored by FAISS's own file format, so :func:`configure` sets it again).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: Largest number of vectors a query may scan exactly: passages plus sentences (dense search also
#: scores every sentence on an exact index). Past it, HNSW, and only the sentences of the candidate
#: passages are scored. An exact scan costs ~0.065 ms per 1,000 vectors on this 2-core machine
#: (10k: 0.27 ms, 100k: 6.5 ms p50), so 50k keeps it near 3-4 ms; HNSW answers a 100k index in
#: 0.8 ms at recall@10 0.997. Scoring only the candidates' sentences left eval/qa.jsonl and SciFact
#: unchanged (hybrid Recall@1 0.888, Recall@5 0.980; SciFact nDCG@10 0.738), measured with both.
EXACT_MAX = 50_000
#: HNSW graph degree and build-time beam: M=32 is FAISS's usual default for 384-d text vectors.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Query-time beam. It alone sets recall: asking FAISS (1.15) for more results does not widen it,
#: so :func:`search` widens it to the number of results asked for when that is larger. Measured
#: with ``python -m benchmarks.scale``: recall@10 0.96 at 1M passages (1.5 ms p50), 0.99+ at 100k; 128
#: fell to 0.93 at 1M.
HNSW_EF_SEARCH = 256

FLAT = "IndexFlatIP"
HNSW = "IndexHNSWFlat"
TYPES = (FLAT, HNSW)


def choose(n: int, n_sentences: int = 0, exact_max: int | None = None) -> dict[str, Any]:
    """The manifest's ``"faiss"`` entry for ``n`` passages of ``n_sentences`` sentences in all:
    exact while ``n + n_sentences <= exact_max`` (default :data:`EXACT_MAX`), HNSW above."""
    exact_max = EXACT_MAX if exact_max is None else exact_max
    if n + n_sentences <= exact_max:
        return {"type": FLAT, "metric": "inner_product"}
    return {
        "type": HNSW,
        "metric": "inner_product",
        "M": HNSW_M,
        "efConstruction": HNSW_EF_CONSTRUCTION,
        "efSearch": HNSW_EF_SEARCH,
        "exact_max": exact_max,
    }


def build(vecs: np.ndarray, spec: Mapping[str, Any]):
    """A FAISS index of ``spec``'s type over L2-normalised ``vecs`` (inner product = cosine)."""
    import faiss

    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    dim = int(vecs.shape[1])
    kind = spec.get("type")
    if kind == FLAT:
        index = faiss.IndexFlatIP(dim)
    elif kind == HNSW:
        index = faiss.IndexHNSWFlat(dim, int(spec["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(spec["efConstruction"])
    else:
        raise ValueError(f"unknown vector index type {kind!r}; expected one of: {', '.join(TYPES)}")
    index.add(vecs)
    configure(index, spec)
    return index


def configure(index, spec: Mapping[str, Any]) -> None:
    """Apply ``spec``'s query-time parameters; raise ValueError when ``index`` is not of its type."""
    kind = spec.get("type", FLAT)
    if type(index).__name__ != kind:
        raise ValueError(f"the vector file holds a {type(index).__name__}, the manifest says {kind}")
    if kind == HNSW:
        index.hnsw.efSearch = int(spec["efSearch"])


def search(index, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(q, n)`` with an HNSW beam of at least ``n`` (the results past the beam would
    otherwise be whatever the graph walk happened to visit)."""
    import faiss

    if isinstance(index, faiss.IndexHNSW) and n > index.hnsw.efSearch:
        return index.search(q, n, params=faiss.SearchParametersHNSW(efSearch=n))
    return index.search(q, n)


def is_exact(index: Any) -> bool:
    """True for an exhaustive (flat) FAISS index."""
    import faiss

    return isinstance(index, faiss.IndexFlat)
