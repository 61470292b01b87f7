"""The chat app (app.py) headless with Streamlit's AppTest, and its pure helpers (rag.ui).

Unit tests pin exact outputs of escaping, highlighting, context windows and the export. App tests
use the real model and the session copy of the real corpus with its index (conftest's
``real_settings`` / ``real_index``, shared with the other integration tests); they point the app at
those folders, or at private copies, through RAG_CORPUS_DIR / RAG_INDEX_DIR.
"""

from __future__ import annotations

import html
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import blank_pdf
from rag import ui
from rag.answer import Answer, Citation
from rag.text import collapse_ws

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CORPUS = REPO / "corpus"
QUESTION = "How many European border guards have been deployed to Finland's border?"
OFF_TOPIC = "What did the document say about the price of coffee in Brazil?"

HOSTILE = [
    ("<script>alert(1)</script>", r"\<script\>alert\(1\)\</script\>"),
    ("<img src=x onerror=alert(1)>", r"\<img src\=x onerror\=alert\(1\)\>"),
    ("[link](javascript:alert(1))", r"\[link\]\(javascript\:alert\(1\)\)"),
    ("![img](http://x/y.png)", r"\!\[img\]\(http\://x/y\.png\)"),
    ("costs $5 and $6", r"costs \$5 and \$6"),
    (":red[x] **b** _i_ `c` ~s~ # h | t", r"\:red\[x\] \*\*b\*\* \_i\_ \`c\` \~s\~ \# h \| t"),
    ("a\\b {c} 1. +-= &amp;", r"a\\b \{c\} 1\. \+\-\= \&amp;"),
    # bare URLs and e-mail addresses: GFM links them after escapes are resolved, so a WORD JOINER breaks them
    ("see https://evil.example or www.evil.example", "see https\u2060\\://evil\\.example or www\u2060\\.evil\\.example"),
    ("mail a@b.example", "mail a@\u2060b\\.example"),
]


# ---------------------------------------------------------------------------------------------
# rag.ui: escaping


@pytest.mark.parametrize("raw,expected", HOSTILE)
def test_escape_markdown_backslash_escapes_every_significant_character(raw, expected):
    assert ui.escape_markdown(raw) == expected


def _render(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def _literal_paragraph(text: str) -> str:
    return "<p>" + html.escape(text, quote=False).replace('"', "&quot;") + "</p>\n"


def _visible(rendered: str) -> str:
    return rendered.replace(ui.WORD_JOINER, "")


@pytest.mark.parametrize("raw", [r for r, _ in HOSTILE])
def test_escaped_hostile_text_renders_as_literal_text(raw):
    pytest.importorskip("markdown_it")
    assert _visible(_render(ui.md_text(raw))) == _literal_paragraph(raw)


def test_escaped_text_of_any_printable_characters_renders_literally():
    pytest.importorskip("markdown_it")
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    alphabet = st.sampled_from(list("ab1 .-*_[]()<>!`~#|$:&=+{}\\/\"'@^%\n\t") + ["é", "€"])

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text(alphabet, min_size=1, max_size=40))
    def check(raw: str) -> None:
        text = collapse_ws(raw)
        if text:
            assert _visible(_render(ui.md_text(raw))) == _literal_paragraph(text)

    check()


def test_message_markdown_keeps_command_spans_as_code_and_escapes_the_rest():
    msg = "no index at /tmp/my_index: build it with `rag index` (or `make index`)"
    assert ui.message_markdown(msg) == r"no index at /tmp/my\_index\: build it with `rag index` \(or `make index`\)"
    assert ui.message_markdown("odd ` tick <b>") == r"odd \` tick \<b\>"


# ---------------------------------------------------------------------------------------------
# rag.ui: highlighting and context


def test_segments_cut_text_at_absolute_spans_and_concatenate_back():
    text = "One. Two. Three."
    segs = ui.segments(text, [(105, 109)], offset=100)
    assert segs == (ui.Segment("One. ", False), ui.Segment("Two.", True), ui.Segment(" Three.", False))
    assert "".join(s.text for s in segs) == text


def test_segments_merge_overlaps_and_clip_to_the_text():
    assert ui.segments("abcdef", [(4, 9), (1, 2), (2, 3), (-5, 0)]) == (
        ui.Segment("a", False),
        ui.Segment("bc", True),
        ui.Segment("d", False),
        ui.Segment("ef", True),
    )
    assert ui.segments("abc", []) == (ui.Segment("abc", False),)
    assert ui.segments("", [(0, 3)]) == ()


