"""The reader (rag.reader): the shipped artifact, its checks, abstention and short answers on the real
corpus, and the training code (a tiny run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag.reader import ARTIFACT_DIR, Reader, ReaderConfig, ReaderUnavailable, sha256_file

from conftest import CACHE_DIR, FINLAND_Q, REAL_DOC_ID

GOOD = {"max_len": 192, "max_answer_tokens": 30, "calib_a": 1.0, "calib_b": 0.0,
        "thresholds": {"lenient": 0.1, "balanced": 0.2, "strict": 0.3}, "short_min_conf": 0.2, "sha256": {}}


def test_config_validates_and_calibrates():
    cfg = ReaderConfig.from_json(GOOD)
    assert cfg.answerable(0.0) == pytest.approx(0.5)
    assert cfg.answerable(5.0) > cfg.answerable(1.0) > cfg.answerable(-3.0)
    assert 0.0 <= cfg.answerable(-1e9) < 1e-20 and cfg.answerable(1e9) == pytest.approx(1.0)
    for bad in ({**GOOD, "thresholds": 5}, {**GOOD, "calib_a": "x"}, {k: v for k, v in GOOD.items() if k != "max_len"}, []):
        with pytest.raises(ReaderUnavailable, match="reader.json is damaged"):
            ReaderConfig.from_json(bad)


def test_shipped_artifact_matches_its_recorded_sha256():
    cfg = ReaderConfig.from_json(json.loads((ARTIFACT_DIR / "reader.json").read_text()))
    for name in ("reader.onnx", "tokenizer.json"):
        assert sha256_file(ARTIFACT_DIR / name) == cfg.sha256[name]
    assert (ARTIFACT_DIR / "reader.onnx").stat().st_size < 50_000_000
    assert set(cfg.thresholds) == {"lenient", "balanced", "strict"}
    assert cfg.thresholds["lenient"] <= cfg.thresholds["balanced"] <= cfg.thresholds["strict"]
    card = (ARTIFACT_DIR / "MODEL_CARD.md").read_text()
    for fact in ("CC BY-SA 4.0", "all-MiniLM-L6-v2", "python -m rag.reader_train", cfg.sha256["reader.onnx"]):
        assert fact in card


@pytest.fixture
def artifact_copy(tmp_path) -> Path:
    dst = tmp_path / "reader"
    shutil.copytree(ARTIFACT_DIR, dst)
    return dst


@pytest.mark.parametrize("name", ["reader.onnx", "tokenizer.json", "reader.json"])
def test_missing_file_is_one_clear_error(artifact_copy, tmp_path, name):
    (artifact_copy / name).unlink()
    with pytest.raises(ReaderUnavailable, match=rf"reader file missing: .*{name}; restore it with `git checkout -- .*reader`, or rebuild it with python -m rag.reader_train .*RAG_VERIFIER=off"):
        Reader.load(tmp_path / "cache", artifact_copy)


def test_corrupt_files_are_refused_before_running(artifact_copy, tmp_path):
    tok = artifact_copy / "tokenizer.json"
    tok.write_text(tok.read_text().replace("[CLS]", "[CLX]", 1))
    with pytest.raises(ReaderUnavailable, match="corrupt .*tokenizer.json"):
        Reader.load(tmp_path / "cache", artifact_copy)
    shutil.copy2(ARTIFACT_DIR / "tokenizer.json", tok)
    model = artifact_copy / "reader.onnx"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the weights
    model.write_bytes(bytes(raw))
    with pytest.raises(ReaderUnavailable, match="corrupt .*reader.onnx"):
        Reader.load(tmp_path / "cache", artifact_copy)
    (artifact_copy / "reader.json").write_text("{not json")
    with pytest.raises(ReaderUnavailable, match="not valid JSON"):
        Reader.load(tmp_path / "cache", artifact_copy)


@pytest.mark.slow
def test_a_tampered_expanded_model_in_the_cache_is_rebuilt(tmp_path):
    r = Reader.load(tmp_path / "cache", ARTIFACT_DIR)
    cached = next((tmp_path / "cache" / "reader").rglob("reader.onnx"))
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    r2 = Reader.load(tmp_path / "cache", ARTIFACT_DIR)
    assert sha256_file(cached) == r2.cfg.sha256["reader.fp32.onnx"]
    ctx = "Letter | Frontex: 50 European border guards are now deployed at our EU external border in Finland."
    a, b = r.read(FINLAND_Q, [(ctx, 9, 0)]), r2.read(FINLAND_Q, [(ctx, 9, 0)])
    assert a.answerable == pytest.approx(b.answerable, abs=1e-5)


@pytest.mark.slow
def test_reader_reads_the_span_and_batches_like_single_reads():
    r = Reader.load(CACHE_DIR)
    ctx = "Letter | Frontex has already expanded its Joint Operation: 50 European border guards are now deployed in Finland."
    other = "Annex › Egypt | The EU will deliver seven boats to the Egyptian coast guard in 2024."
    one = r.read(FINLAND_Q, [(ctx, 9, 100)])
    both = r.read(FINLAND_Q, [(ctx, 9, 100), (other, other.index("|") + 2, 5000)], early_exit=False)
    assert one.best is not None and ctx[one.best.start - 100 + 9:one.best.end - 100 + 9] == "50"
    assert both.best.rank == 0 and both.passages[0].margin == pytest.approx(one.passages[0].margin, abs=1e-3)
    assert both.passages[1].margin < both.passages[0].margin
    assert r.read(FINLAND_Q, []).answerable == 0.0


@pytest.mark.slow
def test_early_exit_reads_the_rest_only_when_the_first_passage_does_not_answer():
    import dataclasses

    full = Reader.load(CACHE_DIR)
    ctx = "Letter | Frontex has already expanded its Joint Operation: 50 European border guards are now deployed in Finland."
    other = "Annex › Egypt | The EU will deliver seven boats to the Egyptian coast guard in 2024."
    ctxs = [(ctx, 9, 100), (other, other.index("|") + 2, 5000)]
    everything = full.read(FINLAND_Q, ctxs, early_exit=False)
    first = everything.passages[0].margin
    model = Path(CACHE_DIR) / "reader" / full.cfg.sha256["reader.fp32.onnx"][:16] / "reader.onnx"
    r = Reader(dataclasses.replace(full.cfg, exit_margin=first - 0.5), model, ARTIFACT_DIR / "tokenizer.json")
    quick = r.read(FINLAND_Q, ctxs, cos=0.4)
    assert len(quick.passages) == 1 and quick.best == everything.best
    assert quick.answerable == pytest.approx(r.cfg.answerable(first, 0.4))
    r = Reader(dataclasses.replace(full.cfg, exit_margin=first + 0.5), model, ARTIFACT_DIR / "tokenizer.json")
    slow = r.read(FINLAND_Q, ctxs)
    assert [p.rank for p in slow.passages] == [0, 1] and slow.best == everything.best
    assert slow.passages[1].margin == pytest.approx(everything.passages[1].margin, abs=1e-3)
    reversed_ = r.read(FINLAND_Q, ctxs[::-1])  # the first passage does not answer: the second is read
    assert reversed_.best is not None and reversed_.best.rank == 1 and len(reversed_.passages) == 2


# ---------------------------------------------------------------------------------------------
# Through the assistant, on the real corpus


@pytest.mark.slow
@pytest.mark.parametrize("question", [
    "What is the capital of France?",
    # on topic for the letter (migrants, the Mediterranean, 2023): the reader alone answers it (answerable
    # 0.37), the typed cues abstain (tests/test_cues.py)
    "How many migrants died in the Mediterranean in 2023?",
    "What is the population of Poland?",
    "Who painted the Mona Lisa?",
])
def test_off_topic_questions_are_abstained(assistant, question):
    ans = assistant.ask(question)
    assert ans.abstained, (question, ans.answer, ans.answerable)
    assert ans.message.startswith("The documents do not say")
    assert ans.passages and ans.short_answer is None and ans.answerable is not None


@pytest.mark.slow
def test_short_answer_is_the_phrase_with_exact_offsets(assistant, real_text):
    from rag.text import collapse_ws

    ans = assistant.ask("What is the budget of Mauritania's land-and-sea border action adopted in October 2023?")
    assert not ans.abstained and ans.short_answer is not None
    s = ans.short_answer
    assert s.text == "EUR 6.4 million" and s.doc == REAL_DOC_ID and collapse_ws(real_text[s.start:s.end]) == s.text
    assert s.text in ans.answer.split("[1]")[0]  # in the first quoted sentence, which cites [1]
    first = ans.citations[0]
    assert any(a <= s.start and s.end <= b for a, b in first.highlights)  # inside the cited sentence
    js = ans.to_json()
    assert js["short_answer"]["text"] == "EUR 6.4 million" and 0.0 <= js["answerable"] <= 1.0


@pytest.mark.slow
def test_the_finland_question_gets_the_number(assistant, real_text):
    """The issue's own example: "How many European border guards were deployed to Finland?" -> "50"."""
    ans = assistant.ask("How many European border guards were deployed to Finland?")
    assert not ans.abstained and ans.short_answer is not None and ans.short_answer.text == "50"
    s = ans.short_answer
    assert real_text[s.start:s.end] == "50" and "50 European border guards" in ans.answer


