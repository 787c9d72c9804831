"""Tiny model configs shared by the model, training and explanation tests."""

from __future__ import annotations

from medfuse_core.features.featurize import Featurizer
from medfuse_core.models.config import (
    FusionConfig,
    ImageEncoderConfig,
    LabEncoderConfig,
    ModelConfig,
    NoteEncoderConfig,
    VitalsEncoderConfig,
)
from medfuse_core.sources.synth import LABEL_NAMES


def tiny_config(featurizer: Featurizer) -> ModelConfig:
    return ModelConfig(
        labels=list(LABEL_NAMES),
        labs=LabEncoderConfig(vocab_size=featurizer.vocabulary.size, d_model=16, layers=1, heads=2, output_dim=16),
        notes=NoteEncoderConfig(embedding_dim=featurizer.spec.text_dim, adapter_dim=16, output_dim=16),
        vitals=VitalsEncoderConfig(hidden=16),
        image=ImageEncoderConfig(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8),
        fusion=FusionConfig(d_model=16, layers=1, heads=2),
    )
