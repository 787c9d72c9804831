"""Planted evidence as the generators report it, before it becomes truth.json.

Each modality generator returns its data plus a list of these, tagged with the disease key, so the
truth is written from what was actually planted, not from what was intended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LabEvidence:
    disease: str
    itemid: int
    item: str
    time: pd.Timestamp


@dataclass(frozen=True)
class VitalEvidence:
    disease: str
    channel: str
    hours: tuple[float, float]  # first and last planted sample, hours since index time


@dataclass(frozen=True)
class NoteSpan:
    """A character span of note `note` (index in record.notes); `disease` is "" for distractors."""

    disease: str
    note: int
    start: int
    end: int
    text: str
    kind: str = "evidence"  # "evidence" | "negated" | "family"


@dataclass(frozen=True)
class ImageEvidence:
    disease: str
    image: int  # index in record.images
    finding: str
    box: tuple[int, int, int, int]  # row0, col0, row1, col1 (exclusive ends)
    mask: np.ndarray  # bool, image-sized
