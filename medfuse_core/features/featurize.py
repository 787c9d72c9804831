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
from medfuse_core.features.text_backbone import TextBackbone
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
                 cache_memory_rows: int = 50_000):
        self.spec = spec
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
            cache_dir: str | Path | None = None, backbone: TextBackbone | None = None,
            modalities: Sequence[str] | None = None) -> "Featurizer":
        """Fit the lab vocabulary and the vitals normaliser on training records. `modalities`: the
        registered modalities to featurise (default: every registered one, the built-in four first)."""
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
            modalities=list(modalities) if modalities is not None else list(REGISTRY.keys()),
        )
        featurizer = cls(spec, cache_dir=cache_dir, backbone=backbone)
        spec.text_dim = int(featurizer.backbone.embedding_dim)
        return featurizer

    @property
    def backbone(self) -> TextBackbone:
        if self._backbone is None:
            self._backbone = TextBackbone.from_pretrained(self.spec.text_model, pooling=self.spec.pooling,
                                                          max_tokens=self.spec.max_tokens)
        return self._backbone

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.spec.text_dim), dtype=np.float32)
        if self._cache is not None:
            return self._cache.get_or_compute(texts, self.backbone)
        return self.backbone.embed(texts).numpy().astype(np.float32)

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
