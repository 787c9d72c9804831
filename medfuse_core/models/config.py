"""Model configuration: dataclasses saved as the checkpoint's config.json (never pickle).

Every part of the model reads its own section; `ModelConfig.to_dict` / `from_dict` round-trip
through plain JSON so a checkpoint folder is `config.json` + `model.safetensors` and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class LabEncoderConfig:
    """Masked lab-test transformer: one token per lab item (item embedding + value embedding)."""

    vocab_size: int = 64  # lab vocabulary size including padding id 0
    value_features: int = 4  # per-item summary features (see features/labs.py)
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    decoder_layers: int = 1  # shallow MAE decoder, used in pretraining only
    mask_ratio: float = 0.75  # share of observed items masked in MAE pretraining
    output_dim: int = 128


@dataclass
class NoteEncoderConfig:
    """A Hugging Face text model embedding note sentences (frozen, or fine-tuned in training stage 1 by
    `train.notes.finetune`), plus a trained adapter. The run config's `model.notes` section chooses the
    text model and how it reads a sentence; the feature spec copies these fields (it featurizes)."""

    text_model: str = "all-MiniLM-L6-v2"  # a local save_pretrained folder, or the name of a packaged model
    pooling: str = "mean"  # "mean" | "cls" for encoders (BERT family), "last" for decoder LLMs (left padding)
    embedding_dim: int = 384  # the text model's hidden size (set from the model at training time)
    max_tokens: int = 128  # per sentence/chunk, prompt included: longer ones are truncated
    prompt_template: str = "{text}"  # chat-free text around each sentence, e.g. for a decoder LLM
    max_sentences: int = 64  # per patient, most recent kept
    adapter_dim: int = 128
    output_dim: int = 128
    dropout: float = 0.1


@dataclass
class VitalsEncoderConfig:
    """MedFuse's time-series encoder: 2-layer LSTM over 76 discretized features."""

    input_dim: int = 76
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.3


@dataclass
class ImageEncoderConfig:
    """A ResNet from `transformers`, trained from scratch unless `pretrained_path` is given."""

    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # ResNet-18
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    embedding_size: int = 64
    layer_type: str = "basic"
    pretrained_path: str | None = None  # a local transformers ResNet folder (safetensors)


@dataclass
class FusionConfig:
    """Disentangled projections per modality and the fusion head over their tokens."""

    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    head: str = "transformer"  # "transformer" | "additive" (models/fusion.py)


@dataclass
class ModelConfig:
    labels: list[str] = field(default_factory=list)  # output names, in head order
    labs: LabEncoderConfig = field(default_factory=LabEncoderConfig)
    notes: NoteEncoderConfig = field(default_factory=NoteEncoderConfig)
    vitals: VitalsEncoderConfig = field(default_factory=VitalsEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # which model `models.baselines.build_model` builds: "medfuse_lens" (the model), "no_mi" (it, trained
    # without the disentanglement losses: train/objective.py variant_loss), "early_fusion", "late_fusion",
    # "medfuse_lstm", or
    # "single:labs" | "single:notes" | "single:vitals" | "single:image" (see models/baselines.py)
    variant: str = "medfuse_lens"
    # the modalities the model reads, in token order: the four built-in ones (their sections above), then
    # any other registered modality (medfuse_core/modalities.py), whose encoder config is `extra[key]`
    modalities: list[str] = field(default_factory=lambda: ["labs", "notes", "vitals", "image"])
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        sections = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in MOVED_SECTIONS:
                raise ValueError(f"config.json: model.{name}: not a model setting; it belongs in {MOVED_SECTIONS[name]} "
                                 "(runtime.checkpoint.read_config moves it there in an older checkpoint)")
            if name not in sections:
                raise ValueError(f"config.json: {name}: unknown section; expected one of {sorted(sections)}")
            section_type = SECTION_TYPES.get(name)
            if section_type is not None:
                value = {k: v for k, v in value.items() if k not in RETIRED_FIELDS.get(name, {})}
            kwargs[name] = section_type(**value) if section_type is not None else value
        return cls(**kwargs)


SECTION_TYPES = {
    "labs": LabEncoderConfig,
    "notes": NoteEncoderConfig,
    "vitals": VitalsEncoderConfig,
    "image": ImageEncoderConfig,
    "fusion": FusionConfig,
}

# Sections older checkpoints wrote into the model config that the model never reads, with their owner now.
# `runtime.checkpoint.upgrade_config` moves them there when an older config.json is read (nothing is dropped),
# and a run config that still has one is refused with the owner named.
MOVED_SECTIONS: dict[str, str] = {
    "loss": "train.loss (the objective's weights and the training dropout: train/objective.py LossConfig)",
}

# Fields older checkpoints wrote that no model part reads: each setting has one owner (the feature spec),
# so they are dropped when an old config.json is read (the shipped demo's included) and refused in a run
# config, with the owner named.
RETIRED_FIELDS: dict[str, dict[str, str]] = {
    "image": {"image_size": "the top-level image_size of the run config (features.image_size in a checkpoint)"},
    "vitals": {"hours": "the observation window (features.hours; medfuse_core/features/window.py)",
               "timestep": "the observation window (features.timestep; medfuse_core/features/window.py)"},
}
