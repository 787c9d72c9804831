"""Applicability domain per modality: how unlike the training patients an input is, as the model sees it.

The model answers for anything it is given: a real chest film, a lateral view or a lab table in another
unit all get a confident probability (issue 17). For each modality, the frozen encoder's output on the
training patients that have it is summarised by its mean and a shrinkage (Ledoit-Wolf) covariance; an
input's score is its Mahalanobis distance to them (Lee et al., NeurIPS 2018, on one layer). The flag
threshold of each modality is the score below which (1 - false-alarm rate) of the in-distribution
*validation* patients fall, so by construction at most that share of validation patients is flagged;
the rate on other in-distribution patients is measured by benchmarks/domain.py.

For films the encoder output alone misses what per-image standardisation and the encoder's invariances
hide (measured on the validation cohort: another scanner contrast, gamma 0.4, AUROC 0.75; burnt-in text
0.90; a 15 degree rotation 0.97), so the film's features are the encoder output plus statistics of the
model's input film: a 16-bin histogram of the standardised pixels and an 8 x 8 thumbnail
(`image_input_statistics`), one Mahalanobis distance over both; that still left gamma 0.4 / 2.5 at 0.87
/ 0.94 and burnt-in text at 0.96 (validation). v3 adds a second block, `film_statistics` (the pixel
distribution's skewness, kurtosis and quantiles, which a gamma bends; the edge and Laplacian energy and
the share of extreme pixels, which burnt-in text raises), with its own Mahalanobis distance; the film's
score is the larger of the two, each divided by its 97th percentile on the training films. Chosen on the
validation cohort (benchmarks/results/domain_validation.md) among a k-nearest-neighbour distance (text
0.94), Mahalanobis distances on every ResNet stage's channel means, SDs and maxima (pooled: gamma 0.4
0.78; per stage, the largest: 0.996-0.999) and these statistics alone (a 15 degree rotation 0.95): the
two blocks gave 0.999-1.000 on every film shift at 2.9 % validation false alarms, without running the
encoder a second time.

Stored beside the weights: `domain.safetensors` (mean and precision matrix per modality) and config.json
`domain` (method, thresholds, how they were fitted). A checkpoint without them has no domain check, and
every result says so (`DomainCheck.available` False), rather than claiming an input is in domain.
Fitting is in train/domain_fit.py; this module only applies a fitted domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

DOMAIN_FILE = "domain.safetensors"
METHOD = "mahalanobis_ledoit_wolf_v3"  # v3: the film's second block (film_statistics); v2: one block per modality
METHODS = ("mahalanobis_ledoit_wolf_v2", METHOD)  # v2 checkpoints still load (their blocks are the first columns)


HISTOGRAM_BINS = 16
HISTOGRAM_RANGE = (-4.0, 4.0)  # standardised pixel values
THUMBNAIL = 8


def image_input_statistics(images: np.ndarray) -> np.ndarray:
    """(N, 16 + 64): histogram (fraction of pixels per bin) and 8 x 8 block means of the model's input
    films (N, 1, S, S) (letterboxed, standardised; features/images.py)."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), images.shape[-2], images.shape[-1])
    n, size = len(images), images.shape[-1]
    edges = np.linspace(*HISTOGRAM_RANGE, HISTOGRAM_BINS + 1)
    clipped = np.clip(images.reshape(n, -1), HISTOGRAM_RANGE[0], HISTOGRAM_RANGE[1] - 1e-9)
    which = np.digitize(clipped, edges[1:-1])
    histogram = np.stack([np.bincount(row, minlength=HISTOGRAM_BINS) for row in which]) / clipped.shape[1]
    block = size // THUMBNAIL
    thumbnail = images[:, : block * THUMBNAIL, : block * THUMBNAIL].reshape(n, THUMBNAIL, block, THUMBNAIL, block).mean((2, 4))
    return np.hstack([histogram, thumbnail.reshape(n, -1)])


FILM_STATISTICS = 19  # film_statistics' columns: the last of the film's domain features (its second block)