def test_highlighted_hostile_text_is_escaped_inside_and_outside_the_marker():
    text = "Hi <b>x</b>\n [a](javascript:b)  end ![i](http://x/y.png)"
    s = text.index("[a]")
    segs = ui.segments(text, [(s - 1, s + len("[a](javascript:b)") + 1)])
    assert ui.segments_markdown(segs) == (
        r"Hi \<b\>x\</b\> :orange-background[\[a\]\(javascript\:b\)] end \!\[i\]\(http\://x/y\.png\)"
    )


def test_passage_markdown_highlights_supporting_sentences_from_document_offsets():
    doc = "Intro.\n\nFirst sentence. The *key* sentence.\nLast one."
    start, end = doc.index("First"), len(doc)
    key = doc.index("The *key*")
    c = _citation(start=start, end=end, text=collapse_ws(doc[start:end], strip=False), highlights=((key, key + len("The *key* sentence.")),))
    assert ui.passage_markdown(c, doc) == r"First sentence\. :orange-background[The \*key\* sentence\.] Last one\."
    assert ui.passage_markdown(c, None) == r"First sentence\. The \*key\* sentence\. Last one\."


def test_context_window_takes_whole_words_around_the_span():
    doc = "alpha beta gamma CITED delta epsilon zeta"
    s = doc.index("CITED")
    assert ui.context_window(doc, s, s + 5, chars=8) == ui.Window(doc.index("beta"), doc.index(" zeta"))
    assert ui.context_markdown(doc, s, s + 5, chars=8) == "… beta gamma :orange-background[CITED] delta epsilon …"
    assert ui.context_markdown(doc, s, s + 5, chars=100) == "alpha beta gamma :orange-background[CITED] delta epsilon zeta"


def test_citation_label_shows_tag_title_page_section_and_score_escaped():
    c = _citation(title="A [t](javascript:x)", page=3, section="Annex › Returns", score=0.8257)
    assert ui.citation_label(c, "[2]") == r"\[2\] A \[t\]\(javascript\:x\) · p. 3 · Annex › Returns · 0.83"


def test_build_step_maps_stages_to_rising_fractions():
    steps = [("load", 0, 1), ("chunk", 1, 1), ("embed passages", 50, 100), ("embed sentences", 333, 333),
             ("lexical index", 1, 1), ("done", 1, 1)]
    fractions = [ui.build_step(*s).fraction for s in steps]
    assert fractions == [0.0, 0.06, 0.18, 0.95, 0.99, 1.0]
    assert ui.build_step("embed passages", 50, 100).text == "Embedding passages (50/100)"
    assert ui.build_step("mystery", 0, 0) == ui.BuildStep(0.0, "Mystery…")


def test_index_status_lines_describe_counts_model_date_and_freshness():
    manifest = {"counts": {"documents": 1, "chunks": 97}, "model": {"id": "m_1"}, "build_seconds": 17.83,
                "created": "2026-11-25T00:10:52+0000"}
    assert ui.index_status_lines(manifest, []) == [
        "**Documents:** 1", "**Chunks:** 97", r"**Model:** m\_1", "**Build time:** 17.8 s",
        r"**Built:** 2026\-11\-25 00\:10", "**Status:** up to date",
    ]
    assert ui.index_status_lines({}, ["file changed"])[-1] == "**Status:** stale"


def test_conversation_markdown_lists_answers_with_their_sources():
    doc = "Head. Frontex sent 50 <guards>. Tail."
    hl = (doc.index("Frontex"), doc.index(" Tail"))
    cit = _citation(n=1, start=0, end=len(doc), text=doc, highlights=(hl,), page=1, section="Letter", score=0.83)
    answered = Answer("How many?", "Frontex sent 50 <guards>. [1]", False, "Frontex sent 50 <guards>. [1]",
                      (cit,), (cit,), 0.8)
    abstained = Answer("Coffee?", "", True, "The documents do not say: Coffee?", (), (_citation(score=0.2),), 0.1)
    turns = [ui.Turn(0, "How many?", answered), ui.Turn(1, "Coffee?", abstained), ui.Turn(2, "Boom", error="no index")]
    assert ui.conversation_markdown(turns, {"d.txt": doc}) == (
        "# Conversation\n\n"
        "## 1. How many?\n\n"
        r"Frontex sent 50 \<guards\>\. \[1\]" "\n\n"
        "**Sources**\n\n"
        r"- \[1\] Title, p. 1, Letter (score 0.83)" "\n"
        r"  > Frontex sent 50 \<guards\>\." "\n\n"
        "## 2. Coffee?\n\n"
        r"The documents do not say\: Coffee?" "\n\n"
        "**Closest passages**\n\n"
        r"- \#1 Title, p. 1, Letter (score 0.20)" "\n"
        "  > Some passage text\n\n"
        "## 3. Boom\n\n"
        "*Error:* no index\n"
    )


