"""Stage 5b: retrieval in a search engine that scales out: PostgreSQL with pgvector (``store =
"postgres"``). The default store (``"faiss"``: FAISS and bm25s files in the index folder) stays the
zero-set-up choice; this one puts the passage vectors, the sentence vectors and BM25 postings in
PostgreSQL, where dense, lexical and hybrid ranking run as one SQL statement, and where replication
(streaming replicas) and sharding (Citus: ``passages``, ``sentences`` and ``postings`` distributed
by ``pid``) are the engine's own.

Same passages, same scores: the engine ranks exactly what :mod:`rag.retrieve` ranks, by the same
formulas (dense: ``PASSAGE_WEIGHT`` * passage cosine + the rest * best sentence cosine; BM25:
bm25s's Lucene variant, k1 1.5, b 0.75, rag's tokenizer; fusion: :func:`rag.retrieve.weighted` or
:func:`rag.retrieve.rrf`). Rows carry each passage's document id and exact character span; the
index folder still holds the documents, passages and the answer step's data, and is matched to
the engine by a signature over the passages' keys (a mismatch is :class:`EngineStale`).

Indexing (:meth:`Engine.sync`) is incremental and idempotent: each passage has a key (a digest of
its document, span and text), passages the engine lacks are added and those it holds but the
index no longer has are removed, in batches, each batch one transaction (postings, document
frequencies and corpus statistics move together). A sync interrupted at any point (the engine
restarting, the process killed) leaves whole batches only; the next sync, or the same one after
reconnecting, adds what is missing, never a duplicate.

Approximate search follows :mod:`rag.ann`: up to ``EXACT_MAX`` vectors every passage and sentence
is scored exactly (no vector index); past it the passages get an HNSW index (pgvector; M and
ef_construction as FAISS's) and only the candidates' sentences are scored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Iterable, Sequence

import numpy as np

from .errors import BadSetting, EngineStale, EngineUnavailable
from .settings import NAMESPACE, shown_url as _shown

if TYPE_CHECKING:
    from .index import IndexData

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: bm25s's defaults (rag.lexical builds ``bm25s.BM25()``): Lucene's formula without the (k1 + 1) factor.
K1, B = 1.5, 0.75
BATCH = 500  # passages per transaction while indexing
#: Approximate corpora (past EXACT_MAX) read each question term's postings best-first, this many at
#: most, and score those passages exactly (impact-ordered early termination). A posting list that is
#: shorter is read whole, so small corpora are exact. ``python -m benchmarks.engine 1000000
#: --depths=2000,8000,20000`` (median question: 41k postings): hybrid recall@10 against exact search
#: 0.57 / 0.86 / 0.96, lexical p50 8 / 23 / 35 ms; at 100k, 8000 is already exact. Recall first.
LEXICAL_DEPTH = 20000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 256  # as rag.ann's FAISS graph
RETRY_S = 60.0  # how long a sync waits for a restarting engine before giving up

Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


def passage_key(doc_id: str, start: int, end: int, search_text: str) -> str:
    """A passage's identity in the engine: its document, exact span and the text it is searched by."""
    h = hashlib.sha256(f"{doc_id}\0{start}\0{end}\0{search_text}".encode("utf-8"))
    return h.hexdigest()[:32]


def index_keys(data: "IndexData") -> list[str]:
    """The key of every passage of a loaded index, in index order."""
    return [passage_key(c.doc_id, c.start, c.end, c.search_text()) for c in data.chunks]


def signature(keys: Iterable[str]) -> str:
    """One digest of a set of passage keys (order-free): what the engine and an index folder compare."""
    h = hashlib.sha256()
    for k in sorted(keys):
        h.update(k.encode("ascii"))
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class SyncReport:
    added: int
    removed: int
    kept: int
    seconds: float
    retries: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class Ranked:
    """One engine result: the passage's key and span, the ranking score and both component scores."""

    key: str
    doc_id: str
    start: int
    end: int
    score: float
    dense: float | None
    lexical: float | None


