"""What the model eats: per-patient feature arrays and their collation into a padded batch.

`PatientFeatures` is numpy (cheap to cache and to ship to DataLoader workers); `Batch` is torch.
Absent modalities are all-zero inputs with `present[:, m] == False`; the model must not read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from medfuse_core.record import MODALITIES

MODALITY_INDEX = {m: i for i, m in enumerate(MODALITIES)}


@dataclass
class PatientFeatures:
    """One patient's model inputs, before batching."""

    patient_id: str
    present: np.ndarray  # bool (M,): the featurizer's modalities (FeatureSpec.modalities), the built-in four first
    lab_items: np.ndarray  # int64 (L,), lab vocabulary ids >= 1 (0 is padding)
    lab_values: np.ndarray  # float32 (L, V): per-item value features (see features/labs.py)
    note_embeddings: np.ndarray  # float32 (S, D): one row per note sentence/chunk
    vitals: np.ndarray  # float32 (T, 76): discretized, normalised series
    image: np.ndarray  # float32 (1, H, W): normalised pixels (zeros when absent)
    labels: np.ndarray  # float32 (K,): 0/1, NaN where unknown
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other registered modalities: fixed-shape inputs


@dataclass
class Batch:
    """A padded batch; every tensor has the batch size as its first dimension."""

    present: torch.Tensor  # bool (B, M)
    lab_items: torch.Tensor  # int64 (B, L), 0 = padding
    lab_values: torch.Tensor  # float (B, L, V)
    note_embeddings: torch.Tensor  # float (B, S, D)
    note_mask: torch.Tensor  # bool (B, S), True for a real sentence
    vitals: torch.Tensor  # float (B, T, 76)
    image: torch.Tensor  # float (B, 1, H, W)
    labels: torch.Tensor  # float (B, K), NaN where unknown
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other registered modalities, (B, ...) each

    @property
    def size(self) -> int:
        return int(self.present.shape[0])

    @property
    def lab_mask(self) -> torch.Tensor:
        return self.lab_items > 0

    def map(self, fn) -> "Batch":
        """The batch with `fn` applied to every tensor (the extra modalities' included)."""
        parts = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: ({m: fn(t) for m, t in v.items()} if k == "extra" else fn(v)) for k, v in parts.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self.map(lambda t: t.pin_memory())


def _pad_stack(arrays: list[np.ndarray], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length (N_i, ...) arrays into (B, max N, ...) with zeros, plus a (B, max N) mask."""
    longest = max((a.shape[0] for a in arrays), default=0)
    longest = max(longest, 1)  # keep one (masked) slot so shapes never have a zero dimension
    trailing = next((a.shape[1:] for a in arrays if a.ndim > 1), ())
    out = np.zeros((len(arrays), longest, *trailing), dtype=dtype)
    mask = np.zeros((len(arrays), longest), dtype=bool)
    for i, a in enumerate(arrays):
        if a.shape[0]:
            out[i, : a.shape[0]] = a
            mask[i, : a.shape[0]] = True
    return out, mask


def collate(items: list[PatientFeatures]) -> Batch:
    """Pad and stack patient features into one `Batch` (usable as a DataLoader collate_fn)."""
    lab_items, _ = _pad_stack([f.lab_items for f in items], np.int64)
    lab_values, _ = _pad_stack([f.lab_values for f in items], np.float32)
    notes, note_mask = _pad_stack([f.note_embeddings for f in items], np.float32)
    return Batch(
        present=torch.from_numpy(np.stack([f.present for f in items]).astype(bool)),
        lab_items=torch.from_numpy(lab_items),
        lab_values=torch.from_numpy(lab_values),
        note_embeddings=torch.from_numpy(notes),
        note_mask=torch.from_numpy(note_mask),
        vitals=torch.from_numpy(np.stack([f.vitals for f in items]).astype(np.float32)),
        image=torch.from_numpy(np.stack([f.image for f in items]).astype(np.float32)),
        labels=torch.from_numpy(np.stack([f.labels for f in items]).astype(np.float32)),
        extra={m: torch.from_numpy(np.stack([f.extra[m] for f in items]).astype(np.float32)) for m in items[0].extra},
    )