def film_statistics(images: np.ndarray) -> np.ndarray:
    """(N, 19) of the model's input films (N, 1, S, S), letterbox padding (exact zeros) left out: skewness,
    excess kurtosis, the 1/5/25/50/75/95/99 % quantiles of the standardised pixels; mean and 99th
    percentile of the horizontal and vertical absolute differences; mean, 99th and 99.9th percentile of
    the absolute Laplacian; the shares of pixels above 2.5 and 3.5 SD and below -2.5 SD."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), images.shape[-2], images.shape[-1])
    out = np.zeros((len(images), FILM_STATISTICS))
    for i, image in enumerate(images):
        pixels = image.ravel()
        inside = pixels[pixels != 0] if (pixels != 0).sum() > 2 else pixels
        centred = inside - inside.mean()
        sd = centred.std()
        skew = float((centred ** 3).mean() / sd ** 3) if sd > 0 else 0.0
        kurtosis = float((centred ** 4).mean() / sd ** 4 - 3.0) if sd > 0 else 0.0
        across, down = np.abs(np.diff(image, axis=1)), np.abs(np.diff(image, axis=0))
        laplacian = np.abs(4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:])
        out[i] = np.r_[skew, kurtosis, np.quantile(inside, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]),
                       across.mean(), down.mean(), np.quantile(across, 0.99), np.quantile(down, 0.99),
                       laplacian.mean(), np.quantile(laplacian, 0.99), np.quantile(laplacian, 0.999),
                       (inside > 2.5).mean(), (inside > 3.5).mean(), (inside < -2.5).mean()]
    return out


def domain_features(outputs: Mapping[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """What the domain scores: every modality's encoder output; the film's joined by its input statistics
    (first block) and its film statistics (second block, the last FILM_STATISTICS columns)."""
    out = dict(outputs)
    if "image" in out:
        out["image"] = np.hstack([np.asarray(out["image"], dtype=np.float64), image_input_statistics(images),
                                  film_statistics(images)])
    return out


@dataclass
class Block:
    """A further block of a modality's features (columns start:stop) with its own Mahalanobis distance,
    divided by `scale` (its 97th percentile on the training patients)."""

    start: int
    stop: int
    mean: np.ndarray
    precision: np.ndarray
    scale: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, dtype=np.float64)[:, self.start : self.stop] - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0)) / self.scale


@dataclass
class ModalityDomain:
    """One modality's training feature distribution and flag threshold (on the Mahalanobis distance)."""

    mean: np.ndarray  # (d,) of the first block: the first d columns of the features
    precision: np.ndarray  # (d, d) inverse of the shrinkage covariance
    threshold: float  # distances above it are out of domain
    info: dict[str, Any] = field(default_factory=dict)  # n_train, n_val, false-alarm rate on validation, ...
    scale: float = 1.0  # the first block's distance is divided by it (1 with one block)
    blocks: list[Block] = field(default_factory=list)  # further blocks (the film's statistics)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (N, >= d) to the training patients; with further
        blocks, the largest of the blocks' distances, each divided by its scale."""
        features = np.asarray(features, dtype=np.float64)
        centred = features[:, : len(self.mean)] - self.mean
        squared = np.einsum("nd,de,ne->n", centred, self.precision, centred)
        distance = np.sqrt(np.maximum(squared, 0.0)) / self.scale
        for block in self.blocks:
            distance = np.maximum(distance, block.distance(features))
        return distance


@dataclass
class DomainCheck:
    """Per modality: its distance to the training patients, the threshold, and whether it is out of domain.
    `available` False: the checkpoint has no fitted domain, nothing is claimed either way."""

    available: bool
    distance: dict[str, float]  # present modalities only
    threshold: dict[str, float]
    out_of_domain: dict[str, bool]
    method: str = METHOD  # the checkpoint's detector (a v2 checkpoint is checked, and named, as v2)

    @property
    def flagged(self) -> list[str]:
        return [m for m, out in self.out_of_domain.items() if out]

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False}
        return {"available": True, "method": self.method, "out_of_domain": sorted(self.flagged),
                "per_modality": {m: {"distance": self.distance[m], "threshold": self.threshold[m],
                                     "out_of_domain": self.out_of_domain[m]} for m in self.distance}}


UNAVAILABLE = DomainCheck(False, {}, {}, {})


