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
