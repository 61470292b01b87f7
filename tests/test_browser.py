"""The chat app in a real browser: `streamlit run app.py` on a free localhost port, driven by
Playwright for Python with Debian's ``chromium`` (Playwright's own browser download is not used).

A person's session: ask a question, see the answer, open its citation and check the supporting
sentence is highlighted, show it in context, ask one the document cannot answer; then upload a
document containing ``<script>``, ``<img onerror>`` and Markdown link/image tricks through the
sidebar, ask a question while the app re-indexes (answered from the previous index; the build goes
on and the page picks up the new index by itself), ask about the new document, and check the hostile text shows as literal text and
never becomes markup (no such element in the DOM, no dialog); last, run the Evaluation view on a
three-question set and see its table, plots and a question's drill-down. Screenshots go to ``test-artifacts/``
(not committed); the timings are printed and written there too, not asserted.

Skipped, with the reason, when ``chromium`` is not on PATH or Playwright is not installed
(``.ci/run`` installs chromium and sets ``REQUIRE_BROWSER_TESTS=1``, which turns the skip into a
failure; the ``dev`` extra installs Playwright).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import FINLAND_Q, REPO, free_port

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
STREAMLIT = Path(sys.executable).with_name("streamlit")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]
ANSWER_TIMEOUT_MS = 180_000  # first load includes the model; a re-index embeds the whole corpus
OFF_TOPIC = "What did the document say about the price of coffee in Brazil?"
SHORT_Q = "What is the budget of Mauritania's land-and-sea border action adopted in October 2023?"
MALTA_Q = "How many ferries did the ferry inspections in Malta cover?"

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![img](http://example.invalid/x.png)",
]
HOSTILE_DOC = (
    "# Ferry inspections in Malta\n\n"
    "The ferry inspections in Malta covered 27 ferries in 2023, and the harbour authority of Valletta "
    f"published the results {HOSTILE[0]} {HOSTILE[1]} {HOSTILE[2]} {HOSTILE[3]} in its annual report. "
    "Inspectors found missing life jackets on four of the ferries.\n"
)
HIGHLIGHT = "span.stMarkdownColoredBackground, span[style*='background-color']"
WORD_JOINER = "\u2060"  # rag.ui inserts it (invisibly) to stop GFM from linking bare URLs


# ---------------------------------------------------------------------------------------------
# The server and the browser


@dataclass
class Server:
    url: str
    started: float  # time.perf_counter() when the process was started
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def since_start(self) -> float:
        return time.perf_counter() - self.started


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"streamlit did not answer on {url} within {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _unavailable(reason: str):
    """Skip, or fail where the browser test must run (``REQUIRE_BROWSER_TESTS=1``, set by .ci/run)."""
    if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
        pytest.fail(reason + " (REQUIRE_BROWSER_TESTS=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")  # session scope: checked before the (session) index is built
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable("Debian's chromium is not on PATH (`apt-get install chromium`; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright for Python is not installed (`pip install -e .[dev]`)")
    return path


@pytest.fixture(scope="module")
def server(chromium, real_settings, real_index, tmp_path_factory, request) -> Iterator[Server]:
    """`streamlit run app.py` on a private copy of the real corpus and its (up-to-date) index."""
    root = tmp_path_factory.mktemp("browser")
    corpus, index = root / "corpus", root / "index"
    shutil.copytree(real_settings.corpus_dir, corpus)
    shutil.copytree(real_settings.index_dir, index)
    eval_dir = root / "eval"  # a 3-question set, so the Evaluation view runs in seconds
    eval_dir.mkdir()
    lines = (REPO / "eval" / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    (eval_dir / "qa.jsonl").write_text("\n".join(lines[:2] + [ln for ln in lines if '"unanswerable"' in ln][:1]) + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CORPUS_DIR=str(corpus), RAG_INDEX_DIR=str(index), RAG_CACHE_DIR=str(real_settings.cache_dir),
               RAG_EVAL_DIR=str(eval_dir))
    cmd = [
        str(STREAMLIT), "run", str(REPO / "app.py"),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]
    log = root / "streamlit.log"
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(proc, url, log)
            srv = Server(url, started, log)
            srv.timings["server healthy"] = srv.since_start()
            yield srv
        finally:
            _stop(proc)
    _report(srv.timings, request.config)


def _report(timings: dict[str, float], config) -> None:
    """Print the timings (past pytest's output capture) and keep them in test-artifacts/."""
    if not timings:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2) + "\n")
    line = "[browser timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in timings.items())
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # teardown runs under capture; this line is for the reader
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server, request):
    """A new browser session with every JavaScript dialog recorded (and dismissed)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
    try:
        yield pg
    finally:
        try:  # the page as the test left it: on a failure, this shows what was on screen
            _shot(pg, f"{request.node.name}-last")
        finally:
            context.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# ---------------------------------------------------------------------------------------------
# Steps


def _open(page, server: Server):
    from playwright.sync_api import expect

    page.goto(server.url)
    chat = page.get_by_test_id("stChatInputTextArea")
    expect(chat).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    return chat


def _assistant_messages(page):
    return page.get_by_test_id("stChatMessage").filter(has=page.get_by_test_id("stChatMessageAvatarAssistant"))


def _ask(page, question: str):
    """Type a question, send it, and return the new assistant message once it is complete (its
    caption with the timing is the last thing the app writes)."""
    from playwright.sync_api import expect

    before = _assistant_messages(page).count()
    chat = page.get_by_test_id("stChatInputTextArea")
    chat.fill(question)
    chat.press("Enter")
    reply = _assistant_messages(page).nth(before)
    expect(reply.get_by_test_id("stCaptionContainer").last).to_contain_text(" ms", timeout=ANSWER_TIMEOUT_MS)
    return reply


def _expand_all(reply) -> None:
    from playwright.sync_api import expect

    for i in range(reply.get_by_test_id("stExpander").count()):
        expander = reply.get_by_test_id("stExpander").nth(i)
        expander.locator("summary").click()
        expect(expander.get_by_test_id("stExpanderDetails")).to_be_visible()


def _show_context(container) -> None:
    """Turn on the "Show in context" switch in ``container`` (a citation) and wait for the context to
    appear under its passage. A click that lands while the app still reruns for an earlier widget can be
    lost (CI, 2026-12-07): the switch's own state says whether it took, and it is given again if not."""
    from playwright.sync_api import expect

    switch = container.get_by_role("switch", name="Show in context")
    for _ in range(3):
        if not switch.is_checked():
            container.get_by_text("Show in context").click()
        try:
            expect(container.get_by_test_id("stMarkdown")).to_have_count(2, timeout=10_000)
            return
        except AssertionError:
            continue
    expect(container.get_by_test_id("stMarkdown")).to_have_count(2)


