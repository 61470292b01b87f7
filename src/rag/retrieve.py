"""Stage 5: retrieval. Dense (FAISS inner product), lexical (BM25) and hybrid (fused).

Fusion is a pure function (:func:`fuse`) so it can be measured and swapped; the default was chosen
on the eval set against reciprocal rank fusion (see ``eval/``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Collection, Sequence

import numpy as np

from .ann import is_exact, search as ann_search
from .chunk import Chunk
from .text import collapse_ws
from .index import IndexData
from .settings import FUSIONS, MODES


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # the score the ranking used (mode-specific; higher is better)
    dense: float | None = None  # cosine similarity of the question and the passage
    lexical: float | None = None  # BM25 score
    index: int = -1  # position of the chunk in the index


#: Dense score of a passage: this share from the passage vector, the rest from its best sentence.
#: Chosen on eval/qa.jsonl: dense Recall@5 0.90 -> 0.94, hybrid Recall@1 0.85 -> 0.86.
PASSAGE_WEIGHT = 0.7


def doc_mask(data: IndexData, docs: Collection[str]) -> np.ndarray:
    """Which passages belong to ``docs`` (document ids); an id the index does not hold is a
    :class:`~rag.errors.BadQuestion` naming it and some that it holds."""
    from .errors import BadQuestion

    unknown = sorted(set(docs) - set(data.docs))
    if unknown:
        held = sorted(data.docs)
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise BadQuestion(f"no document {unknown[0]!r} in the index (it holds: {shown})")
    wanted = set(docs)
    return np.fromiter((c.doc_id in wanted for c in data.chunks), dtype=bool, count=len(data.chunks))


def dense_search(data: IndexData, qvec: np.ndarray, k: int, all_sentences: bool | None = None,
                 allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Passages by ``PASSAGE_WEIGHT * cos(passage) + (1 - PASSAGE_WEIGHT) * max cos(sentence)``.

    Candidates are the top ``2k`` passages of the vector index and, when ``all_sentences`` (the
    default for an exact index), the passages of the top ``2k`` sentences of an exhaustive scan;
    both similarities are then computed exactly for every candidate, so with an exact index the
    result equals exhaustive scoring whenever the true top-k is among them. With an approximate
    index (large corpora) the sentence scan, O(sentences), is skipped: only the sentences of the
    candidate passages are scored (no loss measured on eval/qa.jsonl or SciFact: see
    :data:`rag.ann.EXACT_MAX`). With ``allowed`` (a passage mask: some documents only) every
    allowed passage is scored exactly."""
    n = data.vectors.ntotal
    k = min(k, n if allowed is None else int(allowed.sum()))
    if k <= 0:
        return []
    q = np.ascontiguousarray(qvec, dtype=np.float32).reshape(1, -1)
    sent_scores = None
    if allowed is not None:
        cand = np.flatnonzero(allowed).astype(np.int64)
        all_sentences = False
    else:
        _, ids = ann_search(data.vectors, q, min(n, 2 * k))
        cand = ids[0][ids[0] >= 0]
    if all_sentences is None:
        all_sentences = is_exact(data.vectors)
    if all_sentences:
        sent_scores = data.sentence_vecs @ q[0]
        m = min(len(sent_scores), 2 * k)
        if m:
            top_sent = np.argpartition(-sent_scores, m - 1)[:m]
            cand = np.concatenate([cand, data.sentence_chunk[top_sent]])
    cand = np.unique(cand).astype(np.int64)  # sorted, like the exhaustive oracle's tie order
    passage = data.vectors.reconstruct_batch(cand) @ q[0]
    best = best_sentence(data, cand, q[0], sent_scores, default=passage)
    score = PASSAGE_WEIGHT * passage.astype(np.float64) + (1 - PASSAGE_WEIGHT) * best.astype(np.float64)
    order = np.lexsort((cand, -score))[:k]  # score descending, then smaller index
    return [(int(cand[j]), float(score[j])) for j in order]


def best_sentence(
    data: IndexData, cand: np.ndarray, q: np.ndarray, sent_scores: np.ndarray | None, default: np.ndarray
) -> np.ndarray:
    """Best sentence cosine of each passage in ``cand`` (``default`` where a passage has no
    sentence). Uses ``sent_scores`` when given, else scores only the candidates' sentences."""
    n_sent = len(data.sentence_vecs) if sent_scores is None else len(sent_scores)
    first = data.sentence_first[cand]
    nxt = cand + 1
    end = np.where(nxt < len(data.sentence_first), data.sentence_first[np.minimum(nxt, len(data.sentence_first) - 1)], n_sent)
    cnt = (end - first).astype(np.int64)
    has = cnt > 0
    out = np.array(default, dtype=np.float32, copy=True)
    if not has.any():
        return out
    c, f = cnt[has], first[has]
    offsets = np.cumsum(c) - c
    rows = np.repeat(f - offsets, c) + np.arange(int(c.sum()))  # every sentence of every candidate
    if sent_scores is not None:
        vals = sent_scores[rows]
    else:  # einsum, not BLAS: a few thousand rows gain nothing from threads that must first wake up
        vals = np.einsum("ij,j->i", np.asarray(data.sentence_vecs[rows]), q)
    out[has] = np.maximum.reduceat(vals, offsets)
    return out


