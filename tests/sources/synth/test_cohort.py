"""The cohort as a whole: determinism, prevalence, missing modalities, and the bundles on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth import (
    COHORT_FILE,
    DISEASE_NAMES,
    GENERATOR_VERSION,
    LABEL_NAMES,
    generate_cohort,
    generate_patient,
    synthesize,
)
from medfuse_core.sources.synth.truth import TIME_FORMAT


def _same_record(a, b) -> bool:
    return (a.labs.table.equals(b.labs.table) and a.vitals.table.equals(b.vitals.table)
            and [n.text for n in a.notes] == [n.text for n in b.notes] and a.truth == b.truth
            and len(a.images) == len(b.images)
            and all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a.images, b.images)))


def test_same_seed_same_patient():
    assert _same_record(generate_patient(3, 17, image_size=64), generate_patient(3, 17, image_size=64))


def test_other_seed_or_index_other_patient():
    a = generate_patient(3, 17, image_size=64)
    assert not _same_record(a, generate_patient(4, 17, image_size=64))
    assert not _same_record(a, generate_patient(3, 18, image_size=64))


def test_generator_input_is_deterministic_too():
    a = generate_patient(np.random.default_rng(9), 0, image_size=64)
    b = generate_patient(np.random.default_rng(9), 0, image_size=64)
    assert _same_record(a, b)


def test_image_size_does_not_change_other_modalities():
    a, b = synthesize(5, 2, image_size=64).record, synthesize(5, 2, image_size=96).record
    assert a.labs.table.equals(b.labs.table) and [n.text for n in a.notes] == [n.text for n in b.notes]


def test_prevalence_within_bounds(cohort):
    n = len(cohort)
    for name in LABEL_NAMES:
        rate = sum(p.record.labels[name] for p in cohort) / n
        assert 0.03 <= rate <= 0.60, (name, rate)


def test_missing_modalities_at_realistic_rates(cohort):
    n = len(cohort)
    absent = {m: sum(not p.record.has(m) for p in cohort) / n for m in MODALITIES}
    assert 0.30 <= absent["image"] <= 0.60
    assert 0.06 <= absent["notes"] <= 0.25
    assert 0.0 < absent["labs"] <= 0.08 and 0.0 < absent["vitals"] <= 0.08
    assert 0.05 <= np.mean([len(p.record.images) == 2 for p in cohort]) <= 0.2


def test_realistic_texture(cohort):
    labs = [p.record.labs.table for p in cohort if p.record.has("labs")]
    texts = set().union(*(set(t["value_text"]) for t in labs))
    assert "HEMOLYZED" in texts and any(s.startswith(">") for s in texts)
    flags = set().union(*(set(t["flag"]) for t in labs))
    assert flags == {"", "abnormal"}
    gaps = [t["time"].drop_duplicates().diff().dt.total_seconds().dropna() / 3600 for t in labs]
    gaps = np.concatenate([g.to_numpy() for g in gaps])
    assert 5.0 < np.median(gaps) < 20.0
    vitals = [p.record.vitals.table for p in cohort if p.record.has("vitals")]
    eyes = set().union(*(set(t.loc[t["channel"] == "Glascow coma scale eye opening", "value_text"]) for t in vitals))
    assert {"4 Spontaneously", "Spontaneously"} <= eyes
    photometric = [im.metadata.photometric for p in cohort for im in p.record.images]
    assert 0.05 < photometric.count("MONOCHROME1") / len(photometric) < 0.3
    assert {im.metadata.bits_stored for p in cohort for im in p.record.images} == {12, 14, 16}
    assert {im.view for p in cohort for im in p.record.images} == {"AP", "PA"}
    for p in cohort:
        for im in p.record.images:
            hours = p.record.hours_since_index(im.time)
            assert 0 <= hours <= 60 and im.metadata.study_date == im.time.strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate_cohort(8, 31, out / "a", image_size=96)
    generate_cohort(5, 31, out / "b", image_size=96, workers=2)
    return out, summary


def test_cohort_json(on_disk):
    out, summary = on_disk
    meta = json.loads((out / "a" / COHORT_FILE).read_text())
    assert meta["seed"] == 31 and meta["n"] == 8 and meta["generator_version"] == GENERATOR_VERSION
    assert meta["label_names"] == list(LABEL_NAMES) and meta["diseases"] == list(DISEASE_NAMES)
    assert set(meta["prevalence"]) == set(LABEL_NAMES) and set(meta["modality_counts"]) == set(MODALITIES)
    assert summary.patients_per_s > 0 and "8 patients" in summary.describe()


def test_patient_does_not_depend_on_cohort_size_or_workers(on_disk):
    out, _ = on_disk
    for i in range(5):
        a, b = out / "a" / f"P{i:05d}", out / "b" / f"P{i:05d}"
        names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file() and p.suffix != ".dcm")
        assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and p.suffix != ".dcm")
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_bundles_read_back_with_exact_truth(on_disk):
    from medfuse_core.sources.bundle import read_bundle

    out, _ = on_disk
    for i in range(8):
        folder = out / "a" / f"P{i:05d}"
        record = read_bundle(folder)
        expected = synthesize(31, i, image_size=96)
        assert record.truth == expected.record.truth
        assert record.labels == expected.record.labels
        assert [n.text for n in record.notes] == [n.text for n in expected.record.notes]
        assert list(record.labs.table["value_text"]) == list(expected.record.labs.table["value_text"])
        lab_values = record.labs.table["value"].to_numpy()
        assert np.allclose(lab_values, expected.record.labs.table["value"].to_numpy(), equal_nan=True)
        assert len(record.images) == len(expected.record.images)
        for got, want in zip(record.images, expected.record.images):
            assert got.metadata.photometric == want.metadata.photometric
            assert got.metadata.bits_stored == want.metadata.bits_stored
            assert np.abs(got.pixels - want.pixels).mean() < 0.01
        for name, ev in record.truth["evidence"].items():
            for e in ev["notes"]:
                text = (folder / e["file"]).read_text(encoding="utf-8")
                assert text[e["start"]:e["end"]] == e["text"]
            for e in ev["image"]:
                mask = np.asarray(Image.open(folder / e["mask"])) > 0
                assert (folder / e["file"]).is_file()
                assert np.array_equal(mask, expected.masks[e["mask"]])
            for e in ev["labs"]:
                t = record.labs.table
                hit = t[(t["itemid"] == e["itemid"]) & (t["time"].dt.strftime(TIME_FORMAT) == e["time"])]
                assert len(hit) == 1 and hit["flag"].iloc[0] == "abnormal"
        assert not [p for p in record.problems if p.severity.value == "error"], record.problems
