"""Synthetic scale benchmark: every candidate vector index, and the lexical index, at a given size.

For each size it generates passage vectors and passage texts, builds each index type, and measures
build time, memory (bytes FAISS writes for the index, and the growth of the process's peak RSS
while building), single-query latency p50/p99 (one query at a time, as a user asks), and recall@10
against exact search.

Vectors (``data="manifold"``, the default) look like all-MiniLM-L6-v2 sentence embeddings: points
on a smooth 8-dimensional manifold (topics in a latent space, mapped into 384 dimensions by a fixed
random sine layer), plus a shared mean direction and a little isotropic noise, L2-normalised;
queries come from the same process with more noise (questions are not passages). Its parameters
were fitted to the passage vectors of BEIR SciFact: median cosine to the 1st/10th/100th nearest
neighbour 0.64/0.53/0.38 (SciFact 0.68/0.53/0.40), mean cosine of random pairs 0.14 (0.13), and
ANN recall curves at 48k vectors within a few points of SciFact's real sentence vectors and queries
(HNSW slightly harder, IVF slightly easier than real). Cleanly separated Gaussian clusters are the
opposite of real text embeddings (IVF looks perfect, HNSW worse); ``data="uniform"`` (uniform on
the sphere) is the worst case for every ANN method and is offered as a stress test.

Texts for the lexical index are 30-90 words drawn from a Zipfian vocabulary (s = 1.07) of
``vocab`` made-up words, indexed with rag's own :class:`~rag.lexical.LexicalIndex` (tokeniser,
stemmer, bm25s); queries are 3-7 words from the same vocabulary, skipping the 100 most common.

Run ``python -m benchmarks.scale 10000 100000 --json``; ``rag bench --scale`` calls :func:`run_scale`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag import ann
from rag.settings import set_process_env

Progress = Callable[[str, int, int], None]

#: Every row has these keys (None where a key does not apply, e.g. recall for the lexical index).
ROW_KEYS = (
    "n", "data", "index", "params", "chosen", "build_s", "index_mb", "peak_rss_mb",
    "query_p50_ms", "query_p99_ms", "recall_at_10", "query_k100_p50_ms", "recall_at_10_k100",
)
DATA_KINDS = ("manifold", "uniform")
#: Vector index families measured; "ivfpq" (IVF-PQ with exact re-ranking) is opt-in at 1M (slow to train).
INDEX_KINDS = ("flat", "hnsw16", "hnsw32", "ivf", "ivfpq")
DEFAULT_INDEXES = ("flat", "hnsw16", "hnsw32", "ivf", "ivfpq")
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (8, 16, 32, 64, 128)
LEXICAL_POOL = 50  # what hybrid search asks BM25 for (retrieve.search's pool)


def _noop(stage: str, done: int, total: int) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Memory


def _rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux: /proc/self/clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(field: str) -> float:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return float("nan")
    return float(m.group(1)) if m else float("nan")


class _Peak:
    """Growth of the peak RSS over a block: ``with _Peak() as p: ...; p.mb``."""

    def __enter__(self) -> "_Peak":
        gc.collect()
        self.ok = _reset_peak()
        self.base = _rss_mb()
        self.mb = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        if self.ok:
            self.mb = max(0.0, _peak_mb() - self.base)


# ---------------------------------------------------------------------------------------------
# Data


def synthetic_vectors(n: int, n_queries: int, dim: int = 384, seed: int = 0, data: str = "manifold") -> tuple[np.ndarray, np.ndarray]:
    """``(passages (n, dim), queries (n_queries, dim))``, float32, unit length. See the module doc."""
    if data not in DATA_KINDS:
        raise ValueError(f"unknown synthetic data {data!r}; expected one of: {', '.join(DATA_KINDS)}")
    rng = np.random.default_rng(seed)
    if data == "uniform":
        return _unit(rng.standard_normal((n, dim), dtype=np.float32)), _unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    d_int, hidden, gain, spread, noise, q_noise = 8, 512, 2.5, 0.6, 0.03, 1.5
    w1 = (rng.standard_normal((d_int, hidden)) * gain / math.sqrt(d_int)).astype(np.float32)
    b1 = rng.uniform(-math.pi, math.pi, hidden).astype(np.float32)
    w2 = (rng.standard_normal((hidden, dim)) / math.sqrt(hidden)).astype(np.float32)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean *= 0.45 / np.linalg.norm(mean)
    topics = rng.standard_normal((max(8, n // 500), d_int)).astype(np.float32)

    def draw(m: int, extra: float) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for a in range(0, m, 65_536):  # in blocks: bounded scratch memory at 1M
            b = min(m, a + 65_536)
            z = topics[rng.integers(0, len(topics), b - a)] + spread * rng.standard_normal((b - a, d_int), dtype=np.float32)
            x = _unit(np.sin(z @ w1 + b1) @ w2)
            out[a:b] = _unit(x + mean + noise * extra * rng.standard_normal((b - a, dim), dtype=np.float32))
        return out

    return draw(n, 1.0), draw(n_queries, q_noise)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        syl = rng.integers(2, 5)
        words.add("".join(consonants[rng.integers(17)] + vowels[rng.integers(5)] for _ in range(syl)))
    return sorted(words)


def synthetic_texts(n: int, n_queries: int, seed: int = 0, vocab: int = 50_000) -> tuple[list[str], list[str]]:
    """``(passages, queries)``: Zipfian made-up words (see the module doc)."""
    rng = np.random.default_rng(seed + 1)
    words = np.array(_vocabulary(vocab, rng), dtype=object)
    rng.shuffle(words)
    cdf = np.cumsum(1.0 / np.arange(1, vocab + 1) ** 1.07)
    cdf /= cdf[-1]
    lengths = rng.integers(30, 91, n)
    ids = np.searchsorted(cdf, rng.random(int(lengths.sum())))
    ends = np.cumsum(lengths)
    texts = [" ".join(words[ids[e - ln : e]]) for e, ln in zip(ends, lengths)]
    # ranks 100 and up: u is drawn above cdf[99], and searchsorted counts from rank 100
    qwords = 100 + np.searchsorted(cdf[100:], rng.random(n_queries * 7) * (1 - cdf[99]) + cdf[99])
    qlens = rng.integers(3, 8, n_queries)
    queries = [" ".join(words[qwords[7 * i : 7 * i + ln]]) for i, ln in enumerate(qlens)]
    return texts, queries


# ---------------------------------------------------------------------------------------------
# Index candidates


def _specs(kind: str, n: int) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(label, build parameters, query-parameter sweep) of one index family at size ``n``."""
    nlist = max(16, int(4 * math.sqrt(n)))
    if kind == "flat":
        return "flat", {"type": ann.FLAT}, [{}]
    if kind in ("hnsw16", "hnsw32"):
        m = int(kind[4:])
        return kind, {"type": ann.HNSW, "M": m, "efConstruction": ann.HNSW_EF_CONSTRUCTION}, [{"efSearch": e} for e in EF_SEARCH]
    if kind == "ivf":
        return "ivf", {"type": "IndexIVFFlat", "nlist": nlist}, [{"nprobe": p} for p in NPROBE]
    if kind == "ivfpq":
        return "ivfpq48+refine", {"type": "IndexIVFPQ+IndexRefineFlat", "nlist": nlist, "m": 48, "k_factor": 4}, [
            {"nprobe": p} for p in NPROBE
        ]
    raise ValueError(f"unknown index kind {kind!r}; expected one of: {', '.join(INDEX_KINDS)}")


