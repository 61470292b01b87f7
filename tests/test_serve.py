"""rag.serve, the HTTP API: the contract of each endpoint, bad input, the API key, limits, an index
that is missing or rebuilt, streamed LLM answers (fast tier: the ASGI app in-process with Starlette's
TestClient, on the tiny index); then `rag serve` itself, with two workers, on loopback (slow tier)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="rag serve needs the serve extra: pip install 'rag[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import REPO, TINY_FILES, free_port, settings_for, use_chat, write_corpus  # noqa: E402
from rag.serve import RateLimiter, create_app  # noqa: E402

KEY = "s3cret-key-0123456789"
QUESTION = "How many border guards did Frontex deploy?"


def client(settings, **changes) -> TestClient:
    return TestClient(create_app(settings.with_(**changes)))


def authed(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------------------------------
# The endpoints


def test_ask_gives_the_json_of_rag_ask(tiny_copy):
    from rag.pipeline import Assistant

    r = client(tiny_copy).post("/ask", json={"question": QUESTION, "k": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = r.json()
    want = Assistant.load(tiny_copy).ask(QUESTION, k=3).to_json()
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if k != "timings_ms"} == {k: v for k, v in want.items() if k != "timings_ms"}
    assert "50 border guards" in got["message"] and got["citations"][0]["doc"] == "border.md"


def test_search_documents_health_and_metrics(tiny_copy):
    c = client(tiny_copy)
    hits = c.post("/search", json={"question": "Where did the ministers meet?", "k": 2}).json()["passages"]
    assert len(hits) == 2 and hits[0]["doc"] == "notes.txt" and "Brussels" in hits[0]["text"]
    assert {"start", "end", "page", "section", "score"} <= set(hits[0])
    docs = c.get("/documents").json()["documents"]
    assert [d["doc_id"] for d in docs] == ["border.md", "notes.txt"] and docs[0]["title"] == "Border Report 2023"
    health = c.get("/health").json()
    assert health["status"] == "ok" and (health["documents"], health["passages"]) == (2, 3)
    c.post("/ask", json={"question": ""})
    text = c.get("/metrics").text
    assert f'rag_requests_total{{worker="{os.getpid()}",path="/ask",status="422"}} 1' in text
    assert 'rag_request_seconds_bucket{' in text and "rag_uptime_seconds" in text
    assert c.get("/openapi.json").json()["paths"].keys() >= {"/ask", "/search", "/documents", "/health", "/metrics"}


def test_docs_limit_the_answer_to_those_documents(tiny_copy):
    r = client(tiny_copy).post("/search", json={"question": "border guards", "docs": ["notes.txt"]})
    assert {p["doc"] for p in r.json()["passages"]} == {"notes.txt"}


@pytest.mark.parametrize("body, words", [
    (b"{not json", "the request body is not valid JSON"),
    (json.dumps({"question": 3}).encode(), "question: Input should be a valid string"),
    (json.dumps({"question": "x?", "k": 0}).encode(), "k: Input should be greater than or equal to 1"),
    (json.dumps({"question": "x?", "mode": "fuzzy"}).encode(), "mode: Input should be 'hybrid', 'dense' or 'lexical'"),
    (json.dumps({"question": "x?", "shell": "rm -rf /"}).encode(), "shell: Extra inputs are not permitted"),
    (json.dumps({"question": "   "}).encode(), "the question is empty"),
    (json.dumps(["a list"]).encode(), "Input should be a valid dictionary"),
])
def test_bad_input_is_a_422_with_one_line_saying_what_is_wrong(tiny_copy, body, words):
    r = client(tiny_copy).post("/ask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and list(r.json()) == ["error"]
    assert words in r.json()["error"] and "\n" not in r.json()["error"]


def test_a_huge_question_is_cut_with_a_notice_not_refused(tiny_copy):
    r = client(tiny_copy, serve_max_body_kb=512).post("/ask", json={"question": "guards " * 20_000 + "?"})
    assert r.status_code == 200 and "only the first 2,000 were used" in r.json()["notices"][0]


# ---------------------------------------------------------------------------------------------
# Limits and the key


def test_a_body_over_the_limit_is_413_declared_or_not(tiny_copy):
    c = client(tiny_copy)
    big = b'{"question": "' + b"x" * (10 * 2**20) + b'"}'
    r = c.post("/ask", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "64 KiB" in r.json()["error"]

    def chunks():  # no Content-Length: cut off once it grows past the limit
        for _ in range(100):
            yield b"x" * 4096

    r = c.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_the_api_key_is_required_compared_and_never_logged(tiny_copy, caplog):
    caplog.set_level(logging.DEBUG)
    c = client(tiny_copy, serve_api_key=KEY)
    assert c.post("/ask", json={"question": QUESTION}).status_code == 401
    wrong = c.post("/ask", json={"question": QUESTION}, headers=authed(KEY[:-1] + "x"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer" and KEY not in wrong.text
    assert c.post("/ask", json={"question": QUESTION}, headers=authed()).status_code == 200
    assert c.post("/search", json={"question": QUESTION}, headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/documents").status_code == 401 and c.get("/metrics").status_code == 401
    assert c.get("/health").json() == {"status": "ok"}  # for load balancers: no key, and nothing about the index
    assert c.get("/health", headers=authed()).json()["documents"] == 2
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text


def test_wrong_keys_count_against_the_rate(tiny_copy):
    c = client(tiny_copy, serve_api_key=KEY, serve_rate_per_minute=3)
    codes = [c.post("/search", json={"question": "x?"}, headers=authed("guess" + str(i))).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_over_the_rate_a_client_gets_429_with_retry_after(tiny_copy):
    c = client(tiny_copy, serve_rate_per_minute=2)
    assert [c.post("/search", json={"question": "June"}).status_code for _ in range(2)] == [200, 200]
    r = c.post("/search", json={"question": "June"})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert c.get("/health").status_code == 200  # health checks are not counted


def test_the_rate_window_slides():
    now = [0.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert [rl.retry_after("a"), rl.retry_after("a"), rl.retry_after("b")] == [0, 0, 0]
    now[0] = 30.0
    assert rl.retry_after("a") == 30
    now[0] = 60.5
    assert rl.retry_after("a") == 0


def test_a_request_over_the_timeout_is_504_and_the_server_goes_on(tiny_copy, monkeypatch):
    from rag.pipeline import Assistant

    real = Assistant.ask
    monkeypatch.setattr(Assistant, "ask", lambda self, *a, **k: (time.sleep(1.5), real(self, *a, **k))[1])
    c = client(tiny_copy, serve_timeout_s=0.3)
    r = c.post("/ask", json={"question": QUESTION})
    assert r.status_code == 504 and "0.3 s" in r.json()["error"]
    assert c.get("/health").status_code == 200


def test_work_past_its_timeout_still_counts_so_a_worker_is_never_swamped(tiny_copy, monkeypatch):
    import rag.serve
    from rag.pipeline import Assistant

    real = Assistant.ask
    monkeypatch.setattr(rag.serve, "MAX_IN_FLIGHT", 1)
    monkeypatch.setattr(Assistant, "ask", lambda self, *a, **k: (time.sleep(0.5), real(self, *a, **k))[1])
    c = client(tiny_copy, serve_timeout_s=0.1)
    assert c.post("/ask", json={"question": QUESTION}).status_code == 504  # its thread goes on for a while
    busy = c.post("/ask", json={"question": QUESTION})
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    time.sleep(0.6)
    monkeypatch.setattr(Assistant, "ask", real)
    assert c.post("/ask", json={"question": QUESTION}).status_code == 200


def test_cors_is_off_unless_origins_are_listed(tiny_copy):
    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client(tiny_copy).options("/ask", headers=pre).headers
    ok = client(tiny_copy, serve_cors_origins=("http://app.example",)).options(
        "/ask", headers={**pre, "Origin": "http://app.example"})
    assert ok.headers["access-control-allow-origin"] == "http://app.example"


# ---------------------------------------------------------------------------------------------
# The index: missing, damaged, rebuilt: a 503 with the reason, then recovery without a restart


@pytest.fixture
def quick_recheck(monkeypatch):
    import rag.serve

    monkeypatch.setattr(rag.serve, "RECHECK_S", 0.05)


def test_no_index_is_503_with_the_fix_then_recovers_when_built(quick_recheck, tmp_path):
    from conftest import HashEmbedder
    from rag.index import build_index

    settings = settings_for(write_corpus(tmp_path / "corpus", TINY_FILES), tmp_path / "index")
    c = client(settings)
    r = c.get("/health")
    assert r.status_code == 503 and "no index at" in r.json()["error"] and "rag index" in r.json()["error"]
    assert client(settings, serve_api_key=KEY).get("/health").json() == {"error": "unavailable"}  # no paths without the key
    assert c.post("/ask", json={"question": QUESTION}).status_code == 503
    build_index(settings, embedder=HashEmbedder())
    time.sleep(0.06)  # the holder looks at the folder at most every RECHECK_S (0.05 s here)
    assert c.get("/health").status_code == 200
    assert "50 border guards" in c.post("/ask", json={"question": QUESTION}).json()["message"]


def test_a_rebuilt_index_is_picked_up_and_a_damaged_one_is_503(quick_recheck, tiny_copy):
    from rag.index import build_index

    c = client(tiny_copy)
    assert c.get("/health").json()["documents"] == 2
    (Path(tiny_copy.corpus_dir) / "more.txt").write_text("Malta carried out 17 ferry inspections in 2023.\n")
    build_index(tiny_copy)
    time.sleep(0.06)
    assert c.get("/health").json()["documents"] == 3
    shutil.rmtree(Path(tiny_copy.index_dir) / "lexical")  # the loaded index goes on answering from memory;
    r = client(tiny_copy).get("/health")  # a worker that loads it now finds the damage
    assert r.status_code == 503 and "index damaged" in r.json()["error"] and "rag index --force" in r.json()["error"]
    assert c.get("/health").status_code == 200


# ---------------------------------------------------------------------------------------------
# Streamed LLM answers


def test_a_streamed_llm_answer_is_token_events_then_the_checked_answer(tiny_copy, monkeypatch):
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    claim = "Frontex deployed 50 border guards to the eastern border [1]."
    use_chat(monkeypatch, GenericFakeChatModel(messages=iter([AIMessage(claim)])))
    with client(tiny_copy).stream("POST", "/ask", json={"question": QUESTION, "answer": "llm", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [block.split("\n") for block in r.read().decode().strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    assert names[-1] == "answer" and set(names[:-1]) == {"token"} and len(names) > 2
    text = "".join(json.loads(e[1].removeprefix("data: "))["text"] for e in events[:-1])
    assert text.strip() == claim
    answer = json.loads(events[-1][1].removeprefix("data: "))
    assert answer["mode"] == "llm" and answer["citations"][0]["doc"] == "border.md"


# ---------------------------------------------------------------------------------------------
# `rag serve` itself: two workers, on loopback


@pytest.fixture
def served(spawn, real_model, tmp_path):
    """`rag serve --workers 2` on a free loopback port over a real-model tiny index; stopped after."""
    import httpx

    from rag.index import build_index

    settings = settings_for(write_corpus(tmp_path / "corpus", TINY_FILES), tmp_path / "index")
    build_index(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_SERVE_API_KEY"] = KEY
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--workers", "2", "--port", str(port),
                             "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read()
    else:
        proc.kill()
        pytest.fail("rag serve did not answer /health within 120 s")
    yield url, port
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert KEY not in err


def test_rag_serve_answers_on_loopback_from_two_workers(served):
    import httpx

    url, port = served
    with httpx.Client(base_url=url, headers=authed(), timeout=60) as c:
        r = c.post("/ask", json={"question": QUESTION})
        assert r.status_code == 200 and "50" in r.json()["message"]
    workers = {httpx.get(url + "/health", headers={"Connection": "close", **authed()}).json()["worker"] for _ in range(60)}
    assert len(workers) == 2  # both processes answer (each new connection goes to either)
    outside = _outside_address()
    if outside is not None:  # bound to loopback only: the machine's other address is refused
        with pytest.raises(OSError):
            socket.create_connection((outside, port), timeout=2).close()


def _outside_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") else addr


def test_a_slow_client_does_not_hold_up_the_others(served):
    import httpx

    url, port = served
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")  # and then nothing
    try:
        t0 = time.perf_counter()
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        assert time.perf_counter() - t0 < 5
    finally:
        slow.close()


def test_1000_concurrent_connections_get_answers_or_503_and_the_server_lives(served):
    import asyncio

    import httpx

    url, _ = served

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:
            async def one() -> int:
                try:
                    return (await c.get("/health")).status_code
                except httpx.HTTPError:
                    return -1  # refused or reset at the socket: counted, not a hang
            return await asyncio.gather(*(one() for _ in range(1000)))

    codes = asyncio.run(storm())
    assert len(codes) == 1000 and set(codes) <= {200, 503, -1} and codes.count(200) >= 500, sorted(set(codes))
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_the_serve_benchmark_counts_every_question_and_its_latency(served):
    from benchmarks.serve import drive

    url, _ = served
    row = drive(url, ["How many border guards?", "Where did the ministers meet?"], clients=3, requests=12, headers=authed())
    assert (row["requests"], row["errors"], row["clients"]) == (12, 0, 3)
    assert row["qps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] < 60_000
    assert drive(url, ["x?"], clients=2, requests=4)["errors"] == 4  # no key: every request refused, and counted


def test_a_citation_is_checkable_against_the_document_the_api_serves(tiny_copy):
    c = client(tiny_copy)
    cit = c.post("/ask", json={"question": QUESTION}).json()["citations"][0]
    doc = c.get(f"/documents/{cit['doc']}").json()
    assert " ".join(doc["text"][cit["start"]:cit["end"]].split()) == cit["text"]
    assert doc["title"] == "Border Report 2023"
    missing = c.get("/documents/reports/nope.txt")
    assert missing.status_code == 404 and "no document 'reports/nope.txt'" in missing.json()["error"]
    raw = c.get("/documents/%2e%2e/%2e%2e/etc/passwd")  # reaches the route: ids are looked up, never opened
    assert raw.status_code == 404 and "no document '../../etc/passwd'" in raw.json()["error"]


def test_a_follow_up_is_rewritten_with_the_history_it_is_sent(tiny_copy):
    c = client(tiny_copy)
    first = c.post("/ask", json={"question": "When did the ministers meet in Brussels?"}).json()
    r = c.post("/ask", json={"question": "And in Rome?",
                             "history": [{"question": first["question"], "answer": first["message"]}]})
    assert r.status_code == 200 and r.json()["original_question"] == "And in Rome?"
    assert r.json()["question"] == "When did the ministers meet in Rome?"
    too_long = c.post("/ask", json={"question": "x?", "history": [{"question": "q", "answer": "a"}] * 21})
    assert too_long.status_code == 422


def test_a_bad_streamed_question_is_a_422_and_a_slow_stream_ends_with_an_error_event(tiny_copy, monkeypatch):
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from rag.pipeline import Assistant

    c = client(tiny_copy, serve_timeout_s=0.5)
    bad = c.post("/ask", json={"question": "  ", "answer": "llm", "stream": True})
    assert bad.status_code == 422 and "the question is empty" in bad.json()["error"]
    use_chat(monkeypatch, GenericFakeChatModel(messages=iter([AIMessage("Frontex deployed 50 guards [1].")])))
    real = Assistant.ask
    monkeypatch.setattr(Assistant, "ask", lambda self, *a, **k: (time.sleep(1.0), real(self, *a, **k))[1])
    with c.stream("POST", "/ask", json={"question": QUESTION, "answer": "llm", "stream": True}) as r:
        body = r.read().decode()
    assert body.startswith("event: error\n") and "longer than 0.5 s" in body


def test_the_api_docs_page_works_offline_from_local_files(tiny_copy):
    """/docs is Swagger UI from the swagger-ui-bundle package's files, not a CDN (no internet here)."""
    c = client(tiny_copy, serve_api_key=KEY)  # the docs stay open, like /openapi.json
    page = c.get("/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "http://" not in page.text and "https://" not in page.text
    js, css = c.get("/docs/assets/swagger-ui-bundle.js"), c.get("/docs/assets/swagger-ui.css")
    assert js.status_code == css.status_code == 200 and len(js.content) > 500_000 and "swagger-ui" in css.text
    assert c.get("/docs/assets/%2e%2e%2f%2e%2e%2fserve.py", headers=authed()).status_code == 404
    assert c.get("/docs/assets/index.css", headers=authed()).status_code == 404  # only the two files the page needs
    assert c.get("/docs/assets/index.css").status_code == 401  # and nothing else is open
    assert c.get("/openapi.json").json()["paths"]["/ask"]