@pytest.mark.slow
def test_no_short_answer_without_confidence(assistant):
    """A span the reader is unsure of (confidence 0.02 here, under reader.json's short_min_conf) is
    not shown as the answer: the quoted sentence stays, with no short answer."""
    ans = assistant.ask("Ahead of which recurring summit has the President always laid out the ongoing operational measures?")
    assert not ans.abstained and ans.short_answer is None and "European Council" in ans.answer


@pytest.mark.slow
def test_long_questions_keep_the_sentence(assistant):
    ans = assistant.ask("Why does the letter say Member States need to work together on migration?")
    assert ans.short_answer is None or len(ans.short_answer.text.split()) <= 12


@pytest.mark.slow
def test_strictness_orders_abstention(assistant):
    from rag.pipeline import Assistant

    qs = ["Who is the Prime Minister of Finland?", "Which country received seven boats?",
          "What is the budget for Tunisia?", "How many border guards went to Finland?",
          "What is the capital of France?"]
    rates = {}
    for level in ("lenient", "balanced", "strict"):
        a = Assistant(assistant.settings.with_(strictness=level), assistant.data, assistant.embedder)
        rates[level] = sum(a.ask(q).abstained for q in qs)
    assert rates["lenient"] <= rates["balanced"] <= rates["strict"]