def _build(spec: dict[str, Any], x: np.ndarray, seed: int):
    import faiss

    if spec["type"] in (ann.FLAT, ann.HNSW):
        return ann.build(x, {**spec, "efSearch": EF_SEARCH[0]})
    d = x.shape[1]
    train = x[np.random.default_rng(seed).choice(len(x), min(len(x), 40 * spec["nlist"]), replace=False)]
    if spec["type"] == "IndexIVFFlat":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, spec["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # quiet: 40 points per list is enough here
        index.train(train)
        index.add(x)
        return index
    base = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, spec["nlist"], spec["m"], 8, faiss.METRIC_INNER_PRODUCT)
    base.cp.min_points_per_centroid = 1
    base.pq.cp.min_points_per_centroid = 1
    base.train(train)
    index = faiss.IndexRefineFlat(base)  # keeps the exact vectors and re-ranks k_factor x k with them
    index.add(x)  # adds to both the PQ index and the exact store
    return index


def _search_params(spec: dict[str, Any], params: dict[str, Any]):
    import faiss

    if spec["type"] == "IndexIVFPQ+IndexRefineFlat":
        return faiss.IndexRefineSearchParameters(k_factor=spec["k_factor"], base_index_params=faiss.SearchParametersIVF(nprobe=params["nprobe"]))
    if "nprobe" in params:
        return faiss.SearchParametersIVF(nprobe=params["nprobe"])
    if "efSearch" in params:
        return faiss.SearchParametersHNSW(efSearch=params["efSearch"])
    return None


