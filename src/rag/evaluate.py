"""Stage 7: evaluation against a curated question set (``eval/qa.jsonl``).

Gold relevance is located, not fuzzy: each gold evidence quote is found in the corpus (whitespace
runs collapsed), and a retrieved passage is relevant when its span overlaps the quote's span.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .clean import search_form

_WS = re.compile(r"\s+")


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

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


def load_qa(path: Path) -> list[QAItem]:
    items = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        ev = tuple(e for e in (d.get("evidence"), d.get("evidence2")) if e)
        items.append(QAItem(d["id"], d["question"], d.get("answer", ""), tuple(d.get("aliases", [])), ev,
                            d.get("kind", ""), d.get("section", ""), d.get("page")))
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
    s = unicodedata.normalize("NFKD", search_form(text).lower())
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = re.sub(r"(?<=\d)[ ,.](?=\d{3}\b)", "", s)
    s = re.sub(r"[^\w%.]+", " ", s)
    return _WS.sub(" ", s).strip()


def answer_matches(answer: str, gold: str, aliases: Iterable[str] = ()) -> bool:
    a = f" {normalize_answer(answer)} "
    for g in (gold, *aliases):
        ng = normalize_answer(g)
        if ng and re.search(rf"(?<![\w]){re.escape(ng)}(?![\w])", a):
            return True
    return False


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
    rank: int | None  # 1-based rank of the first relevant passage
    rels: list[int]
    answer: str
    abstained: bool
    correct: bool
    cited_ok: bool
    timings: dict[str, float] = field(default_factory=dict)


def run_qa(assistant, items: Sequence[QAItem], k: int = 10, mode: str | None = None, answer_k: int | None = None) -> list[QAResult]:
    data = assistant.data
    results = []
    for it in items:
        spans = []
        for quote in it.evidence:
            for doc_id, d in data.docs.items():
                sp = locate(d.text, quote)
                if sp:
                    spans.append((doc_id, *sp))
                    break
        hits = assistant.search(it.question, k=k, mode=mode)
        rels = [int(any(h.chunk.doc_id == d and h.chunk.start < e and s < h.chunk.end for d, s, e in spans)) for h in hits]
        rank = next((i + 1 for i, r in enumerate(rels) if r), None)
        ans = assistant.ask(it.question, k=answer_k, mode=mode)
        correct = it.answerable and not ans.abstained and answer_matches(ans.answer, it.answer, it.aliases)
        cited_ok = any(
            c.doc == d and c.start < e and s < c.end for c in ans.citations for d, s, e in spans
        ) if spans else False
        results.append(QAResult(it, rank, rels, ans.answer, ans.abstained, correct, cited_ok, dict(ans.timings_ms)))
    return results


def summarize(results: Sequence[QAResult]) -> dict[str, Any]:
    ans = [r for r in results if r.item.answerable]
    una = [r for r in results if not r.item.answerable]
    ranks = [r.rank for r in ans]
    out = {
        "questions": len(results),
        "answerable": len(ans),
        "recall@1": recall_at(ranks, 1),
        "recall@3": recall_at(ranks, 3),
        "recall@5": recall_at(ranks, 5),
        "recall@10": recall_at(ranks, 10),
        "mrr@10": mrr_at(ranks, 10),
        "ndcg@10": ndcg_at([r.rels for r in ans], 10),
        "accuracy": sum(r.correct for r in ans) / len(ans) if ans else 0.0,
        "citation_support": sum(r.cited_ok for r in ans if not r.abstained) / max(1, sum(not r.abstained for r in ans)),
        "false_abstention": sum(r.abstained for r in ans) / len(ans) if ans else 0.0,
        "abstention_recall": sum(r.abstained for r in una) / len(una) if una else 0.0,
        "answer_words_median": percentile([len(r.answer.split()) for r in ans if not r.abstained], 50),
        "total_ms_p50": percentile([r.timings.get("total", 0.0) for r in results], 50),
        "total_ms_p95": percentile([r.timings.get("total", 0.0) for r in results], 95),
    }
    return out
