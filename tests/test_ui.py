"""rag.ui, the app's pure helpers: escaping, highlighting, context windows, sidebar lines, the
conversation export, the background IndexBuilder and the evaluation view's tables. Exact outputs; no
Streamlit, no model (test_app.py drives the app itself)."""

from __future__ import annotations

import html
import threading

import pytest

from conftest import small_manifest
from rag import ui
from rag.answer import Answer, Citation
from rag.evaluate import QuestionRow
from rag.text import collapse_ws


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


def _render(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def _literal_paragraph(text: str) -> str:
    return "<p>" + html.escape(text, quote=False).replace('"', "&quot;") + "</p>\n"


def _visible(rendered: str) -> str:
    return rendered.replace(ui.WORD_JOINER, "")


@pytest.mark.parametrize("raw,expected", HOSTILE)
def test_escape_markdown_backslash_escapes_every_significant_character(raw, expected):
    assert ui.escape_markdown(raw) == expected


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
    manifest = small_manifest(documents=1, chunks=97, model_id="m_1", build_seconds=17.83, created="2026-11-25T00:10:52+0000")
    assert ui.index_status_lines(manifest, []) == [
        "**Documents:** 1", "**Chunks:** 97", r"**Model:** m\_1", "**Build time:** 17.8 s",
        r"**Built:** 2026\-11\-25 00\:10", "**Status:** up to date",
    ]
    assert ui.index_status_lines(small_manifest(), ["file changed"])[-1:] == ["**Status:** stale"]
    assert ui.index_status_lines(small_manifest(), [])[3:5] == ["**Build time:** ?", "**Built:** unknown"]


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


class _Built:
    manifest = small_manifest(documents=3, chunks=7)
    changes = None


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


def _q(**changes) -> QuestionRow:
    base = dict(id="q1", question="How many *guards*?", kind="numeric", section="Letter", page=1, gold="50",
                aliases=("fifty",), answer="Frontex sent 50 guards. [1]", abstained=False, rank=1, passed=True,
                citations=({"n": 1, "page": 1, "section": "Letter", "start": 0, "end": 10, "text": "Frontex <b>"},))
    return QuestionRow(**{**base, **changes})


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
    unanswerable = ui.question_markdown(_q(kind="unanswerable", gold="", aliases=(), abstained=True, rank=None))
    assert unanswerable.splitlines()[2:] == [
        r"**Gold answer:** \(none\: the documents do not answer it\)  ",
        "**Our answer:** *(abstained)*  ",
        "**Rank of the gold evidence:** not in the top 10",
    ]
    assert ui.question_label(_q()) == "✓ q1 · How many *guards*?"
    assert ui.question_label(_q(passed=False, question="x" * 200), chars=10) == "✗ q1 · xxxxxxxxx…"
    assert ui.eval_citation_label(_q().citations[0]) == r"\[1\] · p. 1 · Letter"
    assert ui.eval_citation_label({"n": 2, "doc": "a_b.txt", "section": "[x](y)"}) == r"\[2\] a\_b\.txt · \[x\]\(y\)"
