"""Input edges of the command line (issue 16): hostile batch files, ids and k values, invisible
characters in questions, terminal escape codes in documents and file names.

Most tests run ``main([...])`` in-process against a deterministic fake assistant (no model, no
index); batch-file errors are raised before anything loads, so they need neither. The few tests on
the real model and a real index carry ``@pytest.mark.slow``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import tracemalloc
import unicodedata
from pathlib import Path

import pytest

from conftest import one_error_line, run_cli as run, FINLAND_Q, settings_for, write_corpus
from rag import cli, pipeline
from rag.answer import Answer, Citation
from rag.cli import MAX_BATCH_LINE_BYTES, MAX_K, main, terminal_safe
from rag.errors import BadQuestion
from rag.lexical import tokenize
from rag.pipeline import clean_question




def raw_controls(text: str) -> list[str]:
    """Characters a terminal could act on: C0/C1 controls (newline aside), bidi and other format
    characters, line separators, lone surrogates."""
    return [ch for ch in text if ch != "\n" and (unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")
                                                 or unicodedata.category(ch) == "Cf" and ch not in "\u00ad\u200c\u200d")]


def strict_json(line: str):
    """json.loads that refuses NaN and Infinity (what a strict JSON reader does)."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(line, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------
# A fake assistant: no model, no index; questions are checked by the real clean_question.

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\u202c\u2066x\u2069\u2028fake line\x00\x7f"


def hostile_citation(n: int = 1, supported: bool = True) -> Citation:
    return Citation(n, f"doc{HOSTILE}.txt", f"Title{HOSTILE}\nfake: line", 1, f"Section{HOSTILE}", 0, 40,
                    f"Passage text{HOSTILE} with 50 border guards.", 0.9, ((0, 10),), supported)


