"""The chat app (app.py) headless with Streamlit's AppTest, and its pure helpers (rag.ui).

Unit tests pin exact outputs of escaping, highlighting, context windows and the export. App tests
use the real model and a copy of the real corpus with an index built once per session; they point
the app at temporary folders through RAG_CORPUS_DIR / RAG_INDEX_DIR.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

from rag import ui
from rag.answer import Answer, Citation

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
        text = ui.collapse_ws(raw).strip()
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
    c = _citation(start=start, end=end, text=ui.collapse_ws(doc[start:end]), highlights=((key, key + len("The *key* sentence.")),))
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
def built_index(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the real corpus and its index, built once per session."""
    from rag.index import build_index
    from rag.settings import Settings

    root = tmp_path_factory.mktemp("app")
    corpus, index = root / "corpus", root / "index"
    shutil.copytree(CORPUS, corpus)
    build_index(Settings(corpus_dir=corpus, index_dir=index))
    return corpus, index


@pytest.fixture(autouse=True)
def _fresh_resource_cache():
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


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
    assert "50 European border guards" in context and context.endswith("…")
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


@pytest.mark.slow
def test_app_builds_a_missing_index_then_answers(monkeypatch, tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    letter = next(CORPUS.glob("*.txt")).read_text(encoding="utf-8")
    (corpus / "letter.txt").write_text(letter[:2500], encoding="utf-8")  # page 1 only: a quick build
    at = _app(monkeypatch, corpus, index)
    assert (index / "manifest.json").is_file()
    assert any("Index built" in s.value for s in at.success)
    _ask(at, QUESTION)
    assert "50" in _last_assistant(at).markdown[0].value


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
    at = _app(monkeypatch, corpus, index)
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
