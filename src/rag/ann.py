"""Stage 4d: the passage vector index, chosen by corpus size.

Small corpora get an exact index (``IndexFlatIP``: every passage scored). Past ``EXACT_MAX``
passages an exhaustive scan stops being "fast enough" and an approximate graph index takes over
(``IndexHNSWFlat``, inner product). Both keep the exact float vectors, so ``reconstruct(i)`` still
returns the stored passage vector (the answer step and re-scoring rely on it).

The choice and its parameters are recorded in the index manifest (key ``"faiss"``) and honoured at
load (``efSearch`` is not stored by FAISS's own file format, so :func:`configure` sets it again).
Measurements behind the numbers below: ``python -m rag.scale`` and BENCHMARKS.md ("Scale").
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: Largest passage count kept on an exact index. Above it, HNSW: on this 2-core machine an exact
#: scan of 100k passages takes tens of ms while HNSW answers in well under 1 ms at recall@10 >= 0.95.
EXACT_MAX = 50_000
#: HNSW graph degree and build-time beam: M=32 is FAISS's usual default for 384-d text vectors.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Query-time beam. Retrieval asks for 2 x max(k, pool) >= 100 candidates, and FAISS searches with
#: max(efSearch, k), so the effective beam is at least 100 there.
HNSW_EF_SEARCH = 64

FLAT = "IndexFlatIP"
HNSW = "IndexHNSWFlat"
TYPES = (FLAT, HNSW)


def choose(n: int, exact_max: int | None = None) -> dict[str, Any]:
    """The manifest's ``"faiss"`` entry for ``n`` passages: exact up to ``exact_max``, HNSW above."""
    exact_max = EXACT_MAX if exact_max is None else exact_max
    if n <= exact_max:
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


def is_exact(index: Any) -> bool:
    """True for an exhaustive (flat) FAISS index."""
    import faiss

    return isinstance(index, faiss.IndexFlat)
