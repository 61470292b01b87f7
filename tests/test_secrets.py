"""Issue 16, app and secrets: what a visitor of the app can make the server do, and where the LLM
key or a password could be printed.

- The app's LLM backend, server, key and model file are the operator's (RAG_* variables): a visitor
  only picks among RAG_LLM_MODELS (tests/test_app_llm.py shows the sidebar), and nothing a visitor
  could name is imported or opened.
- Every message that can carry a server's text or a URL goes through :func:`rag.generate.redact`.
  The probe is a real local HTTP server that answers 401 and echoes the Authorization header (as
  some servers and proxies do), reached through the real ``ChatOpenAI`` client; the canary key must
  appear nowhere: not in the CLI's text or ``--json`` output, not on stderr of a real process, not in
  any log record, not on the app's page.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from conftest import HashEmbedder, FINLAND_Q, REPO, settings_for, use_chat, write_corpus
from rag import generate
from rag.generate import LLMUnavailable, backend_label, known_secrets, make_chat_model, redact
from rag.settings import Settings

CANARY = "sk-canary-7f3a9c1e55d04b2b"
PASSWORD = "pw-canary-0d9e8f7a"
RAG = Path(sys.executable).parent / "rag"


# ---------------------------------------------------------------------------------------------
# redact: one step for every message


@pytest.mark.parametrize("raw,expected", [
    (f"Error code: 401 - Invalid credentials: Authorization: Bearer {CANARY}",
     "Error code: 401 - Invalid credentials: Authorization: Bearer ***"),
    ("{'headers': {'authorization': 'Bearer abc.def-123'}}", "{'headers': {'authorization': 'Bearer ***'}}"),
    ('{"Authorization": "Basic dXNlcjpwdw=="}', '{"Authorization": "Basic ***"}'),
    ("proxy said: bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "proxy said: bearer ***"),
    ("x-api-key: s3cr3t-value, retry", "x-api-key: ***, retry"),
    ("GET https://api.example/v1/models?api_key=abc123&model=m", "GET https://api.example/v1/models?api_key=***&model=m"),
    ("see https://gen.example/v1?key=AIzaSy-000&alt=sse", "see https://gen.example/v1?key=***&alt=sse"),
    ("token=tok_123 password=hunter2 secret=xyz", "token=*** password=*** secret=***"),
    ('{"api_key": "sk-zzz", "model": "m"}', '{"api_key": "***", "model": "m"}'),
    ("connect to http://bob:hunter22@10.0.0.5:8000/v1 failed", "connect to http://***@10.0.0.5:8000/v1 failed"),
    ("ftp://anonymous@files.example/x", "ftp://***@files.example/x"),
])
def test_redact_removes_every_kind_of_credential(raw, expected):
    assert redact(raw) == expected


@pytest.mark.parametrize("prose", [
    "Basic requirements of the border agreement",
    "the bearer of bad news",
    "the primary key of the table; monkey=3",
    "http://localhost:11434 refused the connection",
    "Connection refused (Errno 111) after 60 s",
])
def test_redact_leaves_ordinary_text_alone(prose):
    assert redact(prose) == prose


def test_redact_replaces_the_configured_key_and_url_password_wherever_they_appear():
    s = Settings(llm_backend="openai", llm_api_key=CANARY, llm_base_url=f"http://bob:{PASSWORD}@127.0.0.1:8/v1")
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    text = f"echo {CANARY} / {PASSWORD} / {basic} / {CANARY.replace('-', '%2D')}"
    assert redact(text, s) == "echo *** / *** / *** / " + CANARY.replace("-", "%2D")  # only safe= chars were quoted
    assert set(known_secrets(s)) >= {CANARY, PASSWORD, basic}
    # in a model's answer only the literal secrets go: "Basic requirements" is prose there
    assert redact(f"Basic requirements {CANARY} token=1", s, secrets_only=True) == "Basic requirements *** token=1"


def test_the_key_read_from_openai_api_key_is_redacted_too(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    assert redact(f"got {CANARY}", Settings(llm_backend="openai")) == "got ***"  # read at use, not only by from_env


def test_short_secrets_are_not_replaced_literally_but_still_as_a_key():
    s = Settings(llm_backend="openai", llm_api_key="abc")
    assert redact("abc abcdef api_key=abc", s) == "abc abcdef api_key=***"


# ---------------------------------------------------------------------------------------------
# Chat models: credentials out of URLs, labels that name what was called


def test_url_credentials_travel_in_a_header_not_in_the_url_the_client_logs():
    pytest.importorskip("langchain_openai")
    chat = make_chat_model(Settings(llm_backend="openai", llm_api_key=CANARY,
                                    llm_base_url=f"http://bob:{PASSWORD}@127.0.0.1:8/v1"))
    assert chat.openai_api_base == "http://127.0.0.1:8/v1"
    assert chat.default_headers == {"Authorization": "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()}
    assert set(known_secrets(chat=chat)) >= {CANARY}
    assert backend_label(Settings(), chat) == "openai:gpt-4o-mini at http://127.0.0.1:8/v1"


def test_split_userinfo_keeps_urls_without_credentials_unchanged():
    assert generate.split_userinfo("http://localhost:11434") == ("http://localhost:11434", None)
    assert generate.split_userinfo("https://a%40b:p%3Aw@h/v1?x=1") == ("https://h/v1?x=1", ("a@b", "p:w"))


def test_backend_label_names_the_chat_model_that_was_called_not_the_settings():
    pytest.importorskip("langchain_openai")
    from langchain_core.language_models import FakeListChatModel
    from langchain_openai import ChatOpenAI

    ollama = Settings()  # the settings say ollama ...
    chat = ChatOpenAI(model="qwen2.5", base_url="http://127.0.0.1:8000/v1", api_key=CANARY)
    assert backend_label(ollama, chat) == "openai:qwen2.5 at http://127.0.0.1:8000/v1"  # ... but openai answered
    assert backend_label(ollama, FakeListChatModel(responses=["x"])) == "ollama:llama3.2 at http://localhost:11434"
    direct = ChatOpenAI(model="m", base_url=f"http://bob:{PASSWORD}@127.0.0.1:8/v1", api_key=CANARY)
    assert backend_label(ollama, direct) == "openai:m at http://***@127.0.0.1:8/v1"
    gguf = Settings(llm_backend="llamacpp", llm_model_path="/srv/private/models/qwen.gguf")
    assert backend_label(gguf) == "llamacpp:qwen.gguf"  # the file, not where the operator keeps it


def test_a_gguf_setting_naming_a_dotted_module_imports_nothing(monkeypatch, capsys):
    """`this.x` used to run `import this` (find_spec imports the parent package) and print the Zen."""
    monkeypatch.delitem(sys.modules, "this", raising=False)
    with pytest.raises(LLMUnavailable, match=r"GGUF model 'this\.x' not found"):
        make_chat_model(Settings(llm_backend="llamacpp", llm_model_path="this.x"))
    assert "this" not in sys.modules
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_choose_model_accepts_only_the_models_the_operator_listed():
    from rag.errors import BadSetting

    s = Settings.from_env({"RAG_LLM_MODELS": "llama3.2, qwen2.5,llama3.2", "RAG_LLM_MODEL": "phi3"})
    assert s.llm_models == ("llama3.2", "qwen2.5")
    assert generate.model_choices(s) == ("phi3", "llama3.2", "qwen2.5")
    assert generate.choose_model(s, "qwen2.5").llm_model == "qwen2.5"
    assert generate.choose_model(s, None) == s
    with pytest.raises(BadSetting, match=r"unknown model 'http://evil\.example'; expected one of: phi3, llama3\.2, qwen2\.5"):
        generate.choose_model(s, "http://evil.example")
    assert generate.model_choices(Settings()) == ("llama3.2",)  # default: just the configured model
    assert generate.configured_model(Settings(llm_models=("qwen2.5",))) == "qwen2.5"  # none configured: the first listed
    assert generate.model_choices(Settings(llm_backend="llamacpp", llm_models=("a",))) == ()  # the model is the file


# ---------------------------------------------------------------------------------------------
# A real server that echoes the Authorization header in its 401


@dataclass
class EchoServer:
    url: str  # base URL of the OpenAI-compatible API, ending in /v1
    port: int
    seen: list[dict] = field(default_factory=list)  # {"path", "authorization", "body"} per request


@pytest.fixture
def echo_401() -> Iterator[EchoServer]:
    server_box: list[EchoServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            server_box[0].seen.append({"path": self.path, "authorization": auth, "body": json.loads(body or b"{}")})
            # the header, and its credential alone (which no "Authorization:" pattern would catch)
            reply = json.dumps({"error": {"message": f"Invalid credentials. Authorization: {auth}; token {auth.split(' ')[-1]}",
                                          "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("WWW-Authenticate", f'Bearer realm="echo", error="{auth}"')
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_address[1]
    server_box.append(EchoServer(f"http://127.0.0.1:{port}/v1", port))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_box[0]
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def _openai_env(monkeypatch, url: str, key: str = CANARY) -> None:
    pytest.importorskip("langchain_openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name, value in {"RAG_ANSWER": "llm", "RAG_LLM_BACKEND": "openai", "RAG_LLM_BASE_URL": url,
                        "RAG_LLM_API_KEY": key, "RAG_LLM_TIMEOUT_S": "10"}.items():
        monkeypatch.setenv(name, value)


def _log_text(caplog) -> str:
    """Every captured record, as formatted (message, arguments and any traceback)."""
    return caplog.text + "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)


#: Records at this level and above are checked: the most any entry point emits (`rag --verbose`:
#: INFO; the app: Streamlit's INFO). httpcore's DEBUG records dump response headers verbatim; they
#: are emitted only if someone configures DEBUG logging (see README, Reliability).
LOG_LEVEL = logging.INFO


def _cli(settings, capsys, *args: str) -> tuple[int, str, str]:
    from rag.cli import main

    code = main(["ask", FINLAND_Q, *args, "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_an_echoed_key_is_in_no_cli_output_and_no_log_record(echo_401, real_settings, real_index, capsys, caplog, monkeypatch):
    _openai_env(monkeypatch, echo_401.url)
    caplog.set_level(LOG_LEVEL)  # every library's records, httpx and openai included
    code, text_out, text_err = _cli(real_settings, capsys)
    assert code == 0, text_err
    code, json_out, json_err = _cli(real_settings, capsys, "--json")
    assert code == 0, json_err
    # the probe is real: the server got the key and echoed it, and the client raised with its text
    assert [s["authorization"] for s in echo_401.seen] == [f"Bearer {CANARY}"] * 2
    notice = json.loads(json_out)["notices"][-1]
    assert notice.startswith(f"the language model (openai:gpt-4o-mini at {echo_401.url}) could not answer (")
    assert "Error code: 401 - Invalid credentials. Authorization: Bearer ***" in notice  # the server's text, redacted
    assert notice.endswith("); showing the extractive answer instead")
    assert f"note: {notice}" in text_out
    assert any(r.getMessage().startswith("LLM call failed: ") and "Bearer ***" in r.getMessage() for r in caplog.records)
    for where, text in [("text", text_out + text_err), ("--json", json_out + json_err), ("log records", _log_text(caplog))]:
        assert CANARY not in text, where


@pytest.mark.slow
def test_an_echoed_key_is_not_on_stderr_of_a_real_process(echo_401, real_settings, real_index):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k != "OPENAI_API_KEY"}
    env.update(RAG_LLM_BACKEND="openai", RAG_LLM_BASE_URL=echo_401.url, RAG_LLM_API_KEY=CANARY, RAG_LLM_TIMEOUT_S="10")
    out = subprocess.run(
        [str(RAG), "--verbose", "ask", FINLAND_Q, "--answer", "llm", "--index", str(real_settings.index_dir),
         "--corpus", str(real_settings.corpus_dir)],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert [s["authorization"] for s in echo_401.seen] == [f"Bearer {CANARY}"]
    assert "WARNING rag.generate: LLM call failed: " in out.stderr and "Error code: 401" in out.stderr
    assert "Authorization: Bearer ***" in out.stderr and "Authorization: Bearer ***" in out.stdout
    assert CANARY not in out.stdout and CANARY not in out.stderr


@pytest.mark.slow
def test_a_password_in_the_server_url_is_in_no_output(echo_401, real_settings, real_index, capsys, caplog, monkeypatch):
    url = f"http://bob:{PASSWORD}@127.0.0.1:{echo_401.port}/v1"
    _openai_env(monkeypatch, url)
    caplog.set_level(LOG_LEVEL)
    code, out, err = _cli(real_settings, capsys, "--json")
    assert code == 0, err
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert [s["authorization"] for s in echo_401.seen] == [f"Basic {basic}"]  # the URL's credentials were used
    notice = json.loads(out)["notices"][-1]
    assert notice.startswith(f"the language model (openai:gpt-4o-mini at {echo_401.url}) could not answer (")
    assert "Authorization: Basic ***" in notice
    for text in (out, err, _log_text(caplog)):
        assert PASSWORD not in text and basic not in text and CANARY not in text


# ---------------------------------------------------------------------------------------------
# The app's page


def _page_text(at) -> str:
    """Everything the page holds: each element's protobuf (values, labels, options, captions)."""
    parts: list[str] = []

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            parts.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(parts)


