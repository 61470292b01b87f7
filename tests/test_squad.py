"""SQuAD 2.0, open corpus (``rag eval --squad``): the written corpus and its paragraph spans, question
selection, the metrics and the abstention curve on hand-made outcomes, one question through a fake
assistant, parity with the official scorer (``evaluate-v2.0.py`` in a subprocess) on hand-made
predictions, one-line CLI errors, and a small end-to-end run with the real model (slow)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import one_error_line, run_cli as run, CACHE_DIR, REPO
from rag.errors import RagError
from rag.evaluate import squad_scores
from rag.squad import (
    Paragraph,
    SquadOutcome,
    SquadQuestion,
    SquadReport,
    _write_corpus,
    _write_official_files,
    abstention_curve,
    article_corpus,
    ask_question,
    filter_official_data,
    left_out_titles,
    load_squad,
    official_predictions,
    paragraphs_at,
    run_official_scorer,
    score_outcomes,
    select_questions,
    write_squad_report,
)

#: The shared SQuAD 2.0 tuning split (18 dev articles); tests that need it skip when it is absent.
SQUAD_DIR = Path(os.environ.get("SQUAD2_OPEN_DIR", REPO.parent / "shared" / "datasets" / "squad2-open"))
needs_squad = pytest.mark.skipif(not (SQUAD_DIR / "evaluate-v2.0.py").is_file(), reason=f"no SQuAD 2.0 folder at {SQUAD_DIR}")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# The corpus: one file per article, paragraph spans


PARAS = [
    Paragraph("Normans::000", "Normans", "The Normans were the people who gave their name to Normandy."),
    Paragraph("Normans::001", "Normans", "Rollo agreed to swear\nfealty to King Charles III."),
    Paragraph("Sky_(UK)::000", "Sky_(UK)", "Sky UK is a broadcaster."),
    Paragraph("Oxygen::000", "Oxygen", "Oxygen is O\n2 in air."),
]


def test_article_corpus_writes_one_file_per_article_with_each_paragraphs_span():
    corpus = article_corpus(PARAS, ["Normans", "Sky_(UK)"])
    assert list(corpus.files) == ["Normans.txt", "Sky_(UK).txt"]
    assert corpus.files["Normans.txt"] == (
        "Normans\n\nThe Normans were the people who gave their name to Normandy.\n\n"
        "Rollo agreed to swear fealty to King Charles III.\n")
    assert corpus.files["Sky_(UK).txt"] == "Sky (UK)\n\nSky UK is a broadcaster.\n"  # title underscores as spaces
    assert [s.pid for s in corpus.spans] == ["Normans::000", "Normans::001", "Sky_(UK)::000"]
    by_pid = {p.pid: p for p in PARAS}
    for s in corpus.spans:
        # line breaks inside a paragraph become spaces: same length, so the span is the paragraph
        assert corpus.files[s.doc][s.start:s.end] == by_pid[s.pid].text.replace("\n", " ")


def test_paragraphs_at_maps_a_passage_to_the_paragraphs_its_span_overlaps():
    corpus = article_corpus(PARAS, ["Normans"])
    first, second = corpus.spans
    assert paragraphs_at(corpus.spans, "Normans.txt", first.start, first.start + 5) == ["Normans::000"]
    assert paragraphs_at(corpus.spans, "Normans.txt", first.end - 3, second.start + 3) == ["Normans::000", "Normans::001"]
    assert paragraphs_at(corpus.spans, "Normans.txt", 0, first.start) == []  # the title line only
    assert paragraphs_at(corpus.spans, "Normans.txt", first.end, second.start) == []  # the blank line between
    assert paragraphs_at(corpus.spans, "Other.txt", first.start, first.end) == []


def test_left_out_titles_are_the_last_in_sorted_order():
    titles = ["Oxygen", "Normans", "Sky_(UK)", "Amazon", "Normans"]
    assert left_out_titles(titles, 2) == ["Oxygen", "Sky_(UK)"]
    assert left_out_titles(titles, 1) == ["Sky_(UK)"]
    assert left_out_titles(titles, 0) == []


def test_write_corpus_leaves_unchanged_files_alone_and_removes_stale_ones(tmp_path):
    folder = tmp_path / "corpus"
    _write_corpus(folder, article_corpus(PARAS, ["Normans", "Oxygen"]))
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(before) == {"Normans.txt", "Oxygen.txt"}
    os.utime(folder / "Normans.txt", ns=(1, 1))  # an old time: a rewrite would change it
    _write_corpus(folder, article_corpus(PARAS, ["Normans", "Sky_(UK)"]))
    assert sorted(p.name for p in folder.iterdir()) == ["Normans.txt", "Sky_(UK).txt"]
    assert (folder / "Normans.txt").stat().st_mtime_ns == 1  # same bytes: not rewritten, the index stays fresh


def q(qid, title, impossible=False, answers=("x",)) -> SquadQuestion:
    return SquadQuestion(qid, f"question {qid}?", f"{title}::000", title, impossible, () if impossible else answers)


def test_select_questions_by_kind_in_file_order_and_limited_per_kind():
    qs = [q("a1", "Normans"), q("u1", "Normans", True), q("o1", "Sky"), q("a2", "Oxygen"), q("ou", "Sky", True),
          q("u2", "Oxygen", True), q("a3", "Normans"), q("o2", "Sky")]
    got = select_questions(qs, ["Sky"])
    assert {k: [x.qid for x in v] for k, v in got.items()} == {
        "answerable": ["a1", "a2", "a3"], "unanswerable": ["u1", "u2"],
        "out-of-corpus": ["o1", "o2"]}  # a left-out article's unanswerable question is not asked
    got = select_questions(qs, ["Sky"], limit=1)
    assert {k: [x.qid for x in v] for k, v in got.items()} == {"answerable": ["a1"], "unanswerable": ["u1"],
                                                               "out-of-corpus": ["o1"]}


# ---------------------------------------------------------------------------------------------
# Metrics on hand-made outcomes


def outcome(qid, kind, rank=None, abstained=False, pred="", answers=(), contained=None, short=None, ok=None,
            answerable=None, support=0.7, ms=10.0) -> SquadOutcome:
    em, f1 = squad_scores(pred, answers) if kind != "out-of-corpus" else (None, None)
    return SquadOutcome(qid, kind, f"{qid}?", "T", "T::000", tuple(answers), rank, abstained,
                        "" if abstained else f"{pred} [1]", short, ok, pred, em, f1, contained, answerable, support, ms)


def hand_outcomes() -> list[SquadOutcome]:
    # supports agree with abstaining below 0.6 (the default threshold), as the extractive stage does
    return [
        outcome("a1", "answerable", 1, pred="France", answers=["France"], contained=True, support=0.9, ms=10),
        # EM 0; F1: 2 common tokens of 4 predicted and 2 gold -> precision 1/2, recall 1 -> 2/3
        outcome("a2", "answerable", 3, pred="in northern France region", answers=["northern France"], contained=True,
                support=0.7, ms=20),
        outcome("a3", "answerable", None, abstained=True, answers=["Rollo"], contained=False, support=0.5, ms=30),
        outcome("a4", "answerable", 7, pred="Denmark", answers=["Denmark", "Iceland"], contained=True, short="Denmark",
                ok=True, support=0.8, ms=40),
        outcome("u1", "unanswerable", abstained=True, support=0.55, ms=50),  # "" is right: EM 1, F1 1
        outcome("u2", "unanswerable", pred="Paris", short="Paris", ok=False, support=0.65, ms=60),
        outcome("o1", "out-of-corpus", abstained=True, answers=["x"], support=0.3, ms=70),
        outcome("o2", "out-of-corpus", pred="y", answers=["x"], support=0.62, ms=80),
        outcome("o3", "out-of-corpus", abstained=True, answers=["x"], support=0.4, ms=90),
    ]


def test_score_outcomes_hand_computed():
    m = score_outcomes(hand_outcomes())
    expected = {
        "answerable": 4, "unanswerable": 2, "out_of_corpus": 3,
        "recall@1": 1 / 4, "recall@5": 2 / 4, "recall@10": 3 / 4, "mrr@10": (1 + 1 / 3 + 1 / 7) / 4,
        "answer_contains_gold": 3 / 4,
        "em": (1 + 0 + 0 + 1 + 1 + 0) / 6, "f1": (1 + 2 / 3 + 0 + 1 + 1 + 0) / 6,  # answerable and unanswerable
        "has_ans_em": 2 / 4, "has_ans_f1": (1 + 2 / 3 + 0 + 1) / 4,
        "no_ans_em": 1 / 2, "no_ans_f1": 1 / 2,
        "abstention_unanswerable": 1 / 2, "false_abstention": 1 / 4, "abstention_out_of_corpus": 2 / 3,
        "short_answer_rate": 2 / 5,  # of the five answers given (a1, a2, a4, u2, o2)
        "short_offsets_ok": 1 / 2,
        "p50_ms": 50.0, "p95_ms": 86.0,  # index 7.6 between 80 and 90
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_score_outcomes_of_no_questions_of_a_kind_is_none():
    m = score_outcomes([o for o in hand_outcomes() if o.kind == "unanswerable"])
    assert m["recall@1"] is None and m["has_ans_em"] is None and m["false_abstention"] is None
    assert m["abstention_out_of_corpus"] is None
    assert m["no_ans_em"] == 0.5 and m["em"] == 0.5


def test_abstention_curve_hand_computed():
    outs = hand_outcomes()
    c = abstention_curve(outs, operating=0.6)
    assert c["score"] == "support"
    assert c["thresholds"] == sorted(c["thresholds"])
    # the lowest score: nothing is below it; above the highest: everything abstains
    i0, last = 0, len(c["thresholds"]) - 1
    assert c["thresholds"][i0] == 0.3
    assert (c["abstention_unanswerable"][i0], c["abstention_out_of_corpus"][i0], c["false_abstention"][i0]) == (0, 0, 0)
    assert c["thresholds"][last] > 0.9
    assert (c["abstention_unanswerable"][last], c["abstention_out_of_corpus"][last], c["false_abstention"][last]) == (1, 1, 1)
    # at the configured threshold the curve is what the run did (support < 0.6 abstained)
    i = c["thresholds"].index(0.6)
    m = score_outcomes(outs)
    assert c["abstention_unanswerable"][i] == m["abstention_unanswerable"] == 1 / 2
    assert c["abstention_out_of_corpus"][i] == pytest.approx(m["abstention_out_of_corpus"])
    assert c["false_abstention"][i] == m["false_abstention"] == 1 / 4
    # at t = 0.7: answerable 0.5 below (1/4), unanswerable 0.55 and 0.65 (2/2), out of corpus all three
    j = c["thresholds"].index(0.7)
    assert (c["abstention_unanswerable"][j], c["abstention_out_of_corpus"][j], c["false_abstention"][j]) == (1.0, 1.0, 0.25)
    # no false abstention allowed at 1, 5 or 10 % with four answerable questions: t <= 0.5
    for level in ("0.01", "0.05", "0.1"):
        assert c["at_false_abstention"][level] == {"threshold": 0.5, "abstention_unanswerable": 0.0,
                                                   "abstention_out_of_corpus": 2 / 3, "false_abstention": 0.0}
    # answerable 0.5 0.7 0.8 0.9 against unanswerable 0.55 0.65: 6 of 8 pairs ordered; against 0.3 0.4 0.62: 11 of 12
    assert c["auc_unanswerable"] == pytest.approx(6 / 8)
    assert c["auc_out_of_corpus"] == pytest.approx(11 / 12)


def test_abstention_curve_uses_answerable_when_the_answer_stage_gives_it_and_is_thinned():
    outs = hand_outcomes()
    probs = [replace(o, answerable=1 - o.support) for o in outs]  # the reverse order, on purpose
    c = abstention_curve(probs)
    assert c["score"] == "answerable"
    assert c["auc_unanswerable"] == pytest.approx(1 - 6 / 8)
    mixed = abstention_curve(probs[:1] + outs[1:])
    assert mixed["score"] == "mixed"
    thin = abstention_curve(outs, points=4)
    assert len(thin["thresholds"]) == 4 and thin["thresholds"][0] == 0.3 and thin["thresholds"][-1] > 0.9
    assert abstention_curve([])["thresholds"] == []


def test_auc_counts_ties_as_half():
    outs = [outcome("a", "answerable", support=0.7), outcome("u", "unanswerable", support=0.7)]
    assert abstention_curve(outs)["auc_unanswerable"] == 0.5


def test_na_prob_is_one_minus_answerable_else_one_minus_clipped_support():
    base = hand_outcomes()[0]
    assert replace(base, answerable=0.25).na_prob == 0.75
    assert replace(base, support=1.4).na_prob == 0.0  # support is not a probability: clipped
    assert replace(base, support=-0.2).na_prob == 1.0
    assert replace(base, support=0.9).na_prob == pytest.approx(0.1)


def test_official_predictions_leave_out_of_corpus_questions_out():
    preds, na = official_predictions(hand_outcomes())
    assert preds == {"a1": "France", "a2": "in northern France region", "a3": "", "a4": "Denmark", "u1": "", "u2": "Paris"}
    assert set(na) == set(preds) and all(0.0 <= v <= 1.0 for v in na.values())


# ---------------------------------------------------------------------------------------------
# One question through a fake assistant


class FakeAssistant:
    """Answers every question with ``answer``; searching returns ``hits`` (chunks as doc/start/end)."""

    def __init__(self, answer, hits, docs):
        self.answer, self.hits = answer, hits
        self.data = SimpleNamespace(docs=docs)
        self.searched = []

    def ask(self, question):
        return self.answer

    def search(self, question, k=None):
        self.searched.append(k)
        return self.hits[:k]


def hit(doc, start, end):
    return SimpleNamespace(chunk=SimpleNamespace(doc_id=doc, start=start, end=end))


def test_ask_question_ranks_the_gold_paragraph_by_span_and_scores_the_prediction():
    corpus = article_corpus(PARAS, ["Normans"])
    first, second = corpus.spans
    text = corpus.files["Normans.txt"]
    docs = {"Normans.txt": SimpleNamespace(text=text)}
    s = text.index("King Charles III")
    short = SimpleNamespace(text="King Charles III", doc="Normans.txt", start=s, end=s + 16, score=0.9)
    answer = SimpleNamespace(answer="Rollo agreed to swear fealty to King Charles III. [1]", abstained=False,
                             support=0.8, short_answer=short, answerable=0.7)
    fake = FakeAssistant(answer, [hit("Normans.txt", first.start, first.end), hit("Normans.txt", second.start, second.end)],
                         docs)
    gold = SquadQuestion("q1", "To whom did Rollo swear fealty?", "Normans::001", "Normans", False, ("King Charles III",))
    o = ask_question(fake, gold, "answerable", corpus.spans)
    assert fake.searched == [10]
    assert (o.rank, o.abstained, o.short, o.short_offsets_ok, o.prediction) == (2, False, "King Charles III", True, "King Charles III")
    assert (o.em, o.f1, o.contained, o.answerable, o.support, o.score) == (1, 1.0, True, 0.7, 0.8, 0.7)
    assert o.na_prob == pytest.approx(0.3) and o.ms >= 0

    # an answer from before short answers existed: the sentence is the prediction, support the score
    old = SimpleNamespace(answer="Rollo agreed to swear fealty to King Charles III. [1]", abstained=False, support=0.8)
    o = ask_question(FakeAssistant(old, [hit("Normans.txt", first.start, first.end)], docs), gold, "answerable", corpus.spans)
    assert o.rank is None and o.short is None and o.short_offsets_ok is None and o.answerable is None
    assert o.prediction == "Rollo agreed to swear fealty to King Charles III."
    assert (o.em, o.contained, o.score) == (0, True, 0.8)
    assert o.f1 == pytest.approx(2 * (3 / 9) * 1 / (3 / 9 + 1))  # 3 gold tokens in 9 predicted

    # unanswerable and out-of-corpus questions are not searched; abstaining predicts ""
    quiet = SimpleNamespace(answer="", abstained=True, support=0.2)
    fake = FakeAssistant(quiet, [], docs)
    o = ask_question(fake, SquadQuestion("u", "?", "", "Normans", True, ()), "unanswerable", corpus.spans)
    assert fake.searched == [] and (o.prediction, o.em, o.f1, o.contained) == ("", 1, 1.0, None)
    o = ask_question(fake, gold, "out-of-corpus", corpus.spans)
    assert (o.em, o.f1, o.abstained) == (None, None, True)


# ---------------------------------------------------------------------------------------------
# The official scorer agrees with our numbers


def parity_outcomes() -> list[SquadOutcome]:
    """Hand-made predictions for the first 15 answerable and 15 unanswerable questions of the split: right,
    right up to articles and punctuation, too long, abstained, wrong; "" , a guess, and "the" (nothing once
    normalised, so it counts as no answer). Plus two out-of-corpus questions, which the files leave out."""
    qs = read_jsonl(SQUAD_DIR / "questions.jsonl")
    ans = [x for x in qs if not x["is_impossible"]][:15]
    una = [x for x in qs if x["is_impossible"]][:15]
    out = []
    for i, x in enumerate(ans):
        gold = x["answers"][0]
        pred = [gold, f"The {gold}.", f"{gold} and several more words here", "", "completely wrong"][i % 5]
        out.append(outcome(x["qid"], "answerable", 1, abstained=not pred, pred=pred, answers=x["answers"], support=0.3 + i / 50))
    for i, x in enumerate(una):
        pred = ["", "something plausible", "the"][i % 3]
        out.append(outcome(x["qid"], "unanswerable", abstained=not pred, pred=pred, support=0.2 + i / 40))
    other = [x for x in qs if not x["is_impossible"]][-2:]
    out += [outcome(x["qid"], "out-of-corpus", pred="guess", answers=x["answers"]) for x in other]
    return out


@needs_squad
def test_official_scorer_gives_our_numbers_on_the_same_prediction_file(spawn, tmp_path):
    outs = parity_outcomes()
    paths = _write_official_files(SQUAD_DIR, outs, tmp_path, "squad")
    data = json.loads(paths["data"].read_text(encoding="utf-8"))
    asked = {qa["id"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert asked == {o.qid for o in outs if o.kind != "out-of-corpus"} and len(asked) == 30
    official = run_official_scorer(SQUAD_DIR / "evaluate-v2.0.py", paths["data"], paths["pred"], paths["na_prob"])
    ours = score_outcomes(outs)
    assert official["total"] == 30 and official["HasAns_total"] == 15 and official["NoAns_total"] == 15
    for theirs, mine in (("exact", "em"), ("f1", "f1"), ("HasAns_exact", "has_ans_em"), ("HasAns_f1", "has_ans_f1"),
                         ("NoAns_exact", "no_ans_em"), ("NoAns_f1", "no_ans_f1")):
        assert official[theirs] == pytest.approx(100 * ours[mine], abs=1e-9), theirs
    # not a trivial case: partly right, F1 above EM on answerable, and "the" counted as no answer
    assert 0 < ours["has_ans_em"] < ours["has_ans_f1"] < 1
    assert ours["no_ans_em"] == pytest.approx(10 / 15)  # "" five times and "the" five times


@needs_squad
def test_filter_official_data_keeps_only_the_asked_questions_in_their_articles():
    data = json.loads((SQUAD_DIR / "dev-tune-v2.0.json").read_text(encoding="utf-8"))
    first = data["data"][0]["paragraphs"][0]["qas"][0]["id"]
    last = data["data"][-1]["paragraphs"][-1]["qas"][-1]["id"]
    small = filter_official_data(data, [first, last, "no-such-id"])
    assert small["version"] == data["version"]
    assert [a["title"] for a in small["data"]] == [data["data"][0]["title"], data["data"][-1]["title"]]
    assert [qa["id"] for a in small["data"] for p in a["paragraphs"] for qa in p["qas"]] == [first, last]
    assert small["data"][0]["paragraphs"][0]["context"] == data["data"][0]["paragraphs"][0]["context"]


@needs_squad
def test_write_squad_report_writes_json_markdown_plot_and_official_files(tmp_path):
    outs = parity_outcomes()
    report = SquadReport("SQuAD 2.0 open corpus test", "model", "now",
                         {"source": str(SQUAD_DIR), "articles_indexed": 2, "paragraphs_indexed": 3, "index_status": "built",
                          "left_out": ["X"]},
                         score_outcomes(outs), abstention_curve(outs, operating=0.6), None, outs)
    paths = write_squad_report(report, tmp_path / "r")
    assert {"json", "md", "pred", "na_prob", "data"} <= set(paths)
    assert paths["pred"].name == "squad-pred.json" and paths["na_prob"].name == "squad-na-prob.json"
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["metrics"] == report.metrics and len(data["questions"]) == len(outs)
    assert json.loads(paths["pred"].read_text(encoding="utf-8")) == official_predictions(outs)[0]
    md = paths["md"].read_text(encoding="utf-8")
    failed = sum(o.failed for o in outs if o.kind == "answerable")
    assert f"## answerable: {failed} of 15 failed" in md
    assert "| short answer EM | " + f"{report.metrics['em']:.3f} | 30 |" in md
    if "abstention_png" in paths:  # matplotlib (eval extra)
        assert paths["abstention_png"].read_bytes().startswith(PNG_MAGIC)


# ---------------------------------------------------------------------------------------------
# The command line




def write_mini_squad(folder: Path, titles=("Amazon_rainforest", "Intergovernmental_Panel_on_Climate_Change",
                                           "Sky_(United_Kingdom)")) -> Path:
    """A copy of the split restricted to a few small articles (corpus, questions, official data, scorer)."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = set(titles)
    for name in ("corpus.jsonl", "questions.jsonl"):
        lines = [x for x in (SQUAD_DIR / name).read_text(encoding="utf-8").splitlines() if x.strip() and json.loads(x)["title"] in keep]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = json.loads((SQUAD_DIR / "dev-tune-v2.0.json").read_text(encoding="utf-8"))
    data["data"] = [a for a in data["data"] if a["title"] in keep]
    (folder / "dev-tune-v2.0.json").write_text(json.dumps(data), encoding="utf-8")
    shutil.copy(SQUAD_DIR / "evaluate-v2.0.py", folder)
    return folder


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """SQuAD indexes go under the cache folder: a tmp one, while the model stays the session's."""
    import rag.embed

    real = rag.embed.get_embedder
    monkeypatch.setattr(rag.embed, "get_embedder", lambda name, cache_dir, backend=None: real(name, str(CACHE_DIR), backend))
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache))
    return cache


