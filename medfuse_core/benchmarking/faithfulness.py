"""Faithfulness of the attributions, measured against the synthetic cohort's planted truth.

Three measurements per checkpoint (ISSUE 4, "Faithfulness benchmark"; DESIGN.md, "Attribution"):

1. **Route accuracy** (`routes.route_accuracy`, always the pair): exact group contributions of all
   patients, batched; positives are the model's decisions (calibrated probability >= the
   checkpoint's threshold).
2. **Evidence localisation**, on true positives of each disease, per modality, only where truth.json
   plants evidence for that disease in that modality *and* the model can see it (the planted lab item
   is one of the patient's lab tokens, a planted note span overlaps a sentence the model read, a
   planted vitals channel is observed in the window, the planted image region is on the film the
   model used; otherwise the case is counted under ``not_visible``, not scored):
   - labs: the top-1 lab item is one of the planted items;
   - notes: the top sentence overlaps a planted span (character overlap in the same note);
   - vitals: the top channel (attribution summed over hours and the channel's columns) is planted;
   - image: pointing game, the argmax of the film-resolution map lies inside the union of the
     planted region masks (PNG from the bundle's truth/ folder; the truth box when no mask is found).
     A constant map (e.g. an all-zero Grad-CAM) is a miss, counted under ``flat``.
   "Top" ranks by signed attribution (the unit that pushes the label's logit up most: for a true
   positive the planted evidence should argue *for* the disease); ``hit_rate_abs`` ranks by
   |attribution| as the app lists them.
3. **Deletion curves**, on the same true positives, per modality present among the disease's route
   modalities: the drop of the label's logit (original - after deletion) when the top-k units by
   signed attribution are removed, against k random units (mean over ``draws`` seeded draws). Units
   and how they are removed, always through the model's real input (`PatientFeatures`), i.e. the
   input the featurizer would produce for a record without that evidence:
   - labs: lab items; the token rows are dropped (no token = the item was not measured);
   - notes: sentences; the embedding rows are dropped;
   - vitals: clinical channels observed in the window; the channel's value columns are set to the
     normal value and its mask to 0, normalised (what the discretizer gives for an unobserved channel);
   - image: square patches of ``patch`` model pixels inside the film; set to 0, the film's mean
     (k is a fraction of the film's patches).
   Removing every unit of a modality marks it absent, as the featurizer does. At step k a case counts
   when it has at least k units (labs, notes, vitals). ``area`` of a curve is its mean drop over the
   k grid; ``top_beats_random`` is True when the top-k mean drop exceeds the random one at every k
   with cases.

JSON (``FaithfulnessReport.to_dict()``, strict JSON, NaN -> null)::

    {"checkpoint": str, "variant": str, "loss": {...train.loss}, "n_patients": int, "labels": [...],
     "route_accuracy": {"single_route", "shared_route", "n_single", "n_shared",
                        "per_disease": {name: {"route", "accuracy", "n"}}} | null,
     "localisation": {modality: {"hit_rate", "hits", "n", "hit_rate_abs", "hits_abs", "not_visible",
                                 "flat", "per_disease": {name: {"hit_rate", "n"}}}},
     "deletion": {modality: {"unit", "k": [...], "n": [...], "top": [...], "random": [...],
                             "area_top", "area_random", "top_beats_random", "n_cases"}},
     "settings": {...}, "seconds": float}
"""

from __future__ import annotations

import logging
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from medfuse_core.features import window
from medfuse_core.numbers import json_safe
from medfuse_core.explain.evidence import DEFAULT_IMAGE_METHOD, EvidenceExplainer, vitals_channel_index
from medfuse_core.explain.groups import group_contributions
from medfuse_core.benchmarking.routes import route_accuracy
from medfuse_core.features.batch import PatientFeatures, collate
from medfuse_core.features.featurize import PatientEvidenceIndex
from medfuse_core.features.vitals import discretize, feature_names as vitals_feature_names
from medfuse_core.record import MODALITIES, PatientRecord, Vitals
from medfuse_core.sources.synth.diseases import DISEASES
from medfuse_core.sources.vital_channels import CHANNEL_NAMES

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KS",
    "IMAGE_FRACTIONS",
    "PATCH",
    "SyntheticCase",
    "Localisation",
    "DeletionCurve",
    "FaithfulnessReport",
    "load_cases",
    "route_pair",
    "faithfulness",
    "lab_hit",
    "note_hit",
    "vitals_hit",
    "pointing_hit",
    "spans_overlap",
    "top_unit",
    "deletion_units",
    "delete_units",
    "deletion_drops",
    "summarise_curve",
]

