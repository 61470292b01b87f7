"""LangChain interfaces (rag.lc): LangChain's own standard suites, unmodified, on the real index and
the real model; then our own checks of what the suites do not look at (checkable metadata, modes,
k, chains, errors, equality with rag's embedder).

The standard suites configure themselves through properties, not fixtures, so a module fixture
puts the session's real settings and assistant into ``_REAL`` for the properties to read.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from conftest import CACHE_DIR, FINLAND_Q, REAL_DOC_ID, settings_for
from rag.text import collapse_ws
from rag.errors import BadQuestion, BadSetting, IndexMissing
from rag.lc import RagEmbeddings, RagRetriever
from rag.settings import DEFAULT_MODEL, MODES

_REAL: dict[str, Any] = {}

# The suites' async tests are plain ``async def``; pyproject does not set ``asyncio_mode = "auto"``,
# so the classes that hold them carry the asyncio mark (and silence its note on their sync tests).
ASYNC_SUITE = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async function"),
]

QUESTIONS = [
    FINLAND_Q,
    "Which Finnish head of government did von der Leyen assure of EU backing?",
    "What equipment will the Tunisian coast guard receive?",
    "What are the next steps with Egypt?",
    "Mauritania border management support",
]


@pytest.fixture(scope="module", autouse=True)
def _real(real_settings, real_index, assistant):
    _REAL.update(settings=real_settings, assistant=assistant)
    yield
    _REAL.clear()


# ---------------------------------------------------------------------------------------------
# LangChain's standard suites (must pass unmodified)


class _RealRetriever:
    pytestmark = ASYNC_SUITE

    @property
    def retriever_constructor(self) -> type[RagRetriever]:
        return RagRetriever

    @property
    def retriever_query_example(self) -> str:
        return FINLAND_Q


class TestRagRetrieverStandard(_RealRetriever, RetrieversIntegrationTests):
    """Hybrid (the default), each retriever loading the index itself from settings."""

    @property
    def retriever_constructor_params(self) -> dict:
        return {"settings": _REAL["settings"]}


class TestRagRetrieverDenseStandard(_RealRetriever, RetrieversIntegrationTests):
    """Dense, sharing the session's loaded assistant."""

    @property
    def retriever_constructor_params(self) -> dict:
        return {"assistant": _REAL["assistant"], "mode": "dense"}


class TestRagRetrieverLexicalStandard(_RealRetriever, RetrieversIntegrationTests):
    @property
    def retriever_constructor_params(self) -> dict:
        return {"assistant": _REAL["assistant"], "mode": "lexical"}


class TestRagEmbeddingsStandard(EmbeddingsIntegrationTests):
    pytestmark = ASYNC_SUITE

    @property
    def embeddings_class(self) -> type[RagEmbeddings]:
        return RagEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"settings": _REAL["settings"]}


