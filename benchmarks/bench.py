"""``rag bench``: speed and memory of every stage, measured in one run on the default corpus.

    rag bench                      # table on stdout, JSON in eval/reports/bench.json
    rag bench --json               # the same JSON object on stdout
    rag bench --questions 5 --skip-cold --skip-app --skip-build     # a quick look
    rag bench --scale 10000,100000                                 # plus synthetic scale runs

What is measured (see :data:`FIELDS` for every JSON key):

- the floor: one forward pass of the query encoder (tokenise + model + pooling) per question;
- warm latency of :meth:`Assistant.search` per retrieval mode and of :meth:`Assistant.ask`, each call
  from a cleared query cache so it pays its own encode. The calls are interleaved question by
  question (encoder, ask, hybrid, dense, lexical, order rotated), so a slow spell of this shared
  machine hits every figure alike and the ratios stay meaningful;
- the stock LangChain tutorial pipeline (:func:`rag.evaluate.langchain_stock`, k = 5) on the same
  questions, and Recall@5 of both on the answerable ones;
- fresh processes, each timed from outside with its peak RSS from ``wait4``: ``rag ask`` (cold start),
  ``rag ask --batch`` over the bench questions (peak memory of serving), ``rag index`` from scratch
  into a temporary folder and again with nothing changed, and ``streamlit run app.py`` until a real
  browser (Debian's chromium driven by Playwright) shows the first answer.

Heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.serve import SERVE_FIELDS
from rag.settings import MODES

DEFAULT_QA = Path("eval/qa.jsonl")
DEFAULT_OUT = Path("eval/reports/bench.json")
APP_TIMEOUT_S = 240.0
CHILD_TIMEOUT_S = 900.0

#: Every key of the JSON object, with its meaning (BENCHMARKS.md and the smoke test use this list).
#: Figures of a skipped stage are null, and ``skipped`` says why.
FIELDS: dict[str, str] = {
    "date": "when the run started (ISO 8601)",
    "command": "the command line that produced this object",
    "machine": "cpu_count, affinity, python, platform, torch_threads, onnxruntime, load average before/after",
    "corpus": "documents, passages, sentences of the index that was queried",
    "embed_backend": "the query encoder's backend (Settings.embed_backend, after any fallback)",
    "questions": "distinct questions timed (eval/qa.jsonl, plus variants past its size)",
    "load_s": "Assistant.load + warm_up in the bench process",
    "encoder_p50_ms": "the floor: one query-encoder forward pass (tokenise, model, pooling), median",
    "encoder_p95_ms": "encoder 95th percentile",
    "encoder_p99_ms": "encoder 99th percentile",
    "encoder_p50_ms_by_backend": "{backend: median} for each installed backend (and torch-1-thread), interleaved",
    "ask_p50_ms": "Assistant.ask (retrieve + answer, hybrid, k=5), median, each question encoded afresh",
    "ask_p95_ms": "ask 95th percentile",
    "ask_p99_ms": "ask 99th percentile",
    "ask_retrieve_p50_ms": "the retrieve part of ask (encode + search), median",
    "ask_answer_p50_ms": "the answer part of ask (sentence scoring, the reader, composing), median",
    "read_p50_ms": "the reader's part of ask (question x top read_k passages, one batched ONNX run), median; "
                   "null with the verifier off",
    "verify_p50_ms": "the verifier's cost in ask: the same reading (one model is verifier and reader), median",
    "ask_no_verifier_p50_ms": "Assistant.ask with verifier=off, median (the same questions)",
    "search_p50_ms": "{mode: median} of Assistant.search for hybrid, dense, lexical",
    "search_p95_ms": "{mode: 95th percentile}",
    "search_p99_ms": "{mode: 99th percentile}",
    "search_p50_ms_hybrid": "hybrid search median",
    "search_p50_ms_dense": "dense search median",
    "search_p50_ms_lexical": "lexical search median (no encoder)",
    "ask_over_encoder": "ask_p50_ms / encoder_p50_ms, with the verifier on (target <= 10)",
    "langchain_stock_p50_ms": "stock LangChain similarity_search(k=5), median",
    "langchain_stock_p95_ms": "its 95th percentile",
    "langchain_stock_p99_ms": "its 99th percentile",
    "langchain_build_s": "stock LangChain: split, load HuggingFaceEmbeddings, embed, FAISS.from_documents",
    "langchain_over_ask": "langchain_stock_p50_ms / ask_p50_ms (target >= 2)",
    "langchain_over_search": "langchain_stock_p50_ms / search_p50_ms_hybrid (retrieval against retrieval)",
    "langchain_1_thread_p50_ms": "the same pipeline with torch.set_num_threads(1): torch's default threading "
                                 "can cost more than the model on a busy machine, this shows LangChain at its best here",
    "langchain_1_thread_over_ask": "langchain_1_thread_p50_ms / ask_p50_ms",
    "recall_at_5_ours": "Recall@5 of ask's passages (hybrid) on the answerable bench questions",
    "recall_at_5_langchain_stock": "Recall@5 of the stock LangChain pipeline on the same questions",
    "cold_ask_s": "`rag ask QUESTION --json` as a fresh process, wall seconds, median",
    "cold_ask_runs_s": "every counted run (one uncounted run first warms the file cache)",
    "peak_rss_cold_ask_mb": "peak RSS of a fresh `rag ask`",
    "app_first_answer_s": "`streamlit run app.py` started -> first answer shown in chromium, seconds",
    "app_healthy_s": "`streamlit run app.py` started -> /_stcore/health answers ok",
    "peak_rss_app_mb": "peak RSS of the streamlit server process",
    "index_build_s": "`rag index` from scratch into a temporary folder, wall seconds of the process",
    "index_build_inproc_s": "the build's own time as recorded in the manifest (no interpreter start, no imports)",
    "index_passages": "passages in the built index",
    "index_sentences": "sentences embedded for answer extraction",
    "index_passages_per_s": "index_passages / index_build_s",
    "index_texts_per_s": "(passages + sentences) / index_build_inproc_s: embedding throughput",
    "reindex_nochange_s": "`rag index` again with nothing changed, wall seconds, median",
    "reindex_nochange_runs_s": "every run",
    "peak_rss_mb": "peak RSS of query serving: `rag ask --batch` over the bench questions",
    "serve_batch_s": "wall seconds of that process (load + every question)",
    "peak_rss_build_mb": "peak RSS of `rag index` from scratch",
    "incremental_files": "--incremental: files in the corpus made from SQuAD paragraphs (None when not run)",
    "incremental_passages": "passages of that index",
    "incremental_full_s": "`rag index` of it from scratch, wall seconds of the process",
    "incremental_full_peak_rss_mb": "peak RSS of that build",
    **{f"incremental_{op}{suffix}": text.format(op=op, done=done) for op, done in (("add", "added"), ("change", "changed"),
                                                                                    ("remove", "removed")) for suffix, text in (
        ("_s", "`rag index` after one file was {done} (an incremental build), wall seconds, median"),
        ("_runs_s", "every {op} run"),
        ("_share_of_full", "incremental_{op}_s / incremental_full_s"),
        ("_peak_rss_mb", "peak RSS of the {op} runs"))},
    **SERVE_FIELDS,
    "skipped": "{stage: reason} for stages not run",
    "elapsed_s": "wall seconds of the whole bench",
}


@dataclass(frozen=True)
class BenchOptions:
    qa: Path = DEFAULT_QA
    questions: int = 0  # 0: every question of the set
    cold_runs: int = 3
    skip_cold: bool = False
    skip_app: bool = False
    skip_build: bool = False
    skip_langchain: bool = False
    scale: tuple[int, ...] = ()
    incremental: Path | None = None  # a SQuAD open-corpus folder: time single-file index changes on it
    incremental_files: int = 1000
    serve: tuple[int, ...] = ()  # worker counts for `rag serve` runs (empty: not run)
    serve_clients: int = 4
    serve_requests: int = 200
    serve_stores: tuple[str, ...] = ("faiss",)  # retrieval backends the serve runs use
    command: str = "rag bench"


Progress = Callable[[str], None]


def _quiet(stage: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Questions


VARIANTS = ("{q}", "According to the documents, {lq}", "In the letter, {lq}", "Tell me: {q}", "{q} Cite the passage.")


def bench_questions(items: Sequence, n: int) -> list:
    """``n`` distinct questions: the set's own first, then variants of them (same gold evidence)."""
    from dataclasses import replace

    if n <= 0:
        n = len(items)
    out, seen = [], set()
    for template in VARIANTS:
        for it in items:
            q = template.format(q=it.question, lq=it.question[:1].lower() + it.question[1:])
            if q not in seen:
                seen.add(q)
                out.append(replace(it, question=q))
            if len(out) == n:
                return out
    return out


