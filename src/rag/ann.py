"""Stage 4d: the passage vector index, chosen by corpus size (placeholder, filled in below)."""

from __future__ import annotations

from typing import Any


def is_exact(index: Any) -> bool:
    """True for an exhaustive (flat) FAISS index."""
    import faiss

    return isinstance(index, faiss.IndexFlat)
