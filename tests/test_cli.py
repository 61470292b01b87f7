"""The ``rag`` command. Mostly ``main([...])`` in-process (the model stays loaded); a few subprocess
runs check what only a real process shows: exit codes, no traceback, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_error_line, run_cli as run, FINLAND_Q, REPO
from rag import __version__
from rag.cli import main

RAG = Path(sys.executable).parent / "rag"


def ask_args(settings, *extra: str) -> list[str]:
    return ["ask", *extra, "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)]




def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


# ---------------------------------------------------------------------------------------------
# rag ask


def test_ask_json_prints_one_object_with_answer_and_citations(real_settings, real_index, capsys):
    code, out, err = run(ask_args(real_settings, FINLAND_Q, "--json", "-k", "3"), capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["question"] == FINLAND_Q
    assert "50" in d["answer"] and d["abstained"] is False
    assert len(d["passages"]) == 3
    c = d["citations"][0]
    assert {"n", "doc", "title", "page", "section", "start", "end", "text", "score"} <= set(c)
    assert (c["n"], c["page"], c["section"]) == (1, 1, "Letter")
    assert {"n", "doc", "title", "page", "section", "start", "end", "text", "score"} - {"n"} <= set(d["passages"][0])
    assert "n" not in d["passages"][0]
    assert set(d["timings_ms"]) == {"retrieve", "read", "answer", "total"}
    assert 0.0 <= d["answerable"] <= 1.0 and "short_answer" in d


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_ask_mode_option(real_settings, real_index, capsys, mode):
    code, out, _ = run(ask_args(real_settings, FINLAND_Q, "--json", "--mode", mode), capsys)
    assert code == 0
    assert "50 European border guards" in json.loads(out)["passages"][0]["text"]


def test_ask_human_output_shows_answer_and_sources(real_settings, real_index, capsys):
    code, out, _ = run(ask_args(real_settings, FINLAND_Q), capsys)
    assert code == 0
    short, first, *rest = out.splitlines()
    assert short == "Answer: 50"  # the short answer first (issue 12's contract), then the quoted sentence
    assert "50 European border guards" in first and first.endswith("[1]")
    assert any(line.startswith("[1] Letter of President von der Leyen") and "· p. 1 · Letter · chars " in line for line in rest)
    assert out.rstrip().endswith("ms)")


def test_ask_human_output_when_abstaining_lists_closest_passages(real_settings, real_index, capsys):
    code, out, _ = run(ask_args(real_settings, "What is the capital of Australia?"), capsys)
    assert code == 0
    assert out.startswith("The documents do not say: What is the capital of Australia?")
    assert "Closest passages:" in out
    assert "  1. p. " in out


def test_batch_keeps_input_order_and_ids(real_settings, real_index, tmp_path, capsys):
    questions = [
        {"question": "How many countries took part in the conference on migrant smuggling?"},
        {"id": "finland", "question": FINLAND_Q},
        {"question": "When will the EU Migration Liaison Officer be deployed to Cairo?"},
    ]
    batch = tmp_path / "qs.jsonl"
    batch.write_text("\n".join(json.dumps(q) for q in questions) + "\n\n", encoding="utf-8")
    code, out, err = run(ask_args(real_settings, "--batch", str(batch), "--json"), capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in rows] == [q["question"] for q in questions]
    assert [r.get("id") for r in rows] == [None, "finland", None]
    assert "60 countries" in rows[0]["answer"]
    assert "50" in rows[1]["answer"]
    assert "1 February 2024" in rows[2]["answer"]
    for r in rows:
        assert {"question", "answer", "abstained", "citations", "passages", "timings_ms"} <= set(r)


def test_batch_line_with_an_empty_question_reports_the_error_in_place(real_settings, real_index, tmp_path, capsys):
    batch = tmp_path / "qs.jsonl"
    batch.write_text(
        "\n".join(json.dumps(q) for q in [{"id": 1, "question": FINLAND_Q}, {"id": 2, "question": "  "}, {"id": 3, "question": FINLAND_Q}]),
        encoding="utf-8",
    )
    code, out, _ = run(ask_args(real_settings, "--batch", str(batch), "--json"), capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[1]["error"] == "the question is empty: type a question about the documents"
    assert "answer" not in rows[1] and "50" in rows[2]["answer"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "ok?"}\n{not json}\n', "qs.jsonl:2: not valid JSON"),
        ('{"question": 42}\n', "qs.jsonl:1: each line needs a 'question' string"),
        ('["a list"]\n', "qs.jsonl:1: each line needs a 'question' string"),
    ],
)
def test_bad_batch_file_is_a_user_error(real_settings, real_index, tmp_path, capsys, content, message):
    batch = tmp_path / "qs.jsonl"
    batch.write_text(content, encoding="utf-8")
    code, out, err = run(ask_args(real_settings, "--batch", str(batch), "--json"), capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_missing_batch_file_is_a_user_error(real_settings, tmp_path, capsys):
    code, _, err = run(ask_args(real_settings, "--batch", str(tmp_path / "nope.jsonl")), capsys)
    assert code == 2
    assert "cannot read batch file" in one_error_line(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["   "], "the question is empty"),
        ([FINLAND_Q, "-k", "0"], "k must be >= 1, got 0"),
        ([], "give a question"),
        ([FINLAND_Q, "--batch", "x.jsonl"], "give either a question or --batch, not both"),
    ],
    ids=["blank-question", "k-zero", "no-question", "question-and-batch"],
)
def test_user_errors_exit_2_with_one_line(real_settings, real_index, capsys, argv, message):
    code, out, err = run(ask_args(real_settings, *argv), capsys)
    assert code == 2
    assert out == ""
    assert message in one_error_line(err)


def test_missing_index_exit_2_says_run_rag_index(tmp_path, capsys):
    code, out, err = run(["ask", FINLAND_Q, "--index", str(tmp_path / "none"), "--corpus", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert "`rag index`" in one_error_line(err)


def test_stale_index_exit_2_names_the_file(tiny_copy, capsys):
    p = Path(tiny_copy.corpus_dir) / "notes.txt"
    p.write_text(p.read_text() + " Changed.", encoding="utf-8")
    code, _, err = run(ask_args(tiny_copy, "Where did the ministers meet?"), capsys)
    assert code == 2
    line = one_error_line(err)
    assert "notes.txt" in line and "`rag index`" in line


@pytest.mark.parametrize(
    "argv, words",
    [
        (["ask", "Q", "--mode", "hybird"], "'hybird'"),
        (["ask", "Q", "-k", "many"], "'many'"),
        (["frobnicate"], "'frobnicate'"),
    ],
    ids=["bad-mode", "non-integer-k", "unknown-command"],
)
def test_malformed_command_lines_exit_2_with_one_rag_error_line(capsys, argv, words):
    # the documented contract for user errors: one line on stderr starting "rag: error:", exit code 2
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"rag {__version__}"


# ---------------------------------------------------------------------------------------------
# rag index


def test_index_reports_up_to_date_then_force_rebuilds(tiny_copy, capsys):
    base = ["index", "--corpus", str(tiny_copy.corpus_dir), "--index", str(tiny_copy.index_dir), "--no-progress"]
    code, out, err = run(base, capsys)
    assert code == 0
    assert out == f"index is up to date: 2 documents, 3 passages ({tiny_copy.index_dir})\n"
    assert "skipped empty.txt: empty file" in err
    code, out, _ = run(base + ["--force"], capsys)
    assert code == 0
    assert out.startswith("built index: 2 documents, 3 passages, 7 sentences in ")
    assert out.rstrip().endswith(f"s ({tiny_copy.index_dir})")


def test_index_of_a_missing_corpus_is_a_user_error(tmp_path, capsys):
    code, out, err = run(["index", "--corpus", str(tmp_path / "nope"), "--index", str(tmp_path / "ix")], capsys)
    assert code == 2 and out == ""
    assert "does not exist" in one_error_line(err)


# ---------------------------------------------------------------------------------------------
# Real processes


def test_rag_ask_json_subprocess_smoke(real_settings, real_index):
    out = subprocess.run(
        [str(RAG), *ask_args(real_settings, FINLAND_Q, "--json")],
        capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert "50" in d["answer"]
    assert d["citations"][0]["page"] == 1
    assert "Traceback" not in out.stderr


def test_empty_question_subprocess_exit_2_one_line_no_traceback(real_settings, real_index):
    out = subprocess.run(
        [str(RAG), *ask_args(real_settings, "")], capture_output=True, text=True, timeout=300, env=subprocess_env()
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert one_error_line(out.stderr) == "rag: error: the question is empty: type a question about the documents"


def test_missing_index_subprocess_exit_2(spawn, tmp_path):
    out = subprocess.run(
        [str(RAG), "ask", FINLAND_Q, "--index", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "`rag index`" in one_error_line(out.stderr)


@pytest.mark.parametrize(
    "code",
    [
        "import rag",
        "import rag; rag.Settings(); rag.RagError",
        "from rag.cli import _parser; _parser()",
        "import rag.load, rag.clean, rag.chunk, rag.settings, rag.errors",
    ],
)
def test_import_rag_is_light(spawn, code):
    probe = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
