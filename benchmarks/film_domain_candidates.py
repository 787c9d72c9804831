"""Which out-of-domain score for films? The candidates measured side by side (issue 17, item 1).

Every candidate is fitted on the films of the training split of the checkpoint's training cohort
(`--train-data`), its threshold set on the films of that cohort's validation split at `--rate` (3 %, as
the shipped domain), and measured on an in-distribution cohort (`--data`: the validation cohort
`synth --n 500 --seed 3000` to choose; the held-out cohort is reported once by benchmarks/domain.py with the
shipped choice): the false alarms at the threshold, and the detection AUROC of the same films shifted as in
benchmarks/domain.py (and of the real CR films of pydicom-data, `--real-films`). Candidates:
- A, v2: Mahalanobis (Ledoit-Wolf) on the encoder output + input histogram and thumbnail (one block);
- B: k-nearest-neighbour distance (k = 10, standardised) on A's features;
- C: Mahalanobis on every ResNet stage's (and the stem's) channel means, SDs and maxima, pooled;
- C per stage: one Mahalanobis per stage and statistic, each divided by its 97th training percentile, the
  largest counts;
- D: Mahalanobis on the film statistics alone (runtime/domain.py `film_statistics`);
- A + D, v3 (shipped): the two blocks of `fit_modality(..., further_blocks=FILM_STATISTICS)`;
- A + C per stage + D.

    python benchmarks/film_domain_candidates.py --checkpoint assets/demo_model --train-data TRAIN2000 \\
        --data VAL500 --real-films PYDICOM_DATA

Writes benchmarks/results/film_domain_candidates.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from domain import FILM_SHIFTS, KnnDistance, only, real_film_paths, real_films  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.record import PatientRecord  # noqa: E402
from medfuse_core.runtime.domain import FILM_STATISTICS  # noqa: E402
from medfuse_core.train.domain_fit import encoder_outputs, fit_modality  # noqa: E402
from medfuse_core.train.run import SplitConfig, read_cohort, split_of  # noqa: E402

Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]


def film_features(predictor: Predictor, records: list[PatientRecord]) -> dict[str, np.ndarray]:
    """'domain': the shipped film features (A's columns, then D's); 'stages': per ResNet stage channel
    mean, SD and max (with `stage_sizes`)."""
    features, _ = predictor.featurizer.featurize_many([only(r, "image") for r in records], progress=False)
    outputs, _ = encoder_outputs(predictor.model, features)
    images = torch.tensor(np.stack([f.image for f in features]))
    stages = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            hidden = predictor.model.image_encoder.model(images[start:start + 64], output_hidden_states=True).hidden_states
            stages.append(torch.cat([torch.cat([h.float().mean((2, 3)), h.float().std((2, 3)), h.float().amax((2, 3))], 1)
                                     for h in hidden], 1).numpy())
    return {"domain": outputs["image"], "stages": np.concatenate(stages), "stage_sizes": np.array([h.shape[1] for h in hidden])}


class Mahalanobis:
    def __init__(self, train: np.ndarray):
        fit = LedoitWolf().fit(train)
        self.mean, self.precision = fit.location_, fit.precision_

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c = x - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", c, self.precision, c), 0.0))


def largest_scaled(parts: list[tuple[Callable[[dict], np.ndarray], Callable[[np.ndarray], np.ndarray]]],
                   train: dict) -> Scorer:
    """parts: (columns of a feature dict, detector class); each detector fitted on the training columns,
    its score divided by its 97th training percentile; the largest counts."""
    fitted = []
    for columns, detector in parts:
        model = detector(columns(train))
        fitted.append((columns, model, float(np.quantile(model(columns(train)), 0.97))))
    return lambda f: np.max([model(columns(f)) / scale for columns, model, scale in fitted], axis=0)


def candidates(train: dict) -> dict[str, Scorer]:
    first = train["domain"].shape[1] - FILM_STATISTICS
    a = lambda f: f["domain"][:, :first]  # noqa: E731
    d = lambda f: f["domain"][:, first:]  # noqa: E731
    stage_columns, start = [], 0
    for size in train["stage_sizes"]:
        for _ in ("mean", "sd", "max"):
            stage_columns.append(lambda f, s=slice(start, start + int(size)): f["stages"][:, s])
            start += int(size)
    out: dict[str, Scorer] = {}
    m = Mahalanobis(a(train))
    out["A, v2: Mahalanobis on encoder output + histogram/thumbnail"] = lambda f: m(a(f))
    knn = KnnDistance(a(train))
    out["B: kNN (k = 10) on A's features"] = lambda f: knn(a(f))
    pooled = Mahalanobis(train["stages"])
    out["C: Mahalanobis on every stage's channel mean/SD/max, pooled"] = lambda f: pooled(f["stages"])
    out["C per stage: one Mahalanobis per stage and statistic, largest"] = largest_scaled(
        [(c, Mahalanobis) for c in stage_columns], train)
    md = Mahalanobis(d(train))
    out["D: Mahalanobis on the film statistics alone"] = lambda f: md(d(f))
    shipped = fit_modality(train["domain"], train["domain"][:0], 0.03, further_blocks=FILM_STATISTICS)
    out["A + D, v3 (shipped): two blocks, largest scaled"] = lambda f: shipped.distance(f["domain"])
    out["A + C per stage + D, largest scaled"] = largest_scaled([(a, Mahalanobis), (d, Mahalanobis)]
                                                                + [(c, Mahalanobis) for c in stage_columns], train)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--train-data", required=True, help="the checkpoint's training cohort (its train/val split)")
    parser.add_argument("--data", required=True, help="an in-distribution cohort the model never saw")
    parser.add_argument("--real-films", help="the pydicom-data 1.0.0 wheel, or a folder holding it or its RG*.dcm files")
    parser.add_argument("--rate", type=float, default=0.03, help="false-alarm rate of the thresholds on the val split")
    parser.add_argument("--max-patients", type=int, default=2000)
    parser.add_argument("--name", default="film_domain_candidates")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    split = SplitConfig(**predictor.config["split"])
    cohort = [r for r in read_cohort(args.train_data, False, films_only=True)[: args.max_patients] if r.images]
    train = film_features(predictor, [r for r in cohort if split_of(r.patient_id, split) == "train"])
    val = film_features(predictor, [r for r in cohort if split_of(r.patient_id, split) == "val"])
    clean_records = [r for r in read_cohort(args.data, False, films_only=True)[: args.max_patients] if r.images]
    clean = film_features(predictor, clean_records)
    rng = np.random.default_rng(0)
    shifted = {name: film_features(predictor, [replace(r, images=[replace(im, pixels=shift(np.asarray(im.pixels, np.float32), rng))
                                                                  for im in r.images]) for r in clean_records])
               for name, shift in FILM_SHIFTS.items()}
    if args.real_films:
        with tempfile.TemporaryDirectory() as scratch:
            films = real_films(real_film_paths(Path(args.real_films), Path(scratch)), 15, rng)
        base = clean_records[0]
        shifted["real CR films + crops/rescalings"] = film_features(
            predictor, [replace(base, images=[replace(base.images[0], pixels=p)]) for _, p in films])
    table = {}
    for name, score in candidates(train).items():
        threshold = float(np.quantile(score(val), 1 - args.rate, method="higher"))
        in_distribution = score(clean)
        row = {"false_alarms": float(np.mean(in_distribution > threshold))}
        for shift, features in shifted.items():
            out = score(features)
            row[shift] = float(roc_auc_score(np.r_[np.zeros(len(in_distribution)), np.ones(len(out))],
                                             np.r_[in_distribution, out]))
        table[name] = row
        print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    payload = {"checkpoint": Path(args.checkpoint).name, "data": Path(args.data).name, "rate": args.rate,
               "films": {"train": len(train["domain"]), "val": len(val["domain"]), "in_distribution": len(clean["domain"])},
               "candidates": table, "seconds": time.perf_counter() - started,
               "command": "python benchmarks/film_domain_candidates.py --checkpoint CHECKPOINT --train-data TRAIN_COHORT "
                          "--data COHORT --real-films PYDICOM_DATA"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    shifts = list(shifted)
    lines = [f"# Film out-of-domain candidates ({payload['data']})", "",
             f"Fitted on {payload['films']['train']} training films, thresholds at {args.rate:.0%} of "
             f"{payload['films']['val']} validation films (the checkpoint's own split); false alarms and AUROC on "
             f"{payload['films']['in_distribution']} films of `{payload['data']}`. Command: `{payload['command']}`.", "",
             "| candidate | false alarms | " + " | ".join(shifts) + " |", "| --- | --- | " + " | ".join("---" for _ in shifts) + " |"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['false_alarms']:.1%} | " + " | ".join(f"{row[s]:.3f}" for s in shifts) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
