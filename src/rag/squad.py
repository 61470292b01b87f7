"""Stage 7 (SQuAD 2.0): open-corpus question answering with unanswerable questions.

A SQuAD 2.0 folder (``corpus.jsonl`` of paragraphs ``{pid, title, text}``, ``questions.jsonl`` of
``{qid, question, gold_pid, title, is_impossible, answers}``, optionally the official-layout
``dev-tune-v2.0.json`` and scorer ``evaluate-v2.0.py``) is scored like this:

- each article becomes one ``.txt`` file (its title as a heading line, then its paragraphs joined by
  blank lines) under ``cache_dir/squad/<name>/corpus``, and the span of every paragraph in that file is
  recorded; a retrieved passage belongs to the paragraphs its span overlaps;
- ``leave_out`` articles (the last ones in sorted title order) are kept out of the index: their
  answerable questions are out-of-corpus questions, which should be abstained on;
- the index is built with :func:`rag.index.build_index`, so it is reused while the written files and
  rag's cleaning and chunking code are unchanged;
- every question is asked (:meth:`rag.pipeline.Assistant.ask`), then searched for the top 10.

Reported: Recall@1/5/10 and MRR@10 of the gold paragraph, answer containment, short-answer EM and F1
with the official definitions (overall, HasAns, NoAns), abstention on unanswerable and out-of-corpus
questions, false abstention, a curve of both against false abstention over a threshold on the answer's
``answerable`` probability (its ``support`` while the answer stage gives none), and ask latency.
"""

from __future__ import annotations

import bisect
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from .errors import RagError
from .evaluate import (
    mrr_at,
    percentile,
    prediction,
    recall_at,
    short_answer_of,
    short_offsets_ok,
    squad_contains,
    squad_scores,
)
from .index import Progress, _noop

OFFICIAL_DATA = "dev-tune-v2.0.json"
OFFICIAL_SCORER = "evaluate-v2.0.py"
KINDS = ("answerable", "unanswerable", "out-of-corpus")
#: False-abstention levels at which the abstention curve is read off.
FA_LEVELS = (0.01, 0.05, 0.10)
CURVE_POINTS = 201
FAILURES_SHOWN = 25  # per kind, in squad.md


@dataclass(frozen=True)
class Paragraph:
    pid: str
    title: str
    text: str


@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    question: str
    gold_pid: str
    title: str
    is_impossible: bool
    answers: tuple[str, ...]


@dataclass(frozen=True)
class ParagraphSpan:
    """Where paragraph ``pid`` is in the written corpus file ``doc``."""

    pid: str
    doc: str
    start: int
    end: int


class ArticleCorpus(NamedTuple):
    files: dict[str, str]  # file name -> text
    spans: tuple[ParagraphSpan, ...]


# ---------------------------------------------------------------------------------------------
# Loading and writing the corpus


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise RagError(f"cannot read {path}: {exc}") from exc


def load_squad(folder: Path) -> tuple[list[Paragraph], list[SquadQuestion]]:
    """Paragraphs and questions of a SQuAD 2.0 open-corpus folder, in file order."""
    folder = Path(folder)
    for name in ("corpus.jsonl", "questions.jsonl"):
        if not (folder / name).is_file():
            raise RagError(f"{folder / name} not found: a SQuAD folder holds corpus.jsonl and questions.jsonl")
    try:
        paragraphs = [Paragraph(str(d["pid"]), str(d["title"]), str(d["text"])) for d in _read_jsonl(folder / "corpus.jsonl")]
        questions = [SquadQuestion(str(d["qid"]), str(d["question"]), str(d.get("gold_pid") or ""), str(d["title"]),
                                   bool(d["is_impossible"]), tuple(str(a) for a in d.get("answers") or ()))
                     for d in _read_jsonl(folder / "questions.jsonl")]
    except (KeyError, TypeError) as exc:
        raise RagError(f"{folder}: a corpus line needs pid, title, text; a question line qid, question, title, "
                       f"is_impossible ({exc!r} missing)") from exc
    if not paragraphs:
        raise RagError(f"{folder / 'corpus.jsonl'} has no paragraphs")
    return paragraphs, questions


def article_file_name(title: str) -> str:
    return re.sub(r"[^\w().,-]+", "_", title).strip("._") + ".txt"