def check_url(url: str) -> str:
    if not url:
        raise BadSetting('store = "postgres" needs store_url (RAG_STORE_URL), e.g. postgresql://rag@127.0.0.1:5433/rag')
    if not re.match(r"^postgres(ql)?://", url):
        raise BadSetting(f"store_url must be a postgresql:// URL, got {_shown(url)!r}")
    return url


class Engine:
    """One namespace (a PostgreSQL schema) in one database. Thread-safe: each thread gets its own
    connection, re-opened after the engine restarts."""

    def __init__(self, url: str, namespace: str = "rag", connect_timeout_s: float = 5.0) -> None:
        self.url = check_url(url)
        if not NAMESPACE.match(namespace):
            raise BadSetting(f"store_namespace must be a lower-case SQL identifier, got {namespace!r}")
        self.ns = namespace
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Engine({_shown(self.url)!r}, namespace={self.ns!r})"

    # -- connections --------------------------------------------------------------------------

    def _connect(self):
        try:
            import psycopg
            from pgvector.psycopg import register_vector
        except ImportError as exc:
            raise EngineUnavailable("store = \"postgres\" needs the engine extra: pip install -e '.[engine]'") from exc
        try:
            conn = psycopg.connect(self.url, connect_timeout=int(max(1, self.connect_timeout_s)),
                                   prepare_threshold=None, application_name="rag")
        except psycopg.OperationalError as exc:
            raise EngineUnavailable(f"search engine unreachable at {_shown(self.url)}: {_first_line(exc)}") from exc
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.commit()
        except psycopg.Error:
            conn.rollback()  # no right to create it: fine if it exists
        try:
            register_vector(conn)
        except psycopg.ProgrammingError as exc:
            conn.close()
            raise EngineUnavailable(f"the database at {_shown(self.url)} has no pgvector extension (CREATE EXTENSION vector)") from exc
        return conn

    def conn(self):
        c = getattr(self._local, "conn", None)
        if c is None or c.closed or c.broken:
            c = self._local.conn = self._connect()
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _run(self, fn: Callable, *args):
        """``fn(conn, *args)`` in a transaction; an engine that went away is :class:`EngineUnavailable`
        (the next call reconnects)."""
        import psycopg

        conn = self.conn()
        try:
            with conn.transaction():
                return fn(conn, *args)
        except psycopg.OperationalError as exc:  # gone, restarting, shutting down: reconnect next time
            self.close()
            raise EngineUnavailable(f"search engine at {_shown(self.url)} failed: {_first_line(exc)}") from exc
        except psycopg.errors.UndefinedTable as exc:  # the namespace was dropped under us
            raise EngineStale(f"the search engine ({self.ns} at {_shown(self.url)}) holds no index: run `rag index`") from exc
        except psycopg.Error as exc:
            raise EngineUnavailable(f"search engine at {_shown(self.url)} refused the query: {_first_line(exc)}") from exc

    # -- schema ---------------------------------------------------------------------------------

    def _t(self, name: str) -> str:
        return f"{self.ns}.{name}"

    def _create(self, conn, dim: int) -> None:
        ns = self.ns
        conn.execute(f"SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rag-schema:{ns}",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ns}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.corpus (id int PRIMARY KEY CHECK (id = 1), "
                     "n bigint NOT NULL, total_dl bigint NOT NULL)")
        conn.execute(f"INSERT INTO {ns}.corpus VALUES (1, 0, 0) ON CONFLICT DO NOTHING")
        conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {ns}.pid_seq")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.passages (pid bigint PRIMARY KEY, key text NOT NULL UNIQUE, "
                     f"doc_id text NOT NULL, start_char int NOT NULL, end_char int NOT NULL, dl int NOT NULL, "
                     f"emb vector({dim}) NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS passages_doc ON {ns}.passages (doc_id)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.sentences (pid bigint NOT NULL, emb vector({dim}) NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS sentences_pid ON {ns}.sentences (pid)")
        # dl is repeated in each posting so BM25 needs no join; w, the term's BM25 weight without idf at
        # the corpus's average length when it was added, orders a term's posting list best-first
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.postings (term text NOT NULL, pid bigint NOT NULL, "
                     "tf int NOT NULL, dl int NOT NULL, w real NOT NULL)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS postings_term ON {ns}.postings (term, w DESC) INCLUDE (pid, tf, dl)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS postings_pid ON {ns}.postings (pid)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {ns}.terms (term text PRIMARY KEY, df int NOT NULL)")
        have = dict(conn.execute(f"SELECT key, value FROM {ns}.meta").fetchall())
        if not have:
            conn.execute(f"INSERT INTO {ns}.meta VALUES ('schema', %s), ('dim', %s)", (str(SCHEMA_VERSION), str(dim)))
        elif have.get("schema") != str(SCHEMA_VERSION) or have.get("dim") != str(dim):
            raise EngineStale(
                f"engine namespace {ns!r} holds schema {have.get('schema')} with {have.get('dim')}-dimensional vectors, "
                f"this index needs schema {SCHEMA_VERSION} with {dim}: drop it (rag engine reset) or pick another store_namespace"
            )

    def meta(self) -> dict[str, str]:
        def q(conn):
            if conn.execute("SELECT to_regclass(%s)", (self._t("meta"),)).fetchone()[0] is None:
                return {}
            return dict(conn.execute(f"SELECT key, value FROM {self._t('meta')}").fetchall())

        return self._run(q)

    def count(self) -> int:
        return int(self._run(lambda c: c.execute(f"SELECT n FROM {self._t('corpus')}").fetchone()[0]))

    def reset(self) -> None:
        """Drop this namespace and everything in it."""
        self._run(lambda c: c.execute(f"DROP SCHEMA IF EXISTS {self.ns} CASCADE"))

    # -- indexing -------------------------------------------------------------------------------

    def sync(self, data: "IndexData", batch: int = BATCH, progress: Progress = _noop,
             retry_s: float = RETRY_S, keys: Sequence[str] | None = None) -> SyncReport:
        """Make the engine hold exactly the passages of ``data`` (see the module docstring). Waits up
        to ``retry_s`` for an engine that restarts mid-way, then continues where it stopped."""
        t0 = time.perf_counter()
        keys = list(index_keys(data) if keys is None else keys)
        retries = 0
        deadline = None
        while True:
            try:
                added, removed, kept = self._sync_once(data, keys, batch, progress)
                break
            except EngineUnavailable as exc:
                now = time.monotonic()
                deadline = deadline or now + retry_s
                if now > deadline:
                    raise
                retries += 1
                log.warning("engine went away while indexing (%s); retrying", exc)
                time.sleep(0.5)
        return SyncReport(added, removed, kept, round(time.perf_counter() - t0, 3), retries)

    def _sync_once(self, data: "IndexData", keys: list[str], batch: int, progress: Progress) -> tuple[int, int, int]:
        dim = int(data.vectors.d)
        self._run(self._create, dim)
        held = dict(self._run(lambda c: c.execute(f"SELECT key, pid FROM {self._t('passages')}").fetchall()))
        wanted = {k: i for i, k in enumerate(keys)}
        gone = [pid for k, pid in held.items() if k not in wanted]
        todo = [i for k, i in wanted.items() if k not in held]
        kept = len(held) - len(gone)
        for j in range(0, len(gone), batch):
            self._run(self._remove, gone[j: j + batch])
            progress("engine: remove", min(j + batch, len(gone)), len(gone))
        from .lexical import tokenize

        for j in range(0, len(todo), batch):
            rows = todo[j: j + batch]
            texts = [data.chunks[i].search_text() for i in rows]
            tokens = [tokenize(t) or [""] for t in texts]  # as rag.lexical: an empty passage has length 1
            self._run(self._add, data, rows, [keys[i] for i in rows], tokens)
            progress("engine: add", min(j + batch, len(todo)), len(todo))
        self._run(self._finish, dim, signature(keys), len(keys))
        if todo or gone:
            self._vacuum()
        return len(todo), len(gone), kept

    def _vacuum(self) -> None:
        """VACUUM (ANALYZE) after a change: fresh statistics for the planner, and a visibility map that
        lets posting lists be read from their index alone."""
        import psycopg

        conn = self.conn()
        conn.autocommit = True
        try:
            conn.execute(f"VACUUM (ANALYZE) {self._t('postings')}, {self._t('passages')}, {self._t('sentences')}")
        except psycopg.OperationalError as exc:
            self.close()
            raise EngineUnavailable(f"search engine at {_shown(self.url)} failed: {_first_line(exc)}") from exc
        finally:
            if not conn.closed:
                conn.autocommit = False

    def _remove(self, conn, pids: list[int]) -> None:
        t = self._t
        conn.execute(f"SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rag-sync:{self.ns}",))
        conn.execute(
            f"WITH d AS (DELETE FROM {t('postings')} WHERE pid = ANY(%s) RETURNING term), "
            f"c AS (SELECT term, count(*) AS n FROM d GROUP BY term) "
            f"UPDATE {t('terms')} x SET df = x.df - c.n FROM c WHERE x.term = c.term", (pids,))
        conn.execute(f"DELETE FROM {t('terms')} WHERE df <= 0")
        conn.execute(f"DELETE FROM {t('sentences')} WHERE pid = ANY(%s)", (pids,))
        conn.execute(
            f"WITH d AS (DELETE FROM {t('passages')} WHERE pid = ANY(%s) RETURNING dl) "
            f"UPDATE {t('corpus')} SET n = n - (SELECT count(*) FROM d), total_dl = total_dl - (SELECT coalesce(sum(dl), 0) FROM d)",
            (pids,))

    def _add(self, conn, data: "IndexData", rows: list[int], keys: list[str], tokens: list[list[str]]) -> None:
        t = self._t
        conn.execute(f"SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rag-sync:{self.ns}",))
        # another sync may have added some of these since we looked: skip them (never a duplicate)
        present = {k for (k,) in conn.execute(f"SELECT key FROM {t('passages')} WHERE key = ANY(%s)", (keys,))}
        sel = [j for j, k in enumerate(keys) if k not in present]
        if not sel:
            return
        pids = [p for (p,) in conn.execute(f"SELECT nextval('{t('pid_seq')}') FROM generate_series(1, %s)", (len(sel),))]
        vecs = data.vectors.reconstruct_batch(np.asarray([rows[j] for j in sel], dtype=np.int64)).astype(np.float32)
        n_sent = len(data.sentence_first)
        with conn.cursor() as cur:
            with cur.copy(f"COPY {t('passages')} (pid, key, doc_id, start_char, end_char, dl, emb) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "text", "text", "int4", "int4", "int4", "vector"])
                for pid, j, v in zip(pids, sel, vecs):
                    c = data.chunks[rows[j]]
                    cp.write_row((pid, keys[j], c.doc_id, c.start, c.end, len(tokens[j]), v))
            with cur.copy(f"COPY {t('sentences')} (pid, emb) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "vector"])
                for pid, j in zip(pids, sel):
                    i = rows[j]
                    first = int(data.sentence_first[i])
                    end = int(data.sentence_first[i + 1]) if i + 1 < n_sent else len(data.sentence_vecs)
                    for v in np.asarray(data.sentence_vecs[first:end], dtype=np.float32):
                        cp.write_row((pid, v))
            n0, total0 = conn.execute(f"SELECT n, total_dl FROM {t('corpus')}").fetchone()
            avgdl = (total0 + sum(len(tokens[j]) for j in sel)) / (n0 + len(sel))
            c0, c1 = K1 * (1 - B), K1 * B / avgdl
            with cur.copy(f"COPY {t('postings')} (term, pid, tf, dl, w) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["text", "int8", "int4", "int4", "float4"])
                for pid, j in zip(pids, sel):
                    dl = len(tokens[j])
                    for term, tf in Counter(tokens[j]).items():
                        cp.write_row((term, pid, tf, dl, tf / (tf + c0 + c1 * dl)))
        conn.execute(
            f"INSERT INTO {t('terms')} (term, df) SELECT term, count(*) FROM {t('postings')} WHERE pid = ANY(%s) GROUP BY term "
            f"ON CONFLICT (term) DO UPDATE SET df = {t('terms')}.df + excluded.df", (pids,))
        conn.execute(f"UPDATE {t('corpus')} SET n = n + %s, total_dl = total_dl + %s",
                     (len(sel), sum(len(tokens[j]) for j in sel)))

    def _finish(self, conn, dim: int, sig: str, n: int) -> None:
        t = self._t
        from .ann import EXACT_MAX

        n_sent = conn.execute(f"SELECT count(*) FROM {t('sentences')}").fetchone()[0]
        has_ann = conn.execute("SELECT to_regclass(%s)", (f"{self.ns}.passages_hnsw",)).fetchone()[0] is not None
        if n + n_sent > EXACT_MAX and not has_ann:
            # the graph is built in memory while it fits (about 2.5 KB a 384-d vector), much slower after
            conn.execute(f"SET LOCAL maintenance_work_mem = '{min(8192, max(256, n * 3 * dim // 384 // 1024))}MB'")
            conn.execute(f"CREATE INDEX passages_hnsw ON {t('passages')} USING hnsw (emb vector_ip_ops) "
                         f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
        elif n + n_sent <= EXACT_MAX and has_ann:  # shrunk below it: exact again (the planner would use the graph)
            conn.execute(f"DROP INDEX {self.ns}.passages_hnsw")
        conn.execute(f"INSERT INTO {t('meta')} VALUES ('signature', %s), ('approximate', %s) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (sig, "1" if n + n_sent > EXACT_MAX else "0"))

    # -- search ---------------------------------------------------------------------------------

    def check(self, sig: str) -> None:
        """:class:`EngineStale` unless the engine holds the passages whose :func:`signature` is ``sig``."""
        held = self.meta().get("signature")
        if held != sig:
            what = "no index" if held is None else "another version of the index"
            raise EngineStale(f"the search engine ({self.ns} at {_shown(self.url)}) holds {what}: run `rag index`")

    def rank(self, qvec: np.ndarray | None, qtokens: Sequence[str], k: int, mode: str = "hybrid",
             fusion: str = "weighted", pool: int = 50, docs: Collection[str] | None = None,
             approximate: bool | None = None, depth: int | None = -1) -> list[Ranked]:
        """The top ``k`` passages, ranked in the engine as :func:`rag.retrieve.search` ranks them.
        ``depth``: postings read per question term on an approximate corpus (default
        :data:`LEXICAL_DEPTH`; None: all of them, exact)."""
        from .retrieve import PASSAGE_WEIGHT

        n = max(k, pool)
        if approximate is None:
            approximate = self._approximate()
        terms = [t for t in qtokens if t]
        p = {"q": None if qvec is None else np.asarray(qvec, dtype=np.float32).ravel(), "n": n, "n2": 2 * n,
             "k": k, "terms": terms, "docs": list(docs) if docs else None, "pw": PASSAGE_WEIGHT}
        sql = _rank_sql(self.ns, mode, fusion, dense=qvec is not None and mode != "lexical",
                        lexical=mode != "dense" and bool(terms), sentences=not approximate and not docs,
                        docs=bool(docs), k1=K1, b=B,
                        depth=(LEXICAL_DEPTH if depth == -1 else depth) if approximate and not docs else None)

        def q(conn):
            if approximate:
                conn.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, 2 * n)}")
            return conn.execute(sql, p).fetchall()

        return [Ranked(*r) for r in self._run(q)]

    def _approximate(self) -> bool:
        v = getattr(self, "_approx", None)
        if v is None:
            v = self._approx = self.meta().get("approximate") == "1"
        return v


def _rank_sql(ns: str, mode: str, fusion: str, *, dense: bool, lexical: bool, sentences: bool, docs: bool,
              k1: float, b: float, depth: int | None = None) -> str:
    """One statement: CTE ``dn`` (dense top n), ``lx`` (BM25 top n), fused top k."""
    where_doc = "WHERE doc_id = ANY(%(docs)s)" if docs else ""
    parts = []
    if dense:
        if docs:  # a document filter: every allowed passage scored exactly (as rag.retrieve)
            cand = f"cand AS (SELECT pid FROM {ns}.passages {where_doc})"
        else:
            cand = (f"pc AS (SELECT pid FROM {ns}.passages ORDER BY emb <#> %(q)s LIMIT %(n2)s)")
            if sentences:
                cand += (f", sc AS (SELECT pid FROM {ns}.sentences ORDER BY emb <#> %(q)s LIMIT %(n2)s)"
                         ", cand AS (SELECT pid FROM pc UNION SELECT pid FROM sc)")
            else:
                cand += ", cand AS (SELECT pid FROM pc)"
        parts.append(cand)
        parts.append(
            f"dn AS (SELECT p.pid, (%(pw)s * -(p.emb <#> %(q)s) + (1 - %(pw)s) * coalesce("
            f"(SELECT max(-(s.emb <#> %(q)s)) FROM {ns}.sentences s WHERE s.pid = p.pid), -(p.emb <#> %(q)s)))::float8 AS d "
            f"FROM cand JOIN {ns}.passages p USING (pid) ORDER BY d DESC, p.pid LIMIT %(n)s)")
    else:
        parts.append("dn AS (SELECT NULL::bigint AS pid, NULL::float8 AS d WHERE false)")
    if lexical:
        doc_join = f"JOIN {ns}.passages pp ON pp.pid = x.pid AND pp.doc_id = ANY(%(docs)s) " if docs else ""
        parts.append(
            f"st AS (SELECT n::float8 AS n, total_dl::float8 / greatest(n, 1) AS avgdl FROM {ns}.corpus), "
            f"qt AS (SELECT t.term, q.mult * ln(1.0 + (st.n - t.df + 0.5) / (t.df + 0.5)) AS idf, "
            f"{k1} * (1 - {b}) AS c0, {k1} * {b} / st.avgdl AS c1 "
            f"FROM (SELECT term, count(*)::float8 AS mult FROM unnest(%(terms)s::text[]) AS term GROUP BY term) q "
            f"JOIN {ns}.terms t USING (term) CROSS JOIN st WHERE t.term = ANY(%(terms)s)), "
            # the posting lists read through the primary key: "term = ANY(the question's terms)" lets
            # the planner see which terms (joined to qt alone, it would hash the whole postings table)
            + (f"lx AS (SELECT x.pid, sum(qt.idf * x.tf / (x.tf + qt.c0 + qt.c1 * x.dl))::float8 AS s "
               f"FROM {ns}.postings x JOIN qt ON qt.term = x.term {doc_join}WHERE x.term = ANY(%(terms)s) "
               f"GROUP BY x.pid ORDER BY s DESC, x.pid LIMIT %(n)s)" if depth is None else
               # approximate: each term's best ``depth`` postings (by w), scored exactly
               f"lx AS (SELECT x.pid, sum(qt.idf * x.tf / (x.tf + qt.c0 + qt.c1 * x.dl))::float8 AS s "
               f"FROM qt CROSS JOIN LATERAL (SELECT pid, tf, dl FROM {ns}.postings WHERE term = qt.term "
               f"ORDER BY w DESC LIMIT {int(depth)}) x GROUP BY x.pid ORDER BY s DESC, x.pid LIMIT %(n)s)"))
    else:
        parts.append("lx AS (SELECT NULL::bigint AS pid, NULL::float8 AS s WHERE false)")
    if mode == "dense":
        fused = "f AS (SELECT pid, d AS score FROM dn)"
    elif mode == "lexical":
        fused = "f AS (SELECT pid, s AS score FROM lx)"
    elif fusion == "rrf":
        fused = ("f AS (SELECT pid, sum(r) AS score FROM ("
                 "SELECT pid, 1.0 / (60 + row_number() OVER (ORDER BY d DESC, pid)) AS r FROM dn UNION ALL "
                 "SELECT pid, 1.0 / (60 + row_number() OVER (ORDER BY s DESC, pid)) AS r FROM lx) u GROUP BY pid)")
    else:  # weighted: a passage outside the dense top n gets the lowest dense score seen
        fused = ("f AS (SELECT coalesce(dn.pid, lx.pid) AS pid, 0.6 * coalesce(dn.d, (SELECT coalesce(min(d), 0) FROM dn)) "
                 "+ 0.4 * coalesce(lx.s / nullif((SELECT max(s) FROM lx), 0), 0) AS score FROM dn FULL OUTER JOIN lx USING (pid))")
    parts.append(fused)
    dense_of = "coalesce(dn.d, -(p.emb <#> %(q)s))" if dense else "dn.d"
    return (
        "WITH " + ", ".join(parts) + " "
        f"SELECT p.key, p.doc_id, p.start_char, p.end_char, f.score::float8, ({dense_of})::float8, lx.s "
        f"FROM (SELECT * FROM f ORDER BY score DESC, pid LIMIT %(k)s) f JOIN {ns}.passages p USING (pid) "
        "LEFT JOIN dn USING (pid) LEFT JOIN lx USING (pid) ORDER BY f.score DESC, f.pid"
    )


class EngineSearch:
    """An :class:`Engine` matched to a loaded index folder: what :func:`rag.retrieve.search` calls
    with ``store = "postgres"``. Built by :func:`for_index`, which checks the engine holds this
    index; results map back to the folder's passages by key."""

    def __init__(self, engine: Engine, data: "IndexData", keys: Sequence[str] | None = None) -> None:
        self.engine = engine
        self.keys = list(index_keys(data) if keys is None else keys)
        self.position = {k: i for i, k in enumerate(self.keys)}
        self.signature = signature(self.keys)

    def check(self) -> None:
        self.engine.check(self.signature)

    def search(self, data: "IndexData", qvec, qtokens, k, mode, fusion, pool, docs) -> list:
        from .retrieve import Hit

        rows = self.engine.rank(qvec, qtokens, k, mode, fusion, pool, docs)
        hits = []
        for r in rows:
            i = self.position.get(r.key)
            if i is None:  # the engine was re-indexed from another folder since we checked
                raise EngineStale(f"the search engine ({self.engine.ns}) holds passages this index does not: run `rag index`")
            hits.append(Hit(data.chunks[i], r.score, r.dense, r.lexical, i))
        hits.sort(key=lambda h: (-h.score, h.index))  # rag.retrieve's tie order (engine ids may differ)
        return hits


def for_index(settings, data: "IndexData") -> EngineSearch | None:
    """The engine search of ``settings`` for ``data`` (None with ``store = "faiss"``), checked."""
    if settings.store != "postgres":
        return None
    es = EngineSearch(Engine(settings.store_url, settings.store_namespace), data)
    es.check()
    return es


def engine_for(settings, data: "IndexData", namespace: str | None = None, progress: Progress = _noop) -> EngineSearch | None:
    """For the eval runners, which build their own index folders: the engine search of ``data`` in
    ``namespace`` (default ``settings.store_namespace``), synced first. None with ``store = "faiss"``."""
    if settings.store != "postgres":
        return None
    engine = Engine(settings.store_url, namespace or settings.store_namespace)
    es = EngineSearch(engine, data)
    if engine.meta().get("signature") != es.signature:
        engine.sync(data, progress=progress, keys=es.keys)
    es.check()
    return es


def sync_index(settings, progress: Progress = _noop, batch: int = BATCH) -> SyncReport | None:
    """``rag index`` with ``store = "postgres"``: make the engine hold the index folder's passages
    (a no-op returning quickly when it already does). None with ``store = "faiss"``."""
    if settings.store != "postgres":
        return None
    from .index import load_index

    data = load_index(settings, check_fresh=False)
    engine = Engine(settings.store_url, settings.store_namespace)
    keys = index_keys(data)
    t0 = time.perf_counter()
    if engine.meta().get("signature") == signature(keys):
        return SyncReport(0, 0, len(keys), round(time.perf_counter() - t0, 3))
    return engine.sync(data, batch=batch, progress=progress, keys=keys)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

