"""Fitting the applicability domain (medfuse_core/domain.py) on a trained checkpoint's frozen encoders.

Per modality: the encoder outputs of the training patients that have it give the mean and a Ledoit-Wolf
shrinkage covariance (a plain sample covariance of 128-256 features from ~1,000 patients is near
singular and makes every new input look far away); the flag threshold is the (1 - rate) quantile of the
validation patients' distances, taken at the next observed value, so with "distance > threshold" at most
`rate` of them are flagged. The film has a second block (its film statistics, runtime/domain.py says
why): each block its own Ledoit-Wolf fit, its distance divided by its 97th percentile on the training
films (so neither block's units dominate), the film's score the larger of the two, and the threshold on
that score as above.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from medfuse_core.runtime.domain import FILM_STATISTICS, Block, Domain, ModalityDomain, domain_features
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.record import MODALITIES
from medfuse_core.train.loop import EncodedSet

DEFAULT_FALSE_ALARM_RATE = 0.05
MIN_TRAIN_PATIENTS = 20  # fewer patients with a modality: no domain for it (a covariance from a handful is noise)
BLOCK_SCALE_QUANTILE = 0.97  # a block's distance is divided by this quantile of it on the training patients


def encoder_outputs(model: torch.nn.Module, patients: list[PatientFeatures], batch_size: int = 64
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What the domain scores per modality (N, d) (the frozen encoders' outputs, the film's with its input
    statistics; domain.domain_features) and the presence mask (N, 4)."""
    device = next(model.parameters()).device
    encoded = EncodedSet.build(model, patients, batch_size, device)
    outputs = {m: v.double().cpu().numpy() for m, v in encoded.features.items()}
    images = np.stack([p.image for p in patients]) if patients else np.zeros((0, 1, 1, 1))
    return domain_features(outputs, images), encoded.present.cpu().numpy().astype(bool)


def fit_modality(train: np.ndarray, val: np.ndarray, false_alarm_rate: float, further_blocks: int = 0) -> ModalityDomain:
    """One modality from its training rows (fit) and validation rows (threshold). With `further_blocks` =
    n, the last n columns are a second block (its own distance; both scaled, the larger one counts)."""
    first = train.shape[1] - further_blocks
    shrunk = LedoitWolf().fit(train[:, :first])
    domain = ModalityDomain(shrunk.location_, shrunk.precision_, float("inf"),
                            {"n_train": int(len(train)), "n_val": int(len(val)), "shrinkage": float(shrunk.shrinkage_)})
    if further_blocks:
        domain.scale = float(np.quantile(domain.distance(train), BLOCK_SCALE_QUANTILE))
        second = LedoitWolf().fit(train[:, first:])
        block = Block(first, train.shape[1], second.location_, second.precision_, 1.0)
        block.scale = float(np.quantile(block.distance(train), BLOCK_SCALE_QUANTILE))
        domain.blocks = [block]
        domain.info["block_shrinkage"] = float(second.shrinkage_)
    if len(val):
        distances = domain.distance(val)
        domain.threshold = float(np.quantile(distances, 1 - false_alarm_rate, method="higher"))
        domain.info["val_flagged"] = float(np.mean(distances > domain.threshold))
    return domain


def fit_domain(train_features: dict[str, np.ndarray], train_present: np.ndarray, val_features: dict[str, np.ndarray],
               val_present: np.ndarray, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
               further_blocks: dict[str, int] | None = None) -> Domain:
    """Every modality with at least MIN_TRAIN_PATIENTS training patients and one validation patient;
    `further_blocks`: per modality, how many last columns are its second block."""
    modalities = {}
    for i, m in enumerate(MODALITIES):
        train_rows, val_rows = train_present[:, i], val_present[:, i]
        if train_rows.sum() >= MIN_TRAIN_PATIENTS and val_rows.any():
            modalities[m] = fit_modality(train_features[m][train_rows], val_features[m][val_rows], false_alarm_rate,
                                         (further_blocks or {}).get(m, 0))
    return Domain(modalities, false_alarm_rate)


def fit_checkpoint_domain(model: torch.nn.Module, train_set: list[PatientFeatures], val_set: list[PatientFeatures],
                          false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> Domain:
    """From encoder_outputs: the film's last FILM_STATISTICS columns (domain_features) its second block."""
    train_features, train_present = encoder_outputs(model, train_set)
    val_features, val_present = encoder_outputs(model, val_set)
    return fit_domain(train_features, train_present, val_features, val_present, false_alarm_rate,
                      {"image": FILM_STATISTICS})
