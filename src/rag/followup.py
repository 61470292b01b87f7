"""Follow-up questions in a chat: "and what about Egypt?" becomes a standalone question before retrieval.

Extractive mode uses this deterministic rewrite (the LLM does it in generative mode, see
:func:`rag.generate.rewrite_with_llm`). It only acts on messages that clearly lean on the previous
question; anything that stands on its own is searched as typed.
"""

from __future__ import annotations

import re
from typing import Sequence

from .text import PLACES

#: "and what about Egypt?", "how about the annex", "what of Libya", "same for Tunisia", "and in Niger?"
_ABOUT = re.compile(
    r"^(?:(?:and|but|so|ok(?:ay)?|also|then)[\s,]+)*(?:(?:what|how)\s+about|what\s+of|(?:and\s+)?the\s+same\s+for|same\s+for|"
    r"and\s+(?:for|in|with|on|from|to)|(?:and|also)(?=\s+(?-i:[A-Z])))\s+(?P<x>.+?)\s*[?.!]*$",
    re.I,
)
#: words that point back at the previous question
_BACK = re.compile(r"\b(?:it|its|they|them|their|this|that|these|those|there|he|she|his|her|the same)\b", re.I)
_LEADING_CONNECTIVE = re.compile(r"^(?:and|but|so|also|then)\b[\s,]*", re.I)
_CAPITALISED = re.compile(r"\b(?:[A-Z][\w'’-]+)(?:\s+(?:of\s+(?:the\s+)?)?[A-Z][\w'’-]+)*")
_QWORD = re.compile(r"^(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|will|would|should|has|have|had)\b", re.I)


def _entities(question: str) -> list[re.Match]:
    """Names in a question: known places first, else capitalised phrases not at the start."""
    found = []
    for m in _CAPITALISED.finditer(question):
        if m.start() == 0 and _QWORD.match(m.group(0)):
            continue
        found.append(m)
    places = [m for m in found if m.group(0).lower() in PLACES]
    return places or [m for m in found if m.start() > 0]


def is_follow_up(question: str) -> bool:
    q = question.strip()
    if _ABOUT.match(q):
        return True
    words = q.split()
    return len(words) <= 8 and bool(_BACK.search(q)) and not _entities(q)


def rewrite(question: str, history: Sequence[str]) -> str:
    """A standalone form of ``question`` given earlier (standalone) questions, most recent last.
    Returns ``question`` unchanged when it does not lean on them."""
    q = " ".join(question.split())
    if not history or not q or not is_follow_up(q):
        return q
    prev = " ".join(history[-1].split()).rstrip(" ?.!")
    m = _ABOUT.match(q)
    if m:
        new = m.group("x").strip()
        ents = _entities(prev)
        named = new[:1].isupper() or new.lower() in PLACES
        if ents and named:  # swap the last named thing of the previous question for the new one
            e = ents[-1]
            return f"{prev[: e.start()]}{new}{prev[e.end():]}?"
        return f"{prev}, regarding {new}?"
    # pronoun follow-up ("how much did it cost?"): the question, with what it points back at
    ents = _entities(prev)
    topic = ", ".join(dict.fromkeys(e.group(0) for e in ents)) if ents else prev
    body = _LEADING_CONNECTIVE.sub("", q).rstrip(" ?.!")
    return f"{body[:1].upper()}{body[1:]} ({topic})?"