@pytest.mark.slow
def test_verifier_off_answers_as_before(assistant):
    from rag.pipeline import Assistant

    off = Assistant(assistant.settings.with_(verifier="off"), assistant.data, assistant.embedder)
    ans = off.ask("What is the capital of France?")
    assert ans.answerable is None and ans.short_answer is None
    assert off.reader is None


def test_bad_strictness_is_a_setting_error():
    from rag.errors import BadSetting
    from rag.settings import Settings

    with pytest.raises(BadSetting, match="strictness"):
        Settings(strictness="paranoid")
    with pytest.raises(BadSetting, match="verifier"):
        Settings(verifier="maybe")
    assert Settings.from_env({"RAG_VERIFIER": "off", "RAG_STRICTNESS": "strict"}).verifier == "off"


# ---------------------------------------------------------------------------------------------
# Training code: a tiny run, end to end (examples -> a few steps -> ONNX -> the runtime reads it)


@pytest.mark.slow
def test_training_a_tiny_reader_end_to_end(tmp_path):
    from rag.embed import resolve_model
    from rag.reader_train import Example, TrainConfig, encode_examples, export_onnx, train
    from rag.settings import Settings

    ctx = "Letter | Frontex deployed 50 European border guards in Finland."
    pos = Example("q1", "How many guards?", ctx, ctx.index("50"), ctx.index("50") + 2, "test", "pos", "d", 0, False)
    neg = Example("q2", "What is the capital of France?", ctx, -1, -1, "test", "offtopic", "d", 0, False)
    held = Example("q3", "How many boats?", ctx, -1, -1, "test", "offtopic", "d", 0, True)
    s = Settings()
    base = resolve_model(s.model, s.cache_dir)
    from transformers import AutoTokenizer

    feats = encode_examples(AutoTokenizer.from_pretrained(base), [pos, neg])
    assert [f["start"] > 0 for f in feats] == [True, False]
    cfg = TrainConfig(batch=2, max_len=64, max_steps=3, checkpoint_every=2, pos_repeat=1)
    model_dir = train(base, [pos, neg, held] * 4, tmp_path, cfg, progress=lambda m: None)  # 4 batches of 2
    assert (tmp_path / "checkpoint.safetensors").exists()  # written at step 2: a killed run resumes from it
    said = []
    train(base, [pos, neg, held] * 4, tmp_path, cfg, progress=said.append)
    assert said[0] == "resumed at step 2/3"
    onnx_path = export_onnx(model_dir, tmp_path / "reader.onnx")
    from rag.reader import _expand

    _expand(onnx_path, tmp_path / "fp32.onnx")
    r = Reader(ReaderConfig.from_json(GOOD), tmp_path / "fp32.onnx", model_dir / "tokenizer.json")
    reading = r.read("How many guards?", [(ctx, 9, 0)])
    assert len(reading.passages) == 1 and 0.0 <= reading.answerable <= 1.0
    long = r.read("How many guards? " * 500, [(ctx, 9, 0)])  # a question longer than max_len is cut, not an error
    assert len(long.passages) == 1
    # the shipped form (float16 ONNX) turns back into a model that training can continue from
    import numpy as np
    import torch
    from transformers import AutoModelForQuestionAnswering

    from rag.reader_train import onnx_to_hf

    back = AutoModelForQuestionAnswering.from_pretrained(str(onnx_to_hf(tmp_path, base, tmp_path / "back"))).eval()
    enc = AutoTokenizer.from_pretrained(base)("How many guards?", ctx, return_tensors="pt")
    with torch.no_grad():
        start = back(**enc).start_logits.numpy()
    import onnxruntime as ort

    want = ort.InferenceSession(str(tmp_path / "fp32.onnx")).run(None, {k: v.numpy() for k, v in enc.items()})[0]
    np.testing.assert_allclose(start, want, atol=1e-3)
    bf16 = train(base, [pos, neg] * 2, tmp_path / "bf16", TrainConfig(batch=2, max_len=64, max_steps=1, bf16=True),
                 progress=lambda m: None)
    assert (bf16 / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_soup_is_the_mean_of_its_runs_weights_and_exports(tmp_path):
    """``soup``: two runs' models averaged tensor by tensor into one ONNX reader; runs of different
    shapes are refused."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForQuestionAnswering

    from rag.reader_train import main, soup

    def tiny(run: Path, seed: int, hidden: int = 32) -> Path:
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=hidden * 2, max_position_embeddings=64)
        BertForQuestionAnswering(cfg).save_pretrained(run / "model")
        (run / "train.json").write_text(json.dumps({"seed": seed}))
        return run

    a, b = tiny(tmp_path / "a", 1), tiny(tmp_path / "b", 2)
    assert main(["soup", str(tmp_path / "s"), "--of", str(a), str(b)]) == 0
    wa, wb, ws = (load_file(str(r / "model" / "model.safetensors")) for r in (a, b, tmp_path / "s"))
    for k, v in ws.items():
        want = (wa[k] + wb[k]) / 2 if v.is_floating_point() else wa[k]
        torch.testing.assert_close(v, want)
    assert not torch.equal(wa["qa_outputs.weight"], wb["qa_outputs.weight"])  # the two runs do differ
    assert (tmp_path / "s" / "reader.onnx").stat().st_size > 0
    assert json.loads((tmp_path / "s" / "soup.json").read_text())["of"] == [str(a), str(b)]
    # a model folder itself (a continued run's base/) counts as well as a run folder
    assert main(["soup", str(tmp_path / "s2"), "--of", str(a / "model"), str(b)]) == 0
    for k, v in load_file(str(tmp_path / "s2" / "model" / "model.safetensors")).items():
        torch.testing.assert_close(v, ws[k])
    with pytest.raises(ValueError, match="not the same architecture"):
        soup([a / "model", tiny(tmp_path / "c", 3, hidden=16) / "model"], tmp_path / "bad")
    with pytest.raises(SystemExit):
        main(["soup", str(tmp_path / "one"), "--of", str(a)])  # one run is no soup


def test_the_card_of_a_soup_names_its_runs_and_the_command(tmp_path):
    from rag.reader_train import write_card

    cfg = json.loads((ARTIFACT_DIR / "reader.json").read_text())
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text())
    runs = [{"seed": 13, "note": "taken back from a shipped reader.onnx"}, {"seed": 14}]
    card = write_card(tmp_path, metrics, cfg, {"train squad pos": "2431 / 2428"}, ["Huguenot"], soup_runs=runs).read_text()
    assert "| examples | count (seeds 13 and 14) |" in card and "| train squad pos | 2431 / 2428 |" in card
    assert "mean of two uninterrupted runs, seeds 13 and 14." in card
    assert "The seed-13 run: taken back from a shipped reader.onnx." in card and "seed-14 run:" not in card
    assert "soup /tmp/reader --of /tmp/reader13 /tmp/reader14" in card and "--seed 14" in card
    three = write_card(tmp_path, metrics, cfg, {"train squad pos": "1 / 1 / 1"}, ["Huguenot"],
                       soup_runs=runs + [{"seed": 15}]).read_text()
    assert "mean of three uninterrupted runs, seeds 13, 14 and 15." in three and "(seeds 13, 14 and 15)" in three
    assert "--of /tmp/reader13 /tmp/reader14 /tmp/reader15" in three and "--seed 15 --bf16" in three
    plain = write_card(tmp_path, metrics, cfg, {"train squad pos": 1}, ["Huguenot"]).read_text()
    assert "rag.reader_train soup" not in plain and "mean of two" not in plain and "| examples | count |" in plain


def test_swap_makes_a_near_miss_question():
    import random

    from rag.reader_train import _swap_place

    q = _swap_place("Which boats did the EU give Egypt?", "Annex › Egypt | The EU delivered boats.", random.Random(1))
    assert q is not None and "Egypt" not in q and q.startswith("Which boats did the EU give ")
    assert _swap_place("What did the Commission propose?", "x", random.Random(1)) is None


def test_place_swaps_depend_on_the_seed_alone_not_on_string_hashing(spawn):
    """The same command and seed make the same training examples in every process (a set's order
    changes with PYTHONHASHSEED; the swap's list of places must not)."""
    import os
    import subprocess
    import sys

    code = ("import random; from rag.reader_train import _PLACE_WORDS, _swap_place; print(_PLACE_WORDS[:40]); "
            "print([_swap_place('How many guards went to Finland?', 'x', random.Random(i)) for i in range(20)])")
    outs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": h}, capture_output=True,
                           text=True, check=True).stdout for h in ("1", "2", "3")}
    assert len(outs) == 1 and "Finland" not in outs.pop().splitlines()[1]