class TestRagEmbeddingsUnitStandard(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[RagEmbeddings]:
        return RagEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": DEFAULT_MODEL, "cache_dir": str(CACHE_DIR)}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        # another spelling of the bundled model, so the value can only have come from RAG_MODEL
        return (
            {"RAG_MODEL": "all-MiniLM-L6-v2", "RAG_CACHE_DIR": str(CACHE_DIR)},
            {},
            {"model": "all-MiniLM-L6-v2", "cache_dir": CACHE_DIR},
        )


# ---------------------------------------------------------------------------------------------
# Retriever: metadata, modes, k


@pytest.fixture
def chunks_by_id(assistant):
    return {c.chunk_id: c for c in assistant.data.chunks}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("question", QUESTIONS)
def test_metadata_offsets_reproduce_the_source_span(assistant, real_text, chunks_by_id, mode, question):
    docs = RagRetriever(assistant=assistant, mode=mode, k=8).invoke(question)
    assert len(docs) == 8
    for rank, d in enumerate(docs, 1):
        m = d.metadata
        assert m["doc_id"] == m["source"] == REAL_DOC_ID
        assert collapse_ws(real_text[m["start"] : m["end"]]) == d.page_content
        assert d.id == m["chunk_id"]
        c = chunks_by_id[m["chunk_id"]]
        assert (m["start"], m["end"], m["page"], m["page_end"]) == (c.start, c.end, c.page, c.page_end)
        assert m["section"] == c.section_path and m["section"]
        assert m["title"] == assistant.data.docs[REAL_DOC_ID].title
        assert (m["rank"], m["mode"]) == (rank, mode)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_documents_are_the_assistants_hits_with_their_score_components(assistant, mode):
    retriever = RagRetriever(assistant=assistant, mode=mode, k=6)
    for q in QUESTIONS:
        docs = retriever.invoke(q)
        hits = assistant.search(q, k=6, mode=mode)
        assert [d.metadata["chunk_id"] for d in docs] == [h.chunk.chunk_id for h in hits]
        assert [d.metadata["score"] for d in docs] == [h.score for h in hits]
        assert [d.metadata["dense"] for d in docs] == [h.dense for h in hits]
        assert [d.metadata["lexical"] for d in docs] == [h.lexical for h in hits]
        for d in docs:
            if mode == "hybrid":
                assert d.metadata["dense"] is not None
            if mode == "lexical":
                assert d.metadata["dense"] is None and d.metadata["lexical"] is not None
            if mode == "dense":
                assert d.metadata["lexical"] is None and d.metadata["dense"] is not None


def test_modes_give_different_rankings(assistant):
    """Keeps the test above discriminating: a retriever that ignored its mode would fail it."""

    def ranking(mode: str) -> tuple:
        retriever = RagRetriever(assistant=assistant, mode=mode, k=5)
        return tuple(tuple(d.metadata["chunk_id"] for d in retriever.invoke(q)) for q in QUESTIONS)

    assert len({ranking(mode) for mode in MODES}) == 3


def test_mode_and_k_given_per_call_override_the_retrievers(assistant):
    retriever = RagRetriever(assistant=assistant, mode="hybrid", k=5)
    lexical = RagRetriever(assistant=assistant, mode="lexical", k=2).invoke(QUESTIONS[2])
    assert retriever.invoke(QUESTIONS[2], k=2, mode="lexical") == lexical
    assert len(retriever.invoke(QUESTIONS[2])) == 5  # the call did not change the retriever


@pytest.mark.parametrize("k", [1, 2, 4, 9, 20])
def test_k_passages_and_a_smaller_k_is_a_prefix(assistant, k):
    retriever = RagRetriever(assistant=assistant, k=k)
    docs = retriever.invoke(QUESTIONS[3])
    assert len(docs) == k
    assert len({d.metadata["chunk_id"] for d in docs}) == k
    full = retriever.invoke(QUESTIONS[3], k=20)
    assert docs == full[:k]


def test_defaults_come_from_settings_and_index_dir_overrides_them(real_settings, tmp_path):
    settings = real_settings.with_(index_dir=tmp_path / "elsewhere", k=3, mode="lexical")
    retriever = RagRetriever(settings=settings, index_dir=real_settings.index_dir)
    assert (retriever.k, retriever.mode, retriever.index_dir) == (3, "lexical", real_settings.index_dir)
    docs = retriever.invoke(FINLAND_Q)
    assert len(docs) == 3 and {d.metadata["mode"] for d in docs} == {"lexical"}


def test_the_index_loads_lazily_and_once_across_threads(real_settings):
    retriever = RagRetriever(settings=real_settings, k=3)
    assert retriever.assistant is None  # nothing loaded by the constructor
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(retriever.invoke, QUESTIONS * 4))
        loaded = list(pool.map(lambda _: retriever.get_assistant(), range(16)))
    assert all(a is loaded[0] for a in loaded) and retriever.assistant is loaded[0]
    assert results == [retriever.invoke(q) for q in QUESTIONS * 4]


@pytest.mark.asyncio
async def test_async_invoke_equals_sync(assistant):
    retriever = RagRetriever(assistant=assistant, k=4)
    got = await asyncio.gather(*(retriever.ainvoke(q, mode="dense") for q in QUESTIONS))
    assert got == [retriever.invoke(q, mode="dense") for q in QUESTIONS]


# ---------------------------------------------------------------------------------------------
# In a chain


def _numbered(docs) -> str:
    return "\n\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, 1))


def test_retriever_in_a_chain_feeds_numbered_passages_and_their_sources_to_a_prompt(assistant):
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableParallel, RunnablePassthrough

    retriever = RagRetriever(assistant=assistant, k=3)
    prompt = ChatPromptTemplate.from_template("Passages:\n{context}\n\nSources: {sources}\n\nQuestion: {question}")
    def cited(docs) -> str:
        return "; ".join(f"[{i}] p.{d.metadata['page']} {d.metadata['section']}" for i, d in enumerate(docs, 1))

    sources = retriever | cited
    chain = RunnableParallel(context=retriever | _numbered, sources=sources, question=RunnablePassthrough()) | prompt

    text = chain.invoke(FINLAND_Q).to_string()
    assert "[1] " + retriever.invoke(FINLAND_Q)[0].page_content in text
    assert "50 European border guards" in text and "[1] p.1 Letter" in text and FINLAND_Q in text

    batched = chain.batch(QUESTIONS[:2])
    assert [b.to_string() for b in batched] == [chain.invoke(q).to_string() for q in QUESTIONS[:2]]
    assert asyncio.run(chain.ainvoke(FINLAND_Q)).to_string() == text


