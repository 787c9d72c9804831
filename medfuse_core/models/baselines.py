"""The baselines of the design, in the same harness as MedFuseLens, and `build_model`, the one factory.

Every variant is picked by `ModelConfig.variant` and keeps MedFuseLens's contract, so `train`,
`evaluate`, `predict_logits` and `Predictor` work unchanged:
`forward(batch, present=None, token_keep=None) -> ModelOutput(logits, specific, shared, present,
tokens, token_mask)`. The encoders are MedFuseLens's own classes built from the same config sections
(`encode_modality` is MedFuseLens's); only what comes after them (`fuse`) differs:

- `single:<m>` (labs | notes | vitals | image): only encoder m is built; its feature -> MLP head.
  Patients without m (or with m hidden) get exactly the output layer's bias, a learned constant.
- `early_fusion`: [LN(h_labs), LN(h_notes), LN(h_vitals), LN(h_image), present(4)] concatenated,
  an absent modality's block zero, -> MLP. With nothing present the output is a learned constant.
- `late_fusion`: one MLP head per modality; the logits are averaged over the modalities present
  (absent ones are left out of the mean, not averaged in as zeros); none present -> a learned bias.
- `medfuse_lstm`: MedFuse's fusion (Hayat et al. 2022): each modality's feature is projected to
  d_model and the sequence of *present* projections, in the fixed MODALITIES order (labs, notes,
  vitals, image), is run through an LSTM, packed per patient so absent modalities are skipped (not
  fed as zeros); the final hidden state -> linear head. None present -> a learned bias.
- `no_mi`: MedFuseLens itself with every disentanglement weight at 0 (InfoNCE, vCLUB, consensus,
  decorrelation, shared-aux, parsimony; a config change only), trained the same way otherwise.

Outputs beyond the logits: `specific[:, m]` is modality m's own representation in the head (the
hidden layer of its head for single/late, its contribution to the first hidden layer for early,
its LSTM input for medfuse_lstm), zero where m is absent or unused; `shared` is zeros (these models
have no shared projection); `tokens = [specific..., 0]` and `token_mask = [present, False]`.
`present` is what the model really used: the override & batch.present & token_keep[:, :4] (a
hidden specific token means a hidden modality; the shared column of token_keep is ignored).

What a baseline trains without (the disentanglement losses, token or modality dropout) is a training
setting: train/objective.py `variant_loss` fixes it from `config.variant`, and the checkpoint's
`train.loss` records it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from medfuse_core.features.batch import Batch
from medfuse_core.models.config import ModelConfig
from medfuse_core.models.disentangle import ModalityVCLUB
from medfuse_core.models.image_encoder import ImageEncoder
from medfuse_core.models.lab_encoder import LabEncoder
from medfuse_core.models.model import MedFuseLens, ModelOutput, encode_modality
from medfuse_core.models.note_encoder import NoteEncoder
from medfuse_core.models.vitals_encoder import VitalsEncoder
from medfuse_core.record import MODALITIES

SINGLE_VARIANTS: tuple[str, ...] = tuple(f"single:{m}" for m in MODALITIES)
VARIANTS: tuple[str, ...] = ("medfuse_lens", "no_mi", "early_fusion", "late_fusion", "medfuse_lstm") + SINGLE_VARIANTS


def build_model(config: ModelConfig) -> nn.Module:
    """The model class `config.variant` names (`model.config` is `config`)."""
    if config.variant not in VARIANTS:
        raise ValueError(f"model variant {config.variant!r}: expected one of {', '.join(VARIANTS)}")
    if config.variant in ("medfuse_lens", "no_mi"):
        return MedFuseLens(config)
    if config.variant in SINGLE_VARIANTS:
        return SingleModality(config)
    return {"early_fusion": EarlyFusion, "late_fusion": LateFusion, "medfuse_lstm": MedFuseLSTM}[config.variant](config)


# ------------------------------------------------------------------------------------ shared frame


class Baseline(nn.Module, ABC):
    """Encoders (MedFuseLens's classes, only those of `modalities`), the unused MI estimators, and the
    plumbing every baseline shares; a subclass defines `fuse(features, present) -> (logits, specific)`."""

    def __init__(self, config: ModelConfig, modalities: tuple[str, ...] = MODALITIES):
        super().__init__()
        self.config = config
        self.modalities = tuple(modalities)
        d_model = config.fusion.d_model
        if "labs" in self.modalities:
            self.lab_encoder = LabEncoder(config.labs)
        if "notes" in self.modalities:
            self.note_encoder = NoteEncoder(config.notes)
        if "vitals" in self.modalities:
            self.vitals_encoder = VitalsEncoder(config.vitals)
        if "image" in self.modalities:
            self.image_encoder = ImageEncoder(config.image)
        self.feature_dims = {
            "labs": config.labs.output_dim,
            "notes": config.notes.output_dim,
            "vitals": config.vitals.hidden,
            "image": self.image_encoder.feature_dim if "image" in self.modalities else 0,
        }
        self.mi_estimators = ModalityVCLUB(d_model)  # kept for the training loop; loss weights are 0

    labels = MedFuseLens.labels

    def encoders(self) -> dict[str, nn.Module]:
        """The encoders this baseline has, by modality."""
        names = {"labs": "lab_encoder", "notes": "note_encoder", "vitals": "vitals_encoder", "image": "image_encoder"}
        return {m: getattr(self, names[m]) for m in self.modalities}

    def modality_features(self, batch: Batch, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """This baseline's encoders on the batch (zeros where absent); modalities it lacks are left out."""
        features = {}
        for m in self.modalities:
            rows = present[:, MODALITIES.index(m)]
            feature = encode_modality(self, m, batch, rows)
            features[m] = feature * rows.unsqueeze(1).to(feature.dtype)
        return features

    @abstractmethod
    def fuse(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features (zeros where absent) -> (logits (B, K), per-modality representation (B, 4, d))."""

    def forward(self, batch: Batch, present: torch.Tensor | None = None, token_keep: torch.Tensor | None = None) -> ModelOutput:
        present = batch.present if present is None else present & batch.present
        return self.forward_features(self.modality_features(batch, present), present, token_keep)

    def forward_features(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                         token_keep: torch.Tensor | None = None) -> ModelOutput:
        """From encoder outputs (see MedFuseLens.forward_features); a hidden specific token hides its modality."""
        if token_keep is not None:
            present = present & token_keep[:, : len(MODALITIES)]
        reference = next(iter(features.values()))
        features = {m: features[m] * present[:, i : i + 1].to(features[m].dtype) if m in features
                    else reference.new_zeros(reference.shape[0], max(self.feature_dims[m], 1))
                    for i, m in enumerate(MODALITIES)}
        logits, specific = self.fuse(features, present)
        shared = torch.zeros_like(specific)
        tokens = torch.cat([specific, specific.new_zeros(specific.shape[0], 1, specific.shape[2])], dim=1)
        token_mask = torch.cat([present, present.new_zeros(present.shape[0], 1)], dim=1)
        return ModelOutput(logits, specific, shared, present, tokens, token_mask)


def _hidden(in_dim: int, d_model: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, d_model), nn.GELU(), nn.Dropout(dropout))


def _index_rows(base: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`base` (B, K) with the rows `rows` (bool) replaced by `values`, differentiable, dtype of `values`."""
    return base.to(values.dtype).index_put((rows.nonzero(as_tuple=True)[0],), values)


# ------------------------------------------------------------------------------------ the baselines


class SingleModality(Baseline):
    """One encoder -> LN -> Linear -> GELU -> Dropout -> Linear. The hidden layer is zeroed for patients
    without the modality, so their logits are exactly the output layer's bias."""

    def __init__(self, config: ModelConfig):
        modality = config.variant.split(":", 1)[1]
        super().__init__(config, (modality,))
        self.modality = modality
        d_model = config.fusion.d_model
        self.hidden = _hidden(self.feature_dims[self.modality], d_model, config.fusion.dropout)
        self.classifier = nn.Linear(d_model, len(config.labels))

    def fuse(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = MODALITIES.index(self.modality)
        rows = present[:, index : index + 1]
        hidden = self.hidden(features[self.modality]) * rows.to(features[self.modality].dtype)
        logits = self.classifier(hidden)
        specific = hidden.new_zeros(hidden.shape[0], len(MODALITIES), hidden.shape[1])
        specific = torch.cat([specific[:, :index], hidden.unsqueeze(1), specific[:, index + 1 :]], dim=1)
        return logits, specific


class EarlyFusion(Baseline):
    """concat[LN(h_m) * present_m for m in MODALITIES] ++ present -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d_model = config.fusion.d_model
        self.norms = nn.ModuleDict({m: nn.LayerNorm(self.feature_dims[m]) for m in MODALITIES})
        self.input = nn.Linear(sum(self.feature_dims.values()) + len(MODALITIES), d_model)
        self.dropout = nn.Dropout(config.fusion.dropout)
        self.classifier = nn.Linear(d_model, len(config.labels))

    def fuse(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = features[MODALITIES[0]].dtype
        blocks = [self.norms[m](features[m]) * present[:, i : i + 1].to(dtype) for i, m in enumerate(MODALITIES)]
        pre = self.input(torch.cat(blocks + [present.to(dtype)], dim=1))
        logits = self.classifier(self.dropout(nn.functional.gelu(pre)))
        # each modality's contribution to the first hidden layer: its block of the input weight
        specific, start = [], 0
        for m, block in zip(MODALITIES, blocks):
            end = start + self.feature_dims[m]
            specific.append(block @ self.input.weight[:, start:end].T.to(block.dtype))
            start = end
        return logits, torch.stack(specific, dim=1).to(pre.dtype)


class LateFusion(Baseline):
    """One head per modality (LN -> Linear -> GELU -> Dropout -> Linear); logits = mean over the
    modalities present of their heads' logits; no modality present -> `empty_logits` (learned)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d_model, n_labels = config.fusion.d_model, len(config.labels)
        self.hidden = nn.ModuleDict({m: _hidden(self.feature_dims[m], d_model, config.fusion.dropout) for m in MODALITIES})
        self.classifiers = nn.ModuleDict({m: nn.Linear(d_model, n_labels) for m in MODALITIES})
        self.empty_logits = nn.Parameter(torch.zeros(n_labels))

    def head_logits(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every modality's head on its feature: logits (B, 4, K) and hidden layers (B, 4, d)."""
        hidden = torch.stack([self.hidden[m](features[m]) for m in MODALITIES], dim=1)
        logits = torch.stack([self.classifiers[m](hidden[:, i]) for i, m in enumerate(MODALITIES)], dim=1)
        return logits, hidden

    def fuse(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_modality, hidden = self.head_logits(features)
        weights = present.to(per_modality.dtype).unsqueeze(-1)  # (B, 4, 1)
        count = weights.sum(1)  # (B, 1)
        mean = (per_modality * weights).sum(1) / count.clamp(min=1.0)
        logits = torch.where(count > 0, mean, self.empty_logits.to(mean.dtype).expand_as(mean))
        return logits, hidden * weights.to(hidden.dtype)


class MedFuseLSTM(Baseline):
    """MedFuse's LSTM fusion over the present modalities' projected features, in MODALITIES order."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d_model, n_labels = config.fusion.d_model, len(config.labels)
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(self.feature_dims[m]),
                                                       nn.Linear(self.feature_dims[m], d_model)) for m in MODALITIES})
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)
        self.dropout = nn.Dropout(config.fusion.dropout)
        self.classifier = nn.Linear(d_model, n_labels)
        self.empty_logits = nn.Parameter(torch.zeros(n_labels))

    def fuse(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.stack([self.project[m](features[m]) for m in MODALITIES], dim=1)  # (B, 4, d)
        steps = steps * present.unsqueeze(-1).to(steps.dtype)
        lengths = present.sum(dim=1)
        # per patient, its present modalities first, in MODALITIES order (a stable sort on "absent")
        order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices
        sequences = steps.gather(1, order.unsqueeze(-1).expand_as(steps))
        rows = lengths > 0
        base = self.empty_logits.unsqueeze(0).expand(present.shape[0], -1)
        if not bool(rows.any()):
            return base.to(steps.dtype), steps
        packed = pack_padded_sequence(sequences[rows], lengths[rows].cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (layers, n, d), in the order of sequences[rows]
        logits = self.classifier(self.dropout(h[-1]))
        return _index_rows(base, rows, logits), steps
