"""README's list of the lab tests the demo model reads is the lab vocabulary file's, generated."""

from __future__ import annotations

from pathlib import Path

from medfuse_core.sources.lab_vocabulary import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_the_lab_vocabulary() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- lab-tests:start -->\n", "\n<!-- lab-tests:end -->"
    assert start in text and end in text, "README lost its generated lab-test list markers"
    listed = text[text.index(start) + len(start):text.index(end)]
    assert listed == markdown_table(), "regenerate it: python -m medfuse_core.sources.lab_vocabulary"