def _time_queries(index, q: np.ndarray, k: int, params) -> tuple[list[float], np.ndarray]:
    """One query at a time. FAISS's OpenMP threads (and the BLAS it bundles, which IVF-PQ uses for
    its distance tables) are held to one: a single query gains nothing from them on 2 cores, and
    waking idle threads on a busy machine costs milliseconds."""
    import faiss

    times, ids = [], np.empty((len(q), k), dtype=np.int64)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.search(q[:1], k, params=params)  # warm
        for j in range(len(q)):
            t0 = time.perf_counter()
            _, i = index.search(q[j : j + 1], k, params=params)
            times.append((time.perf_counter() - t0) * 1000)
            ids[j] = i[0]
    finally:
        faiss.omp_set_num_threads(before)
    return times, ids


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10].tolist()) & set(t[:10].tolist())) / 10 for f, t in zip(found, truth)]))


def _pct(values: Sequence[float], p: float) -> float:
    return round(float(np.percentile(values, p)), 3)


def _row(**kw: Any) -> dict[str, Any]:
    row = {k: None for k in ROW_KEYS}
    row.update(kw)
    return row


#: Sentences per passage with the default chunking (the default corpus: 333 in 137 passages); rag's
#: choice counts both (:func:`rag.ann.choose`).
SENTENCES_PER_PASSAGE = 2.4


def _chosen(n: int, spec: dict[str, Any], params: dict[str, Any]) -> bool:
    """True for the configuration rag itself picks for ``n`` passages of the default chunking."""
    mine = ann.choose(n, round(SENTENCES_PER_PASSAGE * n))
    if mine["type"] != spec["type"]:
        return False
    if mine["type"] == ann.HNSW:
        return mine["M"] == spec["M"] and mine["efSearch"] == params.get("efSearch")
    return True


def _vector_rows(n: int, data: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, kinds: Sequence[str],
                 workdir: Path, seed: int, progress: Progress) -> list[dict[str, Any]]:
    import faiss

    rows = []
    for kind in kinds:
        label, spec, sweep = _specs(kind, n)
        progress(f"{n:,} {label}: build", 0, 1)
        with _Peak() as peak:
            t0 = time.perf_counter()
            index = _build(spec, x, seed)
            build_s = time.perf_counter() - t0
        path = workdir / f"{label}.faiss"
        faiss.write_index(index, str(path))
        index_mb = path.stat().st_size / 2**20
        path.unlink()
        for j, params in enumerate(sweep):
            progress(f"{n:,} {label}: query", j, len(sweep))
            sp = _search_params(spec, params)
            t10, found = _time_queries(index, q, 10, sp)
            t100, found100 = _time_queries(index, q, 100, sp)
            shown = {k: v for k, v in spec.items() if k != "type"} | params
            rows.append(_row(
                n=n, data=data, index=label, params=json.dumps(shown, sort_keys=True), chosen=_chosen(n, spec, params),
                build_s=round(build_s, 3), index_mb=round(index_mb, 1), peak_rss_mb=round(peak.mb, 1),
                query_p50_ms=_pct(t10, 50), query_p99_ms=_pct(t10, 99), recall_at_10=round(_recall(found, truth), 4),
                query_k100_p50_ms=_pct(t100, 50), recall_at_10_k100=round(_recall(found100, truth), 4),
            ))
        del index
        gc.collect()
    return rows


def _lexical_row(n: int, n_queries: int, seed: int, progress: Progress) -> dict[str, Any]:
    from rag.lexical import LexicalIndex, tokenize

    progress(f"{n:,} lexical: texts", 0, 1)
    texts, queries = synthetic_texts(n, n_queries, seed)
    progress(f"{n:,} lexical: build", 0, 1)
    LexicalIndex.build(["warm up the tokenizer and bm25s"])  # imports are not build time
    with _Peak() as peak:
        t0 = time.perf_counter()
        lex = LexicalIndex.build(texts)
        build_s = time.perf_counter() - t0
    del texts
    with tempfile.TemporaryDirectory(prefix="rag-scale-") as tmp:
        lex.save(Path(tmp))
        index_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
    tokens = [tokenize(t) for t in queries]
    lex.search(tokens[0], LEXICAL_POOL)  # warm
    times = []
    for t in tokens:
        t0 = time.perf_counter()
        lex.search(t, LEXICAL_POOL)
        times.append((time.perf_counter() - t0) * 1000)
    return _row(n=n, data="zipf", index="bm25 (rag.lexical)", params=json.dumps({"k": LEXICAL_POOL}), chosen=True,
                build_s=round(build_s, 3), index_mb=round(index_mb, 1), peak_rss_mb=round(peak.mb, 1),
                query_p50_ms=_pct(times, 50), query_p99_ms=_pct(times, 99))


