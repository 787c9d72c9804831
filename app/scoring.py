"""Scoring records for the dashboard: calibrated predictions, group contributions, uncertainty.

No Streamlit here (the pages cache what these functions return), so it is tested directly. One fp32
forward pass gives both the prediction and the contributions, so the table and the waterfall chart
always show the same logit: probability = sigmoid(logit / temperature), the checkpoint's calibration.

The uncertainty indication is the *modality-subset range*: the calibrated probability recomputed
with every non-empty subset of the patient's present modalities, reporting min and max. The model is
trained with random modality dropout, so each subset is an input it has seen; a wide range says the
prediction rests on one modality and would change if that modality were missing or wrong. It is not
a confidence interval of the probability.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from medfuse_core.explain.groups import group_contributions
from medfuse_core.features.batch import collate
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.train.metrics import sigmoid

# The clinician-facing names of the fusion tokens, in TOKEN_NAMES order.
TOKEN_LABELS: dict[str, str] = {
    "specific:labs": "Labs (specific)",
    "specific:notes": "Notes (specific)",
    "specific:vitals": "Vitals (specific)",
    "specific:image": "X-ray (specific)",
    "shared": "Shared across modalities",
}
UNCERTAINTY_NAME = "modality-subset range"
UNCERTAINTY_HELP = ("Lowest and highest calibrated probability when the model sees only some of this "
                    "patient's modalities (every non-empty subset). A wide range means the prediction "
                    "hinges on one modality. It is not a confidence interval.")


@dataclass
class PatientScores:
    """Everything the pages show for one patient and checkpoint (numpy only: cheap to cache and pickle)."""

    patient_id: str
    labels: list[str]
    logits: np.ndarray  # (K,) the model's logit, fp32 forward
    probabilities: np.ndarray  # (K,) sigmoid(logit / temperature)
    thresholds: np.ndarray  # (K,) decision thresholds on the calibrated probability
    temperature: float
    present: np.ndarray  # (4,) bool, MODALITIES order
    contributions: np.ndarray  # (K, 5) exact Shapley values of the fusion tokens, TOKEN_NAMES order
    base: np.ndarray  # (K,) logit with every token masked (the head's base value)
    subset_low: np.ndarray  # (K,) min calibrated probability over modality subsets
    subset_high: np.ndarray  # (K,) max

    def index(self, label: str) -> int:
        return self.labels.index(label)

    @property
    def top(self) -> int:
        """Index of the label with the highest calibrated probability."""
        return int(np.argmax(self.probabilities))

    def contributions_for(self, label: str) -> dict[str, float]:
        """{clinician-facing token name: contribution to the logit} for one label."""
        row = self.contributions[self.index(label)]
        return {TOKEN_LABELS[name]: float(v) for name, v in zip(TOKEN_NAMES, row)}


def _subset_masks(n: int = len(MODALITIES)) -> list[tuple[bool, ...]]:
    """All non-empty subsets of the modalities, as (4,) bool masks."""
    return [m for m in itertools.product([False, True], repeat=n) if any(m)]


NO_DATA_MESSAGE = ("No data: this patient has no labs, notes, vitals or image that the model can use (in the "
                   "first 48 h after the index time), so there is no prediction.")


@torch.no_grad()
def score_records(predictor: Any, records: Sequence[PatientRecord], batch_size: int = 64) -> dict[str, PatientScores]:
    """{patient_id: PatientScores} for `records` with a loaded `medfuse_core.predictor.Predictor`.

    A patient with no usable modality is left out (the pages show NO_DATA_MESSAGE): the model's
    answer for it would be its prior, not a prediction (see medfuse_core.predictor.NoData)."""
    out: dict[str, PatientScores] = {}
    records = list(records)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        features, _ = predictor.featurize(chunk)
        usable = [f for f in features if np.asarray(f.present).any()]
        if usable:
            out.update(_score_features(predictor, usable))
    return out


def _score_features(predictor: Any, features: list) -> dict[str, PatientScores]:
    model = predictor.model
    batch = collate(list(features)).to(predictor.device)
    groups = group_contributions(model, batch)  # model in eval mode, fp32, exact Shapley
    temperature = float(predictor.temperature)
    full = groups.full_logit.double().cpu().numpy()
    empty = groups.empty_logit.double().cpu().numpy()
    values = groups.values.double().cpu().numpy()
    present = batch.present
    lows = np.full(full.shape, np.inf)
    highs = np.full(full.shape, -np.inf)
    for mask in _subset_masks():
        keep = torch.tensor(mask, device=present.device).unsqueeze(0) & present
        rows = keep.any(1).cpu().numpy()
        if not rows.any():
            continue
        probs = sigmoid(model(batch, present=keep).logits.double().cpu().numpy() / temperature)
        lows[rows] = np.minimum(lows[rows], probs[rows])
        highs[rows] = np.maximum(highs[rows], probs[rows])
    probabilities = sigmoid(full / temperature)
    lows = np.where(np.isfinite(lows), lows, probabilities)  # no modality at all: no range
    highs = np.where(np.isfinite(highs), highs, probabilities)
    present_np = present.cpu().numpy()
    thresholds = np.asarray(predictor.thresholds, dtype=np.float64)
    return {
        f.patient_id: PatientScores(f.patient_id, list(predictor.labels), full[i], probabilities[i], thresholds,
                                    temperature, present_np[i], values[i], empty[i], lows[i], highs[i])
        for i, f in enumerate(features)
    }


# ------------------------------------------------------------------------------ torch threads

THREADS_ENV = "MEDFUSE_LENS_TORCH_THREADS"  # intra-op threads for one patient's explanation (default 1)
_THREADS_LOCK = threading.Lock()
_threads_users = 0  # interactive_threads blocks running now, in any session
_threads_before = 1  # the setting before the first of them


def _process_num_threads() -> int:
    """torch's intra-op thread setting as a new thread gets it (not the calling thread's own copy)."""
    out: list[int] = []
    reader = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    reader.start()
    reader.join()
    return out[0]


@contextmanager
def interactive_threads() -> Iterator[None]:
    """Run a one-patient computation (explain(): hundreds of small ops) with few intra-op threads.

    On a shared CPU, PyTorch's OpenMP threads wait at a barrier after every op; when another process
    holds a core, each barrier waits for a descheduled thread, and an explanation that takes 0.1 s with
    one thread took 3-11 s with two (measured on the 2-core dev machine under load; benchmarks/
    dashboard_speed.py). One patient's tensors are too small to gain from more threads.
    $MEDFUSE_LENS_TORCH_THREADS overrides the 1.

    The setting is process-wide (what new threads start with) and sessions run in threads of one
    process, so the blocks are reference-counted: the first one in saves the setting, the last one out
    restores it, and a session leaving never undoes the setting under another one still inside. PyTorch
    also keeps a copy per thread once the thread has run an op, so each block sets it in its own thread,
    and the saved value is read in a new thread (the calling thread's copy may be a block's leftover).
    """
    global _threads_users, _threads_before
    try:
        wanted = max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        wanted = 1
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = _process_num_threads()
        _threads_users += 1
        torch.set_num_threads(wanted)  # the process's and this thread's (whatever its own copy says)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0 and _threads_before != wanted:
                torch.set_num_threads(_threads_before)


# --------------------------------------------------------------------------------- checkpoints


def is_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def is_synthetic_model(config: dict[str, Any], checkpoint: str | Path, demo_model: str | Path) -> bool:
    """True when the model was trained on synthetic patients: the bundled demo checkpoint, a
    `data.synthetic` flag, or a training folder that is (or was) a synthetic cohort."""
    if Path(checkpoint).resolve() == Path(demo_model).resolve():
        return True
    data = config.get("data") or {}
    if data.get("synthetic"):
        return True
    path = str(data.get("path") or "")
    if "demo-cohort" in path or "synth" in Path(path).name:
        return True
    cohort = Path(path) / "cohort.json" if path else None
    if cohort is not None and cohort.is_file():
        try:
            return str(json.loads(cohort.read_text()).get("generator_version", "")).startswith("synth")
        except (OSError, ValueError):
            return False
    return False


INTERACTIVE_IG_STEPS = 24  # the explain CLI uses 64; see explain_panels
TOP_SENTENCES = 3  # word-level note attribution: the top sentences by |attribution|


def explain_panels(record: Any, predictor: Any, disease: str, words: bool = False) -> dict[str, Any]:
    """explain() for one patient and disease, as the evidence panels' plain data (app/components/evidence.py).

    words=False skips the word-level note attribution, which runs Integrated Gradients through the text
    model for each top sentence (~90% of explain()'s time on a CPU). Integrated Gradients take
    INTERACTIVE_IG_STEPS steps: the vitals map, the costliest part, is then ~2.5x faster than with the
    CLI's 64, and the maps are for reading, not for scoring (the convergence delta stays in the
    explanation). Used by the review and upload pages, which cache the result."""
    from medfuse_core.explain import explain

    from app.components.evidence import panel_evidence

    with interactive_threads():
        explanation = explain(record, predictor, labels=[disease], evidence=True,
                              top_sentences=TOP_SENTENCES if words else 0, n_steps=INTERACTIVE_IG_STEPS)
    return panel_evidence(explanation.per_label[disease].evidence)
