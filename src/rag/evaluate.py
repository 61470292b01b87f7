"""Stage 7: evaluation against a curated question set (``eval/qa.jsonl``).

Gold relevance is located, not fuzzy: each gold evidence quote is found in the corpus (whitespace
runs collapsed), and a retrieved passage is relevant when its span overlaps the quote's span.
"""

from __future__ import annotations

import collections
import json
import math
import hashlib
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .settings import MODES
from .text import WS, fold

@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    evidence: tuple[str, ...]
    kind: str
    section: str = ""
    page: int | None = None
    unanswerable_type: str = ""  # "off-topic", "out-of-corpus" or "near-miss" for unanswerable items

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


def load_qa(path: Path) -> list[QAItem]:
    from .errors import RagError

    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"cannot read question set {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            d["id"], d["question"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RagError(f"{path}:{n}: each line needs a JSON object with 'id' and 'question' ({exc})") from exc
        ev = tuple(e for e in (d.get("evidence"), d.get("evidence2")) if e)
        items.append(QAItem(d["id"], d["question"], d.get("answer", ""), tuple(d.get("aliases", [])), ev,
                            d.get("kind", ""), d.get("section", ""), d.get("page"), d.get("unanswerable_type", "")))
    return items


def locate(text: str, quote: str) -> tuple[int, int] | None:
    """Exact span of ``quote`` in ``text`` when whitespace runs are treated as one space."""
    words = quote.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, text)
    return (m.start(), m.end()) if m else None


def normalize_answer(text: str) -> str:
    """Lower case, accents folded, OCR repaired, number groups joined ("73 185" / "73,185" -> "73185")."""
    s = re.sub(r"(?<=\d)[ ,.](?=\d{3}\b)", "", fold(text))
    s = re.sub(r"[^\w%.]+", " ", s)
    return WS.sub(" ", s).strip()


def answer_matches(answer: str, gold: str, aliases: Iterable[str] = ()) -> bool:
    a = f" {normalize_answer(answer)} "
    for g in (gold, *aliases):
        ng = normalize_answer(g)
        # word boundaries; a decimal point inside a number is not one ("50" is not in "50.5")
        if ng and re.search(rf"(?<!\w)(?<!\d\.){re.escape(ng)}(?!\w)(?!\.\d)", a):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Short answers: the official SQuAD 2.0 definitions (evaluate-v2.0.py), checked against the official
