"""Structure of the package: function length, library modules free of CLI modules, and the
names that moved still importable from their old homes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NAS = Path(__file__).resolve().parents[1] / "nas"
MAX_FUNCTION_LINES = 120


def _long_functions(root: Path, limit: int) -> list[str]:
    """``path:line name (N lines)`` of every function or method under ``root`` longer than
    ``limit`` lines (``def`` line to last line, decorators not counted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    rel = path.relative_to(root.parent)
                    found.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    long = _long_functions(NAS, MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_the_length_check_finds_a_long_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (pkg / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert _long_functions(pkg, MAX_FUNCTION_LINES) == [
        f"pkg/m.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"
    ]


def _cli_modules() -> set[str]:
    """The command-line modules: those whose docstring starts with ``python -m ...``."""
    found = set()
    for path in NAS.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if doc.startswith("``python -m"):
            parts = path.relative_to(NAS.parent).with_suffix("").parts
            found.add(".".join(parts).removesuffix(".__init__"))
    return found


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` in ``path`` names, at the top or in a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("module", ["mefb", "tiling", "architect"])
def test_library_modules_import_no_cli_module(module: str) -> None:
    """The library modules the CLI modules were split from import none of them."""
    cli = _cli_modules()
    assert {"nas.fuse", "nas.search", "nas.evaluate"} <= cli
    assert not _imported_modules(NAS / f"{module}.py") & cli


def test_moved_names_are_reexported() -> None:
    from nas import derive, fuse, search, tiling

    for name in ("derive_genotype", "derive_run", "load_search_run", "predicted_latency"):
        assert getattr(search, name) is getattr(derive, name), name
    for name in tiling.__all__:
        assert getattr(fuse, name) is getattr(tiling, name), name
