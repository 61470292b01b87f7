"""Chat with your documents: a thin Streamlit front end over :mod:`rag`.

    streamlit run app.py        (settings from RAG_* environment variables, e.g. RAG_INDEX_DIR)

Two views (sidebar): the chat, and "Evaluation", which runs :func:`rag.evaluate.run_eval` on a
question set (``*.jsonl`` in ``eval/``, or in ``RAG_EVAL_DIR``) and writes its report to
``eval/reports/`` like `rag eval`.

Widgets and session state only; escaping, highlighting, context windows, the export, the eval
tables and the background index builder live in :mod:`rag.ui`, upload checks in :mod:`rag.upload`,
redaction and the operator's model list in :mod:`rag.generate`. Document text is always escaped
and never rendered as HTML. The LLM's backend, server, key and model file are the operator's
(RAG_* variables) and shown read-only; a visitor may only pick one of the models in RAG_LLM_MODELS.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import traceback
from pathlib import Path
from typing import Any, Mapping

import streamlit as st

from rag import ui
from rag.answer import Citation
from rag.errors import BadQuestion, IndexMissing, RagError
from rag.generate import StreamRedactor, choose_model, fallback_notice, model_choices, redact, shown_url
from rag.index import MANIFEST, DocRecord, Manifest, load_manifest, stale_reasons
from rag.pipeline import Assistant
from rag.settings import ANSWER_MODES, MODES, STRICTNESS, Settings, set_process_env
from rag.upload import REMOVED_DIR, remove_document, save_upload

set_process_env()  # no model hub, quiet Hugging Face libraries (before any model loads)
log = logging.getLogger("rag.app")
VIEWS = ("Chat", "Documents", "Evaluation")
EVAL_DIR = Path(os.environ.get("RAG_EVAL_DIR") or Path(__file__).resolve().parent / "eval")

st.set_page_config(page_title="Ask the documents", page_icon=":material/menu_book:")


@st.cache_resource(show_spinner="Loading the index and the model…", max_entries=4)
def load_assistant(settings: Settings, manifest_stamp: int) -> Assistant:
    """One Assistant per settings and index build, shared by all sessions of this server process.
    ``manifest_stamp`` changes when the index is rebuilt (here or by `rag index`)."""
    assistant = Assistant.load(settings, check_fresh=False)  # freshness is checked (and shown) below
    _ = assistant.embedder.dim  # load the model now, not on the first question
    return assistant


@st.cache_resource(show_spinner=False, max_entries=4)
def load_chat_model(settings: Settings) -> Any:
    """The LangChain chat model of these settings, shared by all sessions (raises LLMUnavailable)."""
    from rag.generate import make_chat_model

    return make_chat_model(settings)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_remote(url: str, key: str) -> Any:
    """The `rag serve` this app asks (RAG_API_URL), shared by all sessions of this server process."""
    from rag.client import RemoteAssistant

    return RemoteAssistant(url, key)


def remote_session(settings: Settings, status_box: Any) -> Any:
    """The remote assistant, after a health check (its reason shown, and the run stopped, when the
    server cannot answer)."""
    remote = load_remote(settings.api_url, settings.api_key)
    try:
        health = remote.health()
    except RagError as exc:
        status_box.markdown("**Status:** unreachable")
        st.error(ui.message_markdown(redact(str(exc), settings)))
        st.stop()
    status_box.markdown("  \n".join([f"**Server:** {ui.md_text(shown_url(settings.api_url, settings))}",
                                      *ui.server_status_lines(health)]))
    return remote


def answer_settings(settings: Settings) -> Settings:
    """The sidebar's answer mode, and in generative mode the operator's LLM settings (read-only) and
    a choice among the models the operator listed (RAG_LLM_MODELS). A visitor never gives a server,
    a key or a path: those are the operator's (RAG_* variables), so no request goes where a visitor
    says and no file or module a visitor names is opened. Kept in session state, per session."""
    st.header("Answers")
    labels = {"extractive": "Extractive (offline, quoted)", "llm": "Generative (LLM, verified)"}
    answer = st.radio("Answer mode", ANSWER_MODES, index=ANSWER_MODES.index(settings.answer),
                      format_func=labels.__getitem__, key="answer_mode")
    if settings.verifier == "on":
        strict = st.select_slider("Strictness", STRICTNESS, value=settings.strictness, key="strictness",
                                  help="How readily the assistant says the documents do not say: strict abstains "
                                       "more often, lenient answers more often.")
        settings = settings.with_(strictness=strict)
    if answer != "llm":
        return settings.with_(answer=answer)
    if settings.api_url:  # the server's model writes, and the server checks it
        st.caption("The server's language model writes the answer; it is checked against the passages there.")
        return settings.with_(answer=answer)
    st.markdown("  \n".join(ui.llm_settings_lines(settings)))
    choices = model_choices(settings)
    model = st.selectbox("Model", choices, key="llm_model", disabled=len(choices) < 2) if choices else None
    st.caption("Answers are checked against the passages; unsupported sentences are flagged. "
               "If the server cannot be reached, the extractive answer is shown.")
    return choose_model(settings.with_(answer=answer), model)


def request_rebuild() -> None:
    st.session_state.rebuild = True


def clear_chat() -> None:
    st.session_state.turns = []


@st.cache_resource(show_spinner=False)
def index_builder(index_dir: str) -> ui.IndexBuilder:
    """One background builder per index folder and server process: a build outlives the script run
    (and the session) that asked for it, so a question or a click cannot cancel it."""
    return ui.IndexBuilder(on_done=load_assistant.clear)


@st.fragment(run_every=1.0)
def build_progress(builder: ui.IndexBuilder) -> None:
    """The running build's progress, refreshed every second; when it ends, the whole page reruns
    (and picks up the new index)."""
    status = builder.status()
    if not status.running:
        st.rerun()
    st.progress(status.step.fraction, text=status.step.text)


def add_documents(settings: Settings, files: list[Any], replace: bool, builder: ui.IndexBuilder) -> list[tuple[bool, str]]:
    """Save uploaded files into the corpus (each checked by :func:`rag.upload.save_upload`) and ask
    ``builder`` for a re-index right after each file is saved; returns (saved, message) per file.

    Nothing here calls Streamlit: every element call can end the script run (a question asked
    meanwhile starts a new one), which must not leave files unsaved or the index not requested.
    Files handled already in this session (a run cut short, then repeated with the same submission)
    are not saved again; their message is repeated."""
    done: dict[str, tuple[bool, str]] = st.session_state.setdefault("uploads_done", {})
    results = []
    for f in files:
        file_id = str(getattr(f, "file_id", "") or "")
        key = f"{file_id}:{replace}"  # the same upload submitted with "replace" changed is a new request
        if file_id and key in done:
            results.append(done[key])
            continue
        try:
            saved = save_upload(settings.corpus_dir, f.name, f.getvalue(), max_file_mb=settings.max_file_mb, overwrite=replace)
        except RagError as exc:
            result = (False, str(exc))
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others (or the re-index)
            log.exception("saving an upload failed")
            result = (False, f"{getattr(f, 'name', 'a file')}: could not be saved ({type(exc).__name__})")
        else:
            builder.request(settings)  # before anything else: the index must follow the corpus
            result = (True, saved.message)
        if file_id:
            done[key] = result
        results.append(result)
    return results


def show_upload_results(results: list[tuple[bool, str]]) -> None:
    for ok, message in results:
        if ok:
            st.success(ui.md_text(message))
        else:
            st.error(ui.message_markdown(message))


def upload_limit(settings: Settings) -> dict[str, int]:
    """The browser-side size limit, where this Streamlit has it (1.5x); rag.upload checks it anyway."""
    if "max_upload_size" not in inspect.signature(st.file_uploader).parameters:
        return {}
    return {"max_upload_size": max(1, math.ceil(settings.max_file_mb))}


def check_index(settings: Settings) -> tuple[Manifest | None, RagError | None]:
    """(manifest, None) for a readable index, (None, None) when there is none, (None, error) otherwise."""
    try:
        return load_manifest(settings.index_dir), None
    except IndexMissing:
        return None, None
    except RagError as exc:
        return None, exc


def manifest_stamp(settings: Settings) -> int:
    try:
        return (Path(settings.index_dir) / MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0


def render_source(c: Citation, tag: str, key: str, doc_text: str | None, short: tuple[int, int] | None = None) -> None:
    with st.expander(ui.citation_label(c, tag)):
        st.markdown(ui.passage_markdown(c, doc_text, short))
        if doc_text is not None and st.toggle("Show in context", key=key):
            st.markdown(ui.context_markdown(doc_text, c.start, c.end, short=short))


def render_turn(turn: ui.Turn, docs: Mapping[str, DocRecord]) -> None:
    with st.chat_message("user"):
        st.markdown(ui.md_text(turn.question))
    with st.chat_message("assistant"):
        # Same element layout as when the answer was first shown (a placeholder for the streamed text,
        # then the answer), so expanders and toggles keep their state when the page reruns.
        st.empty()
        render_answer(turn, docs)


def render_answer(turn: ui.Turn, docs: Mapping[str, DocRecord]) -> None:
    a = turn.answer
    if a is None:
        st.error(ui.message_markdown(turn.error or "no answer"))
        return
    if a.original_question is not None:
        st.caption("Searched for: " + ui.md_text(a.question))
    for notice in a.notices:
        st.caption(ui.md_text(notice))
    if a.abstained:
        st.markdown(ui.md_text(a.message))
        if a.passages:
            st.caption("Closest passages:")
        for i, p in enumerate(a.passages[:3], 1):
            render_source(p, f"#{i}", f"ctx-{turn.id}-p{i}", _text(docs, p.doc))
    else:
        short = ui.short_answer_markdown(a)
        if short is not None:
            st.markdown(short)
        st.markdown(ui.md_text(a.answer))
        for sentence in a.unsupported_sentences:
            st.warning(ui.unsupported_markdown(sentence))
        for c in a.citations:
            render_source(c, f"[{c.n}]", f"ctx-{turn.id}-c{c.n}", _text(docs, c.doc), ui.short_span(a, c))
    st.caption(ui.answer_caption(a, turn.mode, turn.k))


def render_eval(settings: Settings, assistant: Assistant) -> None:
    """The Evaluation view: choose a question set and rows, run, then the report and a drill-down."""
    from rag import evaluate  # only this view needs it

    sets = sorted(p.name for p in EVAL_DIR.glob("*.jsonl"))
    if not sets:
        st.info(ui.message_markdown(f"No question sets (`*.jsonl`) in {EVAL_DIR}."))
        return
    default = sets.index("qa.jsonl") if "qa.jsonl" in sets else 0
    qa_name = st.selectbox("Question set", sets, index=default, key="eval_qa")
    rows = st.multiselect("Rows (retrieval mode, or mode-fusion)", evaluate.ROWS, default=list(evaluate.ROWS), key="eval_rows")
    langchain = st.checkbox("Include the stock LangChain baseline (slower; needs the eval extra)", key="eval_langchain")
    if st.button("Run the evaluation", type="primary", disabled=not rows, key="eval_run"):
        st.session_state.eval_result = run_evaluation(settings, assistant, EVAL_DIR / qa_name, rows, langchain)
    result = st.session_state.get("eval_result")
    if result is not None:
        render_report(*result, docs=assistant.data.docs, answer_k=settings.k)


def run_evaluation(settings: Settings, assistant: Assistant, qa_path: Path, rows: list[str], langchain: bool):
    """Run the suite with a progress bar and write the report; (report, {"md"/plot name: bytes}) or
    None on an error. The files' bytes are kept, so a later `rag eval` cannot swap them under this table."""
    from rag import evaluate

    stages = [*rows, *(["langchain-stock"] if langchain else [])]
    bar = st.progress(0.0, text="Starting the evaluation…")

    def progress(stage: str, done: int, total: int) -> None:
        step = ui.eval_step(stage, done, total, stages)
        bar.progress(step.fraction, text=step.text)

    try:
        report = evaluate.run_eval(settings, qa_path, rows=rows, include_langchain=langchain, progress=progress, assistant=assistant)
    except RagError as exc:
        bar.empty()
        st.error(ui.message_markdown(str(exc)))
        return None
    bar.empty()
    try:
        paths = evaluate.write_report(report, EVAL_DIR / "reports")
        files = {k: Path(paths[k]).read_bytes() for k in ("md", "recall_png", "kinds_png") if k in paths}
    except OSError as exc:
        st.warning(ui.md_text(f"the report could not be written to {EVAL_DIR / 'reports'}: {exc}"))
        files = {}
    return report, files