# script in tests/test_squad.py. ``normalize_answer`` above is this project's own (numbers, accents,
# OCR); these follow the SQuAD scorer exactly, so figures compare with published ones.

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_SQUAD_PUNCT = frozenset(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's ``normalize_answer``: lower case, ASCII punctuation removed, articles removed, whitespace collapsed."""
    s = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", s).split())


def squad_tokens(text: str) -> list[str]:
    return squad_normalize(text).split() if text else []


def squad_exact(gold: str, pred: str) -> int:
    """SQuAD's ``compute_exact``."""
    return int(squad_normalize(gold) == squad_normalize(pred))


def squad_f1(gold: str, pred: str) -> float:
    """SQuAD's ``compute_f1``: token F1; 1 if both are empty (no answer), 0 if only one is."""
    g, p = squad_tokens(gold), squad_tokens(pred)
    if not g or not p:
        return float(g == p)
    same = sum((collections.Counter(g) & collections.Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_golds(answers: Iterable[str]) -> list[str]:
    """The gold answers the scorer compares with: those that do not normalise to nothing, else ``[""]``
    (an unanswerable question, whose only right answer is no answer)."""
    golds = [a for a in answers if squad_normalize(a)]
    return golds or [""]


def squad_scores(pred: str, answers: Iterable[str]) -> tuple[int, float]:
    """(exact match, F1) of ``pred``, each the maximum over the gold answers, as the official scorer does."""
    golds = squad_golds(answers)
    return max(squad_exact(g, pred) for g in golds), max(squad_f1(g, pred) for g in golds)


def squad_contains(text: str, answers: Iterable[str]) -> bool:
    """Does ``text`` hold one of the gold answers as whole words, both SQuAD-normalised?"""
    t = f" {squad_normalize(text)} "
    return any(f" {g} " in t for g in (squad_normalize(a) for a in answers) if g)


def short_answer_of(ans) -> Any:
    """The answer's short answer (``rag.answer.ShortAnswer``) or None; None too for answers that predate it."""
    return getattr(ans, "short_answer", None)


def prediction(ans) -> str:
    """What is scored as the short answer: ``short_answer.text`` when there is one, else the answer with its
    citation markers removed, and ``""`` (no answer) when the assistant abstained."""
    short = short_answer_of(ans)
    if short is not None and short.text.strip():
        return short.text
    if ans.abstained:
        return ""
    from .generate import text_without_markers

    return text_without_markers(ans.answer)


def short_offsets_ok(short, docs) -> bool:
    """Do the short answer's offsets reproduce its text in its document (whitespace runs collapsed)?"""
    from .text import collapse_ws

    doc = docs.get(short.doc) if short is not None else None
    return doc is not None and 0 <= short.start <= short.end and collapse_ws(doc.text[short.start:short.end]) == collapse_ws(short.text)


# ---------------------------------------------------------------------------------------------
# Metrics (checked against hand-computed values and an established implementation in tests)


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose first relevant passage is at rank <= k (1-based; None = not found)."""
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int = 10) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def ndcg_at(relevance: Sequence[Sequence[int]], k: int = 10, n_relevant: Sequence[int] | None = None) -> float:
    """Mean nDCG@k with binary gains; ``relevance[q]`` lists 0/1 per retrieved rank."""
    if not relevance:
        return 0.0
    total = 0.0
    for qi, rels in enumerate(relevance):
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rels[:k]))
        ideal_n = min(k, n_relevant[qi] if n_relevant else sum(rels))
        idcg = sum(1 / math.log2(i + 2) for i in range(ideal_n))
        total += dcg / idcg if idcg else 0.0
    return total / len(relevance)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    idx = (len(v) - 1) * p / 100
    lo, hi = math.floor(idx), math.ceil(idx)
    return v[lo] + (v[hi] - v[lo]) * (idx - lo)


@dataclass
class QAResult:
    item: QAItem
    rank: int | None  # 1-based rank of the first relevant passage in the top 10
    rels: list[int]
    answer: str | None  # None for rows that only retrieve
    abstained: bool | None
    correct: bool | None
    cited_ok: bool | None
    timings: dict[str, float] = field(default_factory=dict)
    passage_words: list[int] = field(default_factory=list)  # words of the top-k passages
    cited_words: list[int] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    short: str | None = None  # the short answer's text, when the answer has one
    short_offsets_ok: bool | None = None  # do its offsets reproduce it (None: no short answer)
    prediction: str | None = None  # what is scored with the SQuAD definitions (see ``prediction``)

    @property
    def passed(self) -> bool:
        if not self.item.answerable:
            return bool(self.abstained)
        return bool(self.correct) if self.correct is not None else self.rank is not None and self.rank <= 5


def gold_spans(docs: dict[str, str], item: QAItem) -> list[tuple[str, int, int]]:
    spans = []
    for quote in item.evidence:
        for doc_id, text in docs.items():
            sp = locate(text, quote)
            if sp:
                spans.append((doc_id, *sp))
                break
    return spans


def _overlaps(spans, doc: str, start: int, end: int) -> bool:
    return any(d == doc and start < e and s < end for d, s, e in spans)


def run_qa(assistant, items: Sequence[QAItem], k: int = 10, mode: str | None = None, answer_k: int | None = None,
           progress=None) -> list[QAResult]:
    """Ask every question (timed from a cold query cache), then score retrieval on the top ``k``."""
    assistant.clear_cache()  # each row pays for its own query encodings
    docs = {d: r.text for d, r in assistant.data.docs.items()}
    results = []
    for n, it in enumerate(items):
        spans = gold_spans(docs, it)
        ans = assistant.ask(it.question, k=answer_k, mode=mode)
        hits = assistant.search(it.question, k=k, mode=mode)
        rels = [int(_overlaps(spans, h.chunk.doc_id, h.chunk.start, h.chunk.end)) for h in hits]
        rank = next((i + 1 for i, r in enumerate(rels) if r), None)
        correct = it.answerable and not ans.abstained and answer_matches(ans.answer, it.answer, it.aliases)
        cited_ok = any(_overlaps(spans, c.doc, c.start, c.end) for c in ans.citations) if spans else False
        short = short_answer_of(ans)
        results.append(QAResult(
            it, rank, rels, ans.answer, ans.abstained, correct, cited_ok, dict(ans.timings_ms),
            [len(p.text.split()) for p in ans.passages], [len(c.text.split()) for c in ans.citations],
            [{"n": c.n, "doc": c.doc, "page": c.page, "section": c.section, "start": c.start, "end": c.end, "text": c.text}
             for c in ans.citations],
            short.text if short is not None else None,
            short_offsets_ok(short, assistant.data.docs) if short is not None else None,
            prediction(ans),
        ))
        if progress:
            progress("questions", n + 1, len(items))
    return results


#: Question kinds whose gold is one fact a short answer can hold ("short answer contains the gold fact").
SHORT_FACT_KINDS = ("numeric", "date", "entity")


def summarize(results: Sequence[QAResult]) -> dict[str, Any]:
    """One row of the report. Answer fields are None for rows that only retrieve. ``short_em``/``short_f1``:
    SQuAD exact match and F1 of the prediction over answerable questions; ``short_fact``: share of numeric,
    date and entity questions whose short answer holds the gold (``answer_matches``); ``short_answer_rate``:
    share of given answers that have a short answer; ``short_offsets_ok``: share of short answers whose
    offsets reproduce their text (None when there are none)."""
    ans = [r for r in results if r.item.answerable]
    una = [r for r in results if not r.item.answerable]
    ranks = [r.rank for r in ans]
    answering = bool(results) and results[0].answer is not None
    spoke = [r for r in ans if answering and not r.abstained]
    totals = [r.timings.get("total", 0.0) for r in results]

    def share(xs) -> float | None:
        return (sum(xs) / len(xs)) if answering and xs else (0.0 if answering else None)

    # short answers, SQuAD definitions: gold = the answer and its aliases; abstaining scores 0 here
    squad = [squad_scores(r.prediction or "", (r.item.answer, *r.item.aliases)) for r in ans] if answering else []
    factual = [r for r in ans if r.item.kind in SHORT_FACT_KINDS]
    shorts = [r for r in results if r.short is not None]

    return {
        "questions": len(results),
        "answerable": len(ans),
        "recall@1": recall_at(ranks, 1),
        "recall@3": recall_at(ranks, 3),
        "recall@5": recall_at(ranks, 5),
        "recall@10": recall_at(ranks, 10),
        "mrr@10": mrr_at(ranks, 10),
        "ndcg@10": ndcg_at([r.rels for r in ans], 10),
        "answer_accuracy": share([bool(r.correct) for r in ans]),
        "citation_support": share([bool(r.cited_ok) for r in spoke]) if spoke or not answering else 0.0,
        "abstention_recall": share([bool(r.abstained) for r in una]),
        **{f"abstention_{t}": share([bool(r.abstained) for r in una if r.item.unanswerable_type == t])
           for t in ("off-topic", "out-of-corpus", "near-miss") if any(r.item.unanswerable_type == t for r in una)},
        "false_abstention": share([bool(r.abstained) for r in ans]),
        "short_em": share([em for em, _ in squad]),
        "short_f1": share([f1 for _, f1 in squad]),
        "short_fact": share([r.short is not None and answer_matches(r.short, r.item.answer, r.item.aliases) for r in factual]),
        "short_answer_rate": share([r.short is not None for r in results if not r.abstained]),
        "short_offsets_ok": (sum(bool(r.short_offsets_ok) for r in shorts) / len(shorts)) if answering and shorts else None,
        "median_answer_words": percentile([len(r.answer.split()) for r in spoke], 50) if answering else None,
        "median_passage_words": percentile([w for r in results for w in r.passage_words], 50),
        "median_cited_words": percentile([w for r in spoke for w in r.cited_words], 50) if answering else None,
        "p50_ms": percentile(totals, 50),
        "p95_ms": percentile(totals, 95),
        "retrieve_p50_ms": percentile([r.timings.get("retrieve", 0.0) for r in results], 50),
        "answer_p50_ms": percentile([r.timings.get("answer", 0.0) for r in results], 50) if answering else None,
    }


def recall_curve(results: Sequence[QAResult], max_k: int = 10) -> list[float]:
    ranks = [r.rank for r in results if r.item.answerable]
    return [recall_at(ranks, k) for k in range(1, max_k + 1)]


def accuracy_by_kind(results: Sequence[QAResult]) -> dict[str, float]:
    kinds: dict[str, list[bool]] = {}
    for r in results:
        kinds.setdefault(r.item.kind, []).append(r.passed)
    return {k: sum(v) / len(v) for k, v in sorted(kinds.items())}


# ---------------------------------------------------------------------------------------------
# The stock LangChain tutorial pipeline, on the same corpus and questions


def langchain_stock(docs: dict[str, str], items: Sequence[QAItem], model_path: str, k: int = 10, answer_k: int = 5,
                    progress=None) -> list[QAResult]:
    """RecursiveCharacterTextSplitter(1000, 200) + HuggingFaceEmbeddings (same model) + LangChain FAISS +
    similarity_search: what most people build from LangChain's tutorial. Retrieval only."""
    try:
        from langchain_community.vectorstores import FAISS
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as exc:
        from .errors import RagError

        raise RagError("the LangChain baseline needs the eval extra: pip install -e '.[eval]'") from exc
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200, add_start_index=True)
    lc_docs = splitter.create_documents(list(docs.values()), metadatas=[{"doc": d} for d in docs])
    emb = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})
    store = FAISS.from_documents(lc_docs, emb)
    results = []
    for n, it in enumerate(items):
        spans = gold_spans(docs, it)
        t0 = time.perf_counter()
        found = store.similarity_search(it.question, k=k)
        ms = (time.perf_counter() - t0) * 1000
        rels = []
        for d in found:
            start = int(d.metadata["start_index"])
            rels.append(int(_overlaps(spans, d.metadata["doc"], start, start + len(d.page_content))))
        rank = next((i + 1 for i, r in enumerate(rels) if r), None)
        results.append(QAResult(it, rank, rels, None, None, None, None, {"total": ms, "retrieve": ms},
                                [len(d.page_content.split()) for d in found[:answer_k]]))
        if progress:
            progress("questions", n + 1, len(items))
    return results


