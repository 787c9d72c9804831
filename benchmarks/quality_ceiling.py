"""The highest macro-AUPRC any model can reach on a synthetic cohort: an oracle built from its truth.

Why: issue 3 asks our model to beat every baseline's macro-AUPRC by 0.02. The baselines are close to
1.0 on most diseases, so whether that margin exists at all depends on the diseases whose evidence
is sometimes absent from the record (a pleural effusion in a patient without a film). This script
measures the ceiling instead of guessing it.

The oracle ranks each (patient, disease) pair as well as anything can that sees the record:
- a positive whose evidence is planted in a modality the record has: first (perfect detection, more
  than any model gets: planted evidence can be faint);
- a patient without the disease while the disease's route modalities are there: last (no planted
  evidence means negative, again perfect detection);
- everything else (the route modalities all absent): by the true posterior of the disease given what
  the generator lets leak: the other nine diseases' labels (the latent comorbidity factors act through
  them) and the age (the third latent factor), computed by Monte Carlo over the generator's own
  latent-factor model (`sources/synth/diseases.py`). For a shared-route disease that case needs every
  route modality absent and is rare; the oracle is then given the true label (generous).
Because every step is at least as good as what the record allows, the oracle's AUPRC is an upper
bound on any model's, up to the Monte Carlo error of the posterior and the sampling error of the cohort.

    python benchmarks/quality_ceiling.py --data HELDOUT_DIR [--data BIG_DIR] [--quality-json FILE]

Writes benchmarks/results/quality_ceiling.json and .md: per disease and macro, the oracle's AUPRC
beside the measured models' (from quality.json, same held-out cohort when the paths agree).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.quality import folder_name  # noqa: E402  (where its eval reports are)
from medfuse_core.sources.synth.diseases import DISEASES, THRESHOLDS  # noqa: E402
from medfuse_core.train.metrics import auprc, auroc  # noqa: E402
from medfuse_core.provenance import write_benchmark_result

AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX = 64.0, 15.0, 18, 95  # as sample_conditions draws the age


def read_truth(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """labels (N, 10), evidence planted (N, 10), route modalities all absent (N, 10), age (N,)."""
    labels, planted, unseen, ages = [], [], [], []
    for folder in sorted(p.parent for p in data_dir.glob("*/truth.json")):
        truth = json.loads((folder / "truth.json").read_text())
        patient = json.loads((folder / "patient.json").read_text())
        have = truth["modalities"]
        labels.append([int(truth["labels"][d.name]) for d in DISEASES])
        planted.append([bool(truth["evidence"].get(d.name, {}).get("routes_planted")) for d in DISEASES])
        unseen.append([not any(have[m] for m in d.modalities) for d in DISEASES])
        ages.append(float(patient["age"]))
    if not labels:
        raise SystemExit(f"{data_dir}: no */truth.json; expected a cohort written by `python -m medfuse_core synth`")
    return np.array(labels), np.array(planted), np.array(unseen), np.array(ages)


def age_factor_samples(ages: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draws (N, n) of the age factor given the recorded age (rounded, clipped): a truncated normal."""
    lo = np.where(ages <= AGE_MIN, -np.inf, (ages - 0.5 - AGE_MEAN) / AGE_SD)
    hi = np.where(ages >= AGE_MAX, np.inf, (ages + 0.5 - AGE_MEAN) / AGE_SD)
    u = rng.random((len(ages), n))
    a, b = norm.cdf(lo)[:, None], norm.cdf(hi)[:, None]
    return norm.ppf(a + u * (b - a))


def comorbidity_posterior(labels: np.ndarray, ages: np.ndarray, draws: int = 4000, seed: int = 0,
                          chunk: int = 256) -> np.ndarray:
    """P(disease k | the other nine labels, age) for every patient and disease, (N, 10)."""
    rng = np.random.default_rng(seed)
    loadings = np.array([d.loadings for d in DISEASES])  # (10, 3)
    thresholds = np.array([THRESHOLDS[d.key] for d in DISEASES])
    residual = np.sqrt(1.0 - (loadings**2).sum(1))
    out = np.zeros(labels.shape)
    for start in range(0, len(labels), chunk):
        rows = slice(start, start + chunk)
        n = len(labels[rows])
        factors = np.empty((n, draws, 3))
        factors[..., :2] = rng.standard_normal((n, draws, 2))
        factors[..., 2] = age_factor_samples(ages[rows], draws, rng)
        # P(liability_k > threshold_k | factors), (n, draws, 10)
        p_pos = norm.sf((thresholds - factors @ loadings.T) / residual)
        log_lik = np.where(labels[rows][:, None, :] == 1, np.log(p_pos + 1e-300), np.log1p(-p_pos + 1e-300))
        total = log_lik.sum(-1, keepdims=True)
        for k in range(len(DISEASES)):
            w = total[..., 0] - log_lik[..., k]  # the other nine labels
            w = np.exp(w - w.max(1, keepdims=True))
            out[rows, k] = (w * p_pos[..., k]).sum(1) / w.sum(1)
    return out


