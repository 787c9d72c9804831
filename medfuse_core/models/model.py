"""The assembled model: four encoders -> disentangled tokens -> fusion head -> one logit per label.

Read top to bottom: `modality_features` runs each encoder on the patients that have that modality
(the image encoder, the costly one, sees only rows with an image); `Disentangler` splits each into
a specific and a shared projection; `build_tokens` pools the shared ones over the modalities present;
the fusion head (`FusionConfig.head`: attention over the tokens, or a sum of per-token terms)
reads the tokens that are present. An absent modality's token is masked and zeroed, so it
contributes exactly nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medfuse_core.features.batch import Batch
from medfuse_core.models.config import ModelConfig
from medfuse_core.models.disentangle import Disentangler, ModalityVCLUB
from medfuse_core.models.fusion import build_fusion_head, build_tokens, token_names
from medfuse_core.models.image_encoder import ImageEncoder
from medfuse_core.models.lab_encoder import LabEncoder
from medfuse_core.models.note_encoder import NoteEncoder
from medfuse_core.models.vitals_encoder import VitalsEncoder
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, K)
    specific: torch.Tensor  # (B, M, d) specific projections, in the model's `modalities` order
    shared: torch.Tensor  # (B, M, d) shared projections
    present: torch.Tensor  # (B, M) bool: modalities the model used
    tokens: torch.Tensor  # (B, M + 1, d) fusion tokens (`token_names`)
    token_mask: torch.Tensor  # (B, M + 1) bool: tokens the head saw


class MedFuseLens(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.modalities = check_modalities(config.modalities)
        self.lab_encoder = LabEncoder(config.labs)
        self.note_encoder = NoteEncoder(config.notes)
        self.vitals_encoder = VitalsEncoder(config.vitals)
        self.image_encoder = ImageEncoder(config.image)
        # encoders of the other registered modalities (none in the built-in model: no tensor added)
        self.extra_encoders = nn.ModuleDict({m: build_extra_encoder(m, config) for m in self.modalities
                                             if m not in MODALITIES})
        self.feature_dims = {
            "labs": config.labs.output_dim,
            "notes": config.notes.output_dim,
            "vitals": config.vitals.hidden,
            "image": self.image_encoder.feature_dim,
            **{m: int(encoder.output_dim) for m, encoder in self.extra_encoders.items()},
        }
        d_model = config.fusion.d_model
        self.disentangler = Disentangler(self.feature_dims, d_model, config.fusion.dropout, self.modalities)
        self.fusion = build_fusion_head(config.fusion, len(config.labels), len(self.modalities) + 1)
        # trained by its own optimizer, see train/loop.py
        self.mi_estimators = ModalityVCLUB(d_model, modalities=self.modalities)

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def token_names(self) -> tuple[str, ...]:
        """The fusion tokens: one specific token per modality, then the shared one."""
        return token_names(self.modalities)

    def encoders(self) -> dict[str, nn.Module]:
        """The encoders by modality (what training stage 1 pretrains and then freezes)."""
        builtin = {"labs": self.lab_encoder, "notes": self.note_encoder, "vitals": self.vitals_encoder,
                   "image": self.image_encoder}
        return {m: builtin[m] if m in builtin else self.extra_encoders[m] for m in self.modalities}

    def modality_features(self, batch: Batch, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs per modality, (B, dim) each; zeros for patients without the modality."""
        features = {m: encode_modality(self, m, batch, present[:, i]) for i, m in enumerate(self.modalities)}
        return {m: features[m] * present[:, i : i + 1].to(features[m].dtype) for i, m in enumerate(self.modalities)}

    def forward(self, batch: Batch, present: torch.Tensor | None = None, token_keep: torch.Tensor | None = None) -> ModelOutput:
        """present: override of batch.present (modality dropout, ablations); token_keep: (B, 5) extra token mask."""
        present = batch.present if present is None else present & batch.present
        return self.forward_features(self.modality_features(batch, present), present, token_keep)

    def forward_features(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                         token_keep: torch.Tensor | None = None) -> ModelOutput:
        """Everything after the encoders, from their outputs (zeros or anything where absent): what
        training stage 2 runs on cached features of frozen encoders."""
        features = {m: features[m] * present[:, i : i + 1].to(features[m].dtype) for i, m in enumerate(self.modalities)}
        specific, shared = self.disentangler(features)
        tokens, token_mask = build_tokens(specific, shared, present)
        if token_keep is not None:
            token_mask = token_mask & token_keep
        logits = self.fusion(tokens, token_mask)
        return ModelOutput(logits, specific, shared, present, tokens, token_mask)


def encode_modality(model: nn.Module, modality: str, batch: Batch, rows: torch.Tensor | None = None) -> torch.Tensor:
    """One encoder's output (B, dim) for a batch. The image encoder, the costly one, runs only on
    `rows` (bool (B,), default: the patients with an image) and leaves zeros elsewhere."""
    if modality == "labs":
        return model.lab_encoder(batch.lab_items, batch.lab_values, batch.lab_mask)[0]
    if modality == "notes":
        return model.note_encoder(batch.note_embeddings, batch.note_mask)[0]
    if modality == "vitals":
        return model.vitals_encoder(batch.vitals)
    if modality != "image":
        extra = getattr(model, "extra_encoders", None)
        if extra is None or modality not in extra or modality not in batch.extra:
            raise ValueError(f"modality {modality!r}: the model has no encoder or the batch no input for it")
        return extra[modality](batch.extra[modality])
    rows = batch.present[:, MODALITIES.index("image")] if rows is None else rows
    image = batch.vitals.new_zeros(batch.size, model.image_encoder.feature_dim)
    if bool(rows.any()):
        encoded = model.image_encoder(batch.image[rows])
        image = image.index_put((rows.nonzero(as_tuple=True)[0],), encoded.to(image.dtype))
    return image


def check_modalities(modalities: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The model's modalities: the four built-in ones first, in their order, then registered others."""
    modalities = tuple(modalities)
    if modalities[: len(MODALITIES)] != MODALITIES:
        raise ValueError(f"model.modalities {list(modalities)}: expected {list(MODALITIES)} first, then other "
                         "registered modalities")
    for m in modalities[len(MODALITIES):]:
        REGISTRY[m]  # KeyError naming the registered modalities
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"model.modalities {list(modalities)}: a modality is listed twice")
    return modalities


def build_extra_encoder(modality: str, config: ModelConfig) -> nn.Module:
    """The encoder of a registered non-built-in modality, from its registry entry and `config.extra[modality]`."""
    spec = REGISTRY[modality]
    section = dict(config.extra.get(modality) or {})
    encoder_config = spec.resolve("config_class")(**section) if spec.config_class else section
    return spec.resolve("encoder_class")(encoder_config)
