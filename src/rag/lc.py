"""LangChain interfaces: :class:`RagRetriever` (a ``BaseRetriever`` over a ``rag`` index) and
:class:`RagEmbeddings` (an ``Embeddings`` over the configured sentence-transformers model).

Both pass LangChain's standard test suites (``tests/test_langchain_std.py``). They need
``langchain-core``; ``import rag`` never imports this module.

Each retrieved ``Document`` carries the passage text as ``page_content`` and everything needed to
check a citation in ``metadata``: ``doc_id`` (also ``source``), ``title``, ``page``, ``page_end``,
``section`` (the section path), ``start`` and ``end`` (character offsets in the loaded document
text: ``collapse_ws(text[start:end]) == page_content``), ``chunk_id`` (also ``Document.id``),
``score`` (what the ranking used), ``dense`` (cosine) and ``lexical`` (BM25) when the mode computed
them, ``mode`` and ``rank`` (1-based).

Use in a chain::

    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from rag.lc import RagRetriever
    from rag.settings import Settings

    retriever = RagRetriever(settings=Settings(index_dir="index", corpus_dir="corpus"), k=4)

    def numbered(docs):
        return "\\n\\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, 1))

    prompt = ChatPromptTemplate.from_template("Passages:\\n{context}\\n\\nQuestion: {question}")
    chain = {"context": retriever | numbered, "question": RunnablePassthrough()} | prompt | llm
    chain.invoke("How many border guards were deployed to Finland?")

    retriever.invoke("Tunisia coast guard", k=2, mode="lexical")   # per-call overrides

Without ``settings`` both classes read ``RAG_*`` environment variables (:meth:`Settings.from_env`),
like the CLI and the app. Bad input raises ``rag``'s own errors: an empty query
:class:`~rag.errors.BadQuestion`, an unknown mode or a ``k`` below 1 :class:`~rag.errors.BadSetting`
(at construction) or :class:`~rag.errors.BadQuestion` (per call), a missing or stale index
:class:`~rag.errors.IndexMissing` / :class:`~rag.errors.IndexStale` on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables.config import run_in_executor
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("rag.lc needs langchain-core: run `pip install langchain-core`") from exc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import BadQuestion, BadSetting
from .pipeline import Assistant
from .retrieve import Hit
from .settings import MODES, Settings

__all__ = ["RagRetriever", "RagEmbeddings", "hit_to_document"]


def hit_to_document(hit: Hit, rank: int, mode: str) -> Document:
    """A LangChain ``Document`` for one hit: the passage and its checkable location."""
    c = hit.chunk
    return Document(
        id=c.chunk_id,
        page_content=c.text,
        metadata={
            "source": c.doc_id,
            "doc_id": c.doc_id,
            "title": c.title,
            "page": c.page,
            "page_end": c.page_end,
            "section": c.section_path,
            "start": c.start,
            "end": c.end,
            "chunk_id": c.chunk_id,
            "score": float(hit.score),
            "dense": None if hit.dense is None else float(hit.dense),
            "lexical": None if hit.lexical is None else float(hit.lexical),
            "mode": mode,
            "rank": rank,
        },
    )


def _check_k_mode(k: Any, mode: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadSetting(f"k must be an integer >= 1, got {k!r}")
    if mode not in MODES:
        raise BadSetting(f"unknown retrieval mode {mode!r}; expected one of: {', '.join(MODES)}")


class RagRetriever(BaseRetriever):
    """Passages from a ``rag`` index (hybrid, dense or lexical), ``k`` per query.

    Give ``settings`` (or nothing: ``RAG_*`` environment variables), optionally ``index_dir`` to
    point at another index folder, or an already loaded ``assistant`` to share it. ``k`` and
    ``mode`` default to the settings' values and can be overridden per call:
    ``retriever.invoke(question, k=3, mode="dense")``. The index is loaded once, on first use.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    settings: Settings | None = Field(default=None, exclude=True, repr=False)  # may hold an API key
    """Where the index is and how to search it; ``None`` reads ``Settings.from_env()``."""
    index_dir: Path | None = None
    """Index folder; overrides ``settings.index_dir``."""
    k: int | None = None
    """Passages per query; ``None`` means ``settings.k``."""
    mode: str | None = None
    """``hybrid``, ``dense`` or ``lexical``; ``None`` means ``settings.mode``."""
    check_fresh: bool = True
    """Refuse an index older than its corpus (``IndexStale``), as the CLI does."""
    filter: dict[str, Any] | None = None
    """Metadata filter on the documents' ``doc_id`` (or ``source``, the same value): ``{"doc_id": "a.pdf"}``
    or ``{"doc_id": ["a.pdf", "b.docx"]}`` searches those documents only (per call too:
    ``retriever.invoke(q, filter=...)``); ``None``: all."""
    assistant: Assistant | None = Field(default=None, exclude=True, repr=False)
    """An already loaded assistant to search (its settings apply); loaded lazily when ``None``."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # resolved here (not in a pydantic validator) so that bad values raise rag's own errors
        if self.assistant is not None:
            if self.settings is not None and self.settings != self.assistant.settings:
                raise BadSetting("give either settings or an assistant (whose settings apply), not both")
            self.settings = self.assistant.settings
        elif self.settings is None:
            self.settings = Settings.from_env()
        if self.index_dir is not None:
            if self.assistant is not None and Path(self.index_dir) != Path(self.assistant.settings.index_dir):
                raise BadSetting(
                    f"index_dir {str(self.index_dir)!r} differs from the assistant's index "
                    f"{str(self.assistant.settings.index_dir)!r}"
                )
            self.settings = self.settings.with_(index_dir=Path(self.index_dir))
        self.index_dir = Path(self.settings.index_dir)
        self.k = self.settings.k if self.k is None else self.k
        self.mode = self.settings.mode if self.mode is None else self.mode
        _check_k_mode(self.k, self.mode)

    def get_assistant(self) -> Assistant:
        """The loaded assistant (loads the index on the first call; one load per retriever)."""
        if self.assistant is None:
            with self._lock:
                if self.assistant is None:
                    self.assistant = Assistant.load(self.settings, check_fresh=self.check_fresh)
        return self.assistant

    def search(self, query: str, k: int | None = None, mode: str | None = None,
               filter: dict[str, Any] | None = None) -> list[Document]:
        """The top ``k`` passages for ``query`` as Documents (``None`` means this retriever's value)."""
        if not isinstance(query, str):
            raise BadQuestion(f"the query must be text, got {type(query).__name__}")
        k = self.k if k is None else k
        mode = self.mode if mode is None else mode
        docs = _filter_docs(self.filter if filter is None else filter)
        hits = self.get_assistant().search(query, k=k, mode=mode, docs=docs)
        return [hit_to_document(h, rank, mode) for rank, h in enumerate(hits, 1)]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, mode: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[Document]:
        return self.search(query, k=k, mode=mode, filter=filter)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        mode: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[Document]:
        # searching is CPU-bound and the assistant is thread-safe: run it off the event loop
        return await run_in_executor(None, self.search, query, k, mode, filter)


def _filter_docs(filter: dict[str, Any] | None) -> list[str] | None:
    """Document ids from a metadata filter ``{"doc_id": id or [ids]}`` (or ``source``); other keys are refused."""
    if not filter:
        return None
    if not isinstance(filter, dict) or len(filter) != 1 or next(iter(filter)) not in FILTER_KEYS:
        raise BadQuestion(f"filter supports one key, 'doc_id' or 'source' (a document id or a list of them), got {filter!r}")
    value = next(iter(filter.values()))
    docs = [value] if isinstance(value, str) else value
    if not isinstance(docs, (list, tuple)) or not docs or not all(isinstance(d, str) for d in docs):
        raise BadQuestion(f"the filter's value must be a document id or a non-empty list of them, got {value!r}")
    return list(docs)


FILTER_KEYS = ("doc_id", "source")


class RagEmbeddings(BaseModel, Embeddings):
    """The sentence-transformers model ``rag`` indexes with: L2-normalised vectors as lists of floats.

    ``RagEmbeddings(settings=...)``, or ``model`` / ``cache_dir`` directly; ``None`` values come
    from ``settings`` (or ``Settings.from_env()``). The model loads on the first call, once per
    process for each (model, cache folder).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    settings: Settings | None = Field(default=None, exclude=True, repr=False)  # may hold an API key
    model: str | None = None
    """sentence-transformers model name or local folder; ``None`` means ``settings.model``."""
    cache_dir: Path | None = None
    """Where the bundled model is extracted; ``None`` means ``settings.cache_dir``."""

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        base = self.settings if self.settings is not None else Settings.from_env()
        self.model = base.model if self.model is None else self.model
        self.cache_dir = Path(base.cache_dir if self.cache_dir is None else self.cache_dir)
        if not self.model.strip():
            raise BadSetting("model must name a sentence-transformers model or folder, got an empty string")

    @property
    def embedder(self):
        from .embed import get_embedder

        backend = self.settings.embed_backend if self.settings is not None else None
        return get_embedder(self.model, str(self.cache_dir), backend)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        texts = _check_texts(texts)
        if not texts:
            return []
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        if not isinstance(text, str):
            raise BadQuestion(f"embed_query takes a string, got {type(text).__name__}")
        return self.embed_documents([text])[0]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise BadQuestion(f"embed_documents takes a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadQuestion(f"text {i} must be a string, got {type(t).__name__}")
    return list(texts)
