"""The whole path on real data: the MIMIC-III demo imported, trained and evaluated by the commands.

The point is that real tables run end to end (labs and the lab-derived vitals; no notes, no image,
25 phenotypes + in-hospital mortality), not the figures a 2-epoch model gets from 129 admissions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medfuse_core import cli
from medfuse_core.sources.phenotypes import MORTALITY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_carries_the_mimic_label_set(mimic3_checkpoint: Path, mimic3_bundles: Path) -> None:
    config = json.loads((mimic3_checkpoint / "config.json").read_text())
    cohort = json.loads((mimic3_bundles / "cohort.json").read_text())
    labels = config["model"]["labels"]
    assert labels == cohort["label_names"] and len(labels) == 26 and labels[-1] == MORTALITY
    assert "Septicemia (except in labor)" in labels
    assert config["data"]["synthetic"] is False  # the dashboard shows no demo-model banner for it
    assert config["data"]["n_train"] + config["data"]["n_val"] + config["data"]["n_test"] == 129


def test_eval_on_the_test_split_reports_every_label_with_absent_modalities(mimic3_checkpoint: Path,
                                                                            mimic3_bundles: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["eval", "--checkpoint", str(mimic3_checkpoint), "--data", str(mimic3_bundles), "--split", "test",
            "--out", str(out), "--bootstrap", "20", "--quiet"]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    config = json.loads((mimic3_checkpoint / "config.json").read_text())
    assert report["n_patients"] == config["data"]["n_test"] > 15
    assert set(report["per_label"]) == set(config["model"]["labels"])
    assert 0.0 <= report["macro_auroc"] <= 1.0 and 0.0 <= report["macro_auprc"] <= 1.0
    assert 0.0 <= report["mortality"]["auroc"] <= 1.0
    # phenotypes with no positive in the test split have no AUROC; the others have one
    scored = [v["auroc"] for v in report["per_label"].values() if v["auroc"] is not None and math.isfinite(v["auroc"])]
    assert len(scored) >= 15