def article_corpus(paragraphs: Sequence[Paragraph], titles: Iterable[str]) -> ArticleCorpus:
    """One file per article of ``titles``: the title (underscores as spaces) on the first line, then the
    paragraphs joined by blank lines, each with its line breaks turned into spaces (same length, so a
    paragraph's offsets are unchanged). Records each paragraph's span in its file."""
    keep = set(titles)
    by_title: dict[str, list[Paragraph]] = {}
    for p in paragraphs:
        if p.title in keep:
            by_title.setdefault(p.title, []).append(p)
    files: dict[str, str] = {}
    spans: list[ParagraphSpan] = []
    for title in sorted(by_title):
        name = article_file_name(title)
        parts = [title.replace("_", " ")]
        pos = len(parts[0]) + 2
        for p in by_title[title]:
            text = p.text.replace("\r", " ").replace("\n", " ")
            spans.append(ParagraphSpan(p.pid, name, pos, pos + len(text)))
            parts.append(text)
            pos += len(text) + 2
        files[name] = "\n\n".join(parts) + "\n"
    return ArticleCorpus(files, tuple(spans))


def left_out_titles(titles: Iterable[str], n: int) -> list[str]:
    """The articles kept out of the index: the last ``n`` in sorted order (deterministic)."""
    ordered = sorted(set(titles))
    return ordered[len(ordered) - n:] if n > 0 else []


def _write_corpus(corpus_dir: Path, corpus: ArticleCorpus) -> None:
    """Write the article files, leaving unchanged files untouched (so the index stays fresh) and
    removing files of articles no longer in the corpus."""
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for name, text in corpus.files.items():
        path = corpus_dir / name
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    for path in corpus_dir.glob("*.txt"):
        if path.name not in corpus.files:
            path.unlink()


def squad_index(settings, folder: Path, leave_out: int = 3, progress: Progress = _noop, force: bool = False):
    """Write the corpus (without the ``leave_out`` articles) under ``cache_dir/squad/<name>`` and build its
    index unless it is up to date. Returns (settings for that index, BuildResult, ArticleCorpus, left-out titles,
    paragraphs, questions)."""
    from .index import build_index

    folder = Path(folder)
    paragraphs, questions = load_squad(folder)
    titles = sorted({p.title for p in paragraphs})
    if not 0 <= leave_out < len(titles):
        raise RagError(f"--leave-out must be between 0 and {len(titles) - 1} (the folder has {len(titles)} articles), got {leave_out}")
    out = left_out_titles(titles, leave_out)
    corpus = article_corpus(paragraphs, [t for t in titles if t not in out])
    name = folder.resolve().name + (f"-without-{leave_out}" if leave_out else "")
    root = Path(settings.cache_dir) / "squad" / name
    ssettings = settings.with_(corpus_dir=root / "corpus", index_dir=root / "index")
    _write_corpus(root / "corpus", corpus)
    (root / "paragraphs.json").write_text(
        json.dumps({"left_out": out, "spans": [asdict(s) for s in corpus.spans]}, indent=1) + "\n", encoding="utf-8")
    result = build_index(ssettings, force=force, progress=progress)
    return ssettings, result, corpus, out, paragraphs, questions


# ---------------------------------------------------------------------------------------------
# Asking and scoring


@dataclass
class SquadOutcome:
    qid: str
    kind: str  # "answerable", "unanswerable" or "out-of-corpus"
    question: str
    title: str
    gold_pid: str
    answers: tuple[str, ...]
    rank: int | None  # 1-based rank of the first passage overlapping the gold paragraph (top 10)
    abstained: bool
    answer: str
    short: str | None
    short_offsets_ok: bool | None
    prediction: str  # what the SQuAD scorer sees ("" = no answer)
    em: int | None  # None for out-of-corpus questions (not scored with SQuAD's definitions)
    f1: float | None
    contained: bool | None  # answerable: the answer text holds a gold answer (None otherwise)
    answerable: float | None  # the answer stage's probability that the documents answer
    support: float
    ms: float  # time to ask

    @property
    def score(self) -> float:
        """What the abstention threshold is applied to: ``answerable``, else ``support``."""
        return self.support if self.answerable is None else self.answerable

    @property
    def na_prob(self) -> float:
        """The official scorer's no-answer probability: 1 - answerable (1 - support, clipped to [0, 1])."""
        p = self.answerable if self.answerable is not None else min(1.0, max(0.0, self.support))
        return round(1.0 - p, 6)

    @property
    def failed(self) -> bool:
        if self.kind == "answerable":
            return not self.contained
        return not self.abstained


