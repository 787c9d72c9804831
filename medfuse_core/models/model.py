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
from medfuse_core.models.fusion import build_fusion_head, build_tokens
from medfuse_core.models.image_encoder import ImageEncoder
from medfuse_core.models.lab_encoder import LabEncoder
from medfuse_core.models.note_encoder import NoteEncoder
from medfuse_core.models.vitals_encoder import VitalsEncoder
from medfuse_core.record import MODALITIES


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, K)
    specific: torch.Tensor  # (B, 4, d) specific projections, MODALITIES order
    shared: torch.Tensor  # (B, 4, d) shared projections
    present: torch.Tensor  # (B, 4) bool: modalities the model used
    tokens: torch.Tensor  # (B, 5, d) fusion tokens
    token_mask: torch.Tensor  # (B, 5) bool: tokens the head saw


class MedFuseLens(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.lab_encoder = LabEncoder(config.labs)
        self.note_encoder = NoteEncoder(config.notes)
        self.vitals_encoder = VitalsEncoder(config.vitals)
        self.image_encoder = ImageEncoder(config.image)
        self.feature_dims = {
            "labs": config.labs.output_dim,
            "notes": config.notes.output_dim,
            "vitals": config.vitals.hidden,
            "image": self.image_encoder.feature_dim,
        }
        d_model = config.fusion.d_model
        self.disentangler = Disentangler(self.feature_dims, d_model, config.fusion.dropout)
        self.fusion = build_fusion_head(config.fusion, len(config.labels))
        self.mi_estimators = ModalityVCLUB(d_model)  # trained by its own optimizer, see train/loop.py

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    def encoders(self) -> dict[str, nn.Module]:
        """The four encoders by modality (what training stage 1 pretrains and then freezes)."""
        return {"labs": self.lab_encoder, "notes": self.note_encoder, "vitals": self.vitals_encoder,
                "image": self.image_encoder}

    def modality_features(self, batch: Batch, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs per modality, (B, dim) each; zeros for patients without the modality."""
        features = {m: encode_modality(self, m, batch, present[:, i]) for i, m in enumerate(MODALITIES)}
        return {m: features[m] * present[:, i : i + 1].to(features[m].dtype) for i, m in enumerate(MODALITIES)}

    def forward(self, batch: Batch, present: torch.Tensor | None = None, token_keep: torch.Tensor | None = None) -> ModelOutput:
        """present: override of batch.present (modality dropout, ablations); token_keep: (B, 5) extra token mask."""
        present = batch.present if present is None else present & batch.present
        return self.forward_features(self.modality_features(batch, present), present, token_keep)

    def forward_features(self, features: dict[str, torch.Tensor], present: torch.Tensor,
                         token_keep: torch.Tensor | None = None) -> ModelOutput:
        """Everything after the encoders, from their outputs (zeros or anything where absent): what
        training stage 2 runs on cached features of frozen encoders."""
        features = {m: features[m] * present[:, i : i + 1].to(features[m].dtype) for i, m in enumerate(MODALITIES)}
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
        raise ValueError(f"modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    rows = batch.present[:, MODALITIES.index("image")] if rows is None else rows
    image = batch.vitals.new_zeros(batch.size, model.image_encoder.feature_dim)
    if bool(rows.any()):
        encoded = model.image_encoder(batch.image[rows])
        image = image.index_put((rows.nonzero(as_tuple=True)[0],), encoded.to(image.dtype))
    return image