def rrf(rankings: Sequence[Sequence[tuple[int, float]]], k: int, c: float = 60.0) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: sum of 1 / (c + rank)."""
    acc: dict[int, float] = {}
    for ranking in rankings:
        for rank, (i, _) in enumerate(ranking, 1):
            acc[i] = acc.get(i, 0.0) + 1.0 / (c + rank)
    return sorted(acc.items(), key=lambda t: (-t[1], t[0]))[:k]


def weighted(
    dense: Sequence[tuple[int, float]], lexical: Sequence[tuple[int, float]], k: int, alpha: float = 0.6
) -> list[tuple[int, float]]:
    """Convex combination of the cosine and the max-normalised BM25 score."""
    d = dict(dense)
    top = max((s for _, s in lexical), default=0.0)
    lx = {i: s / top for i, s in lexical if s > 0}  # a BM25 score of 0 is no lexical evidence
    floor = min(d.values(), default=0.0)  # a passage outside the dense top-N gets the lowest seen cosine
    ids = set(d) | set(lx)
    acc = {i: alpha * d.get(i, floor) + (1 - alpha) * lx.get(i, 0.0) for i in ids}
    return sorted(acc.items(), key=lambda t: (-t[1], t[0]))[:k]


def fuse(dense: Sequence[tuple[int, float]], lexical: Sequence[tuple[int, float]], k: int, method: str = "weighted") -> list[tuple[int, float]]:
    if method == "rrf":
        return rrf([dense, lexical], k)
    if method == "weighted":
        return weighted(dense, lexical, k)
    raise ValueError(f"unknown fusion {method!r}; expected one of: {', '.join(FUSIONS)}")


def search(
    data: IndexData,
    qvec: np.ndarray | None,
    qtokens: list[str],
    k: int,
    mode: str = "hybrid",
    fusion: str = "weighted",
    pool: int = 50,
    docs: Collection[str] | None = None,
    engine: Any = None,
) -> list[Hit]:
    """Top-``k`` hits. ``qvec`` may be None for lexical mode (no model needed). ``docs`` limits the
    search to those documents (ids as in citations); None or empty: all. ``engine`` (``store =
    "postgres"``: a :class:`rag.engine.EngineSearch`) ranks in the search engine instead of the index
    folder's FAISS and BM25 files, by the same formulas."""
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; expected one of: {', '.join(MODES)}")
    if engine is not None:
        if docs:
            doc_mask(data, docs)  # the same error for an unknown document
        return merge_overlapping(engine.search(data, qvec, qtokens, k, mode, fusion, pool, docs),
                                 lambda d: data.docs[d].text)
    n = max(k, pool)
    allowed = doc_mask(data, docs) if docs else None
    dense = dense_search(data, qvec, n, allowed=allowed) if mode != "lexical" else []
    lexical = data.lexical.search(qtokens, n, allowed) if mode != "dense" else []
    if mode == "dense":
        ranked = dense[:k]
    elif mode == "lexical":
        ranked = lexical[:k]
    else:
        ranked = fuse(dense, lexical, k, fusion)
    dmap, lmap = dict(dense), dict(lexical)
    hits = []
    for i, s in ranked:
        dscore = dmap.get(i)
        if dscore is None and qvec is not None:
            dscore = float(data.vectors.reconstruct(i) @ qvec)  # passage cosine only
        hits.append(Hit(data.chunks[i], float(s), dscore, lmap.get(i), i))
    return merge_overlapping(hits, lambda d: data.docs[d].text)


def merge_overlapping(hits: Sequence[Hit], doc_text=None) -> list[Hit]:
    """Hits whose spans overlap in the same document become one: the better-ranked hit keeps its
    place and grows to the union span (``doc_text(doc_id)`` gives the text to re-read it from)."""
    out: list[Hit] = []
    by_doc: dict[str, list[int]] = {}  # positions in ``out`` of each document's hits, in order
    for h in hits:
        c = h.chunk
        mine = by_doc.setdefault(c.doc_id, [])
        dup = next((j for j in mine if out[j].chunk.start < c.end and c.start < out[j].chunk.end), None)
        if dup is None:
            mine.append(len(out))
            out.append(h)
            continue
        o = out[dup]
        start, end = min(o.chunk.start, c.start), max(o.chunk.end, c.end)
        if (start, end) != (o.chunk.start, o.chunk.end):
            sents = tuple(sorted(set(o.chunk.sentences) | set(c.sentences)))
            text = collapse_ws(doc_text(c.doc_id)[start:end]) if doc_text else o.chunk.text
            out[dup] = replace(o, chunk=replace(o.chunk, start=start, end=end, sentences=sents, text=text))
    return out