def _median(values: Sequence[float]) -> float:
    return percentiles(values)[0]


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    from rag.evaluate import percentile

    return percentile(values, 50), percentile(values, 95), percentile(values, 99)


# ---------------------------------------------------------------------------------------------
# In-process, warm


def time_warm(assistant, items: Sequence, progress: Progress = _quiet) -> dict[str, Any]:
    """Encoder, ask and search per mode, interleaved question by question, each from a cleared cache."""
    from rag.evaluate import gold_spans, recall_at
    from rag.pipeline import clean_question, search_text

    docs = {d: r.text for d, r in assistant.data.docs.items()}
    times: dict[str, list[float]] = {k: [] for k in ("encoder", "ask", "retrieve", "answer", "read", "ask_nv", *MODES)}
    from dataclasses import replace

    plain = type(assistant)(replace(assistant.settings, verifier="off"), assistant.data, assistant.embedder)
    ranks = []
    enc = assistant.embedder
    for i, it in enumerate(items):
        text = search_text(clean_question(it.question, assistant.settings.max_question_chars).text)
        answer = None

        def encoder() -> None:
            t0 = time.perf_counter()
            enc.embed([text])
            times["encoder"].append((time.perf_counter() - t0) * 1000)

        def ask() -> None:
            nonlocal answer
            assistant.clear_cache()
            t0 = time.perf_counter()
            answer = assistant.ask(it.question)
            times["ask"].append((time.perf_counter() - t0) * 1000)
            times["retrieve"].append(answer.timings_ms["retrieve"])
            times["answer"].append(answer.timings_ms["answer"])
            if answer.answerable is not None:
                times["read"].append(answer.timings_ms["read"])

        def ask_no_verifier() -> None:
            plain.clear_cache()
            t0 = time.perf_counter()
            plain.ask(it.question)
            times["ask_nv"].append((time.perf_counter() - t0) * 1000)

        def search(mode: str) -> Callable[[], None]:
            def run() -> None:
                assistant.clear_cache()
                t0 = time.perf_counter()
                assistant.search(it.question, mode=mode)
                times[mode].append((time.perf_counter() - t0) * 1000)

            return run

        steps = [encoder, ask, ask_no_verifier, *(search(m) for m in MODES)]
        r = i % len(steps)
        for step in steps[r:] + steps[:r]:
            step()
        if it.answerable:
            spans = gold_spans(docs, it)
            ranks.append(next((n for n, p in enumerate(answer.passages, 1)
                               if any(d == p.doc and p.start < e and s < p.end for d, s, e in spans)), None))
        if (i + 1) % 50 == 0:
            progress(f"warm latency: {i + 1}/{len(items)} questions")
    assistant.clear_cache()
    out: dict[str, Any] = {}
    for name in ("encoder", "ask"):
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"], out[f"{name}_p99_ms"] = percentiles(times[name])
    out["ask_retrieve_p50_ms"] = percentiles(times["retrieve"])[0]
    out["ask_answer_p50_ms"] = percentiles(times["answer"])[0]
    out["read_p50_ms"] = out["verify_p50_ms"] = percentiles(times["read"])[0] if times["read"] else None
    out["ask_no_verifier_p50_ms"] = percentiles(times["ask_nv"])[0]
    for q, key in enumerate(("search_p50_ms", "search_p95_ms", "search_p99_ms")):
        out[key] = {m: percentiles(times[m])[q] for m in MODES}
    for m in MODES:
        out[f"search_p50_ms_{m}"] = out["search_p50_ms"][m]
    out["recall_at_5_ours"] = recall_at(ranks, 5)
    return out


