"""The chat app (app.py) headless with Streamlit's AppTest (its pure helpers, rag.ui, are tested in
test_ui.py). App tests use the real model and the session copy of the real corpus with its index (conftest's
``real_settings`` / ``real_index``, shared with the other integration tests); they point the app at
those folders, or at private copies, through RAG_CORPUS_DIR / RAG_INDEX_DIR.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import blank_pdf
from rag import ui
from rag.evaluate import QuestionRow

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CORPUS = REPO / "corpus"
QUESTION = "How many European border guards have been deployed to Finland's border?"
OFF_TOPIC = "What did the document say about the price of coffee in Brazil?"


# ---------------------------------------------------------------------------------------------
# The app, headless


@pytest.fixture(scope="session")
def built_index(real_settings, real_index) -> tuple[Path, Path]:
    """The session copy of the real corpus and its index (conftest's ``real_index``, built once for
    the whole test session). Tests copy it before they change anything."""
    return Path(real_settings.corpus_dir), Path(real_settings.index_dir)


@pytest.fixture(autouse=True)
def _fresh_resource_cache():
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def _builds_finish():
    """No background index build outlives its test (it would keep a CPU busy and race the next one)."""
    yield
    for thread in threading.enumerate():
        if thread.name == ui.BUILD_THREAD:
            thread.join(timeout=300)


BUILDING = (ui.BUILDING_FIRST, ui.BUILDING_BROKEN, ui.BUILDING_AGAIN)


def _plain(markdown: str) -> str:
    """A message as the page shows it: the Markdown escapes (``\\:``, ``\\.``) undone."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _building(at) -> bool:
    return any(i.value in BUILDING for i in at.info)


def _until_built(at, timeout: float = 300.0):
    """Rerun the page until no background build is shown (in a browser the page's progress
    fragment reruns it by itself when the build ends)."""
    deadline = time.monotonic() + timeout
    while _building(at):
        assert time.monotonic() < deadline, "the background index build did not finish"
        time.sleep(0.25)
        at.run()
        assert not at.exception, at.exception
    return at


