"""Synthetic bedside charting on the 17 mimic3-benchmarks channels, with planted vital-sign routes.

Charting is hourly-ish with jitter and gaps; temperature and GCS about every 4 h; fingerstick
glucose only for some stays; GCS as the categorical strings of CHARTEVENTS ("4 Spontaneously" in
MetaVision style or "Spontaneously" in CareVue style). Planted effects: fast irregular heart rate
(dysrhythmia), tachycardia + hypotension + fever (sepsis), fever (pneumonia), systolic hypertension,
high fingerstick glucose (diabetes). Acuity (severity) lowers GCS and SpO2 and raises the
respiratory rate; it carries mortality, not a disease label.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medfuse_core.record import Vitals
from medfuse_core.sources.synth.evidence import VitalEvidence
from medfuse_core.sources.synth.plan import PatientPlan, Window
from medfuse_core.sources.synth.realism import toward
from medfuse_core.sources.vital_channels import channel_spec

HR, SBP, DBP, MBP = "Heart Rate", "Systolic blood pressure", "Diastolic blood pressure", "Mean blood pressure"
RR, SPO2, TEMP, GLUCOSE = "Respiratory rate", "Oxygen saturation", "Temperature", "Glucose"
GCS_EYE, GCS_MOTOR = "Glascow coma scale eye opening", "Glascow coma scale motor response"
GCS_VERBAL, GCS_TOTAL = "Glascow coma scale verbal response", "Glascow coma scale total"

_EYE = {4: ("4 Spontaneously", "Spontaneously"), 3: ("3 To speech", "To Speech"), 2: ("2 To pain", "To Pain")}
_VERBAL = {5: ("5 Oriented", "Oriented"), 4: ("4 Confused", "Confused"), 3: ("3 Inapprop words", "Inappropriate Words")}
_MOTOR = {6: ("6 Obeys Commands", "Obeys Commands"), 5: ("5 Localizes Pain", "Localizes Pain")}


def _inside(t: np.ndarray, windows: list[Window]) -> np.ndarray:
    out = np.zeros(len(t), dtype=bool)
    for a, b in windows:
        out |= (t >= a) & (t <= b)
    return out


def _schedule(rng: np.random.Generator, end: float) -> np.ndarray:
    """Hourly-ish chart times with jitter and the odd 2-5 h gap."""
    steps = rng.uniform(0.75, 1.25, size=int(end * 1.5) + 4)
    gaps = rng.random(len(steps)) < 0.05
    steps[gaps] += rng.uniform(1.0, 4.0, size=int(gaps.sum()))
    t = float(rng.uniform(0.05, 1.0)) + np.concatenate([[0.0], np.cumsum(steps)])
    return t[t <= end]


def _charted_times(rng: np.random.Generator, plan: PatientPlan) -> np.ndarray:
    """The schedule, plus alarm-prompted charting inside planted windows that a gap swallowed."""
    t = _schedule(rng, plan.end_hours)
    extra = []
    for key in ("dysrhythmia", "sepsis", "hypertension"):
        if plan.plants(key, "vitals"):
            for a, b in plan.window(key):
                if ((t >= a) & (t <= b)).sum() < 2:
                    extra += [a + (b - a) * f for f in (0.3, 0.7)]
    return np.unique(np.concatenate([t, extra])) if extra else t


def _smooth_noise(rng: np.random.Generator, n: int, phi: float = 0.7) -> np.ndarray:
    e = rng.standard_normal(n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + np.sqrt(1 - phi * phi) * e[i]
        out[i] = acc
    return out


class _Chart:
    """Collects rows and the planted samples of each (disease, channel)."""

    def __init__(self, plan: PatientPlan):
        self.plan = plan
        self.rows: list[tuple[float, str, float, str]] = []
        self.planted: dict[tuple[str, str, float], list[float]] = {}  # (disease, channel, window start)

    def add(self, t: np.ndarray, channel: str, values: np.ndarray, texts: list[str]) -> None:
        self.rows.extend(zip(t.tolist(), [channel] * len(t), values.tolist(), texts))

    def mark(self, disease: str, channel: str, t: np.ndarray, window: float = 0.0) -> None:
        if len(t):
            self.planted.setdefault((disease, channel, window), []).extend(t.tolist())

    def keep_only(self, channel: str, written: set[float]) -> None:
        """Planted samples that were not charted are not evidence."""
        for key in [k for k in self.planted if k[1] == channel]:
            self.planted[key] = [x for x in self.planted[key] if x in written]


def _ints(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    r = np.round(values)
    return r.astype(float), [str(int(v)) for v in r]


def _hemodynamics(rng: np.random.Generator, plan: PatientPlan, t: np.ndarray, chart: _Chart) -> None:
    n = len(t)
    sev = plan.conditions.severity
    hr = np.clip(rng.normal(80, 7), 60, 88) + 4.0 * _smooth_noise(rng, n)
    sbp = np.clip(rng.normal(119, 8), 100, 128) + 6.0 * _smooth_noise(rng, n)
    dbp = np.clip(rng.normal(63, 5), 52, 72) + 4.0 * _smooth_noise(rng, n)
    temp = rng.normal(36.8, 0.2) + 0.25 * _smooth_noise(rng, n)
    rr = rng.normal(17, 2) + 4.0 * sev + 2.0 * _smooth_noise(rng, n)
    spo2 = rng.normal(97.5, 1.0) - 3.0 * sev + 1.0 * _smooth_noise(rng, n)
    hr, sbp, dbp = np.clip(hr, 52, 99), np.clip(sbp, 90, 138), np.clip(dbp, 42, 84)
    temp = np.clip(temp, 36.0, 37.6)

    if plan.plants("hypertension", "vitals"):
        on = _inside(t, plan.window("hypertension"))
        k = int(on.sum())
        s = plan.strength("hypertension")
        sbp[on] = toward(sbp[on], rng.normal(158, 5) + 7.0 * _smooth_noise(rng, k), s)
        dbp[on] = toward(dbp[on], rng.normal(88, 3) + 4.0 * _smooth_noise(rng, k), s)
        for a, b in plan.window("hypertension"):
            # the mean pressure is charted from SBP and DBP (below), so it is raised by the same evidence
            for channel in (SBP, DBP, MBP):
                chart.mark("hypertension", channel, t[(t >= a) & (t <= b)], a)
    if plan.plants("sepsis", "vitals"):
        on = _inside(t, plan.window("sepsis"))
        k = int(on.sum())
        s = plan.strength("sepsis")
        hr[on] = toward(hr[on], rng.normal(114, 4) + 5.0 * rng.standard_normal(k), s)
        sbp[on] = toward(sbp[on], rng.normal(88, 3) + 4.0 * rng.standard_normal(k), s)
        dbp[on] = toward(dbp[on], rng.normal(46, 2) + 3.0 * rng.standard_normal(k), s)
        temp[on] = toward(temp[on], rng.uniform(38.4, 39.3) + 0.2 * rng.standard_normal(k), s)
        for channel in (HR, SBP, DBP, MBP, TEMP):
            chart.mark("sepsis", channel, t[on])
    if plan.plants("pneumonia", "vitals"):
        on = _inside(t, plan.window("pneumonia"))
        fever = rng.uniform(38.2, 39.0) + 0.2 * rng.standard_normal(int(on.sum()))
        temp[on] = np.maximum(temp[on], toward(temp[on], fever, plan.strength("pneumonia")))
        chart.mark("pneumonia", TEMP, t[on])
    if plan.plants("dysrhythmia", "vitals"):
        for a, b in plan.window("dysrhythmia"):
            on = (t >= a) & (t <= b)
            k = int(on.sum())
            s = plan.strength("dysrhythmia")
            if rng.random() < 0.75:  # atrial fibrillation with rapid ventricular response: irregular
                hr[on] = toward(hr[on], rng.uniform(104, 165, size=k), s)
            else:  # SVT: fast and regular
                hr[on] = toward(hr[on], rng.normal(150, 8) + 3.0 * rng.standard_normal(k), s)
            chart.mark("dysrhythmia", HR, t[on], a)

    mbp = dbp + (sbp - dbp) / 3.0
    keep = rng.random((5, n)) > 0.03  # a reading is skipped now and then
    for channel, values, mask in ((HR, hr, keep[0]), (SBP, sbp, keep[1]), (DBP, dbp, keep[1]),
                                  (MBP, mbp, keep[1] & keep[2]), (RR, rr, keep[3]), (SPO2, np.minimum(spo2, 100), keep[4])):
        v, texts = _ints(values[mask])
        chart.add(t[mask], channel, v, texts)
    chart.keep_only(HR, set(t[keep[0]].tolist()))
    chart.keep_only(SBP, set(t[keep[1]].tolist()))
    chart.keep_only(DBP, set(t[keep[1]].tolist()))
    chart.keep_only(MBP, set(t[keep[1] & keep[2]].tolist()))

    every = t[:: 4] if n else t
    idx = np.arange(0, n, 4)
    fahrenheit = rng.random() < 0.2  # CareVue-era stays chart temperature in Fahrenheit
    temps = temp[idx]
    if fahrenheit:
        texts = [f"{c * 9 / 5 + 32:.1f}" for c in temps]
        values = np.array([(float(s) - 32.0) * 5.0 / 9.0 for s in texts])
    else:
        texts = [f"{c:.1f}" for c in temps]
        values = np.array([float(s) for s in texts])
    chart.add(every, TEMP, values, texts)
    chart.keep_only(TEMP, set(every.tolist()))


def _gcs(rng: np.random.Generator, plan: PatientPlan, t: np.ndarray, chart: _Chart) -> None:
    times = t[1::4]
    style = int(rng.random() < 0.4)  # 0 MetaVision "4 Spontaneously", 1 CareVue "Spontaneously"
    sev = plan.conditions.severity
    for when in times:
        drop = rng.random() < sev * 0.8
        eye = 3 if drop and rng.random() < 0.6 else 4
        verbal = 4 if drop else 5
        motor = 5 if drop and rng.random() < 0.3 else 6
        if drop and sev > 0.8 and rng.random() < 0.5:
            eye, verbal = 2, 3
        for channel, score, names in ((GCS_EYE, eye, _EYE), (GCS_VERBAL, verbal, _VERBAL), (GCS_MOTOR, motor, _MOTOR)):
            chart.rows.append((float(when), channel, float(score), names[score][style]))
        chart.rows.append((float(when), GCS_TOTAL, float(eye + verbal + motor), str(eye + verbal + motor)))


def _occasional(rng: np.random.Generator, plan: PatientPlan, t: np.ndarray, chart: _Chart) -> None:
    """Fingerstick glucose, FiO2, weight, height, capillary refill, pH."""
    fingerstick = plan.plants("diabetes", "vitals") or rng.random() < 0.35
    if fingerstick and len(t):
        times = t[2::5]
        glucose = rng.normal(118, 18, size=len(times))
        if plan.plants("diabetes", "vitals"):
            glucose = toward(glucose, rng.uniform(170, 330, size=len(times)), plan.strength("diabetes"))
            chart.mark("diabetes", GLUCOSE, times)
        v, texts = _ints(glucose)
        chart.add(times, GLUCOSE, v, texts)
    if rng.random() < 0.3 and len(t):  # on supplemental oxygen / ventilated
        times = t[::4]
        fio2 = np.round(rng.choice([0.3, 0.35, 0.4, 0.5, 0.6], size=len(times)), 2)
        chart.add(times, "Fraction inspired oxygen", fio2, [f"{x:.2f}" for x in fio2])
        ph = np.round(rng.normal(7.39, 0.03, size=len(times[::2])), 2)
        chart.add(times[::2], "pH", ph, [f"{x:.2f}" for x in ph])
    if len(t):
        weight = round(float(rng.normal(82 if plan.conditions.sex == "M" else 70, 14)), 1)
        chart.add(t[:1], "Weight", np.array([weight]), [f"{weight:.1f}"])
        if rng.random() < 0.5:
            height = float(round(rng.normal(176 if plan.conditions.sex == "M" else 162, 7)))
            chart.add(t[:1], "Height", np.array([height]), [str(int(height))])
    if rng.random() < 0.3:
        times = t[3::8]
        crr = (rng.random(len(times)) < 0.1).astype(float)
        chart.add(times, "Capillary refill rate", crr, [f"{x:.1f}" for x in crr])


def _hours(times: list[float]) -> tuple[float, float]:
    """First and last planted sample, rounded outwards to 0.001 h so the range still holds them."""
    return (math.floor(min(times) * 1000) / 1000, math.ceil(max(times) * 1000) / 1000)


def make_vitals(rng: np.random.Generator, plan: PatientPlan) -> tuple[Vitals, list[VitalEvidence]]:
    """The stay's vitals table and, per disease and channel, the planted hours."""
    if not plan.available["vitals"]:
        return Vitals(), []
    t = np.round(_charted_times(rng, plan) * 60.0) / 60.0  # whole minutes
    chart = _Chart(plan)
    _hemodynamics(rng, plan, t, chart)
    _gcs(rng, plan, t, chart)
    _occasional(rng, plan, t, chart)
    hours, channels, values, texts = zip(*chart.rows) if chart.rows else ((), (), (), ())
    order = np.lexsort((np.array([_channel_rank(c) for c in channels]), np.array(hours)))
    minutes = np.round(np.array(hours)[order] * 60).astype("int64")
    table = pd.DataFrame({
        "time": plan.index_time + pd.to_timedelta(minutes, unit="min"),
        "channel": np.array(channels, dtype=object)[order],
        "value": np.array(values, dtype=float)[order],
        "value_text": np.array(texts, dtype=object)[order],
    })
    evidence = [VitalEvidence(d, ch, _hours(times)) for (d, ch, _), times in sorted(chart.planted.items()) if times]
    return Vitals(table), evidence


_RANK = {name: i for i, name in enumerate(channel_spec())}


def _channel_rank(name: str) -> int:
    return _RANK.get(name, len(_RANK))
