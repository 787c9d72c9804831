"""The modality-subset range: the calibrated probability over every non-empty subset of a patient's
present modalities, as (lowest, highest) per label.

The model is trained with random modality dropout, so each subset is an input it has seen; a wide
range says the prediction rests on one modality and would change if that modality were missing or
wrong. It is not a confidence interval of the probability.

Computed from an `Encoding` (explain/encoding.py): the encoders ran once, and each subset only re-runs
the part of the model after them, all subsets of all patients in one call.
"""

from __future__ import annotations

from typing import Any

import itertools

import numpy as np
import torch

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.encoding import Encoding
from medfuse_core.runtime.calibration import calibrated_probability


def subset_masks(n: int) -> list[tuple[bool, ...]]:
    """All non-empty subsets of n modalities, as bool masks."""
    return [m for m in itertools.product([False, True], repeat=n) if any(m)]


def modality_subset_range(encoding: Encoding, calibration: Any) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (B, K) float64: min and max calibrated probability over the non-empty subsets of
    each patient's present modalities. A patient with no modality gets its own probability for both."""
    present = encoding.batch.present.bool()
    b, m = present.shape
    masks = torch.tensor(subset_masks(m), dtype=torch.bool, device=present.device)  # (S, M)
    keep = masks.unsqueeze(0) & present.unsqueeze(1)  # (B, S, M)
    valid = keep.any(-1).cpu().numpy()  # (B, S): the subset leaves the patient at least one modality
    s = masks.shape[0]
    rows = {name: v.repeat_interleave(s, dim=0) for name, v in encoding.features.items()}
    with eval_mode(encoding.model), torch.no_grad():  # the head only, on all B x S subsets at once
        logits = encoding.model.forward_features(rows, keep.reshape(b * s, m)).logits
    probs = calibrated_probability(logits.double().cpu().numpy(), calibration).reshape(b, s, -1)
    full = calibrated_probability(encoding.output.logits.double().cpu().numpy(), calibration)
    low = np.where(valid[..., None], probs, np.inf).min(axis=1)
    high = np.where(valid[..., None], probs, -np.inf).max(axis=1)
    return np.where(np.isfinite(low), low, full), np.where(np.isfinite(high), high, full)