def render_report(report: Any, files: Mapping[str, bytes], docs: Mapping[str, DocRecord], answer_k: int) -> None:
    n = len(report.questions)
    st.caption(ui.md_text(f"{Path(report.dataset).name} · {n} questions · model {report.model} · {report.created}"))
    st.dataframe(ui.metrics_rows(report.rows), hide_index=True)
    plots = [files[k] for k in ("recall_png", "kinds_png") if k in files]
    for col, png in zip(st.columns(len(plots)) if plots else [], plots):
        col.image(png)
    if "md" in files:
        st.download_button("Download the report (Markdown)", files["md"], file_name="eval-report.md",
                           mime="text/markdown", key="eval_download")

    failed = sum(1 for q in report.questions if not q.passed)
    st.subheader(f"Questions: {failed} of {n} failed" + (f" ({next(iter(report.rows))})" if report.rows else ""))
    only_failed = st.toggle("Only failed questions", key="eval_only_failed")
    table = ui.question_rows(report.questions, only_failed=only_failed)
    if not table:
        st.success("Every question passed.")
        return
    st.dataframe(table, hide_index=True)
    by_id = {q.id: q for q in report.questions}
    choice = st.selectbox("Show a question", [r["Id"] for r in table], format_func=lambda i: ui.question_label(by_id[i]), key="eval_question")
    q = by_id[choice]
    if q.passed:
        st.success("Pass")
    else:
        st.error(ui.md_text("Fail: " + ui.failure_reason(q, answer_k)))
    st.markdown(ui.question_markdown(q))
    cits = q.citations
    if cits:
        st.caption("Cited passages:")
    for i, c in enumerate(cits):
        with st.expander(ui.eval_citation_label(c)):
            st.markdown(ui.md_text(str(c.get("text", ""))))
            doc_text = _text(docs, str(c["doc"])) if c.get("doc") else None  # the report may not name it
            start, end = c.get("start"), c.get("end")
            if doc_text is not None and isinstance(start, int) and isinstance(end, int):
                if st.toggle("Show in context", key=f"eval-ctx-{q.id}-{i}"):
                    st.markdown(ui.context_markdown(doc_text, start, end))