# ---------------------------------------------------------------------------------------------
# One run, many rows, and its report


@dataclass(frozen=True)
class QuestionRow:
    """One question of a report (its primary row): what was asked, the gold answer, ours, where the
    gold evidence ranked, and whether it passed. ``citations`` are the JSON objects of the answer's."""

    id: str
    question: str
    kind: str
    section: str
    page: int | None
    gold: str
    aliases: tuple[str, ...]
    answer: str | None  # None: the row only retrieves
    abstained: bool | None
    rank: int | None  # of the first passage holding the gold evidence, in the top 10
    passed: bool
    citations: tuple[Mapping[str, Any], ...] = ()
    short_answer: str | None = None
    prediction: str | None = None  # what the SQuAD definitions score

    @classmethod
    def of(cls, r: "QAResult") -> "QuestionRow":
        it = r.item
        return cls(it.id, it.question, it.kind, it.section, it.page, it.answer, tuple(it.aliases), r.answer,
                   r.abstained, r.rank, r.passed, tuple(r.citations), r.short, r.prediction)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QuestionRow":
        """A row of a report's JSON (``to_json``'s output) back as a record."""
        return cls(d["id"], d["question"], d.get("kind", ""), d.get("section", ""), d.get("page"), d.get("gold", ""),
                   tuple(d.get("aliases") or ()), d.get("answer"), d.get("abstained"), d.get("rank"), bool(d["passed"]),
                   tuple(d.get("citations") or ()), d.get("short_answer"), d.get("prediction"))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "kind": self.kind, "section": self.section,
                "page": self.page, "gold": self.gold, "aliases": list(self.aliases), "answer": self.answer,
                "abstained": self.abstained, "rank": self.rank, "passed": self.passed,
                "citations": [dict(c) for c in self.citations], "short_answer": self.short_answer,
                "prediction": self.prediction}


