"""BEIR datasets: score_run against hand-computed values and ir_measures, load_beir on a tiny hand-written
BEIR folder, and run_beir on it with the real model (its index cached under a tmp cache folder, reused
while corpus.jsonl is unchanged, rebuilt when it changes)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from conftest import CACHE_DIR
from rag.beir import BEIR_CHUNKING, load_beir, rank_documents, run_beir, score_run
from rag.errors import RagError
from rag.load import sha256_file
from rag.settings import Settings


def log2(x: float) -> float:
    return math.log2(x)


# ---------------------------------------------------------------------------------------------
# score_run, hand-computed


def test_score_run_hand_computed_graded_gains():
    qrels = {
        "q1": {"d1": 2, "d2": 1, "d3": 0},
        "q2": {"e1": 1},
        "q3": {"f1": 1, "f2": 1},
    }
    run = {
        # d2 (gain 1) at rank 1, unjudged at 2, d1 (gain 2) at 3, d3 (gain 0) at 4
        "q1": ["d2", "x", "d1", "d3"],
        # the only relevant document at rank 11: no nDCG@10 or MRR@10, but inside Recall@100
        "q2": [f"n{i}" for i in range(10)] + ["e1"],
        # one relevant at rank 100 (counted), the other at 101 (not)
        "q3": [f"m{i}" for i in range(99)] + ["f1", "f2"],
    }
    s = score_run(run, qrels)
    ndcg_q1 = (1 / log2(2) + 2 / log2(4)) / (2 / log2(2) + 1 / log2(3))  # 2 / 2.63093 = 0.76019
    assert s["ndcg@10"] == pytest.approx((ndcg_q1 + 0 + 0) / 3, abs=1e-12)
    assert s["recall@100"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-12)
    assert s["mrr@10"] == pytest.approx((1 + 0 + 0) / 3, abs=1e-12)
    assert ndcg_q1 == pytest.approx(0.7601875334318685, abs=1e-12)


def test_score_run_ideal_uses_the_top_ten_grades():
    qrels = {"q": {f"d{i}": g for i, g in enumerate([3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 3, 1])}}
    ideal = sorted(qrels["q"].values(), reverse=True)[:10]
    idcg = sum(g / log2(i + 2) for i, g in enumerate(ideal))
    run = {"q": [f"d{i}" for i in range(12)]}  # d10 (grade 3) is at rank 11
    dcg = sum(qrels["q"][f"d{i}"] / log2(i + 2) for i in range(10))
    assert score_run(run, qrels)["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert score_run({"q": sorted(qrels["q"], key=lambda d: -qrels["q"][d])}, qrels)["ndcg@10"] == pytest.approx(1.0)


def test_score_run_first_positive_counts_for_mrr_not_a_judged_zero():
    qrels = {"q": {"zero": 0, "rel": 1}}
    assert score_run({"q": ["zero", "rel"]}, qrels)["mrr@10"] == pytest.approx(0.5)


def test_score_run_counts_a_query_missing_from_the_run_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert score_run({"q1": ["a"]}, qrels) == pytest.approx({"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5})
    assert score_run({}, {}) == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


def test_rank_documents_keeps_each_documents_best_passage_in_order():
    class H:
        def __init__(self, doc):
            self.chunk = type("C", (), {"doc_id": doc})()

    hits = [H(d) for d in ["a", "b", "a", "c", "b", "d"]]
    assert rank_documents(hits, 10) == ["a", "b", "c", "d"]
    assert rank_documents(hits, 2) == ["a", "b"]
    assert rank_documents([], 5) == []


# ---------------------------------------------------------------------------------------------
# score_run against ir_measures


def graded_case():
    """Six queries with graded (0-3) and binary judgements, relevant documents past rank 10 and past 100."""
    qrels = {
        "q1": {"a1": 2, "a3": 1, "a2": 0},
        "q2": {"b3": 1},
        "q3": {"c1": 1, "c5": 3, "c9": 2, "c15": 1},
        "q4": {"d11": 1, "d150": 1},
        "q5": {f"e{i}": (i % 3) + 1 for i in (1, 2, 4, 7, 8, 9, 10, 13, 14, 15, 16, 17)},
        "q6": {"f_never": 2, "f2": 1, "f4": 0},
    }
    run = {q: [f"{p}{i}" for i in range(1, 201)] for q, p in zip(qrels, "abcdef")}
    return qrels, run


def random_graded_case(seed: int, n: int = 50):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for qi in range(n):
        q = f"q{qi}"
        run[q] = [f"{q}-d{i}" for i in range(rng.randint(1, 160))]
        qrels[q] = {f"{q}-d{i}": rng.randint(1, 3) for i in rng.sample(range(180), rng.randint(1, 15))}
        for i in rng.sample(range(180), 4):
            qrels[q].setdefault(f"{q}-d{i}", 0)
    return qrels, run


@pytest.mark.parametrize("case", ["hand", "random-1", "random-2", "random-3"])
def test_score_run_matches_ir_measures(case):
    ir_measures = pytest.importorskip("ir_measures")  # in the eval extra
    from ir_measures import RR, R, nDCG

    qrels, run = graded_case() if case == "hand" else random_graded_case(int(case[-1]))
    scored = {q: {d: float(len(ranked) - i) for i, d in enumerate(ranked)} for q, ranked in run.items()}
    ref = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], qrels, scored)
    ours = score_run(run, qrels)
    assert ours["ndcg@10"] == pytest.approx(ref[nDCG @ 10], abs=1e-9)
    assert ours["recall@100"] == pytest.approx(ref[R @ 100], abs=1e-9)
    assert ours["mrr@10"] == pytest.approx(ref[RR @ 10], abs=1e-9)
    if case == "hand":  # scores strictly between 0 and 1: the comparison is not trivially true
        assert all(0.2 < v < 0.95 for v in ours.values()), ours


# ---------------------------------------------------------------------------------------------
# A tiny BEIR folder

DOCS = [
    ("d1", "Axolotl limbs", "The axolotl salamander regrows severed limbs through blastema cells in Mexican lakes."),
    ("d2", "Tardigrade survival", "Tardigrades survive desiccation by cryptobiosis, suspending their metabolism for decades."),
    ("d3", "Basalt columns", "Columnar basalt forms hexagonal prisms when thick lava flows cool and contract slowly."),
    ("d4", "", "Bioluminescent dinoflagellates glow blue when waves agitate the plankton at night."),
    ("d5", "Cuttlefish camouflage", "Cuttlefish change skin colour with chromatophores to mimic coral and sand."),
    ("d6", "Permafrost methane", "Thawing permafrost releases methane trapped in frozen Arctic peat soils."),
    ("d7", "Mycorrhizal networks", "Mycorrhizal fungi link tree roots and trade phosphorus for sugars underground."),
    ("d8", "Quasar redshift", "Quasars at high redshift reveal supermassive black holes in the early universe."),
]
# Each query shares rare words with its relevant document only; its metadata names a WRONG document and
# carries that document's whole text, so a pipeline that used the metadata would rank the wrong one first.
QUERIES = [
    ("q1", "How do axolotl salamanders regrow severed limbs from blastema?", "d2"),
    ("q2", "Why does columnar basalt form hexagonal prisms as lava cools?", "d5"),
    ("q3", "What makes dinoflagellates bioluminescent plankton glow blue?", "d6"),
    ("q4", "How do mycorrhizal fungi trade phosphorus with tree roots?", "d8"),
    ("q9", "Do quasars reveal supermassive black holes?", "d1"),  # not in qrels: dropped
]
QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d4": 1}, "q4": {"d7": 1}}


def write_beir(folder: Path, docs=DOCS, qrels_splits=("test",)) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for _id, title, text in docs:
            fh.write(json.dumps({"_id": _id, "title": title, "text": text, "metadata": {}}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for _id, text, wrong in QUERIES:
            meta = {"corpus-id": wrong, "evidence": next(f"{t} {x}" for d, t, x in DOCS if d == wrong)}
            fh.write(json.dumps({"_id": _id, "text": text, "metadata": meta}) + "\n")
    for split in qrels_splits:
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, rel in QRELS.items() for d, g in rel.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def beir_folder(tmp_path) -> Path:
    return write_beir(tmp_path / "tinybeir")


@pytest.fixture
def beir_settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose cache folder is in tmp, so the BEIR index goes to tmp/cache/beir/<name>.

    The model itself stays the session's: get_embedder is keyed by (model, cache folder), and a new
    cache folder would extract and load the bundled model a second time."""
    import rag.embed

    real = rag.embed.get_embedder
    monkeypatch.setattr(rag.embed, "get_embedder", lambda name, cache_dir, backend=None: real(name, str(CACHE_DIR), backend))
    return Settings(corpus_dir=tmp_path / "no-corpus", index_dir=tmp_path / "no-index", cache_dir=tmp_path / "cache")