def render_library(settings: Settings, assistant: Assistant, manifest: Manifest, builder: ui.IndexBuilder) -> None:
    """The document library: every corpus file with its status; re-index or remove one."""
    rows = ui.library_rows(manifest, assistant.data.docs, assistant.data.chunks)
    if not rows:
        st.info("No documents yet: add some in the sidebar.")
        return
    st.dataframe([r.to_row() for r in rows], hide_index=True, width="stretch", key="library_table")
    choice = st.selectbox("Document", [r.doc_id for r in rows], key="library_doc")
    left, right = st.columns(2)
    if left.button("Re-index this document", key="library_reindex"):
        builder.request(settings, refresh=[choice])
        st.info(ui.md_text(f"Reading {choice} again; the rest of the index is kept."))
    confirm = right.checkbox("Yes, remove it from the corpus", key="library_confirm")
    if right.button("Remove", key="library_remove", disabled=not confirm):
        try:
            moved = remove_document(settings.corpus_dir, choice)
        except RagError as exc:
            st.error(ui.message_markdown(str(exc)))
        else:
            builder.request(settings)
            st.success(ui.md_text(f"Removed {choice} from the index; the file was moved to "
                                  f"{Path(REMOVED_DIR) / moved.name} in the corpus folder (delete it there to free the space)."))