def time_encoders(settings, items: Sequence, backends: Sequence[str]) -> dict[str, float]:
    """Median encode time per backend, in turn question by question (order alternated).

    With torch there is a second pass, ``torch-1-thread``, paired with the first backend again: torch's
    default of one OpenMP thread per core is what the stock pipeline gets, and on a busy machine its
    thread barriers can cost more than the model; one thread shows torch's own speed. (The thread count
    is set once per pass: switching it per call would add its own cost.)"""
    from rag.embed import get_embedder

    encoders = {b: get_embedder(settings.model, str(settings.cache_dir), b) for b in backends}
    for e in encoders.values():
        e.embed(["warm up"])
    out = _alternate(encoders, items)
    if "torch" in encoders and getattr(encoders["torch"], "backend", "torch") == "torch" and len(backends) > 1:
        with _torch_threads_set(1):
            pair = {backends[0]: encoders[backends[0]], "torch-1-thread": encoders["torch"]}
            out["torch-1-thread"] = _alternate(pair, items)["torch-1-thread"]
    return out


def _alternate(encoders: dict[str, Any], items: Sequence) -> dict[str, float]:
    names = list(encoders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, it in enumerate(items):
        for n in names if i % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            encoders[n].embed([it.question])
            times[n].append((time.perf_counter() - t0) * 1000)
    return {n: percentiles(t)[0] for n, t in times.items()}


class _torch_threads_set:
    """``with _torch_threads_set(n):`` torch uses n intra-op threads inside (None: unchanged)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.before = n, None

    def __enter__(self) -> None:
        if self.n is not None:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


def time_langchain(assistant, items: Sequence) -> dict[str, Any]:
    """The stock LangChain pipeline of :mod:`rag.evaluate` at k = 5 on the same questions."""
    from rag.embed import resolve_model
    from rag.evaluate import langchain_stock, summarize

    docs = {d: r.text for d, r in assistant.data.docs.items()}
    path = resolve_model(assistant.settings.model, assistant.settings.cache_dir)
    _quiet_transformers()
    t0 = time.perf_counter()
    results = langchain_stock(docs, items, path, k=5, answer_k=5)
    total = time.perf_counter() - t0
    lat = [r.timings["total"] for r in results]
    p50, p95, p99 = percentiles(lat)
    return {"langchain_stock_p50_ms": p50, "langchain_stock_p95_ms": p95, "langchain_stock_p99_ms": p99,
            "langchain_build_s": total - sum(lat) / 1000,
            "recall_at_5_langchain_stock": summarize(results)["recall@5"]}


def _quiet_transformers() -> None:
    """No "Loading weights" bar from the baseline's model load (our own loader does the same)."""
    from rag.settings import set_process_env

    set_process_env()  # the baseline loads transformers itself: no hub, no telemetry
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# ---------------------------------------------------------------------------------------------
# Fresh processes


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


#: A small process that starts the measured command and reports its peak RSS. Needed because Linux
#: carries the parent's peak RSS into a forked child's accounting (through exec), so a child of this
#: large bench process would report at least the bench's own size.
LAUNCHER = """
import json, os, signal, subprocess, sys, threading, time
report, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.perf_counter()
proc = subprocess.Popen(cmd)
signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
timer = threading.Timer(timeout, proc.kill)
timer.start()
while True:
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        break
    except InterruptedError:
        continue
seconds = time.perf_counter() - t0
timer.cancel()
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "seconds": seconds, "maxrss_kb": usage.ru_maxrss}, f)
"""


def start_child(cmd: Sequence[str], report: Path, timeout: float = CHILD_TIMEOUT_S, **popen: Any):
    """Start ``cmd`` under :data:`LAUNCHER`, which writes its exit code, wall seconds and peak RSS to ``report``."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), str(timeout), *cmd],
                            stdin=subprocess.DEVNULL, **popen)


def read_report(report: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS in MB) written by :data:`LAUNCHER`."""
    d = json.loads(Path(report).read_text(encoding="utf-8"))
    return int(d["code"]), float(d["seconds"]), d["maxrss_kb"] / 1024  # Linux: ru_maxrss is in KiB


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S) -> ChildRun:
    """Run ``cmd`` to the end: its wall seconds and its own peak RSS."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        out, err, report = Path(tmp) / "out", Path(tmp) / "err", Path(tmp) / "report.json"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            start_child(cmd, report, timeout, stdout=fo, stderr=fe, env=env).wait()
        code, seconds, rss = read_report(report)
        return ChildRun(seconds, rss, code, out.read_text(errors="replace"), err.read_text(errors="replace"))


def _checked(run: ChildRun, what: str) -> ChildRun:
    if run.returncode != 0:
        from rag.errors import RagError

        raise RagError(f"bench: {what} exited with code {run.returncode}: {run.stderr.strip()[-500:]}")
    return run


def rag_command() -> list[str]:
    exe = Path(sys.executable).with_name("rag")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rag.cli"]


def child_env(settings, **paths: Path) -> dict[str, str]:
    """This process's environment with the bench's settings as RAG_* variables (and no others)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CORPUS_DIR=str(paths.get("corpus", settings.corpus_dir)),
               RAG_INDEX_DIR=str(paths.get("index", settings.index_dir)),
               RAG_CACHE_DIR=str(settings.cache_dir), RAG_MODEL=settings.model,
               RAG_EMBED_BACKEND=settings.embed_backend, RAG_MODE=settings.mode, RAG_K=str(settings.k),
               RAG_FUSION=settings.fusion)
    return env


