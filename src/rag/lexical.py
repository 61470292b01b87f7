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

from .text import MONTHS, fold

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


# Acronyms a document spells out ("MoU" and "Memorandum of Understanding"), so a question that spells
# one out also searches the acronym the passages use. An acronym: 3 to 8 letters, 2 or more capitals,
# used in running text (a lower-case word nearby; not an all-caps heading word). A long form: 2 to 7
# capitalised words on one line, with "of", "and", ... between, whose initials spell it (with or
# without the small words'), in the same document; an acronym with two different long forms is left out.
_ACRONYM = re.compile(r"\b[A-Z][A-Za-z]{2,8}\b")
_SMALL = frozenset("of and for the on in to against de".split())
_LONG_WORD = re.compile(r"[A-Za-z][\w'’\-]*")
_MONTHS = frozenset(m.lower() for m in MONTHS[3:-1].split("|"))


def _acronyms(text: str) -> set[str]:
    out = set()
    for m in _ACRONYM.finditer(text):
        a = m.group()
        a = a[:-1] if a.endswith("s") else a  # "ASOPs"
        if 3 <= len(a) <= 8 and sum(c.isupper() for c in a) >= 2 and re.search(
                r"\b[a-z]{3,}\b", text[max(0, m.start() - 40):m.end() + 40]):
            out.add(a)
    return out


def _capitalised(word: str) -> bool:
    return word[0].isupper() and sum(c.isupper() for c in word) == 1 and word.lower() not in _MONTHS


def long_forms(texts: Iterable[str]) -> dict[str, str]:
    """Long form (lower case, single spaces) -> acronym, for the acronyms each text spells out itself."""
    found: dict[str, set[str]] = {}
    for text in texts:
        by_initials: dict[str, set[str]] = {}
        for a in _acronyms(text):
            by_initials.setdefault(a.lower(), set()).add(a)
        if not by_initials:
            continue
        for line in text.splitlines():
            words = _LONG_WORD.findall(line)
            for i, first in enumerate(words):
                if not _capitalised(first):
                    continue
                for n in range(2, 8):
                    seg = words[i:i + n]
                    if len(seg) < n or not all(_capitalised(w) or w.lower() in _SMALL for w in seg):
                        break
                    if not _capitalised(seg[-1]):
                        continue
                    caps = "".join(w[0] for w in seg if _capitalised(w)).lower()
                    every = "".join(w[0] for w in seg).lower()
                    for a in by_initials.get(caps, set()) | by_initials.get(every, set()):
                        found.setdefault(a, set()).add(" ".join(w.lower() for w in seg))
    out = {}
    for a, forms in found.items():
        if len({f.rstrip("s") for f in forms}) == 1:
            out.update({f: a for f in forms})
    return out


def acronym_tokens(question: str, forms: dict[str, str]) -> list[str]:
    """The tokens of the acronyms whose long forms ``question`` spells out ("memorandum of understanding"
    -> "mou")."""
    q = f" {' '.join(re.findall(r'[a-z]+', question.lower()))} "
    return [t for form, a in forms.items() if f" {form} " in q for t in tokenize(a)]


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
