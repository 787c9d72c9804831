"""Intervals on a ward: by outcome (v2) against by score bin (v3), at several levels (issue 17, item 2).

The intervals of round 6 (runtime/uncertainty.py v2) were Mondrian split-conformal by label, set of
modalities used and outcome. On a ward cohort (`synth --realism ward`) about a quarter of the positives carry no
evidence the model can see, so covering 90 % of positives forces nearly every interval up to 1. This
script refits, from the checkpoint's own validation rows (conformal.safetensors), that method and the
one that replaced it, and measures each on a held-out cohort as its patients come:

- `by outcome` (v2) at levels 0.9, 0.8, 0.7;
- `by score bin` (v3, what `calibrate` fits now): Mondrian by label, set of modalities and a quantile bin
  of the calibrated probability (coverage within each bin instead of per outcome), 5 bins, levels 0.9 and 0.8.

Per setting: coverage per label (goal: the level +- 2 points), median width with one and with four
modalities, and the share of disease decisions that read "uncertain" (the interval straddles the
threshold).

    python benchmarks/interval_alternatives.py --checkpoint assets/demo_model --data WARD_HELDOUT
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.provenance import cohort_command, portable_path, write_benchmark_result  # noqa: E402
from medfuse_core.runtime.uncertainty import MIN_ROWS, SCORE_BINS, ConformalIntervals  # noqa: E402
from medfuse_core.train.conformal_fit import coverage_by_label, subset_rows  # noqa: E402
from medfuse_core.train.run import read_cohort  # noqa: E402

N_DISEASES = 10


def measure(name: str, low: np.ndarray, high: np.ndarray, y: np.ndarray, natural: np.ndarray, used: np.ndarray,
            thresholds: np.ndarray, labels: list[str], level: float) -> dict[str, Any]:
    coverage = dict(zip(labels, coverage_by_label(low, high, y, natural)))
    width = high - low
    uncertain = ((low < thresholds) & (thresholds <= high))[natural][:, :N_DISEASES]
    return {"setting": name, "level": level, "coverage": coverage,
            "within_2_points": sum(abs(round(c, 3) - level) <= 0.02 + 1e-9 for c in coverage.values()),  # as uncertainty.py
            "median_width_one_modality": float(np.median(width[used == 1])),
            "median_width_four_modalities": float(np.median(width[used == 4])),
            "share_uncertain": float(uncertain.mean())}


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = ["# Intervals on a ward: by outcome (v2) and by score bin (v3, shipped)", "",
             f"Checkpoint `{meta['checkpoint']}`, validation rows from its conformal.safetensors; held-out "
             f"`{meta['heldout_made_by']}` ({meta['patients']} patients, as they come). {meta['date']}, "
             f"{meta['platform']}. Command: `{meta['command']}`.", "",
             "| setting | level | labels within +-2 points | coverage per label (min-max) | median width, 1 modality "
             "| median width, 4 modalities | disease decisions 'uncertain' |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results["settings"]:
        c = list(r["coverage"].values())
        lines.append(f"| {r['setting']} | {r['level']:.1f} | {r['within_2_points']} of {len(c)} | {min(c):.3f}-{max(c):.3f} "
                     f"| {r['median_width_one_modality']:.3f} | {r['median_width_four_modalities']:.3f} "
                     f"| {100 * r['share_uncertain']:.1f} % |")
    lines += ["", "Coverage of a binary outcome moves in steps: within a Mondrian category the interval either "
              "reaches the other outcome for every patient of the category or for none, so a category whose share "
              "of the other outcome is near 1 - level over-covers; by outcome, the positives' side saturates at 1 "
              "when more than 1 - level of the positives have scores like the negatives' (absent evidence, "
              "uncoded conditions).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "assets" / "demo_model")
    parser.add_argument("--data", type=Path, required=True, help="a held-out cohort the intervals were not fitted on")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    ci = predictor.intervals
    if ci is None:
        raise SystemExit(f"{args.checkpoint}: no conformal intervals")
    features, _ = predictor.featurizer.featurize_many(read_cohort(args.data, progress=False), progress=False)
    features = [f for f in features if f.present.any()]
    subsets = subset_rows(predictor.model, features)
    logits, used_mask, natural, y = subsets.logits, subsets.used, subsets.natural, subsets.outcomes
    used = used_mask.sum(1)
    thresholds = np.asarray(predictor.thresholds, dtype=np.float64)
    names = list(predictor.labels)
    settings = []
    for level in (0.9, 0.8, 0.7):
        refit = ConformalIntervals(ci.labels, level, ci.scores, ci.groups, ci.outcomes, ci.calibrate)
        low, high = refit.for_logits(logits, used_mask)
        settings.append(measure("by outcome (v2, the previous method)", low, high, y, natural, used, thresholds, names, level))
    for level in (0.9, 0.8):
        refit = ConformalIntervals(ci.labels, level, ci.scores, ci.groups, ci.outcomes, ci.calibrate, score_bins=SCORE_BINS,
                                   min_rows=MIN_ROWS)
        low, high = refit.for_logits(logits, used_mask)
        settings.append(measure(f"by score bin, 5 bins, categories under {MIN_ROWS} rows pooled (v3, shipped at 0.9)", low, high, y, natural, used, thresholds, names, level))
    results = {"meta": {"checkpoint": portable_path(args.checkpoint), "heldout_made_by": cohort_command(args.data),
                        "patients": len(features), "date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
                        "command": "python benchmarks/interval_alternatives.py --checkpoint CHECKPOINT --data WARD_HELDOUT"},
               "settings": settings}
    write_benchmark_result(args.out_dir, "interval_alternatives", results, markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