def time_cold_ask(settings, question: str, runs: int) -> dict[str, Any]:
    cmd = [*rag_command(), "ask", question, "--json"]
    env = child_env(settings)
    _checked(run_child(cmd, env), "rag ask")  # not counted: fills the file cache
    counted = [_checked(run_child(cmd, env), "rag ask") for _ in range(max(1, runs))]
    return {"cold_ask_s": _median([r.seconds for r in counted]),
            "cold_ask_runs_s": [round(r.seconds, 3) for r in counted],
            "peak_rss_cold_ask_mb": max(r.peak_rss_mb for r in counted)}


def serving_memory(settings, items: Sequence) -> dict[str, Any]:
    """Peak RSS of one process that loads the index and answers every bench question."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        batch = Path(tmp) / "questions.jsonl"
        batch.write_text("".join(json.dumps({"id": it.id, "question": it.question}) + "\n" for it in items), encoding="utf-8")
        run = _checked(run_child([*rag_command(), "ask", "--batch", str(batch), "--json"], child_env(settings)),
                       "rag ask --batch")
    return {"peak_rss_mb": run.peak_rss_mb, "serve_batch_s": run.seconds}


def time_build(settings, nochange_runs: int = 3) -> dict[str, Any]:
    """`rag index` from scratch into a temporary folder, then again with nothing changed."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        index = Path(tmp) / "index"
        cmd = [*rag_command(), "index", "--corpus", str(settings.corpus_dir), "--index", str(index), "--no-progress"]
        env = child_env(settings, index=index)
        built = _checked(run_child(cmd, env), "rag index")
        from rag.index import load_manifest

        manifest = load_manifest(index)
        again = [_checked(run_child(cmd, env), "rag index (no change)") for _ in range(max(1, nochange_runs))]
        if not all("up to date" in r.stdout for r in again):
            from rag.errors import RagError

            raise RagError(f"bench: `rag index` with nothing changed rebuilt the index: {again[-1].stdout.strip()}")
    passages, sentences = manifest.counts.chunks, manifest.counts.sentences
    inproc = float(manifest.build_seconds or built.seconds)
    return {"index_build_s": built.seconds, "index_build_inproc_s": inproc, "index_passages": passages,
            "index_sentences": sentences, "index_passages_per_s": passages / built.seconds,
            "index_texts_per_s": (passages + sentences) / inproc,
            "reindex_nochange_s": _median([r.seconds for r in again]),
            "reindex_nochange_runs_s": [round(r.seconds, 3) for r in again],
            "peak_rss_build_mb": built.peak_rss_mb}


