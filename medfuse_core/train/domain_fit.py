"""Fitting the applicability domain (medfuse_core/domain.py) on a trained checkpoint's frozen encoders.

Per modality: the encoder outputs of the training patients that have it give the mean and a Ledoit-Wolf
shrinkage covariance (a plain sample covariance of 128-256 features from ~1,000 patients is near
singular and makes every new input look far away); the flag threshold is the (1 - rate) quantile of the
validation patients' distances, taken at the next observed value, so with "distance > threshold" at most
`rate` of them are flagged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from medfuse_core.runtime.domain import Domain, ModalityDomain, domain_features
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.record import MODALITIES
from medfuse_core.train.loop import EncodedSet

DEFAULT_FALSE_ALARM_RATE = 0.05
MIN_TRAIN_PATIENTS = 20  # fewer patients with a modality: no domain for it (a covariance from a handful is noise)


def encoder_outputs(model: torch.nn.Module, patients: list[PatientFeatures], batch_size: int = 64
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What the domain scores per modality (N, d) (the frozen encoders' outputs, the film's with its input
    statistics; domain.domain_features) and the presence mask (N, 4)."""
    device = next(model.parameters()).device
    encoded = EncodedSet.build(model, patients, batch_size, device)
    outputs = {m: v.double().cpu().numpy() for m, v in encoded.features.items()}
    images = np.stack([p.image for p in patients]) if patients else np.zeros((0, 1, 1, 1))
    return domain_features(outputs, images), encoded.present.cpu().numpy().astype(bool)


def fit_modality(train: np.ndarray, val: np.ndarray, false_alarm_rate: float) -> ModalityDomain:
    """One modality from its training rows (fit) and validation rows (threshold)."""
    shrunk = LedoitWolf().fit(train)
    domain = ModalityDomain(shrunk.location_, shrunk.precision_, float("inf"),
                            {"n_train": int(len(train)), "n_val": int(len(val)), "shrinkage": float(shrunk.shrinkage_)})
    if len(val):
        distances = domain.distance(val)
        domain.threshold = float(np.quantile(distances, 1 - false_alarm_rate, method="higher"))
        domain.info["val_flagged"] = float(np.mean(distances > domain.threshold))
    return domain


def fit_domain(train_features: dict[str, np.ndarray], train_present: np.ndarray, val_features: dict[str, np.ndarray],
               val_present: np.ndarray, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> Domain:
    """Every modality with at least MIN_TRAIN_PATIENTS training patients and one validation patient."""
    modalities = {}
    for i, m in enumerate(MODALITIES):
        train_rows, val_rows = train_present[:, i], val_present[:, i]
        if train_rows.sum() >= MIN_TRAIN_PATIENTS and val_rows.any():
            modalities[m] = fit_modality(train_features[m][train_rows], val_features[m][val_rows], false_alarm_rate)
    return Domain(modalities, false_alarm_rate)


def fit_checkpoint_domain(model: torch.nn.Module, train_set: list[PatientFeatures], val_set: list[PatientFeatures],
                          false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> Domain:
    train_features, train_present = encoder_outputs(model, train_set)
    val_features, val_present = encoder_outputs(model, val_set)
    return fit_domain(train_features, train_present, val_features, val_present, false_alarm_rate)