def run_scale(
    sizes: Sequence[int],
    *,
    n_queries: int = 200,
    dim: int = 384,
    seed: int = 0,
    progress: Progress | None = None,
    workdir: Path | None = None,
    data: str = "manifold",
    indexes: Sequence[str] | None = None,
    lexical: bool = True,
) -> list[dict[str, Any]]:
    """Rows of measurements (keys :data:`ROW_KEYS`), for every size: each vector index family of
    ``indexes`` (default :data:`DEFAULT_INDEXES`; ``ivfpq`` is left out above 200k unless named)
    with each query parameter, then the lexical index. ``chosen`` marks what rag picks for that many
    passages of the default chunking."""
    import faiss

    progress = progress or _noop
    for n in sizes:
        if int(n) < 100:
            raise ValueError(f"sizes must be >= 100 passages, got {n}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    kinds = list(indexes) if indexes is not None else None
    for kind in kinds or ():
        _specs(kind, 1000)  # validates the name
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rag-scale-", dir=workdir) as tmp:
        for n in map(int, sizes):
            progress(f"{n:,} vectors: generate", 0, 1)
            x, q = synthetic_vectors(n, n_queries, dim, seed, data)
            exact = faiss.IndexFlatIP(dim)
            exact.add(x)
            _, truth = exact.search(q, 10)  # ground truth in one batch
            del exact
            use = kinds or [k for k in DEFAULT_INDEXES if k != "ivfpq" or n <= 200_000]
            rows += _vector_rows(n, data, x, q, truth, use, Path(tmp), seed, progress)
            del x, q
            gc.collect()
            if lexical:
                rows.append(_lexical_row(n, n_queries, seed, progress))
                gc.collect()
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def format_scale(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`run_scale` rows (``*`` marks what rag picks at that size)."""
    head = ["passages", "index", "params", "build s", "index MB", "peak RSS +MB", "p50 ms", "p99 ms",
            "recall@10", "p50 ms (k=100)", "recall@10 (k=100)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in json.loads(r["params"] or "{}").items())
        cells = [f"{r['n']:,}", f"{r['index']}{' *' if r['chosen'] else ''}", params, _fmt(r["build_s"], 1), _fmt(r["index_mb"], 0),
                 _fmt(r["peak_rss_mb"], 0), _fmt(r["query_p50_ms"], 2), _fmt(r["query_p99_ms"], 2), _fmt(r["recall_at_10"], 3),
                 _fmt(r["query_k100_p50_ms"], 2), _fmt(r["recall_at_10_k100"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    pa = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    pa.add_argument("sizes", nargs="+", type=int, help="passage counts, e.g. 10000 100000 1000000")
    pa.add_argument("--queries", type=int, default=200, help="queries per size (default 200)")
    pa.add_argument("--data", choices=DATA_KINDS, default="manifold", help="synthetic vectors (default manifold)")
    pa.add_argument("--indexes", help=f"comma-separated subset of: {', '.join(INDEX_KINDS)}")
    pa.add_argument("--no-lexical", action="store_true", help="skip the lexical index")
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--workdir", type=Path, help="where index files are written to be measured (default: a temp folder)")
    pa.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = pa.parse_args(argv)
    # Idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, read once when FAISS loads its OpenMP
    # runtime, so set before any import), and the other process defaults of rag's edges.
    set_process_env()

    def progress(stage: str, done: int, total: int) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {stage} {done}/{total}", file=sys.stderr, flush=True)

    rows = run_scale(
        args.sizes, n_queries=args.queries, seed=args.seed, progress=progress, workdir=args.workdir, data=args.data,
        indexes=args.indexes.split(",") if args.indexes else None, lexical=not args.no_lexical,
    )
    print(json.dumps(rows, indent=2) if args.json else format_scale(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