def squad_files(squad_dir: Path, corpus: Path, files: int) -> list[Path]:
    """Write the SQuAD folder's paragraphs into ``files`` text files (one article's consecutive
    paragraphs per file, cycled with a copy number when there are fewer paragraphs than files)."""
    from rag.squad import load_squad

    paragraphs, _ = load_squad(squad_dir)
    corpus.mkdir(parents=True, exist_ok=True)
    per = max(1, len(paragraphs) // files)
    out = []
    for i in range(files):
        group = [paragraphs[(i * per + j) % len(paragraphs)] for j in range(per)]
        copy = (i * per) // len(paragraphs)
        body = "\n\n".join(p.text for p in group)
        path = corpus / f"{i:04d}-{group[0].title[:40]}.txt"
        path.write_text(f"{group[0].title}{f' (copy {copy})' if copy else ''}\n\n{body}\n", encoding="utf-8")
        out.append(path)
    return out


def time_incremental(settings, squad_dir: Path, files: int = 1000, runs: int = 3) -> dict[str, Any]:
    """`rag index` (fresh processes) of a ``files``-file corpus from SQuAD paragraphs, then after
    adding, changing and removing one file, ``runs`` times each: medians, and each against the full build."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rag-bench-inc-") as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        paths = squad_files(squad_dir, corpus, files)
        cmd = [*rag_command(), "index", "--corpus", str(corpus), "--index", str(index), "--no-progress"]
        env = child_env(settings.with_(corpus_dir=corpus), index=index)
        full = _checked(run_child(cmd, env), "rag index (full)")
        ops: dict[str, list[ChildRun]] = {"add": [], "change": [], "remove": []}
        for r in range(runs):
            (corpus / f"new-{r}.txt").write_text(paths[r].read_text(encoding="utf-8").replace("\n\n", f"\n\nAdded {r}. ", 1),
                                                 encoding="utf-8")
            ops["add"].append(_checked(run_child(cmd, env), "rag index (one file added)"))
            victim = paths[len(paths) // 2 + r]
            victim.write_text(victim.read_text(encoding="utf-8") + f"\nA sentence added in run {r}.\n", encoding="utf-8")
            ops["change"].append(_checked(run_child(cmd, env), "rag index (one file changed)"))
            paths[-1 - r].unlink()
            ops["remove"].append(_checked(run_child(cmd, env), "rag index (one file removed)"))
        for name, done in ops.items():
            if not all(("added:" if name == "add" else "changed:" if name == "change" else "removed:") in d.stdout for d in done):
                from rag.errors import RagError

                raise RagError(f"bench: the {name} run was not incremental: {done[-1].stdout.strip()}")
        from rag.index import load_manifest

        manifest = load_manifest(index)
    out: dict[str, Any] = {"incremental_files": files, "incremental_passages": manifest.counts.chunks,
                           "incremental_full_s": full.seconds, "incremental_full_peak_rss_mb": full.peak_rss_mb}
    for name, done in ops.items():
        med = _median([d.seconds for d in done])
        out[f"incremental_{name}_s"] = med
        out[f"incremental_{name}_runs_s"] = [round(d.seconds, 3) for d in done]
        out[f"incremental_{name}_share_of_full"] = med / full.seconds
        out[f"incremental_{name}_peak_rss_mb"] = max(d.peak_rss_mb for d in done)
    return out


def app_unavailable() -> str | None:
    """Why the app's first answer cannot be timed here (None when it can)."""
    import shutil

    if shutil.which("chromium") is None:
        return "Debian's chromium is not on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not app_path().is_file():
        return (f"app.py not found at {app_path()}: the app is timed from a checkout of the repository "
                "(benchmarks/ next to app.py)")
    return None


def app_path() -> Path:
    """The repository's Streamlit app: ``app.py`` next to this ``benchmarks`` package."""
    return Path(__file__).resolve().parents[1] / "app.py"


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def time_app(settings, question: str) -> dict[str, Any]:
    """`streamlit run app.py` on a free port, timed until chromium shows the answer to ``question``.

    The browser starts first (not timed); the clock starts when streamlit is started. The answer is
    complete when its caption with the timing appears (the last thing the app writes)."""
    import shutil
    import subprocess
    import tempfile

    from playwright.sync_api import expect, sync_playwright

    from benchmarks.serve import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", str(app_path()), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    env = child_env(settings, corpus=Path(settings.corpus_dir).resolve(), index=Path(settings.index_dir).resolve())
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page()
        report = Path(tmp) / "report.json"
        with open(Path(tmp) / "streamlit.log", "wb") as log:
            t0 = time.perf_counter()
            proc = start_child(cmd, report, cwd=app_path().parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            healthy = _wait_healthy(proc, url, APP_TIMEOUT_S) - t0
            page.goto(url)
            chat = page.get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_visible(timeout=APP_TIMEOUT_S * 1000)
            chat.fill(question)
            chat.press("Enter")
            reply = page.get_by_test_id("stChatMessage").filter(
                has=page.get_by_test_id("stChatMessageAvatarAssistant")).first
            expect(reply.get_by_test_id("stCaptionContainer").last).to_contain_text(" ms", timeout=APP_TIMEOUT_S * 1000)
            first = time.perf_counter() - t0
        finally:
            browser.close()
            proc.terminate()  # the launcher passes it on to streamlit
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rss = read_report(report)[2] if report.is_file() else None
    return {"app_first_answer_s": first, "app_healthy_s": healthy, "peak_rss_app_mb": rss}


def _wait_healthy(proc, url: str, timeout: float) -> float:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            from rag.errors import RagError

            raise RagError(f"bench: streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return time.perf_counter()
        except OSError:
            time.sleep(0.05)
    from rag.errors import RagError

    raise RagError(f"bench: streamlit did not answer on {url} within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# One run


def machine_info(embed_backend: str) -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                            "python": platform.python_version(), "platform": platform.platform(),
                            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    if "torch" in sys.modules or embed_backend == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    else:
        info["torch_threads"] = None  # torch not imported: the query path does not use it
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def run_bench(settings, options: BenchOptions = BenchOptions(), progress: Progress = _quiet) -> dict[str, Any]:
    """Every measurement of ``rag bench`` in one run, as one JSON-ready dict (keys: :data:`FIELDS`)."""
    from rag.embed import default_backend, get_embedder, onnx_available
    from rag.evaluate import load_qa
    from rag.pipeline import Assistant

    started = time.perf_counter()
    result: dict[str, Any] = {k: None for k in FIELDS}
    result.update(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=options.command, skipped={})
    skipped: dict[str, str] = result["skipped"]
    items = bench_questions(load_qa(options.qa), options.questions)
    result["questions"] = len(items)

    progress("loading the index and the model")
    t0 = time.perf_counter()
    backend = settings.embed_backend or default_backend()
    assistant = Assistant.load(settings, embedder=get_embedder(settings.model, str(settings.cache_dir), backend))
    assistant.warm_up()
    result["load_s"] = time.perf_counter() - t0
    result["embed_backend"] = getattr(assistant.embedder, "backend", backend)
    counts = assistant.data.manifest.counts
    result["corpus"] = {"documents": counts.documents, "passages": counts.chunks,
                        "sentences": counts.sentences, "index_dir": str(settings.index_dir)}
    result["machine"] = machine_info(result["embed_backend"])

    progress(f"warm latency: {len(items)} questions x (encoder, ask, {', '.join(MODES)})")
    result.update(time_warm(assistant, items, progress))
    result["ask_over_encoder"] = result["ask_p50_ms"] / result["encoder_p50_ms"]

    if options.skip_langchain:
        skipped["langchain"] = "--skip-langchain"
    else:
        progress("stock LangChain pipeline")
        try:
            result.update(time_langchain(assistant, items))
            result["langchain_over_ask"] = result["langchain_stock_p50_ms"] / result["ask_p50_ms"]
            result["langchain_over_search"] = result["langchain_stock_p50_ms"] / result["search_p50_ms_hybrid"]
            progress("stock LangChain pipeline, torch at one thread")
            with _torch_threads_set(1):
                tuned = time_langchain(assistant, items)
            result["langchain_1_thread_p50_ms"] = tuned["langchain_stock_p50_ms"]
            result["langchain_1_thread_over_ask"] = tuned["langchain_stock_p50_ms"] / result["ask_p50_ms"]
        except ImportError as exc:  # pragma: no cover - the eval extra is part of the dev setup
            skipped["langchain"] = str(exc)
    backends = ["onnx", "torch"] if onnx_available() else ["torch"]
    progress(f"encoder per backend: {', '.join(backends)}")
    result["encoder_p50_ms_by_backend"] = time_encoders(settings, items, backends)
    result["machine"]["torch_threads"] = _torch_threads()
    del assistant

    question = items[0].question
    if options.skip_cold:
        skipped["cold"] = "--skip-cold"
    else:
        progress(f"fresh `rag ask` x {options.cold_runs} (+1 to warm the file cache)")
        result.update(time_cold_ask(settings, question, options.cold_runs))
        progress(f"serving memory: `rag ask --batch` with {len(items)} questions")
        result.update(serving_memory(settings, items))
    if options.skip_build:
        skipped["build"] = "--skip-build"
    else:
        progress("`rag index` from scratch, then with nothing changed")
        result.update(time_build(settings))
    reason = "--skip-app" if options.skip_app else app_unavailable()
    if reason:
        skipped["app"] = reason
    else:
        progress("app: `streamlit run app.py` until chromium shows the first answer")
        try:
            result.update(time_app(settings, question))
        except Exception as exc:  # noqa: BLE001 - a browser hiccup should not cost the other figures
            skipped["app"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if options.scale:
        progress(f"scale: {', '.join(map(str, options.scale))} passages")
        result["scale"] = run_scale_rows(options.scale, progress)
    if options.incremental:
        progress(f"incremental: `rag index` of {options.incremental_files} files, then one file added, changed, removed")
        result.update(time_incremental(settings, options.incremental, options.incremental_files))
    if options.serve:
        from benchmarks.serve import time_serve

        progress(f"serve: `rag serve` with {', '.join(map(str, options.serve))} workers, {options.serve_clients} clients, "
                 f"{options.serve_requests} questions each")
        from benchmarks.serve import engine_env

        qs = [it.question for it in items]
        for store in options.serve_stores:
            with engine_env(settings, store, child_env(settings)) as env:
                part = time_serve(settings, qs, options.serve, options.serve_clients, options.serve_requests, env=env,
                                  command=rag_command())
            for row in part["serve_rows"]:
                row["store"] = store
            result.setdefault("serve_rows", []).extend(part["serve_rows"])
            key = "serve_speedup" if store == options.serve_stores[0] else f"serve_speedup_{store}"
            result[key] = part["serve_speedup"]
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = time.perf_counter() - started
    return result


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.get_num_threads()


def run_scale_rows(sizes: Sequence[int], progress: Progress = _quiet) -> list[dict]:
    from benchmarks.scale import run_scale

    last = [""]

    def report(stage: str, *_: object) -> None:  # one line per stage, not per query
        if stage != last[0]:
            last[0] = stage
            progress(f"scale: {stage}")

    return run_scale(list(sizes), n_queries=200, progress=report)


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}{unit}" if abs(v) < 10 else f"{v:,.1f}{unit}" if abs(v) < 100 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


def format_bench(r: dict[str, Any]) -> str:
    """The result as a table for people (the JSON has every figure)."""
    m = r.get("machine") or {}
    c = r.get("corpus") or {}
    rows: list[tuple[str, str, str]] = [
        ("query encoder (floor)", f"p50 {_fmt(r['encoder_p50_ms'], ' ms')}",
         f"p95 {_fmt(r['encoder_p95_ms'], ' ms')} · p99 {_fmt(r['encoder_p99_ms'], ' ms')} · backend {r['embed_backend']}"),
        ("ask (retrieve + answer)", f"p50 {_fmt(r['ask_p50_ms'], ' ms')}",
         f"p95 {_fmt(r['ask_p95_ms'], ' ms')} · p99 {_fmt(r['ask_p99_ms'], ' ms')} · retrieve "
         f"{_fmt(r['ask_retrieve_p50_ms'], ' ms')} + answer {_fmt(r['ask_answer_p50_ms'], ' ms')}"),
    ]
    for mode in MODES:
        rows.append((f"search {mode}", f"p50 {_fmt(r['search_p50_ms'][mode], ' ms')}",
                     f"p95 {_fmt(r['search_p95_ms'][mode], ' ms')} · p99 {_fmt(r['search_p99_ms'][mode], ' ms')}"))
    rows.append(("reader (verify + short answer)", f"p50 {_fmt(r['read_p50_ms'], ' ms')}",
                 f"ask with the verifier off: p50 {_fmt(r['ask_no_verifier_p50_ms'], ' ms')}"))
    rows.append(("ask / encoder", _fmt(r["ask_over_encoder"], "x"), "target <= 10x (verifier on)"))
    rows.append(("stock LangChain search", f"p50 {_fmt(r['langchain_stock_p50_ms'], ' ms')}",
                 f"p95 {_fmt(r['langchain_stock_p95_ms'], ' ms')} · p99 {_fmt(r['langchain_stock_p99_ms'], ' ms')}"
                 f" · build {_fmt(r['langchain_build_s'], ' s')}"))
    rows.append(("LangChain / ask", _fmt(r["langchain_over_ask"], "x"),
                 f"target >= 2x · LangChain / hybrid search {_fmt(r['langchain_over_search'], 'x')}"))
    rows.append(("LangChain, torch 1 thread", f"p50 {_fmt(r['langchain_1_thread_p50_ms'], ' ms')}",
                 f"/ ask {_fmt(r['langchain_1_thread_over_ask'], 'x')}"))
    rows.append(("Recall@5", f"ours {_fmt(r['recall_at_5_ours'])}", f"LangChain {_fmt(r['recall_at_5_langchain_stock'])}"))
    enc = r.get("encoder_p50_ms_by_backend") or {}
    if enc:
        rows.append(("encoder by backend", " · ".join(f"{b} {_fmt(v, ' ms')}" for b, v in enc.items()), "p50, interleaved"))
    rows += [
        ("fresh `rag ask`", _fmt(r["cold_ask_s"], " s"),
         f"runs {r['cold_ask_runs_s'] or '—'} · peak RSS {_fmt(r['peak_rss_cold_ask_mb'], ' MB')} · target < 5 s"),
        ("app to first answer", _fmt(r["app_first_answer_s"], " s"),
         f"healthy at {_fmt(r['app_healthy_s'], ' s')} · peak RSS {_fmt(r['peak_rss_app_mb'], ' MB')}"),
        ("index from scratch", _fmt(r["index_build_s"], " s"),
         f"{_fmt(r['index_passages_per_s'], ' passages/s')} · in-process {_fmt(r['index_build_inproc_s'], ' s')}, "
         f"{_fmt(r['index_texts_per_s'], ' texts/s')} · peak RSS {_fmt(r['peak_rss_build_mb'], ' MB')}"),
        ("re-index, no change", _fmt(r["reindex_nochange_s"], " s"), f"runs {r['reindex_nochange_runs_s'] or '—'} · target < 1 s"),
        ("serving memory", _fmt(r["peak_rss_mb"], " MB"), f"`rag ask --batch` of {r['questions']} questions in {_fmt(r['serve_batch_s'], ' s')}"),
    ]
    if r.get("incremental_files"):
        rows.append((f"index {r['incremental_files']} files", _fmt(r["incremental_full_s"], " s"),
                     f"{r['incremental_passages']} passages · peak RSS {_fmt(r['incremental_full_peak_rss_mb'], ' MB')}"))
        for name in ("add", "change", "remove"):
            rows.append((f"  then {name} one file", _fmt(r[f"incremental_{name}_s"], " s"),
                         f"{r[f'incremental_{name}_share_of_full']:.1%} of the full build · runs {r[f'incremental_{name}_runs_s']} · "
                         f"peak RSS {_fmt(r[f'incremental_{name}_peak_rss_mb'], ' MB')} · target < 3 s and < 5 %"))
    for s in r.get("serve_rows") or []:
        rows.append((f"rag serve, {s['workers']} worker{'s' if s['workers'] > 1 else ''} ({s.get('store', 'faiss')})", _fmt(s["qps"], " q/s"),
                     f"p50 {_fmt(s['p50_ms'], ' ms')} · p99 {_fmt(s['p99_ms'], ' ms')} · {s['clients']} clients · "
                     f"{s['requests']} questions · {s['errors']} errors"))
    if r.get("serve_speedup"):
        rows.append(("  speed-up", f"{r['serve_speedup']:.2f}x", "qps of the most workers / one · target >= 1.7x for 2"))
    w0 = max(len(a) for a, _, _ in rows) + 2
    w1 = max(len(b) for _, b, _ in rows) + 2
    head = (f"rag bench · {r['date']} · {r['questions']} questions · {c.get('passages')} passages · "
            f"{m.get('cpu_count')} CPUs · load {m.get('loadavg_start')} -> {m.get('loadavg_end')}")
    lines = [head, ""] + [a.ljust(w0) + b.ljust(w1) + cmt for a, b, cmt in rows]
    for stage, why in (r.get("skipped") or {}).items():
        lines.append(f"skipped {stage}: {why}")
    if r.get("scale"):
        from benchmarks.scale import format_scale

        lines += ["", format_scale(r["scale"])]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# CLI


def _workers(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"worker counts are numbers like 1,2; got {text!r}") from None
    if not out or not all(1 <= n <= 16 for n in out):
        raise argparse.ArgumentTypeError(f"worker counts must be 1 to 16, got {text!r}")
    return out


def _sizes(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        if not p:
            continue
        mult = 1_000_000 if p.endswith("m") else 1_000 if p.endswith("k") else 1
        try:
            n = int(float(p.rstrip("mk")) * mult)
        except ValueError:
            raise argparse.ArgumentTypeError(f"scale sizes are numbers like 10000,100k,1M; got {part!r}") from None
        if n < 100:  # benchmarks.scale needs at least 100 passages (k-means and recall@10 need room)
            raise argparse.ArgumentTypeError(f"scale sizes must be >= 100 passages, got {part!r}")
        out.append(n)
    if not out:
        raise argparse.ArgumentTypeError("give at least one size, e.g. --scale 10000,100000")
    return tuple(out)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--questions", type=_positive, default=None, metavar="N",
                   help="distinct questions to time (default: all of --qa; variants are added past its size)")
    p.add_argument("--qa", type=Path, default=DEFAULT_QA, help="question set (JSON lines; default eval/qa.jsonl)")
    p.add_argument("--index", type=Path, help="index folder (default: index/ or RAG_INDEX_DIR)")
    p.add_argument("--corpus", type=Path, help="corpus folder (default: corpus/ or RAG_CORPUS_DIR)")
    p.add_argument("--cold-runs", type=_positive, default=3, metavar="N", help="counted fresh `rag ask` runs (default 3)")
    p.add_argument("--skip-cold", action="store_true", help="no fresh-process `rag ask` runs (cold start, serving memory)")
    p.add_argument("--skip-app", action="store_true", help="do not start the Streamlit app")
    p.add_argument("--skip-build", action="store_true", help="do not build an index from scratch")
    p.add_argument("--skip-langchain", action="store_true", help="no stock LangChain baseline")
    p.add_argument("--scale", type=_sizes, default=(), metavar="SIZES",
                   help="synthetic scale runs at these passage counts, e.g. 10000,100000 (or 10k,1M)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON is written (default eval/reports/bench.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--incremental", type=Path, metavar="SQUAD_DIR",
                   help="also time `rag index` after adding, changing, removing one file of a corpus made from this "
                        "SQuAD folder's paragraphs (e.g. ../shared/datasets/squad2-open)")
    p.add_argument("--incremental-files", type=_positive, default=1000, metavar="N", help="files in that corpus (default 1000)")
    p.add_argument("--serve", type=_workers, nargs="?", const=(1, 2), default=(), metavar="WORKERS",
                   help="also drive `rag serve` on loopback with these worker counts (default 1,2): questions/s, p50/p99")
    p.add_argument("--serve-clients", type=_positive, default=4, metavar="N", help="concurrent clients (default 4)")
    p.add_argument("--serve-requests", type=_positive, default=200, metavar="N", help="questions per worker count (default 200)")
    p.add_argument("--serve-stores", default="faiss", metavar="STORES",
                   help="with --serve: comma-separated retrieval backends, faiss and/or postgres (default faiss; "
                        "postgres uses RAG_STORE_URL, or starts a local server)")


def _stores(text: str) -> tuple[str, ...]:
    from rag.errors import RagError
    from rag.settings import STORES

    stores = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [x for x in stores if x not in STORES]
    if bad or not stores:
        raise RagError(f"--serve-stores: expected some of {', '.join(STORES)}, got {text!r}")
    return stores


def run_cli(args: argparse.Namespace, settings) -> int:
    if not Path(args.qa).is_file():
        from rag.errors import RagError

        raise RagError(f"question set {args.qa} not found: give --qa FILE.jsonl")
    options = BenchOptions(qa=args.qa, questions=args.questions or 0, cold_runs=args.cold_runs,
                           skip_cold=args.skip_cold, skip_app=args.skip_app, skip_build=args.skip_build,
                           skip_langchain=args.skip_langchain, scale=tuple(args.scale), incremental=args.incremental,
                           incremental_files=args.incremental_files, serve=tuple(args.serve),
                           serve_clients=args.serve_clients, serve_requests=args.serve_requests,
                           serve_stores=_stores(args.serve_stores), command=command_line(args))

    def progress(stage: str) -> None:
        if not args.no_progress:
            print(f"bench: {stage}", file=sys.stderr, flush=True)

    result = run_bench(settings, options, progress)
    path = write_json(result, args.out)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_bench(result))
        print(f"\nJSON: {path}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """``rag bench`` with the options that were given (for the record in the JSON)."""
    parts = ["rag", "bench"]
    for name, default in (("questions", None), ("qa", DEFAULT_QA), ("index", None), ("corpus", None), ("cold_runs", 3),
                          ("out", DEFAULT_OUT)):
        value = getattr(args, name, default)
        if value is not None and value != default:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    for flag in ("skip_cold", "skip_app", "skip_build", "skip_langchain", "json"):
        if getattr(args, flag, False):
            parts.append(f"--{flag.replace('_', '-')}")
    if getattr(args, "scale", ()):
        parts += ["--scale", ",".join(map(str, args.scale))]
    if getattr(args, "incremental", None):
        parts += ["--incremental", str(args.incremental), "--incremental-files", str(args.incremental_files)]
    if getattr(args, "serve", ()):
        parts += ["--serve", ",".join(map(str, args.serve)), "--serve-clients", str(args.serve_clients),
                  "--serve-requests", str(args.serve_requests), "--serve-stores", args.serve_stores]
    return " ".join(parts)
