"""The app's generative answer mode, headless with Streamlit's AppTest (like tests/test_app.py).

The app runs on the session copy of the real corpus and its index (conftest's ``real_index``);
`rag.generate.make_chat_model` is replaced by LangChain's fake chat models (the app builds its chat
model through it, cached with st.cache_resource: the cache is cleared around every test). Expected
answers are computed with the session ``assistant`` on the same index and the same fake reply, so
what the page shows is compared with exactly what the library verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage

from conftest import FINLAND_Q, use_chat
from rag import generate, ui

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TUNISIA_Q = "What did the Commission promise Tunisia?"
DOES_NOT_SUPPORT = ":warning: does not support the answer"


class Broken(GenericFakeChatModel):
    error: Exception

    def _generate(self, *args: Any, **kwargs: Any):
        raise self.error

    def _stream(self, *args: Any, **kwargs: Any):
        raise self.error


def fake(*texts: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(t) for t in texts]))


@pytest.fixture(autouse=True)
def _fresh_resource_cache():
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def claim(assistant) -> str:
    """The extractive answer's sentence for the Finland question, without its final full stop."""
    ext = assistant.ask(FINLAND_Q)
    text = ext.answer.removesuffix(" [1]")
    assert text.endswith(".") and "[" not in text
    return text[:-1]


