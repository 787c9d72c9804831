"""Write demo_model_numbers.json: what assets/demo_model gives on generate_cohort(4, seed=77, image_size=256),
through the one inference path, with the fixed REFERENCE_CALIBRATION of tests/explain/test_one_inference_path.py.

Run it only when the shipped checkpoint is replaced on purpose (the test then pins the new one's numbers):
    python tests/data/demo_reference/make_numbers.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from medfuse_core.explain import explain  # noqa: E402
from medfuse_core.explain.scores import score_records  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.sources.bundle import find_bundles, read_bundle  # noqa: E402
from medfuse_core.sources.synth import generate_cohort  # noqa: E402
from tests.explain.test_one_inference_path import REFERENCE, REFERENCE_CALIBRATION  # noqa: E402

GROUP_LABELS = ("Congestive heart failure; nonhypertensive", "Diabetes mellitus without complication")


def main() -> int:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        generate_cohort(4, seed=77, out_dir=Path(folder), image_size=256)
        shipped = Predictor.load(ROOT / "assets" / "demo_model", device="cpu")
        config = {k: v for k, v in shipped.config.items() if k not in ("calibration", "uncertainty", "domain")}
        predictor = Predictor(shipped.model, shipped.featurizer, {**config, "calibration": REFERENCE_CALIBRATION})
        records = [read_bundle(f) for f in find_bundles(Path(folder))]
        scores = score_records(predictor, records)
        patients = {}
        for record in records:
            s = scores[record.patient_id]
            e = explain(record, predictor, labels=list(GROUP_LABELS), evidence=False)
            patients[record.patient_id] = {
                "predict": predictor.predict([record])[0].to_dict(),
                "scores": {key: [[float(x) for x in row] if hasattr(row, "__len__") else float(row)
                                 for row in getattr(s, key)]
                           for key in ("logits", "probabilities", "contributions", "base", "subset_low", "subset_high")},
                "groups": {name: {"groups": {t: float(v) for t, v in e.per_label[name].groups.items()},
                                  "empty_logit": float(e.per_label[name].empty_logit),
                                  "probability": float(e.per_label[name].probability)} for name in GROUP_LABELS},
            }
    REFERENCE.write_text(json.dumps({
        "made_by": f"tests/data/demo_reference/make_numbers.py at {commit}: assets/demo_model (the ward demo "
                   "checkpoint) on generate_cohort(4, seed=77, image_size=256)",
        "patients": patients}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