def render_export(box: Any, docs: Mapping[str, DocRecord]) -> None:
    if st.session_state.turns:
        box.download_button(
            "Export conversation (Markdown)",
            ui.conversation_markdown(st.session_state.turns, {d: r.text for d, r in docs.items()}),
            file_name="conversation.md",
            mime="text/markdown",
        )


def _text(docs: Mapping[str, DocRecord], doc_id: str) -> str | None:
    rec = docs.get(doc_id)
    return rec.text if rec is not None else None


# ---------------------------------------------------------------------------------------------

st.session_state.setdefault("turns", [])
st.session_state.setdefault("next_id", 0)

try:
    settings = Settings.from_env()
except RagError as exc:
    st.error(ui.message_markdown(str(exc)))
    st.stop()

remote = bool(settings.api_url)  # ask a `rag serve` instead of a local index
with st.sidebar:
    view = st.radio("View", VIEWS if not remote else VIEWS[:1], horizontal=True, key="view")
    st.header("Retrieval")
    mode = st.selectbox("Retrieval mode", MODES, index=MODES.index(settings.mode), key="mode")
    k = st.slider("Passages (k)", 1, 10, value=min(max(settings.k, 1), 10), key="k")
    filter_box = st.container()
    asked = answer_settings(settings)
    st.header("Server" if remote else "Index")
    status_box = st.container()
    if not remote:
        st.button("Rebuild index", key="rebuild_sidebar", on_click=request_rebuild)
    st.button("Clear chat", on_click=clear_chat)
    export_box = st.container()
    uploads, replace, add = [], False, False
    if not remote:
        st.header("Add documents")
        # No `type=` filter: Streamlit raises inside the script on a disallowed name sent by a client;
        # rag.upload checks name, type and content itself and says what is wrong.
        with st.form("upload", clear_on_submit=True, border=False):
            uploads = st.file_uploader("Files (.txt, .md, .pdf, .docx, .html)", accept_multiple_files=True, key="uploads", **upload_limit(settings))
            replace = st.checkbox("Replace files with the same name", key="replace")
            add = st.form_submit_button("Add to the corpus and re-index")