@dataclass
class EvalReport:
    dataset: str
    model: str
    created: str
    config: dict[str, Any]
    rows: dict[str, dict[str, Any]]
    curves: dict[str, list[float]] = field(default_factory=dict)  # recall@1..10 per row
    by_kind: dict[str, float] = field(default_factory=dict)  # pass rate per question kind (primary row)
    questions: list[QuestionRow] = field(default_factory=list)  # per question (primary row)
    references: dict[str, float] = field(default_factory=dict)  # published figures to compare with

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "model": self.model, "created": self.created, "config": self.config,
            "rows": self.rows, "curves": self.curves, "by_kind": self.by_kind, "references": self.references,
            "questions": [q.to_json() for q in self.questions],
        }


ROWS = (*MODES, "hybrid-rrf")  # the retrieval modes, and hybrid fused by RRF

#: The share of eval/qa.jsonl held out from the reader's training (chosen by a hash of the question
#: id): ``rag eval`` reports those questions apart, as figures on questions the model never saw.
CURATED_HELDOUT_SHARE = 1 / 3


def split_of(key: str, share: float) -> bool:
    """Deterministic held-out membership of ``key`` (True: held out)."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < share


def run_eval(settings, qa_path: Path, rows: Sequence[str] = ROWS, include_langchain: bool = True,
             progress=None, assistant=None, reader_rows: bool = False) -> EvalReport:
    """Score every retrieval mode (plus RRF fusion and the stock LangChain pipeline) on one question set,
    in one run. ``progress(stage, done, total)`` is called as questions are answered. ``reader_rows``
    adds, after the first row, that row on the reader's held-out third of the set and with the verifier off."""
    from .embed import resolve_model
    from .pipeline import Assistant

    items = load_qa(qa_path)
    if assistant is None:
        assistant = Assistant.load(settings).warm_up()
    out_rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[float]] = {}
    primary: list[QAResult] = []
    for row in rows:
        mode, _, fusion = row.partition("-")
        # a fresh assistant per row: its own (cold) query cache, the shared index and model
        a = Assistant(assistant.settings.with_(fusion=fusion or None), assistant.data, assistant.embedder,
                      engine=assistant.engine)
        stage = f"{row}"
        res = run_qa(a, items, mode=mode, progress=(lambda s, d, t, _st=stage: progress(_st, d, t)) if progress else None)
        out_rows[row] = summarize(res)
        curves[row] = recall_curve(res)
        if row == rows[0]:
            primary = res
            if reader_rows and a.settings.verifier == "on":

                # the reader trained on two thirds of this set: the third it never saw, alone
                held = [r for r in res if split_of(r.item.id, CURATED_HELDOUT_SHARE)]
                out_rows[f"{row} (reader held-out third)"] = summarize(held)
                off = Assistant(a.settings.with_(verifier="off"), assistant.data, assistant.embedder, engine=assistant.engine)
                out_rows[f"{row} (verifier off)"] = summarize(run_qa(off, items, mode=mode))
    if include_langchain:
        docs = {d: r.text for d, r in assistant.data.docs.items()}
        path = resolve_model(assistant.settings.model, assistant.settings.cache_dir)
        res = langchain_stock(docs, items, path,
                              progress=(lambda s, d, t: progress("langchain-stock", d, t)) if progress else None)
        out_rows["langchain-stock"] = summarize(res)
        curves["langchain-stock"] = recall_curve(res)
    manifest = assistant.data.manifest
    return EvalReport(
        dataset=str(qa_path),
        model=assistant.settings.model,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config={"k": assistant.settings.k, "mode": assistant.settings.mode, "fusion": assistant.settings.fusion,
                "abstain_below": assistant.settings.abstain_below, "index": str(assistant.data.path),
                "corpus_files": {d: f.sha256 for d, f in manifest.files.items()},
                "chunks": manifest.counts.chunks},
        rows=out_rows,
        curves=curves,
        by_kind=accuracy_by_kind(primary),
        questions=[QuestionRow.of(r) for r in primary],
    )


