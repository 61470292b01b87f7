"""Hostile review (issue 16), the index and corpus items: every probe of the review, as a test.

1. ``rag index`` replaces only a folder that is missing, empty (or holds only a README.md) or a rag
   index; never the corpus, a folder inside or around it, a file, or anyone's notes.
4. Files outside the corpus (symbolic links) and special files (FIFOs, devices, sockets) are never
   opened unless ``follow_symlinks`` allows links.
5. An index edited without changing size and mtime (``touch -r``) is refused at load; a damaged file
   is one "index damaged: FILE: …" line, never a traceback.
6. A manifest or sidecar with wrong types is "index damaged" (manifest) or ignored with a notice
   (sidecar), never an AttributeError.
7. A build killed at any step of the swap leaves an index that loads (the previous one is restored).
8. A file as the index, an unwritable parent, a read-only index folder: one line, exit 2, nothing touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import HashEmbedder, CACHE_DIR, REPO, settings_for, write_corpus
from rag.cli import main
from rag.errors import BadSetting, IndexCorrupt, IndexLocked, IndexMissing, IndexRefused
from rag.index import (MANIFEST, Manifest, build_index, check_index_target, index_lock, load_index, load_manifest,
                       verify_index)
from rag.load import Sidecar, UnreadableFile, load_corpus, load_file, scan_corpus, sha256_file
from rag.settings import Settings

GOOD = {"good.txt": "Good notes\n\nThe harbour of Valletta was inspected in March.\n"}


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rag: error: ") and "Traceback" not in err, err
    return lines[0]


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: file contents' sha256, or 'dir' / 'link -> target'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(index: Path) -> list[str]:
    return sorted(p.name for p in index.parent.iterdir() if p.name.startswith(f".{index.name}.") and p.is_dir())


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything asks for the embedding model (a refusal must come first)."""
    import rag.embed

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the index folder was checked")

    monkeypatch.setattr(rag.embed, "get_embedder", refuse)


# ---------------------------------------------------------------------------------------------
# 1. Which folders `rag index` may replace


@pytest.fixture
def notes(tmp_path) -> Path:
    """mkdir -p notes/sub && echo precious > notes/thesis.docx"""
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    (tmp_path / "notes" / "thesis.docx").write_text("precious\n")
    return tmp_path / "notes"