class FakeAssistant:
    def __init__(self, settings, abstain: bool = False, tokens: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.abstain = abstain
        self.tokens = tokens
        self.asked: list[tuple[str, object]] = []

    def warm_up(self) -> "FakeAssistant":
        return self

    def ask(self, question, k=None, mode=None, *, on_token=None, history=(), **_) -> Answer:
        q = clean_question(question, self.settings.max_question_chars)  # BadQuestion as the real one
        self.asked.append((q.text, k))
        for t in self.tokens:
            if on_token is not None:
                on_token(t)
        cit = hostile_citation()
        return Answer(
            question=q.text,
            answer="" if self.abstain else f"50 guards{HOSTILE} [1]",
            abstained=self.abstain,
            message=f"The documents do not say{HOSTILE}" if self.abstain else f"50 guards{HOSTILE}\nsecond line [1]",
            citations=() if self.abstain else (cit,),
            passages=(cit,),
            support=0.9,
            timings_ms={"retrieve": 1.0, "answer": 1.0, "total": 2.0},
            notices=(f"note{HOSTILE}",) + q.notices,
            mode="llm" if self.tokens else "extractive",
            unsupported_sentences=(f"unsupported{HOSTILE}",) if self.tokens else (),
            original_question=None,
        )


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Patch Assistant.load to return a FakeAssistant; returns a function making one with options."""
    holder: dict[str, FakeAssistant] = {}
    options: dict = {}

    def load(settings):
        holder["a"] = FakeAssistant(settings, **options)
        return holder["a"]

    monkeypatch.setattr(pipeline.Assistant, "load", staticmethod(load))

    def configure(**kw):
        options.update(kw)
        return holder

    return configure


def args(tmp_path, *extra: str) -> list[str]:
    return ["ask", *extra, "--index", str(tmp_path / "no-index"), "--corpus", str(tmp_path)]


def write_batch(tmp_path: Path, content: str | bytes, name: str = "qs.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


# ---------------------------------------------------------------------------------------------
# Batch files: every malformed line is one `rag: error: FILE:LINE: ...` line, exit 2, before any
# model or index is loaded (the index folder here does not even exist).

DEEP = 100_000
GOOD = '{"id": 1, "question": "How many guards?"}\n'
BAD_LINES = {
    "deep-array": ("[" * DEEP + "]" * DEEP, "nested too deeply to read"),
    "deep-object": ('{"a":' * DEEP + "1" + "}" * DEEP, "nested too deeply to read"),
    "deep-question": ('{"question": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deeply to read"),
    "deep-id": ('{"question": "q", "id": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}", "nested too deeply to read"),
    "5000-digit-id": ('{"id": ' + "9" * 5000 + ', "question": "q"}', "not valid JSON (a number with 5,000 digits is too long)"),
    "5000-digit-negative": ('{"id": -' + "9" * 5000 + ', "question": "q"}', "a number with 5,000 digits is too long"),
    "5000-digit-other-field": ('{"question": "q", "x": ' + "1" * 5000 + "}", "a number with 5,000 digits is too long"),
    "nan-id": ('{"id": NaN, "question": "q"}', "not valid JSON (NaN is not allowed in JSON)"),
    "infinity-id": ('{"id": Infinity, "question": "q"}', "Infinity is not allowed in JSON"),
    "minus-infinity-id": ('{"id": -Infinity, "question": "q"}', "-Infinity is not allowed in JSON"),
    "nan-in-other-field": ('{"question": "q", "score": NaN}', "NaN is not allowed in JSON"),
    "overflowing-float-id": ('{"id": 1e999, "question": "q"}', "the number 1e999 is too large"),
    "object-id": ('{"id": {"a": 1}, "question": "q"}', "'id' must be a string or a number, got an object"),
    "array-id": ('{"id": [1, 2], "question": "q"}', "'id' must be a string or a number, got an array"),
    "boolean-id": ('{"id": true, "question": "q"}', "'id' must be a string or a number, got true"),
    "huge-string-id": (json.dumps({"id": "x" * 5000, "question": "q"}), "'id' is 5,000 characters long; at most 1,000 are allowed"),
    "lone-surrogate-id": ('{"id": "a\\ud800b", "question": "q"}', "'id' holds a lone surrogate"),
    "int-id-beyond-2**53": (json.dumps({"id": 2**53, "question": "q"}), "is beyond ±(2**53 - 1)"),
    "question-number": ('{"question": 42}', "each line needs a 'question' string; this line has a number as its 'question'"),
    "question-null": ('{"question": null}', "this line has null as its 'question'"),
    "question-array": ('{"question": ["a", "b"]}', "this line has an array as its 'question'"),
    "question-object": ('{"question": {"text": "q"}}', "this line has an object as its 'question'"),
    "question-missing": ('{"id": 1, "q": "typo"}', "each line needs a 'question' string; this line has none"),
    "line-is-array": ('["a list"]', "each line needs a 'question' string; this line is an array"),
    "line-is-string": ('"just a string"', "this line is a string"),
    "line-is-number": ("42", "this line is a number"),
    "not-json": ("{not json}", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    "two-objects": ('{"question": "a"} {"question": "b"}', "not valid JSON (Extra data at column 19)"),
}


@pytest.mark.parametrize("line, message", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_a_bad_batch_line_is_one_error_line_naming_file_and_line(tmp_path, capsys, line, message):
    batch = write_batch(tmp_path, GOOD + "\n" + line + "\n" + GOOD)  # the bad line is line 3
    code, out, err = run(args(tmp_path, "--batch", str(batch), "--json"), capsys)
    assert code == 2 and out == ""
    error = one_error_line(err)
    assert error.startswith(f"rag: error: {batch}:3: "), error
    assert message in error
    assert len(error) < 300


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"question": "caf\xe9?"}\n', "qs.jsonl:1: not UTF-8 (byte 0xe9 at position 18 of the line): save the file as UTF-8"),
        (GOOD.encode() + b'{"question": "\xff\xfe"}\n', "qs.jsonl:2: not UTF-8 (byte 0xff at position 15"),
        ('{"question": "q"}\n'.encode("utf-16"), "qs.jsonl:1: not UTF-8 (byte 0xff at position 1"),
        (b'{"question": "\xed\xa0\x80"}\n', "qs.jsonl:1: not UTF-8 (byte 0xed"),  # an encoded surrogate
    ],
    ids=["latin-1", "second-line", "utf-16", "encoded-surrogate"],
)
def test_a_batch_file_that_is_not_utf8_names_the_line_and_byte(tmp_path, capsys, content, message):
    batch = write_batch(tmp_path, content)
    code, out, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_a_100mb_line_is_refused_without_reading_it_into_memory(tmp_path, capsys):
    batch = tmp_path / "huge.jsonl"
    with open(batch, "wb") as f:
        f.write(b'{"question": "' + b"x" * (2 * MAX_BATCH_LINE_BYTES))
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB on one line without writing it all
    assert batch.stat().st_size == 100 * 1024 * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        code = main(args(tmp_path, "--batch", str(batch), "--json"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    assert time.perf_counter() - t0 < 10
    assert peak < 10 * MAX_BATCH_LINE_BYTES, f"peak {peak:,} bytes"
    assert f"huge.jsonl:1: the line is longer than {MAX_BATCH_LINE_BYTES:,} bytes" in one_error_line(capsys.readouterr().err)


def test_a_line_of_exactly_the_limit_is_read(tmp_path, capsys, fake):
    holder = fake()
    head = b'{"question": "How many guards? '
    line = head + b"x" * (MAX_BATCH_LINE_BYTES - len(head) - 2) + b'"}'
    assert len(line) == MAX_BATCH_LINE_BYTES
    batch = write_batch(tmp_path, line + b"\n")
    code, out, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 1
    assert holder["a"].asked[0][0].startswith("How many guards?")
    batch = write_batch(tmp_path, line[:-2] + b'x"}\n')  # one byte more
    code, _, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 2 and "qs.jsonl:1: the line is longer than" in one_error_line(err)


@pytest.mark.parametrize("content", [b"", b"\n\n   \n\t\n", b"\r\n"], ids=["empty", "blank-lines", "crlf-only"])
def test_an_empty_batch_file_prints_nothing_says_so_and_exits_0_without_loading(tmp_path, capsys, content):
    # the index folder does not exist: loading anything would be an error
    batch = write_batch(tmp_path, content)
    code, out, err = run(args(tmp_path, "--batch", str(batch), "--json"), capsys)
    assert code == 0
    assert out == ""
    assert err == f"rag: {batch} has no questions\n"


@pytest.mark.parametrize("name", ["missing.jsonl", "a-folder"])
def test_an_unreadable_batch_file_is_one_error_line(tmp_path, capsys, name):
    (tmp_path / "a-folder").mkdir()
    code, out, err = run(args(tmp_path, "--batch", str(tmp_path / name)), capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith(f"rag: error: cannot read batch file {tmp_path / name}: ")
    assert line.endswith("No such file or directory" if name == "missing.jsonl" else "Is a directory")


def test_a_batch_file_with_a_byte_order_mark_and_crlf_lines_is_read(tmp_path, capsys, fake):
    holder = fake()
    batch = write_batch(tmp_path, b'\xef\xbb\xbf{"id": "a", "question": "first?"}\r\n{"id": "b", "question": "second?"}\r\n')
    code, out, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 0, err
    assert [strict_json(line)["id"] for line in out.splitlines()] == ["a", "b"]
    assert [q for q, _ in holder["a"].asked] == ["first?", "second?"]


def test_a_question_with_a_raw_line_separator_stays_one_batch_line(tmp_path, capsys, fake):
    # JSON allows U+2028 unescaped inside a string; str.splitlines() would have cut the line there
    holder = fake()
    batch = write_batch(tmp_path, '{"id": 1, "question": "How many\u2028guards?"}\n')
    code, out, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 0, err
    assert holder["a"].asked == [("How many guards?", None)]


# ---------------------------------------------------------------------------------------------
# Ids: whatever is echoed keeps the output strict JSON.

GOOD_IDS = ["finland", "ünïcödé ✓", "tab\tand\x1b[2J escape", "c1\x9b and bidi \u202e", 0, -7, 2**53 - 1, -(2**53 - 1), 1.5, "x" * 1000]


def test_accepted_ids_are_echoed_exactly_as_strict_json(tmp_path, capsys, fake):
    fake()
    lines = [json.dumps({"id": i, "question": f"question {n}?"}) for n, i in enumerate(GOOD_IDS)]
    lines.insert(2, json.dumps({"question": "no id?"}))
    lines.insert(3, json.dumps({"id": None, "question": "null id?"}))
    batch = write_batch(tmp_path, "\n".join(lines) + "\n")
    code, out, err = run(args(tmp_path, "--batch", str(batch), "--json"), capsys)
    assert code == 0, err
    rows = [strict_json(line) for line in out.splitlines()]
    assert [r.get("id") for r in rows[:2] + rows[4:]] == GOOD_IDS
    assert "id" not in rows[2] and "id" not in rows[3]  # no id (or null) is no "id" key, as documented
    assert raw_controls(out) == []


def test_error_rows_in_a_batch_are_strict_json_and_omit_a_missing_id(tmp_path, capsys, fake):
    fake()
    batch = write_batch(tmp_path, '{"question": "  "}\n{"id": "c1\\u009b", "question": "\\u200b\\u00ad"}\n{"question": "ok?"}\n')
    code, out, err = run(args(tmp_path, "--batch", str(batch)), capsys)
    assert code == 0, err
    rows = [strict_json(line) for line in out.splitlines()]
    assert rows[0] == {"question": "  ", "error": "the question is empty: type a question about the documents"}
    assert rows[1]["id"] == "c1\x9b" and rows[1]["error"].startswith("the question is empty")  # only format characters
    assert rows[2]["question"] == "ok?" and "error" not in rows[2]
    assert "\\u009b" in out and raw_controls(out) == []


# ---------------------------------------------------------------------------------------------
# k

@pytest.mark.parametrize(
    "k, message",
    [("0", "k must be >= 1, got 0"), ("-1", "k must be >= 1, got -1"),
     (str(10**9), "k must be <= 1,000, got 1,000,000,000"), ("1001", "k must be <= 1,000, got 1,001")],
)
@pytest.mark.parametrize("command", ["ask", "ask-batch", "chat"])
def test_k_out_of_range_is_one_error_line_before_anything_loads(tmp_path, capsys, k, message, command):
    batch = write_batch(tmp_path, GOOD)
    argv = {"ask": ["ask", "q?"], "ask-batch": ["ask", "--batch", str(batch)], "chat": ["chat"]}[command]
    code, out, err = run(argv + ["-k", k, "--index", str(tmp_path / "no-index")], capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


@pytest.mark.parametrize("argv, words", [(["-k", "10**9"], "invalid int value: '10**9'"), (["--k", "0"], "unrecognized arguments: --k")])
def test_k_that_is_not_an_integer_option_is_one_argparse_error_line(tmp_path, capsys, argv, words):
    code, out, err = run(args(tmp_path, "q?", *argv), capsys)
    assert code == 2 and out == ""
    assert words in one_error_line(err)


def test_rag_k_from_the_environment_is_checked_too(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAG_K", str(10**9))
    code, out, err = run(args(tmp_path, "q?"), capsys)
    assert code == 2 and out == ""
    assert "k must be <= 1,000, got 1,000,000,000" in one_error_line(err)


@pytest.mark.parametrize("k, words", [
    ("9" * 5000, "k must be <= 1,000, got a number with 5,000 digits"),
    ("-" + "9" * 5000, "k must be >= 1, got a negative number with 5,000 digits"),
    ("9" * 4000, "k must be <= 1,000, got a number with 4,000 digits"),  # int() could read it, but it is not echoed
    ("x" * 5000, "invalid int value: '" + "x" * 20 + "…'"),
])
@pytest.mark.parametrize("command", ["ask", "chat"])
def test_a_huge_k_is_one_short_error_line(tmp_path, capsys, k, words, command):
    code, out, err = run([command, *(["q?"] if command == "ask" else []), "-k", k, "--index", str(tmp_path / "no-index")], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert words in line and len(line) < 150


@pytest.mark.parametrize("k", [1, MAX_K])
def test_k_at_the_limits_is_passed_on(tmp_path, capsys, fake, k):
    holder = fake()
    code, _, err = run(args(tmp_path, "q?", "-k", str(k), "--json"), capsys)
    assert code == 0, err
    assert holder["a"].asked == [("q?", k)]


# ---------------------------------------------------------------------------------------------
# Invisible characters in questions: format characters are removed, controls separate words.

FORMAT_CHARS = {
    "zero-width-space": "\u200b", "zero-width-non-joiner": "\u200c", "zero-width-joiner": "\u200d",
    "word-joiner": "\u2060", "soft-hyphen": "\u00ad", "left-to-right-mark": "\u200e", "right-to-left-mark": "\u200f",
    "right-to-left-override": "\u202e", "pop-directional": "\u202c", "isolate": "\u2067", "pop-isolate": "\u2069",
    "arabic-letter-mark": "\u061c", "bom": "\ufeff", "tag-letter": "\U000e0041",
}
SEPARATORS = {
    "nul": "\x00", "tab": "\t", "newline": "\n", "esc": "\x1b", "del": "\x7f", "next-line": "\x85", "c1-csi": "\x9b",
    "line-separator": "\u2028", "paragraph-separator": "\u2029",
}


@pytest.mark.parametrize("ch", list(FORMAT_CHARS.values()), ids=list(FORMAT_CHARS))
def test_a_format_character_inside_a_word_is_removed(ch):
    assert unicodedata.category(ch) == "Cf"
    assert clean_question(f"Border guards in Fin{ch}land{ch}?", 2000).text == "Border guards in Finland?"
    assert tokenize(clean_question(f"Fin{ch}land", 2000).text) == tokenize("Finland") == ["finland"]


@pytest.mark.parametrize("ch", list(SEPARATORS.values()), ids=list(SEPARATORS))
def test_a_control_character_or_line_separator_still_separates_words(ch):
    assert clean_question(f"How{ch}many{ch}{ch}guards?", 2000).text == "How many guards?"


def test_only_format_characters_is_an_empty_question():
    with pytest.raises(BadQuestion, match="the question is empty"):
        clean_question("".join(FORMAT_CHARS.values()), 2000)


def test_a_lone_surrogate_is_dropped_not_spaced():
    assert clean_question("Fin\udcffland?", 2000).text == "Finland?"


@pytest.mark.xfail(strict=True, reason="document side (lexical.tokenize via text.search_form) still splits words at "
                   "format characters; fixing it changes index output, so every existing index would be stale (issue 16)")
def test_document_side_tokenizer_ignores_format_characters():
    assert tokenize("Fin\u200bland") == tokenize("Finland")


@pytest.mark.slow
def test_a_zero_width_space_in_a_word_does_not_change_the_answer(assistant):
    plain = assistant.ask(FINLAND_Q)
    hidden = assistant.ask(FINLAND_Q.replace("Finland", "Fin\u200bland").replace("border guards", "bor\u00adder gu\u200dards"))
    assert hidden.question == plain.question == FINLAND_Q
    assert "50" in hidden.answer
    assert (hidden.answer, [(c.doc, c.start, c.end) for c in hidden.citations]) == (
        plain.answer, [(c.doc, c.start, c.end) for c in plain.citations])


# ---------------------------------------------------------------------------------------------
# Terminal safety: nothing from a document, a file name, a question or the LLM reaches the terminal raw.

@pytest.mark.parametrize(
    "text, shown",
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        ("a\x9b31mb", "a\\x9b31mb"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),
        ("one\ntwo\r", "one\\x0atwo\\x0d"),
        ("x\u2028y", "x\\u2028y"),
        ("\udcff.txt", "\\udcff.txt"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("plain, ünïcödé, emoji 🇫🇮, soft\u00adhyphen, zw\u200dj", "plain, ünïcödé, emoji 🇫🇮, soft\u00adhyphen, zw\u200dj"),
    ],
    ids=["title", "clear-screen", "c1-csi", "bidi", "newlines", "line-separator", "surrogate", "tag", "ordinary"],
)
def test_terminal_safe_shows_controls_as_visible_escapes(text, shown):
    assert terminal_safe(text) == shown
    assert raw_controls(terminal_safe(text)) == []


def test_terminal_safe_keeps_newlines_only_when_asked():
    assert terminal_safe("a\nb\x1b", newlines=True) == "a\nb\\x1b"


def human_lines_ok(out: str) -> None:
    assert raw_controls(out) == [], raw_controls(out)
    assert "\\x1b]0;pwned\\x07" in out and "\\u202eevil" in out and "\\x9b31m" in out
    assert not any(line.startswith("fake") for line in out.splitlines())  # no line injected from a document


def test_rag_ask_human_output_escapes_answer_citations_and_notices(tmp_path, capsys, fake):
    fake()
    code, out, err = run(args(tmp_path, "How many guards?"), capsys)
    assert code == 0, err
    human_lines_ok(out)
    lines = out.splitlines()
    assert lines[0].startswith("note: note\\x1b]0;pwned")
    assert lines[1].startswith("50 guards\\x1b]0;pwned") and lines[2] == "second line [1]"  # the message keeps its line break
    cite = next(line for line in lines if line.startswith("[1] "))
    assert "Title\\x1b]0;pwned" in cite and "\\x0afake: line" in cite and "· Section\\x1b" in cite


def test_rag_ask_human_output_escapes_the_closest_passages_when_abstaining(tmp_path, capsys, fake):
    fake(abstain=True)
    code, out, err = run(args(tmp_path, "What is the capital of Australia?"), capsys)
    assert code == 0, err
    human_lines_ok(out)
    assert "Closest passages:" in out and "  1. p. 1 · Section\\x1b" in out


def test_streamed_llm_text_and_unsupported_sentences_are_escaped(tmp_path, capsys, fake):
    fake(tokens=("Fifty \x1b]0;pwned\x07", "guards\n", "\u202eevil\x9b31m"))
    code, out, err = run(args(tmp_path, "How many guards?", "--answer", "llm"), capsys)
    assert code == 0, err
    human_lines_ok(out)
    assert out.startswith("Fifty \\x1b]0;pwned\\x07guards\n\\u202eevil\\x9b31m")
    assert "⚠ not supported by its citations: unsupported\\x1b]0;pwned" in out


def test_json_output_has_no_raw_controls_and_round_trips(tmp_path, capsys, fake):
    holder = fake()
    code, out, err = run(args(tmp_path, "How many guards?", "--json"), capsys)
    assert code == 0, err
    assert out.count("\n") == 1 and raw_controls(out) == []
    d = strict_json(out)
    assert d["citations"][0]["title"] == f"Title{HOSTILE}\nfake: line"  # the same value, only escaped
    assert d["passages"][0]["text"] == hostile_citation().text
    assert d["notices"] == [f"note{HOSTILE}"]
    assert "\\u009b" in out and "\\u202e" in out and "\\u2028" in out and "\\u001b" in out
    assert holder["a"].asked == [("How many guards?", None)]


def test_chat_escapes_answers_and_errors(tmp_path, capsys, fake, monkeypatch):
    import io

    fake()
    monkeypatch.setattr("sys.stdin", io.StringIO("How many guards?\n\u200b\u202e\n"))
    code, out, err = run(["chat", "--index", str(tmp_path / "no-index")], capsys)
    assert code == 0
    human_lines_ok(out)
    assert err == "rag: the question is empty: type a question about the documents\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("How many guards?\n"))
    code, out, _ = run(["chat", "--json", "--index", str(tmp_path / "no-index")], capsys)
    assert code == 0 and raw_controls(out) == [] and strict_json(out)["question"] == "How many guards?"


def test_error_lines_escape_file_names_and_arguments(tmp_path, capsys):
    name = "qs\x1b]0;pwned\x07\n.jsonl"
    code, _, err = run(args(tmp_path, "--batch", str(tmp_path / name)), capsys)
    assert code == 2
    line = one_error_line(err)  # the newline in the name did not make a second line
    assert "qs\\x1b]0;pwned\\x07\\x0a.jsonl" in line and raw_controls(err) == []
    code, _, err = run(args(tmp_path, "q?", "--mode", "\x1b[2J"), capsys)
    assert code == 2
    assert "'\\x1b[2J'" in one_error_line(err) and raw_controls(err) == []


def test_rag_index_error_naming_only_bad_files_is_escaped(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", {"evil\x1b]0;pwned\x07.txt": "", "\u202eevil.md": b"\x00\x01binary"})
    code, out, err = run(["index", "--corpus", str(corpus), "--index", str(tmp_path / "ix"), "--no-progress"], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err.splitlines()[-1] + "\n")
    assert "evil\\x1b]0;pwned\\x07.txt" in line and "\\u202eevil.md" in line
    assert raw_controls(err) == []


def test_rag_index_skipped_files_and_notices_are_escaped(tmp_path, capsys, monkeypatch):
    from rag import index as index_mod

    from conftest import small_manifest
    from rag.load import Skipped

    result = index_mod.BuildResult(
        "built", small_manifest(1, 2, 3, build_seconds=0.1),
        skipped=(Skipped("evil\x1b]0;pwned\x07.txt", "empty\x1b[2J file"), Skipped(os.fsdecode(b"\xff.txt"), "empty file")),
        notices=("cp\u202e1252\n.txt: decoded as cp1252",),
    )
    monkeypatch.setattr(index_mod, "build_index", lambda *a, **kw: result)
    code, out, err = run(["index", "--corpus", str(tmp_path), "--index", str(tmp_path / "ix\x1b[2J"), "--no-progress"], capsys)
    assert code == 0
    assert err.splitlines() == [
        "skipped evil\\x1b]0;pwned\\x07.txt: empty\\x1b[2J file",
        "skipped \\udcff.txt: empty file",  # a non-UTF-8 file name: printable, not a UnicodeEncodeError
        "note: cp\\u202e1252\\x0a.txt: decoded as cp1252",
    ]
    assert out.endswith(f"({tmp_path}/ix\\x1b[2J)\n") and raw_controls(out) == []


def test_log_lines_are_escaped():
    formatter = cli._SafeFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("rag.load", logging.WARNING, __file__, 1, "skipped %s: %s", ("evil\x1b]0;x\x07\n.txt", "empty"), None)
    assert formatter.format(record) == "WARNING rag.load: skipped evil\\x1b]0;x\\x07\\x0a.txt: empty"


@pytest.mark.slow
def test_hostile_document_end_to_end_index_and_ask(tmp_path, capsys):
    """A real index of a document full of escape codes, with an escape code in its file name."""
    corpus = write_corpus(tmp_path / "corpus", {
        "border\x1b]0;pwned\x07.md": (
            "# Border \x1b[2J\x1b[HReport\n\n"
            "Frontex deployed 50 border guards\x1b]0;pwned\x07 to the eastern border \u202eof Finland\u202c. "
            "They arrived \x9b31min December.\n"
        ),
        "empty\x1b[31m.txt": "",
    })
    settings = settings_for(corpus, tmp_path / "index")
    base = ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]
    code, out, err = run(["index", *base, "--no-progress"], capsys)
    assert code == 0, err
    assert "skipped empty\\x1b[31m.txt: empty file" in err
    assert raw_controls(out + err) == []
    code, out, err = run(["ask", "How many border guards were deployed to Finland?", *base], capsys)
    assert code == 0, err
    assert "50 border guards" in out and "\\x1b]0;pwned\\x07" in out
    assert raw_controls(out + err) == []
    code, out, err = run(["ask", "How many border guards were deployed to Finland?", "--json", *base], capsys)
    assert code == 0, err
    assert raw_controls(out) == []
    d = strict_json(out)
    assert d["passages"][0]["doc"] == "border\x1b]0;pwned\x07.md"
    assert "\x1b]0;pwned\x07" in d["passages"][0]["text"]


# ---------------------------------------------------------------------------------------------
# A reader that goes away: `rag ask ... | head -1`

_PIPE_CHILD = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from rag import pipeline
from test_input_edges import FakeAssistant
pipeline.Assistant.load = staticmethod(lambda settings: FakeAssistant(settings))
from rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["ask-batch", "chat"])
def test_a_closed_output_pipe_ends_quietly(spawn, tmp_path, command):
    """The reader takes one line and closes the pipe; a later write fails (EPIPE): exit 141, no
    traceback. 5,000 answers (JSON lines, or a chat's text) are far more than a pipe holds."""
    import subprocess
    import sys

    lines = '{"id": 1, "question": "How many guards?"}\n' * 5000 if command == "ask-batch" else "How many guards?\n" * 5000
    questions = write_batch(tmp_path, lines)
    argv = ["ask", "--batch", str(questions), "--json"] if command == "ask-batch" else ["chat"]
    with open(questions, "rb") as stdin:
        child = subprocess.Popen([sys.executable, "-c", _PIPE_CHILD, str(Path(__file__).parent), *argv,
                                  "--index", str(tmp_path / "no-index")],
                                 stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = child.stdout.readline()
        child.stdout.close()
        err = child.stderr.read().decode()
        code = child.wait(120)
    assert first.strip()
    assert (code, err) == (cli.EXIT_BROKEN_PIPE, "")


def test_streamed_text_held_back_as_a_possible_secret_is_printed_at_the_end(tmp_path, capsys, fake, monkeypatch):
    monkeypatch.setenv("RAG_LLM_API_KEY", "sk-test-0123456789")
    fake(tokens=("Fifty guards, key sk-test-", "0123456789 [1]. Then sk-te"))
    code, out, err = run(args(tmp_path, "How many guards?", "--answer", "llm"), capsys)
    assert code == 0, err
    assert out.startswith("Fifty guards, key *** [1]. Then sk-te\n\nChecked answer:\n")
    assert "sk-test-0123456789" not in out
