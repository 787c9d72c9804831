"""Vitals -> MedFuse's time-series input: mimic3-benchmarks' `Discretizer`, and its `Normalizer`.

MedFuse feeds its LSTM the output of `mimic3models/preprocessing.py::Discretizer` (YerevaNN/
mimic3-benchmarks, MIT licence) with timestep 1.0 h, store_masks=True, impute_strategy="previous",
start_time="zero" and `end` = 48 h (in-hospital mortality), after the benchmark's
`create_in_hospital_mortality.py` has kept only events with -eps < t < 48 + eps. This module
reproduces that pipeline on the `Vitals` long table, vectorised:

- 17 channels in `discretizer_config.json` order; a numeric channel is one column, a categorical
  one a one-hot block over its `possible_values` in config order: 59 value columns, then 17 masks.
- t = hours since the index time. Rows kept where -eps < t < hours + eps (eps = 1e-6; the
  benchmark's task-creation filter, which also covers the discretizer's own `t > end + eps` skip);
  bin = int(t / timestep - eps), truncating toward zero as Python's `int` does, so t = 1.0 h lands in
  bin 0 and t in (-eps, 0] in bin 0. Bins: int(hours / timestep + 1 - eps) (48 for 48 h).
- Within a bin the last observation (in time order, table order for ties) wins, as the
  reference overwrites row by row. The mask is 1 where the bin had an observation.
- Imputation as the reference: "previous" (carry the last observed bin forward, the channel's
  normal value before the first), "next" (mirror image), "normal_value", "zero" (unobserved bins
  stay all-zero, one-hot blocks included).

Divergences, by design:
- Numeric channels take the `value` column (unit-cleaned and clipped by `sources/vitals.py`), not
  `float(value_text)`. Rows whose value is NaN are skipped, as the reference skips empty cells.
- Categorical channels: the reference one-hots the raw string and fails on anything outside
  `possible_values`. Here `value_text` is used when it is exactly one of them; else when it matches
  one ignoring case and spacing ("spontaneously" -> "Spontaneously"); else the score in `value`
  picks the first possible value (config order) with that score in `channel_info.json`
  ("4" -> "4 Spontaneously", "6" -> "Obeys Commands", "Normal <3 secs" -> "0.0"). Rows with none
  of these are skipped.
- An observation whose bin falls outside [0, n_bins) is skipped where the reference asserts; with
  the filter above that can only happen through float rounding at the horizon.
- Channels other than the 17 are ignored; an unsorted table is sorted by time (stable) first,
  where the reference asserts sorted input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_core.features import window
from medfuse_core.record import PatientRecord, Vitals
from medfuse_core.sources.vital_channels import CHANNEL_NAMES, VitalChannel, channel_spec

EPS = 1e-6  # the reference's eps, in bin arithmetic and the time filter
IMPUTE_STRATEGIES: tuple[str, ...] = ("previous", "zero", "normal_value", "next")
N_CHANNELS = len(CHANNEL_NAMES)


@dataclass(frozen=True)
class DiscretizerConfig:
    """The reference's `Discretizer` arguments MedFuse varies; masks are always stored."""

    timestep: float = window.TIMESTEP  # hours per bin
    hours: float = window.HOURS  # the reference's `end` with start_time="zero"
    impute: str = "previous"  # one of IMPUTE_STRATEGIES

    def __post_init__(self) -> None:
        if not self.timestep > 0 or not self.hours > 0:
            raise ValueError(f"timestep and hours must be > 0, got {self.timestep} and {self.hours}")
        if self.impute not in IMPUTE_STRATEGIES:
            raise ValueError(f"impute must be one of {IMPUTE_STRATEGIES}, got {self.impute!r}")

    @property
    def n_bins(self) -> int:
        """The reference's N_bins = int(max_hours / timestep + 1.0 - eps)."""
        return int(self.hours / self.timestep + 1.0 - EPS)


# ---------------------------------------------------------------------------------------------
# Column layout
# ---------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().casefold())