def test_rag_index_refuses_a_folder_of_notes_and_touches_nothing(tmp_path, notes, capsys, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    before = tree(tmp_path)
    code, out, err = run(["index", "--corpus", corpus, "--index", notes], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"{notes} is not a rag index" in line and "thesis.docx" in line and "sub/" in line
    assert tree(tmp_path) == before  # nothing renamed, deleted or created (not even a lock file)


def test_rag_index_dir_from_the_environment_is_refused_the_same_way(tmp_path, notes, capsys, monkeypatch, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    monkeypatch.setenv("RAG_INDEX_DIR", str(notes))
    code, _, err = run(["index", "--corpus", corpus], capsys)
    assert code == 2 and f"{notes} is not a rag index" in one_error_line(err)
    assert (notes / "thesis.docx").read_text() == "precious\n"


@pytest.mark.parametrize(
    "index_of, words",
    [
        (lambda root: root / "corpus", "is the corpus folder"),
        (lambda root: root / "corpus" / "idx", "is inside the corpus folder"),
        (lambda root: root / "corpus" / "sub" / "idx", "is inside the corpus folder"),
        (lambda root: root, "contains the corpus folder"),
        (lambda root: root / "link-to-corpus", "is the corpus folder"),
        (lambda root: root / "link-to-corpus" / "idx", "is inside the corpus folder"),
    ],
    ids=["same", "inside", "deep-inside", "around", "symlink-to-corpus", "inside-through-symlink"],
)
def test_the_index_may_not_be_contain_or_be_inside_the_corpus(tmp_path, capsys, index_of, words, no_model):
    corpus = write_corpus(tmp_path / "corpus", {**GOOD, "sub/more.txt": "More notes about ferries.\n"})
    (tmp_path / "link-to-corpus").symlink_to(corpus)
    before = tree(tmp_path)
    code, _, err = run(["index", "--corpus", corpus, "--index", index_of(tmp_path)], capsys)
    assert code == 2
    assert words in one_error_line(err)
    assert tree(tmp_path) == before


def test_a_corpus_reached_through_a_symlink_is_still_the_corpus(tmp_path, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (tmp_path / "alias").symlink_to(corpus)
    with pytest.raises(IndexRefused, match="is inside the corpus folder"):
        build_index(settings_for(tmp_path / "alias", corpus / "index"))
    assert not (corpus / "index").exists()


@pytest.mark.parametrize(
    "contents",
    [
        {"manifest.json": '{"name": "My web app", "icons": []}'},  # somebody's manifest.json, alone
        {"manifest.json": '{"format_version": 1}', "index.html": "<html>"},  # rag's names, plus another
        {"chunks.jsonl/": None},  # rag's name, but a folder
        {"lexical/": None, "lexical/sub/": None},
    ],
    ids=["foreign-manifest", "extra-file", "name-of-the-wrong-kind", "folder-in-lexical"],
)
def test_a_folder_that_only_looks_like_an_index_is_refused(tmp_path, contents, no_model):
    folder = tmp_path / "index"
    folder.mkdir()
    for name, text in contents.items():
        if name.endswith("/"):
            (folder / name).mkdir(parents=True)
        else:
            (folder / name).write_text(text)
    before = tree(folder)
    with pytest.raises(IndexRefused, match="is not a rag index"):
        build_index(settings_for(write_corpus(tmp_path / "corpus", GOOD), folder))
    assert tree(folder) == before


def test_an_index_with_a_file_of_the_user_added_is_not_replaced(tiny_copy, no_model):
    index = Path(tiny_copy.index_dir)
    (index / "thesis.docx").write_text("precious\n")
    before = tree(index)
    with pytest.raises(IndexRefused, match=r"not a rag index \(it holds thesis\.docx\)"):
        build_index(tiny_copy, force=True)
    assert tree(index) == before


@pytest.mark.parametrize("placeholder", ["missing", "empty", "repo-readme"])
def test_missing_empty_and_readme_only_folders_may_be_built(tmp_path, placeholder):
    index = tmp_path / "index"
    if placeholder != "missing":
        index.mkdir()
    if placeholder == "repo-readme":
        (index / "README.md").write_bytes((REPO / "index" / "README.md").read_bytes())  # the repo's placeholder
    assert check_index_target(index, tmp_path / "corpus") == index.resolve()


@pytest.mark.slow
def test_the_repo_index_placeholder_folder_is_built_and_keeps_its_readme(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    index = tmp_path / "index"
    index.mkdir()
    readme = (REPO / "index" / "README.md").read_bytes()
    (index / "README.md").write_bytes(readme)
    code, out, err = run(["index", "--corpus", corpus, "--index", index, "--no-progress"], capsys)
    assert code == 0, err
    assert out.startswith("built index: 1 documents")
    assert (index / "README.md").read_bytes() == readme
    assert load_index(settings_for(corpus, index)).chunks


def test_the_library_call_behind_the_apps_rebuild_button_refuses_too(tmp_path, notes, no_model):
    """app.py's rebuild button calls rag.index.build_index(settings, force=...)."""
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    for force in (False, True):
        with pytest.raises(IndexRefused, match="is not a rag index"):
            build_index(settings_for(corpus, notes), force=force)
        with pytest.raises(IndexRefused, match="is the corpus folder"):
            build_index(settings_for(corpus, corpus), force=force)
    assert (notes / "thesis.docx").read_text() == "precious\n"
    assert sorted(p.name for p in corpus.iterdir()) == ["good.txt"]


@pytest.mark.slow
def test_leftover_folders_that_are_not_index_files_are_never_deleted(tiny_copy):
    index = Path(tiny_copy.index_dir)
    mine = index.parent / ".index.old-999"  # named like a leftover, but somebody's folder
    mine.mkdir()
    (mine / "thesis.docx").write_text("precious\n")
    build_index(tiny_copy, force=True)
    assert (mine / "thesis.docx").read_text() == "precious\n"


# ---------------------------------------------------------------------------------------------
# 8. A file as the index, an unwritable parent, a read-only index folder


def test_a_regular_file_as_the_index_is_refused_at_once(tmp_path, capsys, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    target = tmp_path / "index.txt"
    target.write_text("not a folder\n")
    code, _, err = run(["index", "--corpus", corpus, "--index", target], capsys)
    assert code == 2
    assert f"index folder {target} is a file, not a folder" in one_error_line(err)
    assert target.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "index.txt"]  # no lock, no temp folder


def test_an_index_below_a_file_is_one_line(tmp_path, capsys, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["index", "--corpus", corpus, "--index", tmp_path / "afile" / "index"], capsys)
    assert code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in one_error_line(err)


@pytest.fixture
def unwritable_folder(tmp_path) -> Path:
    """A folder nobody may create files in: a read-only one, or (root writes anywhere) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        os.chmod(folder, 0o555)
        yield folder
        os.chmod(folder, 0o755)
        return
    try:
        Path("/sys/.rag-probe").touch()
    except OSError:
        yield Path("/sys")
    else:
        Path("/sys/.rag-probe").unlink()
        pytest.skip("/sys is writable here")


def test_an_unwritable_parent_folder_is_one_line(tmp_path, unwritable_folder, capsys, no_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    before = sorted(os.listdir(unwritable_folder))
    code, _, err = run(["index", "--corpus", corpus, "--index", unwritable_folder / "rag-index"], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"cannot write in {unwritable_folder} (Permission denied)" in line and "choose another --index" in line
    assert sorted(os.listdir(unwritable_folder)) == before


def test_a_read_only_index_folder_is_refused_not_replaced(tiny_copy, capsys, no_model):
    index = Path(tiny_copy.index_dir)
    (Path(tiny_copy.corpus_dir) / "notes.txt").write_text("Completely new notes.", encoding="utf-8")
    os.chmod(index, 0o555)
    try:
        before = tree(index)
        code, _, err = run(["index", "--corpus", tiny_copy.corpus_dir, "--index", index], capsys)
        assert code == 2
        line = one_error_line(err)
        assert f"index folder {index} is read-only" in line and "chmod -R u+w" in line
        assert tree(index) == before and leftovers(index) == []  # replaced: no; a read-only .old-*: none
    finally:
        os.chmod(index, 0o755)


def test_a_read_only_index_that_is_up_to_date_is_reported_so(tiny_copy, no_model):
    index = Path(tiny_copy.index_dir)
    os.chmod(index / "lexical", 0o555)
    os.chmod(index, 0o555)
    try:
        assert build_index(tiny_copy).status == "up-to-date"  # nothing to write: no refusal
        with pytest.raises(IndexRefused, match="read-only"):
            build_index(tiny_copy, force=True)
    finally:
        os.chmod(index, 0o755)
        os.chmod(index / "lexical", 0o755)


# ---------------------------------------------------------------------------------------------
# 4. Files outside the corpus, and special files


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def within(seconds: float, fn, *args):
    """``fn(*args)`` in a thread; fail (instead of hanging the suite) if it blocks."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} blocked (it opened a FIFO?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_symlink_to_a_file_outside_the_corpus_is_skipped_with_a_notice(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (corpus / "passwd.txt").symlink_to("/etc/passwd")
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["good.txt"]
    (refused,) = report.refused
    assert refused.doc_id == "passwd.txt"
    assert "symbolic link to a file outside the corpus folder" in refused.reason and "--follow-symlinks" in refused.reason
    assert [p.name for p in scan_corpus(corpus).files] == ["good.txt"]


def test_follow_symlinks_indexes_a_file_outside_the_corpus(tmp_path):
    outside = write_corpus(tmp_path / "elsewhere", {"shared.txt": "Shared notes\n\nThe Gozo ferry was repaired.\n"})
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (corpus / "shared.txt").symlink_to(outside / "shared.txt")
    report = load_corpus(corpus, follow_symlinks=True)
    assert [d.doc_id for d in report.documents] == ["good.txt", "shared.txt"] and report.refused == ()
    assert "Gozo" in report.documents[1].text


def test_a_symlink_inside_the_corpus_is_indexed(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", {**GOOD, "2023/report.txt": "Report\n\nThe Bari port reopened.\n"})
    (corpus / "latest.txt").symlink_to(corpus / "2023" / "report.txt")
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["2023/report.txt", "good.txt", "latest.txt"]
    assert report.refused == ()


def test_linked_folders_outside_are_refused_and_followed_only_when_asked(tmp_path):
    outside = write_corpus(tmp_path / "elsewhere", {"secret.txt": "Secret notes about Riga.\n"})
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (corpus / "ext").symlink_to(outside)
    (outside / "loop").symlink_to(outside)  # a cycle: must end
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["good.txt"]
    assert [(r.doc_id, "outside the corpus" in r.reason) for r in report.refused] == [("ext/", True)]
    followed = within(30, load_corpus, corpus, 50.0, True)
    assert [d.doc_id for d in followed.documents] == ["ext/secret.txt", "good.txt"]


def test_fifos_devices_and_sockets_are_skipped_unopened(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    fifo(corpus / "pipe.txt")
    fifo(corpus / "good.meta.json")  # a FIFO as a sidecar: ignored, its document still loads
    (corpus / "zero.txt").symlink_to("/dev/zero")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(corpus / "sock.md"))
        for follow in (False, True):
            report = within(30, load_corpus, corpus, 50.0, follow)
            assert [d.doc_id for d in report.documents] == ["good.txt"]
            reasons = {r.doc_id: r.reason for r in report.refused}
            assert "a FIFO" in reasons["pipe.txt"] and "never opened" in reasons["pipe.txt"]
            assert "a socket" in reasons["sock.md"]
            assert ("a character device" if follow else "outside the corpus") in reasons["zero.txt"]
            assert any(n.startswith("good.meta.json: metadata ignored") and "a FIFO" in n for n in report.notices)
    finally:
        sock.close()


def test_a_fifo_swapped_in_after_the_scan_is_not_read(tmp_path):
    """load_file opens without blocking and checks the file kind before reading."""
    with pytest.raises(UnreadableFile, match="not a regular file"):
        within(30, load_file, fifo(tmp_path / "late.txt"))
    with pytest.raises(OSError, match="not a regular file"):
        within(30, sha256_file, tmp_path / "late.txt")
    (tmp_path / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text("Notes.\n")
    with pytest.raises(UnreadableFile, match="symbolic link"):
        load_file(tmp_path / "link.txt", follow=False)


def test_the_freshness_check_never_opens_a_fifo(tiny_copy):
    from rag.index import stale_reasons

    fifo(Path(tiny_copy.corpus_dir) / "pipe.txt")
    fifo(Path(tiny_copy.corpus_dir) / "pipe.meta.json")
    manifest = load_manifest(Path(tiny_copy.index_dir))
    assert within(30, stale_reasons, manifest, tiny_copy) == []  # refused files are not corpus files


@pytest.mark.slow
def test_rag_index_skips_links_and_fifos_names_them_and_is_then_up_to_date(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (corpus / "passwd.txt").symlink_to("/etc/passwd")
    fifo(corpus / "pipe.txt")
    args = ["index", "--corpus", corpus, "--index", tmp_path / "index", "--no-progress"]
    code, out, err = within(240, run, args, capsys)
    assert code == 0, err
    assert out.startswith("built index: 1 documents")
    assert "skipped passwd.txt: a symbolic link to a file outside the corpus folder" in err
    assert "skipped pipe.txt: not a regular file (a FIFO)" in err
    m = load_manifest(tmp_path / "index")
    assert sorted(m.files) == ["good.txt"] and "root:" not in (tmp_path / "index" / "docs.jsonl").read_text()
    code, out, err = within(60, run, args, capsys)
    assert code == 0 and out.startswith("index is up to date"), err


@pytest.mark.slow
def test_follow_symlinks_flag_indexes_the_link_and_rag_ask_takes_the_index_as_built(tmp_path, capsys):
    outside = write_corpus(tmp_path / "elsewhere", {"shared.txt": "Shared notes\n\nThe Gozo ferry was repaired in May.\n"})
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (corpus / "shared.txt").symlink_to(outside / "shared.txt")
    index = tmp_path / "index"
    code, out, err = run(["index", "--corpus", corpus, "--index", index, "--no-progress", "--follow-symlinks"], capsys)
    assert code == 0 and out.startswith("built index: 2 documents"), err
    settings = settings_for(corpus, index)  # follow_symlinks False: still not stale
    assert [d for d in load_index(settings).docs] == ["good.txt", "shared.txt"]
    code, out, err = run(["index", "--corpus", corpus, "--index", index, "--no-progress"], capsys)  # without the flag
    assert code == 0 and out.startswith("built index: 1 documents"), err


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False)])
def test_rag_follow_symlinks_is_parsed_as_a_bool(raw, value):
    assert Settings.from_env({"RAG_FOLLOW_SYMLINKS": raw}).follow_symlinks is value


def test_a_bad_rag_follow_symlinks_is_a_bad_setting():
    with pytest.raises(BadSetting, match="RAG_FOLLOW_SYMLINKS='maybe' is not a valid bool"):
        Settings.from_env({"RAG_FOLLOW_SYMLINKS": "maybe"})


# ---------------------------------------------------------------------------------------------
# 5. Integrity: edits that keep size and mtime, flipped bits


def edit_keeping_size_and_mtime(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length), then put the timestamps back (``touch -r``)."""
    assert len(old) == len(new)
    st = path.stat()
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def rehash(index: Path, rel: str) -> None:
    """Make the manifest agree with an edited file (size and sha256), so the parser itself is tried."""
    path = index / MANIFEST
    m = json.loads(path.read_text(encoding="utf-8"))
    data = (index / rel).read_bytes()
    m["artifacts"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    path.write_text(json.dumps(m), encoding="utf-8")


def test_50_border_guards_edited_to_90_with_touch_r_is_refused(tiny_copy, capsys):
    index = Path(tiny_copy.index_dir)
    for rel in ("chunks.jsonl", "docs.jsonl"):
        edit_keeping_size_and_mtime(index / rel, b"deployed 50 border", b"deployed 90 border")
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy)
    assert str(exc.value).startswith("index damaged: ") and "modified after the build" in str(exc.value)
    code, out, err = run(["ask", "How many border guards did Frontex deploy?", "--index", index,
                          "--corpus", tiny_copy.corpus_dir], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith("rag: error: index damaged: ") and line.endswith("run `rag index --force`")


@pytest.mark.slow
def test_an_edit_with_touch_r_is_caught_on_the_large_file_path_too(tiny_copy, monkeypatch):
    import rag.index

    build_index(tiny_copy, force=True)  # ctimes recorded for these very files
    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)  # every file takes the size+mtime+ctime path
    edit_keeping_size_and_mtime(Path(tiny_copy.index_dir) / "chunks.jsonl", b"deployed 50", b"deployed 90")
    with pytest.raises(IndexCorrupt, match=r"chunks\.jsonl: modified after the build"):
        load_index(tiny_copy)


def test_a_flipped_bit_in_the_bm25_params_is_index_damaged(tiny_copy):
    index = Path(tiny_copy.index_dir)
    p = index / "lexical" / "params.index.json"
    data = bytearray(p.read_bytes())
    data[data.index(b'"b"') + 1] ^= 0x01  # "b" -> "c": bm25s then fails with a TypeError
    p.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt, match=r"params\.index\.json: modified after the build"):
        load_index(tiny_copy)
    rehash(index, "lexical/params.index.json")  # even when the manifest agrees: damaged, no TypeError
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy)
    assert str(exc.value).startswith(f"index damaged: {index / 'lexical'}") and "TypeError" in str(exc.value)


@pytest.mark.parametrize("rel", ["lexical/params.index.json", "docs.ids.json", "lexical/df.json"])
def test_every_single_bit_flip_in_a_small_json_file_loads_or_is_index_damaged(tiny_copy, rel, monkeypatch):
    """With the manifest re-hashed each time, so only the parsers stand between a flip and a query."""
    import rag.index

    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)  # so docs.ids.json is read
    index = Path(tiny_copy.index_dir)
    original = (index / rel).read_bytes()
    outcomes = set()
    for i in range(len(original)):
        data = bytearray(original)
        data[i] ^= 0x04
        (index / rel).write_bytes(bytes(data))
        rehash(index, rel)
        try:
            load_index(tiny_copy, check_fresh=False)
            outcomes.add("loads")
        except IndexCorrupt as exc:
            assert str(exc).startswith("index damaged: ") and "\n" not in str(exc)
            outcomes.add("damaged")
    assert "damaged" in outcomes


@pytest.mark.parametrize(
    "rel, change, words",
    [
        ("chunks.jsonl", lambda d: {**d, "page": "1"}, 'page: expected an integer, got "1"'),
        ("chunks.jsonl", lambda d: {**d, "sentences": "0-10"}, "sentences: expected a list"),
        ("chunks.jsonl", lambda d: {**d, "sentences": [[0, "9"]]}, "sentences: expected [start, end] pairs"),
        ("chunks.jsonl", lambda d: {**d, "section": [1]}, "section: expected a list of strings"),
        ("chunks.jsonl", lambda d: [d], "a chunk record must be an object"),
        ("docs.jsonl", lambda d: {**d, "title": 5}, "title: expected a string, got 5"),
        ("docs.jsonl", lambda d: {**d, "metadata": "x"}, "metadata: expected an object"),
    ],
    ids=["page-not-int", "sentences-not-list", "span-not-ints", "section-not-strings", "not-an-object",
         "title-not-string", "metadata-not-object"],
)
def test_wrong_types_in_records_are_index_damaged_with_the_line(tiny_copy, rel, change, words):
    index = Path(tiny_copy.index_dir)
    first, *rest = (index / rel).read_text(encoding="utf-8").splitlines(keepends=True)
    (index / rel).write_text(json.dumps(change(json.loads(first))) + "\n" + "".join(rest), encoding="utf-8")
    rehash(index, rel)
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy, check_fresh=False)
    assert str(exc.value).startswith(f"index damaged: {index / rel}: line 1: {words}")


def test_a_damaged_line_of_a_lazy_index_is_index_damaged_when_it_is_read(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)
    data = load_index(tiny_copy)
    path = Path(tiny_copy.index_dir) / "chunks.jsonl"
    raw = bytearray(path.read_bytes())
    raw[raw.rindex(b'"text"') + 1] ^= 0x01  # the last line, in the memory-mapped file
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorrupt, match=r"chunks\.jsonl: line 3"):
        data.chunks[2]


def test_verify_index_rehashes_even_the_large_files(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "HASH_AT_LOAD_MAX", 0)
    p = Path(tiny_copy.index_dir) / "sentences.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x01
    st = p.stat()
    p.write_bytes(bytes(raw))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IndexCorrupt, match=r"sentences\.npy: modified after the build"):
        verify_index(Path(tiny_copy.index_dir))


# ---------------------------------------------------------------------------------------------
# 6. Wrong types in the manifest and in sidecars


def set_path(obj: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj[key]
    obj[last] = value


MANIFEST_DAMAGE = [
    ("counts", "x", "counts: expected an object"),
    ("counts.chunks", "3", "counts.chunks: expected an integer"),
    ("settings", "x", "settings: expected an object"),
    ("settings.chunking", [], "settings.chunking: expected an object"),
    ("settings.code", 5, "settings.code: expected a string"),
    ("model", "x", "model: expected an object"),
    ("model.dim", "384", "model.dim: expected an integer"),
    ("model.dim", True, "model.dim: expected an integer"),
    ("faiss", "x", "faiss: expected an object"),
    ("faiss.type", 5, "faiss.type: expected a string"),
    ("artifacts", "x", "artifacts: expected an object"),
    ("files", [], "files: expected an object"),
    ("sidecars", {"border.meta.json": 5}, "sidecars.border.meta.json: expected a string"),
    ("skipped", "x", "skipped: expected a list"),
    ("follow_symlinks", "yes", "follow_symlinks: expected true or false"),
    ("corpus_dir", 5, "corpus_dir: expected a string"),
]


def _damage_manifest(index: Path, change) -> None:
    path = index / MANIFEST
    m = json.loads(path.read_text(encoding="utf-8"))
    change(m)
    path.write_text(json.dumps(m), encoding="utf-8")


@pytest.mark.parametrize("where, value, words", MANIFEST_DAMAGE, ids=[f"{w}={v!r}" for w, v, _ in MANIFEST_DAMAGE])
def test_a_manifest_with_a_wrong_type_is_index_damaged_in_rag_ask(tiny_copy, capsys, where, value, words):
    index = Path(tiny_copy.index_dir)
    _damage_manifest(index, lambda m: set_path(m, where, value))
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy)
    assert str(exc.value).startswith(f"index damaged: {index / MANIFEST}: {words}")
    code, out, err = run(["ask", "Where did the ministers meet?", "--index", index, "--corpus", tiny_copy.corpus_dir], capsys)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(f"rag: error: index damaged: {index / MANIFEST}: {words}")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m["artifacts"].__setitem__("chunks.jsonl", "x"), "artifacts['chunks.jsonl']: expected an object"),
        (lambda m: m["artifacts"]["chunks.jsonl"].__setitem__("sha256", 5), "artifacts['chunks.jsonl'].sha256: expected a string"),
        (lambda m: m["artifacts"]["chunks.jsonl"].__setitem__("bytes", -1), "artifacts['chunks.jsonl'].bytes: must be >= 0"),
        (lambda m: m["artifacts"].__setitem__("../../etc/passwd", m["artifacts"]["chunks.jsonl"]), "not a file name inside the index"),
        (lambda m: m["files"].__setitem__("notes.txt", {"size": "x"}), "files['notes.txt'].sha256: missing"),
        (lambda m: m["files"]["notes.txt"].__setitem__("size", "x"), "files['notes.txt'].size: expected an integer"),
        (lambda m: m.__setitem__("faiss", {"type": "IndexHNSWFlat"}), "faiss.efSearch: missing"),
    ],
    ids=["artifact-not-object", "artifact-sha-not-string", "artifact-negative-size", "artifact-outside",
         "file-entry-missing-sha", "file-size-not-int", "hnsw-without-efsearch"],
)
def test_a_manifest_entry_with_a_wrong_type_is_index_damaged(tiny_copy, change, words):
    index = Path(tiny_copy.index_dir)
    _damage_manifest(index, change)
    with pytest.raises(IndexCorrupt) as exc:
        load_manifest(index)
    assert words in str(exc.value) and str(exc.value).endswith("run `rag index --force`")


def test_the_manifest_rag_writes_is_a_typed_record(tiny_source):
    from rag.index import ArtifactRecord, Counts, FileRecord

    corpus, index, _ = tiny_source
    m = Manifest.from_json(json.loads((index / MANIFEST).read_text(encoding="utf-8")))
    assert m.counts == Counts(documents=2, chunks=3, sentences=7)
    assert m.model_id == "sentence-transformers/all-MiniLM-L6-v2" and m.dim == 384 and m.follow_symlinks is False
    assert isinstance(m.files["notes.txt"], FileRecord) and m.files["notes.txt"].size == 140
    assert all(isinstance(a, ArtifactRecord) and a.ctime_ns for a in m.artifacts.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.dim = 768  # type: ignore[misc]


def test_the_app_reading_a_damaged_manifest_gets_index_damaged(tiny_copy):
    """app.py shows the index status from load_manifest and stale_reasons: a RagError, not AttributeError."""
    from rag.index import stale_reasons

    _damage_manifest(Path(tiny_copy.index_dir), lambda m: m.__setitem__("files", "x"))
    with pytest.raises(IndexCorrupt, match="files: expected an object"):
        load_manifest(Path(tiny_copy.index_dir))
    with pytest.raises(IndexCorrupt, match="files: expected an object"):
        stale_reasons({**manifest_raw(tiny_copy), "files": "x"}, tiny_copy)


def manifest_raw(settings) -> dict:
    return json.loads((Path(settings.index_dir) / MANIFEST).read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("where, value", [("counts", "x"), ("settings", "x"), ("model", "x"), ("artifacts", "x")])
def test_rag_index_rebuilds_an_index_whose_manifest_is_damaged(tiny_copy, capsys, where, value):
    index = Path(tiny_copy.index_dir)
    _damage_manifest(index, lambda m: set_path(m, where, value))
    code, out, err = run(["index", "--corpus", tiny_copy.corpus_dir, "--index", index, "--no-progress"], capsys)
    assert code == 0, err
    assert out.startswith("built index: 2 documents, 3 passages")
    assert load_index(tiny_copy).vectors.ntotal == 3


def test_a_damaged_manifest_in_a_folder_that_is_not_an_index_is_refused(tmp_path, no_model):
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / MANIFEST).write_text("{not json")  # rag's file name, but not rag's manifest, and no vectors
    with pytest.raises(IndexRefused, match="is not a rag index"):
        build_index(settings_for(write_corpus(tmp_path / "corpus", GOOD), folder))
    assert (folder / MANIFEST).read_text() == "{not json"


@pytest.mark.parametrize(
    "sidecar, words",
    [
        ('{"parts": 5}', 'parts: expected a list of {"title", "anchor"} objects, got 5'),
        ('{"parts": [5]}', "parts[0]: expected"),
        ('{"parts": [{"title": "Annex"}]}', "parts[0]: anchor must be a non-empty string"),
        ('{"title": ["x"]}', 'title: expected a string, got ["x"]'),
        ('{"author": 5}', "author: expected a string"),
        ('{"date": {"y": 2023}}', "date: expected a string"),
        ("[1, 2, 3]", "expected a JSON object"),
        ("{not json", "Expecting property name"),
    ],
    ids=["parts-int", "parts-item-int", "part-without-anchor", "title-list", "author-int", "date-object", "list", "bad-json"],
)
def test_a_bad_sidecar_is_ignored_with_a_notice_naming_it_and_the_rest_loads(tmp_path, sidecar, words):
    corpus = write_corpus(tmp_path, {"report.txt": "Guessed title\n\nBody.", "report.meta.json": sidecar, **GOOD})
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["good.txt", "report.txt"]
    doc = report.documents[1]
    assert doc.title == "Guessed title" and doc.metadata == {}
    (notice,) = report.notices
    assert notice.startswith("report.txt: metadata report.meta.json ignored (") and words in notice


def test_a_good_sidecar_is_kept_as_given_and_its_record_is_typed(tmp_path):
    meta = {"title": "T", "parts": [{"title": "Annex", "anchor": "EUCO Letter"}], "source": "OCR", "pages": 12}
    write_corpus(tmp_path, {"report.txt": "Body text.", "report.meta.json": json.dumps(meta)})
    report = load_corpus(tmp_path)
    assert report.documents[0].metadata == meta and report.documents[0].title == "T" and report.notices == ()
    side = Sidecar.from_json(meta)
    assert side.title == "T" and side.parts[0].anchor == "EUCO Letter" and side.parts[0].title == "Annex"
    with pytest.raises(dataclasses.FrozenInstanceError):
        side.title = "other"  # type: ignore[misc]


@pytest.mark.slow
def test_rag_index_with_a_bad_sidecar_indexes_every_file(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", {**GOOD, "report.txt": "Report\n\nThe Lisbon rail yard closed.\n",
                                                "report.meta.json": '{"parts": 5}'})
    code, out, err = run(["index", "--corpus", corpus, "--index", tmp_path / "index", "--no-progress"], capsys)
    assert code == 0, err
    assert out.startswith("built index: 2 documents")
    assert "note: report.txt: metadata report.meta.json ignored (parts: expected a list" in err


# ---------------------------------------------------------------------------------------------
# 7. Crash-safe swap: kill the build at every step


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[6])  # the tests folder: conftest's fake embedder
    import rag.index
    from conftest import HashEmbedder as FakeEmbedder  # the swap does not care what the vectors mean
    from rag.settings import Settings

    step, corpus, index, cache, force = sys.argv[1:6]
    rag.index._swap_step = lambda s: os.kill(os.getpid(), signal.SIGKILL) if s == step else None
    settings = Settings(corpus_dir=corpus, index_dir=index, cache_dir=cache)
    rag.index.build_index(settings, force=force == "force", embedder=FakeEmbedder())
    print("not killed")
    """
)


def build_killed_at(step: str, settings, force: bool = False) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, step, str(settings.corpus_dir), str(settings.index_dir), str(CACHE_DIR),
         "force" if force else "-", str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "step, expect_text, expect_leftovers",
    [
        ("ready", "The ministers met", [".index.tmp-"]),  # new index complete, nothing renamed yet
        ("set-aside", "The ministers met", [".index.tmp-"]),  # old index aside, no index folder: restored
        ("renamed", "Vienna", [".index.old-"]),  # new index in place, old one not yet deleted
    ],
)
def test_a_build_killed_at_any_step_of_the_swap_leaves_an_index_that_loads(tiny_copy, step, expect_text, expect_leftovers):
    index = Path(tiny_copy.index_dir)
    (Path(tiny_copy.corpus_dir) / "notes.txt").write_text("Completely new notes about Vienna.", encoding="utf-8")
    build_killed_at(step, tiny_copy)
    if step == "set-aside":
        assert not index.exists()  # the window the swap used to lose the index in
    data = load_index(tiny_copy, check_fresh=False)  # the load restores what the kill left aside
    assert expect_text in data.chunks[-1].text
    assert [name.split("-")[0] + "-" for name in leftovers(index)] == expect_leftovers
    result = build_index(tiny_copy)  # the next build: no stranded index deleted, nothing left behind
    assert result.status == ("up-to-date" if step == "renamed" else "built")
    assert "Vienna" in load_index(tiny_copy).chunks[-1].text
    assert leftovers(index) == []


@pytest.mark.slow
def test_the_next_build_restores_the_index_a_killed_swap_set_aside(tiny_copy):
    index = Path(tiny_copy.index_dir)
    before = tree(index)
    build_killed_at("set-aside", tiny_copy, force=True)  # corpus unchanged: the index set aside is up to date
    assert not index.exists()
    assert build_index(tiny_copy).status == "up-to-date"  # restored, not deleted and rebuilt
    assert tree(index) == before and leftovers(index) == []


def test_a_reader_does_not_restore_while_a_build_holds_the_lock(tiny_copy, monkeypatch):
    """A build between its two renames holds the lock: the reader waits a moment for it instead."""
    import rag.index

    monkeypatch.setattr(rag.index, "READER_WAIT_S", 0.3)
    index = Path(tiny_copy.index_dir)
    aside = index.parent / ".index.old-4242"
    os.rename(index, aside)
    with index_lock(index):
        t0 = time.monotonic()
        with pytest.raises(IndexMissing):
            load_index(tiny_copy)
        assert time.monotonic() - t0 >= 0.3
        assert aside.is_dir() and not index.exists()
    assert load_index(tiny_copy).chunks  # lock free: the reader restores it
    assert not aside.exists()


# ---------------------------------------------------------------------------------------------
# Review 16: a load during a rebuild, sidecars that are huge, deep or folders, forged index
# folders, manifests that leave files out, lazy indexes with bad ids, refusals that wrote to disk


def fake_build(settings, force: bool = False):
    return build_index(settings, force=force, embedder=HashEmbedder())


@pytest.fixture
def fake_model(monkeypatch):
    """The CLI's `rag index` and `rag ask` get the fake embedder (and no verifier model)."""
    import rag.embed

    monkeypatch.setattr(rag.embed, "get_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.setenv("RAG_VERIFIER", "off")


def mixed(data) -> str:
    """Why a loaded index is not one build ('' when it is): counts or texts of two builds."""
    n = data.manifest.counts.chunks
    if n != len(data.chunks) or n != data.vectors.ntotal or n != data.lexical.n_docs:
        return f"manifest says {n} passages, loaded {len(data.chunks)} / {data.vectors.ntotal} vectors"
    if data.manifest.counts.sentences != data.sentence_vecs.shape[0]:
        return f"manifest says {data.manifest.counts.sentences} sentences, loaded {data.sentence_vecs.shape[0]} vectors"
    for c in data.chunks:
        if " ".join(data.docs[c.doc_id].text[c.start : c.end].split()) != " ".join(c.text.split()):
            return f"passage {c.chunk_id} is not the text of its document"
    return ""


@pytest.mark.slow  # threads hammering builds and loads for seconds
def test_a_load_during_rebuilds_sees_one_whole_index_and_never_a_false_damage(tmp_path):
    """A builder thread rebuilds (--force, the corpus growing each time) while this thread loads."""
    corpus = write_corpus(tmp_path / "corpus", {"a.txt": "Notes\n\nThe ministers met in Vienna.\n",
                                                "b.md": "# B\n\nFinland deployed fifty guards.\n"})
    settings = settings_for(corpus, tmp_path / "index")
    fake_build(settings)
    stop = threading.Event()
    builds, build_errors = [0], []

    def builder():
        try:
            while not stop.is_set():
                with open(corpus / "a.txt", "a", encoding="utf-8") as fh:
                    fh.write(f"More text {builds[0]} about the ministers in Vienna.\n")
                fake_build(settings, force=True)
                builds[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            build_errors.append(exc)

    thread = threading.Thread(target=builder, daemon=True)
    thread.start()
    loads, bad, errors = 0, [], []
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                data = load_index(settings, check_fresh=False)
            except IndexLocked:  # replaced at every one of the tries: honest, and no damage claimed
                continue
            except IndexCorrupt as exc:
                errors.append(str(exc))
                continue
            loads += 1
            if why := mixed(data):
                bad.append(why)
    finally:
        stop.set()
        thread.join(30)
    assert not build_errors, build_errors
    assert builds[0] >= 3 and loads >= 10, (builds, loads)  # the two really overlapped (here: ~50 of each)
    assert errors == [], errors[:3]  # a swap is not "index damaged"
    assert bad == [], bad[:3]  # no load mixes two builds


def test_a_load_that_keeps_seeing_new_builds_gives_up_in_one_line(tiny_copy, monkeypatch):
    import rag.index

    real = rag.index._load_index_once
    calls = []

    def load_then_replace(settings, index_dir, check_fresh):
        calls.append(1)
        data = real(settings, index_dir, check_fresh)
        os.utime(index_dir / MANIFEST)  # as a rebuild would: the manifest is another one now
        return data

    monkeypatch.setattr(rag.index, "_load_index_once", load_then_replace)
    monkeypatch.setattr(rag.index, "LOAD_RETRY_S", 0)
    with pytest.raises(IndexLocked, match=r"was replaced \d+ times while being read") as exc:
        load_index(tiny_copy)
    assert len(calls) == rag.index.LOAD_ATTEMPTS and "\n" not in str(exc.value)


def test_a_damage_seen_while_the_folder_changed_is_read_again_not_reported(tiny_copy, monkeypatch):
    import rag.index

    real = rag.index._load_index_once
    calls = []

    def damaged_once_mid_swap(settings, index_dir, check_fresh):
        calls.append(1)
        if len(calls) == 1:
            os.utime(index_dir / MANIFEST)  # the swap happened under this try
            raise IndexCorrupt("index damaged: chunks.faiss: modified after the build; run `rag index --force`")
        return real(settings, index_dir, check_fresh)

    monkeypatch.setattr(rag.index, "_load_index_once", damaged_once_mid_swap)
    assert len(load_index(tiny_copy).chunks) == 3 and len(calls) == 2
    # the same error with the folder unchanged is real damage: reported at once
    monkeypatch.setattr(rag.index, "_load_index_once", lambda *a: (calls.append(1), (_ for _ in ()).throw(
        IndexCorrupt("index damaged: x; run `rag index --force`")))[1])
    calls.clear()
    with pytest.raises(IndexCorrupt, match="index damaged: x"):
        load_index(tiny_copy)
    assert len(calls) == 1


def test_a_deeply_nested_sidecar_is_ignored_and_the_document_still_indexes(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", {**GOOD, "doc.txt": "Doc\n\nThe Lisbon rail yard closed.\n",
                                                "doc.meta.json": "[" * 200000 + "]" * 200000})
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["doc.txt", "good.txt"]
    assert report.documents[0].metadata == {}
    assert report.notices == ("doc.txt: metadata doc.meta.json ignored (nested more than 16 levels deep)",)
    # not as deep as the parser's limit, but deeper than any sidecar: ignored too
    (corpus / "doc.meta.json").write_text(json.dumps({"title": "T", "x": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}))
    assert "nested more than 16 levels deep" in load_corpus(corpus).notices[0]
    (corpus / "doc.meta.json").write_text("[" * 200000 + "]" * 200000)
    result = fake_build(settings_for(corpus, tmp_path / "index"))
    assert result.status == "built" and result.manifest.counts.documents == 2
    assert any("doc.meta.json ignored (nested" in n for n in result.notices)


def test_files_of_the_user_in_lexical_are_never_deleted(tiny_copy, no_model):
    index = Path(tiny_copy.index_dir)
    (index / "lexical" / "thesis.docx").write_text("precious\n")
    before = tree(index)
    with pytest.raises(IndexRefused, match=r"not a rag index \(it holds lexical/thesis\.docx\)"):
        build_index(tiny_copy, force=True)
    assert tree(index) == before


@pytest.mark.parametrize("with_docx", [True, False], ids=["forged-manifest-and-a-docx", "forged-manifest-alone"])
def test_a_forged_manifest_does_not_make_a_folder_an_index(tmp_path, with_docx, no_model):
    folder = tmp_path / "index"
    (folder / "lexical").mkdir(parents=True)
    (folder / MANIFEST).write_text('{"format_version": 1}')
    if with_docx:
        (folder / "lexical" / "thesis.docx").write_text("precious\n")
    before = tree(folder)
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    with pytest.raises(IndexRefused, match="is not a rag index") as exc:
        build_index(settings_for(corpus, folder), force=True)
    assert ("lexical/thesis.docx" if with_docx else "manifest.json") in str(exc.value)
    assert tree(folder) == before


def test_lexical_index_save_writes_exactly_the_names_rag_accepts_in_lexical(tmp_path):
    """If bm25s starts writing another file, rag would refuse its own index folders: fail here first."""
    from rag.index import LEXICAL_FILES
    from rag.lexical import LexicalIndex

    LexicalIndex.build(["the harbour of valletta", "ferries to gozo"]).save(tmp_path / "lexical")
    assert {p.name for p in (tmp_path / "lexical").iterdir()} == LEXICAL_FILES


def test_sidecar_text_fields_and_parts_are_capped_with_a_notice(tmp_path):
    from rag.load import SIDECAR_MAX_CHARS, SIDECAR_MAX_PART_CHARS, SIDECAR_MAX_PARTS

    parts = [{"title": "P" * 300, "anchor": "Doc"}] * (SIDECAR_MAX_PARTS + 50)
    meta = {"title": "T" * 5000, "author": "A" * 600, "date": "2023", "parts": parts}
    corpus = write_corpus(tmp_path / "corpus", {"doc.txt": "Doc\n\nBody.\n", "doc.meta.json": json.dumps(meta)})
    (doc,) = load_corpus(corpus).documents
    assert len(doc.title) == SIDECAR_MAX_CHARS and doc.title.startswith("TTT") and doc.title.endswith("\u2026")
    assert len(doc.metadata["author"]) == SIDECAR_MAX_CHARS and doc.metadata["date"] == "2023"
    assert len(doc.metadata["parts"]) == SIDECAR_MAX_PARTS
    assert all(len(p["title"]) == SIDECAR_MAX_PART_CHARS and p["anchor"] == "Doc" for p in doc.metadata["parts"])
    (notice,) = load_corpus(corpus).notices
    assert notice == (f"doc.txt: metadata doc.meta.json: title cut to 500 characters (it has 5000); author cut to 500 "
                      f"characters (it has 600); only the first 200 of 250 parts kept; part titles and anchors cut "
                      f"to 200 characters")


def test_a_5_mb_sidecar_is_ignored_and_not_copied_into_every_passage(tmp_path):
    body = "Doc\n\n" + "".join(f"Paragraph {i} about the harbour of Valletta and its ferries.\n\n" for i in range(40))
    corpus = write_corpus(tmp_path / "corpus", {"doc.txt": body, "doc.meta.json": json.dumps({"title": "T" * 5 * 2**20})})
    report = load_corpus(corpus)
    assert report.documents[0].title == "Doc" and report.documents[0].metadata == {}
    assert report.notices == ("doc.txt: metadata doc.meta.json ignored (file is 5.0 MB, over the 1 MB limit)",)
    settings = settings_for(corpus, tmp_path / "index")
    result = fake_build(settings)
    assert result.manifest.counts.chunks > 1
    assert (tmp_path / "index" / "chunks.jsonl").stat().st_size < 100_000
    # just under the limit: kept, with the title cut, so each passage carries 500 characters, not 900 000
    (corpus / "doc.meta.json").write_text(json.dumps({"title": "T" * 900_000}))
    fake_build(settings)
    chunks = load_index(settings, check_fresh=False).chunks
    assert all(len(c.title) == 500 for c in chunks)
    assert (tmp_path / "index" / "chunks.jsonl").stat().st_size < 100_000


def test_a_manifest_file_name_with_a_nul_is_index_damaged_never_a_traceback(tiny_copy, capsys, fake_model):
    index = Path(tiny_copy.index_dir)
    _damage_manifest(index, lambda m: m["artifacts"].__setitem__("docs\u0000.jsonl", m["artifacts"]["docs.jsonl"]))
    code, out, err = run(["ask", "Where did the ministers meet?", "--index", index, "--corpus", tiny_copy.corpus_dir], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "index damaged: " in line and r"'docs\x00.jsonl' is not a file name inside the index folder" in line
    assert "\x00" not in line and line.endswith("run `rag index --force`")
    for name in ("docs\u001b[2J.jsonl", "docs\n.jsonl"):  # other control characters: the same
        _damage_manifest(index, lambda m: (m["artifacts"].pop("docs\u0000.jsonl", None), m["artifacts"].__setitem__(
            name, m["artifacts"]["docs.jsonl"])))
        with pytest.raises(IndexCorrupt, match="holds a control character"):
            load_manifest(index)
        _damage_manifest(index, lambda m: m["artifacts"].pop(name))


def test_verify_files_turns_a_name_the_system_refuses_into_index_damaged(tiny_copy):
    from rag.index import ArtifactRecord, verify_files

    index = Path(tiny_copy.index_dir)
    m = load_manifest(index)
    forged = dataclasses.replace(m, artifacts={**m.artifacts, "x\u0000y": ArtifactRecord("0" * 64, 1)})
    with pytest.raises(IndexCorrupt, match="index damaged: .*: missing; run `rag index --force`"):
        verify_files(index, forged)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.__setitem__("artifacts", {}), "the manifest lists no chunks.faiss, chunks.jsonl, docs.jsonl and 7 more"),
        (lambda m: m["artifacts"].pop("docs.jsonl"), "the manifest lists no docs.jsonl"),
        (lambda m: m["artifacts"].pop("lexical/vocab.index.json"), "the manifest lists no lexical/vocab.index.json"),
        (lambda m: m["artifacts"].pop("docs.offsets.npy"), "the manifest lists no docs.offsets.npy, which the folder holds"),
        (lambda m: m["artifacts"].__setitem__("notes.bin", m["artifacts"]["docs.jsonl"]), "'notes.bin' is not a file rag writes"),
    ],
    ids=["no-artifacts", "no-docs", "no-lexical-file", "no-offsets-but-the-file-is-there", "a-name-rag-does-not-write"],
)
def test_a_manifest_must_record_every_index_file(tiny_copy, change, words):
    index = Path(tiny_copy.index_dir)
    _damage_manifest(index, change)
    with pytest.raises(IndexCorrupt) as exc:
        load_index(tiny_copy, check_fresh=False)
    assert str(exc.value).startswith("index damaged: ") and words in str(exc.value), str(exc.value)
    assert str(exc.value).endswith("run `rag index --force`") and "\n" not in str(exc.value)


def test_an_edited_docs_jsonl_is_not_served_by_emptying_the_manifests_artifacts(tiny_copy, capsys, fake_model):
    index = Path(tiny_copy.index_dir)
    for rel in ("chunks.jsonl", "docs.jsonl"):
        edit_keeping_size_and_mtime(index / rel, b"deployed 50 border", b"deployed 90 border")
    _damage_manifest(index, lambda m: m.__setitem__("artifacts", {}))  # nothing left to check them against
    code, out, err = run(["ask", "How many border guards did Frontex deploy?", "--index", index,
                          "--corpus", tiny_copy.corpus_dir], capsys)
    assert code == 2 and "90" not in out
    assert "the manifest lists no chunks.faiss, chunks.jsonl, docs.jsonl" in one_error_line(err)


def _edit_lines(index: Path, rel: str, edit) -> None:
    path = index / rel
    path.write_bytes(edit(path.read_bytes()))
    m = json.loads((index / MANIFEST).read_text(encoding="utf-8"))
    data = path.read_bytes()
    m["artifacts"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (index / MANIFEST).write_text(json.dumps(m), encoding="utf-8")
    if rel.endswith(".jsonl"):  # keep the line offsets right, so only the records are wrong
        import numpy as np

        offsets = np.cumsum([0] + [len(line) for line in data.splitlines(keepends=True)]).astype(np.int64)
        np.save(index / rel.replace(".jsonl", ".offsets.npy"), offsets, allow_pickle=False)
        _edit_lines(index, rel.replace(".jsonl", ".offsets.npy"), lambda b: b)


def test_a_lazy_passage_naming_a_missing_document_is_index_damaged_when_read(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)
    index = Path(tiny_copy.index_dir)
    _edit_lines(index, "chunks.jsonl", lambda b: b.replace(b'"doc_id": "notes.txt"', b'"doc_id": "zzzzz.txt"', 1))
    data = load_index(tiny_copy, check_fresh=False)  # lazy: nothing parsed yet
    assert type(data.chunks).__name__ == "LazyChunks"
    bad = next(i for i in range(3) if b"zzzzz" in (index / "chunks.jsonl").read_bytes().splitlines()[i])
    with pytest.raises(IndexCorrupt, match=rf'chunks\.jsonl: line {bad + 1}: inconsistent \(passage .* names document '
                                           r'"zzzzz\.txt", which docs\.jsonl does not hold\)'):
        data.chunks[bad]
    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 10**9)  # the small-index branch says the same at load
    with pytest.raises(IndexCorrupt, match=r'names document "zzzzz\.txt", which docs\.jsonl does not hold'):
        load_index(tiny_copy, check_fresh=False)


def test_lazy_document_ids_listed_twice_or_out_of_step_are_index_damaged(tiny_copy, monkeypatch):
    import rag.index

    monkeypatch.setattr(rag.index, "LAZY_ABOVE", 0)
    index = Path(tiny_copy.index_dir)
    ids = json.loads((index / "docs.ids.json").read_text())
    assert len(ids) == 2
    _edit_lines(index, "docs.ids.json", lambda b: json.dumps([ids[0], ids[0]]).encode())
    with pytest.raises(IndexCorrupt, match=rf'docs\.ids\.json: document "{ids[0]}" is listed twice: inconsistent'):
        load_index(tiny_copy, check_fresh=False)
    _edit_lines(index, "docs.ids.json", lambda b: json.dumps(ids[::-1]).encode())  # every id known, in the wrong lines
    data = load_index(tiny_copy, check_fresh=False)
    with pytest.raises(IndexCorrupt, match=rf'docs\.jsonl: line 1: inconsistent \(document "{ids[0]}", but docs\.ids\.json says'):
        data.docs[ids[1]]


def test_a_document_twice_in_docs_jsonl_is_index_damaged(tiny_copy):
    index = Path(tiny_copy.index_dir)
    first = (index / "docs.jsonl").read_bytes().splitlines(keepends=True)[0]
    _edit_lines(index, "docs.jsonl", lambda b: b + first)
    with pytest.raises(IndexCorrupt, match=r"docs\.jsonl: line 3: document .* is there twice: inconsistent"):
        load_index(tiny_copy, check_fresh=False)


def test_a_sidecar_that_is_a_folder_is_named_in_a_notice(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", {"doc.txt": "Doc\n\nBody.\n", "doc.meta.json/inner.txt": "Inner\n\nText.\n"})
    report = load_corpus(corpus)
    assert [d.doc_id for d in report.documents] == ["doc.meta.json/inner.txt", "doc.txt"]  # its files still read
    assert report.notices == ("doc.meta.json: metadata ignored: a folder, not a metadata file",)
    _, notice = load_file(corpus / "doc.txt")  # one file alone (an upload): the same
    assert notice == "metadata doc.meta.json ignored (a folder, not a file)"


def test_a_refused_build_creates_no_folder_and_no_lock(tmp_path, capsys, no_model):
    target = tmp_path / "x" / "a" / "b" / "idx"
    code, _, err = run(["index", "--corpus", tmp_path / "nonexistent", "--index", target], capsys)
    assert code == 2 and "corpus folder" in one_error_line(err) and "does not exist" in err
    assert sorted(os.listdir(tmp_path)) == []
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    code, _, err = run(["index", "--corpus", tmp_path / "notes.txt", "--index", target], capsys)
    assert code == 2
    assert f"corpus folder {tmp_path / 'notes.txt'} is a file, not a folder: point --corpus" in one_error_line(err)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
    (tmp_path / "empty").mkdir()  # refused after the lock (no documents): the lock and folders go again
    code, _, err = run(["index", "--corpus", tmp_path / "empty", "--index", target], capsys)
    assert code == 2 and "no readable documents" in one_error_line(err)
    assert sorted(os.listdir(tmp_path)) == ["empty", "notes.txt"]


def test_a_read_only_index_folder_refused_after_the_lock_leaves_no_lock(tiny_copy, capsys, no_model):
    index = Path(tiny_copy.index_dir)
    assert not (index.parent / ".index.lock").exists()
    os.chmod(index, 0o555)
    try:
        code, _, err = run(["index", "--corpus", tiny_copy.corpus_dir, "--index", index, "--force"], capsys)
        assert code == 2 and "is read-only" in one_error_line(err)
        assert not (index.parent / ".index.lock").exists()
    finally:
        os.chmod(index, 0o755)
    (index.parent / ".index.lock").write_text("")  # a lock file that was there before is left alone
    os.chmod(index, 0o555)
    try:
        with pytest.raises(IndexRefused, match="read-only"):
            build_index(tiny_copy, force=True)
        assert (index.parent / ".index.lock").exists()
    finally:
        os.chmod(index, 0o755)


def test_the_lock_taken_after_a_refused_build_removed_its_file_is_the_new_one(tmp_path, monkeypatch):
    """A build that opened the lock file just before a refused build deleted it must not lock the
    deleted file (then two builds could run at once): it takes the file now at the name."""
    import fcntl

    import rag.index

    index = tmp_path / "index"
    lock = tmp_path / ".index.lock"
    lock.write_text("")
    real = rag.index._lock_file
    opened = []

    def open_then_lose_the_race(path):
        fh, created = real(path)
        if not opened:  # the first open: the name is deleted and made anew before we lock
            os.unlink(path)
            path.write_text("")
        opened.append(os.fstat(fh.fileno()).st_ino)
        return fh, created

    monkeypatch.setattr(rag.index, "_lock_file", open_then_lose_the_race)
    with index_lock(index):
        assert len(opened) == 2 and opened[1] == lock.stat().st_ino != opened[0]
        other = open(lock)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: the file at the name
        other.close()


def test_rag_ask_with_a_file_as_the_index_says_it_is_a_file(tmp_path, capsys, fake_model):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    (tmp_path / "index.txt").write_text("not an index\n")
    code, out, err = run(["ask", "Where?", "--index", tmp_path / "index.txt", "--corpus", corpus], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"index folder {tmp_path / 'index.txt'} is a file, not a folder" in line and "build it with" not in line