def paragraphs_at(spans: Sequence[ParagraphSpan], doc: str, start: int, end: int) -> list[str]:
    """The paragraphs a passage's span overlaps."""
    return [s.pid for s in spans if s.doc == doc and start < s.end and s.start < end]


def answer_contains(ans, answers: Iterable[str]) -> bool:
    """Do the quoted sentences (citation markers removed) hold a gold answer? Abstaining holds none."""
    from .generate import text_without_markers

    return not ans.abstained and squad_contains(text_without_markers(ans.answer), answers)


def ask_question(assistant, q: SquadQuestion, kind: str, spans: Sequence[ParagraphSpan]) -> SquadOutcome:
    t0 = time.perf_counter()
    ans = assistant.ask(q.question)
    ms = (time.perf_counter() - t0) * 1000
    rank = None
    if kind == "answerable":
        hits = assistant.search(q.question, k=10)  # the query vector is cached by ask
        rank = next((i + 1 for i, h in enumerate(hits)
                     if q.gold_pid in paragraphs_at(spans, h.chunk.doc_id, h.chunk.start, h.chunk.end)), None)
    short = short_answer_of(ans)
    pred = prediction(ans)
    em, f1 = squad_scores(pred, q.answers) if kind != "out-of-corpus" else (None, None)
    answerable = getattr(ans, "answerable", None)
    return SquadOutcome(
        q.qid, kind, q.question, q.title, q.gold_pid, q.answers, rank, bool(ans.abstained), ans.answer,
        short.text if short is not None else None,
        short_offsets_ok(short, assistant.data.docs) if short is not None else None,
        pred, em, f1, answer_contains(ans, q.answers) if kind == "answerable" else None,
        None if answerable is None else float(answerable), float(ans.support), ms,
    )


def select_questions(questions: Sequence[SquadQuestion], left_out: Iterable[str],
                     limit: int | None = None) -> dict[str, list[SquadQuestion]]:
    """Questions per kind, in file order (the first ``limit`` of each): answerable and unanswerable ones on
    indexed articles, and the answerable ones of left-out articles (their unanswerable ones are not asked)."""
    out = set(left_out)
    kinds: dict[str, list[SquadQuestion]] = {k: [] for k in KINDS}
    for q in questions:
        if q.title in out:
            if not q.is_impossible:
                kinds["out-of-corpus"].append(q)
        else:
            kinds["unanswerable" if q.is_impossible else "answerable"].append(q)
    return {k: v[:limit] if limit else v for k, v in kinds.items()}


def _share(xs: Sequence[Any]) -> float | None:
    return sum(bool(x) for x in xs) / len(xs) if xs else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score_outcomes(outcomes: Sequence[SquadOutcome]) -> dict[str, Any]:
    """The summary row. Shares are in [0, 1] (the official scorer prints percentages); a share of no
    questions is None. EM/F1 cover the answerable and unanswerable questions of indexed articles."""
    ans = [o for o in outcomes if o.kind == "answerable"]
    una = [o for o in outcomes if o.kind == "unanswerable"]
    ooc = [o for o in outcomes if o.kind == "out-of-corpus"]
    scored = ans + una
    ranks = [o.rank for o in ans]
    shorts = [o for o in outcomes if o.short is not None]
    times = [o.ms for o in outcomes]
    return {
        "answerable": len(ans), "unanswerable": len(una), "out_of_corpus": len(ooc),
        "recall@1": recall_at(ranks, 1) if ans else None,
        "recall@5": recall_at(ranks, 5) if ans else None,
        "recall@10": recall_at(ranks, 10) if ans else None,
        "mrr@10": mrr_at(ranks, 10) if ans else None,
        "answer_contains_gold": _share([o.contained for o in ans]),
        "em": _mean([o.em for o in scored]), "f1": _mean([o.f1 for o in scored]),
        "has_ans_em": _mean([o.em for o in ans]), "has_ans_f1": _mean([o.f1 for o in ans]),
        "no_ans_em": _mean([o.em for o in una]), "no_ans_f1": _mean([o.f1 for o in una]),
        "abstention_unanswerable": _share([o.abstained for o in una]),
        "false_abstention": _share([o.abstained for o in ans]),
        "abstention_out_of_corpus": _share([o.abstained for o in ooc]),
        "short_answer_rate": _share([o.short is not None for o in outcomes if not o.abstained]),
        "short_offsets_ok": _share([o.short_offsets_ok for o in shorts]),
        "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
    }