def test_retriever_with_a_fake_chat_model_end_to_end(assistant):
    """LangChain's own fake stands in for the LLM (no model server here); the rest is real."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    seen = []
    prompt = ChatPromptTemplate.from_template("{context}\n\nQ: {question}")
    llm = GenericFakeChatModel(messages=iter([AIMessage("50 European border guards [1].")]))
    chain = (
        {"context": RagRetriever(assistant=assistant, k=2) | _numbered, "question": RunnablePassthrough()}
        | prompt
        | (lambda p: seen.append(p.to_string()) or p)
        | llm
        | StrOutputParser()
    )
    assert chain.invoke(FINLAND_Q) == "50 European border guards [1]."
    assert seen[0].startswith("Human: [1] ") and "[2] " in seen[0] and "50 European border guards" in seen[0]


# ---------------------------------------------------------------------------------------------
# Errors: rag's own, not tracebacks from deep inside


@pytest.mark.parametrize("query", ["", "   ", "\x00\n\t"])
def test_an_empty_query_raises_bad_question(assistant, query):
    retriever = RagRetriever(assistant=assistant)
    with pytest.raises(BadQuestion, match="empty"):
        retriever.invoke(query)
    with pytest.raises(BadQuestion, match="empty"):
        asyncio.run(retriever.ainvoke(query))


def test_bad_arguments_raise_rags_errors(assistant, real_settings):
    with pytest.raises(BadSetting, match="unknown retrieval mode 'hybird'"):
        RagRetriever(assistant=assistant, mode="hybird")
    with pytest.raises(BadSetting, match="k must be an integer >= 1, got 0"):
        RagRetriever(assistant=assistant, k=0)
    with pytest.raises(BadSetting, match="not both"):
        RagRetriever(assistant=assistant, settings=real_settings.with_(k=7))
    retriever = RagRetriever(assistant=assistant)
    with pytest.raises(BadQuestion, match="k must be >= 1, got 0"):
        retriever.invoke(FINLAND_Q, k=0)
    with pytest.raises(BadQuestion, match="unknown retrieval mode 'semantic'"):
        retriever.invoke(FINLAND_Q, mode="semantic")
    with pytest.raises(BadQuestion, match="must be text, got int"):
        retriever.invoke(42)


def test_a_missing_index_is_rags_index_missing_on_first_use(real_settings, tmp_path):
    retriever = RagRetriever(settings=settings_for(real_settings.corpus_dir, tmp_path / "no-index"))
    with pytest.raises(IndexMissing, match="no index at .*rag index"):
        retriever.invoke(FINLAND_Q)


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_embeddings_equal_rags_own_embedder(real_settings, real_chunks):
    from rag.embed import get_embedder

    own = get_embedder(real_settings.model, str(real_settings.cache_dir))
    lc = RagEmbeddings(settings=real_settings)
    texts = [c.text for c in real_chunks[:6]] + ["Finland", ""]
    got = np.asarray(lc.embed_documents(texts), dtype=np.float32)
    assert got.shape == (len(texts), own.dim)
    assert np.array_equal(got, own.embed(texts))
    assert np.array_equal(np.asarray(lc.embed_query(FINLAND_Q), dtype=np.float32), own.embed([FINLAND_Q])[0])
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert asyncio.run(lc.aembed_documents(texts[:3])) == lc.embed_documents(texts[:3])


def test_embeddings_reproduce_the_vectors_in_the_index(assistant):
    chunks = assistant.data.chunks[:16]
    got = np.asarray(RagEmbeddings(settings=assistant.settings).embed_documents([c.search_text() for c in chunks]))
    stored = assistant.data.vectors.reconstruct_batch(np.arange(len(chunks), dtype=np.int64))
    assert np.allclose(got, stored, atol=1e-5)


def test_embeddings_in_a_langchain_vector_store_find_the_finland_passage(real_chunks):
    from langchain_core.vectorstores import InMemoryVectorStore

    chunks = real_chunks[:24]  # the letter, the Finland passage among them: enough to rank
    store = InMemoryVectorStore(embedding=RagEmbeddings(cache_dir=CACHE_DIR))
    store.add_texts([c.text for c in chunks], metadatas=[{"start": c.start} for c in chunks])
    best = store.similarity_search("European border guards deployed in Finland", k=1)[0]
    assert "50 European border guards" in best.page_content


def test_embeddings_bad_input_raises_bad_question():
    emb = RagEmbeddings(cache_dir=CACHE_DIR)
    assert emb.embed_documents([]) == []
    with pytest.raises(BadQuestion, match="list of strings, got str"):
        emb.embed_documents("not a list")
    with pytest.raises(BadQuestion, match="text 1 must be a string, got int"):
        emb.embed_documents(["ok", 3])
    with pytest.raises(BadQuestion, match="takes a string, got NoneType"):
        emb.embed_query(None)
    with pytest.raises(BadSetting, match="empty string"):
        RagEmbeddings(model=" ", cache_dir=CACHE_DIR)


# ---------------------------------------------------------------------------------------------
# Imports stay lazy


def test_import_rag_does_not_import_langchain_and_rag_lc_loads_no_model():
    code = (
        "import sys, rag\n"
        "assert not [m for m in sys.modules if m.startswith('langchain')], 'import rag loaded langchain'\n"
        "import rag.lc\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'faiss') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
