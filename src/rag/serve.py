"""`rag serve`: the HTTP API, a thin edge over the library (FastAPI on uvicorn).

Endpoints: ``POST /ask`` (the JSON answer of `rag ask --json`; ``"stream": true`` with LLM answers
sends server-sent events: ``token`` pieces, redacted, then the checked ``answer``), ``POST /search``,
``GET /documents``, ``GET /documents/{id}`` (the text citations point into), ``GET /health``, ``GET /metrics`` (Prometheus text) and the OpenAPI docs
(``/docs``, ``/openapi.json``).

Several workers (``--workers N``, uvicorn's processes) each load the index once; its vectors and
arrays are memory-mapped, so the workers share one copy in the page cache. An index that is missing,
damaged or being rebuilt gives ``503`` with the reason, and the next request tries again (a rebuilt
index is picked up without a restart). Limits (see :class:`rag.settings.Settings`, ``serve_*``): an
optional API key compared in constant time (``401``, the key never logged), request bodies over
``serve_max_body_kb`` refused unread (``413``), a per-client rate (``429`` with ``Retry-After``; per
worker, keyed on the connection's address, so behind a proxy rate-limit at the proxy; wrong keys count),
a per-request timeout (``504``; the work itself cannot be stopped, so at most ``MAX_IN_FLIGHT``
questions run per worker and more get ``503``), a cap on concurrent connections (uvicorn's ``limit_concurrency``:
``503``), CORS off unless origins are listed, and 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from .errors import BadQuestion, RagError
from .settings import ANSWER_MODES, MODES, STRICTNESS, Settings

log = logging.getLogger(__name__)

#: Latency buckets of the ``rag_request_seconds`` histogram.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Concurrent connections one worker accepts before answering 503 (uvicorn's ``limit_concurrency``).
MAX_CONNECTIONS = 512
#: Questions one worker works on at once, counting those whose client already got a 504 (a thread
#: cannot be stopped; it ends with its answer): beyond it, 503 until one ends.
MAX_IN_FLIGHT = 16
#: Clients the rate limiter remembers before it forgets those idle for a minute.
RATE_CLIENTS = 10_000
#: Seconds between two looks at the index folder (a rebuilt index is picked up after at most this).
RECHECK_S = 1.0


class Metrics:
    """Request counts and latency per endpoint and status, for ``GET /metrics`` (one worker's view:
    each sample carries the worker's pid as ``worker``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            counts = self.buckets[path]
            counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            self.sums[path] += seconds

    def text(self, extra: dict[str, float]) -> str:
        w = f'worker="{os.getpid()}"'
        out = ["# HELP rag_requests_total Requests answered, by endpoint and HTTP status.",
               "# TYPE rag_requests_total counter"]
        with self._lock:
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'rag_requests_total{{{w},path="{path}",status="{status}"}} {n}')
            out += ["# HELP rag_request_seconds Time to answer a request.", "# TYPE rag_request_seconds histogram"]
            for path, counts in sorted(self.buckets.items()):
                total = 0
                for bound, n in zip((*BUCKETS, float("inf")), counts):
                    total += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    out.append(f'rag_request_seconds_bucket{{{w},path="{path}",le="{le}"}} {total}')
                out.append(f'rag_request_seconds_sum{{{w},path="{path}"}} {self.sums[path]:.6f}')
                out.append(f'rag_request_seconds_count{{{w},path="{path}"}} {total}')
        for name, value in extra.items():
            out += [f"# TYPE {name} gauge", f"{name}{{{w}}} {value:g}"]
        return "\n".join(out) + "\n"


class RateLimiter:
    """At most ``per_minute`` requests per client in any 60 s window (0: no limit)."""

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """0 when the request may go ahead (and is counted), else the seconds to wait."""
        if self.per_minute <= 0:
            return 0
        now = self.clock()
        with self._lock:
            if len(self._seen) > RATE_CLIENTS:
                for idle in [c for c, s in self._seen.items() if not s or s[-1] <= now - 60]:
                    del self._seen[idle]
            seen = self._seen[client]
            while seen and seen[0] <= now - 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return max(1, int(seen[0] + 60 - now + 0.999))
            seen.append(now)
            return 0


