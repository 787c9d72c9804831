"""The malformed-input corpus (tests/data/bad/): each case gives its expected clear problem and
nothing else is lost. Regenerate the corpus with tests/data/bad/make_corpus.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfuse_core.sources.validate import validate_bundle

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED = {k: v for k, v in json.loads((BAD / "expected.json").read_text()).items() if not k.startswith("_")}
MODALITY_COUNT = {
    "labs": lambda r: len(r.labs.table),
    "vitals": lambda r: len(r.vitals.table),
    "notes": lambda r: len(r.notes),
    "images": lambda r: len(r.images),
}


def test_corpus_covers_every_modality_with_at_least_15_cases() -> None:
    cases = sorted(p.name for p in BAD.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert cases == sorted(EXPECTED), "expected.json and the case folders disagree"
    assert len(cases) >= 15
    assert {c.split("_")[0] for c in cases} >= {"patient", "labs", "vitals", "notes", "image", "truth"}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case_reports_expected_problem(case: str) -> None:
    want = EXPECTED[case]
    report, record = validate_bundle(BAD / case)
    assert (record is not None) == want["patient_read"]
    for expected in want["problems"]:
        matches = [
            p for p in report.problems
            if p.severity.value == expected["severity"]
            and Path(p.file).as_posix().endswith(expected["file"])
            and p.field == expected["field"]
            and expected["contains"] in p.message
        ]
        assert matches, f"{case}: no problem like {expected}; got {[str(p) for p in report.problems]}"
    assert len(report.problems) == len(want["problems"]), [str(p) for p in report.problems]
    for modality, count in want.get("keeps", {}).items():
        assert MODALITY_COUNT[modality](record) == count, f"{case}: {modality}"


def test_cli_prints_one_line_per_problem_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(BAD)],
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in out
    n_expected = sum(len(v["problems"]) for v in EXPECTED.values())
    lines = [line for line in result.stdout.splitlines() if line.startswith(("error: ", "warning: "))]
    assert len(lines) == n_expected
    assert result.stdout.rstrip().endswith(f"{len(EXPECTED)} bundle(s) checked: "
                                           f"{sum(1 for l in lines if l.startswith('error'))} error(s), "
                                           f"{sum(1 for l in lines if l.startswith('warning'))} warning(s)")


def test_cli_exit_zero_with_warnings_only() -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(BAD / "labs_bad_time")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "warning: " in result.stdout and "Traceback" not in result.stderr


def test_cli_on_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "expected an existing folder" in result.stdout