# ---------------------------------------------------------------------------------------------
# Tests


def test_browser_answers_and_the_cited_sentence_is_highlighted_in_the_passage(page, server):
    from playwright.sync_api import expect

    _open(page, server)
    server.timings["chat input visible"] = server.since_start()
    reply = _ask(page, FINLAND_Q)
    server.timings["first answer (from server start)"] = server.since_start()
    expect(reply.get_by_test_id("stMarkdownContainer").first).to_have_text("Answer: 50")  # the short answer first
    answer = reply.get_by_test_id("stMarkdownContainer").nth(1)  # then the quoted sentence
    expect(answer).to_contain_text("50 European border guards")
    expect(answer).to_contain_text("[1]")

    first = reply.get_by_test_id("stExpander").first
    expect(first.locator("summary")).to_contain_text("p. 1")
    first.locator("summary").click()
    marked = first.locator(HIGHLIGHT).first
    expect(marked).to_be_visible()
    expect(marked).to_contain_text("50 European border guards")
    _shot(page, "browser-01-answer-with-citation")

    _show_context(first)
    context = first.get_by_test_id("stMarkdown").nth(1)  # the passage, then its context
    expect(context).to_contain_text("…")
    expect(context.locator(HIGHLIGHT).first).to_be_visible()
    _shot(page, "browser-02-citation-in-context")

    # a short answer: in bold above the quoted sentence, and bold inside the highlighted sentence
    reply = _ask(page, SHORT_Q)
    short = reply.get_by_test_id("stMarkdownContainer").first
    expect(short).to_have_text("Answer: EUR 6.4 million")
    expect(short.locator("strong")).to_have_text("Answer: EUR 6.4 million")
    quoted = reply.get_by_test_id("stMarkdownContainer").nth(1)
    expect(quoted).to_contain_text("[1]")
    expect(quoted).to_contain_text("(EUR 6.4 million)")  # the short answer is inside its quoted sentence
    cited = reply.get_by_test_id("stExpander").first
    cited.locator("summary").click()
    expect(cited.locator(HIGHLIGHT).locator("strong").first).to_have_text("EUR 6.4 million")
    _shot(page, "browser-02b-short-answer")

    t0 = time.perf_counter()
    reply = _ask(page, OFF_TOPIC)
    server.timings["second answer"] = time.perf_counter() - t0
    expect(reply.get_by_test_id("stMarkdownContainer").first).to_contain_text("The documents do not say")
    expect(reply).to_contain_text("Closest passages:")
    assert reply.get_by_test_id("stExpander").count() >= 1
    _shot(page, "browser-03-abstention")
    assert page.dialogs == []


