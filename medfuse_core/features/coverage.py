"""What the model read of one patient and what it did not, with the reason, per modality.

Built on the features layer's own row selections (`lab_row_reasons`, `vitals_row_reasons`, the note
sentence limit, the film choice), so the report cannot disagree with what the model reads. The
reasons, in words, are `REASONS`; files that could not be read at all (an error problem on the record
naming the modality's file) count as "unreadable file" (one each).

`validate`, the explain JSON, `score`'s Parquet and the dashboard show this; the app only draws it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medfuse_core.features.images import select_image
from medfuse_core.features.labs import LabVocabulary, lab_row_reasons
from medfuse_core.features.notes import note_sentences
from medfuse_core.features.vitals import DiscretizerConfig, vitals_row_reasons
from medfuse_core.problems import Severity
from medfuse_core.record import MODALITIES, NOT_USED_REASONS, PatientRecord

__all__ = ["COVERAGE_MODALITIES", "REASONS", "ModalityCoverage", "Coverage", "coverage"]

COVERAGE_MODALITIES: tuple[str, ...] = MODALITIES  # the built-in four; another registered modality is not counted

# reason -> the plural words of the summary line ("9 unknown tests")
REASONS: dict[str, str] = {
    "unknown test": "unknown tests",
    "unknown item": "unknown channels",
    "unit missing": "missing units",
    "unit unknown": "unknown units",
    "unit incompatible": "units that do not convert",
    "implausible": "implausible values",
    "duplicate": "duplicates",
    "no number": "text results without a number",
    "outside window": "outside the 48 h window",
    "superseded in its hour": "superseded within their hour",
    "over the sentence limit": "beyond the sentence limit",
    "not the chosen film": "other films (one film is read)",
    "unreadable file": "unreadable files",
    "out of domain": "left out as unlike the training data",  # the domain check's, not a row's (runtime/domain.py)
}
_SINGULAR = {"unknown tests": "unknown test", "unknown channels": "unknown channel", "missing units": "missing unit",
             "unknown units": "unknown unit", "units that do not convert": "unit that does not convert",
             "implausible values": "implausible value", "duplicates": "duplicate",
             "text results without a number": "text result without a number",
             "superseded within their hour": "superseded within its hour", "unreadable files": "unreadable file"}
_UNITS = {"labs": ("lab result", "lab results"), "vitals": ("vital-sign value", "vital-sign values"),
          "notes": ("note", "notes"), "image": ("film", "films")}
_FILES = {"labs": ("labs.csv",), "vitals": ("vitals.csv",), "notes": ("notes",), "image": ("images",)}
MAX_DETAILS = 500  # per modality, in `details`; the counts always cover every row


@dataclass
class ModalityCoverage:
    """One modality: how many were given, how many read, and why the others were not."""

    modality: str
    given: int = 0
    read: int = 0
    not_read: dict[str, int] = field(default_factory=dict)  # reason -> count, most common first
    details: list[dict[str, str]] = field(default_factory=list)  # one per unread row/file: what, when, reason

    @property
    def unread(self) -> int:
        return self.given - self.read

    def summary(self, hours: float = 48.0) -> str:
        """"12 of 52 lab results not used: 9 unknown tests, 3 unknown units" (or "all 5 ... used")."""
        one, many = _UNITS[self.modality]
        if self.given == 0:
            return f"no {many}"
        if self.unread == 0:
            return f"all {self.given} {many if self.given > 1 else one} used" if self.given > 1 else f"the 1 {one} used"
        words = []
        for reason, n in self.not_read.items():
            text = REASONS.get(reason, reason).replace("48 h", f"{hours:g} h")
            words.append(f"{n} {_SINGULAR.get(text, text) if n == 1 else text}")
        return f"{self.unread} of {self.given} {many if self.given > 1 else one} not used: {', '.join(words)}"

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "given": self.given, "read": self.read, "not_read": dict(self.not_read),
                "details": list(self.details)}


@dataclass
class Coverage:
    patient_id: str
    hours: float
    modalities: dict[str, ModalityCoverage]

    def summary_line(self) -> str:
        parts = [f"{m} {c.read}/{c.given}" for m, c in self.modalities.items()]
        unread = sum(c.unread for c in self.modalities.values())
        return f"{self.patient_id}: read {', '.join(parts)}" + (f" ({unread} not used)" if unread else "")

    def to_dict(self) -> dict[str, Any]:
        return {"hours": self.hours, "modalities": {m: c.to_dict() for m, c in self.modalities.items()}}

    def leaving_out(self, modalities: Sequence[str]) -> "Coverage":
        """This coverage with `modalities` left out whole by the applicability-domain check: what the rows
        would have read is "out of domain" instead, so a report never says "read" for what the model did not
        use (the row-level reasons stay as they were)."""
        out = {}
        for m, c in self.modalities.items():
            if m in modalities and c.read:
                not_read = {"out of domain": c.read, **c.not_read}
                c = replace(c, read=0, not_read=dict(sorted(not_read.items(), key=lambda kv: -kv[1])),
                            details=[{"what": f"{c.read} {_UNITS[m][c.read > 1]}", "time": "", "reason": "out of domain"},
                                     *c.details])
            out[m] = c
        return replace(self, modalities=out)

    def counts(self) -> dict[str, int]:
        """Flat counts for a table row: `<modality>_given`, `<modality>_read`, `<modality>_not_read`."""
        out: dict[str, int] = {}
        for m, c in self.modalities.items():
            out.update({f"{m}_given": c.given, f"{m}_read": c.read, f"{m}_not_read": c.unread})
        return out


def _from_reasons(modality: str, reasons: np.ndarray, what: list[str], when: list[str]) -> ModalityCoverage:
    cov = ModalityCoverage(modality, given=len(reasons), read=int((reasons == "").sum()))
    cov.not_read = dict(Counter(r for r in reasons if r).most_common())
    for i in np.flatnonzero(reasons != "")[:MAX_DETAILS]:
        cov.details.append({"what": what[i], "time": when[i], "reason": str(reasons[i])})
    return cov


def _time_text(times: pd.Series) -> list[str]:
    return [("" if pd.isna(t) else str(pd.Timestamp(t))) for t in times]


def _unreadable(record: PatientRecord, modality: str, cov: ModalityCoverage) -> None:
    """Error problems naming this modality's file (a file left out whole) count as unreadable files."""
    names = _FILES[modality]
    for p in record.problems:
        if p.severity != Severity.ERROR:
            continue
        parts = PurePath(p.file).parts
        if any(n in parts[-2:] for n in names):
            cov.given += 1
            cov.not_read["unreadable file"] = cov.not_read.get("unreadable file", 0) + 1
            if len(cov.details) < MAX_DETAILS:
                cov.details.append({"what": PurePath(p.file).name, "time": "", "reason": "unreadable file"})


