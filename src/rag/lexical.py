"""Stage 4b: the lexical index (BM25 via bm25s) and the tokenizer it shares with answer scoring.

Tokens are OCR-repaired, accent-folded, lower-cased words; English stop words are dropped and the
rest stemmed (Snowball). Saved with bm25s's own plain files (``.npy`` without pickle, JSON vocab).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .text import fold

STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just let me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own same
    she should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves also us did does done may might must shall""".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("english")


def _bm25s():
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    return bm25s


def tokenize(text: str) -> list[str]:
    words = [w for w in _TOKEN.findall(fold(text)) if w not in STOPWORDS]
    return _stemmer().stemWords(words)


class LexicalIndex:
    """BM25 over chunk search texts, plus document frequencies for answer scoring."""

    def __init__(self, bm25, df: dict[str, int], n_docs: int) -> None:
        self.bm25 = bm25
        self.df = df
        self.n_docs = n_docs

    @classmethod
    def build(cls, texts: Sequence[str]) -> "LexicalIndex":
        bm25s = _bm25s()
        tokens = [tokenize(t) or [""] for t in texts]
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        df = Counter(t for toks in tokens for t in set(toks) if t)
        return cls(bm25, dict(df), len(texts))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder), allow_pickle=False, show_progress=False)
        (folder / "df.json").write_text(json.dumps({"n_docs": self.n_docs, "df": self.df}), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "LexicalIndex":
        bm25 = _bm25s().BM25.load(str(folder), allow_pickle=False, mmap=False, show_progress=False)
        meta = json.loads((folder / "df.json").read_text(encoding="utf-8"))
        return cls(bm25, meta["df"], int(meta["n_docs"]))

    def idf(self, token: str) -> float:
        df = self.df.get(token, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        known = [t for t in query_tokens if t in self.df]
        if not known:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self.bm25.get_scores(known), dtype=np.float32)

    def search(self, query_tokens: list[str], k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (passage, BM25) with a positive score; ``allowed`` masks passages out."""
        s = self.scores(query_tokens)
        if allowed is not None:
            s = np.where(allowed, s, 0.0)
        k = min(k, len(s))
        if k <= 0:
            return []
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]  # score desc, then index asc: deterministic
        return [(int(i), float(s[i])) for i in top if s[i] > 0]


def weighted_overlap(query_tokens: Iterable[str], text_tokens: Iterable[str], idf) -> float:
    """Share of the query's idf mass found in ``text_tokens`` (0..1)."""
    q = set(query_tokens)
    if not q:
        return 0.0
    t = set(text_tokens)
    total = sum(idf(x) for x in q)
    return sum(idf(x) for x in q & t) / total if total else 0.0
