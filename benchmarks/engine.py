"""The engine backend (``store = "postgres"``) at scale: synthetic passages (the vectors and Zipfian
texts of :mod:`benchmarks.scale`) indexed into PostgreSQL + pgvector through :meth:`rag.engine.Engine.sync`
(the path ``rag index`` takes), then hybrid queries timed one at a time, as a user asks.

Recall@10 is against exact search: the same hybrid formula (:func:`rag.retrieve.weighted` of the exact
dense top-50 and rag's own BM25 top-50, bm25s) computed in memory. The passages carry no sentence
vectors (the dense score is the passage cosine), as past ``EXACT_MAX`` rag scores only candidates'
sentences anyway.

Run ``python -m benchmarks.engine 100000 1000000 --json`` (starts a local server in a temp folder
unless ``--url`` names one); ``rag bench --engine 1000000`` calls :func:`run_engine_scale`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag.settings import set_process_env

from .scale import _noop, _pct, synthetic_texts, synthetic_vectors

Progress = Callable[[str, int, int], None]
POOL = 50  # rag.retrieve.search's pool


@dataclass(frozen=True)
class _Passage:
    """What :meth:`Engine.sync` reads of a chunk."""

    doc_id: str
    start: int
    end: int
    text: str

    def search_text(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Data:
    """The parts of :class:`rag.index.IndexData` that :meth:`Engine.sync` reads."""

    chunks: Sequence[_Passage]
    vectors: Any
    sentence_vecs: np.ndarray
    sentence_first: np.ndarray


def _truth(x: np.ndarray, q: np.ndarray, texts: list[str], queries: list[str]) -> list[list[int]]:
    """Exact hybrid top-10 of every query (rag.retrieve.weighted of exact dense and BM25 top-50s)."""
    import faiss

    from rag.lexical import LexicalIndex, tokenize
    from rag.retrieve import weighted

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    d, ids = flat.search(q, POOL)
    lex = LexicalIndex.build(texts)
    out = []
    for j, text in enumerate(queries):
        dense = [(int(i), float(s)) for i, s in zip(ids[j], d[j]) if i >= 0]
        out.append([i for i, _ in weighted(dense, lex.search(tokenize(text), POOL), 10)])
    return out


def run_engine_scale(sizes: Sequence[int], *, url: str | None = None, n_queries: int = 200, seed: int = 0,
                     progress: Progress = _noop, batch: int = 2000, depths: Sequence[int | None] = (-1,),
                     keep: bool = False) -> list[dict[str, Any]]:
    """One row per size and lexical depth (-1: rag.engine.LEXICAL_DEPTH; None: every posting, exact).
    ``keep``: leave each size's namespace in the engine (to look at it afterwards)."""
    import faiss

    from rag.engine import LEXICAL_DEPTH, Engine, index_keys
    from rag.lexical import tokenize
    from rag.pg_local import LocalPostgres

    server, root = None, None
    if url is None:
        root = Path(tempfile.mkdtemp(prefix="rag-engine-bench-"))
        os.chmod(root, 0o755)
        from benchmarks.serve import free_port

        server = LocalPostgres(root, port=free_port()).start()
        url = server.url
    rows = []
    try:
        for n in map(int, sizes):
            progress(f"{n:,}: generate", 0, 1)
            x, q = synthetic_vectors(n, n_queries, seed=seed)
            texts, queries = synthetic_texts(n, n_queries, seed)
            progress(f"{n:,}: exact hybrid", 0, 1)
            truth = _truth(x, q, texts, queries)
            vectors = faiss.IndexFlatIP(x.shape[1])
            vectors.add(x)
            del x
            data = _Data([_Passage(f"doc{i // 10}", (i % 10) * 1000, (i % 10) * 1000 + len(t), t) for i, t in enumerate(texts)],
                         vectors, np.zeros((0, q.shape[1]), dtype=np.float32), np.zeros(n, dtype=np.int64))
            del texts
            keys = index_keys(data)
            engine = Engine(url, f"bench_{n}")
            engine.reset()
            t0 = time.perf_counter()
            report = engine.sync(data, batch=batch, keys=keys, progress=lambda s, d, t: progress(f"{n:,}: {s}", d, t))
            sync_s = time.perf_counter() - t0
            again = engine.sync(data, keys=keys)  # idempotent: nothing to do, how long it takes to find that out
            size_mb = engine._run(lambda c: c.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
                "WHERE s.nspname = %s AND c.relkind = 'r'", (engine.ns,)).fetchone()[0])
            position = {k: i for i, k in enumerate(keys)}
            tokens = [tokenize(t) for t in queries]
            df = dict(engine._run(lambda c: c.execute(
                f"SELECT term, df FROM {engine.ns}.terms WHERE term = ANY(%s)", (sorted({t for ts in tokens for t in ts}),)).fetchall()))
            postings = float(np.median([sum(df.get(t, 0) for t in set(ts)) for ts in tokens]))  # what exact BM25 reads
            for depth in depths:
                engine.rank(q[0], tokens[0], 10, depth=depth)  # warm
                times, hits = [], []
                for j in range(len(queries)):
                    t0 = time.perf_counter()
                    ranked = engine.rank(q[j], tokens[j], 10, depth=depth)
                    times.append((time.perf_counter() - t0) * 1000)
                    found = {position[r.key] for r in ranked}
                    hits.append(len(found & set(truth[j])) / max(1, len(truth[j])))
                parts = {}
                for mode in ("dense", "lexical"):
                    t_mode = []
                    for j in range(len(queries)):
                        t0 = time.perf_counter()
                        engine.rank(q[j], tokens[j], 10, mode=mode, depth=depth)
                        t_mode.append((time.perf_counter() - t0) * 1000)
                    parts[f"{mode}_p50_ms"] = _pct(t_mode, 50)
                rows.append({
                    "n": n, "store": "postgres+pgvector", "approximate": engine._approximate(),
                    "lexical_depth": {-1: LEXICAL_DEPTH, None: "all"}.get(depth, depth),
                    "sync_s": round(sync_s, 1), "passages_per_s": round(report.added / sync_s) if sync_s else None,
                    "resync_s": again.seconds, "resync_added": again.added, "engine_mb": round(size_mb / 2**20),
                    "hybrid_p50_ms": _pct(times, 50), "hybrid_p99_ms": _pct(times, 99),
                    "recall_at_10_vs_exact": round(float(np.mean(hits)), 4), "queries": len(queries), **parts,
                    "query_postings_p50": postings,
                })
                progress(f"{n:,}: done {rows[-1]}", 1, 1)
            if not keep:
                engine.reset()
            engine.close()
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    pa = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    pa.add_argument("sizes", nargs="+", type=int, help="passage counts, e.g. 100000 1000000")
    pa.add_argument("--url", help="a PostgreSQL with pgvector (default: start a local one in a temp folder)")
    pa.add_argument("--queries", type=int, default=200)
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--depths", default="-1", help="comma-separated lexical depths to measure (-1: the default; all: exact)")
    pa.add_argument("--keep", action="store_true", help="leave the namespaces in the engine")
    pa.add_argument("--json", action="store_true")
    args = pa.parse_args(argv)
    set_process_env()

    def progress(stage: str, done: int, total: int) -> None:
        if done in (0, total) or done % 50_000 < 2000:
            print(f"[{time.strftime('%H:%M:%S')}] {stage} {done}/{total}", file=sys.stderr, flush=True)

    depths = [None if d.strip() == "all" else int(d) for d in args.depths.split(",")]
    rows = run_engine_scale(args.sizes, url=args.url, n_queries=args.queries, seed=args.seed, progress=progress,
                            depths=depths, keep=args.keep)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(json.dumps(r) for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
