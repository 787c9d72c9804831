"""Lab results panel: display tables (latest per item, full timeline) and their styling.

Pure functions (no Streamlit): `lab_rows` turns the record's long table into what a clinician reads
(value exactly as the lab reported it, reference range, flag), `latest_per_item` is the compact view,
and `style_labs` highlights abnormal rows and, when the model gives one, shades a signed attribution
column (orange raises the prediction, blue lowers it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from app.components.shading import effect_words, max_abs, signed_rgba
from medfuse_core.record import PatientRecord

DISPLAY_COLUMNS = ["item", "value", "flag", "reference", "unit", "hours", "time"]
ABNORMAL_FLAGS = {"abnormal", "low", "high", "l", "h", "ll", "hh", "a", "aa", "critical", "panic"}
ABNORMAL_BACKGROUND = "background-color: #fde2e1; color: #8a1c1c; font-weight: 600"

# Critical (panic) limits for adult patients, from commonly published laboratory critical-value lists
# (e.g. Kost, "Critical limits for urgent clinician notification at US medical centers", JAMA 1990, and
# hospital lists derived from it): a value at or beyond a limit is flagged "critical", not just
# "low"/"high". Keyed by lower-case item name; applied only when the result is in the unit given here,
# so nothing is compared in the wrong unit. (low limit, high limit, unit); None = no limit that side.
CRITICAL_LIMITS: dict[str, tuple[float | None, float | None, frozenset[str]]] = {
    "sodium": (120.0, 160.0, frozenset({"meq/l", "mmol/l"})),
    "potassium": (2.8, 6.2, frozenset({"meq/l", "mmol/l"})),
    "glucose": (40.0, 450.0, frozenset({"mg/dl"})),
    "calcium, total": (6.0, 13.0, frozenset({"mg/dl"})),
    "calcium": (6.0, 13.0, frozenset({"mg/dl"})),
    "bicarbonate": (10.0, 40.0, frozenset({"meq/l", "mmol/l"})),
    "hemoglobin": (7.0, 20.0, frozenset({"g/dl"})),
    "platelet count": (20.0, 1000.0, frozenset({"k/ul", "10^3/ul", "x10e3/ul"})),
    "white blood cells": (2.0, 30.0, frozenset({"k/ul", "10^3/ul", "x10e3/ul"})),
    "ph": (7.2, 7.6, frozenset({"", "units"})),
    "lactate": (None, 4.0, frozenset({"mmol/l"})),
}
CRITICAL_BACKGROUND = "background-color: #f8c9c6; color: #6b0f0f; font-weight: 700"
# Units that mean "no unit" for a dimensionless result (MIMIC records pH in "units").
DIMENSIONLESS = {("ph", "units")}


def critical(item: str, value: float, unit: str) -> str:
    """'critical low' / 'critical high' when `value` is at or beyond CRITICAL_LIMITS for the item (in the
    listed unit), else ''."""
    limits = CRITICAL_LIMITS.get(str(item).strip().lower())
    if limits is None or value is None or math.isnan(value):
        return ""
    low, high, units = limits
    if str(unit or "").strip().lower() not in units:
        return ""
    if low is not None and value <= low:
        return "critical low"
    if high is not None and value >= high:
        return "critical high"
    return ""


def display_unit(item: str, unit: str) -> str:
    """The unit as a clinician reads it: '' for pH's 'units' (pH has no unit)."""
    return "" if (str(item).strip().lower(), str(unit or "").strip().lower()) in DIMENSIONLESS else (unit or "")


# Attribution keys: an item name ("Creatinine") shades every row of that item; (item, time) shades one.
LabKey = str | tuple[str, pd.Timestamp]


def _reference(low: float, high: float) -> str:
    def fmt(x: float) -> str:
        return f"{x:g}"
    if math.isnan(low) and math.isnan(high):
        return ""
    if math.isnan(low):
        return f"≤ {fmt(high)}"
    if math.isnan(high):
        return f"≥ {fmt(low)}"
    return f"{fmt(low)}–{fmt(high)}"


def out_of_range(value: float, censored: str, low: float, high: float) -> str:
    """'low' / 'high' when the (possibly censored) number lies outside the reference range, else ''."""
    if value is None or math.isnan(value):
        return ""
    if not math.isnan(low) and (value < low or (censored == "below" and value <= low)):
        return "low"
    if not math.isnan(high) and (value > high or (censored == "above" and value >= high)):
        return "high"
    return ""