# ---------------------------------------------------------------------------------------------
# Output

TABLE_COLUMNS = (
    ("recall@1", "R@1"), ("recall@5", "R@5"), ("recall@10", "R@10"), ("mrr@10", "MRR@10"), ("ndcg@10", "nDCG@10"),
    ("recall@100", "R@100"), ("answer_accuracy", "acc"), ("citation_support", "cited"),
    ("abstention_recall", "abst"), ("abstention_off-topic", "abst-off"), ("abstention_out-of-corpus", "abst-ooc"),
    ("abstention_near-miss", "abst-near"), ("false_abstention", "false-abst"), ("short_em", "sEM"), ("short_f1", "sF1"),
    ("short_fact", "sFact"),
    ("median_passage_words", "words"),
    ("p50_ms", "p50 ms"),
)


def format_table(report: EvalReport) -> str:
    cols = [(k, h) for k, h in TABLE_COLUMNS if any(k in row for row in report.rows.values())]
    width = max(len(r) for r in report.rows) + 2
    lines = [f"{report.dataset}  ·  model {report.model}", "row".ljust(width) + "".join(h.rjust(11) for _, h in cols)]
    for name, row in report.rows.items():
        cells = []
        for k, _ in cols:
            v = row.get(k)
            cells.append(("—" if v is None else f"{v:.0f}" if k in ("median_passage_words",) else
                          f"{v:.1f}" if k.endswith("_ms") else f"{v:.3f}").rjust(11))
        lines.append(name.ljust(width) + "".join(cells))
    for name, v in report.references.items():
        lines.append(f"  reference: {name} nDCG@10 {v:.3f}")
    return "\n".join(lines)