def test_entity_swap_makes_an_on_topic_near_miss():
    import random

    from rag.reader_train import entity_pool, swap_entity

    article = ("The Normans ruled. The Normans fought. In 1066 the Normans, led by William, won at Hastings. "
               "Later, in 1204, Philip took the duchy from John. On 9 October the city fell.")
    pool = entity_pool(article, common=1)
    assert "Normans" in pool["topic"] and "1204" in pool["year"] and "Philip" in pool["name"]
    passage = "In 1066 the Normans, led by William, won at Hastings."
    q = swap_entity("Who led the Normans in 1066?", passage, pool, random.Random(3))
    assert q is not None and q != "Who led the Normans in 1066?"
    assert "Normans" in q  # the topic is kept: only the fact asked about changes
    replaced = set(q.rstrip("?").split()) - set("Who led the Normans in 1066".split())
    assert replaced and all(w.lower() not in passage.lower() for w in replaced)
    assert swap_entity("What did the Normans win?", passage, pool, random.Random(3)) is None  # only the topic
    assert swap_entity("Who fell on October 9?", "On October 9 the city fell.", {"number": ["55"]}, random.Random(3)) is None


def test_exit_margin_is_the_lowest_that_keeps_the_best_span():
    from rag.reader_train import Probe, choose_exit_margin

    def probe(first, best_rank):
        return Probe("squad-answerable", 1, first, 0.5, 0.5, "x", ("x",), True, first, best_rank)

    probes = [probe(m, 0) for m in (3.0, 4.0, 6.0, 9.0)] + [probe(1.2, 1), probe(2.2, 2), probe(-1.0, 1)]
    x, report = choose_exit_margin(probes)
    assert x == 2.5 and report["questions that read one passage"] == pytest.approx(4 / 7, abs=1e-3)
    assert report["of those, best span elsewhere"] == 0.0
    assert choose_exit_margin([probe(20.0, 1)]) == (None, {"exit_margin": None})


