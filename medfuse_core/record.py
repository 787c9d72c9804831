"""The data contract: one patient stay with four optional modalities.

Every loader (bundle folders, the synthetic cohort, MIMIC readers) produces a `PatientRecord`; every
consumer (features, model, explanations, dashboard) reads only this. Any modality may be absent:
an empty table or an empty list, never None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medfuse_core.modalities import BUILTIN, REGISTRY
from medfuse_core.problems import Problem

# The built-in modalities, in the order of the model's tokens (medfuse_core/modalities.py declares them).
MODALITIES: tuple[str, ...] = tuple(spec.key for spec in BUILTIN)

LAB_COLUMNS: tuple[str, ...] = (
    "time",  # datetime64: when the specimen was charted
    "itemid",  # Int64: MIMIC D_LABITEMS id where known, else <NA>
    "item",  # str: lab name as shown to a clinician ("Creatinine")
    "value",  # float64: the number in `value_unit`, NaN when the text holds none ("NEG") or `not_used` says why not
    "value_text",  # str: the raw value text, always kept
    "censored",  # str: "" | "below" ("<0.5": true value below 0.5) | "above" (">1000")
    "unit",  # str: unit as given ("mmol/L"), "" when unknown
    "ref_low",  # float64: lower reference limit in `value_unit`, NaN when unknown
    "ref_high",  # float64: upper reference limit in `value_unit`, NaN when unknown
    "flag",  # str: abnormal flag as given ("abnormal", "low", "high", "delta"), "" when none
    "loinc",  # str: LOINC code as given or of the vocabulary test the row matched, "" when unknown
    "value_unit",  # str: unit of `value`: the model's unit for a vocabulary test (converted), else `unit`
    "not_used",  # str: why the model may not read this row (NOT_USED_REASONS), "" when it may
)

# Why a lab or vitals row is not read by the model (the `not_used` column). Where the reading layer
# decides; the features layer adds "unknown test" and "outside window" (features/coverage.py).
NOT_USED_REASONS: dict[str, str] = {
    "no number": "a text result with no number",
    "unit missing": "no unit, and the test's values mean different things in different units",
    "unit unknown": "a unit this reader does not know",
    "unit incompatible": "a unit that does not convert to the model's unit",
    "implausible": "a value outside the range a living patient can have (or not a finite number)",
    "duplicate": "an exact copy of an earlier row",
}

VITAL_COLUMNS: tuple[str, ...] = (
    "time",  # datetime64
    "channel",  # str: one of the 17 mimic3-benchmarks channels, or another name kept for display
    "value",  # float64: number; for categorical channels (GCS, capillary refill) the mapped score
    "value_text",  # str: the raw value text ("4 Spontaneously", "98")
    "unit",  # str: unit as given (vitals.csv `unit` column), "" when none
    "not_used",  # str: why the model may not read this row (NOT_USED_REASONS), "" when it may; value is NaN then
)

_STR_COLUMNS = {"item", "value_text", "censored", "unit", "flag", "channel", "loinc", "value_unit", "not_used"}
_FLOAT_COLUMNS = {"value", "ref_low", "ref_high"}


def _expected_dtype(name: str) -> str:
    if name == "time":
        return "datetime64[ns]"
    if name == "itemid":
        return "Int64"
    return "float64" if name in _FLOAT_COLUMNS else "object"


def _conforms(table: pd.DataFrame, columns: tuple[str, ...]) -> bool:
    return (table.columns.tolist() == list(columns) and isinstance(table.index, pd.RangeIndex)
            and table.index.start == 0
            and all(str(d) == _expected_dtype(c) for c, d in zip(columns, table.dtypes.tolist())))


def _conform_column(name: str, col: pd.Series | None, n: int) -> Any:
    """One column of the contract: `col` (index 0..n-1) converted to the contract's dtype.

    A column already of that dtype is taken as it is (for text columns: an object column holding only `str`)."""
    if name == "time":
        if col is None:
            return pd.Series(pd.NaT, index=pd.RangeIndex(n), dtype="datetime64[ns]")
        if col.dtype == "datetime64[ns]":
            return col
        if isinstance(col.dtype, np.dtype) and col.dtype.kind == "M":  # another unit: what to_datetime keeps
            return col.astype("datetime64[ns]")
        return pd.to_datetime(col, errors="coerce").astype("datetime64[ns]")
    if name == "itemid":
        if col is None:
            return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="Int64")
        if str(col.dtype) == "Int64":
            return col
        return pd.to_numeric(col, errors="coerce").astype("Int64")
    if name in _FLOAT_COLUMNS:
        if col is None:
            return np.full(n, np.nan)
        if col.dtype == "float64":
            return col
        return pd.to_numeric(col, errors="coerce").astype("float64")
    if name in _STR_COLUMNS:
        if col is None:
            return pd.Series(np.full(n, "", dtype=object), index=pd.RangeIndex(n), dtype=object)
        if col.dtype == object and all(type(v) is str for v in col.to_numpy()):
            return col
        if isinstance(col.dtype, pd.StringDtype):  # already text: astype(str) would change nothing
            return col.fillna("").astype(object)
        return col.fillna("").astype(str).astype(object)
    return col


def _conform(table: pd.DataFrame | None, columns: tuple[str, ...]) -> pd.DataFrame:
    """Return `table` with exactly `columns`, in order, with the contract's dtypes.

    A table already in that form is returned as it is (cheap: readers slice one big conformed table
    into many per-patient tables). Otherwise columns already of their contract dtype are reused and
    only the others converted, and the frame is built once."""
    if table is None:
        table = pd.DataFrame()
    if _conforms(table, columns):
        return table
    n = len(table)
    data = {}
    for name in columns:
        col = table[name].reset_index(drop=True) if name in table.columns else None
        data[name] = _conform_column(name, col, n)
    return pd.DataFrame(data, index=pd.RangeIndex(n), columns=list(columns))


@dataclass
class Labs:
    """Lab results as a long table with the columns of LAB_COLUMNS."""

    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        self.table = _conform(self.table, LAB_COLUMNS)

    @property
    def present(self) -> bool:
        return len(self.table) > 0


@dataclass
class Vitals:
    """Vital-sign observations as a long table with the columns of VITAL_COLUMNS."""

    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        self.table = _conform(self.table, VITAL_COLUMNS)

    @property
    def present(self) -> bool:
        return len(self.table) > 0


@dataclass
class Note:
    """One clinical note. `source` names the file it came from (for error messages and display)."""

    time: pd.Timestamp | None
    category: str
    text: str
    source: str = ""


@dataclass
class ImageMetadata:
    """What a clinician cares about in an image header; None where the file does not say."""

    modality: str | None = None  # DICOM Modality: "CR", "DX"; None for PNG/JPEG
    view_position: str | None = None  # "PA", "AP", "LL", ...
    study_date: str | None = None  # ISO date "2131-05-07"
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    photometric: str | None = None  # "MONOCHROME1", "MONOCHROME2", "RGB", ...
    bits_stored: int | None = None
    transfer_syntax: str | None = None  # DICOM transfer syntax name
    file_format: str = ""  # "dicom" | "png" | "jpeg"
    rows: int = 0
    columns: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if self.pixel_spacing_mm is not None:
            out["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        return out


@dataclass
class ChestImage:
    """One chest radiograph: grey-level pixels in [0, 1] (bone bright), as displayed."""

    time: pd.Timestamp | None
    view: str
    pixels: np.ndarray  # float32, shape (rows, columns), values in [0, 1]
    source: str = ""
    metadata: ImageMetadata = field(default_factory=ImageMetadata)


@dataclass
class PatientRecord:
    """One stay of one patient. Modalities are empty when absent; labels/truth only where known."""

    patient_id: str
    age: float | None = None
    sex: str | None = None  # "F" | "M" | None
    index_time: pd.Timestamp | None = None  # admission or ICU intime; hours are counted from here
    labs: Labs = field(default_factory=Labs)
    vitals: Vitals = field(default_factory=Vitals)
    notes: list[Note] = field(default_factory=list)
    images: list[ChestImage] = field(default_factory=list)
    labels: dict[str, int] | None = None  # label name -> 0/1, including "In-hospital mortality"
    truth: dict[str, Any] | None = None  # planted evidence, synthetic patients only
    problems: list[Problem] = field(default_factory=list)  # warnings met while loading
    source: str = ""  # folder or table this record was read from
    extra: dict[str, Any] = field(default_factory=dict)  # other registered modalities' data, by key (None: absent)

    def has(self, modality: str) -> bool:
        if modality == "labs":
            return self.labs.present
        if modality == "vitals":
            return self.vitals.present
        if modality == "notes":
            return any(n.text.strip() for n in self.notes)
        if modality == "image":
            return len(self.images) > 0
        if modality in REGISTRY:  # another registered modality: its data, when loaded and not empty
            data = self.extra.get(modality)
            return data is not None and (not hasattr(data, "__len__") or len(data) > 0)
        raise KeyError(f"unknown modality {modality!r}; expected one of {REGISTRY.keys()}")

    @property
    def present_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in REGISTRY.keys() if self.has(m))

    def hours_since_index(self, times: pd.Series | pd.Timestamp) -> Any:
        """Hours from the index time (float); NaN where the index time or the time is unknown.

        Computed on nanosecond integers as floats, not as a Timedelta: two valid timestamps can be further
        apart than a Timedelta holds (292 years, e.g. a lab dated 1900 in a cohort shifted to 2200)."""
        index = self.index_time
        if isinstance(times, pd.Series):
            if index is None or pd.isna(index):
                return pd.Series(np.nan, index=times.index, dtype=float)
            stamps = pd.to_datetime(times, errors="coerce")
            ns = stamps.to_numpy(dtype="datetime64[ns]").astype("int64").astype(float)
            ns[stamps.isna().to_numpy()] = np.nan
            return pd.Series((ns - float(pd.Timestamp(index).value)) / 3.6e12, index=times.index)
        if index is None or pd.isna(index) or times is None or pd.isna(times):
            return np.nan
        return (float(pd.Timestamp(times).value) - float(pd.Timestamp(index).value)) / 3.6e12
