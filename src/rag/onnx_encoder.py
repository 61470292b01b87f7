"""Stage 4a, second backend: the same sentence-transformers encoder run by onnxruntime.

The transformer is exported to ONNX once (with torch, into ``cache_dir/onnx/``), checked against
sentence-transformers on probe texts, and from then on the query path needs only ``onnxruntime``,
``tokenizers`` and numpy: no torch import, which is most of a fresh process's start-up time.
Tokenisation (``tokenizer.json``, truncation at the model's ``max_seq_length``, padding to the
longest text), mean or CLS pooling and L2 normalisation are those of sentence-transformers, so the
vectors agree with :class:`rag.embed.SentenceTransformerEmbedder` to float precision (cosine > 0.9999,
checked at export and in the tests).

Supported: models made of a ``Transformer`` module, a ``Pooling`` module (mean or CLS tokens) and
optionally ``Normalize``, with a fast tokenizer (``tokenizer.json``); anything else is
:class:`OnnxUnsupported` and :func:`rag.embed.get_embedder` falls back to torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import atomic_dir
from .errors import OnnxUnsupported

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graph or its checks change: old exports are then ignored
OPSET = 17
MIN_COSINE = 0.9999  # an export whose vectors agree less than this with sentence-transformers is refused
PROBES = (
    "How many European border guards have been deployed to Finland's border?",
    "Tunisia",
    "",
    "Annex › Prevention › Reinforce border management and search and rescue › Egypt › Next steps: "
    "deliver seven boats to the coast guard and launch the procurement procedures.",
    " ".join(["Frontex deployed 50 border guards to the eastern border in December."] * 40),  # > 256 tokens
)


@dataclass(frozen=True)
class ModelLayout:
    """What sentence-transformers does with a model folder, read from its config files."""

    folder: str
    max_seq_length: int
    pooling: str  # "mean" or "cls"
    dim: int


def read_layout(folder: Path) -> ModelLayout:
    """The model's tokenizer length, pooling and dimension, or :class:`OnnxUnsupported` saying why not."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise OnnxUnsupported(f"{folder} has no tokenizer.json (a fast tokenizer is needed for the ONNX backend)")
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st_config = _read_json(folder / "sentence_bert_config.json")
    except (OSError, ValueError) as exc:
        raise OnnxUnsupported(f"cannot read the sentence-transformers configuration in {folder}: {exc}") from exc
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise OnnxUnsupported(f"the ONNX backend supports Transformer + Pooling [+ Normalize] models, not {kinds}")
    if st_config.get("do_lower_case"):
        raise OnnxUnsupported("the ONNX backend does not lower-case input (do_lower_case is set)")
    pool = _read_json(folder / modules[1].get("path", "1_Pooling") / "config.json")
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v]
    if modes == ["pooling_mode_mean_tokens"]:
        pooling = "mean"
    elif modes == ["pooling_mode_cls_token"]:
        pooling = "cls"
    else:
        raise OnnxUnsupported(f"the ONNX backend supports mean or CLS pooling, not {modes}")
    max_len = int(st_config.get("max_seq_length") or config.get("max_position_embeddings", 512))
    max_len = min(max_len, int(config.get("max_position_embeddings", max_len)))
    dim = int(pool.get("word_embedding_dimension") or config["hidden_size"])
    return ModelLayout(str(folder.resolve()), max_len, pooling, dim)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def export_dir(folder: Path, cache_dir: Path) -> Path:
    """Where the export of ``folder`` lives: keyed by the folder, its weight files and EXPORT_VERSION."""
    folder = Path(folder).resolve()
    h = hashlib.sha256(f"{EXPORT_VERSION}|{folder}".encode())
    for p in sorted(folder.glob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"):
            st = p.stat()
            h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(cache_dir) / "onnx" / f"{folder.name}-{h.hexdigest()[:16]}"


_export_lock = threading.Lock()


def ensure_exported(folder: Path, cache_dir: Path) -> Path:
    """The ONNX file for the model in ``folder``, exported (and checked) on first use.

    Written to a temporary folder and renamed into place, so concurrent processes never see half a
    file. An export that fails, or whose vectors disagree with sentence-transformers, leaves
    ``failed.json`` with the reason, so later processes fall back to torch at once instead of retrying."""
    target = export_dir(folder, cache_dir)
    if (target / "model.onnx").is_file():
        return target / "model.onnx"
    if (target / "failed.json").is_file():
        reason = json.loads((target / "failed.json").read_text(encoding="utf-8")).get("reason", "unknown")
        raise OnnxUnsupported(f"the ONNX export of {folder} failed earlier ({reason}); delete {target} to retry")
    missing = [m for m in ("onnx", "torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:  # not recorded: installing the package fixes it
        raise OnnxUnsupported(f"exporting the model to ONNX needs {', '.join(missing)}: pip install {' '.join(missing)}")
    with _export_lock:
        if (target / "model.onnx").is_file():
            return target / "model.onnx"
        layout = read_layout(folder)
        info: dict = {**asdict(layout), "export_version": EXPORT_VERSION, "opset": OPSET}
        with atomic_dir(target) as tmp:  # another process may win the race: its result is used
            t0 = time.perf_counter()
            try:
                _export(layout, tmp / "model.onnx")
                info["min_cosine_vs_torch"] = cos = _check(layout, tmp / "model.onnx")
                if cos < MIN_COSINE:
                    info["reason"] = f"cosine {cos:.6f} against sentence-transformers is under {MIN_COSINE}"
            except Exception as exc:  # noqa: BLE001 - any export failure means: use torch
                info["reason"] = f"{type(exc).__name__}: {exc}"
            info["seconds"] = round(time.perf_counter() - t0, 2)
            if "reason" in info:
                (tmp / "model.onnx").unlink(missing_ok=True)
                (tmp / "failed.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
            else:
                (tmp / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if "reason" not in info:
            log.info("exported %s to ONNX in %s (min cosine vs torch %.7f)", folder, target, info["min_cosine_vs_torch"])
        return ensure_exported(folder, cache_dir)


def _export(layout: ModelLayout, out: Path) -> None:
    """Trace the transformer (eager attention, a padded sample so the mask is part of the graph)."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise OnnxUnsupported("exporting to ONNX needs torch and transformers (installed by `make setup`)") from exc

    model = AutoModel.from_pretrained(layout.folder, attn_implementation="eager", local_files_only=True).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.full((2, 16), 1000, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python booleans: the checks below decide
        torch.onnx.export(LastHiddenState(model), (ids, mask, torch.zeros_like(ids)), str(out), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _check(layout: ModelLayout, onnx_path: Path) -> float:
    """Smallest cosine between this export's vectors and sentence-transformers' on the probe texts,
    encoded one by one and as one padded batch."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(layout.folder, device="cpu", local_files_only=True)
    ref = st.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    enc = OnnxEncoder(layout, onnx_path)
    batch = enc.encode(list(PROBES))
    single = np.vstack([enc.encode([p]) for p in PROBES])
    return float(min((ref * batch).sum(1).min(), (ref * single).sum(1).min()))


class OnnxEncoder:
    """A loaded ONNX session and tokenizer for one model: ``encode(texts)`` -> normalised float32 vectors."""

    def __init__(self, layout: ModelLayout, onnx_path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnsupported("the ONNX backend needs onnxruntime and tokenizers: pip install onnxruntime") from exc
        self.layout = layout
        tok = Tokenizer.from_file(str(Path(layout.folder) / "tokenizer.json"))
        tok.enable_truncation(layout.max_seq_length)  # as sentence-transformers: max_seq_length, longest first
        pad_id = tok.token_to_id("[PAD]")
        tok.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token="[PAD]" if pad_id is not None else "<pad>")
        self.tokenizer = tok
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # warnings only go to our log
        so.inter_op_num_threads = 1
        # No busy-waiting between runs: on a small shared machine the spinning threads take the CPU the
        # rest of the query (search, answer) and other processes need (measured: encode p50 and batch
        # throughput both better without it on 2 cores).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encs], dtype=np.int64)
        hidden = self.session.run(None, feed)[0]
        if self.layout.pooling == "cls":
            vecs = hidden[:, 0]
        else:  # mean over real tokens, as sentence-transformers' Pooling
            m = mask[..., None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.clip(norms, 1e-12, None), dtype=np.float32)


class OnnxEmbedder:
    """The :class:`rag.embed.Embedder` protocol on onnxruntime; the model loads (and is exported, the
    first time) on first use. Texts are batched by token length so little padding is computed."""

    backend = "onnx"

    def __init__(self, name: str, cache_dir: Path, resolve: Callable[[str, Path], str], batch_size: int = 16) -> None:
        """``resolve(name, cache_dir)`` gives the model's local folder (:func:`rag.embed.resolve_model`)."""
        self.model_id = name
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self._resolve = resolve
        self._encoder: OnnxEncoder | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> OnnxEncoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self._load()
        return self._encoder

    def _load(self) -> OnnxEncoder:
        where = Path(self._resolve(self.model_id, self.cache_dir))
        if not where.is_dir():
            raise OnnxUnsupported(f"model {self.model_id!r} is not a local folder; the ONNX backend needs one")
        layout = read_layout(where)
        return OnnxEncoder(layout, ensure_exported(where, self.cache_dir))

    @property
    def dim(self) -> int:
        return self.encoder.layout.dim

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.encoder
        if len(texts) <= self.batch_size:
            return enc.encode(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")  # as sentence-transformers: by length
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), unit="text")
        for i in range(0, len(texts), self.batch_size):
            idx = order[i : i + self.batch_size]
            out[idx] = enc.encode([texts[j] for j in idx])
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out