def coverage(record: PatientRecord, vocabulary: LabVocabulary, hours: float = 48.0, timestep: float = 1.0,
             max_sentences: int | None = 64) -> Coverage:
    """The coverage of one record under a checkpoint's feature settings (its lab vocabulary, window,
    sentence limit); see the module docstring."""
    labs = record.labs.table
    lab_what = [f"{item or f'itemid {i}'} {text}{' ' + unit if unit else ''}".strip()
                for item, i, text, unit in zip(labs["item"], labs["itemid"], labs["value_text"], labs["unit"])]
    out = {"labs": _from_reasons("labs", lab_row_reasons(record.labs, record.index_time, vocabulary, hours),
                                 lab_what, _time_text(labs["time"]))}
    vitals = record.vitals.table
    vital_what = [f"{c} {v}{' ' + u if u else ''}" for c, v, u in zip(vitals["channel"], vitals["value_text"],
                                                                     vitals["unit"])]
    config = DiscretizerConfig(timestep=timestep, hours=hours)
    out["vitals"] = _from_reasons("vitals", vitals_row_reasons(record.vitals, record.index_time, config),
                                  vital_what, _time_text(vitals["time"]))
    read_notes = {s.note_index for s in note_sentences(record.notes, max_sentences)}
    note_reasons = np.array(["" if i in read_notes else "over the sentence limit" for i in range(len(record.notes))],
                            dtype=object)
    out["notes"] = _from_reasons("notes", note_reasons, [PurePath(n.source).name or n.category for n in record.notes],
                                 [("" if n.time is None or pd.isna(n.time) else str(n.time)) for n in record.notes])
    chosen = select_image(record.images)
    image_reasons = np.array(["" if i == chosen else "not the chosen film" for i in range(len(record.images))],
                             dtype=object)
    out["image"] = _from_reasons("image", image_reasons, [PurePath(im.source).name or im.view for im in record.images],
                                 [("" if im.time is None or pd.isna(im.time) else str(im.time)) for im in record.images])
    for modality in COVERAGE_MODALITIES:
        _unreadable(record, modality, out[modality])
        out[modality].not_read = dict(sorted(out[modality].not_read.items(), key=lambda kv: -kv[1]))
    return Coverage(record.patient_id, float(hours), {m: out[m] for m in COVERAGE_MODALITIES})


assert set(NOT_USED_REASONS) <= set(REASONS), "every reading-layer reason needs its words here"