def test_browser_upload_reindexes_and_hostile_markup_shows_as_literal_text(page, server):
    from playwright.sync_api import expect

    _open(page, server)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
        files=[{"name": "malta ferries.md", "mimeType": "text/markdown", "buffer": HOSTILE_DOC.encode()}]
    )
    expect(page.get_by_test_id("stFileChip")).to_contain_text("malta ferries.md")
    expect(page.get_by_test_id("stFileChipIconSpinner")).to_have_count(0)  # sent to the server
    t0 = time.perf_counter()
    page.get_by_role("button", name="Add to the corpus and re-index").click()
    expect(page.get_by_text("Added malta_ferries.md")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    # A question while the re-index runs (it reruns the script): answered from the previous index,
    # and the build carries on; the page picks up the new index by itself when it is done.
    expect(page.get_by_text("The index is being rebuilt")).to_be_visible()
    during = _ask(page, FINLAND_Q)
    # (whether this answer still came from the previous index depends on how fast the tiny re-index is
    # against the reader's first question in this server: the notice itself is checked with AppTest)
    expect(during.get_by_test_id("stMarkdownContainer").first).to_contain_text("50")
    expect(page.get_by_text("Index built: 2 documents")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_text("The index is being rebuilt")).to_have_count(0)
    server.timings["upload and re-index"] = time.perf_counter() - t0
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Documents: 2")
    _shot(page, "browser-04-upload-reindexed")

    t0 = time.perf_counter()
    reply = _ask(page, MALTA_Q)
    server.timings["answer after re-index"] = time.perf_counter() - t0
    expect(reply.get_by_test_id("stMarkdownContainer").first).to_have_text("Answer: 27")
    expect(reply.get_by_test_id("stMarkdownContainer").nth(1)).to_contain_text("27 ferries")
    _expand_all(reply)
    for i in range(reply.get_by_test_id("stExpander").count()):
        details = reply.get_by_test_id("stExpander").nth(i).get_by_test_id("stExpanderDetails")
        if details.get_by_text("Show in context").count():
            _show_context(details)  # one switch at a time
    expect(reply.get_by_test_id("stExpanderDetails").first.get_by_test_id("stMarkdown")).to_have_count(2)
    _shot(page, "browser-05-hostile-document")

    shown = reply.inner_text().replace(WORD_JOINER, "")
    for literal in HOSTILE:
        assert literal in shown, f"{literal!r} is not shown as text"
    assert page.locator('img[src="x"], img[src*="example.invalid"], [onerror]').count() == 0
    assert page.locator('a[href^="javascript:" i], a[href*="example.invalid"]').count() == 0
    scripts = page.evaluate("() => [...document.scripts].filter(s => s.textContent.includes('alert(1)')).length")
    assert scripts == 0
    assert page.dialogs == []


def test_browser_eval_view_runs_and_shows_metrics_plots_and_a_question(page, server):
    from playwright.sync_api import expect

    _open(page, server)
    page.get_by_test_id("stSidebar").get_by_text("Evaluation", exact=True).click()
    run = page.get_by_role("button", name="Run the evaluation")
    expect(run).to_be_visible()
    t0 = time.perf_counter()
    run.click()
    expect(page.get_by_text("Questions:", exact=False)).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    server.timings["eval, 3 questions x 4 rows"] = time.perf_counter() - t0
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_test_id("stImage")).to_have_count(2)
    expect(page.get_by_text("Gold answer:")).to_be_visible()
    expect(page.get_by_text("Our answer:")).to_be_visible()
    _shot(page, "browser-06-evaluation")
    assert page.dialogs == []