def _citation(**changes) -> Citation:
    base = dict(n=0, doc="d.txt", title="Title", page=1, section="Letter", start=0, end=17,
                text="Some passage text", score=0.5, highlights=())
    base.update(changes)
    return Citation(**base)


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
    """Markdown syntax characters left unescaped, apart from our own highlight markers."""
    bare = re.sub(r"\\.", "", md)  # a backslash-escaped character is literal
    opened = bare.count(":orange-background[")
    bare = bare.replace(":orange-background[", "")
    assert bare.count("]") == opened, md
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

    from rag.index import read_manifest
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
    assert read_manifest(index)["counts"]["documents"] == 3

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
# rag.ui.IndexBuilder: builds in a background thread (build_index replaced by a gated recorder)


class _Built:
    manifest = {"counts": {"documents": 3, "chunks": 7}}


@pytest.fixture
def gated_builds(monkeypatch):
    """``rag.index.build_index`` replaced: each call is recorded, reports progress, then waits for
    ``release``; it raises what ``fail`` holds, if anything."""
    import rag.index

    state = {"calls": [], "started": threading.Semaphore(0), "release": threading.Event(), "fail": None}

    def build(settings, force=False, progress=None, refresh=()):
        state["calls"].append((settings, force) + ((tuple(sorted(refresh)),) if refresh else ()))
        progress("embed passages", 1, 2)
        state["started"].release()
        assert state["release"].wait(30)
        if state["fail"] is not None:
            raise state["fail"]
        return _Built()

    monkeypatch.setattr(rag.index, "build_index", build)
    return state


def test_index_builder_runs_one_build_and_one_more_for_all_requests_made_meanwhile(gated_builds):
    done: list[int] = []
    builder = ui.IndexBuilder(on_done=lambda: done.append(1))
    assert builder.status() == ui.BuildStatus(False, ui.BuildStep(0.0, ""), 0)
    builder.request("first")
    assert gated_builds["started"].acquire(timeout=10)
    status = builder.status()
    assert status.running and status.step == ui.build_step("embed passages", 1, 2) and status.finished == 0
    builder.request("second")
    builder.request("third", force=True)
    builder.request("fourth")  # force is kept: one of the requests asked for it
    gated_builds["release"].set()
    assert builder.wait(30)
    assert gated_builds["calls"] == [("first", False), ("fourth", True)]
    assert builder.status() == ui.BuildStatus(False, ui.build_step("embed passages", 1, 2), 2,
                                              "Index built: 3 documents, 7 chunks.", False)
    assert done == [1, 1]
    assert not [t for t in threading.enumerate() if t.name == ui.BUILD_THREAD]


def test_index_builder_reports_a_failed_build_and_builds_again_when_asked(gated_builds):
    from rag.errors import CorpusEmpty

    builder = ui.IndexBuilder()
    gated_builds["fail"] = CorpusEmpty("no readable documents in corpus")
    gated_builds["release"].set()
    builder.request("s")
    assert builder.wait(30)
    status = builder.status()
    assert (status.running, status.finished, status.message, status.failed) == (
        False, 1, "no readable documents in corpus", True)
    gated_builds["fail"] = RuntimeError("disk on fire")
    builder.request("s")
    assert builder.wait(30)
    assert builder.status().message == "the index build failed (RuntimeError: disk on fire)"
    gated_builds["fail"] = None
    builder.request("s")
    assert builder.wait(30)
    assert (builder.status().finished, builder.status().failed) == (3, False)


# ---------------------------------------------------------------------------------------------
# rag.ui: the evaluation view's helpers

EVAL_ROWS = {
    "hybrid": {"questions": 3, "recall@1": 0.5, "recall@5": 1.0, "mrr@10": 0.75, "answer_accuracy": 0.5,
               "abstention_recall": 0.0, "p50_ms": 12.345, "unknown_metric": 7},
    "lexical": {"questions": 3, "recall@1": 1 / 3, "recall@5": 1.0, "mrr@10": 0.6666, "answer_accuracy": None,
                "abstention_recall": None, "p50_ms": 3.0},
}


def test_metrics_rows_keep_known_metrics_in_order_rounded():
    assert ui.metrics_rows(EVAL_ROWS) == [
        {"Row": "hybrid", "Recall@1": 0.5, "Recall@5": 1.0, "MRR@10": 0.75, "Answer accuracy": 0.5,
         "Abstention recall": 0.0, "p50 ms": 12.3},
        {"Row": "lexical", "Recall@1": 0.333, "Recall@5": 1.0, "MRR@10": 0.667, "Answer accuracy": None,
         "Abstention recall": None, "p50 ms": 3.0},
    ]
    assert ui.metrics_rows({}) == []


