"""Shared fixtures.

Integration fixtures use the real model and the real corpus, once per session:

- ``real_settings``: a session copy of ``corpus/`` and an index folder in a session tmp dir;
- ``real_index``: that index, built once with :func:`rag.index.build_index`;
- ``assistant``: :class:`rag.pipeline.Assistant` loaded once on it.

Unit tests use tiny hand-written corpora (``write_corpus``) and, for the index stage, one tiny index
built once per session (``tiny_source``) that tests copy (``tiny_copy``) before they change anything.

Two tiers. ``pytest -m "not slow"`` is the edit loop (seconds): there every embedder lookup
(``rag.embed.get_embedder``) answers with :class:`HashEmbedder`, and starting a process is an error.
A test is in the slow tier when it is marked ``slow`` or uses a fixture of ``SLOW_FIXTURES`` (marked
here, at collection): ``real_settings`` (the real corpus; ``real_index`` and ``assistant`` build on
it), ``real_model`` (the real embedder on a corpus of the test's own), ``spawn`` (starts processes)
or ``big_index`` (ANN indexes of thousands of vectors).
All settings share one model cache folder (the default), so the model is loaded once per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

import pytest
from hypothesis import settings as hypothesis_settings

from rag.settings import ChunkSettings, Settings, default_cache_dir

# No example database: property tests leave no .hypothesis/ folder in the working tree. CI (.ci/run sets
# RAG_TEST_DERANDOMIZE=1) draws the same examples on every run, so a red CI means a change broke something,
# not that a fresh clone drew new random examples; elsewhere each run draws new ones and keeps exploring.
hypothesis_settings.register_profile("rag", database=None, deadline=None)
hypothesis_settings.register_profile("rag-ci", database=None, deadline=None, derandomize=True)
hypothesis_settings.load_profile("rag-ci" if os.environ.get("RAG_TEST_DERANDOMIZE") == "1" else "rag")

REPO = Path(__file__).resolve().parents[1]
REAL_CORPUS = REPO / "corpus"
REAL_DOC_ID = "eu-commission-letter-migration-2023-12.txt"
FINLAND_Q = "How many European border guards have been deployed to Finland's border?"
CACHE_DIR = default_cache_dir()


# ---------------------------------------------------------------------------------------------
# Helpers


def write_corpus(folder: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``{relative name: text or bytes}`` into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    return folder


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """Write a minimal text PDF by hand (one Helvetica text object per page, one line per string).

    Plain PDF syntax with a correct xref table, so it needs no PDF-writing package."""
    objs: list[bytes] = []

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"] + [f"({esc(ln)}) Tj T*" for ln in lines] + ["ET"]
        stream = "\n".join(ops).encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_ids[i] + 1} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def blank_pdf() -> bytes:
    """A one-page PDF with no text layer (a scan that was never OCR'd)."""
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


class HashEmbedder:
    """The fast tier's embedder (simonw/llm's ``EmbedDemo`` idea): a bag of words hashed into 384
    buckets, L2-normalised. Deterministic, no model, an index in milliseconds, and texts that share
    words are close, so dense search still finds the passage that shares the question's words."""

    dim = 384

    def embed(self, texts):
        import re
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
            norm = float(np.linalg.norm(out[i]))
            if norm:
                out[i] /= norm
        return out


def small_manifest(documents: int = 1, chunks: int = 2, sentences: int = 3, **fields):
    """A :class:`rag.index.Manifest` with these counts (and any other fields), for code that shows one."""
    from rag.index import Counts, Manifest

    base = dict(format_version=1, model_id="m", dim=384, settings={}, files={}, artifacts={},
                counts=Counts(documents, chunks, sentences))
    return Manifest(**{**base, **fields})


def free_port() -> int:
    """A TCP port free on loopback right now (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``rag.cli.main(argv)`` in this process: (exit code, stdout, stderr); argparse exits count too."""
    from rag.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    """The one ``rag: error: ...`` line a user error prints (and no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rag: error: ")
    assert "Traceback" not in err
    return lines[0]


def use_chat(monkeypatch, chat) -> list:
    """Make ``rag.generate.make_chat_model`` (what Assistant.chat_model() and the app call) return
    ``chat``; returns the list of settings it was asked for."""
    from rag import generate

    asked: list = []

    def make(settings):
        asked.append(settings)
        return chat

    monkeypatch.setattr(generate, "make_chat_model", make)
    return asked


def settings_for(corpus: Path, index: Path, **kw) -> Settings:
    return Settings(corpus_dir=corpus, index_dir=index, cache_dir=CACHE_DIR, **kw)


# ---------------------------------------------------------------------------------------------
# The two tiers

#: Using any of these (directly or through another fixture) puts a test in the slow tier.
SLOW_FIXTURES = frozenset({"real_settings", "real_model", "spawn", "big_index"})


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_model() -> None:
    """Request this to build and query with the real embedding model (the test is then slow)."""


@pytest.fixture(scope="session")
def spawn() -> None:
    """Request this to start processes (the CLI, tesseract, a server); the test is then slow."""


@pytest.fixture(scope="session")
def big_index() -> None:
    """Request this from fixtures that build ANN indexes of thousands of vectors (HNSW, IVF-PQ)."""


def _no_spawn(self, args, *a, **k):
    raise AssertionError(f"a fast-tier test started a process ({args!r}): request the `spawn` fixture")


@pytest.fixture(autouse=True)
def _fast_tier(request, monkeypatch):
    """In the fast tier: the fake embedder for every lookup, and no processes."""
    if request.node.get_closest_marker("slow"):
        return
    import rag.embed

    monkeypatch.setattr(rag.embed, "get_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.setattr(subprocess.Popen, "__init__", _no_spawn)


@pytest.fixture(autouse=True)
def _no_rag_env(monkeypatch):
    """RAG_* variables of the developer's shell must not leak into tests (the CLI reads them)."""
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------------------------------------
# Real corpus, real model


@pytest.fixture(scope="session")
def real_settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("real")
    corpus = root / "corpus"
    shutil.copytree(REAL_CORPUS, corpus)
    return settings_for(corpus, root / "index")


@pytest.fixture(scope="session")
def real_index(real_settings):
    """The only build of the real-corpus index in a session."""
    from rag.index import build_index

    result = build_index(real_settings)
    assert result.status == "built"
    return result


@pytest.fixture(scope="session")
def assistant(real_settings, real_index):
    from rag.pipeline import Assistant

    return Assistant.load(real_settings)


@pytest.fixture(scope="session")
def real_text(real_settings) -> str:
    """The real document's text as the loader reads it (the text every offset refers to)."""
    from rag.text import decode_text

    return decode_text((real_settings.corpus_dir / REAL_DOC_ID).read_bytes())[0]


@pytest.fixture(scope="session")
def real_chunks(real_settings):
    from rag.chunk import chunk_documents
    from rag.load import load_corpus

    report = load_corpus(real_settings.corpus_dir)
    return chunk_documents(report.documents, real_settings.chunking)


# ---------------------------------------------------------------------------------------------
# A tiny corpus and its index (built once; copy before changing)

TINY_FILES: dict[str, str | bytes] = {
    "border.md": (
        "# Border Report\n\n"
        "## Finland\n\n"
        "Frontex deployed 50 border guards to the eastern border. They arrived in December.\n\n"
        "## Tunisia\n\n"
        "> Deliver seven boats to the coast guard.\n"
        "> Launch the procurement procedures.\n"
    ),
    "border.meta.json": '{"title": "Border Report 2023", "author": "Test"}',
    "notes.txt": (
        "Meeting notes\n\n"
        "The ministers met in Brussels on 3 May. They agreed a common plan on returns.\n\n"
        "A second meeting is planned for June in Rome.\n"
    ),
    "empty.txt": "",
}


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> tuple[Path, Path, object]:
    """(corpus, index, BuildResult) of the shared tiny index, built with :class:`HashEmbedder`."""
    from rag.index import build_index

    root = tmp_path_factory.mktemp("tiny")
    corpus = write_corpus(root / "corpus", TINY_FILES)
    index = root / "index"
    result = build_index(settings_for(corpus, index), embedder=HashEmbedder())
    return corpus, index, result


@pytest.fixture
def tiny_copy(tiny_source, tmp_path) -> Settings:
    """A private copy of the tiny corpus and its built index (file times preserved)."""
    corpus, index, _ = tiny_source
    shutil.copytree(corpus, tmp_path / "corpus")
    shutil.copytree(index, tmp_path / "index")
    return settings_for(tmp_path / "corpus", tmp_path / "index")


SMALL_CHUNKS = ChunkSettings(target_words=8, max_words=20, min_words=1)