@pytest.mark.slow
def test_an_echoed_key_is_nowhere_on_the_app_page_and_the_notice_names_the_backend_used(
        echo_401, real_settings, real_index, caplog, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rag import ui

    _openai_env(monkeypatch, echo_401.url)
    monkeypatch.setenv("RAG_LLM_MODELS", "gpt-4o-mini,qwen2.5")
    monkeypatch.setenv("RAG_CORPUS_DIR", str(real_settings.corpus_dir))
    monkeypatch.setenv("RAG_INDEX_DIR", str(real_settings.index_dir))
    caplog.set_level(LOG_LEVEL)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        assert at.radio(key="answer_mode").value == "llm"  # RAG_ANSWER=llm
        assert "**API key:** set (not shown)" in at.sidebar.markdown[0].value
        at.selectbox(key="llm_model").set_value("qwen2.5").run()
        at.chat_input[0].set_value(FINLAND_Q).run()
        assert not at.exception, at.exception
    finally:
        st.cache_resource.clear()
    assert [(s["authorization"], s["body"]["model"]) for s in echo_401.seen] == [(f"Bearer {CANARY}", "qwen2.5")]
    reply = [m for m in at.chat_message if m.name == "assistant"][-1]
    captions = [c.value for c in reply.caption]
    notice = next(c for c in captions if "could not answer" in c)
    assert notice.startswith(ui.md_text(f"the language model (openai:qwen2.5 at {echo_401.url}) could not answer ("))
    assert ui.md_text("Authorization: Bearer ***") in notice
    page = _page_text(at)
    assert "50" in reply.markdown[0].value and "could not answer" in page
    assert CANARY not in page
    assert CANARY not in _log_text(caplog)


# ---------------------------------------------------------------------------------------------
# A server URL without a scheme, streamed secrets, the follow-up rewrite: the real pipeline on a
# small index embedded by a hash (no model is loaded), real clients, a real local server


MINISTERS_Q = "Where did the ministers meet?"


@pytest.fixture
def hashed_index(tmp_path, monkeypatch) -> Settings:
    """Settings of a two-document index built with HashEmbedder, which every later embedder lookup
    returns too; the reader is off (RAG_VERIFIER=off), so no model file is needed."""
    import rag.embed
    import rag.index

    monkeypatch.setattr(rag.embed, "get_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.setenv("RAG_VERIFIER", "off")
    corpus = write_corpus(tmp_path / "corpus", {
        "a.txt": "Title one\n\nThe ministers met in Vienna on Monday to discuss the border.\n",
        "b.md": "# Second\n\nFinland deployed fifty guards.\n",
    })
    settings = settings_for(corpus, tmp_path / "index", verifier="off")
    rag.index.build_index(settings, embedder=HashEmbedder())
    return settings


def _hashed_cli(settings, capsys, *args: str, command: str = "ask") -> tuple[int, str, str]:
    from conftest import run_cli

    argv = [command, *([MINISTERS_Q] if command == "ask" else []), *args,
            "--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)]
    return run_cli(argv, capsys)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_split_userinfo_reads_a_url_without_a_scheme_as_http():
    assert generate.split_userinfo(f"bob:{PASSWORD}@127.0.0.1:8") == ("http://127.0.0.1:8", ("bob", PASSWORD))
    assert generate.split_userinfo("localhost:11434") == ("localhost:11434", None)  # nothing to take out
    s = Settings(llm_base_url=f"bob:{PASSWORD}@127.0.0.1:8")
    assert set(known_secrets(s)) >= {PASSWORD, _basic("bob", PASSWORD)}
    assert backend_label(s) == "ollama:llama3.2 at ***@127.0.0.1:8"
    assert redact(f"at bob:{PASSWORD}@127.0.0.1:8 and alice:x9@h.example") == "at ***@127.0.0.1:8 and ***@h.example"
    assert redact("write to bob@example.com") == "write to bob@example.com"  # an e-mail address is no user-info


def test_a_shown_server_url_has_no_user_info_query_or_fragment():
    assert generate.shown_url(f"https://bob:{PASSWORD}@h.example/v1?code=SECRET&x=1#t") == "https://***@h.example/v1?***#***"
    assert generate.shown_url(f"bob:{PASSWORD}@h:8/v1?code=SECRET") == "***@h:8/v1?***"
    assert generate.shown_url("http://localhost:11434") == "http://localhost:11434"
    assert generate.shown_url("http://[::1?code=SECRET") == "http://[::1?***"  # unparseable: the query still goes
    assert backend_label(Settings(llm_base_url="http://h.example/?code=SECRET")) == "ollama:llama3.2 at http://h.example/?***"


def test_the_repr_of_settings_hides_the_url_password():
    for url, shown in [(f"http://bob:{PASSWORD}@h/v1", "'http://***@h/v1'"), (f"bob:{PASSWORD}@h:8", "'***@h:8'"),
                       ("http://h/p@x", "'http://h/p@x'")]:
        text = repr(Settings(llm_base_url=url, llm_api_key=CANARY))
        assert f"llm_base_url={shown}" in text and PASSWORD not in text and CANARY not in text
    assert repr(Settings()).startswith("Settings(corpus_dir=PosixPath('corpus'), index_dir=PosixPath('index'), ")


def test_known_secrets_reads_the_auth_and_headers_of_a_chat_model():
    pytest.importorskip("langchain_ollama")
    from langchain_ollama import ChatOllama

    basic = _basic("bob", PASSWORD)
    chat = ChatOllama(model="m", base_url="http://127.0.0.1:8", client_kwargs={"auth": ("bob", PASSWORD), "timeout": 3})
    assert set(known_secrets(chat=chat)) >= {PASSWORD, basic}
    headers = ChatOllama(model="m", client_kwargs={"headers": {"Authorization": f"Basic {basic}", "X-Api-Key": CANARY,
                                                               "Accept": "application/json"}})
    assert set(known_secrets(chat=headers)) >= {PASSWORD, basic, CANARY}
    assert "application/json" not in known_secrets(chat=headers)
    built = make_chat_model(Settings(llm_base_url=f"bob:{PASSWORD}@127.0.0.1:8"))
    assert built.base_url == "http://127.0.0.1:8" and built.client_kwargs["auth"] == ("bob", PASSWORD)
    assert redact(f"token {basic}", chat=built) == "token ***"


def test_a_scheme_less_url_password_is_sent_as_a_header_and_in_no_output(echo_401, hashed_index, capsys, caplog, monkeypatch):
    pytest.importorskip("langchain_ollama")
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "10")
    caplog.set_level(LOG_LEVEL)
    url = f"bob:{PASSWORD}@127.0.0.1:{echo_401.port}"
    code, text_out, text_err = _hashed_cli(hashed_index, capsys, "--answer", "llm", "--llm-base-url", url)
    assert code == 0, text_err
    code, json_out, json_err = _hashed_cli(hashed_index, capsys, "--answer", "llm", "--llm-base-url", url, "--json")
    assert code == 0, json_err
    basic = _basic("bob", PASSWORD)
    assert [(s["path"], s["authorization"]) for s in echo_401.seen] == [("/api/chat", f"Basic {basic}")] * 2
    notice = json.loads(json_out)["notices"][-1]
    assert notice.startswith(f"the language model (ollama:llama3.2 at http://127.0.0.1:{echo_401.port}) could not answer (")
    assert "Authorization: Basic ***; token ***" in notice  # the server's echo, both copies redacted
    assert f"note: {notice}" in text_out
    for where, text in [("text", text_out + text_err), ("--json", json_out + json_err), ("log", _log_text(caplog))]:
        assert PASSWORD not in text and basic not in text, where


def test_a_failed_follow_up_rewrite_logs_no_credential(echo_401, hashed_index, capsys, caplog, monkeypatch):
    """`rag chat`: the second line is a follow-up, rewritten by the model, which fails."""
    import io

    pytest.importorskip("langchain_ollama")
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "10")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{MINISTERS_Q}\nand what about Finland?\n"))
    caplog.set_level(LOG_LEVEL)
    url = f"http://bob:{PASSWORD}@127.0.0.1:{echo_401.port}"
    code, out, err = _hashed_cli(hashed_index, capsys, "--answer", "llm", "--llm-base-url", url, command="chat")
    assert code == 0, err
    basic = _basic("bob", PASSWORD)
    assert len(echo_401.seen) == 3 and {s["authorization"] for s in echo_401.seen} == {f"Basic {basic}"}
    [rewrite] = [r.getMessage() for r in caplog.records if "follow-up rewrite by the LLM failed" in r.getMessage()]
    assert "Authorization: Basic ***; token ***" in rewrite
    for text in (out, err, _log_text(caplog)):
        assert PASSWORD not in text and basic not in text


def test_rewrite_with_llm_redacts_with_the_settings_it_is_given(echo_401):
    pytest.importorskip("langchain_ollama")
    s = Settings(llm_base_url=f"bob:{PASSWORD}@127.0.0.1:{echo_401.port}", llm_timeout_s=10)
    chat = make_chat_model(s)
    basic = _basic("bob", PASSWORD)
    for kwargs in ({}, {"settings": s}):
        with pytest.raises(LLMUnavailable) as info:
            generate.rewrite_with_llm(chat, [("q", "a")], "and then?", **kwargs)
        assert "token ***" in str(info.value) and basic not in str(info.value) and PASSWORD not in str(info.value)
    # a chat model that does not say its credentials (a wrapper, a fake): the settings do
    from langchain_core.language_models import FakeListChatModel

    class Echoing(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise RuntimeError(f"server said: token {basic} for bob:{PASSWORD}")

    with pytest.raises(LLMUnavailable) as info:
        generate.rewrite_with_llm(Echoing(responses=["x"]), [("q", "a")], "and then?", settings=s)
    assert str(info.value) == "RuntimeError: server said: token *** for bob:***"
    with pytest.raises(LLMUnavailable) as info:  # without the settings nothing says what the secrets are
        generate.rewrite_with_llm(Echoing(responses=["x"]), [("q", "a")], "and then?")
    assert basic in str(info.value)


# Streamed text: the secrets arrive one character per chunk (FakeListChatModel streams that way)

STREAMED = f"Fifty guards [1]. The key is {CANARY} and the login {_basic('bob', PASSWORD)} ok, sk-can"


def test_stream_redactor_never_passes_on_a_piece_of_a_secret():
    s = Settings(llm_backend="openai", llm_api_key=CANARY, llm_base_url=f"http://bob:{PASSWORD}@h/v1")
    whole = redact(STREAMED, s, secrets_only=True)
    assert CANARY not in whole and whole.endswith("The key is *** and the login *** ok, sk-can")
    for cut in range(len(STREAMED) + 1):  # every split in two pieces
        r = generate.StreamRedactor(s)
        first = r.feed(STREAMED[:cut])
        rest = r.feed(STREAMED[cut:]) + r.flush()
        assert first + rest == whole, cut
        assert whole.startswith(first), cut  # nothing shown ever needs taking back
        assert "sk-canary" not in first and "YnV" not in first[first.find("login"):], cut
    r = generate.StreamRedactor(s)
    shown = [r.feed(ch) for ch in STREAMED]  # one character at a time
    assert "".join(shown) == whole.removesuffix("sk-can") and r.flush() == "sk-can"  # held back until the end
    assert generate.StreamRedactor().feed("sk-can") == "sk-can"  # no secrets known: nothing held back


def _stream_env(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("RAG_LLM_BACKEND", "openai")
    monkeypatch.setenv("RAG_LLM_API_KEY", CANARY)
    monkeypatch.setenv("RAG_LLM_BASE_URL", f"http://bob:{PASSWORD}@127.0.0.1:9/v1")


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_streamed_llm_text_on_the_terminal_is_redacted_piece_by_piece(hashed_index, capsys, monkeypatch, command):
    import io

    from langchain_core.language_models import FakeListChatModel

    _stream_env(monkeypatch)
    use_chat(monkeypatch, FakeListChatModel(responses=[STREAMED]))  # streams one character per chunk
    monkeypatch.setattr(sys, "stdin", io.StringIO(MINISTERS_Q + "\n"))
    code, out, err = _hashed_cli(hashed_index, capsys, "--answer", "llm", command=command)
    assert code == 0, err
    streamed, checked = out.split("\n\nChecked answer:\n", 1)
    assert streamed == "Fifty guards [1]. The key is *** and the login *** ok, sk-can"  # the held-back end flushed
    assert "The key is *** and the login *** ok" in checked
    basic = _basic("bob", PASSWORD)
    for piece in (CANARY, CANARY[:12], basic, basic[:12], PASSWORD):
        assert piece not in out and piece not in err


def test_streamed_llm_text_on_the_app_page_is_redacted_piece_by_piece(hashed_index, monkeypatch):
    """What the page shows while the answer streams (each st.markdown of the live placeholder)."""
    import streamlit as st
    from langchain_core.language_models import FakeListChatModel
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.testing.v1 import AppTest

    _stream_env(monkeypatch)
    monkeypatch.setenv("RAG_ANSWER", "llm")
    monkeypatch.setenv("RAG_CORPUS_DIR", str(hashed_index.corpus_dir))
    monkeypatch.setenv("RAG_INDEX_DIR", str(hashed_index.index_dir))
    use_chat(monkeypatch, FakeListChatModel(responses=[STREAMED]))
    shown: list[str] = []
    real_markdown = DeltaGenerator.markdown

    def markdown(self, body, *args, **kwargs):
        if str(body).endswith(" ▌"):
            shown.append(str(body))
        return real_markdown(self, body, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "markdown", markdown)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        at.run()
        at.chat_input[0].set_value(MINISTERS_Q).run()
        assert not at.exception, at.exception
    finally:
        st.cache_resource.clear()
    from rag import ui

    assert len(shown) == len(STREAMED)  # one update per streamed character
    assert shown[-1] == ui.md_text("Fifty guards [1]. The key is *** and the login *** ok, ") + " ▌"
    basic = _basic("bob", PASSWORD)
    for piece in (CANARY[:4], basic[:4]):  # not even the start of a secret was shown
        assert not any(piece in ui.md_text(x) or piece in x for x in shown), piece
    page = _page_text(at)
    assert CANARY not in page and basic not in page and PASSWORD not in page


def test_a_scheme_less_url_password_is_nowhere_on_the_app_page(echo_401, hashed_index, caplog, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rag import ui

    pytest.importorskip("langchain_ollama")
    for name, value in {"RAG_ANSWER": "llm", "RAG_LLM_BACKEND": "ollama", "RAG_LLM_TIMEOUT_S": "10",
                        "RAG_LLM_BASE_URL": f"bob:{PASSWORD}@127.0.0.1:{echo_401.port}",
                        "RAG_CORPUS_DIR": str(hashed_index.corpus_dir), "RAG_INDEX_DIR": str(hashed_index.index_dir)}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(LOG_LEVEL)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        at.chat_input[0].set_value(MINISTERS_Q).run()
        assert not at.exception, at.exception
    finally:
        st.cache_resource.clear()
    basic = _basic("bob", PASSWORD)
    assert [s["authorization"] for s in echo_401.seen] == [f"Basic {basic}"]
    assert ui.md_text(f"***@127.0.0.1:{echo_401.port}") in at.sidebar.markdown[0].value
    reply = [m for m in at.chat_message if m.name == "assistant"][-1]
    notice = next(c.value for c in reply.caption if "could not answer" in c.value)
    assert notice.startswith(ui.md_text(f"the language model (ollama:llama3.2 at http://127.0.0.1:{echo_401.port}) could not answer ("))
    assert ui.md_text("token ***") in notice
    page = _page_text(at)
    assert PASSWORD not in page and basic not in page
    assert PASSWORD not in _log_text(caplog) and basic not in _log_text(caplog)
