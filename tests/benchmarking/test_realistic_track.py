"""benchmarks/realistic_track.py: which positives the route pair can be scored on, and the script end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.realistic_track import evidence_labels, main
from medfuse_core.sources.synth import LABEL_NAMES, WARD, generate_cohort, synthesize


def test_evidence_labels_leave_out_positives_with_nothing_to_route() -> None:
    records = [synthesize(9, i, image_size=32, realism=WARD).record for i in range(60)]
    labels = evidence_labels(records, list(LABEL_NAMES))
    left_out = 0
    for b, record in enumerate(records):
        truth = record.truth
        for k, name in enumerate(LABEL_NAMES):
            coded = record.labels[name]
            planted = (truth["evidence"].get(name) or {}).get("routes_planted")
            if coded == 1 and not planted:  # absent evidence, or coded without the condition
                assert np.isnan(labels[b, k]), (b, name)
                left_out += 1
            else:
                assert labels[b, k] == coded, (b, name)
    assert left_out > 0


def test_realistic_track_script_writes_its_figures(demo_checkpoint: Path, tmp_path: Path) -> None:
    generate_cohort(8, 5, tmp_path / "ward", image_size=64, realism=WARD, workers=1)
    generate_cohort(6, 6, tmp_path / "demo", image_size=64, realism=WARD, workers=1)
    assert main(["--checkpoint", str(demo_checkpoint), "--heldout", str(tmp_path / "ward"),
                 "--demo", str(tmp_path / "demo"), "--out-dir", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "realistic_track.json").read_text())
    row = result["checkpoints"][0]
    assert result["meta"]["heldout_made_by"] == "synth --n 8 --seed 5 --realism ward"
    assert row["demo"]["patients"] == 6 and row["heldout"]["patients"] == 8
    assert 0.0 <= row["demo"]["share_top_above_95"] <= 1.0
    assert sum(row["heldout"]["label_states"].values()) == 10 * row["heldout"]["scored"] + \
        row["heldout"]["label_states"].get("insufficient data", 0)
    assert row["routes"]["coded"]["n_single"] >= row["routes"]["with_evidence"]["n_single"]
    assert "| ward demo |" in (tmp_path / "out" / "realistic_track.md").read_text()
