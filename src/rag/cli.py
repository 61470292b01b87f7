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
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import RagError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"rag: error: {message} (see `{self.prog} --help`)\n")


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

    pa = sub.add_parser("ask", help="answer a question from the index")
    pa.add_argument("question", nargs="?", help="the question (or use --batch)")
    pa.add_argument("-k", type=int, help="number of passages to retrieve (default 5)")
    pa.add_argument("--mode", choices=["hybrid", "dense", "lexical"], help="retrieval mode (default hybrid)")
    pa.add_argument("--index", type=Path, help="index folder")
    pa.add_argument("--corpus", type=Path, help="corpus folder (to check the index is up to date)")
    pa.add_argument("--json", action="store_true", help="print the answer as JSON")
    pa.add_argument("--batch", type=Path, help="JSON lines file, each with 'question' and optional 'id'")
    _answer_arguments(pa)

    pc = sub.add_parser("chat", help="a conversation on the terminal: one question per line, follow-ups understood")
    pc.add_argument("-k", type=int, help="number of passages to retrieve (default 5)")
    pc.add_argument("--mode", choices=["hybrid", "dense", "lexical"], help="retrieval mode (default hybrid)")
    pc.add_argument("--index", type=Path, help="index folder")
    pc.add_argument("--corpus", type=Path, help="corpus folder (to check the index is up to date)")
    pc.add_argument("--json", action="store_true", help="print each answer as one JSON line")
    _answer_arguments(pc)
    pe = sub.add_parser("eval", help="score retrieval and answers on a question set (or a BEIR dataset)")
    pe.add_argument("--qa", type=Path, default=Path("eval/qa.jsonl"), help="curated question set (JSON lines)")
    pe.add_argument("--index", type=Path, help="index folder")
    pe.add_argument("--corpus", type=Path, help="corpus folder")
    pe.add_argument("--beir", type=Path, help="a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    pe.add_argument("--split", default="test", help="BEIR qrels split (default test; tune on train)")
    pe.add_argument("--rows", default="hybrid,dense,lexical,hybrid-rrf", help="comma-separated rows: MODE or MODE-FUSION")
    pe.add_argument("--no-langchain", action="store_true", help="skip the stock LangChain baseline row")
    pe.add_argument("--out", type=Path, default=Path("eval/reports"), help="where latest.json/.md and plots go")
    pe.add_argument("--json", action="store_true", help="print the report as one JSON object")
    pe.add_argument("--no-progress", action="store_true", help="no progress bar")
    pb = sub.add_parser("bench", help="measure speed and memory of every stage (and scale, with --scale)")
    from .bench import add_arguments as _bench_arguments  # light: bench.py imports heavy things lazily

    _bench_arguments(pb)
    return p


def _answer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer", choices=["extractive", "llm"],
                   help="extractive (default, offline) or llm (RAG_LLM_BACKEND: ollama, openai or llamacpp)")
    p.add_argument("--llm-backend", choices=["ollama", "openai", "llamacpp"], help="chat model backend for --answer llm")
    p.add_argument("--llm-model", help="chat model name (or RAG_LLM_MODEL)")
    p.add_argument("--llm-base-url", help="server address (or RAG_LLM_BASE_URL)")


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads made
    # FAISS training ~7x slower, and query latency is the same either way (measured for issue 6).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "index":
            return _index(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "chat":
            return _chat(args)
        if args.command == "bench":
            from .bench import run_cli

            return run_cli(args, _settings(args))
        return _ask(args)
    except RagError as exc:
        print(f"rag: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace):
    from .settings import Settings

    return Settings.from_env(
        corpus_dir=getattr(args, "corpus", None), index_dir=getattr(args, "index", None),
        answer=getattr(args, "answer", None), llm_backend=getattr(args, "llm_backend", None),
        llm_model=getattr(args, "llm_model", None), llm_base_url=getattr(args, "llm_base_url", None),
    )


def _index(args: argparse.Namespace) -> int:
    from .index import build_index

    settings = _settings(args)
    bar = None

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal bar
        if args.no_progress or not sys.stderr.isatty() and not stage.startswith("embed"):
            return
        if stage.startswith("embed"):
            from tqdm import tqdm

            if bar is None or bar.desc != stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, desc=stage, unit="text", file=sys.stderr, disable=args.no_progress)
            bar.update(done - bar.n)

    result = build_index(settings, force=args.force, progress=progress)
    if bar is not None:
        bar.close()
    m = result.manifest
    counts = m.get("counts", {})
    for s in result.skipped:
        print(f"skipped {s['doc_id']}: {s['reason']}", file=sys.stderr)
    for n in result.notices:
        print(f"note: {n}", file=sys.stderr)
    if result.status == "up-to-date":
        print(f"index is up to date: {counts.get('documents')} documents, {counts.get('chunks')} passages ({settings.index_dir})")
    else:
        print(
            f"built index: {counts.get('documents')} documents, {counts.get('chunks')} passages, "
            f"{counts.get('sentences')} sentences in {m.get('build_seconds')} s ({settings.index_dir})"
        )
    return 0


def _ask(args: argparse.Namespace) -> int:
    from .errors import BadQuestion
    from .pipeline import Assistant, clean_question

    if args.batch is None and args.question is None:
        raise BadQuestion('give a question, e.g. rag ask "What did the Commission decide?", or --batch FILE.jsonl')
    if args.batch is not None and args.question is not None:
        raise BadQuestion("give either a question or --batch, not both")
    items = _read_batch(args.batch) if args.batch else [(None, args.question)]
    settings = _settings(args)
    if args.batch is None:  # a bad question fails before the model loads
        clean_question(args.question, settings.max_question_chars)
    assistant = Assistant.load(settings).warm_up()
    stream = settings.answer == "llm" and not (args.json or args.batch)
    for item_id, question in items:
        echo = _Echo()
        try:
            ans = assistant.ask(question, k=args.k, mode=args.mode, on_token=echo if stream else None)
        except BadQuestion as exc:
            if args.batch is None:
                raise
            print(json.dumps({"id": item_id, "question": question, "error": str(exc)}, ensure_ascii=False))
            continue
        if args.json or args.batch:
            print(json.dumps(ans.to_json(item_id), ensure_ascii=False), flush=True)
        else:
            _print_human(ans, streamed=echo.used)
    return 0


class _Echo:
    """Prints the LLM's text as it streams, and remembers whether anything was printed."""

    def __init__(self) -> None:
        self.used = False

    def __call__(self, text: str) -> None:
        self.used = True
        sys.stdout.write(text)
        sys.stdout.flush()


def _chat(args: argparse.Namespace) -> int:
    """Read questions line by line; each answer knows the conversation so far (follow-ups are rewritten)."""
    from .errors import BadQuestion
    from .pipeline import Assistant

    settings = _settings(args)
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
        echo = _Echo()
        try:
            ans = assistant.ask(line, k=args.k, mode=args.mode, history=history, on_token=echo if stream else None)
        except BadQuestion as exc:
            print(f"rag: {exc}", file=sys.stderr)
            continue
        history.append((ans.question, ans.answer or ans.message))
        if args.json:
            print(json.dumps(ans.to_json(), ensure_ascii=False), flush=True)
        else:
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
    from .evaluate import format_table, run_eval, write_report

    settings = _settings(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    progress, close = _progress_bar(args.no_progress)
    try:
        if args.beir:
            from .beir import run_beir

            report = run_beir(settings, args.beir, split=args.split, rows=rows, progress=progress)
            stem = f"beir-{Path(args.beir).resolve().name}-{args.split}"
        else:
            if not args.qa.is_file():
                from .errors import RagError as _E

                raise _E(f"question set {args.qa} not found: give --qa FILE.jsonl")
            report = run_eval(settings, args.qa, rows=rows, include_langchain=not args.no_langchain, progress=progress)
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


def _read_batch(path: Path) -> list[tuple[Any, str]]:
    from .errors import BadQuestion

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadQuestion(f"cannot read batch file {path}: {exc}") from exc
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise BadQuestion(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise BadQuestion(f"{path}:{n}: each line needs a 'question' string")
        items.append((obj.get("id"), obj["question"]))
    return items


def _print_human(ans, streamed: bool = False) -> None:
    if streamed:  # the raw text is on screen already; what follows is the checked answer
        print("\n")
        if ans.mode == "llm":
            print("Checked answer:")
    if ans.original_question is not None:
        print(f"(searched for: {ans.question})")
    for n in ans.notices:
        print(f"note: {n}")
    print(ans.message)
    for s in ans.unsupported_sentences:
        print(f"  ⚠ not supported by its citations: {s}")
    print()
    shown = ans.citations if not ans.abstained else ()
    if shown:
        for c in shown:
            flag = "" if c.supported else " · ⚠ does not support the answer"
            print(f"[{c.n}] {c.title} · p. {c.page} · {c.section} · chars {c.start}-{c.end}{flag}")
            print(f"    {c.text[:300]}{'…' if len(c.text) > 300 else ''}")
    else:
        print("Closest passages:")
        for i, p in enumerate(ans.passages[:3], 1):
            print(f"  {i}. p. {p.page} · {p.section} (score {p.score:.3f})")
            print(f"     {p.text[:200]}{'…' if len(p.text) > 200 else ''}")
    print(f"\n({ans.timings_ms['total']:.0f} ms)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