def _app(monkeypatch, corpus: Path, index: Path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    monkeypatch.setenv("RAG_INDEX_DIR", str(index))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def _last_assistant(at):
    msgs = [m for m in at.chat_message if m.name == "assistant"]
    assert msgs, "no assistant message"
    return msgs[-1]


@pytest.mark.slow
def test_app_answers_with_a_cited_page_and_the_passage_in_context(monkeypatch, built_index):
    at = _app(monkeypatch, *built_index)
    status = at.sidebar.markdown[0].value
    assert "**Documents:** 1" in status and "**Status:** up to date" in status
    _ask(at, QUESTION)
    reply = _last_assistant(at)
    assert "50" in reply.markdown[0].value
    labels = [e.label for e in reply.expander]
    assert labels and any("p. 1" in label for label in labels)
    assert ":orange-background[" in reply.expander[0].markdown[0].value  # supporting sentence highlighted
    assert len(reply.expander[0].markdown) == 1
    reply.expander[0].toggle[0].set_value(True)
    at.run()
    assert not at.exception
    context = _last_assistant(at).expander[0].markdown[1].value
    assert "**50** European border guards" in context and context.endswith("…")  # the short answer bold in context
    assert at.download_button, "export button missing"


@pytest.mark.slow
def test_app_warns_on_empty_input_without_crashing(monkeypatch, built_index):
    at = _app(monkeypatch, *built_index)
    _ask(at, "")
    assert [w.value for w in at.warning] == ["Type a question first."]
    _ask(at, "   \n ")
    assert [w.value for w in at.warning] == ["Type a question first."]
    assert not at.chat_message


@pytest.mark.slow
def test_app_abstains_plainly_and_lists_the_closest_passages(monkeypatch, built_index):
    at = _app(monkeypatch, *built_index)
    _ask(at, OFF_TOPIC)
    reply = _last_assistant(at)
    assert reply.markdown[0].value.startswith("The documents do not say")
    assert 1 <= len(reply.expander) <= 3
    assert reply.expander[0].label.startswith(r"\#1 ")
    assert "Closest passages:" in [c.value for c in reply.caption]
    assert not any(e.label.startswith(r"\[") for e in reply.expander)  # no citations, only passages


@pytest.mark.slow
def test_app_builds_a_missing_index_then_answers(monkeypatch, tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    letter = next(CORPUS.glob("*.txt")).read_text(encoding="utf-8")
    (corpus / "letter.txt").write_text(letter[:2500], encoding="utf-8")  # page 1 only: a quick build
    at = _app(monkeypatch, corpus, index)
    assert [i.value for i in at.info] == [ui.BUILDING_FIRST]
    assert at.chat_input[0].disabled  # nothing to answer from until the first build is done
    _until_built(at)
    assert (index / "manifest.json").is_file()
    assert [re.sub(r"\d+ chunks", "N chunks", _plain(s.value)) for s in at.success] == ["Index built: 1 documents, N chunks."]
    assert not at.chat_input[0].disabled
    _ask(at, QUESTION)
    assert "50" in _last_assistant(at).markdown[0].value
    assert not at.success  # the build is reported once


@pytest.mark.slow
def test_app_shows_hostile_document_text_only_escaped(monkeypatch, tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    (corpus / "evil.md").write_text(
        "# Evil\n\nThe harbour fee is twelve euros per day. "
        "<script>alert(1)</script> <img src=x onerror=alert(1)> [link](javascript:alert(1)) "
        "![img](http://x/y.png) costs $5.\n",
        encoding="utf-8",
    )
    at = _until_built(_app(monkeypatch, corpus, index))
    _ask(at, "How much is the harbour fee per day?")
    reply = _last_assistant(at)
    for toggle in reply.toggle:  # show every passage in context too
        toggle.set_value(True)
    at.run()
    assert not at.exception
    texts = [m.value for msg in at.chat_message for m in msg.markdown] + [e.label for e in at.expander]
    assert "alert" in "\n".join(texts)  # the hostile text is shown...
    assert [_live_syntax(t) for t in texts] == [""] * len(texts)  # ...but never as live syntax


def _live_syntax(md: str) -> str:
    """Markdown syntax characters left unescaped, apart from our own highlight and bold markers (the
    short answer is bold): a document's own ``*`` is escaped, so every ``**`` left is ours."""
    bare = re.sub(r"\\.", "", md)  # a backslash-escaped character is literal
    opened = bare.count(":orange-background[")
    bare = bare.replace(":orange-background[", "")
    assert bare.count("]") == opened, md
    assert bare.count("**") % 2 == 0, md
    bare = bare.replace("**", "")
    return re.sub(r"[^<>\[\]()$!`*_&]", "", bare.replace("]", ""))


@pytest.mark.slow
def test_app_warns_about_a_stale_index_and_offers_a_rebuild(monkeypatch, built_index, tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(built_index[0], corpus)
    shutil.copytree(built_index[1], index)
    (corpus / "new.txt").write_text("A new document about harbour fees.", encoding="utf-8")
    at = _app(monkeypatch, corpus, index)
    assert any("out of date" in w.value and r"new\.txt" in w.value for w in at.warning)
    assert "**Status:** stale" in at.sidebar.markdown[0].value
    assert at.button(key="rebuild_stale")
    _ask(at, QUESTION)  # still answers from the old index
    assert "50" in _last_assistant(at).markdown[0].value


@pytest.mark.slow
def test_app_reports_a_corrupt_index_in_one_line_with_a_rebuild_button(monkeypatch, built_index, tmp_path):
    corpus, index = built_index[0], tmp_path / "index"
    shutil.copytree(built_index[1], index)
    (index / "chunks.faiss").write_bytes(b"truncated")
    at = _app(monkeypatch, corpus, index)
    assert len(at.error) == 1 and r"chunks\.faiss is 9 bytes" in at.error[0].value
    assert at.button(key="rebuild_load")
    assert not at.chat_message


# ---------------------------------------------------------------------------------------------
# Uploads (checked in detail in test_upload.py; here: the app's messages and the re-index)

MALTA = (
    "# Ferry inspections\n\n"
    "Ferry inspections in Malta found 14 vessels without enough life jackets in 2023. "
    "The port authority of Valletta carried out the inspections.\n"
)


def _upload(at, files, replace: bool = False) -> tuple[list[str], list[str]]:
    """Submit ``files``, then wait for the re-index it starts: (success messages, error messages)
    shown meanwhile, in order (the build may already be done in the run that saved the files)."""
    at.file_uploader(key="uploads").set_value(files)
    at.checkbox(key="replace").set_value(replace)
    [submit] = [b for b in at.button if b.label == "Add to the corpus and re-index"]
    submit.click()
    at.run()
    assert not at.exception, at.exception
    successes, errors = [_plain(s.value) for s in at.success], [e.value for e in at.error]
    if _building(at):
        _until_built(at)
        successes += [_plain(s.value) for s in at.success]
        errors += [e.value for e in at.error]
    return successes, errors


@pytest.mark.slow
def test_app_uploads_documents_reindexes_and_answers_from_them(monkeypatch, tmp_path):
    monkeypatch.setattr("rag.formats.tesseract_path", lambda: None)  # the scan below: "OCR is not installed"
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    letter = next(CORPUS.glob("*.txt")).read_text(encoding="utf-8")
    (corpus / "letter.txt").write_text(letter[:2500], encoding="utf-8")
    at = _until_built(_app(monkeypatch, corpus, index))
    assert "**Documents:** 1" in at.sidebar.markdown[0].value

    successes, errors = _upload(at, [
        ("../Malta ferries.md", MALTA.encode(), "text/markdown"),
        ("scan.pdf", blank_pdf(), "application/pdf"),
        ("x.exe", b"MZ\x90\x00", "application/octet-stream"),
    ])
    assert successes[:1] == [
        _plain(ui.md_text(f"Added Malta_ferries.md ({len(MALTA)} characters of text), uploaded as '../Malta ferries.md'")),
    ]
    assert [s.startswith("Index built: 2 documents, ") for s in successes[1:]] == [True]
    assert errors == [
        ui.message_markdown("scan.pdf: no text layer (a scanned PDF?). OCR is not installed: install Tesseract (Debian/Ubuntu: apt-get install tesseract-ocr) and index again"),
        ui.message_markdown("'x.exe': unsupported file type '.exe'; expected one of .txt, .md, .pdf, .docx, .html, .htm"),
    ]
    assert sorted(p.name for p in corpus.iterdir()) == ["Malta_ferries.md", "letter.txt"]
    assert "**Documents:** 2" in at.sidebar.markdown[0].value and "**Status:** up to date" in at.sidebar.markdown[0].value

    _ask(at, "How many vessels did the ferry inspections in Malta find without enough life jackets?")
    reply = _last_assistant(at)
    assert reply.markdown[0].value == "**Answer: 14**" and "14 vessels" in reply.markdown[1].value  # short answer, then the sentence
    assert reply.expander[0].label.startswith(r"\[1\] Ferry inspections")
    assert not at.success and not at.error  # the submitted files are not added again on the next run


@pytest.mark.slow
def test_app_replaces_an_uploaded_file_only_when_asked(monkeypatch, tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    (corpus / "notes.md").write_text(MALTA, encoding="utf-8")
    at = _until_built(_app(monkeypatch, corpus, index))
    newer = MALTA.replace("14 vessels", "15 vessels").encode()

    successes, errors = _upload(at, ("notes.md", newer, "text/markdown"))
    assert errors == [ui.message_markdown("notes.md is already in the corpus: allow replacing it, or rename the file")]
    assert not successes and (corpus / "notes.md").read_text(encoding="utf-8") == MALTA

    successes, errors = _upload(at, ("notes.md", newer, "text/markdown"), replace=True)
    assert not errors
    assert successes[:1] == [
        _plain(ui.md_text(f"Added notes.md ({len(MALTA)} characters of text), replacing the earlier file of that name")),
    ]
    assert [s.startswith("Index built: 1 documents, ") for s in successes[1:]] == [True]
    assert (corpus / "notes.md").read_bytes() == newer


@pytest.mark.slow
def test_a_question_during_the_re_index_neither_cancels_it_nor_waits_for_it(monkeypatch, tmp_path):
    """Every interaction reruns the script; the re-index after an upload runs in the server's
    background builder, so a question asked meanwhile is answered from the previous index (with a
    notice) and the build still completes; the next run shows the new index."""
    import rag.index

    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    letter = next(CORPUS.glob("*.txt")).read_text(encoding="utf-8")
    (corpus / "letter.txt").write_text(letter[:2500], encoding="utf-8")
    at = _until_built(_app(monkeypatch, corpus, index))
    real_build, started, gate = rag.index.build_index, threading.Event(), threading.Event()

    def gated_build(*args, **kwargs):  # the real build, held until the question has been asked
        started.set()
        assert gate.wait(120)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(rag.index, "build_index", gated_build)
    at.file_uploader(key="uploads").set_value(("malta.md", MALTA.encode(), "text/markdown"))
    [submit] = [b for b in at.button if b.label == "Add to the corpus and re-index"]
    submit.click()
    at.run()
    assert started.wait(30)
    assert [i.value for i in at.info] == [ui.BUILDING_AGAIN]
    assert not at.warning  # the corpus is newer than the index, but that is being fixed: no stale warning
    assert not at.chat_input[0].disabled

    _ask(at, QUESTION)  # a rerun while the build runs
    reply = _last_assistant(at)
    assert "50" in reply.markdown[0].value
    assert ui.md_text(ui.ANSWERED_FROM_PREVIOUS) in [c.value for c in reply.caption]
    assert _building(at) and "**Documents:** 1" in at.sidebar.markdown[0].value
    at.button(key="rebuild_sidebar").click().run()  # another click: queued behind the running build
    assert not at.exception and _building(at)

    gate.set()
    _until_built(at)
    assert [_plain(s.value).startswith("Index built: 2 documents, ") for s in at.success] == [True]
    assert "**Documents:** 2" in at.sidebar.markdown[0].value and "**Status:** up to date" in at.sidebar.markdown[0].value
    assert not at.warning
    _ask(at, "How many vessels did the ferry inspections in Malta find without enough life jackets?")
    reply = _last_assistant(at)
    assert reply.markdown[0].value == "**Answer: 14**" and "14 vessels" in reply.markdown[1].value  # short answer, then the sentence
    assert ui.md_text(ui.ANSWERED_FROM_PREVIOUS) not in [c.value for c in reply.caption]


def test_an_upload_cut_short_by_the_next_interaction_is_saved_and_re_indexed(monkeypatch, tmp_path):
    """Every element call can end the script run (a question asked meanwhile starts a new one). The
    run that saves uploads is ended here at its first message: every file must be saved and the
    re-index requested by then. Submitting the same files again (what a cut-short run's rerun does)
    saves nothing twice and repeats the messages. Embedded by a hash: no model is loaded."""
    import rag.embed
    import streamlit as st
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from rag.index import load_manifest
    from conftest import HashEmbedder

    monkeypatch.setattr(rag.embed, "get_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.setenv("RAG_VERIFIER", "off")
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    (corpus / "letter.txt").write_text("The ministers met in Vienna on Monday.\n", encoding="utf-8")
    at = _until_built(_app(monkeypatch, corpus, index))
    assert "**Documents:** 1" in at.sidebar.markdown[0].value

    real_success, messages = st.success, []

    def success(body, *args, **kwargs):  # the first message of the run ends it
        messages.append(body)
        if len(messages) == 1:
            raise StopException()
        return real_success(body, *args, **kwargs)

    monkeypatch.setattr(st, "success", success)
    notes = "# Notes\n\nThe port of Valletta inspected 14 ferries.\n"
    uploader = at.file_uploader(key="uploads").set_value([("malta.md", MALTA.encode(), "text/markdown"),
                                                          ("notes.md", notes.encode(), "text/markdown")])
    sent = list(uploader._files)  # (file id, name, bytes, type): AppTest has no public way to send the same ids again
    [submit] = [b for b in at.button if b.label == "Add to the corpus and re-index"]
    submit.click()
    at.run()
    assert not at.exception, at.exception
    added = [ui.md_text(f"Added malta.md ({len(MALTA)} characters of text)"),
             ui.md_text(f"Added notes.md ({len(notes)} characters of text)")]
    assert messages == added[:1]  # the run ended at the first message ...
    assert sorted(p.name for p in corpus.iterdir()) == ["letter.txt", "malta.md", "notes.md"]  # ... after both saves
    for thread in threading.enumerate():  # ... and after the re-index was requested
        if thread.name == ui.BUILD_THREAD:
            thread.join(timeout=120)
    assert load_manifest(index).counts.documents == 3

    (corpus / "malta.md").write_text("changed on disk", encoding="utf-8")
    at.file_uploader(key="uploads")._files = sent
    [submit] = [b for b in at.button if b.label == "Add to the corpus and re-index"]
    submit.click()  # the same submission again (the same files, as a rerun of a cut-short run may see them)
    at.run()
    assert not at.exception and not at.error, at.error
    assert messages[1:3] == added, messages  # each file's message again ...
    assert (corpus / "malta.md").read_text(encoding="utf-8") == "changed on disk"  # ... and nothing saved twice
    _until_built(at)
    assert "**Documents:** 3" in at.sidebar.markdown[0].value


# ---------------------------------------------------------------------------------------------
# The evaluation view, headless (3 questions, 2 rows, no LangChain: a few seconds)

EVAL_IDS = ("q001", "q003", "q011")  # two answerable, one unanswerable


def _eval_dir(tmp_path: Path) -> Path:
    lines = [ln for ln in (REPO / "eval" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
             if any(f'"id": "{i}"' in ln for i in EVAL_IDS)]
    assert len(lines) == 3
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "tiny.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "broken.jsonl").write_text('{"id": "x", "question": \n', encoding="utf-8")
    return folder


@pytest.mark.slow
def test_app_eval_view_runs_the_suite_and_drills_down_into_each_question(monkeypatch, built_index, tmp_path):
    import json

    folder = _eval_dir(tmp_path)
    monkeypatch.setenv("RAG_EVAL_DIR", str(folder))
    at = _app(monkeypatch, *built_index)
    at.radio(key="view").set_value("Evaluation").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Evaluation"] and not at.chat_input
    assert at.selectbox(key="eval_qa").options == ["broken.jsonl", "tiny.jsonl"]
    at.selectbox(key="eval_qa").set_value("tiny.jsonl")
    at.multiselect(key="eval_rows").set_value(["hybrid", "lexical"])
    at.button(key="eval_run").click().run()
    assert not at.exception
    assert all(e.value.startswith("Fail") for e in at.error)  # only the drill-down's verdict

    metrics = at.dataframe[0].value
    assert list(metrics["Row"]) == ["hybrid", "lexical"]
    assert {"Recall@1", "Recall@5", "MRR@10", "nDCG@10", "Answer accuracy", "Abstention recall"} <= set(metrics.columns)
    saved = json.loads((folder / "reports" / "latest.json").read_text(encoding="utf-8"))
    assert [q["id"] for q in saved["questions"]] == list(EVAL_IDS)
    assert (folder / "reports" / "latest.md").is_file()
    if (folder / "reports" / "latest-recall.png").is_file():  # plots need matplotlib (eval extra)
        assert len(at.get("image")) == 2  # the recall curve and the pass rate by question kind

    questions = at.dataframe[1].value
    assert sorted(questions["Id"]) == list(EVAL_IDS)
    by_id = {q["id"]: QuestionRow.from_json(q) for q in saved["questions"]}
    failed = sum(not q.passed for q in by_id.values())
    assert at.subheader[0].value == f"Questions: {failed} of 3 failed (hybrid)"
    for qid in EVAL_IDS:
        at.selectbox(key="eval_question").set_value(qid).run()
        assert not at.exception
        q = by_id[qid]
        detail = next(m.value for m in at.markdown if m.value.startswith("**Question:**"))
        assert detail == ui.question_markdown(q)
        if q.passed:
            assert [s.value for s in at.success] == ["Pass"]
        else:
            assert [e.value for e in at.error] == [ui.md_text("Fail: " + ui.failure_reason(q))]
        assert [e.label for e in at.expander] == [ui.eval_citation_label(c) for c in q.citations]
    assert "(none" in ui.question_markdown(by_id["q011"])  # the unanswerable one shows no gold answer

    at.toggle(key="eval_only_failed").set_value(True).run()
    assert not at.exception
    if failed:
        assert len(at.dataframe[1].value) == failed
    else:
        assert "Every question passed." in [s.value for s in at.success]


@pytest.mark.slow
def test_app_eval_view_reports_a_malformed_question_set_in_one_line(monkeypatch, built_index, tmp_path):
    monkeypatch.setenv("RAG_EVAL_DIR", str(_eval_dir(tmp_path)))
    at = _app(monkeypatch, *built_index)
    at.radio(key="view").set_value("Evaluation").run()
    at.selectbox(key="eval_qa").set_value("broken.jsonl")
    at.button(key="eval_run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and r"broken\.jsonl\:1\: each line needs a JSON object" in at.error[0].value
    assert not at.dataframe


@pytest.mark.slow
def test_several_sessions_share_one_loaded_index_and_keep_their_own_chats(monkeypatch, built_index):
    """Each AppTest is a separate browser session of the same server process: the index and model
    load once (st.cache_resource) and every session keeps its own conversation."""
    import rag.pipeline

    loads = []
    real_load = rag.pipeline.Assistant.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(1)
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(rag.pipeline.Assistant, "load", classmethod(counting_load))
    first = _ask(_app(monkeypatch, *built_index), QUESTION)
    second = _ask(_app(monkeypatch, *built_index), "What is the capital of Australia?")
    third = _app(monkeypatch, *built_index)
    assert len(loads) == 1
    assert "50" in _last_assistant(first).markdown[0].value
    assert "do not say" in _last_assistant(second).markdown[0].value
    assert [m.name for m in first.chat_message] == ["user", "assistant"]
    assert [m.name for m in second.chat_message] == ["user", "assistant"]
    assert list(third.chat_message) == []  # a new session starts with an empty chat


@pytest.mark.slow
def test_app_shows_a_date_quoted_from_a_heading_bold_inside_its_highlight(monkeypatch, built_index):
    at = _app(monkeypatch, *built_index)
    _ask(at, "When did the Central Mediterranean action plan come out?")
    reply = _last_assistant(at)
    assert "**Answer: DECEMBER 2022**" in reply.markdown[0].value
    assert reply.markdown[1].value == r"CENTRAL MEDITERRANEAN ACTION PLAN DECEMBER 2022 \[1\]"  # escaped Markdown
    quote = reply.expander[0].markdown[0].value
    assert ":orange-background[" in quote and "**DECEMBER 2022**" in quote
    assert "Annex › Action Plans" in reply.expander[0].label