def test_agreeing_spans_are_those_with_token_f1_of_a_half_or_more():
    from rag.reader import _agreeing

    m = _agreeing(2, 4, 8)  # the best span: tokens 2..4 ("EUR 600 million")
    assert m[2, 4] and m[3, 4] and m[2, 3] and m[1, 5]  # itself, "600 million", "EUR 600", a little wider
    assert not m[5, 7] and not m[0, 1] and not m[4, 2]  # disjoint; an end before its start is no span
    for a in range(8):
        for b in range(a, 8):
            overlap = max(0, min(4, b) - max(2, a) + 1)
            assert m[a, b] == (2 * overlap / (3 + b - a + 1) >= 0.5)


def test_span_conf_is_chosen_by_the_short_answers_mean_f1():
    from rag.reader_train import Probe, choose_span_conf, short_answer_f1

    def probe(span, conf, agree, answer="EUR 600 million"):
        return Probe("squad-answerable", 1, 1.0, 0.5, conf, span, (answer,), True, 1.0, 0, agree)

    # right spans whose probability is split between boundaries: low exact, high overlap confidence,
    # in the same exact-confidence bucket as wrong spans
    probes = [probe("EUR 600 million", 0.22, 0.95)] * 6 + [probe("600 million", 0.25, 0.9)] * 4
    probes += [probe("the March letter", 0.2, 0.3)] * 12
    rule, min_conf, table, value = choose_span_conf(probes)
    assert rule == "overlap" and min_conf == 0.4 and value == {"exact": 0.0, "overlap": pytest.approx(9.2 / 22, abs=1e-4)}
    assert short_answer_f1(probes, "overlap", 0.95) == pytest.approx(6 / 22)
    assert ReaderConfig.from_json({**GOOD, "span_conf": "overlap"}).span_conf == "overlap"
    assert ReaderConfig.from_json(GOOD).span_conf == "exact"  # reader.json from before the choice
    with pytest.raises(ReaderUnavailable, match="span_conf"):
        ReaderConfig.from_json({**GOOD, "span_conf": "mean"})