@dataclass(frozen=True)
class _Layout:
    """Where each channel's columns start, and how to turn a row into a per-channel code.

    A code is the value for a numeric channel and the one-hot index for a categorical one.
    """

    begin: np.ndarray  # int (17,): first value column of each channel
    categorical: np.ndarray  # bool (17,)
    normal_code: np.ndarray  # float (17,)
    width: int  # number of value columns (59)
    by_text: dict[tuple[int, str], int] = field(repr=False)  # exact possible value -> index
    by_key: dict[tuple[int, str], int] = field(repr=False)  # case/space-folded -> index
    by_score: dict[tuple[int, float], int] = field(repr=False)  # score -> first index


def _category_maps(cid: int, spec: VitalChannel) -> tuple[dict, dict, dict]:
    by_text, by_key, by_score = {}, {}, {}
    for index, text in enumerate(spec.possible_values):
        by_text[(cid, text)] = index
        by_key.setdefault((cid, _key(text)), index)
        if text in spec.value_map:
            by_score.setdefault((cid, spec.value_map[text]), index)
    return by_text, by_key, by_score


@cache
def _layout() -> _Layout:
    specs = list(channel_spec().values())
    sizes = [len(s.possible_values) if s.categorical else 1 for s in specs]
    begin = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    by_text: dict = {}
    by_key: dict = {}
    by_score: dict = {}
    normal = []
    for cid, spec in enumerate(specs):
        if spec.categorical:
            maps = _category_maps(cid, spec)
            by_text.update(maps[0])
            by_key.update(maps[1])
            by_score.update(maps[2])
            normal.append(float(spec.possible_values.index(spec.normal_text)))
        else:
            normal.append(float(spec.normal_text))
    return _Layout(
        begin=begin,
        categorical=np.array([s.categorical for s in specs]),
        normal_code=np.array(normal),
        width=int(sum(sizes)),
        by_text=by_text,
        by_key=by_key,
        by_score=by_score,
    )


def feature_names(config: DiscretizerConfig = DiscretizerConfig()) -> list[str]:
    """The reference's header: values ("Channel" or "Channel->category"), then "mask->Channel".

    `config` does not change the names (masks are always stored); it is taken for symmetry.
    """
    names = []
    for spec in channel_spec().values():
        if spec.categorical:
            names += [f"{spec.name}->{value}" for value in spec.possible_values]
        else:
            names.append(spec.name)
    return names + [f"mask->{name}" for name in CHANNEL_NAMES]


# ---------------------------------------------------------------------------------------------
# Discretizer
# ---------------------------------------------------------------------------------------------


@dataclass
class DiscretizedVitals:
    """One patient's series: `values` is what the LSTM reads (before normalisation)."""

    values: np.ndarray  # float32 (T, 76): 59 value columns then 17 masks, feature_names() order
    hours: np.ndarray  # float64 (T,): start of each bin, hours since the index time
    observed: np.ndarray  # bool (T, 17): the bin had a real observation of that channel
    config: DiscretizerConfig = field(default_factory=DiscretizerConfig)

    @property
    def names(self) -> list[str]:
        return feature_names(self.config)

    @property
    def patient_cells(self) -> np.ndarray:
        """bool (T, 17): the cells that hold the patient's own value: observed, or filled from one of the
        patient's observations by the imputation ("previous": from an earlier bin; "next": a later one).
        The others hold the channel's normal value (or nothing) and are no evidence about this patient."""
        if self.config.impute == "previous":
            return np.logical_or.accumulate(self.observed, axis=0)
        if self.config.impute == "next":
            return np.logical_or.accumulate(self.observed[::-1], axis=0)[::-1]
        return self.observed.copy()


def _channel_ids(channels: pd.Series) -> np.ndarray:
    """Index among the 17 channels, -1 for any other name (hashing each distinct name once)."""
    ids = {name: i for i, name in enumerate(CHANNEL_NAMES)}
    codes, uniques = pd.factorize(np.asarray(channels, dtype=object))
    lookup = np.array([ids.get(u, -1) for u in uniques] + [-1], dtype=np.int64)  # code -1 (missing) -> -1
    return lookup[codes]