@needs_squad
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--leave-out", "3"], "--leave-out must be between 0 and 2"),
        (["--leave-out", "-1"], "--leave-out must be between 0 and 2"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--beir", "x"], "give --squad or --beir"),
    ],
)
def test_eval_squad_bad_arguments_are_one_line_errors(tmp_path, tmp_cache, capsys, extra, message):
    folder = write_mini_squad(tmp_path / "mini")
    code, out, err = run(["eval", "--squad", str(folder), "--out", str(tmp_path / "r"), "--no-progress", *extra], capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)
    assert not (tmp_cache / "squad").exists() or not any((tmp_cache / "squad").rglob("manifest.json"))


def test_eval_squad_folder_without_questions_is_one_line_error(tmp_path, capsys):
    (tmp_path / "sq").mkdir()
    (tmp_path / "sq" / "corpus.jsonl").write_text('{"pid": "A::000", "title": "A", "text": "x"}\n', encoding="utf-8")
    code, _, err = run(["eval", "--squad", str(tmp_path / "sq"), "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 2 and "questions.jsonl not found" in one_error_line(err)
    (tmp_path / "sq" / "questions.jsonl").write_text('{"qid": "1"}\n', encoding="utf-8")
    with pytest.raises(RagError, match="needs pid, title, text"):
        load_squad(tmp_path / "sq")


@needs_squad
@pytest.mark.slow
def test_eval_squad_end_to_end_on_three_articles(tmp_path, tmp_cache, capsys):
    folder = write_mini_squad(tmp_path / "mini")
    out_dir = tmp_path / "r"
    argv = ["eval", "--squad", str(folder), "--leave-out", "1", "--limit", "4", "--json", "--out", str(out_dir), "--no-progress"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert "questions" not in d  # the per-question list is in squad.json only
    c, m = d["config"], d["metrics"]
    assert c["left_out"] == ["Sky_(United_Kingdom)"] and c["articles_indexed"] == 2 and c["index_status"] == "built"
    assert c["paragraphs_indexed"] == 21 + 24
    assert (m["answerable"], m["unanswerable"], m["out_of_corpus"]) == (4, 4, 4)
    assert (tmp_cache / "squad" / "mini-without-1" / "index" / "manifest.json").is_file()

    # the questions asked: the first four of each kind, in file order
    qs = read_jsonl(folder / "questions.jsonl")
    inside = [x for x in qs if x["title"] != "Sky_(United_Kingdom)"]
    want = ([x["qid"] for x in inside if not x["is_impossible"]][:4] + [x["qid"] for x in inside if x["is_impossible"]][:4]
            + [x["qid"] for x in qs if x["title"] == "Sky_(United_Kingdom)" and not x["is_impossible"]][:4])
    full = json.loads((out_dir / "squad.json").read_text(encoding="utf-8"))
    assert [x["qid"] for x in full["questions"]] == want
    assert full["metrics"] == m

    # our numbers are the official scorer's on the files we wrote
    preds = json.loads((out_dir / "squad-pred.json").read_text(encoding="utf-8"))
    assert list(preds) == want[:8]
    na = json.loads((out_dir / "squad-na-prob.json").read_text(encoding="utf-8"))
    assert set(na) == set(preds) and all(0.0 <= v <= 1.0 for v in na.values())
    official = run_official_scorer(folder / "evaluate-v2.0.py", out_dir / "squad-data.json", out_dir / "squad-pred.json",
                                   out_dir / "squad-na-prob.json")
    assert d["official"] == official
    for theirs, mine in (("exact", "em"), ("f1", "f1"), ("HasAns_exact", "has_ans_em"), ("NoAns_exact", "no_ans_em")):
        assert official[theirs] == pytest.approx(100 * m[mine], abs=1e-9), theirs

    # per-question records agree with the summary, and retrieval works on this small corpus
    rows = full["questions"]
    ans = [x for x in rows if x["kind"] == "answerable"]
    assert m["recall@5"] == sum(x["rank"] is not None and x["rank"] <= 5 for x in ans) / 4
    assert m["recall@1"] <= m["recall@5"] <= m["recall@10"] and m["recall@10"] >= 0.75
    assert m["abstention_out_of_corpus"] == sum(x["abstained"] for x in rows if x["kind"] == "out-of-corpus") / 4
    assert m["answer_contains_gold"] >= 0.5
    assert all(x["rank"] is None for x in rows if x["kind"] != "answerable")
    assert m["p50_ms"] > 0
    curve = d["curve"]
    assert len(curve["thresholds"]) == len(curve["false_abstention"]) == len(curve["abstention_unanswerable"])
    assert (out_dir / "squad.md").is_file()
    if (out_dir / "squad-abstention.png").exists():
        assert (out_dir / "squad-abstention.png").read_bytes().startswith(PNG_MAGIC)

    # a second run reuses the index and prints the table
    code, out, err = run([a for a in argv if a != "--json"], capsys)
    assert code == 0, err
    assert "index up-to-date" in out and "left out: Sky_(United_Kingdom)" in out
    for label in ("retrieval R@1 (gold paragraph)", "short answer EM", "abstention, out of corpus", "ask p95 ms",
                  "official scorer: exact"):
        assert label in out, label

    # --articles: only these articles' questions are asked (the index is the same)
    code, out, err = run(argv[:-4] + ["--articles", "Amazon_rainforest", "--json", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    one = json.loads(out.splitlines()[0])
    assert one["config"]["articles_asked"] == ["Amazon_rainforest"] and one["config"]["index_status"] == "up-to-date"
    asked = json.loads((out_dir / "squad.json").read_text(encoding="utf-8"))["questions"]
    assert asked and {x["qid"] for x in asked} <= {x["qid"] for x in qs if x["title"] == "Amazon_rainforest"}
    code, _, err = run(argv[:-4] + ["--articles", "Atlantis", "--no-progress"], capsys)
    assert code == 2 and "no such article(s)" in one_error_line(err)