def test_min_conf_is_where_the_short_answers_given_average_half_right():
    from rag.reader_train import Probe, choose_min_conf

    def probe(conf, right, group="squad-answerable"):
        return Probe(group, 1, 1.0, 0.5, conf, "EUR 600 million" if right else "March", ("EUR 600 million",), True)

    # one bad bucket (0.6) among good ones does not hide every answer below it: those given from 0.4
    # on are still right 14 times in 18
    probes = [probe(0.95, True)] * 10 + [probe(0.65, False)] * 4 + [probe(0.45, True)] * 4
    probes += [probe(0.15, False)] * 20  # below 0.2 the answers given would be mostly wrong
    assert choose_min_conf(probes)[0] == 0.2
    # every source must hold: curated spans that are wrong from 0.3 down move the threshold up
    curated = [probe(0.9, True, "curated-answerable")] * 2 + [probe(0.3, False, "curated-answerable")] * 3
    assert choose_min_conf(probes + curated)[0] == 0.4
    table = choose_min_conf(probes)[1]
    assert [(lo, n) for lo, n, _ in table if n] == [(0.15, 20), (0.4, 4), (0.6, 4), (0.9, 10)]


@pytest.mark.slow
def test_who_wrote_the_letter_is_answered_from_its_signature(assistant, real_text):
    ans = assistant.ask("Who wrote the letter?")
    s = ans.short_answer
    assert not ans.abstained and s.text == "Ursula von der Leyen" and real_text[s.start:s.end] == s.text
    assert real_text[:s.start].rstrip().endswith("Yours sincerely,")


@pytest.mark.slow
def test_a_question_spelling_out_the_letters_acronym_finds_the_passage_using_it(assistant):
    assert assistant.long_forms["memorandum of understanding"] == "MoU"
    ans = assistant.ask("When was the EU's memorandum of understanding with Tunisia signed?")
    assert ans.short_answer.text == "16 July" and "the MoU was signed on 16 July" in ans.answer
