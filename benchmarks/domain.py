"""Does the applicability domain catch inputs unlike the training data? Detection AUROC per modality.

In-distribution: the patients of a synthetic cohort the model never saw (`--data`: the validation cohort
`synth --n 500 --seed 3000` for choices, the held-out `synth --n 500 --seed 2000` reported once). Each
modality's out-of-domain sets are made from the same patients' inputs, so the only difference is the shift:
- films: real chest CR films (`--real-films`: the pydicom-data 1.0.0 wheel or a folder of its
  RG1_*/RG3_* DICOM files: 2 radiographs x 4 encodings, MONOCHROME1 and JPEG 2000 among them; each also
  with random crops and rescalings, what another acquisition of the same film looks like), and the
  cohort's own films inverted (wrong polarity), lateral-like (the chest squeezed to a side view's width
  with the spine at one edge), rotated 90 degrees, rotated 15 degrees, another anatomy (a zoomed corner:
  no thorax), another scanner contrast (gamma 0.4 and 2.5), and text burnt in;
- labs: values in another unit, the unit column left as it was (SI factors where a common SI unit
  exists, x10 otherwise), and another population (every value moved 2 reference-range widths up);
- vitals: temperature in Fahrenheit and weight in pounds (labelled as the model's units), and another
  population (heart rate +40, systolic/diastolic/mean pressure -35, SpO2 -12, respiratory rate +14).
AUROC: out-of-domain distances against the in-distribution patients' distances of that modality; the
detection rate and the in-distribution false-alarm rate are at the checkpoint's thresholds (set on the
training cohort's validation split at `domain.false_alarm_rate`).
With `--train-data` (the training cohort), the same AUROCs for a k-nearest-neighbour distance (mean
Euclidean distance to the 10 nearest training patients' standardised encoder outputs), the alternative
the shipped Mahalanobis distance is compared with.

    python -m pip download --no-deps pydicom-data==1.0.0 -d PDD
    python benchmarks/domain.py --checkpoint assets/demo_model --data HELDOUT_DIR --real-films PDD

Writes benchmarks/results/domain.json and .md (`--name` changes the file name, e.g. domain_validation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.runtime.domain import Domain  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.record import MODALITIES, ChestImage, Labs, PatientRecord, Vitals  # noqa: E402
from medfuse_core.sources.images import load_image  # noqa: E402
from medfuse_core.train.domain_fit import encoder_outputs  # noqa: E402
from medfuse_core.train.refit import split_records  # noqa: E402
from medfuse_core.train.run import SplitConfig, read_cohort  # noqa: E402

GOALS = {"image": 0.99, "labs": 0.95, "vitals": 0.95}

# ---- films


def _resize(pixels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels.astype(np.float32)).resize((cols, rows), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def invert(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - p


def lateral_like(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = p.shape
    half = p[:, : cols // 2]  # one hemithorax, squeezed, spine (the film's centre) at the edge
    squeezed = _resize(half, rows, int(cols * 0.45))
    out = np.full_like(p, float(np.percentile(p, 5)))
    start = int(cols * 0.3)
    out[:, start : start + squeezed.shape[1]] = squeezed
    return out


def rotate(angle: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def turn(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = Image.fromarray(p.astype(np.float32))
        return np.asarray(image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0.0), dtype=np.float32)
    return turn


def other_anatomy(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = p.shape
    r0, c0 = int(rng.integers(0, rows // 2)), int(rng.integers(0, cols // 2))
    return _resize(p[r0 : r0 + rows // 3, c0 : c0 + cols // 3], rows, cols)  # a zoomed patch: no thorax in view


def gamma(value: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    return lambda p, rng: np.clip(p, 0, 1) ** value


def burnt_text(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray((np.clip(p, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rows, cols = p.shape
    font = ImageFont.load_default(size=max(10, rows // 14))
    for line, text in enumerate(("PORTABLE  AP", "R", "ICU 3  08:14", "ID 48213977")):
        draw.text((int(cols * 0.05), int(rows * (0.04 + 0.1 * line))), text, fill=255, font=font)
    return np.asarray(image, dtype=np.float32) / 255.0


FILM_SHIFTS = {
    "inverted polarity": invert,
    "lateral-like view": lateral_like,
    "rotated 90 degrees": rotate(90),
    "rotated 15 degrees": rotate(15),
    "other anatomy (zoomed patch)": other_anatomy,
    "other contrast (gamma 0.4)": gamma(0.4),
    "other contrast (gamma 2.5)": gamma(2.5),
    "burnt-in text": burnt_text,
}


def real_film_paths(source: Path, scratch: Path) -> list[Path]:
    """RG1_*/RG3_* DICOM files from the pydicom-data wheel (extracted to `scratch`) or a folder."""
    source = Path(source)
    wheels = [source] if source.is_file() else sorted(source.glob("pydicom_data-*.whl"))
    if wheels:
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if Path(n).name.startswith(("RG1_", "RG3_")) and n.endswith(".dcm")]
            for name in names:
                (scratch / Path(name).name).write_bytes(wheel.read(name))
        return sorted(scratch / Path(n).name for n in names)
    return sorted(p for p in source.rglob("*.dcm") if p.name.startswith(("RG1_", "RG3_")))


def real_films(paths: list[Path], variants: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    out = []
    for path in paths:
        pixels = load_image(path, radiograph=True).pixels
        out.append((path.name, pixels))
        rows, cols = pixels.shape
        for v in range(variants):  # another acquisition of the same film: a crop and another scale
            top, left = int(rng.integers(0, rows // 8)), int(rng.integers(0, cols // 8))
            bottom, right = rows - int(rng.integers(0, rows // 8)), cols - int(rng.integers(0, cols // 8))
            scale = float(rng.uniform(0.25, 0.6))
            crop = pixels[top:bottom, left:right]
            out.append((f"{path.name} crop {v}", _resize(crop, max(8, int(crop.shape[0] * scale)),
                                                          max(8, int(crop.shape[1] * scale)))))
    return out


# ---- labs and vitals

SI_FACTORS = {"Creatinine": 88.4, "Glucose": 0.0555, "Urea Nitrogen": 0.357, "Hemoglobin": 10.0, "Calcium, Total": 0.25,
              "Albumin": 10.0, "Bilirubin, Total": 17.1, "Magnesium": 0.411, "Phosphate": 0.323, "Lactate": 9.01}


def labs_other_unit(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    factors = out["item"].map(SI_FACTORS).fillna(10.0).astype(float)
    out["value"] = out["value"] * factors
    out["value_text"] = out["value"].map(lambda v: "" if pd.isna(v) else f"{v:g}")
    return out


def labs_other_population(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    width = (out["ref_high"] - out["ref_low"]).where(lambda w: w > 0)
    out["value"] = out["value"] + 2 * width.fillna(out["value"].abs())
    out["value_text"] = out["value"].map(lambda v: "" if pd.isna(v) else f"{v:g}")
    return out


def _vitals_map(table: pd.DataFrame, changes: dict[str, Callable[[pd.Series], pd.Series]]) -> pd.DataFrame:
    out = table.copy()
    for channel, change in changes.items():
        rows = out["channel"] == channel
        out.loc[rows, "value"] = change(out.loc[rows, "value"])
    out["value_text"] = out["value"].map(lambda v: "" if pd.isna(v) else f"{v:g}")
    return out


def vitals_other_unit(table: pd.DataFrame) -> pd.DataFrame:
    return _vitals_map(table, {"Temperature": lambda v: v * 9 / 5 + 32, "Weight": lambda v: v * 2.20462})


def vitals_other_population(table: pd.DataFrame) -> pd.DataFrame:
    return _vitals_map(table, {"Heart Rate": lambda v: v + 40, "Systolic blood pressure": lambda v: v - 35,
                               "Diastolic blood pressure": lambda v: v - 35, "Mean blood pressure": lambda v: v - 35,
                               "Oxygen saturation": lambda v: v - 12, "Respiratory rate": lambda v: v + 14})


# ---- scoring


def only(record: PatientRecord, modality: str, **change) -> PatientRecord:
    """The record with one modality kept (the encoders are per modality: the others would not change it)."""
    kept = {"labs": Labs(), "vitals": Vitals(), "notes": [], "images": []}
    name = {"labs": "labs", "vitals": "vitals", "notes": "notes", "image": "images"}[modality]
    kept[name] = change.get(name, getattr(record, name))
    return replace(record, **kept, problems=[])


KNN_K = 10


class KnnDistance:
    """Mean Euclidean distance to the k nearest training patients, features standardised on the training set."""

    def __init__(self, train: np.ndarray, k: int = KNN_K):
        self.mean, self.std = train.mean(0), train.std(0) + 1e-6
        self.train = (train - self.mean) / self.std
        self.k = k

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        out = []
        for start in range(0, len(z), 256):
            block = z[start:start + 256]
            d = np.sqrt(np.maximum(((block[:, None, :] - self.train[None]) ** 2).sum(-1), 0))
            out.append(np.sort(d, axis=1)[:, : self.k].mean(1))
        return np.concatenate(out) if out else np.zeros(0)


KNN: dict[str, KnnDistance] = {}  # modality -> scorer, filled when --train-data is given
KNN_SCORES: dict[int, np.ndarray] = {}  # id of a distances() result -> the kNN scores of the same rows


def distances(predictor: Predictor, domain: Domain, records: list[PatientRecord], modality: str) -> np.ndarray:
    features, _ = predictor.featurizer.featurize_many(records, progress=False)
    outputs, present = encoder_outputs(predictor.model, features)
    d = domain.distances(outputs, present, list(MODALITIES))[:, MODALITIES.index(modality)]
    keep = np.isfinite(d)
    result = d[keep]
    if modality in KNN:
        KNN_SCORES[id(result)] = KNN[modality](outputs[modality][keep])
    return result


def summarise(name: str, modality: str, shifted: np.ndarray, clean: np.ndarray, threshold: float,
              rows: np.ndarray | None = None) -> dict:
    y = np.r_[np.zeros(len(clean)), np.ones(len(shifted) if rows is None else len(rows))]
    chosen = shifted if rows is None else shifted[rows]
    out = {"set": name, "modality": modality, "n_out_of_domain": int(len(chosen)), "n_in_distribution": int(len(clean)),
           "auroc": float(roc_auc_score(y, np.r_[clean, chosen])) if len(chosen) and len(clean) else float("nan"),
           "detected_at_threshold": float(np.mean(chosen > threshold)) if len(chosen) else float("nan")}
    if id(shifted) in KNN_SCORES and id(clean) in KNN_SCORES:
        knn = KNN_SCORES[id(shifted)] if rows is None else KNN_SCORES[id(shifted)][rows]
        out["auroc_knn"] = float(roc_auc_score(y, np.r_[KNN_SCORES[id(clean)], knn]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--data", required=True, help="an in-distribution cohort the model never saw")
    parser.add_argument("--real-films", help="the pydicom-data 1.0.0 wheel, or a folder holding it or its RG*.dcm files")
    parser.add_argument("--real-variants", type=int, default=15, help="crops/rescalings of each real film")
    parser.add_argument("--max-patients", type=int, default=500)
    parser.add_argument("--name", default="domain", help="results file name (without extension)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-data", help="the checkpoint's training cohort: also score a kNN distance for comparison")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    domain = Domain.load(args.checkpoint, predictor.config.get("domain"))
    if domain is None:
        raise SystemExit(f"{args.checkpoint}: no fitted domain (run `python -m medfuse_core calibrate --domain`)")
    records = read_cohort(args.data, progress=False)[: args.max_patients]
    if args.train_data:
        train_records = split_records(args.train_data, SplitConfig(**predictor.config["split"]), "train", progress=False)
        train_features, _ = predictor.featurizer.featurize_many(train_records, progress=False)
        outputs, present = encoder_outputs(predictor.model, train_features)
        for i, m in enumerate(MODALITIES):
            KNN[m] = KnnDistance(outputs[m][present[:, i]])
    rows, false_alarms = [], {}
    clean: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        if modality not in domain.modalities:
            continue
        clean[modality] = distances(predictor, domain, [only(r, modality) for r in records], modality)
        threshold = domain.modalities[modality].threshold
        false_alarms[modality] = {"n": int(len(clean[modality])), "threshold": threshold,
                                  "flagged": float(np.mean(clean[modality] > threshold))}

    with_film = [r for r in records if r.images]
    threshold = domain.modalities["image"].threshold

    def film_record(base: PatientRecord, pixels: np.ndarray, source: str) -> PatientRecord:
        film = base.images[0]
        return only(base, "image", images=[ChestImage(film.time, film.view, pixels.astype(np.float32), source, film.metadata)])

    if args.real_films:
        with tempfile.TemporaryDirectory() as scratch:
            films = real_films(real_film_paths(Path(args.real_films), Path(scratch)), args.real_variants, rng)
        bases = [with_film[i % len(with_film)] for i in range(len(films))]
        d = distances(predictor, domain, [film_record(b, p, n) for b, (n, p) in zip(bases, films)], "image")
        originals = np.array([i for i, (n, _) in enumerate(films) if " crop " not in n])
        rows.append(summarise(f"real CR films ({len(originals)} files)", "image", d, clean["image"], threshold, originals))
        rows.append(summarise(f"real CR films + {args.real_variants} crops/rescalings each", "image", d, clean["image"], threshold))
    for name, shift in FILM_SHIFTS.items():
        shifted = [film_record(r, shift(r.images[0].pixels, rng), name) for r in with_film]
        rows.append(summarise(f"synthetic films, {name}", "image", distances(predictor, domain, shifted, "image"),
                              clean["image"], threshold))
    for modality, shifts in (("labs", {"other unit (SI factors, unit text unchanged)": labs_other_unit,
                                       "other population (+2 reference-range widths)": labs_other_population}),
                             ("vitals", {"other unit (temperature in F, weight in lb)": vitals_other_unit,
                                         "other population (HR +40, BP -35, SpO2 -12, RR +14)": vitals_other_population})):
        if modality not in domain.modalities:
            continue
        base = [r for r in records if not getattr(r, modality).table.empty]
        for name, shift in shifts.items():
            cls = Labs if modality == "labs" else Vitals
            shifted = [only(r, modality, **{modality: cls(shift(getattr(r, modality).table))}) for r in base]
            rows.append(summarise(f"{modality}, {name}", modality, distances(predictor, domain, shifted, modality),
                                  clean[modality], domain.modalities[modality].threshold))

    payload = {"checkpoint": Path(args.checkpoint).name, "data": Path(args.data).name,
               "method": predictor.config["domain"]["method"], "false_alarm_target": domain.false_alarm_rate,
               "in_distribution_false_alarms": false_alarms, "sets": rows, "goals_auroc": GOALS,
               "seconds": time.perf_counter() - started,
               "command": "python benchmarks/domain.py --checkpoint CHECKPOINT --data COHORT --real-films PYDICOM_DATA_WHEEL"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [f"# Applicability domain: out-of-domain detection ({Path(args.data).name})", "",
             f"Checkpoint `{payload['checkpoint']}`, method `{payload['method']}` (Mahalanobis distance of each "
             "modality's encoder output to the training patients' under a Ledoit-Wolf covariance; for films the larger "
             "of two such distances, each divided by its 97th training percentile: the encoder output with the input "
             "histogram and thumbnail, and the film statistics; candidates compared in "
             "benchmarks/results/domain_film_candidates_validation.md); thresholds set on "
             f"the training cohort's validation split at {domain.false_alarm_rate:.0%} false alarms. "
             f"In-distribution: `{payload['data']}`. Command: `{payload['command']}`.", "",
             "| modality | in-distribution patients | threshold | flagged (false alarms) |", "| --- | --- | --- | --- |"]
    for m, f in false_alarms.items():
        lines.append(f"| {m} | {f['n']} | {f['threshold']:.2f} | {f['flagged']:.1%} |")
    knn = any("auroc_knn" in r for r in rows)
    lines += ["", "| out-of-domain set | modality | n | AUROC vs in-distribution | "
              + ("AUROC, kNN distance (comparison) | " if knn else "") + "detected at threshold | goal |",
              "| --- | --- | --- | --- | --- | --- |" + (" --- |" if knn else "")]
    for r in rows:
        goal = GOALS.get(r["modality"])
        knn_cell = (f"{r['auroc_knn']:.3f} | " if "auroc_knn" in r else "- | ") if knn else ""
        lines.append(f"| {r['set']} | {r['modality']} | {r['n_out_of_domain']} | {r['auroc']:.3f} | {knn_cell}"
                     f"{r['detected_at_threshold']:.1%} | {'>= ' + format(goal, '.2f') if goal else ''} "
                     f"{'met' if goal and r['auroc'] >= goal else ('NOT met' if goal else '')} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
