"""The next test: does the range shown for a missing modality hold the probability it would give?

For held-out synthetic patients (`synth` seed 2000, the demo's held-out cohort) that have a modality,
the modality is withheld, the range is estimated from the k nearest reference patients' encodings
(medfuse_core/next_test.py; reference: the first `--bank` patients of the training cohort, `synth`
seed 1000), and the probability with the real modality is checked against the range, for every label.
Coverage goal: >= 80 %. Also reports the mean range width and how far the probability moved.
Writes benchmarks/results/next_test.json and .md.

    python benchmarks/next_test.py --checkpoint assets/demo_model [--bank 300] [--heldout 100] [--k 20]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.next_test import build_reference_bank, encode, next_test_ranges  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.provenance import portable_path, write_benchmark_result  # noqa: E402
from medfuse_core.record import MODALITIES  # noqa: E402
from medfuse_core.sources.synth import generate_patient  # noqa: E402

GOAL = 0.80


def run(checkpoint: str, n_bank: int, n_heldout: int, k: int, image_size: int, quantiles: tuple[float, float]) -> dict:
    torch.set_num_threads(1)
    predictor = Predictor.load(checkpoint, device="cpu")
    t0 = time.perf_counter()
    bank = build_reference_bank(predictor, [generate_patient(1000, i, image_size=image_size) for i in range(n_bank)])
    bank_s = time.perf_counter() - t0
    heldout = [generate_patient(2000, i, image_size=image_size) for i in range(n_heldout)]
    features, _ = predictor.featurize(heldout)
    features = [f for f in features if np.asarray(f.present).any()]
    encoded, present = encode(predictor, features)
    full = predictor.probabilities(predictor.predict_features(features))
    per_modality: dict[str, dict] = {}
    seconds: list[float] = []
    for j, m in enumerate(MODALITIES):
        inside, widths, moved, cases = [], [], [], 0
        for i in range(len(features)):
            if not present[i, j] or present[i].sum() < 2:
                continue
            withheld = present[i].copy()
            withheld[j] = False
            mine = {mod: encoded[mod][i:i + 1] for mod in MODALITIES}
            t = time.perf_counter()
            ranges = [r for r in next_test_ranges(predictor, mine, withheld, bank, k=k, quantiles=quantiles)
                      if r.modality == m]
            seconds.append(time.perf_counter() - t)
            if not ranges:
                continue
            r, truth = ranges[0], full[i]
            cases += 1
            inside.append((truth >= r.low - 1e-9) & (truth <= r.high + 1e-9))
            widths.append(r.high - r.low)
            moved.append(np.abs(truth - r.now))
        if cases:
            inside_a = np.stack(inside)
            per_modality[m] = {"patients": cases, "coverage": float(inside_a.mean()),
                               "coverage_per_label": dict(zip(predictor.labels, inside_a.mean(0).round(4).tolist())),
                               "mean_width": float(np.mean(widths)), "mean_true_move": float(np.mean(moved))}
    total = sum(v["patients"] * len(predictor.labels) for v in per_modality.values())
    overall = sum(v["coverage"] * v["patients"] * len(predictor.labels) for v in per_modality.values()) / max(total, 1)
    return {"checkpoint": portable_path(checkpoint), "bank": f"synth seed 1000, patients 0-{n_bank - 1} "
            f"(image size {image_size}): {len(bank)} with data", "heldout": f"synth seed 2000, patients "
            f"0-{n_heldout - 1}", "k": k, "quantiles": list(quantiles), "overall_coverage": overall, "goal": GOAL,
            "meets_goal": bool(overall >= GOAL), "per_modality": per_modality, "bank_build_s": bank_s,
            "range_ms_median": 1000 * float(np.median(seconds)) if seconds else None,
            "python": platform.python_version(), "torch": torch.__version__}


def markdown(r: dict) -> str:
    lines = ["# The next test: coverage of the range for a withheld modality", "",
             f"Checkpoint `{r['checkpoint']}`; reference bank {r['bank']}; held-out {r['heldout']}; k = {r['k']} "
             f"nearest reference patients, range = {r['quantiles'][0]:.0%}-{r['quantiles'][1]:.0%} quantiles of their "
             "completions (medfuse_core/next_test.py).", "",
             f"Overall coverage (patient x label): **{r['overall_coverage']:.1%}** (goal >= {r['goal']:.0%}: "
             f"{'met' if r['meets_goal'] else 'not met'}).", "",
             "| withheld | patients | coverage | mean range width | mean real move |", "| --- | ---: | ---: | ---: | ---: |"]
    for m, v in r["per_modality"].items():
        lines.append(f"| {m} | {v['patients']} | {v['coverage']:.1%} | {v['mean_width']:.3f} | {v['mean_true_move']:.3f} |")
    lines += ["", f"Bank build {r['bank_build_s']:.1f} s; one range (all labels) {r['range_ms_median']:.1f} ms median "
                  "(fusion-head passes only; the patient's encoders run once).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--bank", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--low", type=float, default=0.05)
    parser.add_argument("--high", type=float, default=0.95)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.checkpoint, args.bank, args.heldout, args.k, args.image_size, (args.low, args.high))
    write_benchmark_result(args.out_dir, "next_test", result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
