"""Risk over time: the model re-run on the data available at each point of the stay.

At each cut-off (6, 12, 24, 36 and 48 h after the index time, and the time of each note and film in
the model's window) the record is cut to what had arrived by then (labs, vital signs, notes and films
with a time at or before the cut-off; undated items count as there from the start), featurised and
predicted. All cut-offs go through the model in one batch; note sentences come from the embedding
cache after the first. `TrajectoryPoint.arrived` says what arrived since the previous point, and
`biggest_moves` names the arrivals that moved a label most ("chest X-ray at 14 h: pneumonia 30 % ->
85 %"). The dashboard caches the result per patient and checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medfuse_core.record import Labs, PatientRecord, Vitals

DEFAULT_HOURS = (6.0, 12.0, 24.0, 36.0, 48.0)


@dataclass
class TrajectoryPoint:
    hours: float
    probabilities: np.ndarray | None  # (K,) calibrated; None when nothing usable had arrived yet
    arrived: list[str]  # what arrived since the previous point, in words


@dataclass
class Trajectory:
    labels: list[str]
    points: list[TrajectoryPoint]

    def series(self, label: str) -> tuple[list[float], list[float]]:
        """(hours, probability) of one label over the points that have a prediction."""
        k = self.labels.index(label)
        pts = [p for p in self.points if p.probabilities is not None]
        return [p.hours for p in pts], [float(p.probabilities[k]) for p in pts]

    def biggest_moves(self, label: str, n: int = 3, min_move: float = 0.05) -> list[str]:
        """'chest X-ray at 14 h: Pneumonia 30 % -> 85 %' for the largest moves of `label` (>= min_move)."""
        k = self.labels.index(label)
        moves = []
        previous = None
        for p in self.points:
            if p.probabilities is None:
                continue
            if previous is not None:
                delta = float(p.probabilities[k] - previous.probabilities[k])
                if abs(delta) >= min_move:
                    what = ", ".join(p.arrived) or "more of the same data"
                    moves.append((abs(delta), f"{what} (by {p.hours:.0f} h): {label} {previous.probabilities[k]:.0%} -> "
                                              f"{p.probabilities[k]:.0%}"))
            previous = p
        return [text for _, text in sorted(moves, key=lambda m: -m[0])[:n]]


def _hours(record: PatientRecord, times: Any) -> np.ndarray:
    times = pd.to_datetime(pd.Series(list(times), dtype=object), errors="coerce")
    if record.index_time is None or times.empty:
        return np.zeros(len(times))
    return np.asarray(record.hours_since_index(times), dtype=float)


def cutoffs(record: PatientRecord, window: float = 48.0, fixed: Sequence[float] = DEFAULT_HOURS) -> list[float]:
    """The fixed cut-offs plus the time of each note and film inside the window, sorted, unique."""
    events = [h for h in _hours(record, [n.time for n in record.notes if n.time is not None]) if 0 < h <= window]
    events += [h for h in _hours(record, [i.time for i in record.images if i.time is not None]) if 0 < h <= window]
    # rounded up to 1/100 h, so an event's own cut-off includes it
    return sorted({math.ceil(float(h) * 100) / 100 for h in [*fixed, *events] if 0 < h <= window})


def cut_record(record: PatientRecord, hours: float) -> PatientRecord:
    """The record as it stood `hours` after the index time (undated items kept: present from the start)."""
    if record.index_time is None:
        return record
    cut = record.index_time + pd.Timedelta(hours=hours)

    def keep_table(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["time"].isna() | (table["time"] <= cut)] if len(table) else table

    return dataclasses.replace(
        record, patient_id=f"{record.patient_id}@{hours:g}h",
        labs=Labs(keep_table(record.labs.table)), vitals=Vitals(keep_table(record.vitals.table)),
        notes=[n for n in record.notes if n.time is None or pd.isna(n.time) or n.time <= cut],
        images=[i for i in record.images if i.time is None or pd.isna(i.time) or i.time <= cut])


def _arrivals(record: PatientRecord, lo: float, hi: float) -> list[str]:
    said = []
    for note, h in zip(record.notes, _hours(record, [n.time for n in record.notes])):
        if lo < h <= hi:
            said.append(f"{(note.category or 'note').lower()} note at {h:.0f} h")
    for image, h in zip(record.images, _hours(record, [i.time for i in record.images])):
        if lo < h <= hi:
            said.append(f"chest X-ray at {h:.0f} h")
    labs = _hours(record, record.labs.table["time"]) if record.labs.present else np.array([])
    n = int(((labs > lo) & (labs <= hi)).sum())
    if n:
        said.append(f"{n} lab result{'s' if n > 1 else ''}")
    return said


def risk_trajectory(predictor: Any, record: PatientRecord, hours: Sequence[float] | None = None) -> Trajectory:
    """The model's calibrated probabilities at each cut-off (see the module docstring)."""
    points_h = list(hours) if hours is not None else cutoffs(record, float(predictor.hours))
    records = [cut_record(record, h) for h in points_h]
    features, _ = predictor.featurize(records)
    usable = [i for i, f in enumerate(features) if np.asarray(f.present).any()]
    probs: dict[int, np.ndarray] = {}
    if usable:
        logits = predictor.predict_features([features[i] for i in usable])
        probs = dict(zip(usable, predictor.probabilities(logits)))
    points, previous = [], float("-inf")
    for i, h in enumerate(points_h):
        points.append(TrajectoryPoint(float(h), probs.get(i), _arrivals(record, previous, h)))
        previous = h
    return Trajectory(list(predictor.labels), points)
