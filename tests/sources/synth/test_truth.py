"""Planted evidence is really in the data, and truth.json describes it exactly."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth import DISEASES
from medfuse_core.sources.synth.phrases import KEYWORDS

BY_NAME = {d.name: d for d in DISEASES}


def _positives(cohort, key):
    name = next(d.name for d in DISEASES if d.key == key)
    return [(p, p.record.truth["evidence"][name]) for p in cohort if p.record.labels[name]]


def test_truth_is_json_and_matches_labels(cohort):
    for p in cohort:
        truth = p.record.truth
        assert json.loads(json.dumps(truth)) == truth
        assert truth["labels"] == p.record.labels
        positives = {name for name, v in truth["labels"].items() if v and name in BY_NAME}
        assert set(truth["evidence"]) == positives
        assert truth["modalities"] == {m: p.record.has(m) for m in MODALITIES}
        assert 0.0 <= truth["severity"] <= 1.0


def test_routes_planted_are_consistent(cohort):
    incomplete = 0
    for p in cohort:
        for name, ev in p.record.truth["evidence"].items():
            disease = BY_NAME[name]
            assert set(ev["routes_available"]) <= set(disease.modalities)
            assert set(ev["routes_planted"]) <= set(ev["routes_available"])
            assert set(ev["routes_planted"]) == {m for m in MODALITIES if ev[m]}
            assert all(p.record.has(m) for m in ev["routes_available"])
            if not disease.single_route and len(ev["routes_planted"]) < len(ev["routes_available"]):
                incomplete += 1
            if disease.single_route and ev["routes_available"]:
                assert ev["routes_planted"] == [disease.route], (p.record.patient_id, name)
    assert incomplete >= 10  # some shared-route positives miss one route


def test_shared_routes_usually_span_two_modalities(cohort):
    for d in [d for d in DISEASES if not d.single_route]:
        entries = [ev for p in cohort if p.record.labels[d.name] for ev in [p.record.truth["evidence"][d.name]]]
        multi = np.mean([len(ev["routes_planted"]) >= 2 for ev in entries])
        assert multi > 0.5, (d.key, multi)


def test_planted_labs_are_out_of_range_at_planted_times(cohort):
    checked = 0
    for p in cohort:
        t = p.record.labs.table
        for name, ev in p.record.truth["evidence"].items():
            for e in ev["labs"]:
                rows = t[(t["itemid"] == e["itemid"]) & (t["time"] == pd.Timestamp(e["time"]))]
                assert len(rows) == 1 and rows["item"].iloc[0] == e["item"]
                row = rows.iloc[0]
                assert row["value"] > row["ref_high"] or row["value"] < row["ref_low"], (name, e, row["value"])
                assert row["flag"] == "abnormal"
                checked += 1
    assert checked > 200


def test_each_labs_route_names_its_items(cohort):
    items = {"chf": {50963}, "renal": {50912, 51006}, "electrolytes": {50983, 50971}, "diabetes": {50931, 50852},
             "sepsis": {50813, 51301}, "pneumonia": {51301}}
    for key, allowed in items.items():
        for _, ev in _positives(cohort, key):
            assert {e["itemid"] for e in ev["labs"]} <= allowed


def _samples(record, channel, h0, h1):
    t = record.vitals.table
    rows = t[t["channel"] == channel]
    hours = record.hours_since_index(rows["time"])
    return rows["value"][(hours >= h0 - 1e-6) & (hours <= h1 + 1e-6)]


@pytest.mark.parametrize("key,channel,low,high", [
    ("dysrhythmia", "Heart Rate", 100, None),
    ("sepsis", "Heart Rate", 100, None),
    ("sepsis", "Mean blood pressure", None, 65),
    ("sepsis", "Temperature", 38.0, None),
    ("pneumonia", "Temperature", 38.0, None),
    ("hypertension", "Systolic blood pressure", 140, None),
    ("hypertension", "Diastolic blood pressure", 75, None),
    ("hypertension", "Mean blood pressure", 95, None),  # charted from SBP and DBP: the same evidence
    ("sepsis", "Systolic blood pressure", None, 100),
    ("diabetes", "Glucose", 160, None),
])
def test_planted_vitals_are_abnormal_in_planted_hours(cohort, key, channel, low, high):
    windows = 0
    for p, ev in _positives(cohort, key):
        for e in [e for e in ev["vitals"] if e["channel"] == channel]:
            values = _samples(p.record, channel, *e["hours"])
            assert len(values) > 0
            mean = values.mean()
            assert (low is None or mean > low) and (high is None or mean < high), (p.record.patient_id, e, mean)
            windows += 1
    assert windows >= 5


def test_vitals_are_normal_without_planted_disease(cohort):
    hr, sbp = [], []
    for p in cohort:
        labels = {d.key: p.record.labels[d.name] for d in DISEASES}
        t = p.record.vitals.table
        if not (labels["sepsis"] or labels["dysrhythmia"]):
            hr += t.loc[t["channel"] == "Heart Rate", "value"].tolist()
        if not (labels["hypertension"] or labels["sepsis"]):
            sbp += t.loc[t["channel"] == "Systolic blood pressure", "value"].tolist()
    assert np.mean(hr) < 90 and np.quantile(hr, 0.99) < 100
    assert np.mean(sbp) < 130 and np.quantile(sbp, 0.99) < 140


def test_dysrhythmia_heart_rate_is_irregular(cohort):
    jumps = []
    for p, ev in _positives(cohort, "dysrhythmia"):
        for e in ev["vitals"]:
            values = _samples(p.record, "Heart Rate", *e["hours"]).to_numpy()
            if len(values) >= 4:
                jumps.append(np.abs(np.diff(values)).mean())
    assert len(jumps) >= 5 and np.median(jumps) > 12


def test_image_regions_differ_from_surroundings(cohort):
    diffs = []
    for p in cohort:
        for name, ev in p.record.truth["evidence"].items():
            for e in ev["image"]:
                index = int(re.search(r"image_(\d+)", e["file"]).group(1))
                pixels = p.record.images[index].pixels
                mask = p.masks[e["mask"]]
                assert mask.shape == pixels.shape and mask.dtype == bool and mask.any()
                r0, c0, r1, c1 = e["box"]
                rows, cols = np.nonzero(mask)
                assert rows.min() >= r0 and rows.max() < r1 and cols.min() >= c0 and cols.max() < c1
                pad = max(4, pixels.shape[0] // 16)
                ring = np.zeros_like(mask)
                ring[max(0, r0 - pad):r1 + pad, max(0, c0 - pad):c1 + pad] = True
                ring &= ~mask
                if e["finding"] == "congestion":  # diffuse perihilar haze: checked against its twin in test_routes
                    continue
                diffs.append(abs(float(pixels[mask].mean()) - float(pixels[ring].mean())))
    # A ring around the box mixes dark lung with bright heart or abdomen, so now and then its mean
    # lands on the finding's own grey level by chance; the per-film check against the same anatomy
    # without the finding is in test_chest.py. Here: the regions stand out across the cohort.
    diffs = np.array(diffs)
    assert len(diffs) >= 20 and np.median(diffs) > 0.05 and (diffs > 0.01).mean() > 0.9


def test_image_findings_belong_to_their_disease(cohort):
    allowed = {"chf": {"cardiomegaly", "congestion"}, "pneumonia": {"focal_opacity"},
               "pleural": {"effusion", "pneumothorax"}}
    for key, findings in allowed.items():
        for _, ev in _positives(cohort, key):
            assert {e["finding"] for e in ev["image"]} <= findings


def test_note_spans_index_the_text_and_name_the_disease(cohort):
    checked = 0
    for p in cohort:
        texts = {f"notes/note_{i:02d}.txt": n.text for i, n in enumerate(p.record.notes)}
        for name, ev in p.record.truth["evidence"].items():
            words = KEYWORDS.get(BY_NAME[name].key, ())
            if "notes" not in BY_NAME[name].modalities:
                assert ev["notes"] == []
            for e in ev["notes"]:
                text = texts[e["file"]]
                assert 0 <= e["start"] < e["end"] <= len(text)
                assert text[e["start"]:e["end"]] == e["text"]
                assert any(w.lower() in e["text"].lower() for w in words), (name, e["text"])
                checked += 1
    assert checked > 100


_NEGATION = re.compile(r"\b(no|denies|ruled out|does not|low suspicion)\b", re.I)


def test_negated_and_family_mentions_are_never_evidence(cohort):
    n_negated = n_family = 0
    for p in cohort:
        truth = p.record.truth
        spans = [(e["file"], e["start"], e["end"]) for ev in truth["evidence"].values() for e in ev["notes"]]
        texts = {f"notes/note_{i:02d}.txt": n.text for i, n in enumerate(p.record.notes)}
        for d in truth["distractors"]:
            assert texts[d["file"]][d["start"]:d["end"]] == d["text"]
            for f, a, b in spans:
                assert f != d["file"] or b <= d["start"] or a >= d["end"], (d, (f, a, b))
            if d["kind"] == "negated":
                assert _NEGATION.search(d["text"])
                assert p.record.labels[d["disease"]] == 0
                n_negated += 1
            else:
                assert d["kind"] == "family" and re.match(r"(Mother|Father|Sister|Brother)\b", d["text"])
                n_family += 1
    assert n_negated >= 20 and n_family >= 20
