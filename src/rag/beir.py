"""Scoring a BEIR-format dataset (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

The corpus is indexed into its own folder under the cache (with a progress bar), each query's
``_id`` and ``text`` only are used (BEIR's ``metadata`` can name the relevant documents), and
passages are ranked per document by their best passage. Reports nDCG@10, Recall@100 and MRR@10.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import RagError
from .evaluate import ROWS, EvalReport, percentile
from .index import MANIFEST, Progress, _noop, _settings_fingerprint, index_lock, load_manifest, write_index
from .load import Document, LoadReport, sha256_file
from .settings import ChunkSettings

#: Abstracts are short: one passage per document where the model allows.
BEIR_CHUNKING = ChunkSettings(target_words=400, max_words=512, min_words=40)

#: Published nDCG@10 on SciFact's test split, to put our rows beside.
REFERENCES = {
    "scifact": {
        "BM25 (BEIR paper)": 0.665,
        "BM25+CE (best in the BEIR paper)": 0.688,
        "BM25 (bm25s, stemmed)": 0.687,
        "all-MiniLM-L6-v2 (MTEB)": 0.645,
        "RRF of BM25 and MiniLM": 0.716,
        "BM25 + BGE-base-en-v1.5 fused": 0.744,
    }
}


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _require(folder: Path, split: str) -> tuple[Path, Path, Path]:
    paths = (folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv")
    for p in paths:
        if not p.is_file():
            raise RagError(f"{p} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    return paths


def load_beir_documents(folder: Path) -> list[Document]:
    corpus = Path(folder) / "corpus.jsonl"
    if not corpus.is_file():
        raise RagError(f"{corpus} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/")
    docs = []
    for d in _read_jsonl(corpus):
        title, text = (d.get("title") or "").strip(), (d.get("text") or "").strip()
        body = f"{title}\n\n{text}" if title else text
        docs.append(Document(str(d["_id"]), corpus, title or str(d["_id"]), body,
                             hashlib.sha256(body.encode()).hexdigest(), {}))
    return docs


def load_beir(folder: Path, split: str = "test") -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]]]:
    folder = Path(folder)
    _, queries, qrels_path = _require(folder, split)
    docs = load_beir_documents(folder)
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_path, encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    # only _id and text: never the metadata, which names relevant documents for many queries
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(queries) if str(q["_id"]) in qrels}
    return docs, queries, qrels


def beir_index(settings, folder: Path, progress: Progress = _noop, force: bool = False):
    """Index the BEIR corpus into ``cache_dir/beir/<name>`` once; reuse it while nothing changed."""
    from .index import load_index

    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file():
        raise RagError(f"{folder / 'corpus.jsonl'} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/")
    bsettings = settings.with_(
        corpus_dir=folder, index_dir=Path(settings.cache_dir) / "beir" / folder.resolve().name, chunking=BEIR_CHUNKING
    )
    index_dir = Path(bsettings.index_dir)
    source = sha256_file(folder / "corpus.jsonl")
    with index_lock(index_dir):
        fresh = False
        if not force and (index_dir / MANIFEST).exists():
            m = load_manifest(index_dir)
            fresh = m.raw.get("beir_source") == source and m.settings == _settings_fingerprint(bsettings)
        if not fresh:
            progress("load", 0, 1)
            docs = load_beir_documents(folder)
            write_index(bsettings, index_dir, LoadReport(tuple(docs), ()), progress, extra={"beir_source": source, "files": {}})
    return bsettings, load_index(bsettings, check_fresh=False)


def _ident(name: str) -> str:
    """A dataset name as part of an SQL identifier (the engine namespace of its eval index)."""
    import re

    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:20]


def rank_documents(hits, n: int) -> list[str]:
    seen: list[str] = []
    for h in hits:
        if h.chunk.doc_id not in seen:
            seen.append(h.chunk.doc_id)
            if len(seen) == n:
                break
    return seen


def score_run(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 (graded gains), Recall@100 and MRR@10, averaged over the queries in ``qrels``."""
    ndcg, rec, mrr = [], [], []
    for qid, rel in qrels.items():
        ranked = run.get(qid, [])
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ndcg.append(dcg / idcg if idcg else 0.0)
        positive = {d for d, g in rel.items() if g > 0}
        rec.append(len(positive & set(ranked[:100])) / len(positive) if positive else 0.0)
        mrr.append(next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in positive), 0.0))
    n = len(qrels) or 1
    return {"ndcg@10": sum(ndcg) / n, "recall@100": sum(rec) / n, "mrr@10": sum(mrr) / n}


def run_beir(settings, folder: Path, split: str = "test", rows: Sequence[str] = ROWS,
             progress: Progress = _noop, force_index: bool = False) -> EvalReport:
    from .pipeline import Assistant

    folder = Path(folder)
    _require(folder, split)  # a bad folder fails before any indexing
    bsettings, data = beir_index(settings, folder, progress, force=force_index)
    _, queries, qrels = load_beir(folder, split)
    from .engine import engine_for

    engine = engine_for(bsettings, data, f"{bsettings.store_namespace}_beir_{_ident(folder.resolve().name)}", progress)
    base = Assistant(bsettings, data, engine=engine).warm_up()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        mode, _, fusion = row.partition("-")
        a = base if not fusion else Assistant(bsettings.with_(fusion=fusion), data, base.embedder, engine=engine)
        a.clear_cache()
        run, times = {}, []
        for n, (qid, text) in enumerate(sorted(queries.items())):
            t0 = time.perf_counter()
            hits = a.search(text, k=300, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
            run[qid] = rank_documents(hits, 100)
            progress(row, n + 1, len(queries))
        out[row] = {**score_run(run, qrels), "queries": len(queries), "p50_ms": percentile(times, 50),
                    "p95_ms": percentile(times, 95)}
    name = folder.resolve().name
    return EvalReport(
        dataset=f"BEIR {name} ({split})", model=bsettings.model, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config={"index": str(bsettings.index_dir), "chunking": dataclasses.asdict(BEIR_CHUNKING),
                "documents": data.manifest.counts.documents, "chunks": data.manifest.counts.chunks,
                "fusion": bsettings.fusion},
        rows=out, references=REFERENCES.get(name, {}),
    )
