"""Labs -> model input: one token per lab item seen in the window, with 4 summary value features.

`LabVocabulary` names the items the model knows and how each item's values are normalised; it is
fitted on the training records and saved as plain JSON in the checkpoint config. `lab_features`
turns one patient's `Labs` long table into tokens; `cohort_lab_features` does the same for many
records at once (one concatenated table, numpy sort + reduceat, no Python loop over patients).

Items. An item is keyed by its MIMIC itemid when the row has one ("itemid:50912"), else by its
lower-cased, stripped name ("name:creatinine"). Vocabulary id 0 is padding/unknown; known items
are 1..n, ordered by descending training count (ties by key). Lookup (`id_of`): a row with an
itemid is looked up by itemid only (MIMIC has several items with one label, e.g. blood and urine
glucose, so an unknown itemid is never guessed from its name); a row without one is looked up by
name key, then by the display name of an itemid-keyed item when that name is unique in the
vocabulary. Unknown items are dropped from the model input (`LabTokens.unknown` lists their names;
the app still shows every row of the raw table).

Normalisation, per item, fitted on every numeric row of the training records (censored rows at
their bound, text-only rows ignored): z = (f(x) - center) / scale, clipped to [-8, 8], where
  f = log1p (x clipped at 0) when the item's training values are all >= 0, their sample skewness is
      > 1 and log1p brings |skewness| down (NTproBNP, often glucose, WBC, creatinine, lactate), else
  f = identity (sodium, pH, ...);
  center = median of f(x); scale = IQR(f(x)) / 1.349 (the standard deviation for normal data), with
  fallbacks MAD * 1.4826, then the standard deviation, then 1.0 when these are 0 or undefined.
The IQR/median pair is robust: disease-driven outliers do not widen the scale of normal values.

Value features (V = 4, `FEATURE_NAMES`), from the item's z values in time order (ties: table
order): last, min, max, and trend = last - first (0 for a single value; a creatinine rise is a
positive trend). z is clipped before summarising, so trend lies in [-16, 16].

Window: rows with index_time <= time <= index_time + hours; all rows (NaT times included, sorted
first) when index_time is None. With an index time, rows without a time are dropped. Rows the reading
layer marked `not_used` (unit, plausibility, duplicates) are never read; `lab_row_reasons` says per row
why a row is not read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from medfuse_core.features import window
from medfuse_core.record import Labs, PatientRecord

__all__ = [
    "FEATURE_NAMES",
    "N_FEATURES",
    "CLIP",
    "LabItemStats",
    "LabVocabulary",
    "LabTokens",
    "item_keys",
    "lab_features",
    "lab_row_reasons",
    "cohort_lab_features",
]

FEATURE_NAMES: tuple[str, ...] = ("last", "min", "max", "trend")
N_FEATURES = len(FEATURE_NAMES)
CLIP = 8.0
_SKEW_FOR_LOG = 1.0
_IQR_TO_SD = 1.349
_MAD_TO_SD = 1.4826


# ------------------------------------------------------------------------------------ item keys


def item_keys(itemid: pd.Series, item: pd.Series) -> np.ndarray:
    """Vocabulary keys of table rows: "itemid:<id>" where the id is known, else "name:<lower name>"."""
    itemid = pd.Series(itemid).astype("Int64")
    names = pd.Series(item).fillna("").astype(str).str.strip().str.lower()
    has_id = itemid.notna().to_numpy()
    ids = itemid.astype("string").fillna("").to_numpy(dtype=object)
    keys = np.where(has_id, "itemid:" + ids, "name:" + names.to_numpy(dtype=object))
    return keys.astype(object)


def _numeric_values(table: pd.DataFrame) -> np.ndarray:
    """float64 values: the parsed number, a censored row's bound (parsed from the text if needed)."""
    values = table["value"].to_numpy(dtype="float64", copy=True)
    need = np.isnan(values) & (table["censored"].astype(str).to_numpy() != "")
    if need.any():
        from medfuse_core.sources.labs import parse_lab_values

        parsed = parse_lab_values(table["value_text"][need])["value"].to_numpy(dtype="float64")
        values[need] = parsed
    values[~np.isfinite(values)] = np.nan
    return values