build = None  # a local index build in progress (none with a remote server)
if remote:
    st.title("Ask the documents")
    assistant = remote_session(settings, status_box)
    docs = assistant.docs
else:
    # Index: built in the background when missing or asked to; checked before loading.
    builder = index_builder(str(Path(settings.index_dir).resolve()))
    st.session_state.setdefault("builds_seen", builder.status().finished)
    # Uploads are saved (and their re-index requested) before the next element call, which could end this run.
    upload_results = add_documents(settings, uploads, replace, builder) if add and uploads else []
    st.title({"Chat": "Ask the documents", "Documents": "Documents"}.get(view, "Evaluation"))
    show_upload_results(upload_results)
    forced = st.session_state.pop("rebuild", False)
    if forced:
        builder.request(settings, force=True)
    manifest, problem = check_index(settings)
    build = builder.status()
    if manifest is None and problem is None and not build.running and not build.failed:
        builder.request(settings)  # no index yet (after a failed build, only when asked again)
        build = builder.status()
    reported = build.finished > st.session_state.builds_seen
    if reported:  # each finished build is reported once per session
        st.session_state.builds_seen = build.finished
        if build.failed:
            st.error(ui.message_markdown(build.message))
        else:
            st.success(ui.message_markdown(build.message))
            manifest, problem = check_index(settings)

    if build.running and (manifest is None or problem is not None):  # nothing to answer from yet
        st.info(ui.BUILDING_FIRST if problem is None else ui.BUILDING_BROKEN)
        build_progress(builder)
        st.chat_input("Ask a question about the documents", disabled=True)
        st.stop()
    if manifest is None and problem is None:  # no index, and its build failed
        status_box.markdown("**Status:** no index")
        if not reported:
            st.error(ui.message_markdown(build.message))
        st.button("Rebuild index", key="rebuild_error", on_click=request_rebuild, type="primary")
        st.stop()
    if problem is not None:
        status_box.markdown("**Status:** unusable")
        st.error(ui.message_markdown(str(problem)))
        st.button("Rebuild index", key="rebuild_error", on_click=request_rebuild, type="primary")
        st.stop()

    reasons = stale_reasons(manifest, settings)
    status_box.markdown("  \n".join(ui.index_status_lines(manifest, reasons)))
    if build.running:
        st.info(ui.BUILDING_AGAIN)
        build_progress(builder)
    elif reasons:
        st.warning(ui.message_markdown("The index is out of date: " + "; ".join(reasons[:3]) + ". Answers come from the old index."))
        st.button("Rebuild index", key="rebuild_stale", on_click=request_rebuild)

    try:
        assistant = load_assistant(settings, manifest_stamp(settings))
    except RagError as exc:
        st.error(ui.message_markdown(str(exc)))
        st.button("Rebuild index", key="rebuild_load", on_click=request_rebuild, type="primary")
        st.stop()

    docs = assistant.data.docs
    if view == "Documents":
        render_library(settings, assistant, manifest, builder)
        st.stop()
