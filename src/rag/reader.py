"""Stage 6a: the reader. A span-extraction model with a no-answer score reads the question with each
of the top passages and says (1) how likely it is that they answer it (``answerable``, a calibrated
probability: the assistant abstains below a threshold) and (2) which exact span answers it (the
short answer, as document offsets).

The model is ours (trained by :mod:`rag.reader_train` from the bundled all-MiniLM-L6-v2 weights on
SQuAD 2.0 tuning articles and the curated set; see ``models/reader/MODEL_CARD.md``), shipped in the
package as ONNX with float16 weights. At first use it is expanded to float32 into the cache folder;
both files are checked against the sha256 recorded in ``reader.json``. Query path: onnxruntime,
tokenizers, numpy (no torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_file
from .errors import ModelUnavailable, ReaderUnavailable

log = logging.getLogger(__name__)

ARTIFACT_DIR = Path(__file__).parent / "models" / "reader"
MAX_QUESTION_TOKENS = 64  # longer questions are cut before reading (the passage needs the room)
SPAN_CONF = ("exact", "overlap")


def _remedy(artifact_dir: Path) -> str:
    """What to do about a missing or corrupt reader file: the shipped files come with the repository, so
    restore them; retraining is the model card's recipe (an hour or more, never done at set-up)."""
    return (f"restore it with `git checkout -- {artifact_dir}`, or rebuild it with python -m rag.reader_train "
            f"as {artifact_dir / 'MODEL_CARD.md'} says (Reproduce); RAG_VERIFIER=off answers without the reader")


