"""`rag bench` at a tiny size: every documented JSON field is there with a sane type and value.
No timing assertions: the figures depend on the machine and its load."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import settings_for

from benchmarks import bench
from rag.cli import main

TINY_QA = [
    {"id": "t1", "question": "How many border guards did Frontex send to the eastern border?", "answer": "50",
     "evidence": "Frontex deployed 50 border guards to the eastern border.", "kind": "numeric"},
    {"id": "t2", "question": "Where did the ministers meet?", "answer": "Brussels",
     "evidence": "The ministers met in Brussels on 3 May.", "kind": "place"},
    {"id": "t3", "question": "How many boats go to the coast guard?", "answer": "seven",
     "evidence": "Deliver seven boats to the coast guard.", "kind": "numeric"},
    {"id": "t4", "question": "What is the price of coffee in Brazil?", "answer": "", "kind": "unanswerable"},
]
MS_TRIPLES = [("encoder_p50_ms", "encoder_p95_ms", "encoder_p99_ms"), ("ask_p50_ms", "ask_p95_ms", "ask_p99_ms"),
              ("langchain_stock_p50_ms", "langchain_stock_p95_ms", "langchain_stock_p99_ms")]
POSITIVE = ["load_s", "ask_retrieve_p50_ms", "ask_answer_p50_ms", "ask_over_encoder", "langchain_build_s",
            "langchain_over_ask", "langchain_over_search", "langchain_1_thread_p50_ms", "langchain_1_thread_over_ask",
            "cold_ask_s", "peak_rss_cold_ask_mb", "index_build_s",
            "index_build_inproc_s", "index_passages_per_s", "index_texts_per_s", "reindex_nochange_s", "peak_rss_mb",
            "serve_batch_s", "peak_rss_build_mb", "elapsed_s"]


@pytest.fixture(scope="module")
def tiny_bench(tiny_source, tmp_path_factory):
    """(settings, qa path, out dir): a private copy of the tiny corpus and index, and a 4-question set."""
    corpus, index, _ = tiny_source
    root = tmp_path_factory.mktemp("bench")
    shutil.copytree(corpus, root / "corpus")
    shutil.copytree(index, root / "index")
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps(q) + "\n" for q in TINY_QA), encoding="utf-8")
    return settings_for(root / "corpus", root / "index"), qa, root


def _run(settings, qa: Path, out: Path, *flags: str, capsys) -> dict:
    code = main(["bench", "--json", "--no-progress", "--qa", str(qa), "--index", str(settings.index_dir),
                 "--corpus", str(settings.corpus_dir), "--out", str(out), *flags])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text(encoding="utf-8")) == printed
    return printed


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_json_has_every_documented_field_with_sane_values(tiny_bench, capsys):
    settings, qa, root = tiny_bench
    r = _run(settings, qa, root / "reports" / "bench.json", "--questions", "6", "--cold-runs", "1", "--skip-app",
             capsys=capsys)
    assert set(bench.FIELDS) <= set(r)
    assert r["skipped"] == {"app": "--skip-app"}
    assert r["app_first_answer_s"] is r["app_healthy_s"] is r["peak_rss_app_mb"] is None
    assert r["questions"] == 6  # 4 from the set, then 2 variants
    assert r["embed_backend"] in ("onnx", "torch")
    assert r["command"].startswith("rag bench --questions 6 ") and "--skip-app" in r["command"]
    for p50, p95, p99 in MS_TRIPLES:
        assert _positive(r[p50]) and r[p50] <= r[p95] <= r[p99], (p50, r[p50], r[p95], r[p99])
    for key in ("search_p50_ms", "search_p95_ms", "search_p99_ms"):
        assert set(r[key]) == {"hybrid", "dense", "lexical"} and all(_positive(v) for v in r[key].values())
    for mode in ("hybrid", "dense", "lexical"):
        assert r[f"search_p50_ms_{mode}"] == r["search_p50_ms"][mode] <= r["search_p99_ms"][mode]
    for key in POSITIVE:
        assert _positive(r[key]), (key, r[key])
    assert r["ask_over_encoder"] == pytest.approx(r["ask_p50_ms"] / r["encoder_p50_ms"])
    assert r["langchain_over_ask"] == pytest.approx(r["langchain_stock_p50_ms"] / r["ask_p50_ms"])
    assert 0 <= r["recall_at_5_langchain_stock"] <= 1 and r["recall_at_5_ours"] == 1.0  # 3 easy answerable questions
    assert set(r["encoder_p50_ms_by_backend"]) >= {"torch"}
    assert all(_positive(v) for v in r["encoder_p50_ms_by_backend"].values())
    assert len(r["cold_ask_runs_s"]) == 1 and len(r["reindex_nochange_runs_s"]) == 3
    assert r["cold_ask_s"] == pytest.approx(r["cold_ask_runs_s"][0], abs=1e-3)
    assert r["index_passages"] == r["corpus"]["passages"] > 0 and r["index_sentences"] >= r["index_passages"]
    assert r["index_passages_per_s"] == pytest.approx(r["index_passages"] / r["index_build_s"])
    # each process's own peak, not the bench's: a fresh `rag ask` is far smaller than the bench with torch loaded
    assert 30 < r["peak_rss_cold_ask_mb"] < 4000 and 30 < r["peak_rss_build_mb"] < 4000
    m = r["machine"]
    assert m["cpu_count"] >= 1 and m["python"].count(".") == 2 and len(m["loadavg_start"]) == 3
    assert len(m["loadavg_end"]) == 3
    assert bench.format_bench(r).count("\n") > 10  # the table renders from the JSON alone


def test_skipped_stages_keep_their_fields_as_null_with_the_reason(spawn, tiny_bench, capsys):
    settings, qa, root = tiny_bench
    r = _run(settings, qa, root / "skip.json", "--questions", "3", "--skip-cold", "--skip-build", "--skip-app",
             "--skip-langchain", capsys=capsys)
    assert set(bench.FIELDS) <= set(r)
    assert set(r["skipped"]) == {"cold", "build", "app", "langchain"}
    for key in ("cold_ask_s", "peak_rss_mb", "index_build_s", "reindex_nochange_s", "peak_rss_build_mb",
                "langchain_stock_p50_ms", "langchain_over_ask", "langchain_1_thread_p50_ms", "app_first_answer_s"):
        assert r[key] is None, key
    assert _positive(r["ask_p50_ms"]) and _positive(r["encoder_p50_ms"]) and r["questions"] == 3
    text = bench.format_bench(r)
    assert "skipped cold: --skip-cold" in text and "—" in text


def test_questions_past_the_set_are_distinct_variants_with_the_same_gold():
    from rag.evaluate import QAItem

    items = [QAItem(f"q{i}", f"Question {i}?", str(i), (), (f"evidence {i}",), "numeric") for i in range(3)]
    out = bench.bench_questions(items, 11)
    assert len(out) == 11 and len({q.question for q in out}) == 11
    assert [q.id for q in out[:4]] == ["q0", "q1", "q2", "q0"] and out[3].evidence == ("evidence 0",)
    assert out[3].question == "According to the documents, question 0?"
    assert bench.bench_questions(items, 0) == items


@pytest.mark.parametrize("text, sizes", [("10000,100000", (10_000, 100_000)), ("10k, 1M", (10_000, 1_000_000)),
                                         ("2.5k", (2_500,))])
def test_scale_sizes(text, sizes):
    assert bench._sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "ten", "0", "-5"])
def test_bad_scale_sizes_are_one_line_errors(text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--scale", text])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("rag: error:")


def test_a_missing_question_set_is_one_clear_error(tmp_path, capsys):
    assert main(["bench", "--qa", str(tmp_path / "nope.jsonl")]) == 2
    assert "question set" in capsys.readouterr().err


def test_child_peak_memory_is_the_childs_own(spawn, tmp_path):
    """The launcher reports the measured process's own peak RSS, not this (larger) test process's."""
    import sys

    grow = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    small = bench.run_child([sys.executable, "-c", "pass"])
    big = bench.run_child([sys.executable, "-c", grow])
    assert small.returncode == big.returncode == 0
    assert small.peak_rss_mb < 100 and big.peak_rss_mb > small.peak_rss_mb + 150
    failed = bench.run_child([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"])
    assert failed.returncode == 3 and failed.stdout.strip() == "out"


@pytest.mark.slow
def test_scale_rows_come_from_benchmarks_scale():
    from benchmarks import scale

    rows = bench.run_scale_rows((1000,))
    assert isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows)
    assert {row["n"] for row in rows} == {1000}
    assert isinstance(scale.format_scale(rows), str)


@pytest.mark.slow
def test_app_first_answer_in_a_real_browser(tiny_bench):
    reason = bench.app_unavailable()
    if reason:
        pytest.skip(reason)
    settings, _, _ = tiny_bench
    r = bench.time_app(settings, "Where did the ministers meet?")
    assert 0 < r["app_healthy_s"] < r["app_first_answer_s"]
    assert r["peak_rss_app_mb"] is None or r["peak_rss_app_mb"] > 30


@pytest.mark.slow
def test_incremental_bench_times_single_file_changes_against_a_full_build(tiny_bench, tmp_path, capsys):
    from test_squad import SQUAD_DIR

    if not SQUAD_DIR.is_dir():
        pytest.skip(f"{SQUAD_DIR} not here")
    files = bench.squad_files(SQUAD_DIR, tmp_path / "c", 30)
    assert len(files) == 30 and len({f.read_text() for f in files}) == 30
    settings, qa, root = tiny_bench
    r = _run(settings, qa, tmp_path / "bench.json", "--questions", "2", "--skip-cold", "--skip-app", "--skip-build",
             "--skip-langchain", "--incremental", str(SQUAD_DIR), "--incremental-files", "12", capsys=capsys)
    assert r["incremental_files"] == 12 and r["incremental_passages"] > 12
    for op in ("add", "change", "remove"):
        assert 0 < r[f"incremental_{op}_s"] < r["incremental_full_s"] * 2
        assert len(r[f"incremental_{op}_runs_s"]) == 3 and r[f"incremental_{op}_peak_rss_mb"] > 0
    table = bench.format_bench(r)
    assert "index 12 files" in table and "then remove one file" in table
