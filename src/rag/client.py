"""A client of `rag serve`: ask, search and read the documents of a rag server as if it were a local
:class:`rag.pipeline.Assistant` (the app's remote mode, ``RAG_API_URL``; any Python program).

Answers come back as the same :class:`rag.answer.Answer` records; a generated answer is streamed
(server-sent events) when the caller wants its tokens. A bad question is :class:`BadQuestion`, as
locally; anything else the server cannot do (unreachable, wrong key, busy, no index) is one
:class:`RemoteUnavailable` line with the server's reason.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

from .answer import Answer, Citation
from .errors import BadQuestion, RemoteUnavailable
from .index import DocRecord


class RemoteDocs(Mapping[str, DocRecord]):
    """The server's documents: the list read once, each text fetched on first use and kept."""

    def __init__(self, client: "RemoteAssistant") -> None:
        self._client = client
        self._ids: list[str] | None = None
        self._titles: dict[str, str] = {}
        self._texts: dict[str, DocRecord] = {}
        self._lock = threading.Lock()

    def _list(self) -> list[str]:
        if self._ids is None:
            rows = self._client._get("/documents")["documents"]
            self._titles = {r["doc_id"]: r.get("title", "") for r in rows}
            self._ids = list(self._titles)
        return self._ids

    def __getitem__(self, doc_id: str) -> DocRecord:
        with self._lock:
            if doc_id not in self._texts:
                if doc_id not in self._list():
                    raise KeyError(doc_id)
                from urllib.parse import quote

                d = self._client._get(f"/documents/{quote(doc_id, safe='/')}")
                self._texts[doc_id] = DocRecord(doc_id, d.get("title", ""), d["text"], d.get("metadata") or {})
            return self._texts[doc_id]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._list()

    def __iter__(self) -> Iterator[str]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def title(self, doc_id: str) -> str:
        self._list()
        return self._titles.get(doc_id, "")

    def forget(self) -> None:
        """Read the list and the texts again on next use (the server's index was rebuilt)."""
        with self._lock:
            self._ids, self._titles, self._texts = None, {}, {}


def http_client(url: str, headers: dict[str, str], timeout_s: float):
    """The HTTP client a :class:`RemoteAssistant` talks through (tests put an in-process app here)."""
    import httpx

    return httpx.Client(base_url=url, headers=headers, timeout=timeout_s)


class RemoteAssistant:
    """``ask`` / ``search`` / ``docs`` / ``health`` over HTTP. ``http`` is any ``httpx.Client``
    pointed at the server (tests pass Starlette's TestClient)."""

    def __init__(self, url: str, api_key: str = "", timeout_s: float = 120.0, http: Any = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http if http is not None else http_client(self.url, headers, timeout_s)
        self.docs = RemoteDocs(self)

    # -- HTTP -----------------------------------------------------------------------------------

    def _raise(self, status: int, body: Any) -> None:
        why = body.get("error") if isinstance(body, dict) else None
        why = why or (str(body)[:200] if body else f"HTTP {status}")
        if status == 422:
            raise BadQuestion(why)
        raise RemoteUnavailable(f"the rag server at {self.url} answered {status}: {why}")

    def _send(self, method: str, path: str, **kw) -> Any:
        import httpx

        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(f"cannot reach the rag server at {self.url} ({type(exc).__name__}: {exc}): "
                                    "is `rag serve` running there?") from exc
        body = _json_or_text(r)
        if r.status_code != 200:
            self._raise(r.status_code, body)
        return body

    def _get(self, path: str) -> Any:
        return self._send("GET", path)

    # -- the Assistant's questions --------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's ``GET /health``; when its index was rebuilt since the last call, the documents
        are read again. Raises RemoteUnavailable (also for a key the server refuses)."""
        health = self._get("/health")
        if health.get("built") != getattr(self, "_built", None):
            self._built = health.get("built")
            self.docs.forget()
        len(self.docs)  # the list needs the key: a wrong one is said here, not on the first question
        return health

    def ask(self, question: str, k: int | None = None, mode: str | None = None, *, answer: str | None = None,
            history: Sequence[tuple[str, str]] = (), on_token: Callable[[str], None] | None = None, chat: Any = None,
            strictness: str | None = None, docs: Collection[str] | None = None) -> Answer:
        """As :meth:`rag.pipeline.Assistant.ask`; ``chat`` is ignored (the server's model answers)."""
        body: dict[str, Any] = {"question": question, "history": [{"question": q, "answer": a} for q, a in history][-20:]}
        body.update({k_: v for k_, v in (("k", k), ("mode", mode), ("answer", answer), ("strictness", strictness),
                                         ("docs", list(docs) if docs is not None else None)) if v is not None})
        if answer == "llm" and on_token is not None:
            return self._stream({**body, "stream": True}, on_token)
        return Answer.from_json(self._send("POST", "/ask", json=body))

    def _stream(self, body: dict[str, Any], on_token: Callable[[str], None]) -> Answer:
        import httpx

        try:
            with self.http.stream("POST", "/ask", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    self._raise(r.status_code, _json_or_text(r))
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        if event == "token":
                            on_token(data["text"])
                        elif event == "answer":
                            return Answer.from_json(data)
                        elif event == "error":
                            raise RemoteUnavailable(f"the rag server at {self.url} failed: {data.get('error')}")
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(f"the rag server at {self.url} broke off the answer ({type(exc).__name__})") from exc
        raise RemoteUnavailable(f"the rag server at {self.url} ended the stream without an answer")

    def search(self, question: str, k: int | None = None, mode: str | None = None,
               docs: Collection[str] | None = None) -> list[Citation]:
        body = {"question": question, "k": k, "mode": mode, "docs": list(docs) if docs is not None else None}
        out = self._send("POST", "/search", json={k_: v for k_, v in body.items() if v is not None})
        return [Citation.from_json(p) for p in out["passages"]]


def _json_or_text(r) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text
