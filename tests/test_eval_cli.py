"""``rag eval``: the curated-set run and a BEIR run through ``main([...])`` in-process (the model stays
loaded), the JSON contract of issue 3 item 6, the report files, and one-line user errors (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import one_error_line, run_cli as run, CACHE_DIR, REPO
from test_beir import write_beir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_IDS = ("q001", "q003", "q025", "q011", "q012")  # three answerable, two unanswerable
ROW_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "answer_accuracy", "citation_support",
            "abstention_recall", "false_abstention", "median_passage_words", "p50_ms")




@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory) -> Path:
    lines = {json.loads(s)["id"]: s for s in (REPO / "eval" / "qa.jsonl").read_text(encoding="utf-8").splitlines() if s.strip()}
    path = tmp_path_factory.mktemp("qa") / "tiny.jsonl"
    path.write_text("\n".join(lines[i] for i in TINY_IDS) + "\n", encoding="utf-8")
    return path


def eval_args(settings, qa: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--qa", str(qa), "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir),
            "--out", str(out), "--no-progress", *extra]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """BEIR indexes go under the cache folder: keep them (and their lock files) out of the real cache,
    while the model stays the session's (get_embedder is keyed by model and cache folder)."""
    import rag.embed

    real = rag.embed.get_embedder
    monkeypatch.setattr(rag.embed, "get_embedder", lambda name, cache_dir, backend=None: real(name, str(CACHE_DIR), backend))
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache))
    return cache


# ---------------------------------------------------------------------------------------------
# The curated set


@pytest.mark.slow
def test_eval_json_prints_one_object_with_dataset_model_and_rows(real_settings, real_index, tiny_qa, tmp_path, capsys):
    out_dir = tmp_path / "reports"
    code, out, err = run(eval_args(real_settings, tiny_qa, out_dir, "--no-langchain", "--rows", "hybrid", "--json"), capsys)
    assert code == 0, err
    assert err == ""  # --no-progress: no bar
    lines = out.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["dataset"] == str(tiny_qa)
    assert d["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert list(d["rows"]) == ["hybrid"]
    hybrid = d["rows"]["hybrid"]
    assert set(ROW_KEYS) <= set(hybrid)
    assert hybrid["questions"] == len(TINY_IDS) and hybrid["answerable"] == 3
    assert all(isinstance(hybrid[k], float) and 0.0 <= hybrid[k] <= 1.0 for k in ROW_KEYS[:9])
    assert [q["id"] for q in d["questions"]] == list(TINY_IDS)
    # the report files are written too, and hold the same rows
    assert json.loads((out_dir / "latest.json").read_text(encoding="utf-8"))["rows"] == d["rows"]
    assert "| hybrid | " in (out_dir / "latest.md").read_text(encoding="utf-8")
    for png in ("latest-recall.png", "latest-kinds.png"):
        assert (out_dir / png).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_eval_prints_a_table_and_the_report_paths(real_settings, real_index, tiny_qa, tmp_path, capsys):
    out_dir = tmp_path / "reports"
    code, out, err = run(eval_args(real_settings, tiny_qa, out_dir, "--no-langchain", "--rows", "lexical,hybrid-rrf"), capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(str(tiny_qa)) and "all-MiniLM-L6-v2" in lines[0]
    assert lines[1].split()[:3] == ["row", "R@1", "R@5"]
    assert [line.split()[0] for line in lines[2:4]] == ["lexical", "hybrid-rrf"]
    report_line = lines[-1]
    assert report_line.startswith("report: ")
    listed = report_line.removeprefix("report: ").split(", ")
    assert listed == [str(out_dir / n) for n in ("latest.json", "latest.md", "latest-recall.png", "latest-kinds.png")]
    assert all(Path(p).is_file() for p in listed)


@pytest.mark.slow
@pytest.mark.parametrize("rows, message", [("hybird", "unknown retrieval mode 'hybird'"), ("hybrid-foo", "unknown fusion 'foo'")])
def test_eval_unknown_row_is_one_line_error(real_settings, real_index, tiny_qa, tmp_path, capsys, rows, message):
    code, out, err = run(eval_args(real_settings, tiny_qa, tmp_path / "r", "--no-langchain", "--rows", rows), capsys)
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_eval_missing_question_file_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    code, out, err = run(["eval", "--qa", str(missing), "--index", str(tmp_path / "index"), "--out", str(tmp_path / "r"),
                          "--no-progress", "--json"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert str(missing) in line and "--qa" in line
    assert out == ""
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# BEIR


def test_eval_beir_folder_without_qrels_is_one_line_error(tmp_path, tmp_cache, capsys):
    folder = write_beir(tmp_path / "tinybeir")
    (folder / "qrels" / "test.tsv").unlink()
    code, out, err = run(["eval", "--beir", str(folder), "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 2
    assert "qrels/test.tsv not found" in one_error_line(err)
    assert out == ""


@pytest.mark.parametrize("layout", ["empty folder", "no such folder"])
def test_eval_beir_folder_without_corpus_is_one_line_error(tmp_path, tmp_cache, capsys, layout):
    folder = tmp_path / "notbeir"
    if layout == "empty folder":
        folder.mkdir()
    code, out, err = run(["eval", "--beir", str(folder), "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 2
    assert "corpus.jsonl" in one_error_line(err)


@pytest.mark.slow
def test_eval_beir_json_has_the_three_metrics_per_row(tmp_path, tmp_cache, capsys):
    folder = write_beir(tmp_path / "tinybeir")
    out_dir = tmp_path / "r"
    code, out, err = run(["eval", "--beir", str(folder), "--rows", "hybrid,lexical", "--json", "--out", str(out_dir),
                          "--no-progress"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["dataset"] == "BEIR tinybeir (test)"
    assert list(d["rows"]) == ["hybrid", "lexical"]
    for row in d["rows"].values():
        assert all(0.0 <= row[k] <= 1.0 for k in ("ndcg@10", "recall@100", "mrr@10"))
        assert row["queries"] == 4
    assert "questions" not in d
    assert (tmp_cache / "beir" / "tinybeir" / "manifest.json").is_file()
    assert json.loads((out_dir / "beir-tinybeir-test.json").read_text(encoding="utf-8"))["rows"] == d["rows"]
