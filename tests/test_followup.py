"""Follow-up questions in a chat: the deterministic rewrite (rag.followup), the LLM rewrite
(rag.generate.rewrite_with_llm, driven by LangChain's fake chat models), Assistant.ask(history=...)
on the real index, and `rag chat` in-process."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel

from rag import generate
from rag.cli import main
from rag.followup import is_follow_up, rewrite
from rag.generate import REWRITE_PROMPT, rewrite_with_llm

TUNISIA_Q = "What did the Commission promise Tunisia?"
EGYPT_Q = "What did the Commission promise Egypt?"


# ---------------------------------------------------------------------------------------------
# Deterministic rewrite


@pytest.mark.parametrize("follow_up,standalone", [
    ("and what about Egypt?", EGYPT_Q),
    ("What about Libya?", "What did the Commission promise Libya?"),
    ("how about Egypt", EGYPT_Q),
    ("what of Libya?", "What did the Commission promise Libya?"),
    ("same for Libya", "What did the Commission promise Libya?"),
    ("and the same for Egypt?", EGYPT_Q),
    ("and in Niger?", "What did the Commission promise Niger?"),
    ("OK, so what about Egypt?", EGYPT_Q),
    ("And Egypt?", EGYPT_Q),
    ("also Libya?", "What did the Commission promise Libya?"),
    ("and what about the coast guard?", "What did the Commission promise Tunisia, regarding the coast guard?"),
])
def test_what_about_follow_ups_swap_in_the_new_subject(follow_up, standalone):
    assert is_follow_up(follow_up)
    assert rewrite(follow_up, [TUNISIA_Q]) == standalone


@pytest.mark.parametrize("follow_up,standalone", [
    ("How much did it cost?", "How much did it cost (Tunisia)?"),
    ("When did they sign it?", "When did they sign it (Tunisia)?"),
    ("and what did they agree there?", "What did they agree there (Tunisia)?"),
    ("What is it?", "What is it (Tunisia)?"),
])
def test_pronoun_follow_ups_carry_the_previous_subject(follow_up, standalone):
    assert is_follow_up(follow_up)
    assert rewrite(follow_up, [TUNISIA_Q]) == standalone


def test_the_most_recent_question_is_the_context():
    history = ["How many border guards were deployed to Finland?", TUNISIA_Q]
    assert rewrite("and what about Egypt?", history) == EGYPT_Q
    assert rewrite("How much did it cost?", list(reversed(history))) == "How much did it cost (Finland)?"


def test_pronoun_follow_up_without_a_named_subject_keeps_the_whole_previous_question():
    assert rewrite("and when did it start?", ["what was agreed?"]) == "When did it start (what was agreed)?"
    assert rewrite("and what about Egypt?", ["what did they decide?"]) == "what did they decide, regarding Egypt?"


@pytest.mark.parametrize("question", [
    EGYPT_Q,
    "How many border guards are deployed in Finland?",
    "Who signed it in Tunis?",  # a pronoun, but it names what it is about
    "Which projects does the annex list under the heading on returns from the Western Balkans?",
    "and egypt?",  # lower case: not clearly a name
])
def test_standalone_questions_are_unchanged(question):
    assert not is_follow_up(question)
    assert rewrite(question, [TUNISIA_Q]) == question


def test_empty_history_or_question_leaves_the_question_as_typed_with_spaces_collapsed():
    assert rewrite("  and   what about\nEgypt? ", []) == "and what about Egypt?"
    assert rewrite("", [TUNISIA_Q]) == ""
    assert rewrite("   ", [TUNISIA_Q]) == ""


# ---------------------------------------------------------------------------------------------
# LLM rewrite


class Recording(FakeListChatModel):
    """FakeListChatModel that remembers the messages of each call (invoke or stream)."""

    calls: list = []

    def _call(self, messages: Any, *args: Any, **kwargs: Any) -> str:  # invoke
        self.calls.append(list(messages))
        return super()._call(messages, *args, **kwargs)

    def _stream(self, messages: Any, *args: Any, **kwargs: Any):  # stream
        self.calls.append(list(messages))
        yield from super()._stream(messages, *args, **kwargs)


class RewriteFails(FakeListChatModel):
    """Answers (streams) fine, but the rewrite call (invoke) fails, like a timeout on that request."""

    def _call(self, *args: Any, **kwargs: Any) -> str:
        raise TimeoutError("rewrite timed out")


def test_llm_rewrite_sends_the_rules_the_last_three_turns_without_markers_and_the_question():
    chat = Recording(responses=["What did the Commission promise Egypt?"], calls=[])
    history = [(f"q{i}", f"answer {i} [1][2]") for i in range(5)]
    assert rewrite_with_llm(chat, history, "and Egypt?") == EGYPT_Q
    (msgs,) = chat.calls
    assert [m.type for m in msgs] == ["system", "human", "ai", "human", "ai", "human", "ai", "human"]
    assert msgs[0].content == REWRITE_PROMPT
    assert [m.content for m in msgs[1:]] == ["q2", "answer 2 ", "q3", "answer 3 ", "q4", "answer 4 ", "and Egypt?"]


@pytest.mark.parametrize("reply,expected", [
    ('"What did the Commission promise Egypt?"', EGYPT_Q),
    ("“What did the Commission promise Egypt?”", EGYPT_Q),
    ("  What did the Commission   promise Egypt?  ", EGYPT_Q),
    ("What did the Commission promise Egypt?\n(Rewritten from the conversation.)", EGYPT_Q),
    ("What did the Commission promise Egypt?\n\nI replaced Tunisia with Egypt.", EGYPT_Q),
    ("", "and Egypt?"),
])
def test_llm_rewrite_keeps_only_the_first_line_without_quotes(reply, expected):
    assert rewrite_with_llm(FakeListChatModel(responses=[reply]), [(TUNISIA_Q, "x")], "and Egypt?") == expected


# ---------------------------------------------------------------------------------------------
# Assistant.ask(history=...) on the real index


@pytest.fixture(scope="module")
def tunisia(assistant):
    a = assistant.ask(TUNISIA_Q)
    assert not a.abstained and a.original_question is None
    return a


def egypt_sections(ans) -> list[bool]:
    return ["Egypt" in p.section for p in ans.passages]


def test_extractive_follow_up_is_rewritten_before_retrieval(assistant, tunisia):
    ans = assistant.ask("and what about Egypt?", history=[(tunisia.question, tunisia.answer)])
    assert ans.original_question == "and what about Egypt?"
    assert ans.question == EGYPT_Q
    assert ans.mode == "extractive"
    assert all(egypt_sections(ans)[:3]), [p.section for p in ans.passages]
    assert any("Egypt" in c.section for c in ans.citations)
    d = ans.to_json()
    assert (d["question"], d["original_question"]) == (EGYPT_Q, "and what about Egypt?")
    # the rewritten question retrieves what the standalone question retrieves
    assert ans.passages == assistant.ask(EGYPT_Q).passages


def test_without_history_a_follow_up_is_searched_as_typed(assistant):
    ans = assistant.ask("and what about Egypt?")
    assert ans.original_question is None and ans.question == "and what about Egypt?"
    assert "original_question" not in ans.to_json()


def test_standalone_question_with_history_is_not_rewritten(assistant, tunisia):
    ans = assistant.ask(EGYPT_Q, history=[(tunisia.question, tunisia.answer)])
    assert ans.original_question is None and ans.question == EGYPT_Q


def test_llm_mode_rewrites_with_the_model_then_answers(assistant, tunisia):
    rewritten = "Which support did the Commission promise to Egypt?"
    chat = Recording(responses=[rewritten, "Not in the documents."], calls=[])
    ans = assistant.ask("and what about Egypt?", answer="llm", chat=chat, history=[(tunisia.question, tunisia.answer)])
    assert ans.original_question == "and what about Egypt?"
    assert ans.question == rewritten  # the model's rewrite, not the deterministic one
    assert ans.mode == "llm" and ans.abstained  # the second reply was the answer
    assert any(egypt_sections(ans))
    rewrite_call, answer_call = chat.calls
    assert rewrite_call[0].content == REWRITE_PROMPT and rewrite_call[-1].content == "and what about Egypt?"
    assert f"<question>\n{rewritten}\n</question>" in answer_call[1].content


def test_llm_mode_does_not_call_the_model_to_rewrite_a_standalone_question(assistant, tunisia):
    chat = Recording(responses=["Not in the documents."], calls=[])
    ans = assistant.ask(EGYPT_Q, answer="llm", chat=chat, history=[(tunisia.question, tunisia.answer)])
    assert ans.original_question is None and len(chat.calls) == 1 and ans.abstained


def test_llm_rewrite_failure_falls_back_to_the_deterministic_rewrite(assistant, tunisia):
    chat = RewriteFails(responses=["Not in the documents."])
    ans = assistant.ask("and what about Egypt?", answer="llm", chat=chat, history=[(tunisia.question, tunisia.answer)])
    assert (ans.original_question, ans.question) == ("and what about Egypt?", EGYPT_Q)
    assert ans.mode == "llm" and ans.abstained  # the answer itself still came from the model


def test_llm_mode_with_an_unreachable_backend_rewrites_and_answers_extractively(assistant, tunisia):
    class Down(GenericFakeChatModel):
        def _generate(self, *a: Any, **k: Any):
            raise ConnectionError("refused")

        def _stream(self, *a: Any, **k: Any):
            raise ConnectionError("refused")

    ans = assistant.ask("and what about Egypt?", answer="llm", chat=Down(messages=iter([])),
                        history=[(tunisia.question, tunisia.answer)])
    assert (ans.original_question, ans.question) == ("and what about Egypt?", EGYPT_Q)
    assert ans.mode == "extractive" and not ans.abstained
    assert "could not answer (ConnectionError: refused)" in ans.notices[-1]
    assert ans.passages == assistant.ask(EGYPT_Q).passages


# ---------------------------------------------------------------------------------------------
# rag chat


def chat_cli(settings, capsys, monkeypatch, lines: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code = main(["chat", *args, "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rag_chat_json_rewrites_the_follow_up(real_settings, real_index, capsys, monkeypatch):
    code, out, err = chat_cli(real_settings, capsys, monkeypatch, f"{TUNISIA_Q}\n\nand what about Egypt?\n", "--json")
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["question"] == TUNISIA_Q and "original_question" not in first
    assert (second["original_question"], second["question"]) == ("and what about Egypt?", EGYPT_Q)
    assert second["mode"] == "extractive" and second["citations"]
    assert any("Egypt" in p["section"] for p in second["passages"])


def test_rag_chat_prints_what_it_searched_for(real_settings, real_index, capsys, monkeypatch):
    code, out, err = chat_cli(real_settings, capsys, monkeypatch, f"{TUNISIA_Q}\nand what about Egypt?\n")
    assert code == 0, err
    assert out.count("(searched for: ") == 1
    assert f"(searched for: {EGYPT_Q})" in out


def test_rag_chat_llm_mode_uses_the_model_to_rewrite(real_settings, real_index, capsys, monkeypatch):
    rewritten = "Which support did the Commission promise to Egypt?"
    chat = Recording(responses=["Not in the documents.", rewritten, "Not in the documents."], calls=[])
    monkeypatch.setattr(generate, "make_chat_model", lambda settings: chat)
    code, out, err = chat_cli(real_settings, capsys, monkeypatch, f"{TUNISIA_Q}\nand what about Egypt?\n",
                              "--json", "--answer", "llm")
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["mode"] == second["mode"] == "llm"
    assert (second["original_question"], second["question"]) == ("and what about Egypt?", rewritten)
    assert len(chat.calls) == 3
    # the conversation the model saw: the first question and the first answer's message (it abstained)
    assert [m.content for m in chat.calls[1][1:]] == [TUNISIA_Q, first["message"], "and what about Egypt?"]


def test_rag_chat_reports_a_bad_line_and_carries_on(real_settings, real_index, capsys, monkeypatch):
    code, out, err = chat_cli(real_settings, capsys, monkeypatch, "\x00\x01\n" + TUNISIA_Q + "\n", "--json")
    assert code == 0
    assert err.strip() == "rag: the question is empty: type a question about the documents"
    (line,) = out.splitlines()
    assert json.loads(line)["question"] == TUNISIA_Q