def lab_rows(record: PatientRecord) -> pd.DataFrame:
    """One display row per result, in time order, with an `abnormal` column for styling.

    `flag` shows the lab's own flag; where the lab gave none, or only a generic "abnormal", and the
    number is outside the reference range, it shows the direction ('low' / 'high').
    """
    table = record.labs.table
    columns = DISPLAY_COLUMNS + ["abnormal", "stamp"]
    if table.empty:
        return pd.DataFrame(columns=columns + ["critical"])
    rows = []
    for r in table.itertuples(index=False):
        direction = out_of_range(r.value, r.censored, r.ref_low, r.ref_high)
        given = (r.flag or "").strip()
        abnormal = given.lower() in ABNORMAL_FLAGS or bool(direction)
        flag = given or direction
        if given.lower() in {"abnormal", "a"} and direction:
            flag = direction  # the lab said "abnormal"; the range says which way
        elif given and direction and direction not in given.lower():
            flag = f"{given} ({direction})"
        panic = critical(r.item, r.value, r.unit)
        if panic:
            flag, abnormal = panic, True
        rows.append({
            "hours": record.hours_since_index(r.time) if pd.notna(r.time) else math.nan,
            "time": r.time.strftime("%Y-%m-%d %H:%M") if pd.notna(r.time) else "",
            "item": r.item,
            "value": r.value_text,
            "unit": display_unit(r.item, r.unit),
            "reference": _reference(r.ref_low, r.ref_high),
            "flag": flag,
            "abnormal": abnormal,
            "stamp": r.time,
        })
    out = pd.DataFrame(rows, columns=columns)
    out["critical"] = out["flag"].astype(str).str.startswith("critical")
    # stable on time only: results drawn together keep the lab's own (panel) order
    return out.sort_values("stamp", kind="stable", na_position="last").reset_index(drop=True)


def latest_per_item(rows: pd.DataFrame) -> pd.DataFrame:
    """The most recent result of each item (first-seen item order), with the result count and the
    previous value so a trend is visible without opening the timeline."""
    if rows.empty:
        return rows.assign(previous=pd.Series(dtype=object), n=pd.Series(dtype="int64"))
    order = {item: i for i, item in enumerate(rows["item"].drop_duplicates())}
    groups = rows.groupby("item", sort=False)
    latest = groups.tail(1).copy()
    previous = groups["value"].apply(lambda s: s.iloc[-2] if len(s) > 1 else "")
    latest["previous"] = latest["item"].map(previous).fillna("")
    latest["n"] = latest["item"].map(groups.size()).astype("int64")
    latest = latest.sort_values("item", key=lambda s: s.map(order), kind="stable")
    return latest.reset_index(drop=True)


def attribution_column(rows: pd.DataFrame, attribution: Mapping[Any, float] | None) -> pd.Series:
    """Per row weight from an attribution mapping keyed by item or (item, time); NaN where absent."""
    if not attribution:
        return pd.Series(math.nan, index=rows.index, dtype="float64")
    values = []
    for item, stamp in zip(rows["item"], rows["stamp"]):
        w = attribution.get((item, stamp), attribution.get(item))
        values.append(float(w) if w is not None else math.nan)
    return pd.Series(values, index=rows.index, dtype="float64")


def read_by_model(latest: pd.DataFrame, read: Mapping[str, Mapping[str, Any]] | None) -> pd.Series:
    """Per row of the latest-per-item table, the value the model read and its time when that is not the
    latest value shown ('137 at 01-02 08:00', month-day time); '' where they are the same or the model read none."""
    out = []
    for item, value, time in zip(latest["item"], latest["value"], latest["time"]):
        seen = (read or {}).get(item)
        if not seen:
            out.append("")
            continue
        seen_time = str(seen.get("time") or "")[:16].replace("T", " ")
        same = str(seen.get("value") or "") == str(value) and (not seen_time or seen_time == str(time)[:16])
        out.append("" if same else f"{seen.get('value') or '?'} at {seen_time[5:] or 'unknown time'}")
    return pd.Series(out, index=latest.index, dtype=object)


def style_labs(rows: pd.DataFrame, attribution: Mapping[Any, float] | None = None) -> Styler:
    """Styler for st.dataframe: abnormal rows red-tinted and bold (critical ones darker); with an attribution,
    an 'attribution' column right after the value: the effect in words, its cell shaded by the signed weight.

    Helper columns (`abnormal`, `stamp`, `critical`) are dropped; hours show one decimal ("+2.3 h"). Built lean
    because Streamlit re-marshals the whole Styler on every disease switch (issue 18: ~20 -> ~10 ms for a
    16-item table): only the shown columns, the words written into the data instead of a per-cell
    formatter, and every cell's style from one vectorised call instead of one call per row.
    """
    visible = [c for c in rows.columns if c not in ("abnormal", "stamp", "critical")]
    shown = rows[visible].copy()
    flags = [rows[c].to_numpy(dtype=bool) if c in rows else np.zeros(len(rows), dtype=bool)
             for c in ("critical", "abnormal")]
    base = np.where(flags[0], CRITICAL_BACKGROUND, np.where(flags[1], ABNORMAL_BACKGROUND, ""))
    css = pd.DataFrame(np.repeat(base[:, None].astype(object), len(visible), axis=1), index=shown.index,
                       columns=visible)
    if attribution:  # right after the value, where the eye already is
        weights = attribution_column(rows, attribution)
        scale = max_abs(weights)
        at = visible.index("value") + 1 if "value" in visible else len(visible)
        # words for the clinician; the exact figure is in the researchers' expander below the table
        shown.insert(at, "attribution", ["–" if math.isnan(w) else effect_words(w, scale) for w in weights])
        css.insert(at, "attribution", ["" if math.isnan(w) else f"background-color: {signed_rgba(w, scale)}"
                                       for w in weights])
    styler = shown.style.apply(lambda _: css, axis=None).hide(axis="index")
    if "hours" in shown:
        styler = styler.format({"hours": lambda h: "" if pd.isna(h) else f"{h:+.1f} h"})
    return styler