def _rate_below(sorted_scores: Sequence[float], t: float) -> float | None:
    return bisect.bisect_left(sorted_scores, t) / len(sorted_scores) if sorted_scores else None


def _auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(an answerable question scores higher than an unanswerable one), ties counting half."""
    if not pos or not neg:
        return None
    neg_sorted = sorted(neg)
    wins = 0.0
    for p in pos:
        below, up_to = bisect.bisect_left(neg_sorted, p), bisect.bisect_right(neg_sorted, p)
        wins += below + 0.5 * (up_to - below)
    return wins / (len(pos) * len(neg))


def abstention_curve(outcomes: Sequence[SquadOutcome], points: int = CURVE_POINTS,
                     operating: float | None = None) -> dict[str, Any]:
    """Abstain when the score (``answerable``, else ``support``) is below a threshold ``t``: for each ``t``
    the share of unanswerable and of out-of-corpus questions abstained on, and of answerable ones (false
    abstention). Thresholds: every distinct score (thinned to ``points``), above the highest, and
    ``operating`` (the configured abstention threshold). Also the best abstention at false abstention
    <= 1/5/10 % (over every distinct score) and the AUC of the score between the kinds."""
    scores = {k: sorted(o.score for o in outcomes if o.kind == k) for k in KINDS}
    distinct = sorted({o.score for o in outcomes})
    if not distinct:
        return {"score": None, "thresholds": [], "abstention_unanswerable": [], "abstention_out_of_corpus": [],
                "false_abstention": [], "at_false_abstention": {}, "auc_unanswerable": None, "auc_out_of_corpus": None}
    top = distinct[-1] + max(1e-6, abs(distinct[-1]) * 1e-9)
    every = distinct + [top]

    def rates(t: float) -> tuple[float | None, float | None, float | None]:
        return (_rate_below(scores["unanswerable"], t), _rate_below(scores["out-of-corpus"], t),
                _rate_below(scores["answerable"], t))

    at_fa: dict[str, Any] = {}
    for level in FA_LEVELS:
        best = None
        for t in every:
            una, ooc, fa = rates(t)
            if fa is not None and fa <= level + 1e-12 and (best is None or (una or 0) >= (best["abstention_unanswerable"] or 0)):
                best = {"threshold": t, "abstention_unanswerable": una, "abstention_out_of_corpus": ooc, "false_abstention": fa}
        at_fa[f"{level:g}"] = best
    if len(every) > points:
        step = (len(every) - 1) / (points - 1)
        every = sorted({every[round(i * step)] for i in range(points)})
    if operating is not None:
        every = sorted(set(every) | {operating})
    sources = {"answerable" if o.answerable is not None else "support" for o in outcomes}
    curve = [rates(t) for t in every]
    return {
        "score": sources.pop() if len(sources) == 1 else "mixed",
        "rule": "abstain when score < threshold",
        "thresholds": every,
        "abstention_unanswerable": [c[0] for c in curve],
        "abstention_out_of_corpus": [c[1] for c in curve],
        "false_abstention": [c[2] for c in curve],
        "at_false_abstention": at_fa,
        "auc_unanswerable": _auc(scores["answerable"], scores["unanswerable"]),
        "auc_out_of_corpus": _auc(scores["answerable"], scores["out-of-corpus"]),
    }


# ---------------------------------------------------------------------------------------------
# The official scorer's files


def official_predictions(outcomes: Sequence[SquadOutcome]) -> tuple[dict[str, str], dict[str, float]]:
    """``pred.json`` and ``na_prob.json`` in the official layout, for the questions of indexed articles."""
    scored = [o for o in outcomes if o.kind != "out-of-corpus"]
    return {o.qid: o.prediction for o in scored}, {o.qid: o.na_prob for o in scored}


def filter_official_data(data: dict[str, Any], qids: Iterable[str]) -> dict[str, Any]:
    """The official-layout dataset with only the questions in ``qids`` (and the paragraphs and articles
    that still have questions), so the official scorer can score a subset."""
    keep = set(qids)
    articles = []
    for article in data.get("data", []):
        paragraphs = []
        for p in article.get("paragraphs", []):
            qas = [qa for qa in p.get("qas", []) if qa.get("id") in keep]
            if qas:
                paragraphs.append({**p, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    return {**{k: v for k, v in data.items() if k != "data"}, "data": articles}


def run_official_scorer(script: Path, data_file: Path, pred_file: Path, na_prob_file: Path | None = None,
                        timeout: float = 300) -> dict[str, Any]:
    """The official ``evaluate-v2.0.py`` in a subprocess (it needs numpy); its JSON output."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, str(script), str(data_file), str(pred_file), "-o", str(out)]
        if na_prob_file is not None:
            cmd += ["-n", str(na_prob_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise RagError(f"the official scorer failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def _write_official_files(folder: Path, outcomes: Sequence[SquadOutcome], out_dir: Path,
                          stem: str) -> dict[str, Path]:
    preds, na = official_predictions(outcomes)
    paths = {"pred": out_dir / f"{stem}-pred.json", "na_prob": out_dir / f"{stem}-na-prob.json"}
    paths["pred"].write_text(json.dumps(preds, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    paths["na_prob"].write_text(json.dumps(na, indent=1) + "\n", encoding="utf-8")
    source = Path(folder) / OFFICIAL_DATA
    if source.is_file():
        data = json.loads(source.read_text(encoding="utf-8"))
        paths["data"] = out_dir / f"{stem}-data.json"
        paths["data"].write_text(json.dumps(filter_official_data(data, preds), ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def _official(folder: Path, outcomes: Sequence[SquadOutcome]) -> dict[str, Any] | None:
    """The official scorer's figures on our predictions, when the folder has the scorer and the data."""
    script = Path(folder) / OFFICIAL_SCORER
    if not script.is_file() or not (Path(folder) / OFFICIAL_DATA).is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_official_files(folder, outcomes, Path(tmp), "squad")
        try:
            return run_official_scorer(script, paths["data"], paths["pred"], paths["na_prob"])
        except (RagError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            return {"error": str(exc)}


# ---------------------------------------------------------------------------------------------
# One run and its report


@dataclass
class SquadReport:
    dataset: str
    model: str
    created: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    curve: dict[str, Any]
    official: dict[str, Any] | None = None  # evaluate-v2.0.py on the same predictions (percentages)
    outcomes: list[SquadOutcome] = field(default_factory=list)

    def to_json(self, with_questions: bool = True) -> dict[str, Any]:
        out = {"dataset": self.dataset, "model": self.model, "created": self.created, "config": self.config,
               "metrics": self.metrics, "curve": self.curve, "official": self.official}
        if with_questions:
            out["questions"] = [{**asdict(o), "answers": list(o.answers)} for o in self.outcomes]
        return out


def run_squad(settings, folder: Path, leave_out: int = 3, limit: int | None = None, progress: Progress = _noop,
              force_index: bool = False, articles: Iterable[str] | None = None) -> SquadReport:
    """Index, ask every selected question, score. ``limit`` asks the first ``limit`` questions of each kind;
    ``articles`` asks only the questions of these titles (the index still holds every article not left
    out): e.g. the reader's held-out articles, for figures on questions it was not trained on."""
    from .index import load_index
    from .pipeline import Assistant

    if limit is not None and limit < 1:
        raise RagError(f"--limit must be >= 1, got {limit}")
    folder = Path(folder)
    ssettings, built, corpus, out, paragraphs, questions = squad_index(settings, folder, leave_out, progress, force_index)
    from .engine import engine_for

    data = load_index(ssettings)
    assistant = Assistant(ssettings, data, engine=engine_for(ssettings, data, f"{ssettings.store_namespace}_squad", progress)).warm_up()
    if articles is not None:
        wanted = set(articles)
        unknown = wanted - {p.title for p in paragraphs}
        if unknown:
            raise RagError(f"--articles: no such article(s) in {folder}: {', '.join(sorted(unknown))}")
        questions = [q for q in questions if q.title in wanted]
    selected = select_questions(questions, out, limit)
    outcomes: list[SquadOutcome] = []
    for kind in KINDS:
        qs = selected[kind]
        for n, q in enumerate(qs):
            outcomes.append(ask_question(assistant, q, kind, corpus.spans))
            progress(kind, n + 1, len(qs))
    indexed = sorted({p.title for p in paragraphs} - set(out))
    return SquadReport(
        dataset=f"SQuAD 2.0 open corpus {folder.resolve().name}",
        model=ssettings.model,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config={"source": str(folder.resolve()), "index": str(ssettings.index_dir), "index_status": built.status,
                "k": ssettings.k, "mode": ssettings.mode, "fusion": ssettings.fusion,
                "abstain_below": ssettings.abstain_below,
                # the answer stage's own abstention settings, where it has them (the trained reader's)
                **{k: getattr(ssettings, k) for k in ("verifier", "strictness", "read_k") if hasattr(ssettings, k)},
                "articles_indexed": len(indexed),
                "paragraphs_indexed": len(corpus.spans), "chunks": built.manifest.counts.chunks,
                "left_out": out, "left_out_rule": "the last N titles in sorted order", "limit": limit,
                "articles_asked": sorted(articles) if articles is not None else "all",
                "questions_in_folder": len(questions)},
        metrics=score_outcomes(outcomes),
        # the configured threshold is a point of the curve when the support score is what abstains
        curve=abstention_curve(outcomes, operating=None if any(o.answerable is not None for o in outcomes)
                               else ssettings.abstain_below),
        official=_official(folder, outcomes),
        outcomes=outcomes,
    )


# ---------------------------------------------------------------------------------------------
# Output

TABLE = (
    ("recall@1", "retrieval R@1 (gold paragraph)", "answerable"),
    ("recall@5", "retrieval R@5", "answerable"),
    ("recall@10", "retrieval R@10", "answerable"),
    ("mrr@10", "retrieval MRR@10", "answerable"),
    ("answer_contains_gold", "answer contains a gold answer", "answerable"),
    ("em", "short answer EM", "scored"),
    ("f1", "short answer F1", "scored"),
    ("has_ans_em", "  HasAns EM", "answerable"),
    ("has_ans_f1", "  HasAns F1", "answerable"),
    ("no_ans_em", "  NoAns EM", "unanswerable"),
    ("no_ans_f1", "  NoAns F1", "unanswerable"),
    ("abstention_unanswerable", "abstention, unanswerable", "unanswerable"),
    ("abstention_out_of_corpus", "abstention, out of corpus", "out_of_corpus"),
    ("false_abstention", "false abstention, answerable", "answerable"),
    ("short_answer_rate", "answers with a short answer", None),
    ("short_offsets_ok", "short answers whose offsets reproduce them", None),
    ("p50_ms", "ask p50 ms", None),
    ("p95_ms", "ask p95 ms", None),
)


def _rows(report: SquadReport) -> list[tuple[str, str, str]]:
    m = report.metrics
    counts = {"answerable": m["answerable"], "unanswerable": m["unanswerable"], "out_of_corpus": m["out_of_corpus"],
              "scored": m["answerable"] + m["unanswerable"]}
    rows = []
    for key, label, n in TABLE:
        v = m.get(key)
        cell = "—" if v is None else f"{v:.1f}" if key.endswith("_ms") else f"{v:.3f}"
        rows.append((label, cell, str(counts[n]) if n else ""))
    for level, point in report.curve.get("at_false_abstention", {}).items():
        if point:
            rows.append((f"abstention at false abstention <= {float(level):.0%}",
                         f"{point['abstention_unanswerable']:.3f}", f"t={point['threshold']:.3f}"))
    for key, label in (("auc_unanswerable", "score AUC, answerable vs unanswerable"),
                       ("auc_out_of_corpus", "score AUC, answerable vs out of corpus")):
        if report.curve.get(key) is not None:
            rows.append((label, f"{report.curve[key]:.3f}", ""))
    return rows


def format_squad_table(report: SquadReport) -> str:
    c = report.config
    lines = [f"{report.dataset}  ·  model {report.model}",
             f"{c['articles_indexed']} articles indexed ({c['paragraphs_indexed']} paragraphs, index {c['index_status']}); "
             f"left out: {', '.join(c['left_out']) or 'none'}; score for the curve: {report.curve.get('score')}"]
    rows = _rows(report)
    width = max(len(r[0]) for r in rows) + 2
    lines.append("metric".ljust(width) + "value".rjust(9) + "n".rjust(8))
    lines += [label.ljust(width) + value.rjust(9) + n.rjust(8) for label, value, n in rows]
    off = report.official
    if off and "error" not in off:
        lines.append(f"official scorer: exact {off.get('exact', 0):.2f}, f1 {off.get('f1', 0):.2f}"
                     f" (HasAns {off.get('HasAns_exact', 0):.2f}/{off.get('HasAns_f1', 0):.2f},"
                     f" NoAns {off.get('NoAns_exact', 0):.2f}/{off.get('NoAns_f1', 0):.2f}), total {off.get('total')}")
    elif off:
        lines.append(f"official scorer: {off['error']}")
    return "\n".join(lines)


def write_squad_report(report: SquadReport, out_dir: Path, stem: str = "squad") -> dict[str, Path]:
    """``squad.json``, ``squad.md``, the abstention plot, and the official-layout ``squad-pred.json`` and
    ``squad-na-prob.json`` (plus ``squad-data.json``, the official data of the asked questions)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    paths.update(_write_official_files(Path(report.config["source"]), report.outcomes, out_dir, stem))
    try:
        paths["abstention_png"] = _plot(report, out_dir / f"{stem}-abstention.png")
    except ImportError:  # matplotlib is in the eval extra
        pass
    paths["md"].write_text(_markdown(report, {k: p.name for k, p in paths.items()}), encoding="utf-8")
    return paths


def _plot(report: SquadReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, m = report.curve, report.metrics
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, label in (("abstention_unanswerable", "unanswerable"), ("abstention_out_of_corpus", "out of corpus")):
        pts = [(x, y) for x, y in zip(c["false_abstention"], c[key]) if x is not None and y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    for key, label, marker in (("abstention_unanswerable", "unanswerable, as run", "o"),
                               ("abstention_out_of_corpus", "out of corpus, as run", "s")):
        if m.get(key) is not None and m.get("false_abstention") is not None:
            ax.plot([m["false_abstention"]], [m[key]], marker=marker, linestyle="none", color="black", label=label)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false abstention (answerable questions abstained on)")
    ax.set_ylabel("abstention")
    ax.set_title(f"Abstention vs false abstention, threshold on {c.get('score')}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown(report: SquadReport, files: dict[str, str]) -> str:
    c = report.config
    md = [f"# Evaluation: {report.dataset}", "", f"- model: `{report.model}`", f"- date: {report.created}"]
    md += [f"- {k}: `{v}`" for k, v in c.items()]
    md += ["", "| metric | value | n |", "|---|---|---|"]
    md += [f"| {_cell(label.strip())} | {value} | {n} |" for label, value, n in _rows(report)]
    off = report.official
    if off:
        md += ["", "Official scorer (`evaluate-v2.0.py`, percentages) on the same predictions: "
               + ("; ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in off.items()))]
    if "data" in files:
        md += ["", f"Run it yourself, in this folder: `python {Path(c['source']) / OFFICIAL_SCORER} "
               f"{files['data']} {files['pred']} -n {files['na_prob']}`"]
    if "abstention_png" in files:
        md += ["", f"![abstention]({files['abstention_png']})"]
    for kind in KINDS:
        failed = [o for o in report.outcomes if o.kind == kind and o.failed]
        total = sum(o.kind == kind for o in report.outcomes)
        what = "answer lacks every gold answer" if kind == "answerable" else "answered instead of abstaining"
        md += ["", f"## {kind}: {len(failed)} of {total} failed ({what}; first {min(len(failed), FAILURES_SHOWN)} shown)",
               "", "| qid | question | gold | our answer | short | rank | score |", "|---|---|---|---|---|---|---|"]
        for o in failed[:FAILURES_SHOWN]:
            md.append("| " + " | ".join(_cell(x) for x in (
                o.qid, o.question, " / ".join(o.answers) or "—", "(abstained)" if o.abstained else o.answer,
                o.short or "—", o.rank if o.rank is not None else "—", f"{o.score:.3f}")) + " |")
    return "\n".join(md) + "\n"


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")
