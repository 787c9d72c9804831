"""The next test: how far a missing modality could move this patient's probabilities.

Method (k nearest reference patients in encoding space). The reference bank holds the encoder outputs
of reference patients (the training cohort, or any cohort like it) for every modality they have. For a
patient without modality m:

1. the patient's own encodings of the modalities it has are compared (cosine distance, each modality's
   encodings standardised over the bank and the distances averaged over those modalities) with the
   reference patients that have m and at least one of them;
2. the k nearest (default 20) lend their encoding of m: the patient's own encodings plus one
   neighbour's m go through the disentangler and the fusion head (`forward_features`, no encoder run);
3. the calibrated probabilities over the k completions give the range shown ("a chest X-ray could
   move pneumonia to 20-90 %"): by default the 5th to 95th percentile.

The encoders run once per patient (and once per reference patient, when the bank is built); each
completion is a fusion-head pass. benchmarks/next_test.py measures how often the probability with the
real modality falls inside the range on held-out synthetic patients with the modality withheld.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from medfuse_core.features.batch import collate
from medfuse_core.record import MODALITIES


@dataclass
class ReferenceBank:
    """Encoder outputs of reference patients: features[m] (N, d_m), zeros where present[:, i] is False."""

    patient_ids: list[str]
    present: np.ndarray  # bool (N, 4), MODALITIES order
    features: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.patient_ids)


@dataclass
class NextTestRange:
    """What obtaining `modality` could do to each label's probability for one patient."""

    modality: str
    low: np.ndarray  # (K,) calibrated probability, lower end of the range
    high: np.ndarray  # (K,)
    median: np.ndarray  # (K,)
    now: np.ndarray  # (K,) the probability without the modality (as predicted today)
    neighbours: list[str]  # reference patient ids that lent their encoding

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "low": self.low.tolist(), "high": self.high.tolist(),
                "median": self.median.tolist(), "now": self.now.tolist(), "neighbours": list(self.neighbours)}


@torch.inference_mode()
def encode(predictor: Any, features: Sequence[Any], batch_size: int = 32) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Encoder outputs per modality (N, d) and the presence mask (N, 4) for featurised patients."""
    model = predictor.model
    out: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    present: list[np.ndarray] = []
    for start in range(0, len(features), batch_size):
        batch = collate(list(features[start:start + batch_size])).to(predictor.device)
        encoded = model.modality_features(batch, batch.present)
        for m in MODALITIES:
            out[m].append(encoded[m].float().cpu().numpy())
        present.append(batch.present.cpu().numpy())
    return {m: np.concatenate(v) for m, v in out.items()}, np.concatenate(present).astype(bool)


def build_reference_bank(predictor: Any, records: Sequence[Any]) -> ReferenceBank:
    """The bank of `records` (featurised and encoded once); patients with no usable modality are left out."""
    features, _ = predictor.featurize(list(records))
    features = [f for f in features if np.asarray(f.present).any()]
    encoded, present = encode(predictor, features)
    return ReferenceBank([f.patient_id for f in features], present, encoded)


def _standardise(bank: ReferenceBank, m: str, rows: np.ndarray) -> np.ndarray:
    i = MODALITIES.index(m)
    have = bank.features[m][bank.present[:, i]]
    mu = have.mean(0) if len(have) else 0.0
    sd = have.std(0) + 1e-6 if len(have) else 1.0
    z = (rows - mu) / sd
    return z / (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-9)


@torch.inference_mode()
def _probabilities(predictor: Any, features: dict[str, np.ndarray], present: np.ndarray) -> np.ndarray:
    device = predictor.device
    tensors = {m: torch.as_tensor(features[m], dtype=torch.float32, device=device) for m in MODALITIES}
    mask = torch.as_tensor(present, dtype=torch.bool, device=device)
    logits = predictor.model.forward_features(tensors, mask).logits.float().cpu().numpy()
    return predictor.probabilities(logits)


def next_test_ranges(predictor: Any, encoded: dict[str, np.ndarray], present: np.ndarray, bank: ReferenceBank, *,
                     k: int = 20, quantiles: tuple[float, float] = (0.05, 0.95),
                     exclude: str | None = None) -> list[NextTestRange]:
    """One range per modality the patient lacks (`encoded`: this patient's encodings, (1, d) each;
    `present`: (4,) bool). `exclude`: a reference patient id not to use (the patient itself)."""
    present = np.asarray(present, dtype=bool).reshape(-1)
    if not present.any():
        return []
    now = _probabilities(predictor, encoded, present[None])[0]
    out = []
    for j, m in enumerate(MODALITIES):
        if present[j]:
            continue
        shared = [i for i, have in enumerate(present) if have]
        candidates = bank.present[:, j] & bank.present[:, shared].any(1)
        if exclude is not None:
            candidates &= np.array([pid != exclude for pid in bank.patient_ids])
        rows = np.flatnonzero(candidates)
        if rows.size == 0:
            continue
        distance = np.zeros(rows.size)
        counted = np.zeros(rows.size)
        for i in shared:
            mod = MODALITIES[i]
            both = bank.present[rows, i]
            me = _standardise(bank, mod, encoded[mod][:1])[0]
            them = _standardise(bank, mod, bank.features[mod][rows])
            distance += np.where(both, 1.0 - them @ me, 0.0)
            counted += both
        distance = np.where(counted > 0, distance / np.maximum(counted, 1), np.inf)
        nearest = rows[np.argsort(distance, kind="stable")[:k]]
        n = len(nearest)
        filled = {mod: np.repeat(encoded[mod][:1], n, axis=0) for mod in MODALITIES}
        filled[m] = bank.features[m][nearest]
        mask = np.repeat(present[None], n, axis=0)
        mask[:, j] = True
        probs = _probabilities(predictor, filled, mask)
        low, high = np.quantile(probs, quantiles[0], axis=0), np.quantile(probs, quantiles[1], axis=0)
        out.append(NextTestRange(m, low, high, np.median(probs, axis=0), now,
                                 [bank.patient_ids[r] for r in nearest]))
    return out


def next_test_for_record(predictor: Any, record: Any, bank: ReferenceBank, **kwargs: Any) -> list[NextTestRange]:
    """`next_test_ranges` for one record (featurised and encoded here)."""
    features, _ = predictor.featurize([record])
    if not np.asarray(features[0].present).any():
        return []
    encoded, present = encode(predictor, features)
    return next_test_ranges(predictor, encoded, present[0], bank, exclude=record.patient_id, **kwargs)
