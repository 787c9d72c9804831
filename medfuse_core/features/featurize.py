"""Records -> model inputs. The feature spec (lab vocabulary, vitals normaliser, image size, text
model) is fitted on training records and saved in the checkpoint's config, so a checkpoint always
featurizes new patients exactly as its training data were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from medfuse_core.features import window
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.features.coverage import Coverage, coverage
from medfuse_core.features.embedding_cache import EmbeddingCache
from medfuse_core.features.images import image_features
from medfuse_core.features.labs import LabTokens, LabVocabulary, cohort_lab_features
from medfuse_core.features.notes import NoteSentence, note_sentences
from medfuse_core.features.vitals import DiscretizerConfig, Normalizer, discretize_record
from medfuse_core.features.text_backbone import TextBackbone, resolve_model_folder, weights_sha256
from medfuse_core.features.text_finetune import load_notes_backbone
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES, PatientRecord


@dataclass
class FeatureSpec:
    labels: list[str]
    lab_vocabulary: dict[str, Any]
    vitals_normalizer: dict[str, Any]
    hours: float = window.HOURS
    timestep: float = window.TIMESTEP
    image_size: int = 128
    text_model: str = "all-MiniLM-L6-v2"
    pooling: str = "mean"
    max_tokens: int = 128
    max_sentences: int = 64
    text_dim: int = 384  # the text model's embedding width (known without loading it)
    prompt_template: str = "{text}"
    # The notes model's identity: sha256 of its weights (None in checkpoints from before it was stored),
    # and what stage 1 changed in it ("none" | "lora" | "full") with the sha256 of the saved change.
    text_model_sha256: str | None = None
    notes_finetune: str = "none"
    notes_adaptation_sha256: str | None = None
    # the modalities featurised, in the model's order: the built-in four, then other registered ones
    # (medfuse_core/modalities.py), each by its registry entry's featurizer
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSpec":
        return cls(**data)


@dataclass
class PatientEvidenceIndex:
    """What each model input position refers to, so attributions can be named and placed."""

    lab_keys: list[str] = field(default_factory=list)
    lab_names: list[str] = field(default_factory=list)
    sentences: list[NoteSentence] = field(default_factory=list)
    image_index: int | None = None
    image_geometry: Any = None
    # bool (T, 17): vitals cells holding the patient's own value (DiscretizedVitals.patient_cells); the
    # others are imputed normal values, which evidence must never credit. None: not known (all cells count).
    vitals_patient_cells: np.ndarray | None = None


def label_vector(record: PatientRecord, labels: Sequence[str]) -> np.ndarray:
    known = record.labels or {}
    return np.array([float(known[name]) if name in known else np.nan for name in labels], dtype=np.float32)


class Featurizer:
    """Turns records into `PatientFeatures`; the text model is loaded on first use."""

    def __init__(self, spec: FeatureSpec, cache_dir: str | Path | None = None, backbone: TextBackbone | None = None,
                 cache_memory_rows: int = 50_000, run_dir: str | Path | None = None,
                 text_device_map: str | dict | None = None, embed_batch_size: int = 32):
        """`run_dir`: the checkpoint folder, where a fine-tuned notes model's weights are;
        `text_device_map`: placement of a large notes model (`TextBackbone.from_pretrained`);
        `embed_batch_size`: sentences per forward pass of the notes model (larger fills a GPU)."""
        self.spec = spec
        self.embed_batch_size = int(embed_batch_size)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.text_device_map = text_device_map
        self.vocabulary = LabVocabulary.from_dict(spec.lab_vocabulary)
        self.normalizer = Normalizer.from_dict(spec.vitals_normalizer)
        self.discretizer = DiscretizerConfig(timestep=spec.timestep, hours=spec.hours)
        self._backbone = backbone
        self._cache = EmbeddingCache(cache_dir, memory_rows=cache_memory_rows) if cache_dir is not None else None

    @property
    def embedding_cache(self) -> EmbeddingCache | None:
        """The sentence-embedding cache (None without a cache folder); its hits/misses count lookups."""
        return self._cache

    @classmethod
    def fit(cls, records: Sequence[PatientRecord], labels: Sequence[str], *, image_size: int = 128,
            text_model: str = "all-MiniLM-L6-v2", pooling: str = "mean", max_sentences: int = 64,
            max_tokens: int = 128, prompt_template: str = "{text}",
            cache_dir: str | Path | None = None, backbone: TextBackbone | None = None,
            text_device_map: str | dict | None = None, embed_batch_size: int = 32,
            modalities: Sequence[str] | None = None) -> "Featurizer":
        """Fit the lab vocabulary and the vitals normaliser on training records; pin the notes model
        (its weights' sha256 is stored in the spec, so the checkpoint refuses another). `modalities`:
        the registered modalities to featurise (default: every registered one, the built-in four first)."""
        discretizer = DiscretizerConfig()
        normalizer = Normalizer.fit(discretize_record(r, discretizer) for r in records)
        spec = FeatureSpec(
            labels=list(labels),
            lab_vocabulary=LabVocabulary.fit(records).to_dict(),
            vitals_normalizer=normalizer.to_dict(),
            hours=discretizer.hours,
            timestep=discretizer.timestep,
            image_size=image_size,
            text_model=text_model,
            pooling=pooling,
            max_sentences=max_sentences,
            max_tokens=max_tokens,
            prompt_template=prompt_template,
            modalities=list(modalities) if modalities is not None else list(REGISTRY.keys()),
        )
        featurizer = cls(spec, cache_dir=cache_dir, backbone=backbone, text_device_map=text_device_map,
                         embed_batch_size=embed_batch_size)
        spec.text_dim = int(featurizer.backbone.embedding_dim)
        if backbone is None:
            spec.text_model_sha256 = weights_sha256(resolve_model_folder(text_model)[0])
        elif backbone.folder is not None:  # an in-memory model has no weights file to pin
            spec.text_model_sha256 = weights_sha256(backbone.folder)
        return featurizer

    @property
    def backbone(self) -> TextBackbone:
        """The notes model as the spec says (folder, pooling, length, prompt, weights hash, fine-tune)."""
        if self._backbone is None:
            s = self.spec
            self._backbone = load_notes_backbone(
                s.text_model, pooling=s.pooling, max_tokens=s.max_tokens, prompt_template=s.prompt_template,
                text_model_sha256=s.text_model_sha256, finetune=s.notes_finetune,
                adaptation_sha256=s.notes_adaptation_sha256, run_dir=self.run_dir, device_map=self.text_device_map)
        return self._backbone

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.spec.text_dim), dtype=np.float32)
        if self._cache is not None:
            return self._cache.get_or_compute(texts, self.backbone, batch_size=self.embed_batch_size)
        return self.backbone.embed(texts, batch_size=self.embed_batch_size).numpy().astype(np.float32)

    def featurize(self, record: PatientRecord) -> tuple[PatientFeatures, PatientEvidenceIndex]:
        features, index = self.featurize_many([record], progress=False)
        return features[0], index[0]

    def coverage(self, record: PatientRecord) -> Coverage:
        """What this featurizer reads of `record` and what not, with the reason (features/coverage.py)."""
        return coverage(record, self.vocabulary, self.spec.hours, self.spec.timestep, self.spec.max_sentences)

    def featurize_many(self, records: Sequence[PatientRecord], progress: bool = True
                       ) -> tuple[list[PatientFeatures], list[PatientEvidenceIndex]]:
        """Features for many records; note sentences of the whole batch are embedded together."""
        lab_tokens: list[LabTokens] = cohort_lab_features(records, self.vocabulary, self.spec.hours)
        sentences = [note_sentences(r.notes, self.spec.max_sentences) for r in records]
        flat = [s.text for per_patient in sentences for s in per_patient]
        embeddings = self.embed_sentences(flat)
        extra_modalities = [m for m in self.spec.modalities if m not in MODALITIES]
        out, evidence = [], []
        offset = 0
        for record, tokens, sents in tqdm(list(zip(records, lab_tokens, sentences)), desc="featurizing",
                                          disable=not progress, leave=False):
            note_emb = embeddings[offset : offset + len(sents)]
            offset += len(sents)
            discretized = discretize_record(record, self.discretizer)
            vitals = self.normalizer.transform(discretized.values).astype(np.float32)
            image, geometry = image_features(record.images, self.spec.image_size)
            present = [len(tokens) > 0, len(sents) > 0, bool(discretized.observed.any()), geometry is not None]
            extra = {}
            for m in extra_modalities:  # other registered modalities: (fixed-shape input, present)
                extra[m], has = REGISTRY[m].resolve("featurizer")(record, self.spec)
                extra[m] = np.asarray(extra[m], dtype=np.float32)
                present.append(bool(has))
            out.append(PatientFeatures(
                patient_id=record.patient_id,
                present=np.array(present, dtype=bool),
                lab_items=tokens.item_ids,
                lab_values=tokens.values,
                note_embeddings=note_emb.astype(np.float32),
                vitals=vitals,
                image=image.astype(np.float32),
                labels=label_vector(record, self.spec.labels),
                extra=extra,
            ))
            evidence.append(PatientEvidenceIndex(tokens.keys, tokens.names, sents,
                                                 geometry.index if geometry is not None else None, geometry,
                                                 discretized.patient_cells))
        return out, evidence
