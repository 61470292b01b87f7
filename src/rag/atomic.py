"""Files and folders that appear whole or not at all: written under a temporary name next to the
target, then renamed into place (a rename within one folder is atomic on POSIX).

For things made once into a cache (the extracted model, its ONNX export, the reader's float32 copy):
concurrent processes may race, the first rename wins, and nobody ever sees half a folder. The index
has its own swap (:func:`rag.index.write_index`): it replaces a folder that exists, under a lock, with
recovery of the previous one after a crash; an upload (:mod:`rag.upload`) is linked into the corpus
only if no file of that name appeared meanwhile. ``tests/test_structure.py`` keeps renames to these.
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _temporary(target: Path) -> Path:
    return target.parent / f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}"


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; when the block ends without an error it
    becomes ``target``. On an error it is removed. When another process made ``target`` meanwhile,
    that one is kept and ours removed (check ``target`` again after the block)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: use its result
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` to write; it replaces ``target`` when the block ends
    without an error, and is removed otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