def app(monkeypatch, real_settings, answer_mode: str = "llm"):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RAG_CORPUS_DIR", str(real_settings.corpus_dir))
    monkeypatch.setenv("RAG_INDEX_DIR", str(real_settings.index_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.radio(key="answer_mode").set_value(answer_mode).run()
    assert not at.exception, at.exception
    return at


def _has_key(at, key: str) -> bool:
    try:
        at.selectbox(key=key)
    except KeyError:
        return False
    return True


def ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    msgs = [m for m in at.chat_message if m.name == "assistant"]
    assert msgs, "no assistant message"
    return msgs[-1]


def expected(assistant, text: str, question: str = FINLAND_Q, **kw):
    """What the library makes of the fake reply ``text`` (the app's defaults: hybrid, k = 5)."""
    return assistant.ask(question, k=5, mode="hybrid", answer="llm", chat=fake(text), **kw)


def captions(reply) -> list[str]:
    return [c.value for c in reply.caption]


# ---------------------------------------------------------------------------------------------



def answer_text(reply) -> str:
    """The answer's own paragraph: after the bold short answer when there is one."""
    md = [m.value for m in reply.markdown]
    return md[1] if md and md[0].startswith("**Answer: ") else md[0]

def test_sidebar_shows_the_operator_llm_settings_read_only_and_only_in_generative_mode(monkeypatch, real_settings, real_index):
    at = app(monkeypatch, real_settings, "extractive")
    assert not _has_key(at, "llm_model")
    at.radio(key="answer_mode").set_value("llm").run()
    assert not at.sidebar.text_input  # no server, model or file a visitor could type
    assert [s.key for s in at.sidebar.selectbox] == ["mode", "llm_model"]
    model = at.selectbox(key="llm_model")
    assert (model.options, model.value, model.disabled) == (["llama3.2"], "llama3.2", True)
    assert ui.md_text("http://localhost:11434") in at.sidebar.markdown[0].value
    assert at.sidebar.markdown[0].value.startswith("**Backend:** ollama  \n**Server:** ")


def test_a_visitor_chooses_only_among_the_models_the_operator_listed(monkeypatch, real_settings, real_index, claim):
    monkeypatch.setenv("RAG_LLM_BACKEND", "openai")
    monkeypatch.setenv("RAG_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("RAG_LLM_MODELS", "gpt-4o-mini, qwen2.5")
    built = use_chat(monkeypatch, fake(f"{claim} [1]."))
    at = app(monkeypatch, real_settings)
    model = at.selectbox(key="llm_model")
    assert (model.options, model.value, model.disabled) == (["gpt-4o-mini", "qwen2.5"], "gpt-4o-mini", False)
    assert "**Backend:** openai" in at.sidebar.markdown[0].value and "**API key:** not set" in at.sidebar.markdown[0].value
    model.set_value("qwen2.5").run()
    ask(at, FINLAND_Q)
    assert [(s.llm_backend, s.llm_model, s.llm_base_url) for s in built] == [("openai", "qwen2.5", "http://127.0.0.1:9/v1")]


def test_unsupported_sentence_is_flagged_and_its_citation_says_it_does_not_support(
        monkeypatch, real_settings, real_index, assistant, claim):
    text = f"{claim} [1]. Finland received 500 border guards [2]."
    want = expected(assistant, text)
    assert want.unsupported_sentences == ("Finland received 500 border guards.",)
    assert [c.supported for c in want.citations] == [True, False]
    built = use_chat(monkeypatch, fake(text))
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    assert [s.answer for s in built] == ["llm"]
    assert answer_text(reply) == ui.md_text(want.answer)
    assert [w.value for w in reply.warning] == [ui.unsupported_markdown("Finland received 500 border guards.")]
    labels = [e.label for e in reply.expander]
    assert len(labels) == 2
    assert labels[0].startswith(r"\[1\] ") and DOES_NOT_SUPPORT not in labels[0]
    assert labels[1].startswith(r"\[2\] ") and labels[1].endswith(DOES_NOT_SUPPORT)
    assert ui.md_text("1 sentence(s) of this answer are not supported by the cited passages") in captions(reply)
    assert captions(reply)[-1].startswith("llm answer · hybrid · k = 5 · ")


def test_supported_answer_shows_no_warning_and_highlights_its_sentence(monkeypatch, real_settings, real_index, assistant, claim):
    text = f"{claim} [1]."
    use_chat(monkeypatch, fake(text))
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    assert answer_text(reply) == ui.md_text(expected(assistant, text).answer)
    assert not reply.warning
    (label,) = [e.label for e in reply.expander]
    assert DOES_NOT_SUPPORT not in label
    assert ":orange-background[" in reply.expander[0].markdown[0].value


def test_refusal_shows_the_plain_message_and_the_closest_passages(monkeypatch, real_settings, real_index):
    use_chat(monkeypatch, fake("Not in the documents."))
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    assert reply.markdown[0].value == ui.md_text(f"The documents do not say: {FINLAND_Q.rstrip('?')}? (Not in the documents.)")
    assert "Closest passages:" in captions(reply)
    assert 1 <= len(reply.expander) <= 3 and not reply.warning


def test_follow_up_shows_what_was_searched_for(monkeypatch, real_settings, real_index, assistant):
    rewritten = "Which support did the Commission promise to Egypt?"
    first = assistant.ask(TUNISIA_Q).answer.split(" [")[0].rstrip(".:") + " [1]."
    chat = FakeListChatModel(responses=[first, rewritten, "Not in the documents."])
    use_chat(monkeypatch, chat)
    at = app(monkeypatch, real_settings)
    one = ask(at, TUNISIA_Q)
    assert not any(c.startswith("Searched for:") for c in captions(one))
    two = ask(at, "and what about Egypt?")
    assert "Searched for: " + ui.md_text(rewritten) in captions(two)
    # the question as typed stays in the user's bubble
    users = [m for m in at.chat_message if m.name == "user"]
    assert users[-1].markdown[0].value == ui.md_text("and what about Egypt?")
    assert chat.i == 0  # all three replies used: answer, rewrite, answer (the list cycles back to 0)


def test_extractive_follow_up_shows_the_deterministic_rewrite(monkeypatch, real_settings, real_index):
    monkeypatch.setattr(generate, "make_chat_model", lambda s: pytest.fail("extractive mode built a chat model"))
    at = app(monkeypatch, real_settings, "extractive")
    ask(at, TUNISIA_Q)
    two = ask(at, "and what about Egypt?")
    assert "Searched for: " + ui.md_text("What did the Commission promise Egypt?") in captions(two)
    assert captions(two)[-1].startswith("extractive answer · ")


def test_backend_error_shows_the_extractive_answer_and_the_fallback_notice(monkeypatch, real_settings, real_index, assistant):
    ext = assistant.ask(FINLAND_Q, k=5)
    use_chat(monkeypatch, Broken(messages=iter([]), error=ConnectionError("[Errno 111] Connection refused")))
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    assert answer_text(reply) == ui.md_text(ext.answer)
    notice = ("the language model (ollama:llama3.2 at http://localhost:11434) could not answer "
              "(ConnectionError: [Errno 111] Connection refused); showing the extractive answer instead")
    assert ui.md_text(notice) in captions(reply)
    assert captions(reply)[-1].startswith("extractive answer · ")
    assert not reply.warning and not at.error


def test_unusable_backend_says_why_and_answers_extractively(monkeypatch, real_settings, real_index, assistant):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ext = assistant.ask(FINLAND_Q, k=5)
    monkeypatch.setenv("RAG_LLM_BACKEND", "openai")
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    assert answer_text(reply) == ui.md_text(ext.answer)
    notice = ("the openai backend needs an API key (RAG_LLM_API_KEY or OPENAI_API_KEY) or a local "
              "OpenAI-compatible server in RAG_LLM_BASE_URL; showing the extractive answer instead")
    assert ui.md_text(notice) in captions(reply)


def test_model_text_with_markup_renders_only_as_escaped_text(monkeypatch, real_settings, real_index, assistant, claim):
    text = (f"{claim} [1]. <script>alert(1)</script> See [the link](javascript:alert(1)) and "
            "![x](http://evil.example/x.png) at https://evil.example [2].")
    want = expected(assistant, text)
    assert want.unsupported_sentences  # the markup sentence is not backed by passage 2
    use_chat(monkeypatch, fake(text))
    at = app(monkeypatch, real_settings)
    reply = ask(at, FINLAND_Q)
    shown = answer_text(reply)
    assert shown == ui.md_text(want.answer)
    assert r"\<script\>alert\(1\)\</script\>" in shown and r"\[the link\]\(javascript\:alert\(1\)\)" in shown
    assert "<script>" not in shown and "](" not in shown and "https://" not in shown
    assert [w.value for w in reply.warning] == [ui.unsupported_markdown(s) for s in want.unsupported_sentences]
    assert all("<script>" not in w.value and "](" not in w.value for w in reply.warning)