@dataclass
class Domain:
    """The fitted applicability domain of a checkpoint, modality by modality."""

    modalities: dict[str, ModalityDomain]
    false_alarm_rate: float  # the target on validation the thresholds were set at
    fitted_on: dict[str, Any] = field(default_factory=dict)
    method: str = METHOD  # METHODS: what config.json named (a v2 checkpoint has no film_statistics block)

    def distances(self, features: Mapping[str, np.ndarray], present: np.ndarray,
                  modality_names: list[str]) -> np.ndarray:
        """(N, M) distances; NaN where the modality is absent or has no fitted domain."""
        present = np.asarray(present, dtype=bool)
        out = np.full(present.shape, np.nan)
        for i, m in enumerate(modality_names):
            if m in self.modalities and present[:, i].any():
                rows = present[:, i]
                out[rows, i] = self.modalities[m].distance(np.asarray(features[m])[rows])
        return out

    def thresholds(self, modality_names: list[str]) -> np.ndarray:
        return np.array([self.modalities[m].threshold if m in self.modalities else np.inf for m in modality_names])

    def checks(self, features: Mapping[str, np.ndarray], present: np.ndarray, modality_names: list[str]) -> list[DomainCheck]:
        """One DomainCheck per row."""
        distance = self.distances(features, present, modality_names)
        limits = self.thresholds(modality_names)
        out = []
        for row in distance:
            seen = {m: float(d) for m, d in zip(modality_names, row) if np.isfinite(d)}
            limit = {m: float(limits[modality_names.index(m)]) for m in seen}
            out.append(DomainCheck(True, seen, limit, {m: seen[m] > limit[m] for m in seen}, self.method))
        return out

    # ---- checkpoint files

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write domain.safetensors into `folder`; returns config.json's `domain` section."""
        tensors = {}
        for m, d in self.modalities.items():
            tensors[f"{m}.mean"] = torch.tensor(d.mean, dtype=torch.float64)
            tensors[f"{m}.precision"] = torch.tensor(d.precision, dtype=torch.float32)
            for j, block in enumerate(d.blocks):
                tensors[f"{m}.block{j}.mean"] = torch.tensor(block.mean, dtype=torch.float64)
                tensors[f"{m}.block{j}.precision"] = torch.tensor(block.precision, dtype=torch.float64)
        path = Path(folder) / DOMAIN_FILE
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
        tmp.replace(path)
        return {"method": self.method, "file": DOMAIN_FILE, "false_alarm_rate": self.false_alarm_rate,
                "modalities": {m: {"threshold": d.threshold, **d.info,
                                   **({"scale": d.scale, "blocks": [{"start": b.start, "stop": b.stop, "scale": b.scale}
                                                                    for b in d.blocks]} if d.blocks else {})}
                               for m, d in self.modalities.items()},
                "fitted_on": self.fitted_on}

    @classmethod
    def load(cls, folder: str | Path, config: dict[str, Any] | None) -> "Domain | None":
        """The checkpoint's domain, or None when it has none (no `domain` section or no file)."""
        if not config or config.get("method") not in METHODS:
            return None
        path = Path(folder) / str(config.get("file", DOMAIN_FILE))
        if path.name != DOMAIN_FILE or not path.is_file():
            return None
        tensors = load_file(str(path))
        modalities = {}
        for m, entry in (config.get("modalities") or {}).items():
            if f"{m}.mean" not in tensors:
                continue
            info = {k: v for k, v in entry.items() if k not in ("threshold", "scale", "blocks")}
            blocks = [Block(int(b["start"]), int(b["stop"]), tensors[f"{m}.block{j}.mean"].double().numpy(),
                            tensors[f"{m}.block{j}.precision"].double().numpy(), float(b["scale"]))
                      for j, b in enumerate(entry.get("blocks") or [])]
            modalities[m] = ModalityDomain(tensors[f"{m}.mean"].double().numpy(),
                                           tensors[f"{m}.precision"].double().numpy(), float(entry["threshold"]), info,
                                           float(entry.get("scale", 1.0)), blocks)
        return cls(modalities, float(config.get("false_alarm_rate", 0.05)), dict(config.get("fitted_on") or {}),
                   str(config["method"]))
