"""Continuing the reader on the default corpus's questions (rag.reader_train: ``train --extra-qa --replay``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_squad import SQUAD_DIR, needs_squad

REPO = Path(__file__).parent.parent


@needs_squad
@pytest.mark.slow
def test_continuation_examples_train_on_the_dev_sets_and_replay_squad():
    from rag.evaluate import CURATED_HELDOUT_SHARE, split_of
    from rag.reader_train import continue_examples

    dev = REPO / "eval" / "probes" / "p1-dev.jsonl"
    ex = continue_examples(SQUAD_DIR, REPO / "eval" / "qa.jsonl", REPO / "corpus", [dev], replay=50)
    train_squad = [e for e in ex if not e.heldout and e.doc[:-4] not in {"eu-commission-letter-migration-2023-12"}]
    assert len(train_squad) == 50  # the replay: 50 SQuAD training examples, no more
    probe = [e for e in ex if e.source == "probe"]
    dev_ids = {json.loads(x)["id"] for x in dev.read_text(encoding="utf-8").splitlines() if x.strip()}
    assert probe and all(not e.heldout and e.qid in dev_ids for e in probe)
    assert {e.kind for e in probe} >= {"pos", "neg-retrieved", "impossible"}
    pos = next(e for e in probe if e.kind == "pos")
    assert pos.context[pos.start:pos.end]  # a positive points at its answer in the passage
    # the curated held-out third stays out of training; the test sets are never read
    curated = [e for e in ex if e.source == "curated"]
    assert curated and all(e.heldout == split_of(e.qid, CURATED_HELDOUT_SHARE) for e in curated)
    assert not any(e.qid.startswith(("t", "v")) and e.source == "probe" for e in ex)
    again = continue_examples(SQUAD_DIR, REPO / "eval" / "qa.jsonl", REPO / "corpus", [dev], replay=50)
    assert again == ex  # the seed alone decides the draw


def test_the_card_of_a_continued_reader_gives_every_command(tmp_path):
    from rag.reader import ARTIFACT_DIR
    from rag.reader_train import write_card

    cfg = json.loads((ARTIFACT_DIR / "reader.json").read_text())
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text())
    cont = {"extra_qa": ["eval/probes/p1-dev.jsonl", "eval/probes/p2-dev.jsonl"], "replay": 7000, "epochs": 2.0,
            "lr": 3e-5, "seed": 13}
    card = write_card(tmp_path, metrics, cfg, {"train probe pos": 150}, ["Huguenot"], continued=cont).read_text()
    assert "| continuation examples | count |" in card and "| train probe pos | 150 |" in card
    assert "--seed 13 --bf16" in card and "--seed 14 --bf16" in card  # the two-seed soup it continues
    assert "soup /tmp/reader --of /tmp/reader13 /tmp/reader14" in card
    assert ("train /tmp/reader-doc --base /tmp/reader-soup --extra-qa eval/probes/p1-dev.jsonl "
            "eval/probes/p2-dev.jsonl --replay 7000 --epochs 2 --lr 3e-05 --seed 13 --bf16") in card
    # the soup is calibrated into an artifact folder to start from; the continuation is what ships
    assert "calibrate /tmp/reader --dest /tmp/reader-soup" in card
    assert card.count("calibrate /tmp/reader-doc   #") == 1 and "reader-wise" not in card
    assert "`eval/probes/p3-test.jsonl` and `p5-test.jsonl` are never trained on" in card
    assert "7000 SQuAD training examples" in card


@needs_squad
@pytest.mark.slow
def test_the_continuation_step_runs_end_to_end(tmp_path):
    from rag.reader_train import main, read_examples

    dev = REPO / "eval" / "probes" / "p4-dev.jsonl"
    assert main(["train", str(tmp_path), "--squad", str(SQUAD_DIR), "--qa", str(REPO / "eval" / "qa.jsonl"),
                 "--corpus", str(REPO / "corpus"), "--extra-qa", str(dev), "--replay", "20", "--max-steps", "1"]) == 0
    trained = json.loads((tmp_path / "train.json").read_text())
    assert trained["extra_qa"] == [str(dev)] and trained["replay"] == 20 and trained["max_steps"] == 1
    assert any(e.source == "probe" for e in read_examples(tmp_path / "examples.jsonl"))
    assert (tmp_path / "reader.onnx").stat().st_size > 0
    with pytest.raises(SystemExit):  # --extra-qa alone: how much SQuAD to keep reading is not a default
        main(["train", str(tmp_path / "x"), "--extra-qa", str(dev)])


def test_the_card_of_a_wise_mean_says_so_and_gives_its_soup_step(tmp_path):
    from rag.reader import ARTIFACT_DIR
    from rag.reader_train import write_card

    cfg = json.loads((ARTIFACT_DIR / "reader.json").read_text())
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text())
    cont = {"extra_qa": ["eval/probes/p1-dev.jsonl"], "replay": 7000, "epochs": 2.0, "lr": 3e-5, "seed": 13, "wise": True}
    card = write_card(tmp_path, metrics, cfg, {"train probe pos": 150}, ["Huguenot"], continued=cont).read_text()
    assert "calibrate /tmp/reader --dest /tmp/reader-soup" in card and "--base /tmp/reader-soup " in card
    assert "soup /tmp/reader-wise --of /tmp/reader-doc/base /tmp/reader-doc" in card
    assert "calibrate /tmp/reader-wise" in card and "calibrate /tmp/reader-doc" not in card
    assert "WiSE-FT" in card and "mean of that run's weights and those it started from (the float16 soup)" in card


def test_calibrate_reads_a_wise_soup_as_a_continuation(tmp_path, monkeypatch):
    """``calibrate`` on ``soup --of SOUP CONTINUED``: the card is the continuation's (its examples, its
    train.json), not a soup of seeds."""
    from rag import reader_train as rt

    base, doc, wise = tmp_path / "reader", tmp_path / "reader-doc", tmp_path / "reader-wise"
    for d in (base, doc, wise):
        d.mkdir()
    (base / "soup.json").write_text(json.dumps({"of": ["/tmp/reader13", "/tmp/reader14"]}))
    ex = rt.Example("p001", "How many?", "ctx 50", 4, 6, "probe", "pos", "letter.txt", 0, False)
    rt.write_examples([ex, ex], doc / "examples.jsonl")
    (doc / "train.json").write_text(json.dumps({"replay": 7000, "extra_qa": ["eval/probes/p1-dev.jsonl"],
                                                "epochs": 2.0, "lr": 3e-5, "seed": 13}))
    (wise / "soup.json").write_text(json.dumps({"of": [str(base), str(doc)]}))
    counts, continued, soup_runs = rt._card_inputs(wise)
    assert counts == {"train probe pos": 2} and continued["wise"] and continued["replay"] == 7000 and soup_runs is None
