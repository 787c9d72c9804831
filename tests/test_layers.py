"""The import layers hold: import-linter's contracts in pyproject.toml ([tool.importlinter]).

A wrong import (say models/ importing train/, or a component importing torch) fails this test, and the
message names the broken contract and the import chain that breaks it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config) if config else None!r}, no_cache=True))")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, "import contracts broken (pyproject.toml [tool.importlinter]):\n" + result.stdout[-6000:]
    assert "0 broken" in result.stdout and "BROKEN" not in result.stdout


def test_a_wrong_import_fails_with_the_rule_named(tmp_path):
    """The contracts can fail: a copy of the tree where models/ imports train/ breaks the layers contract."""
    copy = tmp_path / "tree"
    for package in ("medfuse_core", "app"):
        for path in (ROOT / package).rglob("*.py"):
            target = copy / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (copy / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    bad = copy / "medfuse_core" / "models" / "fusion.py"
    bad.write_text(bad.read_text() + "\nfrom medfuse_core.train import objective  # noqa: E402,F401\n")
    result = _lint(copy, copy / "pyproject.toml")
    assert result.returncode != 0
    assert "Layers:" in result.stdout and "BROKEN" in result.stdout
    assert "medfuse_core.models.fusion -> medfuse_core.train.objective" in result.stdout


FILE_READS = re.compile(r"\b(open|read_text|read_bytes|load_image|imread|np\.load|json\.load|Image\.open)\s*\(")


def test_components_read_no_files():
    """app/components draw what they are given: no file is opened there (state.py and the library read)."""
    offenders = []
    for path in sorted((ROOT / "app" / "components").glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        code = "\n".join(ast.get_source_segment(source, node) or "" for node in tree.body
                         if not isinstance(node, ast.Expr))  # module docstring aside
        for match in FILE_READS.finditer(code):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not offenders, "file reads in app/components:\n" + textwrap.indent("\n".join(offenders), "  ")


def _private_imports(path: Path, root: Path) -> list[str]:
    """`file:line: module._name` for each private name of a medfuse_core module that `path` reaches into:
    `from medfuse_core.x import _name`, or `y._name` where `y` is a medfuse_core module it imported."""

    def is_module(dotted: str) -> bool:
        base = root / Path(*dotted.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(root)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "medfuse_core":
            for alias in node.names:
                if private(alias.name):
                    found.append(f"{where}:{node.lineno}: {node.module}.{alias.name}")
                elif is_module(f"{node.module}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "medfuse_core":
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and private(node.attr)):
            found.append(f"{where}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    """A `_name` is its module's own business: the library, the app and the benchmarks use only public names
    of medfuse_core (a helper two modules need gets a public home, e.g. sources/cell_text.py). Tests may
    reach private helpers to test them."""
    offenders = [hit for top in ("medfuse_core", "app", "benchmarks") for path in sorted((ROOT / top).rglob("*.py"))
                 for hit in _private_imports(path, ROOT)]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def test_the_private_import_scan_can_fail(tmp_path):
    (tmp_path / "medfuse_core" / "sources").mkdir(parents=True)
    (tmp_path / "medfuse_core" / "sources" / "labs.py").write_text("def _plain(): ...\n")
    user = tmp_path / "medfuse_core" / "user.py"
    user.write_text("from medfuse_core.sources.labs import _plain\nfrom medfuse_core.sources import labs\n"
                    "import medfuse_core.sources.labs as l2\nlabs._plain(); l2._plain(); labs.__name__\n")
    assert _private_imports(user, tmp_path) == ["medfuse_core/user.py:1: medfuse_core.sources.labs._plain",
                                                 "medfuse_core/user.py:4: medfuse_core.sources.labs._plain",
                                                 "medfuse_core/user.py:4: medfuse_core.sources.labs._plain"]
