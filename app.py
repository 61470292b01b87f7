"""Chat with your documents: a thin Streamlit front end over :mod:`rag`.

    streamlit run app.py        (settings from RAG_* environment variables, e.g. RAG_INDEX_DIR)

Widgets and session state only; escaping, highlighting, context windows and the export live in
:mod:`rag.ui`. Document text is always escaped and never rendered as HTML.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import streamlit as st

from rag import ui
from rag.answer import Citation
from rag.errors import BadQuestion, IndexMissing, RagError
from rag.index import MANIFEST, DocRecord, build_index, read_manifest, stale_reasons
from rag.pipeline import Assistant
from rag.settings import MODES, Settings

log = logging.getLogger("rag.app")

st.set_page_config(page_title="Ask the documents", page_icon=":material/menu_book:")


@st.cache_resource(show_spinner="Loading the index and the model…", max_entries=4)
def load_assistant(settings: Settings, manifest_stamp: int) -> Assistant:
    """One Assistant per settings and index build, shared by all sessions of this server process.
    ``manifest_stamp`` changes when the index is rebuilt (here or by `rag index`)."""
    assistant = Assistant.load(settings, check_fresh=False)  # freshness is checked (and shown) below
    _ = assistant.embedder.dim  # load the model now, not on the first question
    return assistant


def request_rebuild() -> None:
    st.session_state.rebuild = True


def clear_chat() -> None:
    st.session_state.turns = []


def build(settings: Settings, force: bool) -> None:
    bar = st.progress(0.0, text="Building the index…")
    shown = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        step = ui.build_step(stage, done, total)
        shown[0] = max(shown[0], step.fraction)
        bar.progress(shown[0], text=step.text)

    try:
        result = build_index(settings, force=force, progress=progress)
    except RagError as exc:
        bar.empty()
        st.error(ui.message_markdown(str(exc)))
        st.stop()
    bar.empty()
    load_assistant.clear()
    counts = result.manifest.get("counts", {})
    st.success(f"Index built: {counts.get('documents')} documents, {counts.get('chunks')} chunks.")


def check_index(settings: Settings) -> tuple[dict[str, Any] | None, RagError | None]:
    """(manifest, None) for a readable index, (None, None) when there is none, (None, error) otherwise."""
    try:
        return read_manifest(settings.index_dir), None
    except IndexMissing:
        return None, None
    except RagError as exc:
        return None, exc


def manifest_stamp(settings: Settings) -> int:
    try:
        return (Path(settings.index_dir) / MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0


def render_source(c: Citation, tag: str, key: str, doc_text: str | None) -> None:
    with st.expander(ui.citation_label(c, tag)):
        st.markdown(ui.passage_markdown(c, doc_text))
        if doc_text is not None and st.toggle("Show in context", key=key):
            st.markdown(ui.context_markdown(doc_text, c.start, c.end))


def render_turn(turn: ui.Turn, docs: Mapping[str, DocRecord]) -> None:
    with st.chat_message("user"):
        st.markdown(ui.md_text(turn.question))
    with st.chat_message("assistant"):
        a = turn.answer
        if a is None:
            st.error(ui.message_markdown(turn.error or "no answer"))
            return
        for notice in a.notices:
            st.caption(ui.md_text(notice))
        if a.abstained:
            st.markdown(ui.md_text(a.message))
            if a.passages:
                st.caption("Closest passages:")
            for i, p in enumerate(a.passages[:3], 1):
                render_source(p, f"#{i}", f"ctx-{turn.id}-p{i}", _text(docs, p.doc))
        else:
            st.markdown(ui.md_text(a.answer))
            for c in a.citations:
                render_source(c, f"[{c.n}]", f"ctx-{turn.id}-c{c.n}", _text(docs, c.doc))
        st.caption(f"{turn.mode} · k = {turn.k} · {a.timings_ms.get('total', 0):.0f} ms")


def _text(docs: Mapping[str, DocRecord], doc_id: str) -> str | None:
    rec = docs.get(doc_id)
    return rec.text if rec is not None else None


# ---------------------------------------------------------------------------------------------

st.title("Ask the documents")
st.session_state.setdefault("turns", [])
st.session_state.setdefault("next_id", 0)

try:
    settings = Settings.from_env()
except RagError as exc:
    st.error(ui.message_markdown(str(exc)))
    st.stop()

with st.sidebar:
    st.header("Retrieval")
    mode = st.selectbox("Retrieval mode", MODES, index=MODES.index(settings.mode), key="mode")
    k = st.slider("Passages (k)", 1, 10, value=min(max(settings.k, 1), 10), key="k")
    st.header("Index")
    status_box = st.container()
    st.button("Rebuild index", key="rebuild_sidebar", on_click=request_rebuild)
    st.button("Clear chat", on_click=clear_chat)
    export_box = st.container()

# Index: build when missing or asked to, then check it before loading.
forced = st.session_state.pop("rebuild", False)
manifest, problem = check_index(settings)
missing = manifest is None and problem is None
if forced or missing:
    if missing:
        st.info("No index yet: building it from the documents (this happens once).")
    build(settings, force=forced)
    manifest, problem = check_index(settings)

if problem is not None:
    status_box.markdown("**Status:** unusable")
    st.error(ui.message_markdown(str(problem)))
    st.button("Rebuild index", key="rebuild_error", on_click=request_rebuild, type="primary")
    st.stop()

reasons = stale_reasons(manifest, settings)
status_box.markdown("  \n".join(ui.index_status_lines(manifest, reasons)))
if reasons:
    st.warning(ui.message_markdown("The index is out of date: " + "; ".join(reasons[:3]) + ". Answers come from the old index."))
    st.button("Rebuild index", key="rebuild_stale", on_click=request_rebuild)

try:
    assistant = load_assistant(settings, manifest_stamp(settings))
except RagError as exc:
    st.error(ui.message_markdown(str(exc)))
    st.button("Rebuild index", key="rebuild_load", on_click=request_rebuild, type="primary")
    st.stop()

docs = assistant.data.docs
for turn in st.session_state.turns:
    render_turn(turn, docs)

prompt = st.chat_input("Ask a question about the documents")
if prompt is not None:
    if not prompt.strip():
        st.warning("Type a question first.")
    else:
        turn_id = st.session_state.next_id
        st.session_state.next_id += 1
        try:
            with st.spinner("Searching the documents…"):
                answer = assistant.ask(prompt, k=k, mode=mode)
            turn = ui.Turn(turn_id, prompt, answer, mode=mode, k=k)
        except BadQuestion as exc:
            st.warning(ui.message_markdown(str(exc)))
            turn = None
        except RagError as exc:
            turn = ui.Turn(turn_id, prompt, error=str(exc), mode=mode, k=k)
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback to the log
            log.exception("question failed")
            turn = ui.Turn(turn_id, prompt, error=f"Something went wrong ({type(exc).__name__}: {exc})", mode=mode, k=k)
        if turn is not None:
            st.session_state.turns.append(turn)
            render_turn(turn, docs)

if st.session_state.turns:
    export_box.download_button(
        "Export conversation (Markdown)",
        ui.conversation_markdown(st.session_state.turns, {d: r.text for d, r in docs.items()}),
        file_name="conversation.md",
        mime="text/markdown",
    )