def test_load_beir_keeps_id_and_text_only_and_queries_in_qrels(beir_folder):
    docs, queries, qrels = load_beir(beir_folder)
    assert queries == {q: text for q, text, _ in QUERIES if q in QRELS}  # no metadata, no q9
    assert qrels == QRELS  # the header row is skipped
    assert [d.doc_id for d in docs] == [d for d, _, _ in DOCS]
    d1 = docs[0]
    assert (d1.title, d1.text) == ("Axolotl limbs", f"Axolotl limbs\n\n{DOCS[0][2]}")
    d4 = docs[3]  # no title: the id is the title, the text alone is the body
    assert (d4.title, d4.text) == ("d4", DOCS[3][2])


def test_load_beir_reads_graded_qrels_and_the_requested_split(tmp_path):
    folder = write_beir(tmp_path / "b", qrels_splits=("test", "train"))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n", encoding="utf-8")
    _, queries, qrels = load_beir(folder, "train")
    assert qrels == {"q1": {"d1": 2, "d2": 0}}
    assert list(queries) == ["q1"]


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_load_beir_names_the_missing_file(beir_folder, missing):
    (beir_folder / missing).unlink()
    with pytest.raises(RagError, match=rf"{missing.split('/')[-1]} not found: a BEIR folder holds corpus.jsonl"):
        load_beir(beir_folder)