def _category_code(layout: _Layout, cid: int, text: str, score: float) -> float:
    """One-hot index for a categorical row: exact text, then folded text, then score; NaN if none."""
    index = layout.by_text.get((cid, text))
    if index is None:
        index = layout.by_key.get((cid, _key(text)))
    if index is None and not math.isnan(score):
        index = layout.by_score.get((cid, score))
    return math.nan if index is None else float(index)


def _text_codes(layout: _Layout, cids: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """One-hot index from the text alone (exact, then folded), resolving each distinct
    (channel, text) pair once; NaN where the text is no possible value."""
    text_ids, uniques = pd.factorize(np.asarray(texts, dtype=object))
    uniques = [str(u) for u in uniques] + [""]  # code -1 (a missing text) -> ""
    n = len(uniques)
    pairs, inverse = np.unique(cids * n + np.where(text_ids < 0, n - 1, text_ids), return_inverse=True)
    resolved = np.array([_category_code(layout, int(p // n), uniques[p % n], math.nan) for p in pairs])
    return resolved[inverse.reshape(-1)]


def _row_codes(layout: _Layout, cids: np.ndarray, values: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Per row: the value (numeric channel) or the one-hot index (categorical), NaN to skip."""
    codes = values.astype(np.float64, copy=True)
    rows = np.flatnonzero(layout.categorical[np.clip(cids, 0, None)] & (cids >= 0))
    if len(rows) == 0:
        return codes
    codes[rows] = _text_codes(layout, cids[rows], texts[rows])
    for i in rows[np.isnan(codes[rows])]:  # variants: fall back on the score, row by row (rare)
        codes[i] = _category_code(layout, int(cids[i]), "", float(values[i]))
    return codes


def _hours_since(times: pd.Series, index_time: pd.Timestamp) -> np.ndarray:
    """Hours as (ns difference) / 3.6e12 in float64, NaN where the time is missing."""
    index_time = pd.Timestamp(index_time)
    if index_time.tzinfo is not None:
        index_time = index_time.tz_localize(None)
    delta = times.to_numpy(dtype="datetime64[ns]") - np.datetime64(index_time.asm8, "ns")
    return delta / np.timedelta64(1, "h")


def _first_time(table: pd.DataFrame, cids: np.ndarray) -> pd.Timestamp | None:
    """Earliest time among the 17 channels (the reference's start_time="relative" origin)."""
    times = table["time"][cids >= 0].dropna()
    return None if times.empty else times.min()


def _grid_rows(t: np.ndarray, cids: np.ndarray, codes: np.ndarray, config: DiscretizerConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in the window (mask), and for each written grid cell (flat bin * 17 + channel) the table
    row whose code it holds: the last observation per bin and channel."""
    n_bins = config.n_bins
    in_window = (t > -EPS) & (t < config.hours + EPS)
    keep = (cids >= 0) & ~np.isnan(codes) & in_window
    rows = np.flatnonzero(keep)
    order = np.argsort(t[rows], kind="stable")
    rows = rows[order]
    bins = np.trunc(t[rows] / config.timestep - EPS).astype(np.int64)
    inside = (bins >= 0) & (bins < n_bins)
    rows, flat = rows[inside], bins[inside] * N_CHANNELS + cids[rows[inside]]
    if not len(flat):
        return in_window, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cells, first_from_end = np.unique(flat[::-1], return_index=True)
    return in_window, cells, rows[len(flat) - 1 - first_from_end]


def _observation_grid(t: np.ndarray, cids: np.ndarray, codes: np.ndarray, config: DiscretizerConfig) -> np.ndarray:
    """(T, 17) codes of the last observation per bin and channel, NaN where none."""
    _, cells, rows = _grid_rows(t, cids, codes, config)
    grid = np.full(config.n_bins * N_CHANNELS, np.nan)
    grid[cells] = codes[rows]
    return grid.reshape(config.n_bins, N_CHANNELS)


def vitals_row_reasons(vitals: Vitals, index_time: pd.Timestamp | None,
                       config: DiscretizerConfig = DiscretizerConfig()) -> np.ndarray:
    """Per row of `vitals.table`, why the model does not read it ("" = it does), first reason that
    applies: the reading layer's `not_used`, "unknown item" (not one of the 17 channels), "no number"
    (no value or category), "outside window", "superseded in its hour" (a later observation of the
    channel in the same hour is the one the discretizer keeps). Built on the discretizer's own row
    selection (`_grid_rows`), so it cannot disagree with what the model reads."""
    table = vitals.table
    reasons = table["not_used"].to_numpy(dtype=object).copy()
    if not len(table):
        return reasons
    layout = _layout()
    cids = _channel_ids(table["channel"])
    origin = index_time if index_time is not None else _first_time(table, cids)
    t = np.full(len(table), np.nan) if origin is None else _hours_since(table["time"], origin)
    codes = _row_codes(layout, cids, table["value"].to_numpy(dtype=np.float64), table["value_text"].to_numpy())
    in_window, _, written = _grid_rows(t, cids, codes, config)
    free = reasons == ""
    reasons[free & (cids < 0)] = "unknown item"
    free = reasons == ""
    reasons[free & np.isnan(codes)] = "no number"
    free = reasons == ""
    reasons[free & ~in_window] = "outside window"
    superseded = reasons == ""
    superseded[written] = False
    reasons[superseded] = "superseded in its hour"
    return reasons


def _carry_forward(grid: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Each cell takes the last observed cell at or above it in its column; NaN before the first."""
    rows = np.arange(len(grid))[:, None]
    source = np.maximum.accumulate(np.where(observed, rows, -1), axis=0)
    filled = grid[np.clip(source, 0, None), np.arange(grid.shape[1])]
    return np.where(source >= 0, filled, np.nan)


def _impute(grid: np.ndarray, observed: np.ndarray, normal: np.ndarray, strategy: str) -> np.ndarray:
    """The reference's strategies on codes; "zero" leaves NaN (= nothing written)."""
    if strategy == "zero":
        return grid
    if strategy == "normal_value":
        return np.where(observed, grid, normal)
    if strategy == "previous":
        filled = _carry_forward(grid, observed)
    else:  # "next"
        filled = _carry_forward(grid[::-1], observed[::-1])[::-1]
    return np.where(np.isnan(filled), normal, filled)


def _expand(codes: np.ndarray, observed: np.ndarray, layout: _Layout) -> np.ndarray:
    """Codes (T, 17) -> value columns with one-hot blocks, then the masks; NaN writes nothing."""
    out = np.zeros((len(codes), layout.width + N_CHANNELS), dtype=np.float32)
    numeric = np.flatnonzero(~layout.categorical)
    out[:, layout.begin[numeric]] = np.nan_to_num(codes[:, numeric], nan=0.0)
    for cid in np.flatnonzero(layout.categorical):
        rows = np.flatnonzero(~np.isnan(codes[:, cid]))
        out[rows, layout.begin[cid] + codes[rows, cid].astype(np.int64)] = 1.0
    out[:, layout.width :] = observed
    return out


def discretize(
    vitals: Vitals, index_time: pd.Timestamp | None, config: DiscretizerConfig = DiscretizerConfig()
) -> DiscretizedVitals:
    """The reference `Discretizer.transform(X, end=config.hours)` on a `Vitals` long table.

    `index_time` None: hours count from the earliest observation of the 17 channels.
    Empty (or all-ignored) vitals: normal values throughout (zeros for impute="zero"), masks 0.
    """
    layout = _layout()
    table = vitals.table
    cids = _channel_ids(table["channel"])
    origin = index_time if index_time is not None else _first_time(table, cids)
    if origin is None:
        t = np.full(len(table), np.nan)
    else:
        t = _hours_since(table["time"], origin)
    codes = _row_codes(layout, cids, table["value"].to_numpy(dtype=np.float64), table["value_text"].to_numpy())
    grid = _observation_grid(t, cids, codes, config)
    observed = ~np.isnan(grid)
    imputed = _impute(grid, observed, layout.normal_code, config.impute)
    return DiscretizedVitals(
        values=_expand(imputed, observed, layout),
        hours=np.arange(config.n_bins, dtype=np.float64) * config.timestep,
        observed=observed,
        config=config,
    )


def discretize_record(record: PatientRecord, config: DiscretizerConfig = DiscretizerConfig()) -> DiscretizedVitals:
    """`discretize` of a record's vitals from its index time (first vitals time when unknown)."""
    return discretize(record.vitals, record.index_time, config)


# ---------------------------------------------------------------------------------------------
# Normalizer
# ---------------------------------------------------------------------------------------------

_NORMALIZER_FORMAT = "medfuse-lens/vitals-normalizer"
_STD_FLOOR = 1e-7  # the reference's eps in Normalizer._save_params


def continuous_columns(names: Sequence[str]) -> list[int]:
    """Columns MedFuse normalises: names without "->" (the reference's `cont_channels`)."""
    return [i for i, name in enumerate(names) if "->" not in name]


@dataclass(frozen=True)
class Normalizer:
    """The reference `Normalizer` restricted to continuous columns; JSON on disk, never pickle.

    Mean and std over every bin of every training series (imputed bins included, as the
    reference feeds whole discretized series); std with N - 1 in the reference's own formula,
    floored at 1e-7. One-hot and mask columns pass through unchanged.
    """

    columns: tuple[int, ...]
    names: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    @classmethod
    def fit(cls, series: Iterable[np.ndarray | DiscretizedVitals], names: Sequence[str] | None = None) -> Normalizer:
        """Stream over training series ((T, F) arrays or `DiscretizedVitals`); F = len(names)."""
        names = list(names) if names is not None else feature_names()
        columns = continuous_columns(names)
        count, total, total_sq = 0, np.zeros(len(columns)), np.zeros(len(columns))
        for item in series:
            x = np.asarray(getattr(item, "values", item), dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != len(names):
                raise ValueError(f"expected a (T, {len(names)}) series, got shape {x.shape}")
            x = x[:, columns]
            count += x.shape[0]
            total += x.sum(axis=0)
            total_sq += (x**2).sum(axis=0)
        if count < 2:
            raise ValueError(f"need at least 2 time steps to fit a normalizer, got {count}")
        means = total / count
        stds = np.sqrt(1.0 / (count - 1) * (total_sq - 2.0 * total * means + count * means**2))
        stds[~(stds >= _STD_FLOOR)] = _STD_FLOOR
        return cls(
            columns=tuple(columns),
            names=tuple(names[i] for i in columns),
            means=tuple(float(m) for m in means),
            stds=tuple(float(s) for s in stds),
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., F) -> float32 copy with (x - mean) / std on the continuous columns."""
        out = np.array(x, dtype=np.float64)
        cols = list(self.columns)
        out[..., cols] = (out[..., cols] - np.asarray(self.means)) / np.asarray(self.stds)
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "format": _NORMALIZER_FORMAT,
            "version": 1,
            "columns": list(self.columns),
            "names": list(self.names),
            "means": list(self.means),
            "stds": list(self.stds),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Normalizer:
        if data.get("format") != _NORMALIZER_FORMAT:
            raise ValueError(f"not a vitals normalizer (format {data.get('format')!r})")
        lengths = {len(data[k]) for k in ("columns", "names", "means", "stds")}
        if len(lengths) != 1:
            raise ValueError("vitals normalizer: columns, names, means and stds differ in length")
        return cls(
            columns=tuple(int(c) for c in data["columns"]),
            names=tuple(str(n) for n in data["names"]),
            means=tuple(float(m) for m in data["means"]),
            stds=tuple(float(s) for s in data["stds"]),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        return cls.from_dict(json.loads(Path(path).read_text()))