def oracle_scores(labels: np.ndarray, planted: np.ndarray, unseen: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """The oracle's ranking score per (patient, disease), see the module docstring."""
    scores = np.where(unseen, posterior, 0.0)
    scores = np.where(planted, 2.0, scores)  # detected: above every posterior (which is <= 1)
    shared = np.array([not d.single_route for d in DISEASES])
    # a shared-route disease with no route modality: the true label (more than any model can know)
    scores = np.where(unseen & shared, labels * 2.0 - 1.0, scores)
    return scores


def ceiling(data_dir: Path, draws: int) -> dict:
    labels, planted, unseen, ages = read_truth(data_dir)
    posterior = comorbidity_posterior(labels, ages, draws)
    scores = oracle_scores(labels, planted, unseen, posterior)
    per = {}
    for k, d in enumerate(DISEASES):
        positives = labels[:, k] == 1
        per[d.name] = {"route": d.route, "auprc": auprc(labels[:, k].astype(float), scores[:, k]),
                       "auroc": auroc(labels[:, k].astype(float), scores[:, k]),
                       "positives": int(positives.sum()),
                       "positives_without_evidence": int((positives & ~planted[:, k]).sum())}
    return {"data": str(data_dir), "n_patients": int(len(labels)), "draws": draws,
            "macro_auprc": float(np.mean([v["auprc"] for v in per.values()])),
            "macro_auroc": float(np.mean([v["auroc"] for v in per.values()])), "per_label": per}


def measured(quality_json: Path, runs_dir: Path | None) -> dict[str, dict[str, float]]:
    """Per-label AUPRC of each variant from its eval report (runs-dir/<name>.eval.json) if it is there."""
    out: dict[str, dict[str, float]] = {}
    if not quality_json.is_file():
        return out
    quality = json.loads(quality_json.read_text())
    runs = Path(runs_dir or quality.get("meta", {}).get("runs_dir", ""))
    for entry in quality["variants"]:
        report_file = runs / f"{folder_name(entry['variant'])}.eval.json"
        if report_file.is_file():
            report = json.loads(report_file.read_text())
            out[entry["variant"]] = {name: v["auprc"] for name, v in report["per_label"].items()}
            out[entry["variant"]]["macro"] = report["macro_auprc"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="a synthetic cohort (repeatable); the first is compared with quality.json")
    parser.add_argument("--quality-json", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--runs-dir", type=Path, default=None, help="where quality.py's eval reports are")
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = [ceiling(d, args.draws) for d in args.data]
    models = measured(args.quality_json, args.runs_dir)
    best_baseline = max((v["macro"] for name, v in models.items() if name != "medfuse_lens"), default=math.nan)
    payload = {"cohorts": results, "measured_auprc": models, "best_baseline_macro_auprc": best_baseline,
               "target_macro_auprc": best_baseline + 0.02, "seconds": time.perf_counter() - started}
    write_benchmark_result(args.out_dir, "quality_ceiling", payload, render(payload))
    print(render(payload))
    return 0


def render(payload: dict) -> str:
    cohorts, models = payload["cohorts"], payload["measured_auprc"]
    names = [d.name for d in DISEASES]
    lines = ["# Quality ceiling: the best macro-AUPRC the synthetic record allows", "",
             "An oracle that detects every planted piece of evidence perfectly and ranks the rest by the true "
             "comorbidity posterior (benchmarks/quality_ceiling.py). Its AUPRC bounds any model's from above, "
             "up to sampling error.", ""]
    header = ["disease", "route"] + [f"oracle, {Path(c['data']).name} (n={c['n_patients']})" for c in cohorts]
    header += ["positives without evidence"] + list(models)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        first = cohorts[0]["per_label"][name]
        row = [name, first["route"]] + [f"{c['per_label'][name]['auprc']:.3f}" for c in cohorts]
        row += [f"{first['positives_without_evidence']}/{first['positives']}"]
        row += [f"{models[m].get(name, math.nan):.3f}" for m in models]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**macro**", ""] + [f"**{c['macro_auprc']:.3f}**" for c in cohorts] + [""]
    row += [f"{models[m]['macro']:.3f}" for m in models]
    lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Best baseline macro-AUPRC: {payload['best_baseline_macro_auprc']:.3f}; issue 3's target "
              f"(best baseline + 0.02): {payload['target_macro_auprc']:.3f}. "
              f"Oracle ceiling: " + ", ".join(f"{c['macro_auprc']:.3f} ({Path(c['data']).name})" for c in cohorts) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
