"""`rag bench --serve`: questions per second and latency of `rag serve` on loopback, for 1 and N
workers, with a bounded number of concurrent clients.

Each run starts `rag serve --workers W` on a free loopback port, warms every worker up (the index and
both models load on a worker's first request), then sends the bench questions as ``POST /ask`` from
``clients`` threads, each request on a new connection so that the kernel spreads them over the
workers. It stops by itself: a fixed number of requests, and a timeout on each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

#: What ``rag bench --serve`` adds to the JSON (one row per worker count in ``serve_rows``).
SERVE_FIELDS = {
    "serve_rows": "--serve: one row per worker count: workers, clients, requests, errors, qps, p50_ms, p99_ms",
    "serve_speedup": "qps of the most workers / qps of one worker (same run, same questions), first store",
    "serve_speedup_postgres": "the same with store = postgres (--serve-stores faiss,postgres)",
}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rag serve exited with {proc.returncode}: {proc.stderr.read()[-500:] if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"rag serve did not answer /health within {timeout:g} s")


def drive(url: str, questions: Sequence[str], clients: int, requests: int, timeout: float = 60.0,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``requests`` ``POST /ask`` from ``clients`` threads (questions in turn): qps and latency."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    todo = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=timeout, headers=headers,
                          limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    ok = c.post("/ask", json={"question": questions[i % len(questions)]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"clients": clients, "requests": requests, "errors": errors[0], "wall_s": wall,
            "qps": len(lat) / wall if wall else 0.0,
            "p50_ms": statistics.median(lat) * 1000 if lat else None,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else None}


def time_serve(settings, questions: Sequence[str], workers: Sequence[int] = (1, 2), clients: int = 4,
               requests: int = 200, env: dict[str, str] | None = None, command: Sequence[str] = ("rag",)) -> dict[str, Any]:
    """One row per worker count; ``serve_speedup`` = qps of the most workers over qps of one."""
    rows = []
    for w in workers:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        child = {**(env or os.environ), "RAG_SERVE_RATE_PER_MINUTE": "0"}  # one client address sends everything
        proc = subprocess.Popen([*command, "serve", "--workers", str(w), "--port", str(port)], env=child,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_healthy(url, proc)
            drive(url, questions, clients=max(clients, 2 * w), requests=8 * w)  # every worker loads its models
            rows.append({"workers": w, **drive(url, questions, clients, requests)})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    one = next((r["qps"] for r in rows if r["workers"] == 1), None)
    most = max(rows, key=lambda r: r["workers"])
    return {"serve_rows": rows, "serve_speedup": most["qps"] / one if one else None}


@contextlib.contextmanager
def engine_env(settings, store: str, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``env`` for `rag serve` children using ``store``. For "postgres": the settings' engine, or a
    local one started in a temp folder for the run; either way the bench index is synced into it."""
    if store == "faiss":
        yield {**env, "RAG_STORE": "faiss"}
        return
    from rag.engine import engine_for
    from rag.index import load_index
    from rag.pg_local import LocalPostgres

    server, root = None, None
    url = settings.store_url
    if not url:
        root = Path(tempfile.mkdtemp(prefix="rag-bench-pg-"))
        os.chmod(root, 0o755)  # the server runs as nobody under root
        server = LocalPostgres(root, port=free_port()).start()
        url = server.url
    try:
        s = settings.with_(store="postgres", store_url=url)
        engine_for(s, load_index(s, check_fresh=False))
        yield {**env, "RAG_STORE": "postgres", "RAG_STORE_URL": url, "RAG_STORE_NAMESPACE": s.store_namespace}
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
