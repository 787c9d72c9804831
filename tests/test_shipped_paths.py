"""Nothing shipped names an absolute path of the machine that built it (issue 15 item 5).

Checkpoints, eval reports and benchmark results record a data folder as a path relative to the
repository or as the command that made it (medfuse_core/provenance.py); this scans every shipped
text file for an absolute path, and checks that the demo checkpoint still loads after the rewrite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfuse_core.provenance import absolute_paths, cohort_command, data_provenance, portable_path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["assets", "benchmarks/results", "docs", "README.md"]
TEXT_SUFFIXES = {".json", ".md", ".txt", ".csv", ".toml", ".yaml", ".yml", ".html", ""}


def _shipped_files() -> list[Path]:
    files: list[Path] = []
    for entry in SHIPPED:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return files


def test_the_scan_covers_the_files_that_had_paths():
    names = {p.relative_to(ROOT).as_posix() for p in _shipped_files()}
    for expected in ("assets/demo_model/config.json", "assets/demo_model/eval_report.json", "assets/MODEL_CARD.md",
                     "benchmarks/results/quality.json", "README.md"):
        assert expected in names


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_absolute_build_machine_path(path: Path):
    found = absolute_paths(path.read_text(encoding="utf-8", errors="replace"))
    assert not found, f"{path.relative_to(ROOT)} names absolute paths of a machine: {found[:5]}"


def test_the_detector_finds_what_it_must():
    text = '"data": "/work/data/heldout500", out /tmp/tmpab12/preds.parquet, /home/alice/x, C:\\Users\\bob\\run'
    assert absolute_paths(text) == ["/work/data/heldout500", "/tmp/tmpab12/preds.parquet", "/home/alice/x",
                                    "C:\\Users\\bob\\run"]
    assert absolute_paths("data/train2000 ../shared/data/mimic-iii-demo /usr/bin/chromium $TMPDIR/x") == []


def test_portable_path_and_cohort_command(tmp_path: Path):
    assert portable_path(ROOT / "assets" / "demo_model") == "assets/demo_model"
    assert portable_path("data/train2000") == "data/train2000"
    assert portable_path(None) == ""
    outside = tmp_path / "cohort"
    outside.mkdir()
    assert not absolute_paths(portable_path(outside))
    (outside / "cohort.json").write_text(json.dumps({"generator_version": "synth-3", "n": 20, "seed": 7}))
    assert cohort_command(outside) == "synth --n 20 --seed 7"
    assert data_provenance(outside) == {"path": "cohort", "made_by": "synth --n 20 --seed 7"}
    (outside / "cohort.json").write_text(json.dumps({"source": "mimic3"}))
    assert cohort_command(outside) is None


def test_demo_checkpoint_still_loads_with_portable_data_paths():
    from medfuse_core.predictor import Predictor

    config = json.loads((ROOT / "assets" / "demo_model" / "config.json").read_text())
    assert config["data"]["path"] == "data/ward2000"
    assert config["data"]["made_by"] == "synth --n 2000 --seed 1000 --realism ward"
    assert config["data"]["encoders_from"]["checkpoint"] == "runs/demo"  # the clean run, README's commands
    predictor = Predictor.load(ROOT / "assets" / "demo_model")
    assert len(predictor.labels) == len(config["model"]["labels"])


def test_scrub_paths_makes_a_benchmark_text_portable():
    from medfuse_core.provenance import scrub_paths

    text = f'"checkpoint": "{ROOT / "assets" / "demo_model"}", "out": "/tmp/tmpab12/preds.parquet".'
    scrubbed = scrub_paths(text)
    assert absolute_paths(scrubbed) == []
    assert '"checkpoint": "assets/demo_model"' in scrubbed
    assert scrubbed.endswith('"preds.parquet".')


def test_scrub_paths_knows_a_clone_under_any_top_folder(monkeypatch):
    """CI clones into a folder the absolute-path pattern does not list (`/check/...`): the repository's
    own path and its ../shared sibling are still made relative."""
    from medfuse_core import provenance

    clone = Path("/check/work/main")
    monkeypatch.setattr(provenance, "REPO_ROOT", clone)
    text = (f"checkpoint {clone}/assets/demo_model, data {clone.parent}/shared/data/mimic-iii-demo, "
            f"run in {clone}; a sibling {clone}-old/x stays untouched by the root rule")
    scrubbed = provenance.scrub_paths(text)
    assert "checkpoint assets/demo_model," in scrubbed
    assert "data ../shared/data/mimic-iii-demo," in scrubbed
    assert "run in .;" in scrubbed
    assert f"{clone}-old/x" in scrubbed


def test_benchmark_results_are_written_without_machine_paths(tmp_path):
    from medfuse_core.provenance import write_benchmark_result

    result = {"checkpoint": str(ROOT / "assets" / "demo_model"), "data": "/tmp/tmpab12/heldout500", "x": float("nan")}
    write_benchmark_result(tmp_path / "results", "speed", result, f"# Speed\n\nData `{result['data']}`.\n")
    text = (tmp_path / "results" / "speed.json").read_text()
    assert json.loads(text.replace("NaN", "null"))["checkpoint"] == "assets/demo_model" and absolute_paths(text) == []
    assert (tmp_path / "results" / "speed.md").read_text() == "# Speed\n\nData `heldout500`.\n"
    with pytest.raises(ValueError):
        write_benchmark_result(tmp_path, "strict", {"x": float("nan")}, "", allow_nan=False)
