"""A loaded checkpoint, ready to score records: model + featurizer + calibration, loaded once.

Used by the CLI (eval, explain), the dashboard and the benchmarks. Weights come from a local run
folder only; the text model from its local folder or package.

A record with nothing the model can use (no labs, note, vitals or image in its window) gets no
prediction: `predict` returns a `NoData` in its place and `predict_one` raises `NoDataError`. The model
would otherwise answer with its prior (every token masked), a number that looks like a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medfuse_core.features import window
from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.features.featurize import FeatureSpec, Featurizer, PatientEvidenceIndex
from medfuse_core.models.baselines import build_model
from medfuse_core.models.config import ModelConfig
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import PatientRecord
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.runtime.cache import cache_home
from medfuse_core.runtime.calibration import calibrated_probability
from medfuse_core.runtime.device import resolve_device
from medfuse_core.runtime.precision import mixed_precision


def no_data_reason(hours: float = window.HOURS) -> str:
    """What the pages and the CLI say for a patient without usable data."""
    return (f"no data: nothing the model can use (no labs, notes, vitals or image in the first {hours:g} h "
            "after the index time), so there is no prediction")


class NoDataError(ValueError):
    """The record has nothing the model can use; no prediction is made."""


@dataclass
class NoData:
    """The result for a record without usable data: a reason, never a number."""

    patient_id: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "no_data": self.reason}


@dataclass
class Prediction:
    patient_id: str
    labels: list[str]
    logits: np.ndarray  # (K,)
    probabilities: np.ndarray  # (K,) temperature-calibrated
    thresholds: np.ndarray  # (K,) decision thresholds on the calibrated probability
    present: np.ndarray  # (4,) modalities the model used

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "labels": {name: {"probability": float(p), "logit": float(z), "threshold": float(t), "positive": bool(p >= t)}
                       for name, p, z, t in zip(self.labels, self.probabilities, self.logits, self.thresholds)},
        }


class Predictor:
    def __init__(self, model: MedFuseLens, featurizer: Featurizer, config: dict[str, Any]):
        self.model = model.eval()
        self.featurizer = featurizer
        self.config = config
        calibration = config.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        thresholds = calibration.get("thresholds") or {}
        self.thresholds = np.array([thresholds.get(n, 0.5) for n in model.labels], dtype=np.float64)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", cache_dir: str | Path | None = None,
             text_device_map: str | None = None) -> "Predictor":
        """`text_device_map` ("auto"): let accelerate place a notes model too large for one device."""
        config = ckpt.read_config(run_dir)
        model = build_model(ModelConfig.from_dict(config["model"]))
        ckpt.load_weights(model, run_dir)
        model.to(resolve_device(device))
        # run_dir: a fine-tuned notes model's weights live there (features/text_finetune.py)
        featurizer = Featurizer(FeatureSpec.from_dict(config["features"]),
                                cache_dir=cache_dir if cache_dir is not None else cache_home() / "embeddings",
                                run_dir=run_dir, text_device_map=text_device_map)
        return cls(model, featurizer, config)

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def featurize(self, records: Sequence[PatientRecord]) -> tuple[list[PatientFeatures], list[PatientEvidenceIndex]]:
        return self.featurizer.featurize_many(records, progress=False)

    def predict_features(self, features: Sequence[PatientFeatures]) -> np.ndarray:
        """Logits (N, K)."""
        return self.batch_logits(collate(list(features)))

    @torch.inference_mode()
    def batch_logits(self, batch: Batch) -> np.ndarray:
        """Logits (B, K) of a collated batch: the one place the model is run for predictions."""
        batch = batch.to(self.device, non_blocking=True)
        with mixed_precision(self.device):
            return self.model(batch).logits.float().cpu().numpy()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities sigmoid(logit / temperature), same shape as `logits`."""
        return calibrated_probability(logits, self.temperature)

    def positive(self, logits: np.ndarray) -> np.ndarray:
        """The decisions (bool, same shape): calibrated probability >= the label's validation threshold."""
        return self.probabilities(logits) >= self.thresholds

    @property
    def hours(self) -> float:
        return float(self.featurizer.spec.hours)

    def predict(self, records: Sequence[PatientRecord]) -> list[Prediction | NoData]:
        """One result per record, in order: a `Prediction`, or `NoData` for a record with no usable modality."""
        features, _ = self.featurize(records)
        usable = [f for f in features if f.present.any()]
        results: dict[int, Prediction] = {}
        if usable:
            logits = self.predict_features(usable)
            probs = self.probabilities(logits)
            results = {id(f): Prediction(f.patient_id, self.labels, z, p, self.thresholds, f.present)
                       for f, z, p in zip(usable, logits, probs)}
        reason = no_data_reason(self.hours)
        return [results.get(id(f)) or NoData(f.patient_id, reason) for f in features]

    def predict_one(self, record: PatientRecord) -> Prediction:
        """The prediction for one record; raises NoDataError when it has nothing the model can use."""
        result = self.predict([record])[0]
        if isinstance(result, NoData):
            raise NoDataError(f"{record.patient_id}: {result.reason}")
        return result