DEFAULT_KS: tuple[int, ...] = (1, 2, 3, 4, 5)
IMAGE_FRACTIONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)
PATCH = 8  # image deletion unit: PATCH x PATCH model pixels
UNIT_NAMES = {"labs": "lab item", "notes": "sentence", "vitals": "channel", "image": "fraction of film patches"}

_MASK_COLUMNS = np.array([n.startswith("mask->") for n in vitals_feature_names()])
_CHANNEL_OF_COLUMN = vitals_channel_index()
DISEASES_BY_NAME = {d.name: d for d in DISEASES}


# ------------------------------------------------------------------------------------ the cohort


@dataclass
class SyntheticCase:
    """A synthetic patient: the record (with ``truth``), its bundle folder and/or in-memory masks."""

    record: PatientRecord
    folder: Path | None = None
    masks: dict[str, np.ndarray] | None = None  # truth-relative mask path -> bool array

    def region(self, entry: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        """Bool mask (film shape) of one truth image entry: the mask PNG, else the box."""
        mask = None
        name = entry.get("mask")
        if name and self.masks and name in self.masks:
            mask = np.asarray(self.masks[name]).astype(bool)
        elif name and self.folder is not None and (self.folder / name).is_file():
            from PIL import Image

            mask = np.asarray(Image.open(self.folder / name).convert("L")) > 0
        if mask is None:
            mask = np.zeros(shape, dtype=bool)
            r0, c0, r1, c1 = (int(v) for v in entry["box"])
            mask[max(r0, 0) : r1, max(c0, 0) : c1] = True
            return mask
        if mask.shape != tuple(shape):  # a film stored at another size: nearest-neighbour rescale
            rows = np.minimum((np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
            cols = np.minimum((np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
            mask = mask[np.ix_(rows, cols)]
        return mask


def load_cases(folders: Iterable[str | Path], max_patients: int | None = None) -> list[SyntheticCase]:
    """Bundle folders (or one cohort root) -> cases; patients without truth.json are left out."""
    from medfuse_core.sources.bundle import find_bundles, read_bundle

    paths: list[Path] = []
    for f in folders:
        paths += find_bundles(Path(f))
    cases = []
    for p in paths:
        if max_patients is not None and len(cases) >= max_patients:
            break
        record = read_bundle(p)
        if record.truth:
            cases.append(SyntheticCase(record, Path(p)))
    return cases


def _file_positions(items: Sequence[Any], folder: str, default: str) -> dict[str, int]:
    """truth file name ("notes/note_00.txt") -> index in the record's list (by source file name)."""
    out = {}
    for i, item in enumerate(items):
        source = getattr(item, "source", "") or ""
        name = f"{folder}/{Path(source).name}" if source else default.format(i)
        out.setdefault(name, i)
    return out


# ----------------------------------------------------------------------------- scoring, pure


def top_unit(scores: Sequence[float], rank: str = "signed") -> int | None:
    """Index of the top unit: largest attribution ("signed") or largest |attribution| ("abs")."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return None
    return int(np.argmax(np.abs(s) if rank == "abs" else s))


def _lab_keys_of(entry: dict[str, Any]) -> set[str]:
    keys = set()
    if entry.get("itemid") is not None:
        keys.add(f"itemid:{int(entry['itemid'])}")
    if entry.get("item"):
        keys.add(f"name:{str(entry['item']).strip().lower()}")
    return keys


def lab_hit(key: str, name: str, planted: Sequence[dict[str, Any]]) -> bool:
    """A lab token (vocabulary key, display name) is one of the planted items ({"itemid", "item"})."""
    for entry in planted:
        if key in _lab_keys_of(entry) or (entry.get("item") and str(name).strip().lower() == str(entry["item"]).strip().lower()):
            return True
    return False


def spans_overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Half-open character ranges share at least one character."""
    return max(a_start, b_start) < min(a_end, b_end)


def note_hit(sentence: tuple[int, int, int], spans: Sequence[tuple[int, int, int]]) -> bool:
    """sentence (note_index, start, end) overlaps one of the planted spans (note_index, start, end)."""
    n, s, e = sentence
    return any(n == sn and spans_overlap(s, e, ss, se) for sn, ss, se in spans)


def vitals_hit(channel: str, planted_channels: Iterable[str]) -> bool:
    return channel in set(planted_channels)


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray) -> bool | None:
    """The map's maximum lies inside the mask; None for a constant map (no maximum to point with)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ in shape")
    finite = np.where(np.isfinite(heatmap), heatmap, -np.inf)
    if not np.isfinite(finite).any() or finite.max() <= np.nanmin(np.where(np.isfinite(heatmap), heatmap, np.inf)):
        return None
    return bool(mask.flat[int(np.argmax(finite))])


# ------------------------------------------------------------------------- deletion, the input


def _blank_vitals_row(featurizer) -> np.ndarray:
    """(76,) the normalised discretizer row of a patient with nothing observed (normal values, masks 0)."""
    empty = discretize(Vitals(), None, featurizer.discretizer).values[:1]
    return featurizer.normalizer.transform(empty)[0].astype(np.float32)


def _film_patches(index: PatientEvidenceIndex | None, size: int, patch: int) -> list[tuple[int, int, int, int]]:
    """(r0, c0, r1, c1) patches of the model input that overlap the film (all of it without geometry)."""
    g = getattr(index, "image_geometry", None) if index is not None else None
    top, left, h, w = (g.top, g.left, g.height, g.width) if g is not None else (0, 0, size, size)
    out = []
    for r in range(top, top + h, patch):
        for c in range(left, left + w, patch):
            out.append((r, c, min(r + patch, top + h), min(c + patch, left + w)))
    return out


def deletion_units(features: PatientFeatures, modality: str, index: PatientEvidenceIndex | None = None,
                   patch: int = PATCH) -> list[Any]:
    """The removable units of one modality: row indices (labs, notes), observed channel indices
    (vitals), or patches (image, see `_film_patches`). Empty when the modality is absent."""
    if not features.present[MODALITIES.index(modality)]:
        return []
    if modality == "labs":
        return list(range(len(features.lab_items)))
    if modality == "notes":
        return list(range(len(features.note_embeddings)))
    if modality == "vitals":
        observed = features.vitals[:, _MASK_COLUMNS].max(axis=0) > 0  # (17,) mask columns are raw 0/1
        return [int(c) for c in np.flatnonzero(observed)]
    if modality == "image":
        return _film_patches(index, features.image.shape[-1], patch)
    raise ValueError(f"modality {modality!r}: expected one of {', '.join(MODALITIES)}")


def delete_units(features: PatientFeatures, modality: str, units: Sequence[Any], *,
                 blank_vitals: np.ndarray | None = None) -> PatientFeatures:
    """A copy of `features` without `units` of `modality` (see `deletion_units` for what a unit is)."""
    present = features.present.copy()
    m = MODALITIES.index(modality)
    if modality in ("labs", "notes"):
        keep = np.ones(len(features.lab_items) if modality == "labs" else len(features.note_embeddings), dtype=bool)
        keep[list(units)] = False
        present[m] = present[m] and bool(keep.any())
        if modality == "labs":
            return replace(features, present=present, lab_items=features.lab_items[keep], lab_values=features.lab_values[keep])
        return replace(features, present=present, note_embeddings=features.note_embeddings[keep])
    if modality == "vitals":
        if blank_vitals is None:
            raise ValueError("vitals deletion needs blank_vitals (the normalised unobserved row)")
        columns = np.isin(_CHANNEL_OF_COLUMN, list(units))
        vitals = features.vitals.copy()
        vitals[:, columns] = blank_vitals[columns]
        present[m] = present[m] and bool(vitals[:, _MASK_COLUMNS].max(initial=0.0) > 0)
        return replace(features, present=present, vitals=vitals)
    if modality == "image":
        image = features.image.copy()
        for r0, c0, r1, c1 in units:
            image[:, r0:r1, c0:c1] = 0.0  # the film's mean after standardisation
        return replace(features, image=image)
    raise ValueError(f"modality {modality!r}: expected one of {', '.join(MODALITIES)}")


def _unit_counts(n_units: int, modality: str, ks: Sequence[int], fractions: Sequence[float]) -> list[int]:
    """Units removed at each step: k itself, or a fraction of the film's patches (at least 1)."""
    if modality == "image":
        return [max(1, int(round(f * n_units))) for f in fractions]
    return [int(k) for k in ks]


@torch.no_grad()
def _label_logits(model, features: Sequence[PatientFeatures], k: int, device, chunk: int = 64) -> np.ndarray:
    was = model.training
    model.eval()
    try:
        out = [model(collate(list(features[i : i + chunk])).to(device)).logits[:, k].double().cpu().numpy()
               for i in range(0, len(features), chunk)]
    finally:
        model.train(was)
    return np.concatenate(out)


def deletion_drops(model, features: PatientFeatures, modality: str, scores: Sequence[float], label_index: int,
                   counts: Sequence[int], rng: np.random.Generator, draws: int = 5, *,
                   index: PatientEvidenceIndex | None = None, blank_vitals: np.ndarray | None = None,
                   patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Logit drops (original - deleted) of label `label_index` after removing the top-`c` units by
    signed `scores` (aligned with `deletion_units`) and `c` random units (mean of `draws`), for each
    c in `counts`. Steps with more units than the patient has are NaN. One batched forward pass."""
    units = deletion_units(features, modality, index, patch)
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(units):
        raise ValueError(f"{len(scores)} scores for {len(units)} {modality} units")
    order = np.argsort(-scores, kind="stable")
    variants, slots = [features], []
    for c in counts:
        if c > len(units) or c < 1:
            slots.append(None)
            continue
        top = len(variants)
        variants.append(delete_units(features, modality, [units[i] for i in order[:c]], blank_vitals=blank_vitals))
        for _ in range(draws):
            pick = rng.choice(len(units), size=c, replace=False)
            variants.append(delete_units(features, modality, [units[i] for i in pick], blank_vitals=blank_vitals))
        slots.append(top)
    device = next(model.parameters()).device
    logits = _label_logits(model, variants, label_index, device)
    top_drop = np.full(len(counts), np.nan)
    random_drop = np.full(len(counts), np.nan)
    for j, s in enumerate(slots):
        if s is not None:
            top_drop[j] = logits[0] - logits[s]
            random_drop[j] = float(np.mean(logits[0] - logits[s + 1 : s + 1 + draws]))
    return top_drop, random_drop


# ---------------------------------------------------------------------------------- results


@dataclass
class Localisation:
    modality: str
    hits: int = 0
    n: int = 0
    hits_abs: int = 0
    not_visible: int = 0  # planted, but not in what the model saw: not scored
    flat: int = 0  # image: constant maps (scored as misses)
    per_disease: dict[str, list[int]] = field(default_factory=dict)  # name -> [hits, n]

    def add(self, disease: str, hit: bool, hit_abs: bool) -> None:
        self.hits += int(hit)
        self.hits_abs += int(hit_abs)
        self.n += 1
        h = self.per_disease.setdefault(disease, [0, 0])
        h[0] += int(hit)
        h[1] += 1

    def to_dict(self) -> dict[str, Any]:
        rate = (lambda h, n: h / n if n else float("nan"))
        return {"hit_rate": rate(self.hits, self.n), "hits": self.hits, "n": self.n,
                "hit_rate_abs": rate(self.hits_abs, self.n), "hits_abs": self.hits_abs,
                "not_visible": self.not_visible, "flat": self.flat,
                "per_disease": {d: {"hit_rate": rate(h, n), "n": n} for d, (h, n) in self.per_disease.items()}}


@dataclass
class DeletionCurve:
    modality: str
    unit: str
    k: list[float]
    n: list[int]
    top: list[float]  # mean logit drop, top-k by attribution
    random: list[float]  # mean logit drop, k random units (mean over draws)
    area_top: float
    area_random: float
    top_beats_random: bool
    n_cases: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise_curve(modality: str, k: Sequence[float], top: np.ndarray, random: np.ndarray) -> DeletionCurve:
    """Mean curves over cases from per-case drops (cases x steps, NaN where a case has too few units)."""
    top = np.asarray(top, dtype=np.float64).reshape(-1, len(k))
    random = np.asarray(random, dtype=np.float64).reshape(-1, len(k))
    n = (~np.isnan(top)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean_top = np.where(n > 0, np.nansum(top, axis=0) / np.maximum(n, 1), np.nan)
        mean_random = np.where(n > 0, np.nansum(random, axis=0) / np.maximum(n, 1), np.nan)
    steps = n > 0
    beats = bool(steps.any() and np.all(mean_top[steps] > mean_random[steps]))
    area = (lambda c: float(np.mean(c[steps])) if steps.any() else float("nan"))
    return DeletionCurve(modality, UNIT_NAMES[modality], [float(x) for x in k], [int(x) for x in n],
                         [float(x) for x in mean_top], [float(x) for x in mean_random],
                         area(mean_top), area(mean_random), beats, int(top.shape[0]))


@dataclass
class FaithfulnessReport:
    checkpoint: str
    n_patients: int
    labels: list[str]
    route_accuracy: dict[str, Any] | None
    localisation: dict[str, Localisation]
    deletion: dict[str, DeletionCurve]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    variant: str = ""
    loss: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "checkpoint": self.checkpoint, "variant": self.variant, "loss": dict(self.loss),
            "n_patients": self.n_patients, "labels": list(self.labels), "route_accuracy": self.route_accuracy,
            "localisation": {m: v.to_dict() for m, v in self.localisation.items()},
            "deletion": {m: v.to_dict() for m, v in self.deletion.items()},
            "settings": dict(self.settings), "seconds": self.seconds,
        })

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# ------------------------------------------------------------------------------- the benchmark


def group_values(predictor, features: Sequence[PatientFeatures], batch_size: int = 64
                 ) -> tuple[np.ndarray | None, np.ndarray]:
    """(values (B, K, 5) exact group contributions, or None for models without fusion tokens (baselines);
    logits (B, K)), batched."""
    model, device = predictor.model, predictor.device
    values, logits = [], []
    for i in range(0, len(features), batch_size):
        batch = collate(list(features[i : i + batch_size])).to(device)
        if hasattr(model, "fusion"):
            g = group_contributions(model, batch)
            values.append(g.values.double().cpu().numpy())
            logits.append(g.full_logit.double().cpu().numpy())
        else:
            logits.append(_label_logits(model, features[i : i + batch_size], slice(None), device))
    logits_all = np.concatenate(logits) if logits else np.zeros((0, len(predictor.labels)))
    return (np.concatenate(values) if values else None), logits_all


def route_pair(predictor, features: Sequence[PatientFeatures], batch_size: int = 64):
    """(RouteAccuracy | None, logits (B, K), positive (B, K)): exact group contributions, batched.
    Models without fusion tokens (baselines) get None and their plain logits."""
    values, logits_all = group_values(predictor, features, batch_size)
    positive = predictor.positive(logits_all)
    if values is None:
        return None, logits_all, positive
    labels = np.stack([f.labels for f in features])
    present = np.stack([f.present for f in features])
    return route_accuracy(values, labels, positive, present, list(predictor.labels)), logits_all, positive


def _planted_notes(case: SyntheticCase, entries: list[dict]) -> list[tuple[int, int, int]]:
    where = _file_positions(case.record.notes, "notes", "notes/note_{:02d}.txt")
    return [(where[e["file"]], int(e["start"]), int(e["end"])) for e in entries if e.get("file") in where]


def _planted_images(case: SyntheticCase, entries: list[dict]) -> list[tuple[int, dict]]:
    where = _file_positions(case.record.images, "images", "images/image_{:02d}.dcm")
    out = []
    for e in entries:
        name = e.get("file", "")
        i = where.get(name)
        if i is None:  # another suffix (a PNG film): match by stem
            stem = re.sub(r"\.[^.]*$", "", name)
            i = next((j for n, j in where.items() if re.sub(r"\.[^.]*$", "", n) == stem), None)
        if i is not None:
            out.append((i, e))
    return out


def planted_film_mask(case: SyntheticCase, entries: list[dict], image_index: int | None,
                      shape: tuple[int, int]) -> np.ndarray | None:
    """The union of the planted regions (truth entries of one disease) on the film the model used, on a
    (rows, cols) grid; None when none of them is on that film (the model could not see them)."""
    entries = [e for i, e in _planted_images(case, entries) if i == image_index]
    if not entries:
        return None
    mask = np.zeros(shape, dtype=bool)
    for e in entries:
        mask |= case.region(e, shape)
    return mask


def faithfulness(predictor, cases: Sequence[SyntheticCase], *, n_steps: int = 32, draws: int = 5, seed: int = 0,
                 ks: Sequence[int] = DEFAULT_KS, fractions: Sequence[float] = IMAGE_FRACTIONS, patch: int = PATCH,
                 image_method: str = DEFAULT_IMAGE_METHOD, batch_size: int = 64, checkpoint: str = "",
                 progress: bool = False) -> FaithfulnessReport:
    """Route accuracy, evidence localisation and deletion curves of one loaded `Predictor` on
    synthetic cases (see the module docstring). Evidence maps are computed only for true positives
    of the ten diseases, and only for the modalities scored."""
    start = time.perf_counter()
    model = predictor.model
    labels = list(predictor.labels)
    records = [c.record for c in cases]
    features, indices = predictor.featurize(records)
    routes, logits, positive = route_pair(predictor, features, batch_size)
    blank = _blank_vitals_row(predictor.featurizer)
    rng = np.random.default_rng(seed)
    local = {m: Localisation(m) for m in MODALITIES}
    drops: dict[str, tuple[list, list]] = {m: ([], []) for m in MODALITIES}
    steps = {m: (list(fractions) if m == "image" else list(ks)) for m in MODALITIES}
    hours = float(predictor.featurizer.spec.hours)

    for b, (case, f, ix) in enumerate(zip(cases, features, indices)):
        truth = (case.record.truth or {}).get("evidence", {})
        tasks = []
        for k, name in enumerate(labels):
            disease = DISEASES_BY_NAME.get(name)
            if disease is None or not (f.labels[k] == 1 and positive[b, k]):
                continue
            planted = truth.get(name, {})
            scored = [m for m in MODALITIES if f.present[MODALITIES.index(m)]
                      and (m in disease.modalities or planted.get(m))]
            if scored:
                tasks.append((k, name, planted, scored))
        if not tasks:
            continue
        has_notes = bool(f.present[MODALITIES.index("notes")])
        explainer = EvidenceExplainer(model, f, ix, case.record, predictor.featurizer.backbone if has_notes else None,
                                      predictor.featurizer.vocabulary, hours=hours)
        for k, name, planted, scored in tasks:
            disease = DISEASES_BY_NAME[name]
            for m in scored:
                scores = _scores(explainer, m, k, n_steps, image_method, f, ix, patch)
                if scores is None:
                    continue
                unit_scores, evidence = scores
                if planted.get(m):
                    _localise(local[m], m, name, planted[m], evidence, case, f, ix, hours)
                if m in disease.modalities and len(unit_scores):
                    counts = _unit_counts(len(unit_scores), m, steps[m], fractions)
                    top, rnd = deletion_drops(model, f, m, unit_scores, k, counts, rng, draws, index=ix,
                                              blank_vitals=blank, patch=patch)
                    drops[m][0].append(top)
                    drops[m][1].append(rnd)
        if progress:
            logger.info("faithfulness: %d/%d patients", b + 1, len(cases))

    deletion = {m: summarise_curve(m, steps[m], np.array(drops[m][0]).reshape(-1, len(steps[m])),
                                   np.array(drops[m][1]).reshape(-1, len(steps[m]))) for m in MODALITIES}
    settings = {"n_steps": n_steps, "draws": draws, "seed": seed, "ks": list(ks), "image_fractions": list(fractions),
                "patch": patch, "image_method": image_method, "ranking": "signed attribution (hit_rate_abs: |attribution|)",
                "positive": "calibrated probability >= checkpoint threshold", "deletion_area": "mean drop over the k grid"}
    config = getattr(predictor, "config", {}) or {}
    return FaithfulnessReport(checkpoint, len(cases), labels, routes.to_dict() if routes is not None else None, local,
                              deletion, settings, time.perf_counter() - start,
                              variant=str((config.get("model") or {}).get("variant", "")),
                              loss=dict((config.get("train") or {}).get("loss") or {}))


def _scores(explainer: EvidenceExplainer, m: str, k: int, n_steps: int, image_method: str, f: PatientFeatures,
            ix: PatientEvidenceIndex, patch: int) -> tuple[np.ndarray, Any] | None:
    """Per deletion unit attribution scores (aligned with `deletion_units`) and the raw evidence."""
    if m == "labs":
        labs, _ = explainer.labs(k, n_steps)
        if not labs:
            return None
        row = {key: i for i, key in enumerate(ix.lab_keys)}
        scores = np.zeros(len(f.lab_items))
        for e in labs:
            scores[row[e.key]] = e.attribution
        return scores, labs
    if m == "notes":
        sentences, _ = explainer.note_sentences(k, n_steps)
        if not sentences:
            return None
        scores = np.zeros(len(f.note_embeddings))
        for e in sentences:
            scores[e.sentence] = e.attribution
        return scores, sentences
    if m == "vitals":
        v = explainer.vitals(k, n_steps)
        if v is None:
            return None
        totals = v.matrix.sum(axis=0).astype(np.float64)
        units = deletion_units(f, "vitals")
        return totals[units], v
    image = explainer.image(k, image_method, n_steps)
    if image is None:
        return None
    units = deletion_units(f, "image", ix, patch)
    return np.array([float(image.model_map[r0:r1, c0:c1].sum()) for r0, c0, r1, c1 in units]), image


def _localise(acc: Localisation, m: str, disease: str, planted: list[dict], evidence: Any, case: SyntheticCase,
              features: PatientFeatures, ix: PatientEvidenceIndex, hours: float = window.HOURS) -> None:
    """Score one (true positive, modality) against the planted truth, if the model could see it."""
    if m == "labs":
        visible = [e for e in planted if any(lab_hit(key, name, [e]) for key, name in zip(ix.lab_keys, ix.lab_names))]
        if not visible:
            acc.not_visible += 1
            return
        top = evidence[top_unit([e.attribution for e in evidence])]
        top_abs = evidence[0]  # ranked by |attribution|
        acc.add(disease, lab_hit(top.key, top.name, planted), lab_hit(top_abs.key, top_abs.name, planted))
    elif m == "notes":
        spans = _planted_notes(case, planted)
        if not any(note_hit((s.note_index, s.start, s.end), spans) for s in ix.sentences):
            acc.not_visible += 1
            return
        top = evidence[top_unit([e.attribution for e in evidence])]
        acc.add(disease, note_hit((top.note_index, top.start, top.end), spans),
                note_hit((evidence[0].note_index, evidence[0].start, evidence[0].end), spans))
    elif m == "vitals":
        totals = evidence.matrix.sum(axis=0).astype(np.float64)
        channels = {e["channel"] for e in planted}
        observed = set(deletion_units(features, "vitals"))  # channels observed in the window
        in_window = {e["channel"] for e in planted if float(e["hours"][0]) < hours}
        if not any(c in CHANNEL_NAMES and CHANNEL_NAMES.index(c) in observed for c in in_window):
            acc.not_visible += 1
            return
        acc.add(disease, vitals_hit(CHANNEL_NAMES[top_unit(totals)], channels),
                vitals_hit(CHANNEL_NAMES[top_unit(totals, "abs")], channels))
    elif m == "image":
        mask = planted_film_mask(case, planted, ix.image_index, evidence.heatmap.shape)
        if mask is None:
            acc.not_visible += 1
            return
        hit = pointing_hit(evidence.heatmap, mask)
        if hit is None:
            acc.flat += 1
            hit = False
        acc.add(disease, hit, hit)