with filter_box:  # limit answers to some documents (all when none is chosen)
    st.session_state["only_docs"] = [d for d in st.session_state.get("only_docs", []) if d in docs]  # removed ones go
    only = st.multiselect("Answer from (all documents when empty)", sorted(docs), key="only_docs")
if view == "Evaluation":
    render_export(export_box, docs)
    render_eval(settings, assistant)
    st.stop()

for turn in st.session_state.turns:
    render_turn(turn, docs)

prompt = st.chat_input("Ask a question about the documents")
if prompt is not None:
    if not prompt.strip():
        st.warning("Type a question first.")
    else:
        turn_id = st.session_state.next_id
        st.session_state.next_id += 1
        with st.chat_message("user"):
            st.markdown(ui.md_text(prompt))
        with st.chat_message("assistant"):
            live = st.empty()  # the LLM's text as it streams (escaped), replaced by the checked answer
            streamed: list[str] = []  # what is shown: redacted, without an end that could start a secret
            redactor: list[StreamRedactor] = []

            def on_token(text: str) -> None:
                if not redactor:  # made on the first piece: by then `chat` is the model that streams
                    redactor.append(StreamRedactor(asked, chat))
                streamed.append(redactor[0].feed(text))
                live.markdown(ui.md_text("".join(streamed)) + " ▌")

            chat, unavailable = None, None
            try:
                if asked.answer == "llm" and not remote:  # a remote server uses its own model
                    try:
                        chat = load_chat_model(asked)
                    except RagError as exc:  # e.g. the backend's extra is not installed: say so, answer extractively
                        unavailable = fallback_notice(str(exc))
                live.caption("Searching the documents…")
                answer = assistant.ask(prompt, k=k, mode=mode, answer="extractive" if unavailable else asked.answer,
                                       chat=chat, history=ui.history_pairs(st.session_state.turns), on_token=on_token,
                                       strictness=asked.strictness, docs=only or None)
                extra = ((unavailable,) if unavailable else ()) + ((ui.ANSWERED_FROM_PREVIOUS,) if build and build.running else ())
                answer = dataclasses.replace(answer, notices=tuple(redact(n, asked, chat) for n in answer.notices + extra))
                turn = ui.Turn(turn_id, prompt, answer, mode=mode, k=k)
            except BadQuestion as exc:
                st.warning(ui.message_markdown(str(exc)))
                turn = None
            except RagError as exc:
                turn = ui.Turn(turn_id, prompt, error=redact(str(exc), asked, chat), mode=mode, k=k)
            except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback (redacted) to the log
                log.error("question failed: %s", redact("".join(traceback.format_exception(exc)), asked, chat))
                turn = ui.Turn(turn_id, prompt, error=redact(f"Something went wrong ({type(exc).__name__}: {exc})", asked, chat),
                               mode=mode, k=k)
            live.empty()
            if turn is not None:
                st.session_state.turns.append(turn)
                render_answer(turn, docs)

render_export(export_box, docs)
