"""The app's document library (list, re-index one, remove one) and its "answer from" filter, with
Streamlit's AppTest on a copy of the tiny corpus and the real model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag import ui
from rag.errors import RagError
from rag.upload import REMOVED_DIR, remove_document
from test_app import _app, _ask, _until_built

pytestmark = pytest.mark.slow


@pytest.fixture
def app_copy(tiny_copy, monkeypatch):
    at = _until_built(_app(monkeypatch, Path(tiny_copy.corpus_dir), Path(tiny_copy.index_dir)))
    return tiny_copy, at


def _documents_view(at):
    at.radio(key="view").set_value("Documents").run()
    assert not at.exception, at.exception
    return at


def _rows(at) -> list[dict]:
    return at.dataframe[0].value.to_dict("records")


def _wait_for_build(at):
    """Rerun until the requested build has finished and been reported; the success messages seen."""
    import time

    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        seen += [re.sub(r"\\(.)", r"\1", s.value) for s in at.success]  # the Markdown escapes undone
        if any(m.startswith("Index built") for m in seen):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"no build reported; saw {seen}")


def test_the_library_lists_indexed_and_skipped_files(app_copy):
    _, at = app_copy
    rows = _rows(_documents_view(at))
    assert [(r["File"], r["Status"]) for r in rows] == [
        ("border.md", "indexed"), ("empty.txt", "skipped: empty file"), ("notes.txt", "indexed")]
    border = rows[0]
    assert border["Title"] == "Border Report 2023" and border["Passages"] == 2 and border["Indexed"]


def test_reindex_one_document_reads_only_it_again(app_copy):
    settings, at = app_copy
    at = _documents_view(at)
    at.selectbox(key="library_doc").set_value("notes.txt").run()
    [b] = [b for b in at.button if b.key == "library_reindex"]
    b.click().run()
    seen = _wait_for_build(at)
    assert any("Changed: notes.txt." in m and "2 unchanged." in m for m in seen), seen


def test_remove_needs_confirmation_and_moves_the_file_out_of_the_corpus(app_copy):
    settings, at = app_copy
    corpus = Path(settings.corpus_dir)
    at = _documents_view(at)
    at.selectbox(key="library_doc").set_value("border.md").run()
    [b] = [b for b in at.button if b.key == "library_remove"]
    assert b.disabled
    at.checkbox(key="library_confirm").check().run()
    [b] = [b for b in at.button if b.key == "library_remove"]
    b.click().run()
    assert not (corpus / "border.md").exists()
    assert (corpus / REMOVED_DIR / "border.md").is_file() and (corpus / REMOVED_DIR / "border.meta.json").is_file()
    seen = _wait_for_build(at)
    assert any("Removed: border.md." in m for m in seen), seen
    assert [r["File"] for r in _rows(_documents_view(at))] == ["empty.txt", "notes.txt"]


def test_answers_can_be_limited_to_chosen_documents(app_copy):
    _, at = app_copy
    at.multiselect(key="only_docs").set_value(["border.md"]).run()
    at = _ask(at, "Where did the ministers meet?")
    turn = at.session_state["turns"][-1]
    assert turn.answer is not None and {c.doc for c in turn.answer.passages} <= {"border.md"}


def test_remove_document_refuses_paths_out_of_the_corpus_and_links(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (corpus / "link.txt").symlink_to(tmp_path / "outside.txt")
    for bad in ("../outside.txt", "/etc/passwd", "link.txt", "missing.txt", ".rag-removed/x.txt", ""):
        with pytest.raises(RagError):
            remove_document(corpus, bad)
    assert (tmp_path / "outside.txt").read_text() == "secret"
    (corpus / "a.txt").write_text("one")
    (corpus / REMOVED_DIR).mkdir()
    (corpus / REMOVED_DIR / "a.txt").write_text("an older removal")
    moved = remove_document(corpus, "a.txt")
    assert moved.name == "a-1.txt" and moved.read_text() == "one"
    assert (corpus / REMOVED_DIR / "a.txt").read_text() == "an older removal"


def test_ocr_pages_are_listed_as_runs():
    assert ui._page_list([1, 2, 3, 7]) == "pages 1-3, 7" and ui._page_list([4]) == "page 4"
