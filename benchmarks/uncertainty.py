"""Do the intervals beside every probability hold? Coverage per label, width by how much the model saw.

On a cohort the intervals were not fitted on (`--data`: the held-out `synth --n 500 --seed 2000`), with
the checkpoint's calibration and conformal intervals (crepes, Mondrian by label, set of modalities used
and bin of the calibrated probability, v3, or outcome, v2: config.json `uncertainty` and conformal.safetensors, fitted by
`python -m medfuse_core calibrate --checkpoint CHECKPOINT --intervals-data VALIDATION_COHORT`):
- coverage per label: the share of patients whose interval reaches their outcome (goal: the stated level
  within +-2 points), on the patients as they come (natural) and seen through every non-empty subset of
  their modalities (as in the fit), each with its 95 % binomial (Wilson) interval: with 500 patients a
  method whose true coverage is exactly the level still lands outside +-2 points for about 1 label in 7 (sd 1.3 points);
- median interval width by the number of modalities the model used (goal: larger with one than four);
- one-modality patients (natural, and every single-modality view) whose interval reads "100-100 %" when
  rounded to whole percent (goal: none).

    python benchmarks/uncertainty.py --checkpoint assets/demo_model --data HELDOUT_DIR

Writes benchmarks/results/uncertainty.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.train.conformal_fit import coverage_by_label, subset_rows  # noqa: E402
from medfuse_core.train.run import read_cohort  # noqa: E402


def hundred_hundred(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (np.round(low * 100) == 100) & (np.round(high * 100) == 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", default="uncertainty")
    args = parser.parse_args()
    started = time.perf_counter()
    predictor = Predictor.load(args.checkpoint, device="cpu")
    names = predictor.labels
    intervals = predictor.intervals
    if intervals is None:
        raise SystemExit(f"{args.checkpoint}: no conformal intervals (run `python -m medfuse_core calibrate --intervals-data`)")
    records = read_cohort(args.data, progress=False)
    features, _ = predictor.featurizer.featurize_many(records, progress=False)
    features = [f for f in features if f.present.any()]
    subsets = subset_rows(predictor.model, features)
    natural = subsets.natural  # the subset that is all the patient has
    used = subsets.used.sum(1)
    low, high = intervals.for_logits(subsets.logits, subsets.used)
    y = subsets.outcomes
    covered = (low <= y) & (y <= high)
    known = ~np.isnan(y)

    def coverage(rows: np.ndarray) -> dict[str, float]:
        return dict(zip(names, coverage_by_label(low, high, y, rows)))

    def wilson(rows: np.ndarray) -> dict[str, list[float]]:
        """95 % Wilson interval of each label's coverage over `rows`."""
        out = {}
        for k, name in enumerate(names):
            n = int((rows & known[:, k]).sum())
            c = float(covered[rows & known[:, k], k].mean()) if n else float("nan")
            z = 1.959964
            centre, half = (c + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(c * (1 - c) / n + z * z / (4 * n * n)) / (1 + z * z / n)
            out[name] = [centre - half, centre + half]
        return out

    width = high - low
    per_group = {}
    for g in range(1, 5):
        for view, rows in (("natural", natural), ("all subsets", np.ones_like(natural))):
            chosen = rows & (used == g)
            per_group[f"{g} modalities, {view}"] = {
                "rows": int(chosen.sum()), "median_width": float(np.median(width[chosen])) if chosen.any() else float("nan"),
                "hundred_hundred": int(hundred_hundred(low[chosen], high[chosen]).sum()) if chosen.any() else 0}
    level = intervals.level
    natural_coverage = coverage(natural)
    natural_wilson = wilson(natural)
    subset_coverage = coverage(np.ones_like(natural))
    # the smallest Mondrian category that has rows (v2: a set of modalities x outcome; v3: x bin of p);
    # an empty one gives the whole range and is not counted here
    smallest_group = {name: int(rows[rows > 0].min()) if (rows := intervals.calibration_rows[k]).any() else 0
                      for k, name in enumerate(names)}
    payload = {"checkpoint": Path(args.checkpoint).name, "data": Path(args.data).name, "level": level,
               "intervals_fitted_on": intervals.fitted_on, "patients": len(features),
               "method": predictor.config["uncertainty"].get("method"), "library": predictor.config["uncertainty"].get("library"),
               "coverage_natural": natural_coverage, "coverage_natural_wilson95": natural_wilson,
               "coverage_all_subsets": subset_coverage, "smallest_calibration_group": smallest_group,
               "by_modalities": per_group, "seconds": time.perf_counter() - started,
               "command": "python benchmarks/uncertainty.py --checkpoint CHECKPOINT --data COHORT"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    ok = lambda c: "met" if abs(round(c, 3) - level) <= 0.02 + 1e-9 else "NOT met"  # noqa: E731  (0.920 is within 2 points)
    lines = [f"# Uncertainty intervals on `{payload['data']}` ({len(features)} patients)", "",
             f"Checkpoint `{payload['checkpoint']}`: per-label calibrated probability, "
             + (f"up and down by the Mondrian split-conformal reach (crepes `ConformalRegressor`) of the validation "
                f"rows of its label, set of modalities used and bin of the calibrated probability "
                f"({intervals.score_bins} bins, method v3), "
                if intervals.score_bins else
                "up to 1 (down to 0) by the Mondrian split-conformal reach (crepes `ConformalRegressor`) of the "
                "validation positives (negatives) of its label and set of modalities used (method v2), ")
             + f"level {level:.0%}, fitted on "
             f"{intervals.fitted_on.get('patients', '?')} patients of another cohort "
             f"({json.dumps(intervals.fitted_on.get('cohort', {}))}). Command: `{payload['command']}`.", "",
             f"| label | coverage, patients as they come (95 % interval) | coverage, every subset of their modalities "
             f"| smallest calibration category with rows | goal {level:.0%} +- 2 |",
             "| --- | --- | --- | --- | --- |"]
    for name in names:
        lo, hi = natural_wilson[name]
        lines.append(f"| {name} | {natural_coverage[name]:.3f} ({lo:.3f}-{hi:.3f}) | {subset_coverage[name]:.3f} "
                     f"| {smallest_group[name]} | {ok(natural_coverage[name])} |")
    lines += ["", "| modalities used | rows | median interval width (all labels) | '100-100 %' intervals |",
              "| --- | --- | --- | --- |"]
    for group, row in per_group.items():
        lines.append(f"| {group} | {row['rows']} | {row['median_width']:.3f} | {row['hundred_hundred']} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
