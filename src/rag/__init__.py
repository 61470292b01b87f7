"""rag: retrieval-augmented question answering over your own documents, with exact citations.

``import rag`` is light: the model, torch and FAISS load only when an index is built or queried.

    from rag import Assistant, Settings
    assistant = Assistant.load(Settings(index_dir="index"))
    print(assistant.ask("How many border guards were deployed to Finland?").answer)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Assistant", "Settings", "build_index", "RagError", "RagRetriever", "RagEmbeddings", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import RagError
    from .index import build_index
    from .pipeline import Assistant
    from .settings import Settings


def __getattr__(name: str) -> Any:
    if name == "Assistant":
        from .pipeline import Assistant

        return Assistant
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "build_index":
        from .index import build_index

        return build_index
    if name == "RagError":
        from .errors import RagError

        return RagError
    if name in ("RagRetriever", "RagEmbeddings"):  # LangChain adapters (needs langchain-core)
        from . import lc

        return getattr(lc, name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
