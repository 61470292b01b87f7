"""The shape of the package: no import cycles, exceptions in errors.py, the environment read in
settings.py only, text utilities in text.py only. Read from the source (ast), so it is instant."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rag"
MODULES = {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    """The rag modules a module imports, at the top or inside functions (lazy imports count)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif node.module and node.module.split(".")[0] == "rag":
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    return out & set(MODULES)


def _cycle() -> list[str] | None:
    graph = {m: _imports(t) - {m} for m, t in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d):] + [d] if d in path else [m, d]
            if d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_module_imports_itself_back_even_lazily():
    assert _cycle() is None


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(MODULES, "zz_a", ast.parse("from .zz_b import x"))
    monkeypatch.setitem(MODULES, "zz_b", ast.parse("def f():\n    from rag.zz_a import y"))
    assert _cycle() == ["zz_a", "zz_b", "zz_a"]


def _classes(tree: ast.Module):
    return [n for n in tree.body if isinstance(n, ast.ClassDef)]


def test_every_public_exception_is_defined_in_errors_py():
    import rag.errors

    names = {n.name for n in _classes(MODULES["errors"])}
    for module, tree in MODULES.items():
        if module == "errors":
            continue
        for cls in _classes(tree):
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
            if cls.name.startswith("_"):
                continue  # private control flow inside one module
            assert not (bases & (names | {"Exception", "ValueError", "OSError", "RuntimeError"})), (
                f"rag/{module}.py defines the exception {cls.name}: define it in rag/errors.py")
    assert all(issubclass(getattr(rag.errors, n), rag.errors.RagError) for n in names)


ENV_NAMES = ("environ", "environb", "getenv", "putenv", "unsetenv")


def _reads_environment(tree: ast.Module) -> bool:
    """``os.environ`` / ``os.getenv`` (through any alias of ``os``), or those names imported from os."""
    os_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES and isinstance(node.value, ast.Name) \
                and node.value.id in os_names:
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ENV_NAMES for a in node.names):
            return True
    return False


@pytest.mark.parametrize("code", ["import os\nos.environ['X']", "import os as o\no.getenv('X')",
                                  "from os import environ\nenviron.get('X')", "def f():\n    import os\n    os.putenv('X', '1')"])
def test_the_environment_check_sees_every_spelling(code):
    assert _reads_environment(ast.parse(code))
    assert not _reads_environment(ast.parse("import os\nos.path.join('a')"))


def test_only_settings_reads_or_writes_the_environment():
    assert [m for m, t in MODULES.items() if _reads_environment(t)] == ["settings"]


@pytest.mark.parametrize("name", ["collapse_ws", "search_form", "fold", "decode_text", "is_place"])
def test_text_functions_are_defined_once_in_text_py(name):
    defined = [m for m, t in MODULES.items() for n in t.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert defined == ["text"]


def test_renames_into_place_happen_only_in_the_atomic_helpers_the_index_swap_and_uploads():
    renaming = sorted(m for m, t in MODULES.items() for node in ast.walk(t)
                      if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename")
                      and isinstance(node.value, ast.Name) and node.value.id == "os")
    assert sorted(set(renaming)) == ["atomic", "index", "upload"]
