"""One patient batch, encoded once: the encoder outputs and the model output every later step reuses.

Why: the encoders (the ResNet above all) are the costly part of the model; everything after them
(`model.forward_features`: disentangler + fusion head) is a few small matrix products. The calibrated
probabilities, the exact group contributions (fusion tokens), the modality-subset range (the head on
subsets of the same encoder outputs) and the evidence maps (Integrated Gradients through one encoder,
the others' outputs fixed) all start from an `Encoding`, so a patient's review runs each encoder once
(plus the attribution steps of the encoder being explained).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.features.batch import Batch
from medfuse_core.models.model import ModelOutput


@dataclass
class Encoding:
    """A batch, its encoder outputs (B, dim) per modality (zeros where absent; a baseline without an
    encoder for a modality has no entry) and the model's output computed from them."""

    model: torch.nn.Module
    batch: Batch
    features: dict[str, torch.Tensor]
    output: ModelOutput
    assessment: Any = None  # the predictor's Assessment (trust) when encoded with `encode_checked`

    @property
    def logits(self) -> torch.Tensor:
        """(B, K) the model's logits, float32."""
        return self.output.logits.float()

    def head(self, present: torch.Tensor | None = None, token_keep: torch.Tensor | None = None) -> ModelOutput:
        """Everything after the encoders again, on these encoder outputs, with `present` (B, M) narrowed
        to a subset of the batch's modalities and/or `token_keep` (B, tokens): no encoder runs."""
        keep = self.batch.present if present is None else present & self.batch.present
        with eval_mode(self.model), torch.no_grad():
            return self.model.forward_features(self.features, keep, token_keep)


def encode(model: torch.nn.Module, batch: Batch) -> Encoding:
    """Run every encoder once on `batch` (eval mode, no gradients) and the rest of the model on the result.

    `model(batch)` is exactly `model.forward_features(model.modality_features(batch, present), present)`
    (models/model.py), so `encoding.output` is the prediction."""
    with eval_mode(model), torch.no_grad():
        features = {m: v.detach() for m, v in model.modality_features(batch, batch.present).items()}
        output = model.forward_features(features, batch.present)
    return Encoding(model, batch, features, output)


def encode_checked(predictor: Any, batch: Batch) -> Encoding:
    """`encode` on the prediction path: the predictor's applicability-domain check on the encoder outputs,
    and the modalities it leaves out (out of domain) removed from `batch.present`, so every later step
    (groups, subset range, evidence) sees them as missing, exactly as the prediction did. The
    predictor's `Assessment` (intervals, states) rides along in `encoding.assessment`."""
    model = predictor.model
    with eval_mode(model), torch.no_grad():
        features = {m: v.detach() for m, v in model.modality_features(batch, batch.present).items()}
        assessment = predictor.assess(batch, features)
        used = torch.as_tensor(assessment.used, device=batch.present.device)
        narrowed = replace(batch, present=used)
        output = model.forward_features(features, used)
    return Encoding(model, narrowed, features, output, assessment)
