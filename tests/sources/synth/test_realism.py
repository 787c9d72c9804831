"""The ward realism setting: MIMIC-like prevalences, weak and absent evidence, mimics, label noise.

The clean setting must stay the textbook it was (every other synthetic test and the faithfulness
benchmark stand on it); the ward setting must do what realism.py says and say so in truth.json.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medfuse_core.provenance import cohort_command
from medfuse_core.sources.synth import CLEAN, LABEL_NAMES, WARD, generate_cohort, realism_named, synthesize
from medfuse_core.sources.synth.diseases import DISEASE_BY_KEY, DISEASES, sample_conditions
from medfuse_core.sources.synth.labs import make_labs
from medfuse_core.sources.synth.plan import make_plan
from medfuse_core.sources.synth.realism import WARD_MORTALITY, WARD_PREVALENCE, Deviations, draw_deviations


def test_clean_is_the_default_and_draws_nothing_extra() -> None:
    for i in range(6):
        default, clean = synthesize(5, i, image_size=64).record, synthesize(5, i, image_size=64, realism=CLEAN).record
        assert default.labels == clean.labels and default.truth == clean.truth
        assert default.labs.table.equals(clean.labs.table) and [n.text for n in default.notes] == [n.text for n in clean.notes]
        assert "realism" not in default.truth and default.source == "synthetic:synth-1.1"


def test_ward_keeps_the_patient_and_changes_only_what_a_ward_changes() -> None:
    """Same seed and index: the same person (age, sex, modalities present), another disease world."""
    changed = 0
    for i in range(20):
        clean, ward = synthesize(5, i, image_size=32).record, synthesize(5, i, image_size=32, realism=WARD).record
        assert (clean.age, clean.sex, clean.index_time) == (ward.age, ward.sex, ward.index_time)
        assert {m: clean.has(m) for m in ("labs", "notes", "vitals", "image")} == \
               {m: ward.has(m) for m in ("labs", "notes", "vitals", "image")}
        assert ward.truth["realism"] == "ward" and ward.source == "synthetic:synth-1.1:ward"
        changed += clean.labels != ward.labels
    assert changed >= 5


def test_ward_prevalence_is_the_real_mimic_demos(shared_data: Path, tmp_path: Path) -> None:
    """WARD_PREVALENCE and WARD_MORTALITY are the pooled label rates of the two real demo tables as our
    importers label them; recomputed here, so a changed importer or table cannot leave them stale."""
    from medfuse_core.sources.importer import import_mimic3, import_mimic4

    import_mimic3(shared_data / "mimic-iii-demo", tmp_path / "m3", progress=False)
    import_mimic4(shared_data / "mimic-iv-demo", tmp_path / "m4", progress=False)
    counts, n = np.zeros(len(LABEL_NAMES)), 0
    for patient in sorted((tmp_path / "m3").glob("*/patient.json")) + sorted((tmp_path / "m4").glob("*/patient.json")):
        labels = json.loads(patient.read_text()).get("labels") or {}
        if labels:
            n += 1
            counts += [int(labels.get(name) or 0) for name in LABEL_NAMES]
    assert n == 404
    measured = dict(zip(LABEL_NAMES, counts / n))
    for key, prevalence in WARD_PREVALENCE.items():
        assert abs(measured[DISEASE_BY_KEY[key].name] - prevalence) <= 0.005 + 1e-9, key
    assert abs(measured["In-hospital mortality"] - WARD_MORTALITY) <= 0.005 + 1e-9


def test_ward_conditions_and_coded_labels_match_their_targets() -> None:
    """20,000 latent patients: condition prevalence within 0.015 of MIMIC's, mortality within 0.015,
    and the coded labels shifted by exactly the coding noise (uncoded / overcoded rates)."""
    rng, noise_rng = np.random.default_rng(0), np.random.default_rng(1)
    keys = tuple(d.key for d in DISEASES)
    n = 20000
    has, coded, died = np.zeros(len(keys)), np.zeros(len(keys)), 0
    for _ in range(n):
        conditions = sample_conditions(rng, WARD)
        deviations = draw_deviations(noise_rng, WARD, conditions.diseases, keys)
        died += conditions.died
        for k, key in enumerate(keys):
            has[k] += conditions.has(key)
            coded[k] += (conditions.has(key) and key not in deviations.uncoded) or key in deviations.overcoded
    for k, key in enumerate(keys):
        p = WARD_PREVALENCE[key]
        assert abs(has[k] / n - p) < 0.015, key
        expected = p * (1 - WARD.p_uncoded) + (1 - p) * WARD.p_overcoded
        assert abs(coded[k] / n - expected) < 0.015, key
    assert abs(died / n - WARD_MORTALITY) < 0.015


def test_ward_comorbidity_is_stronger_than_clean() -> None:
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    clean = np.array([[c.has(d.key) for d in DISEASES] for c in (sample_conditions(rng_a, CLEAN) for _ in range(6000))])
    ward = np.array([[c.has(d.key) for d in DISEASES] for c in (sample_conditions(rng_b, WARD) for _ in range(6000))])
    chf, htn = DISEASES.index(DISEASE_BY_KEY["chf"]), DISEASES.index(DISEASE_BY_KEY["hypertension"])
    corr = lambda m: np.corrcoef(m[:, chf], m[:, htn])[0, 1]  # noqa: E731 - two cardiometabolic diseases
    assert corr(ward) > corr(clean) + 0.03


def test_deviation_shares_are_those_of_the_setting() -> None:
    rng = np.random.default_rng(0)
    keys = tuple(d.key for d in DISEASES)
    absent = weak = positives = mimics = negatives = 0
    for _ in range(4000):
        positive = frozenset(k for k in keys if rng.random() < 0.3)
        d = draw_deviations(rng, WARD, positive, keys)
        positives += len(positive)
        negatives += len(keys) - len(positive)
        absent += sum(1 for k in positive if d.strength.get(k) == 0.0)
        weak += sum(1 for k in positive if 0.0 < d.strength.get(k, 1.0) < 1.0)
        mimics += len(d.mimics)
        assert all(WARD.weak_strength[0] <= s <= WARD.weak_strength[1] for s in d.mimics.values())
        assert not set(d.mimics) & positive and not d.uncoded - positive and not d.overcoded & positive
    assert abs(absent / positives - WARD.p_absent) < 0.02
    assert abs(weak / positives - WARD.p_weak) < 0.02
    assert abs(mimics / negatives - WARD.p_mimic) < 0.01
    assert draw_deviations(rng, CLEAN, frozenset(keys), keys) == Deviations()


def test_truth_says_what_the_ward_did() -> None:
    """Absent positives have no planted route, weak ones say their strength, mimics are evidence of a
    disease the patient does not have (in one route, never under `evidence`), coded labels follow the
    recorded coding noise."""
    seen = {"absent": 0, "weak": 0, "mimic": 0, "uncoded": 0, "overcoded": 0}
    names = {d.name: d for d in DISEASES}
    for i in range(80):
        record = synthesize(9, i, image_size=32, realism=WARD).record
        truth = record.truth
        for name, entry in truth["evidence"].items():
            if entry["evidence_strength"] == 0.0:
                seen["absent"] += 1
                assert entry["routes_planted"] == [] and not any(entry[m] for m in ("labs", "notes", "vitals", "image"))
            elif entry["evidence_strength"] < 1.0:
                seen["weak"] += 1
        for name, entry in truth["mimics"].items():
            seen["mimic"] += 1
            assert name not in truth["evidence"] and len(entry["routes_planted"]) <= 1
            assert set(entry["routes_planted"]) <= set(names[name].modalities)
        for name in truth["label_noise"]["uncoded"]:
            seen["uncoded"] += 1
            assert name in truth["evidence"] and record.labels[name] == 0
        for name in truth["label_noise"]["overcoded"]:
            seen["overcoded"] += 1
            assert name not in truth["evidence"] and record.labels[name] == 1
        for name in names:
            coded = (name in truth["evidence"]) != (name in truth["label_noise"]["uncoded"] + truth["label_noise"]["overcoded"])
            assert record.labels[name] == int(coded), (i, name)
    assert all(v > 0 for v in seen.values()), seen


def test_weak_evidence_moves_a_lab_only_part_of_the_way() -> None:
    """The same stay drawn with renal failure at full and at half strength: the creatinine peak of the
    weak one lies between the patient's typical level and the full one's, and nearer the typical."""
    for seed in range(40):
        plan = make_plan(np.random.default_rng(seed), seed)
        if not (plan.plants("renal", "labs") and plan.available["labs"]):
            continue
        weak = replace(plan, deviations=Deviations(strength={"renal": 0.5}))
        creatinine = lambda p: make_labs(np.random.default_rng(99), p)[0].table  # noqa: E731
        full_t, weak_t = creatinine(plan), creatinine(weak)
        rows = full_t["item"] == "Creatinine"
        full_v, weak_v = full_t.loc[rows, "value"].to_numpy(), weak_t.loc[rows, "value"].to_numpy()
        assert (weak_v <= full_v + 1e-9).all() and weak_v.max() < full_v.max()
        return
    pytest.fail("no seed gave a renal-failure patient with labs")


def test_cohort_json_and_its_command_name_the_setting(tmp_path: Path) -> None:
    summary = generate_cohort(3, 4, tmp_path / "ward", image_size=32, realism=WARD, workers=1)
    meta = json.loads((tmp_path / "ward" / "cohort.json").read_text())
    assert meta["realism"]["name"] == "ward" and meta["realism"]["p_absent"] == WARD.p_absent
    assert cohort_command(tmp_path / "ward") == "synth --n 3 --seed 4 --realism ward"
    assert "realism ward" in summary.describe()
    generate_cohort(3, 4, tmp_path / "clean", image_size=32, workers=1)
    assert "realism" not in json.loads((tmp_path / "clean" / "cohort.json").read_text())
    assert cohort_command(tmp_path / "clean") == "synth --n 3 --seed 4"


def test_an_unknown_setting_names_the_choices() -> None:
    assert realism_named("ward") is WARD
    with pytest.raises(ValueError, match="realism: expected one of clean, ward; got 'icu'"):
        realism_named("icu")