def manifest_path(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "beir" / "tinybeir" / "manifest.json"


@pytest.mark.slow
def test_run_beir_scores_an_easy_dataset_near_perfectly(beir_settings, beir_folder, tmp_path):
    calls = []
    report = run_beir(beir_settings, beir_folder, progress=lambda s, d, t: calls.append((s, d, t)))
    assert list(report.rows) == ["hybrid", "dense", "lexical", "hybrid-rrf"]
    for name, row in report.rows.items():
        for key in ("ndcg@10", "recall@100", "mrr@10"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
        assert row["queries"] == 4 and row["p50_ms"] > 0
        assert row["recall@100"] == 1.0, name
        assert row["ndcg@10"] >= 0.9 and row["mrr@10"] >= 0.875, (name, row)
        assert (name, 4, 4) in calls
    for name in ("hybrid", "lexical"):  # every query shares rare words with its document only
        assert report.rows[name]["ndcg@10"] == pytest.approx(1.0) and report.rows[name]["mrr@10"] == pytest.approx(1.0)
    assert report.dataset == "BEIR tinybeir (test)"
    assert report.references == {}
    assert report.config["documents"] == 8 and report.config["chunks"] == 8  # one passage per short abstract
    # the index lives under the cache folder, nowhere else
    manifest = json.loads(manifest_path(beir_settings).read_text(encoding="utf-8"))
    assert manifest["beir_source"] == sha256_file(beir_folder / "corpus.jsonl")
    assert manifest["settings"]["chunking"] == {"target_words": BEIR_CHUNKING.target_words,
                                               "max_words": BEIR_CHUNKING.max_words, "min_words": BEIR_CHUNKING.min_words}
    assert report.config["index"] == str(Path(beir_settings.cache_dir) / "beir" / "tinybeir")
    assert not beir_settings.index_dir.exists() and not (beir_folder / "index").exists()


@pytest.mark.slow
def test_run_beir_reuses_the_index_until_corpus_changes(beir_settings, beir_folder):
    run_beir(beir_settings, beir_folder, rows=("lexical",))
    m = manifest_path(beir_settings)
    first = m.stat().st_mtime_ns
    first_manifest = m.read_text(encoding="utf-8")

    calls = []
    report = run_beir(beir_settings, beir_folder, rows=("lexical",), progress=lambda s, d, t: calls.append(s))
    assert m.stat().st_mtime_ns == first and m.read_text(encoding="utf-8") == first_manifest
    assert "load" not in calls and "chunk" not in calls  # nothing was rebuilt
    assert report.rows["lexical"]["ndcg@10"] == pytest.approx(1.0)

    # a new document that q1's words now point to: rebuilt, and the ranking sees it
    extra = ("d9", "Axolotl blastema", "Axolotl salamanders regrow severed limbs from blastema, axolotl axolotl.")
    write_beir(beir_folder, docs=[*DOCS, extra])
    report = run_beir(beir_settings, beir_folder, rows=("lexical",))
    manifest = json.loads(m.read_text(encoding="utf-8"))
    assert manifest["beir_source"] == sha256_file(beir_folder / "corpus.jsonl")
    assert manifest["counts"]["documents"] == 9 and report.config["documents"] == 9
    assert report.rows["lexical"]["mrr@10"] < 1.0  # d9 now outranks d1 for q1


@pytest.mark.slow
def test_run_beir_force_index_rebuilds(beir_settings, beir_folder):
    run_beir(beir_settings, beir_folder, rows=("lexical",))
    m = manifest_path(beir_settings)
    first = m.stat().st_mtime_ns
    run_beir(beir_settings, beir_folder, rows=("lexical",), force_index=True)
    assert m.stat().st_mtime_ns != first


@pytest.mark.slow
def test_run_beir_on_a_train_only_folder_with_split_train(beir_settings, tmp_path):
    """Tuning happens on qrels/train.tsv; a folder with only that split must be usable with split="train"."""
    folder = write_beir(tmp_path / "tinybeir", qrels_splits=("train",))
    report = run_beir(beir_settings, folder, split="train", rows=("lexical",))
    assert report.dataset == "BEIR tinybeir (train)"
    assert report.rows["lexical"]["ndcg@10"] == pytest.approx(1.0)
