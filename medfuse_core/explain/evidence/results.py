"""What the evidence methods return: plain dataclasses of numbers and numpy arrays (no torch), named
and placed so the pages and the JSON can show them (record offsets, film pixel grid, hours)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LabEvidence:
    """One lab item's attribution; value/value_text/unit/time: its last raw result in the window."""

    key: str
    name: str
    attribution: float
    value: float | None = None
    value_text: str = ""
    unit: str = ""
    time: str | None = None
    features: dict[str, float] = field(default_factory=dict)  # normalised z: last, min, max, trend
    feature_attributions: dict[str, float] = field(default_factory=dict)  # lab_method="values" only


@dataclass
class SentenceEvidence:
    """A note sentence: ``record.notes[note_index].text[start:end] == text``."""

    sentence: int  # index into the patient's sentences (PatientEvidenceIndex.sentences)
    note_index: int
    start: int
    end: int
    text: str
    attribution: float


@dataclass
class TokenEvidence:
    """A word piece of an explained sentence, with character offsets into its note."""

    sentence: int
    note_index: int
    start: int
    end: int
    token: str
    attribution: float


@dataclass
class VitalsSpan:
    """A channel's contiguous hour range [start_hour, end_hour) holding most of its attribution."""

    channel: str
    start_hour: int
    end_hour: int
    attribution: float  # summed over the range
    channel_total: float  # summed over all hours


@dataclass
class VitalsEvidence:
    matrix: np.ndarray  # float32 (hours, 17), CHANNEL_NAMES order; 0 where the cell holds no patient value
    channels: list[str]
    top: list[VitalsSpan]
    convergence_delta: float
    imputed_attribution: float = 0.0  # IG's total on cells of imputed normal values: left out, not evidence


@dataclass
class ImageEvidence:
    method: str  # "gradcam" | "ig"
    heatmap: np.ndarray  # float32 (rows, cols) on the original film's pixel grid
    model_map: np.ndarray  # float32 (size, size) at model-input resolution
    image_index: int | None  # which of the record's images (record.images[i])
    convergence_delta: float | None = None  # ig only


@dataclass
class LabelEvidence:
    label: str
    labs: list[LabEvidence] = field(default_factory=list)  # ranked by |attribution|
    note_sentences: list[SentenceEvidence] = field(default_factory=list)  # ranked by |attribution|
    note_tokens: list[TokenEvidence] = field(default_factory=list)  # in text order, explained sentences only
    vitals: VitalsEvidence | None = None
    image: ImageEvidence | None = None
    convergence_delta: dict[str, float] = field(default_factory=dict)  # per method, |delta| in logit units
    notes_token_level: str = ""  # what the token level covered, in words
    extra: dict[str, Any] = field(default_factory=dict)  # other registered modalities: their evidence method's JSON