def write_report(report: EvalReport, out_dir: Path, stem: str = "latest") -> dict[str, Path]:
    """``{stem}.json``, ``{stem}.md`` and PNG plots (recall@k per row; pass rate by question kind)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        paths.update(_plots(report, out_dir, stem))
    except ImportError:  # matplotlib is in the eval extra
        pass
    paths["md"].write_text(_markdown(report, {k: p.name for k, p in paths.items()}), encoding="utf-8")
    return paths


def _plots(report: EvalReport, out_dir: Path, stem: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    if report.curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name, curve in report.curves.items():
            ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
        ax.set_xlabel("k (passages retrieved)")
        ax.set_ylabel("Recall@k")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title("Recall@k per retrieval row")
        fig.tight_layout()
        out["recall_png"] = out_dir / f"{stem}-recall.png"
        fig.savefig(out["recall_png"], dpi=110)
        plt.close(fig)
    if report.by_kind:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        kinds = list(report.by_kind)
        ax.barh(kinds, [report.by_kind[k] for k in kinds], color="#4C78A8")
        ax.set_xlim(0, 1)
        ax.set_xlabel("pass rate (answer correct; unanswerable: abstained)")
        ax.set_title(f"By question kind ({next(iter(report.rows), '')})")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        out["kinds_png"] = out_dir / f"{stem}-kinds.png"
        fig.savefig(out["kinds_png"], dpi=110)
        plt.close(fig)
    return out


def _markdown(report: EvalReport, files: dict[str, str]) -> str:
    cols = [(k, h) for k, h in TABLE_COLUMNS if any(k in row for row in report.rows.values())]
    md = [f"# Evaluation: {report.dataset}", "", f"- model: `{report.model}`", f"- date: {report.created}"]
    md += [f"- {k}: `{v}`" for k, v in report.config.items() if k != "corpus_files"]
    for d, sha in report.config.get("corpus_files", {}).items():
        md.append(f"- corpus file `{d}` sha256 `{sha}`")
    md += ["", "| row | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in report.rows.items():
        vals = ["—" if row.get(k) is None else f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k, _ in cols]
        md.append(f"| {name} | " + " | ".join(vals) + " |")
    if report.references:
        md += ["", "Published references (nDCG@10): " + "; ".join(f"{k} {v:.3f}" for k, v in report.references.items())]
    for key in ("recall_png", "kinds_png"):
        if key in files:
            md += ["", f"![{key}]({files[key]})"]
    if report.questions:
        failed = [q for q in report.questions if not q.passed]
        md += ["", f"## Questions ({len(failed)} of {len(report.questions)} failed)", "",
               "| id | kind | question | gold | our answer | rank | pass |", "|---|---|---|---|---|---|---|"]
        for q in sorted(report.questions, key=lambda q: (q.passed, q.id)):
            ans = "(abstained)" if q.abstained else (q.answer or "")
            md.append("| " + " | ".join(_cell(x) for x in (q.id, q.kind, q.question, q.gold, ans,
                                                        q.rank if q.rank is not None else "—",
                                                        "pass" if q.passed else "FAIL")) + " |")
    return "\n".join(md) + "\n"


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")
