"""Self-supervised cloze questions for pre-training the reader (:mod:`rag.reader_train`) before it is
fine-tuned on the few thousand labelled questions there are.

The labelled data (14 SQuAD articles, the curated set) is small for a span reader; unlabelled text is
not. A cloze question is made from one sentence of a passage: a year, date, amount, number or name is
the answer, and the words around it (a window, lightly shuffled and thinned, with a wh-word where the
answer was or in front) are the question, as in Lewis et al. 2019 ("Unsupervised Question Answering
by Cloze Translation", the "noisy cloze") and Dhingra et al. 2018. The passage is read as the index
cuts it, so its answer span is an exact offset. Two kinds of no-answer example come with them: the same
question against the passage with the answer's sentence cut out (on topic, the fact is missing: a
near-miss) and against another passage of the same document.

Text pools (never a held-out SQuAD article): the SQuAD tuning articles' paragraphs (CC BY-SA 4.0), the
SciFact abstracts (ODC-By 1.0, ``../shared/datasets/scifact``) and the default corpus. No question, no
answer label and no held-out text is used.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .chunk import split_sentences
from .cues import answer_candidates

#: the wh-words a cloze question is asked with, per answer type (rag.cues.answer_candidates)
_WH: dict[str, tuple[str, ...]] = {
    "date": ("when", "what date", "on what date"),
    "money": ("how much", "how much money", "what amount"),
    "percent": ("what percentage", "what percent", "how much"),
    "year": ("when", "what year", "in what year"),
    "number": ("how many", "what number", "how many"),
    "name": ("who", "what", "which"),
}
_STOP = frozenset("a an the of in on at to for by with and or is are was were be been as that this it its from".split())


@dataclass(frozen=True)
class Cloze:
    question: str
    start: int  # the answer in the passage text (characters); -1 for a no-answer example
    end: int
    kind: str  # "cloze" | "cloze-cut" (answer sentence removed) | "cloze-other" (another passage)


def cloze_question(sentence: str, start: int, end: int, kind: str, rng: random.Random) -> str | None:
    """A noisy cloze question for the answer ``sentence[start:end]``: up to ~8 words either side of it,
    the answer replaced by a wh-word (or the wh-word in front), a few words dropped or swapped."""
    wh = rng.choice(_WH[kind])
    left = sentence[:start].split()[-rng.randint(3, 9):] if sentence[:start].strip() else []
    right = sentence[end:].split()[: rng.randint(3, 9)]
    words = [w.strip(",;:()\"'") for w in left + ["\0"] + right]
    words = [w for w in words if w and (w == "\0" or rng.random() > 0.08 or w.lower() in _STOP)]
    for i in range(len(words) - 1):  # local swaps: the question should not be the sentence verbatim
        if rng.random() < 0.04 and "\0" not in words[i:i + 2]:
            words[i], words[i + 1] = words[i + 1], words[i]
    if rng.random() < 0.5:
        words = [wh] + [w for w in words if w != "\0"]
    else:
        words = [wh if w == "\0" else w for w in words]
    content = [w for w in words if w.lower() not in _STOP and w != wh]
    if len(content) < 3 or sentence[start:end].lower() in " ".join(words).lower():
        return None
    q = " ".join(words).rstrip(".!?") + "?"
    return q[0].upper() + q[1:]


def cloze_examples(text: str, others: Sequence[str], rng: random.Random, per_passage: int = 2,
                   negative_share: float = 0.35, begin: int = 0) -> list[tuple[str, Cloze]]:
    """Up to ``per_passage`` cloze questions on the passage ``text[begin:]`` (what comes before is its
    section path) as (context, Cloze) pairs, where the context is ``text`` itself, ``text`` without the
    answer's sentence, or one of ``others`` (passages of the same document), the last two without the
    answer."""
    found = []
    for s, e in split_sentences(text, begin):
        sent = text[s:e]
        for kind, a, b in answer_candidates(sent):
            found.append((s, e, kind, s + a, s + b))
    rng.shuffle(found)
    out: list[tuple[str, Cloze]] = []
    for s, e, kind, a, b in found[:per_passage]:
        q = cloze_question(text[s:e], a - s, b - s, kind, rng)
        if q is None:
            continue
        answer = text[a:b]
        out.append((text, Cloze(q, a, b, "cloze")))
        if rng.random() >= negative_share:
            continue
        cut = (text[:s] + text[e:].lstrip()).rstrip()
        pool = [o for o in others if answer.lower() not in o.lower()]
        if answer.lower() not in cut.lower() and len(cut.split()) >= 25 and (rng.random() < 0.6 or not pool):
            out.append((cut, Cloze(q, -1, -1, "cloze-cut")))
        elif pool:
            out.append((rng.choice(pool), Cloze(q, -1, -1, "cloze-other")))
    return out


def scifact_texts(corpus_jsonl: Path) -> Iterable[tuple[str, str, str]]:
    """(doc id, title, abstract) of the SciFact corpus (BEIR layout)."""
    with open(corpus_jsonl, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            yield f"scifact/{d['_id']}", d["title"], d["text"]