# ---------------------------------------------------------------------------------- vocabulary


@dataclass
class LabItemStats:
    """One known lab item: identity, display, and normalisation (see the module docstring)."""

    key: str  # "itemid:50912" | "name:creatinine"
    name: str  # display name, the most common one in training
    unit: str  # most common non-empty unit, "" when none
    transform: str  # "log1p" | "identity"
    center: float  # median of transform(value)
    scale: float  # robust standard deviation of transform(value), > 0
    ref_low: float | None = None  # most common reference limits in training, None when unknown
    ref_high: float | None = None
    count: int = 0  # training patients with a numeric value of this item

    def normalise(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype="float64")
        if self.transform == "log1p":
            x = np.log1p(np.maximum(x, 0.0))
        return np.clip((x - self.center) / self.scale, -CLIP, CLIP)

    def denormalise(self, z: np.ndarray) -> np.ndarray:
        """Back to the item's unit (for a level feature: last, min, max; not for trend)."""
        x = np.asarray(z, dtype="float64") * self.scale + self.center
        return np.expm1(x) if self.transform == "log1p" else x


def _skew(x: np.ndarray) -> float:
    if x.size < 3:
        return 0.0
    sd = x.std()
    return 0.0 if sd <= 0 else float(np.mean(((x - x.mean()) / sd) ** 3))


def _robust_scale(x: np.ndarray) -> float:
    q1, q3 = np.percentile(x, [25, 75])
    for scale in ((q3 - q1) / _IQR_TO_SD, np.median(np.abs(x - np.median(x))) * _MAD_TO_SD, x.std()):
        if np.isfinite(scale) and scale > 1e-12 * max(1.0, abs(float(np.median(x)))):
            return float(scale)
    return 1.0


def _mode(values: pd.Series, default: Any) -> Any:
    values = values.dropna()
    if values.dtype == object:
        values = values[values.astype(str) != ""]
    if values.empty:
        return default
    return values.value_counts(sort=True).index[0]


def _fit_item(key: str, rows: pd.DataFrame, count: int) -> LabItemStats:
    x = rows["_x"].to_numpy(dtype="float64")
    transform = "identity"
    if x.size and x.min() >= 0.0:
        raw_skew = _skew(x)
        if raw_skew > _SKEW_FOR_LOG and abs(_skew(np.log1p(x))) < abs(raw_skew):
            transform = "log1p"
    fx = np.log1p(x) if transform == "log1p" else x
    low, high = _mode(rows["ref_low"], None), _mode(rows["ref_high"], None)
    return LabItemStats(
        key=key, name=str(_mode(rows["item"], key.split(":", 1)[1])), unit=str(_mode(rows["unit"], "")),
        transform=transform, center=float(np.median(fx)), scale=_robust_scale(fx),
        ref_low=None if low is None else float(low), ref_high=None if high is None else float(high),
        count=int(count),
    )


