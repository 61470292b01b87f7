"""Cloze questions for pre-training the reader (rag.reader_cloze, rag.reader_train.pretrain_examples)."""

from __future__ import annotations

import random

import pytest

from rag.reader_cloze import answer_candidates, cloze_examples, cloze_question

from test_squad import SQUAD_DIR, needs_squad

SENT = ("On 16 July 2023 the EU and Tunisia signed a memorandum, and the Commission paid EUR 105 million "
        "to 12 partners, 45% of them run by Prime Minister Orpo in 2019.")


def test_candidates_are_typed_and_do_not_overlap():
    found = {SENT[s:e]: kind for kind, s, e in answer_candidates(SENT)}
    assert found["16 July 2023"] == "date" and "2023" not in found  # the date wins over its year
    assert found["EUR 105 million"] == "money" and "105 million" not in found
    assert found["45%"] == "percent" and found["12"] == "number" and found["2019"] == "year"
    assert found["Prime Minister Orpo"] == "name" and found["Commission"] == "name"
    assert found["EU and Tunisia"] == "name"  # names joined by "and", "of", "the" are one (as the shipped run made them)
    assert "On" not in found  # a sentence's first word is not a name
    spans = sorted((s, e) for _, s, e in answer_candidates(SENT))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("seed", range(20))
def test_a_cloze_question_asks_for_the_answer_without_giving_it(seed):
    s = SENT.index("EUR 105 million")
    q = cloze_question(SENT, s, s + len("EUR 105 million"), "money", random.Random(seed))
    assert q is not None and q.endswith("?") and q[0].isupper()
    assert "105" not in q and any(w in q.lower() for w in ("how much", "what amount"))
    assert len(q.split()) <= 20  # a window around the answer, not the sentence


def test_cloze_examples_keep_exact_offsets_and_true_negatives():
    prefix = "Letter › Tunisia | "
    text = prefix + SENT + " The memorandum covers migration, trade and energy across the Mediterranean region."
    other = "Annex | Morocco received boats and training for coast guards in the western Mediterranean."
    rng = random.Random(0)
    out = [x for _ in range(30) for x in cloze_examples(text, [other], rng, per_passage=8, negative_share=1.0,
                                                         begin=len(prefix))]
    pos = [(ctx, c) for ctx, c in out if c.start >= 0]
    negs = [(ctx, c) for ctx, c in out if c.start < 0]
    assert pos and {c.kind for _, c in negs} == {"cloze-cut", "cloze-other"}
    for ctx, c in pos:
        assert ctx == text and c.start >= len(prefix)  # never an answer in the section path
        assert ctx[c.start:c.end].lower() not in c.question.lower()
    for ctx, c in negs:  # the question's answer is nowhere in a negative's context
        src = next(t for t, p in pos if p.question == c.question)
        answers = {text[p.start:p.end] for t, p in pos if p.question == c.question}
        assert src == text and all(a.lower() not in ctx.lower() for a in answers)
        if c.kind == "cloze-cut":
            assert ctx.startswith(prefix) and len(ctx) < len(text)


@needs_squad
def test_pretraining_text_never_comes_from_a_held_out_article(tmp_path):
    from pathlib import Path

    from rag.reader_train import heldout_titles, pretrain_examples
    from rag.squad import load_squad

    held = heldout_titles(p.title for p in load_squad(SQUAD_DIR)[0])
    ex = pretrain_examples(SQUAD_DIR, Path(__file__).parent.parent / "corpus", None, total=10**6)  # all of it
    docs = {e.doc for e in ex}
    assert len(ex) > 3000 and not any(d[:-4] in held for d in docs)
    assert any(d.startswith("eu-") for d in docs) and sum(e.start < 0 for e in ex) > 300
    assert all(e.context[e.start:e.end].strip() for e in ex if e.start >= 0) and not any(e.heldout for e in ex)


def test_the_model_card_names_the_pretraining_data_and_command(tmp_path):
    import json

    from rag.reader import ARTIFACT_DIR
    from rag.reader_train import Example, cloze_counts, write_card

    cfg = json.loads((ARTIFACT_DIR / "reader.json").read_text())
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text())
    ex = [Example("c1", "Q?", "ctx", 0, 1, "cloze", "cloze", "scifact/1", 0, False),
          Example("c2", "Q?", "ctx", -1, -1, "cloze", "cloze-cut", "Normans.txt", 0, False),
          Example("c3", "Q?", "ctx", 0, 1, "cloze", "cloze", "eu-letter.txt", 0, False)]
    counts = cloze_counts(ex, {"Normans"})
    assert counts == {"SQuAD tuning cloze-cut": 1, "SciFact cloze": 1, "default corpus cloze": 1}
    card = write_card(tmp_path, metrics, cfg, {"train squad pos": 1}, ["Huguenot"], pretrain_counts=counts).read_text()
    assert "ODC-By 1.0" in card and "| SciFact cloze | 1 |" in card
    assert "rag.reader_train pretrain /tmp/pre" in card and "--base /tmp/pre/model" in card
    plain = write_card(tmp_path, metrics, cfg, {"train squad pos": 1}, ["Huguenot"]).read_text()
    assert "ODC-By" not in plain and "pretrain /tmp/pre" not in plain and "Pre-training" not in plain


@pytest.mark.slow
@needs_squad
def test_the_pretrain_step_runs_end_to_end(tmp_path, capsys):
    from pathlib import Path

    from rag.reader_train import main, read_examples

    repo = Path(__file__).parent.parent
    assert main(["pretrain", str(tmp_path), "--squad", str(SQUAD_DIR), "--corpus", str(repo / "corpus"),
                 "--cloze", "40", "--max-steps", "1"]) == 0
    ex = read_examples(tmp_path / "examples.jsonl")
    assert 40 <= len(ex) < 60 and {e.source for e in ex} == {"cloze"}
    assert (tmp_path / "model" / "model.safetensors").is_file() and not (tmp_path / "reader.onnx").exists()
    assert f"--base {tmp_path / 'model'}" in capsys.readouterr().out
