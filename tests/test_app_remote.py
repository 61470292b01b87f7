"""The app in remote mode (RAG_API_URL): it asks a `rag serve` instead of a local index, and
rag.client.RemoteAssistant under it. The server is the real ASGI app, in-process (Starlette's
TestClient is the HTTP client), on the tiny index."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the remote mode needs the serve extra: pip install 'rag[serve]'")
from fastapi.testclient import TestClient  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import rag.client  # noqa: E402
from rag import ui  # noqa: E402
from rag.client import RemoteAssistant  # noqa: E402
from rag.errors import BadQuestion, RemoteUnavailable  # noqa: E402
from rag.serve import create_app  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
KEY = "remote-key-987654321"
URL = "http://rag.example:8000"
QUESTION = "How many border guards did Frontex deploy?"


@pytest.fixture
def server(tiny_copy, monkeypatch):
    """Every RemoteAssistant talks to the app of ``tiny_copy`` (with KEY) through a TestClient."""
    app = create_app(tiny_copy.with_(serve_api_key=KEY))
    monkeypatch.setattr(rag.client, "http_client", lambda url, headers, timeout_s: TestClient(app, base_url=url, headers=headers))
    return tiny_copy


def test_the_client_answers_as_the_assistant_does(server):
    from rag.pipeline import Assistant

    remote = RemoteAssistant(URL, KEY)
    got, want = remote.ask(QUESTION, k=3), Assistant.load(server).ask(QUESTION, k=3)
    assert got.answer == want.answer and got.short_answer.text == "50" and not got.abstained

    def shown(a):
        return {k: v for k, v in a.to_json().items() if k != "timings_ms"}

    assert shown(got) == shown(want)  # the JSON round-trips: Answer.from_json(to_json()) loses nothing shown
    assert [c.doc for c in remote.search("Where did the ministers meet?", k=1)] == ["notes.txt"]
    assert sorted(remote.docs) == ["border.md", "notes.txt"] and "Frontex deployed 50" in remote.docs["border.md"].text
    with pytest.raises(KeyError):
        remote.docs["nope.txt"]


def test_the_client_says_what_went_wrong_in_one_line(server):
    with pytest.raises(BadQuestion, match="the question is empty"):
        RemoteAssistant(URL, KEY).ask("   ")
    with pytest.raises(RemoteUnavailable, match=r"answered 401: a valid API key is required") as exc:
        RemoteAssistant(URL, "wrong").ask(QUESTION)
    assert "wrong" not in str(exc.value)


def test_an_unreachable_server_is_one_line_naming_it(monkeypatch):
    import httpx

    monkeypatch.setattr(rag.client, "http_client", lambda url, headers, timeout_s: httpx.Client(base_url="http://127.0.0.1:9", timeout=2))
    with pytest.raises(RemoteUnavailable, match=r"cannot reach the rag server at http://127.0.0.1:9 .*is `rag serve` running"):
        RemoteAssistant("http://127.0.0.1:9").health()


def _app(monkeypatch, tmp_path, key: str = KEY) -> AppTest:
    monkeypatch.setenv("RAG_API_URL", URL)
    monkeypatch.setenv("RAG_API_KEY", key)
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "no-local-index"))  # never built, never read
    monkeypatch.setenv("RAG_CORPUS_DIR", str(tmp_path / "no-local-corpus"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at


def test_the_app_answers_from_the_server_with_its_citations(server, monkeypatch, tmp_path):
    import streamlit as st

    st.cache_resource.clear()  # no RemoteAssistant cached from another test's server
    at = _app(monkeypatch, tmp_path)
    assert not at.exception, at.exception
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert f"**Server:** {ui.md_text(URL)}" in sidebar and "**Documents:** 2" in sidebar
    assert [r.options for r in at.sidebar.radio][0] == ["Chat"]  # no local library or evaluation
    assert all(b.key != "rebuild_sidebar" for b in at.sidebar.button) and not at.sidebar.get("file_uploader")
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert "50" in shown and "border" in shown.lower()
    assert [e.label for e in at.expander][0].startswith(r"\[1\] Border Report 2023 · p. 1")
    assert any(t.label == "Show in context" for t in at.toggle)  # the document's text came from the server
    assert not (tmp_path / "no-local-index").exists()


def test_the_app_shows_a_refused_key_and_stops(server, monkeypatch, tmp_path):
    import streamlit as st

    st.cache_resource.clear()
    at = _app(monkeypatch, tmp_path, key="wrong-key")
    assert not at.exception
    assert at.error and "401" in at.error[0].value and "wrong-key" not in at.error[0].value
    assert "**Status:** unreachable" in " ".join(m.value for m in at.sidebar.markdown)