@dataclass(frozen=True)
class ReaderConfig:
    """``reader.json``: how the model was trained and how its scores are turned into decisions."""

    max_len: int
    max_answer_tokens: int
    #: answerable = sigmoid(a * margin + c * cos + b): margin = best span score - no-answer score,
    #: cos = the best cosine of question and a read passage (a retrieval feature); held-out fit
    calib_a: float
    calib_b: float
    #: answerable probability under which the assistant abstains, per strictness (held-out choice)
    thresholds: dict[str, float]
    #: a span becomes a short answer when its share of the span distribution is at least this
    short_min_conf: float
    sha256: dict[str, str]  # file name -> sha256 (the shipped files and the expanded float32 model)
    calib_c: float = 0.0
    #: read the first passage alone, and the others only when its margin is under this (None: read
    #: all at once). Chosen on held-out probes so that the best span is almost never elsewhere.
    exit_margin: float | None = None
    #: what a span's confidence is: "exact", the probability of that very span; "overlap", the
    #: probability of the spans that agree with it (token F1 >= 0.5: "EUR 600 million", "600 million"),
    #: so that the model's doubt between two boundaries of one answer is not read as doubt in the answer
    span_conf: str = "exact"

    @classmethod
    def from_json(cls, d: Any) -> "ReaderConfig":
        try:
            cfg = cls(int(d["max_len"]), int(d["max_answer_tokens"]), float(d["calib_a"]), float(d["calib_b"]),
                      {str(k): float(v) for k, v in dict(d["thresholds"]).items()}, float(d["short_min_conf"]),
                      {str(k): str(v) for k, v in dict(d["sha256"]).items()}, float(d.get("calib_c", 0.0)),
                      None if d.get("exit_margin") is None else float(d["exit_margin"]),
                      str(d.get("span_conf", "exact")))
            if cfg.span_conf not in SPAN_CONF:
                raise ValueError(f"span_conf must be one of {SPAN_CONF}, got {cfg.span_conf!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ReaderUnavailable(f"reader.json is damaged ({exc!r})") from exc
        return cfg

    def answerable(self, margin: float, cos: float = 0.0) -> float:
        z = self.calib_a * margin + self.calib_c * cos + self.calib_b
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


@dataclass(frozen=True)
class PassageReading:
    """What the reader found in one passage: its best span (document offsets) and scores."""

    rank: int  # position of the passage among those read
    start: int  # document offsets of the best span; -1 when no span could be read
    end: int
    margin: float  # best span score minus the no-answer score
    conf: float  # confidence in the best span, as reader.json's span_conf says (below: "exact")
    #: probability of the spans that agree with the best one (token F1 >= 0.5; span_conf "overlap")
    agree: float = 0.0

    @property
    def has_span(self) -> bool:
        return self.start >= 0


@dataclass(frozen=True)
class Reading:
    answerable: float  # probability that the read passages answer the question
    best: PassageReading | None  # the passage and span with the highest margin
    passages: tuple[PassageReading, ...]


def reader_context(chunk, doc_text: str) -> tuple[str, int]:
    """The text the reader reads for a :class:`rag.chunk.Chunk` and where the passage starts in it. The
    section path goes first (a next-steps row says "Egypt" only in its path); spans are only taken
    after it. Training (rag.reader_train) and answering use this one function."""
    prefix = f"{chunk.section_path} | " if chunk.section else ""
    return prefix + doc_text[chunk.start:chunk.end], len(prefix)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expand(src: Path, dst: Path) -> None:
    """Float16 weights back to float32 (the graph computes in float32), written atomically."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    with atomic_file(dst) as tmp:
        onnx.save(m, str(tmp))


class Reader:
    """The loaded reader: :meth:`read` scores a question against passages (thread-safe)."""

    def __init__(self, cfg: ReaderConfig, onnx_path: Path, tokenizer_path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ReaderUnavailable("the reader needs onnxruntime and tokenizers: pip install onnxruntime tokenizers") from exc
        self.cfg = cfg
        tok = Tokenizer.from_file(str(tokenizer_path))
        tok.no_padding()
        tok.enable_truncation(cfg.max_len, strategy="only_second")
        self.tokenizer = tok
        self._question_tokenizer = Tokenizer.from_file(str(tokenizer_path))  # no truncation: to cut questions
        self._question_tokenizer.no_truncation()
        self._question_tokenizer.no_padding()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    @classmethod
    def load(cls, cache_dir: Path, artifact_dir: Path = ARTIFACT_DIR) -> "Reader":
        cfg_path = artifact_dir / "reader.json"
        onnx_path, tok_path = artifact_dir / "reader.onnx", artifact_dir / "tokenizer.json"
        for p in (cfg_path, onnx_path, tok_path):
            if not p.is_file():
                raise ReaderUnavailable(f"reader file missing: {p}; {_remedy(artifact_dir)}")
        try:
            cfg = ReaderConfig.from_json(json.loads(cfg_path.read_text(encoding="utf-8")))
        except ReaderUnavailable as exc:  # a field missing or of the wrong kind
            raise ReaderUnavailable(f"{exc}: {cfg_path}; {_remedy(artifact_dir)}") from exc
        except ValueError as exc:
            raise ReaderUnavailable(f"{cfg_path} is not valid JSON ({exc}); {_remedy(artifact_dir)}") from exc
        if sha256_file(tok_path) != cfg.sha256.get("tokenizer.json"):
            raise ReaderUnavailable(f"reader file corrupt (sha256 differs from reader.json): {tok_path}; "
                                    f"{_remedy(artifact_dir)}")
        want = cfg.sha256.get("reader.fp32.onnx", "")
        expanded = Path(cache_dir) / "reader" / want[:16] / "reader.onnx"
        if not (expanded.is_file() and sha256_file(expanded) == want):
            if sha256_file(onnx_path) != cfg.sha256.get("reader.onnx"):
                raise ReaderUnavailable(f"reader file corrupt (sha256 differs from reader.json): {onnx_path}; "
                                        f"{_remedy(artifact_dir)}")
            _expand(onnx_path, expanded)
            if sha256_file(expanded) != want:
                expanded.unlink(missing_ok=True)
                raise ReaderUnavailable(f"expanding {onnx_path} gave a model whose sha256 differs from reader.json; "
                                        f"{_remedy(artifact_dir)}")
        return cls(cfg, expanded, tok_path)

    def threshold(self, strictness: str) -> float:
        try:
            return self.cfg.thresholds[strictness]
        except KeyError:
            raise ModelUnavailable(f"no threshold for strictness {strictness!r} in reader.json") from None

    def read(self, question: str, contexts: Sequence[tuple[str, int, int]], cos: float = 0.0,
             early_exit: bool = True) -> Reading:
        """``contexts``: (text the reader reads, where the passage starts in it, the passage's document
        offset) per passage, best first; ``cos``: the best question-passage cosine among them. Spans
        are only taken inside the passage part. With ``early_exit`` (and ``exit_margin`` in
        reader.json) the first passage is read alone, and the rest only if it does not clearly answer."""
        if not contexts:
            return Reading(0.0, None, ())
        question = self._cut(question)
        out = []
        if early_exit and self.cfg.exit_margin is not None and len(contexts) > 1:
            out = self._read(question, contexts[:1], 0)
            if out[0].margin >= self.cfg.exit_margin:
                return Reading(self.cfg.answerable(out[0].margin, cos), out[0] if out[0].has_span else None, tuple(out))
        out += self._read(question, contexts[len(out):], len(out))
        best = max(out, key=lambda r: r.margin)
        return Reading(self.cfg.answerable(best.margin, cos), best if best.has_span else None, tuple(out))

    def _read(self, question: str, contexts: Sequence[tuple[str, int, int]], first_rank: int) -> list[PassageReading]:
        """One ONNX run over ``contexts``: each passage's best span (ranks from ``first_rank``)."""
        encs = self.tokenizer.encode_batch([(question, c[0]) for c in contexts])
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
            types[i, :len(e.ids)] = e.type_ids
        start, end = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        return [self._best_span(first_rank + i, e, start[i, :len(e.ids)], end[i, :len(e.ids)], prefix, doc_off)
                for i, (e, (ctx, prefix, doc_off)) in enumerate(zip(encs, contexts))]

    def _cut(self, question: str) -> str:
        """At most MAX_QUESTION_TOKENS tokens of the question (a 2,000-character question would leave no
        room for the passage)."""
        offs = self._question_tokenizer.encode(question, add_special_tokens=False).offsets
        return question[: offs[MAX_QUESTION_TOKENS - 1][1]] if len(offs) > MAX_QUESTION_TOKENS else question

    def _best_span(self, rank: int, enc, s: np.ndarray, e: np.ndarray, prefix: int, doc_off: int) -> PassageReading:
        seq = enc.sequence_ids
        offs = enc.offsets
        ok = np.array([sid == 1 and o[0] >= prefix and o[1] > o[0] for sid, o in zip(seq, offs)])
        null = float(s[0] + e[0])
        if not ok.any():
            return PassageReading(rank, -1, -1, -1e9, 0.0)
        ms = np.where(ok, s, -np.inf)
        me = np.where(ok, e, -np.inf)
        # best (i, j) with i <= j < i + max_answer_tokens: a band of the outer sum
        L = len(s)
        scores = ms[:, None] + me[None, :]
        band = np.triu(np.ones((L, L), dtype=bool)) & ~np.triu(np.ones((L, L), dtype=bool), self.cfg.max_answer_tokens)
        scores = np.where(band, scores, -np.inf)
        flat = int(np.argmax(scores))
        i, j = divmod(flat, L)
        best = float(scores[i, j])
        top = max(best, null)
        p = np.exp(scores - top)  # 0 outside the band
        z = p.sum() + math.exp(null - top)
        exact = float(math.exp(best - top) / z)
        agree = float(p[_agreeing(i, j, L)].sum() / z)
        a = offs[i][0] - prefix + doc_off
        b = offs[j][1] - prefix + doc_off
        return PassageReading(rank, a, b, best - null, agree if self.cfg.span_conf == "overlap" else exact, agree)


def _agreeing(i: int, j: int, n: int) -> np.ndarray:
    """Mask of the token spans (a, b) over ``n`` tokens whose token F1 with span (i, j) is at least 0.5."""
    a = np.arange(n)[:, None]
    b = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(j, b) - np.maximum(i, a) + 1, 0, None)
    return (b >= a) & (4 * overlap >= (j - i + 1) + (b - a + 1))


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _reader(cache_dir: str, artifact_dir: str) -> Reader:
    return Reader.load(Path(cache_dir), Path(artifact_dir))


def get_reader(cache_dir: Path, artifact_dir: Path = ARTIFACT_DIR) -> Reader:
    """One loaded reader per process (per cache folder)."""
    with _lock:
        return _reader(str(cache_dir), str(artifact_dir))
