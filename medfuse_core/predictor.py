"""A loaded checkpoint, ready to score records: model + featurizer + calibration, loaded once.

Used by the CLI (eval, explain), the dashboard and the benchmarks. Weights come from a local run
folder only; the text model from its local folder or package.

A record with nothing the model can use (no labs, note, vitals or image in its window) gets no
prediction: `predict` returns a `NoData` in its place and `predict_one` raises `NoDataError`. The model
would otherwise answer with its prior (every token masked), a number that looks like a prediction.

Trust (issue 17; medfuse_core/trust.py): every batch is encoded once (`assess`); each present modality's
encoder output is checked against the checkpoint's applicability domain (domain.py) and, by default
(`exclude_out_of_domain`), a modality out of domain is left out of the prediction, which the model
handles as it handles a missing modality. A record whose every modality is out of domain gets `NoData`
("insufficient data"). Every probability comes with its conformal interval (uncertainty.py) and a state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.runtime.cache import cache_home
from medfuse_core.runtime.calibration import Calibration, calibrated_probability
from medfuse_core.runtime.device import resolve_device
from medfuse_core.runtime.domain import UNAVAILABLE, Domain, DomainCheck, domain_features
from medfuse_core.runtime.precision import mixed_precision
from medfuse_core.runtime.trust import INSUFFICIENT, PatientTrust, modalities_to_use, out_of_domain_reason, patient_trust
from medfuse_core.runtime.uncertainty import ConformalIntervals


def no_data_reason(hours: float = window.HOURS) -> str:
    """What the pages and the CLI say for a patient without usable data."""
    return (f"no data: nothing the model can use (no labs, notes, vitals or image in the first {hours:g} h "
            "after the index time), so there is no prediction")


def all_out_of_domain_reason(check: DomainCheck) -> str:
    """What the pages and the CLI say when every modality a patient has is out of domain."""
    return ("insufficient data: " + out_of_domain_reason(check).rstrip(".")
            + "; nothing else was left to predict from, so there is no prediction")


class NoDataError(ValueError):
    """The record has nothing the model can use; no prediction is made."""


@dataclass
class NoData:
    """The result for a record without usable data: a reason, never a number."""

    patient_id: str
    reason: str
    domain: DomainCheck = field(default_factory=lambda: UNAVAILABLE)

    state = INSUFFICIENT

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "no_data": self.reason, "state": self.state,
                "domain": self.domain.to_dict()}


@dataclass
class Prediction:
    patient_id: str
    labels: list[str]
    logits: np.ndarray  # (K,)
    probabilities: np.ndarray  # (K,) calibrated per label (calibration.py)
    thresholds: np.ndarray  # (K,) decision thresholds on the calibrated probability
    present: np.ndarray  # (M,) modalities the model used (present and in domain)
    trust: PatientTrust | None = None  # domain check, left-out modalities, intervals, states
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))  # the order of `present`

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patient_id": self.patient_id,
            "labels": {name: {"probability": float(p), "logit": float(z), "threshold": float(t), "positive": bool(p >= t),
                              **(self.trust.label_dict(k) if self.trust is not None else {})}
                       for k, (name, p, z, t) in enumerate(zip(self.labels, self.probabilities, self.logits, self.thresholds))},
            "modalities_used": [m for m, used in zip(self.modalities, self.present) if used],
        }
        if self.trust is not None:
            out["trust"] = self.trust.to_dict()
        return out


@dataclass
class Assessment:
    """One encoded batch: logits from the modalities used, what was left out, and the trust of each row."""

    logits: np.ndarray  # (B, K)
    used: np.ndarray  # (B, 4) present and in domain (with exclusion)
    checks: list[DomainCheck]
    left_out: list[list[str]]
    probabilities: np.ndarray  # (B, K)
    low: np.ndarray | None  # (B, K) interval ends; None without fitted intervals
    high: np.ndarray | None
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))  # the columns of `used`
    interval_method: str = ""  # how the intervals were made, in words (ConformalIntervals.description)

    def trust(self, i: int, thresholds: np.ndarray, level: float | None) -> PatientTrust:
        return patient_trust(self.probabilities[i], thresholds, self.checks[i], self.left_out[i],
                             None if self.low is None else self.low[i], None if self.high is None else self.high[i], level,
                             self.interval_method)


class Predictor:
    def __init__(self, model: MedFuseLens, featurizer: Featurizer, config: dict[str, Any], domain: Domain | None = None,
                 exclude_out_of_domain: bool = True, intervals: ConformalIntervals | None = None):
        self.model = model.eval()
        self.featurizer = featurizer
        self.config = config
        self.calibration = Calibration.from_config(config.get("calibration"), model.labels)
        self.thresholds = self.calibration.thresholds
        self.domain = domain  # None: the checkpoint has no applicability domain (nothing is claimed either way)
        self.exclude_out_of_domain = exclude_out_of_domain
        self.intervals = intervals  # None: the checkpoint has no conformal intervals (every result says so)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", cache_dir: str | Path | None = None,
             text_device_map: str | None = None) -> "Predictor":
        """`text_device_map` ("auto"): let accelerate place a notes model too large for one device."""
        config = ckpt.read_config(run_dir)
        model = build_model(ModelConfig.from_dict(config["model"]))
        ckpt.load_weights(model, run_dir)
        model.to(resolve_device(device))
        image_encoder = getattr(model, "image_encoder", None)
        if image_encoder is not None:
            # The ResNet's convolutions in channels-last layout: oneDNN's faster kernels on CPU (the film's
            # evidence map, 32 IG steps of forward + backward, measured 0.84x the time with the same map
            # to 6e-7). Inference only; save_weights writes contiguous tensors whatever the layout.
            image_encoder.to(memory_format=torch.channels_last)
        # run_dir: a fine-tuned notes model's weights live there (features/text_finetune.py)
        featurizer = Featurizer(FeatureSpec.from_dict(config["features"]),
                                cache_dir=cache_dir if cache_dir is not None else cache_home() / "embeddings",
                                run_dir=run_dir, text_device_map=text_device_map)
        calibration = Calibration.from_config(config.get("calibration"), model.labels)
        return cls(model, featurizer, config, domain=Domain.load(run_dir, config.get("domain")),
                   intervals=ConformalIntervals.load(run_dir, config.get("uncertainty"), model.labels,
                                                     calibration.probabilities))

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

    def batch_logits(self, batch: Batch) -> np.ndarray:
        """Logits (B, K) of a collated batch, from the modalities used (`assess`)."""
        return self.assess(batch).logits

    @torch.inference_mode()
    def assess(self, batch: Batch, features: dict[str, torch.Tensor] | None = None) -> Assessment:
        """The one place the model is run for predictions: every encoder once (or their outputs `features`,
        already computed by the caller on `batch`), the domain check on their outputs, the flagged
        modalities left out (with `exclude_out_of_domain`), the head on the rest."""
        batch = batch.to(self.device, non_blocking=True)
        present = batch.present.cpu().numpy().astype(bool)
        names = list(getattr(self.model, "modalities", MODALITIES))
        with mixed_precision(self.device):
            if features is None:
                features = self.model.modality_features(batch, batch.present)
            if self.domain is not None:
                outputs = {m: v.float().cpu().numpy() for m, v in features.items()}
                checks = self.domain.checks(domain_features(outputs, batch.image.float().cpu().numpy()), present, names)
            else:
                checks = [UNAVAILABLE] * len(present)
            used, left_out = modalities_to_use(present, checks, self.exclude_out_of_domain, names)
            logits = self.model.forward_features(features, torch.as_tensor(used, device=self.device)).logits
        logits = logits.float().cpu().numpy()
        probabilities = self.probabilities(logits)
        low = high = None
        if self.intervals is not None:
            low, high = self.intervals.for_logits(logits, used)
        return Assessment(logits, used, checks, left_out, probabilities, low, high, names,
                          self.intervals.description if self.intervals is not None else "")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (the checkpoint's per-label calibration), same shape as `logits`."""
        return calibrated_probability(logits, self.calibration)

    def positive(self, logits: np.ndarray) -> np.ndarray:
        """The decisions (bool, same shape): calibrated probability >= the label's validation threshold."""
        return self.probabilities(logits) >= self.thresholds

    @property
    def level(self) -> float | None:
        return self.intervals.level if self.intervals is not None else None

    @property
    def hours(self) -> float:
        return float(self.featurizer.spec.hours)

    def predict(self, records: Sequence[PatientRecord]) -> list[Prediction | NoData]:
        """One result per record, in order: a `Prediction`, or `NoData` for a record with no usable modality
        (none present, or every present one out of domain)."""
        features, _ = self.featurize(records)
        return self.predict_features_checked(features)

    def predict_features_checked(self, features: Sequence[PatientFeatures]) -> list[Prediction | NoData]:
        usable = [f for f in features if f.present.any()]
        results: dict[int, Prediction | NoData] = {}
        if usable:
            assessment = self.assess(collate(list(usable)))
            for i, f in enumerate(usable):
                if not assessment.used[i].any():
                    results[id(f)] = NoData(f.patient_id, all_out_of_domain_reason(assessment.checks[i]), assessment.checks[i])
                    continue
                results[id(f)] = Prediction(f.patient_id, self.labels, assessment.logits[i], assessment.probabilities[i],
                                            self.thresholds, assessment.used[i], assessment.trust(i, self.thresholds, self.level),
                                            assessment.modalities)
        reason = no_data_reason(self.hours)
        return [results.get(id(f)) or NoData(f.patient_id, reason) for f in features]

    def predict_one(self, record: PatientRecord) -> Prediction:
        """The prediction for one record; raises NoDataError when it has nothing the model can use."""
        result = self.predict([record])[0]
        if isinstance(result, NoData):
            raise NoDataError(f"{record.patient_id}: {result.reason}")
        return result