class AssistantHolder:
    """The worker's :class:`rag.pipeline.Assistant`: loaded on first use, loaded again when the index
    folder holds another build, and tried again when it could not be loaded (so a missing or damaged
    index recovers without a restart); the folder is looked at at most every RECHECK_S seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._assistant = None
        self._version: tuple | None = None
        self._checked = 0.0
        self._failure: BaseException | None = None  # the last load's error, raised again for a second

    def get(self):
        from .index import _version
        from .pipeline import Assistant

        with self._lock:
            now = time.monotonic()
            if now - self._checked < RECHECK_S:
                if self._failure is not None:
                    raise self._failure
                if self._assistant is not None:
                    return self._assistant
            self._checked = now
            version = _version(Path(self.settings.index_dir))
            if self._assistant is None or version != self._version:
                try:
                    self._assistant = Assistant.load(self.settings)  # IndexMissing, IndexCorrupt, ...
                except RagError as exc:
                    self._failure = exc
                    raise
                self._version = version
            self._failure = None
            return self._assistant


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(description="the question, in natural language")
    k: int | None = Field(None, ge=1, le=50, description="passages to retrieve (default: the settings' k)")
    mode: Literal[MODES] | None = None  # type: ignore[valid-type]
    answer: Literal[ANSWER_MODES] | None = Field(None, description="extractive (default) or llm")  # type: ignore[valid-type]
    strictness: Literal[STRICTNESS] | None = None  # type: ignore[valid-type]
    docs: list[str] | None = Field(None, description="answer only from these document ids")
    history: list[Turn] = Field([], max_length=20, description="earlier turns of a chat, oldest first: follow-ups "
                                                              "('and in Tunisia?') are rewritten with them")
    stream: bool = Field(False, description="with answer=llm: server-sent events (token pieces, then the answer)")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    k: int | None = Field(None, ge=1, le=100)
    mode: Literal[MODES] | None = None  # type: ignore[valid-type]
    docs: list[str] | None = None


def create_app(settings: Settings | None = None):
    """The ASGI app over ``settings`` (default: :meth:`Settings.from_env`, which is how each of
    uvicorn's worker processes gets the settings `rag serve` exported)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    settings = settings or Settings.from_env()
    holder = AssistantHolder(settings)
    metrics = Metrics()
    limiter = RateLimiter(settings.serve_rate_per_minute)
    started = time.time()
    app = FastAPI(title="rag", version="1", summary="Answers from your documents, every claim cited.", docs_url=None)
    _offline_docs(app)
    app.state.holder, app.state.metrics, app.state.limiter = holder, metrics, limiter

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    app.add_middleware(_Guard, settings=settings, metrics=metrics, limiter=limiter)
    if settings.serve_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.serve_cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return error(422, "the request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def bounded(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        finally:
            in_flight.release()

    async def call(fn, *args, limit: bool = True, **kw):
        """``fn`` in a worker thread, within the request timeout; library errors become statuses.
        ``limit``: count it against MAX_IN_FLIGHT (questions; not the cheap look at the index)."""
        if limit and not in_flight.acquire(blocking=False):
            raise _Status(503, f"busy: {MAX_IN_FLIGHT} questions in progress on this worker; try again shortly")
        try:
            work = run_in_threadpool(bounded, fn, *args, **kw) if limit else run_in_threadpool(fn, *args, **kw)
            return await asyncio.wait_for(work, settings.serve_timeout_s)
        except asyncio.TimeoutError:
            raise _Status(504, f"the request took longer than {settings.serve_timeout_s:g} s") from None
        except BadQuestion as exc:
            raise _Status(422, str(exc)) from None
        except RagError as exc:  # no index, a damaged one, a missing model: the reason, and try again later
            raise _Status(503, str(exc)) from None

    @app.exception_handler(_Status)
    async def _status(request: Request, exc: _Status) -> JSONResponse:
        return error(exc.status, exc.message, {"Retry-After": "5"} if exc.status == 503 else None)

    @app.post("/ask", summary="Answer a question from the documents (the JSON of `rag ask --json`)")
    async def ask(req: AskRequest):
        assistant = await call(holder.get, limit=False)
        kw = dict(k=req.k, mode=req.mode, answer=req.answer, strictness=req.strictness, docs=req.docs,
                  history=[(t.question, t.answer) for t in req.history])
        if req.stream and (req.answer or settings.answer) == "llm":
            from .pipeline import clean_question

            try:
                clean_question(req.question, settings.max_question_chars)  # a bad question is a 422 here too
            except BadQuestion as exc:
                raise _Status(422, str(exc)) from None
            if not in_flight.acquire(blocking=False):
                raise _Status(503, f"busy: {MAX_IN_FLIGHT} questions in progress on this worker; try again shortly")
            return StreamingResponse(_sse(assistant, req.question, kw, settings, in_flight.release),
                                     media_type="text/event-stream")
        answer = await call(assistant.ask, req.question, **kw)
        return answer.to_json()

    @app.post("/search", summary="The top passages for a question, with their offsets")
    async def search(req: SearchRequest):
        from .answer import passage

        assistant = await call(holder.get, limit=False)
        hits = await call(assistant.search, req.question, k=req.k, mode=req.mode, docs=req.docs)
        return {"question": req.question, "passages": [passage(h).to_json(with_n=False) for h in hits]}

    @app.get("/documents", summary="The indexed documents")
    async def documents():
        assistant = await call(holder.get, limit=False)
        counts: dict[str, int] = defaultdict(int)
        for c in assistant.data.chunks:
            counts[c.doc_id] += 1
        files = assistant.data.manifest.files
        return {"documents": [{"doc_id": d, "title": r.title, "passages": counts[d],
                               "pages": r.text.count("\f") + 1, "sha256": files[d].sha256 if d in files else None,
                               "indexed_at": files[d].indexed_at if d in files else None}
                              for d, r in sorted(assistant.data.docs.items())]}

    @app.get("/documents/{doc_id:path}", summary="One document's text: what every citation's offsets refer to")
    async def document(doc_id: str):
        assistant = await call(holder.get, limit=False)
        d = assistant.data.docs.get(doc_id)
        if d is None:
            return error(404, f"no document {doc_id!r} in the index (GET /documents lists them)")
        return {"doc_id": doc_id, "title": d.title, "text": d.text, "metadata": d.metadata}

    @app.get("/health", summary="200 when an index is loaded and answers; 503 with the reason otherwise")
    async def health(request: Request):
        trusted = not settings.serve_api_key or request.scope.get("rag_authed", False)
        try:
            assistant = await call(holder.get, limit=False)
            if assistant.engine is not None:  # store = "postgres": the engine must answer too
                await call(assistant.engine.check, limit=False)
        except _Status as exc:  # the reason names folders: only to a caller with the key, when there is one
            return error(503, exc.message if trusted else "unavailable")
        m = assistant.data.manifest
        if not trusted:
            return {"status": "ok"}
        return {"status": "ok", "documents": m.counts.documents, "passages": m.counts.chunks,
                "built": m.created, "worker": os.getpid()}

    @app.get("/metrics", summary="Prometheus text format (this worker's counters)")
    async def prometheus():
        return PlainTextResponse(metrics.text({"rag_uptime_seconds": time.time() - started}),
                                 media_type="text/plain; version=0.0.4")

    return app


def _offline_docs(app) -> None:
    """``/docs``: Swagger UI from the files of the PyPI package swagger-ui-bundle (FastAPI's own page
    loads them from a CDN, which a machine without internet never reaches: a blank page)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page would be blank: say where the API is described instead
        @app.get("/docs", include_in_schema=False)
        async def no_docs():
            return HTMLResponse("<p>Swagger UI needs the package swagger-ui-bundle; the API is described at "
                                "<a href='/openapi.json'>/openapi.json</a>.</p>")
        return

    files = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css"}

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in files:
            return HTMLResponse("not found", status_code=404)
        return FileResponse(Path(str(swagger_ui_path)) / name, media_type=files[name])

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="rag API", swagger_favicon_url="",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css")


class _Status(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _sse(assistant, question: str, kw: dict[str, Any], settings: Settings, done):
    """Server-sent events of an LLM answer: ``token`` events (redacted as the app redacts them), then
    ``answer`` (the checked JSON answer) or ``error``. The work starts now, in a thread, whether or not
    the events are ever read; ``done()`` is called when it ends. Call from the event loop."""
    from .generate import StreamRedactor

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    redactor = StreamRedactor(settings, None)

    def post(event: str, data: dict[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (event, data))
        except RuntimeError:  # the loop is gone (server stopping): nobody is listening
            pass

    def on_token(text: str) -> None:
        piece = redactor.feed(text)
        if piece:
            post("token", {"text": piece})

    def work() -> None:
        try:
            answer = assistant.ask(question, on_token=on_token, **kw)
            tail = redactor.flush()
            if tail:
                post("token", {"text": tail})
            post("answer", answer.to_json())
        except RagError as exc:
            post("error", {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the stream ends with the reason, never hangs
            log.error("streamed answer failed: %s", type(exc).__name__)
            post("error", {"error": type(exc).__name__})
        finally:
            done()

    threading.Thread(target=work, name="rag-serve-stream", daemon=True).start()
    deadline = loop.time() + settings.serve_timeout_s

    async def events():
        while True:
            try:
                event, data = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                event, data = "error", {"error": f"the answer took longer than {settings.serve_timeout_s:g} s"}
            yield f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
            if event != "token":
                return

    return events()


class _Guard:
    """ASGI middleware before the routes: the API key (constant-time; /health and the docs stay open
    for load balancers and readers), the per-client rate, the body size (refused unread when the
    declared length is too big, cut off when an undeclared one grows too big), and the metrics."""

    OPEN = ("/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css")

    def __init__(self, app, settings: Settings, metrics: Metrics, limiter: RateLimiter) -> None:
        self.app, self.settings, self.metrics, self.limiter = app, settings, metrics, limiter
        self.key = settings.serve_api_key.encode()
        self.max_body = settings.serve_max_body_kb * 1024

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope.get("path", "")
        status = {"code": 500}

        async def send_and_count(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                code, message, headers = refusal
                return await _json(send_and_count, code, {"error": message}, headers)
            await self.app(scope, self._capped(receive), send_and_count)
        except _TooLarge:
            await _json(send_and_count, 413, {"error": f"the request body is over {self.settings.serve_max_body_kb} KiB"})
        finally:
            known = path if path in ("/ask", "/search", "/documents", "/health", "/metrics") else "other"
            self.metrics.observe(known, status["code"], time.perf_counter() - t0)

    def _refusal(self, scope, path: str):
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.limiter.retry_after(client) if path not in self.OPEN else 0  # wrong keys count too
        if wait:
            return 429, f"more than {self.limiter.per_minute} requests a minute: try again in {wait} s", {"Retry-After": str(wait)}
        if self.key:
            auth = headers.get("authorization", b"")
            given = auth[7:] if auth[:7].lower() == b"bearer " else headers.get("x-api-key", b"")
            scope["rag_authed"] = hmac.compare_digest(given, self.key)
            if not scope["rag_authed"] and path not in self.OPEN:
                return 401, "a valid API key is required (Authorization: Bearer <key>, or X-API-Key)", {"WWW-Authenticate": "Bearer"}
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return 413, f"the request body is over {self.settings.serve_max_body_kb} KiB", None
            except ValueError:
                return 400, "Content-Length is not a number", None
        return None

    def _capped(self, receive):
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        return capped


class _TooLarge(BaseException):
    """Raised from ``receive`` when an undeclared body grows past the limit; a BaseException so that
    the framework's body parsing (which turns any Exception into a 400) lets it reach :class:`_Guard`."""


async def _json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve until interrupted: ``workers`` uvicorn processes, each with its own loaded index (the
    files memory-mapped, so shared). ``settings`` reach the workers as ``RAG_*`` variables."""
    import uvicorn

    from .settings import export_settings

    if host not in ("127.0.0.1", "localhost", "::1") and not settings.serve_api_key:
        log.warning("serving on %s without an API key: anyone who can reach it can ask (set RAG_SERVE_API_KEY)", host)
    export_settings(settings)
    uvicorn.run("rag.serve:create_app", factory=True, host=host, port=port, workers=workers,
                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5, log_level="warning", access_log=False)
