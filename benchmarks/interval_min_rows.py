"""Choose the v3 intervals' `min_rows` on the validation cohort, never on the held-out one.

A Mondrian category (label x set of modalities x bin of p) with few validation rows gives a crude reach
(the whole range below crepes' minimum, then a quantile of a handful of rows): its patients' coverage
lands far from the level, mostly above. `min_rows` pools such a category with the same bin of the sets
that have as many modalities (or of every set). Which `min_rows`: on the validation cohort the intervals
are fitted on, 20 random halves of its patients: fit on one half, measure on the other half's patients as
they come; the candidate with the smallest mean |coverage - level| over the labels wins (the smaller on
a tie). Writes interval_min_rows.json / .md; `calibrate --min-rows N` fits with the choice.

    python benchmarks/interval_min_rows.py --checkpoint CHECKPOINT --data VALIDATION_COHORT
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
from medfuse_core.runtime.uncertainty import SCORE_BINS, ConformalIntervals  # noqa: E402
from medfuse_core.train.conformal_fit import coverage_by_label, subset_rows  # noqa: E402
from medfuse_core.train.run import read_cohort  # noqa: E402

CANDIDATES = (0, 10, 20, 40, 80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "assets" / "demo_model")
    parser.add_argument("--data", type=Path, required=True, help="the validation cohort the intervals are fitted on")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    features, _ = predictor.featurizer.featurize_many(read_cohort(args.data, progress=False), progress=False)
    features = [f for f in features if f.present.any()]
    subsets = subset_rows(predictor.model, features)
    logits, index, used, natural = subsets.logits, subsets.index, subsets.used, subsets.natural
    scores, groups, outcomes = subsets.scores, subsets.groups, subsets.outcomes
    calibrate = predictor.calibration.probabilities
    n_modalities = used.sum(1)
    rng = np.random.default_rng(0)
    rows: dict[int, list[dict[str, float]]] = {m: [] for m in CANDIDATES}
    for _ in range(args.repeats):
        half = rng.permutation(len(features))[: len(features) // 2]
        fit = np.isin(index, half)
        test = ~fit & natural
        for m in CANDIDATES:
            intervals = ConformalIntervals(list(predictor.labels), args.level, scores[fit], groups[fit], outcomes[fit],
                                           calibrate, score_bins=SCORE_BINS, min_rows=m)
            low, high = intervals.for_logits(logits[test], used[test])
            coverage = coverage_by_label(low, high, outcomes[test], np.ones(int(test.sum()), dtype=bool))
            width = high - low
            rows[m].append({"mean_abs_deviation": float(np.mean(np.abs(np.array(coverage) - args.level))),
                            "within_2_points": int(sum(abs(round(c, 3) - args.level) <= 0.02 + 1e-9 for c in coverage)),
                            "width_one": float(np.median(width[n_modalities[test] == 1])) if (n_modalities[test] == 1).any() else float("nan"),
                            "width_four": float(np.median(width[n_modalities[test] == 4]))})
    summary = {m: {key: float(np.nanmean([r[key] for r in rows[m]])) for key in rows[m][0]} for m in CANDIDATES}
    chosen = min(CANDIDATES, key=lambda m: (round(summary[m]["mean_abs_deviation"], 4), m))
    results: dict[str, Any] = {
        "meta": {"checkpoint": portable_path(args.checkpoint), "validation_made_by": cohort_command(args.data),
                 "patients": len(features), "repeats": args.repeats, "level": args.level, "score_bins": SCORE_BINS,
                 "date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
                 "command": "python benchmarks/interval_min_rows.py --checkpoint CHECKPOINT --data VALIDATION_COHORT"},
        "candidates": {str(m): summary[m] for m in CANDIDATES}, "chosen": chosen}
    lines = ["# The v3 intervals' min_rows, chosen on the validation cohort", "",
             f"Validation cohort `{results['meta']['validation_made_by']}` ({len(features)} patients), checkpoint "
             f"`{results['meta']['checkpoint']}`, level {args.level:.0%}, {SCORE_BINS} score bins; {args.repeats} random "
             f"halves: fit on one, coverage on the other's patients as they come. {results['meta']['date']}, "
             f"{results['meta']['platform']}. Command: `{results['meta']['command']}`.", "",
             "| min_rows | mean abs(coverage - level) over labels | labels within +-2 points (of 11) | median width, one modality "
             "| median width, four modalities |", "| ---: | ---: | ---: | ---: | ---: |"]
    for m in CANDIDATES:
        r = summary[m]
        lines.append(f"| {m}{' (chosen)' if m == chosen else ''} | {r['mean_abs_deviation']:.4f} | {r['within_2_points']:.1f} "
                     f"| {r['width_one']:.3f} | {r['width_four']:.3f} |")
    lines += ["", "Means over the halves. The held-out figures of the chosen setting are in uncertainty.md.", ""]
    write_benchmark_result(args.out_dir, "interval_min_rows", results, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