@dataclass
class LabVocabulary:
    """Known lab items; id i (1-based) is `items[i - 1]`, id 0 is padding/unknown."""

    items: list[LabItemStats] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_key = {s.key: i + 1 for i, s in enumerate(self.items)}
        names = Counter(s.name.strip().lower() for s in self.items)
        self._by_name = {s.name.strip().lower(): i + 1 for i, s in enumerate(self.items) if names[s.name.strip().lower()] == 1}
        self._center = np.array([0.0] + [s.center for s in self.items])
        self._scale = np.array([1.0] + [s.scale for s in self.items])
        self._log = np.array([False] + [s.transform == "log1p" for s in self.items])

    @property
    def size(self) -> int:
        """Embedding table size: known items + padding (LabEncoderConfig.vocab_size)."""
        return len(self.items) + 1

    def __len__(self) -> int:
        return len(self.items)

    def item(self, lab_id: int) -> LabItemStats:
        return self.items[int(lab_id) - 1]

    def id_of(self, itemid: int | None, item_name: str | None) -> int:
        """Vocabulary id of an item (0 = unknown). An itemid, when given, is the only key used."""
        if itemid is not None and not pd.isna(itemid):
            return self._by_key.get(f"itemid:{int(itemid)}", 0)
        name = (item_name or "").strip().lower()
        return self._by_key.get(f"name:{name}", 0) or self._by_name.get(name, 0)

    def ids_of(self, itemid: pd.Series, item: pd.Series) -> np.ndarray:
        """Vectorised `id_of` for table columns -> int64 ids."""
        keys = pd.Series(item_keys(itemid, item))
        ids = np.array(keys.map(self._by_key).fillna(0).astype("int64").to_numpy(), copy=True)
        no_id = pd.Series(itemid).isna().to_numpy()
        if no_id.any():
            names = pd.Series(pd.Series(item).fillna("").astype(str).str.strip().str.lower().to_numpy()[no_id])
            alias = names.map(self._by_name).fillna(0).astype("int64").to_numpy()
            ids[no_id] = np.where(ids[no_id] > 0, ids[no_id], alias)
        return ids

    def normalise(self, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """z values of raw `values` of items `ids` (ids >= 1), clipped to [-CLIP, CLIP]."""
        ids = np.asarray(ids, dtype="int64")
        x = np.asarray(values, dtype="float64")
        x = np.where(self._log[ids], np.log1p(np.maximum(x, 0.0)), x)
        return np.clip((x - self._center[ids]) / self._scale[ids], -CLIP, CLIP)

    @classmethod
    def fit(cls, records: Iterable[PatientRecord], max_items: int = 128, min_count: int = 5) -> "LabVocabulary":
        """Items with numeric values in >= `min_count` training records; the `max_items` most common."""
        tables = []
        for i, record in enumerate(records):
            if record.labs.present:
                tables.append(record.labs.table.assign(_patient=i))
        if not tables:
            return cls([])
        table = pd.concat(tables, ignore_index=True)
        table["_x"] = _numeric_values(table)
        table = table[table["_x"].notna()]
        table["_key"] = item_keys(table["itemid"], table["item"])
        counts = table.groupby("_key")["_patient"].nunique()
        counts = counts[counts >= min_count]
        order = sorted(counts.index, key=lambda k: (-int(counts[k]), k))[:max_items]
        groups = table[table["_key"].isin(order)].groupby("_key", sort=False)
        return cls([_fit_item(key, groups.get_group(key), counts[key]) for key in order])

    def to_dict(self) -> dict[str, Any]:
        return {"feature_names": list(FEATURE_NAMES), "clip": CLIP, "items": [dict(s.__dict__) for s in self.items]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabVocabulary":
        names = data.get("feature_names", list(FEATURE_NAMES))
        if list(names) != list(FEATURE_NAMES):
            raise ValueError(f"lab vocabulary: feature_names {names} differ from this version's {list(FEATURE_NAMES)}")
        return cls([LabItemStats(**item) for item in data["items"]])


# -------------------------------------------------------------------------------------- tokens


@dataclass
class LabTokens:
    """One patient's lab tokens, in vocabulary-id order; `ids, values` go into PatientFeatures."""

    item_ids: np.ndarray  # int64 (L,), >= 1
    values: np.ndarray  # float32 (L, N_FEATURES): FEATURE_NAMES of the normalised values
    keys: list[str] = field(default_factory=list)  # vocabulary keys, per token
    names: list[str] = field(default_factory=list)  # item names as written in this record, per token
    unknown: list[str] = field(default_factory=list)  # names of numeric items in the window the vocabulary lacks

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def __iter__(self):  # `ids, values = lab_features(...)`
        yield self.item_ids
        yield self.values


def _empty_tokens(unknown: list[str] | None = None) -> LabTokens:
    return LabTokens(np.zeros((0,), np.int64), np.zeros((0, N_FEATURES), np.float32), [], [], unknown or [])


def _window(table: pd.DataFrame, index_time: pd.Timestamp | None, hours: float) -> np.ndarray:
    if index_time is None or pd.isna(index_time):
        return np.ones(len(table), dtype=bool)
    t = table["time"]
    start = pd.Timestamp(index_time)
    return ((t >= start) & (t <= start + pd.Timedelta(hours=float(hours)))).to_numpy()


def lab_row_reasons(labs: Labs, index_time: pd.Timestamp | None, vocab: LabVocabulary, hours: float = window.HOURS) -> np.ndarray:
    """Per row of `labs.table`, why the model does not read it ("" = it does), first reason that applies:
    the reading layer's `not_used` ("unit unknown", "implausible", "duplicate", ...), "no number", "unknown
    test" (not in this checkpoint's vocabulary), "outside window". Exactly the rows `lab_features` reads
    have "" (the coverage report is built on this, so it cannot disagree with the features)."""
    table = labs.table
    reasons = table["not_used"].to_numpy(dtype=object).copy()
    if not len(table):
        return reasons
    free = reasons == ""
    reasons[free & np.isnan(_numeric_values(table))] = "no number"
    free = reasons == ""
    reasons[free & (vocab.ids_of(table["itemid"], table["item"]) == 0)] = "unknown test"
    free = reasons == ""
    reasons[free & ~_window(table, index_time, hours)] = "outside window"
    return reasons


def cohort_lab_features(records: Sequence[PatientRecord], vocab: LabVocabulary, hours: float = window.HOURS) -> list[LabTokens]:
    """`lab_features` of every record, computed on one concatenated table (use for large cohorts)."""
    return _tokens([r.labs for r in records], [r.index_time for r in records], vocab, hours)


def lab_features(labs: Labs, index_time: pd.Timestamp | None, vocab: LabVocabulary, hours: float = window.HOURS) -> LabTokens:
    """One patient's lab tokens over [index_time, index_time + hours] (all rows without an index time)."""
    return _tokens([labs], [index_time], vocab, hours)[0]


def _tokens(labs: Sequence[Labs], index_times: Sequence[pd.Timestamp | None], vocab: LabVocabulary, hours: float) -> list[LabTokens]:
    parts = []
    for i, (lab, index_time) in enumerate(zip(labs, index_times)):
        table = lab.table
        if len(table):
            keep = _window(table, index_time, hours) & (table["not_used"] == "").to_numpy()
            if keep.any():
                parts.append(table.loc[keep, ["time", "itemid", "item", "value", "value_text", "censored"]].assign(_patient=i))
    out = [_empty_tokens() for _ in labs]
    if not parts:
        return out
    table = pd.concat(parts, ignore_index=True)
    x = _numeric_values(table)
    numeric = ~np.isnan(x)
    table, x = table[numeric].reset_index(drop=True), x[numeric]
    if table.empty:
        return out
    patient = table["_patient"].to_numpy(dtype="int64")
    ids = vocab.ids_of(table["itemid"], table["item"])

    unknown = ids == 0
    if unknown.any():
        names = table.loc[unknown, ["_patient", "item"]].drop_duplicates()
        for p, group in names.groupby("_patient", sort=False):
            out[int(p)].unknown = sorted(set(group["item"].astype(str)))
    known = ~unknown
    patient, ids, x = patient[known], ids[known], x[known]
    names = table["item"].astype(str).to_numpy(dtype=object)[known]
    if ids.size == 0:
        return out
    times = table["time"].to_numpy(dtype="datetime64[ns]")[known].astype("int64")  # NaT -> int64 min: sorts first
    z = vocab.normalise(ids, x)

    order = np.lexsort((np.arange(ids.size), times, ids, patient))  # by patient, item, time, table order
    patient, ids, z, names = patient[order], ids[order], z[order], names[order]
    starts = np.flatnonzero(np.r_[True, (patient[1:] != patient[:-1]) | (ids[1:] != ids[:-1])])
    ends = np.r_[starts[1:], ids.size] - 1
    first, last = z[starts], z[ends]
    values = np.stack([last, np.minimum.reduceat(z, starts), np.maximum.reduceat(z, starts), last - first], axis=1).astype(np.float32)
    tok_patient, tok_ids, tok_names = patient[starts], ids[starts], names[ends]

    bounds = np.flatnonzero(np.r_[True, tok_patient[1:] != tok_patient[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        p = int(tok_patient[a])
        item_ids = tok_ids[a:b].astype(np.int64)
        out[p] = LabTokens(item_ids, values[a:b], [vocab.items[i - 1].key for i in item_ids], list(tok_names[a:b]), out[p].unknown)
    return out
