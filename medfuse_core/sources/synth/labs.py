"""Synthetic lab draws: irregular blood draws over the window, planted abnormalities, real-world text.

A stay has a blood draw every 6-24 h (chemistry and blood count nearly always, blood gas, BNP and
HbA1c only sometimes). Planted values are pushed clearly outside the reference range and are
reported as evidence only where the written value is really outside it. Values are written the way
MIMIC writes them: rounded as reported, censored at reporting limits (">70000"), and now and then a
word instead of a number ("HEMOLYZED") on rows that carry no evidence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medfuse_core.record import Labs
from medfuse_core.sources.synth.evidence import LabEvidence
from medfuse_core.sources.synth.lab_items import LAB_BY_KEY, LAB_ITEMS, REPORT_LIMITS, LabItem
from medfuse_core.sources.synth.plan import PatientPlan, Window
from medfuse_core.sources.synth.realism import toward

# Text that replaces a value now and then, by item (probability, text).
_WORDS = {
    "potassium": (0.03, "HEMOLYZED"),
    "hemoglobin": (0.005, "UNABLE TO REPORT"),
    "calcium": (0.005, "UNABLE TO REPORT DUE TO CONTAMINATION"),
}


def _inside(t: float, windows: list[Window]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _draw_times(rng: np.random.Generator, plan: PatientPlan) -> list[float]:
    """Irregular draws; one more is added inside any planted window that the schedule missed."""
    times = [float(rng.uniform(0.2, 2.0))]
    while True:
        nxt = times[-1] + float(rng.uniform(6.0, 24.0))
        if nxt > plan.end_hours:
            break
        times.append(nxt)
    for key in ("sepsis", "pneumonia"):
        for a, b in plan.window(key) if plan.plants(key, "labs") else []:
            if not any(a <= t <= b for t in times):
                times.append(float(rng.uniform(a, min(b, plan.end_hours))))
    if plan.plants("renal", "labs") and times[-1] < plan.end_hours - 14.0:
        times.append(float(rng.uniform(plan.end_hours - 6.0, plan.end_hours)))
    return sorted(times)


def _panels(rng: np.random.Generator, plan: PatientPlan, k: int, t: float) -> list[str]:
    """Which items are measured in draw `k` at hour `t`."""
    keys = [item.key for item in LAB_ITEMS if item.panel == "chem"]
    if rng.random() < 0.92:
        keys += [item.key for item in LAB_ITEMS if item.panel == "cbc"]
    if rng.random() < 0.6:
        keys += ["magnesium", "calcium", "phosphate"]
    septic = plan.plants("sepsis", "labs") and _inside(t, plan.window("sepsis"))
    if septic or rng.random() < 0.25:
        keys += ["lactate", "ph"]
    if k == 0 and (plan.plants("chf", "labs") or rng.random() < 0.3):
        keys.append("ntprobnp")
    if k == 1 and plan.plants("chf", "labs") and rng.random() < 0.4:
        keys.append("ntprobnp")
    if k == 0 and (plan.plants("diabetes", "labs") or rng.random() < 0.25):
        keys.append("hba1c")
    if k == 0 and rng.random() < 0.5:
        keys.append("albumin")
    if plan.plants("sepsis", "labs") and septic and "wbc" not in keys:
        keys += ["wbc"]
    if plan.plants("pneumonia", "labs") and _inside(t, plan.window("pneumonia")) and "wbc" not in keys:
        keys += ["wbc"]
    order = {item.key: i for i, item in enumerate(LAB_ITEMS)}
    return sorted(set(keys), key=order.__getitem__)


def _typical(rng: np.random.Generator, item: LabItem, baseline: dict[str, float]) -> float:
    mean = baseline.get(item.key)
    if mean is None:
        mean = item.typical[0] + 0.5 * item.typical[1] * float(rng.standard_normal())
        baseline[item.key] = mean
    return mean + 0.5 * item.typical[1] * float(rng.standard_normal())


def _planted_value(rng: np.random.Generator, plan: PatientPlan, key: str, t: float,
                   state: dict) -> list[tuple[str, float]]:
    """(disease, value) pairs that the plan forces on item `key` at hour `t`; empty if none."""
    out: list[tuple[str, float]] = []
    if key == "ntprobnp" and plan.plants("chf", "labs"):
        out.append(("chf", float(np.exp(rng.uniform(np.log(1800.0), np.log(90000.0))))))
    if key == "wbc":
        if plan.plants("sepsis", "labs") and _inside(t, plan.window("sepsis")):
            out.append(("sepsis", float(rng.uniform(13.5, 26.0))))
        if plan.plants("pneumonia", "labs") and _inside(t, plan.window("pneumonia")):
            out.append(("pneumonia", float(rng.uniform(12.5, 20.0))))
    if key == "lactate" and plan.plants("sepsis", "labs") and _inside(t, plan.window("sepsis")):
        out.append(("sepsis", float(rng.uniform(2.6, 7.5))))
    if key == "glucose" and plan.plants("diabetes", "labs"):
        out.append(("diabetes", float(rng.uniform(165.0, 340.0))))
    if key == "hba1c" and plan.plants("diabetes", "labs"):
        out.append(("diabetes", float(rng.uniform(7.0, 11.5))))
    if key in ("creatinine", "bun") and plan.plants("renal", "labs"):
        onset = plan.window("renal")[0][0]
        ramp, peak = state.setdefault(("renal", key), (
            float(rng.uniform(6.0, 18.0)),
            float(rng.uniform(2.0, 4.8)) if key == "creatinine" else float(rng.uniform(38.0, 95.0)),
        ))
        base = 0.85 if key == "creatinine" else 14.0
        frac = min(1.0, max(0.0, (t - onset) / ramp))
        out.append(("renal", base + (peak - base) * frac))
    if key in ("sodium", "potassium") and plan.plants("electrolytes", "labs"):
        kinds = state.setdefault("electrolyte_kinds", _electrolyte_kinds(rng))
        if _inside(t, plan.window("electrolytes")):
            ranges = {"hypo_na": (118.0, 129.0), "hyper_na": (149.0, 158.0),
                      "hypo_k": (2.4, 2.9), "hyper_k": (5.7, 6.9)}
            suffix = "_na" if key == "sodium" else "_k"
            for kind in kinds:
                if kind.endswith(suffix):
                    out.append(("electrolytes", float(rng.uniform(*ranges[kind]))))
    return out


def _electrolyte_kinds(rng: np.random.Generator) -> tuple[str, ...]:
    na = ["hypo_na", "hyper_na"][int(rng.random() < 0.25)]
    k = ["hypo_k", "hyper_k"][int(rng.random() < 0.4)]
    pick = rng.random()
    return (na,) if pick < 0.4 else (k,) if pick < 0.8 else (na, k)


def _text(rng: np.random.Generator, item: LabItem, value: float, evidence: bool) -> tuple[float, str, str]:
    """(parsed value, value text, censoring) as the lab system reports it."""
    low, high = REPORT_LIMITS.get(item.key, (None, None))
    if high is not None and value > high:
        return high, f">{item.fmt(high)}", "above"
    if low is not None and value < low:
        return low, f"<{item.fmt(low)}", "below"
    if not evidence and item.key in _WORDS and rng.random() < _WORDS[item.key][0]:
        return math.nan, _WORDS[item.key][1], ""
    text = item.fmt(value)
    return float(text), text, ""


def make_labs(rng: np.random.Generator, plan: PatientPlan) -> tuple[Labs, list[LabEvidence]]:
    """The stay's lab table and the rows that carry planted evidence."""
    if not plan.available["labs"]:
        return Labs(), []
    rows: list[dict] = []
    evidence: list[LabEvidence] = []
    baseline: dict[str, float] = {}
    state: dict = {}
    severity = plan.conditions.severity
    for k, t in enumerate(_draw_times(rng, plan)):
        when = (plan.index_time + pd.Timedelta(minutes=round(t * 60))).floor("min")
        for key in _panels(rng, plan, k, t):
            item = LAB_BY_KEY[key]
            value = _typical(rng, item, baseline)
            if key == "albumin":
                value -= 1.0 * severity
            planted = _planted_value(rng, plan, key, t, state)
            if planted:  # only WBC can be pushed by two diseases at once, both upwards
                # a weak positive or a mimic moves the value only part of the way (strength 1: all of it)
                value = max(toward(value, v, plan.strength(d)) for d, v in planted)
            value = max(value, 0.0)
            parsed, text, censored = _text(rng, item, value, bool(planted))
            flag = "" if math.isnan(parsed) else item.flag(parsed)
            rows.append({"time": when, "itemid": item.itemid, "item": item.name, "value": parsed,
                         "value_text": text, "censored": censored, "unit": item.unit,
                         "ref_low": float(item.ref_low), "ref_high": float(item.ref_high), "flag": flag})
            if flag:  # evidence only where the reported value is really out of range
                evidence.extend(LabEvidence(d, item.itemid, item.name, when) for d, _ in planted)
    return Labs(pd.DataFrame(rows)), evidence