def test_eval_step_spreads_progress_over_the_rows_in_order():
    stages = ["hybrid", "dense", "langchain-stock"]
    assert ui.eval_step("hybrid", 0, 10, stages) == ui.BuildStep(0.0, "hybrid (1/3): question 0 of 10")
    assert ui.eval_step("dense", 5, 10, stages) == ui.BuildStep(0.5, "dense (2/3): question 5 of 10")
    assert ui.eval_step("langchain-stock", 10, 10, stages).fraction == 1.0
    assert ui.eval_step("other", 3, 0, []) == ui.BuildStep(0.0, "other (1/1): question 3 of 0")


def _q(**changes) -> dict:
    base = {"id": "q1", "question": "How many *guards*?", "kind": "numeric", "gold": "50", "aliases": ["fifty"],
            "answer": "Frontex sent 50 guards. [1]", "abstained": False, "rank": 1, "passed": True,
            "citations": [{"n": 1, "page": 1, "section": "Letter", "start": 0, "end": 10, "text": "Frontex <b>"}]}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({}, ""),
        ({"passed": False, "kind": "unanswerable", "gold": ""},
         "the documents do not answer it, but the assistant answered instead of abstaining"),
        ({"passed": False, "abstained": True, "answer": ""}, "the assistant abstained, although the gold evidence is at rank 1"),
        ({"passed": False, "rank": None}, "the gold evidence is not in the top 10, so the answer came from other passages"),
        ({"passed": False, "rank": 7}, "the gold evidence is at rank 7, below the 5 passages the answer is taken from"),
        ({"passed": False, "rank": 2}, "the gold evidence is at rank 2, but the answer does not contain the gold answer"),
        ({"passed": False, "answer": None, "rank": 8}, "the gold evidence is at rank 8 (this row only retrieves)"),
    ],
)
def test_failure_reason_says_why_a_question_failed(changes, reason):
    assert ui.failure_reason(_q(**changes)) == reason


def test_question_rows_put_failures_first_and_can_hide_passes():
    qs = [_q(id="q2"), _q(id="q3", passed=False, abstained=True, answer=""), _q(id="q1")]
    assert [r["Id"] for r in ui.question_rows(qs)] == ["q3", "q1", "q2"]
    assert ui.question_rows(qs, only_failed=True) == [
        {"Id": "q3", "Result": "FAIL", "Kind": "numeric", "Rank": 1, "Question": "How many *guards*?",
         "Gold answer": "50", "Our answer": "(abstained)"}
    ]


def test_question_markdown_and_labels_escape_everything_from_the_report():
    assert ui.question_markdown(_q()) == (
        r"**Question:** How many \*guards\*?" "  \n"
        "**Kind:** numeric  \n"
        "**Gold answer:** 50 (also: fifty)  \n"
        r"**Our answer:** Frontex sent 50 guards\. \[1\]" "  \n"
        "**Rank of the gold evidence:** 1"
    )
    unanswerable = ui.question_markdown(_q(kind="unanswerable", gold="", aliases=[], abstained=True, rank=None))
    assert unanswerable.splitlines()[2:] == [
        r"**Gold answer:** \(none\: the documents do not answer it\)  ",
        "**Our answer:** *(abstained)*  ",
        "**Rank of the gold evidence:** not in the top 10",
    ]
    assert ui.question_label(_q()) == "✓ q1 · How many *guards*?"
    assert ui.question_label(_q(passed=False, question="x" * 200), chars=10) == "✗ q1 · xxxxxxxxx…"
    assert ui.eval_citation_label(_q()["citations"][0]) == r"\[1\] · p. 1 · Letter"
    assert ui.eval_citation_label({"n": 2, "doc": "a_b.txt", "section": "[x](y)"}) == r"\[2\] a\_b\.txt · \[x\]\(y\)"


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
    by_id = {q["id"]: q for q in saved["questions"]}
    failed = sum(not q["passed"] for q in by_id.values())
    assert at.subheader[0].value == f"Questions: {failed} of 3 failed (hybrid)"
    for qid in EVAL_IDS:
        at.selectbox(key="eval_question").set_value(qid).run()
        assert not at.exception
        q = by_id[qid]
        detail = at.markdown[-1].value if not q["citations"] else next(
            m.value for m in at.markdown if m.value.startswith("**Question:**"))
        assert detail == ui.question_markdown(q)
        if q["passed"]:
            assert [s.value for s in at.success] == ["Pass"]
        else:
            assert [e.value for e in at.error] == [ui.md_text("Fail: " + ui.failure_reason(q))]
        assert [e.label for e in at.expander] == [ui.eval_citation_label(c) for c in q["citations"]]
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
