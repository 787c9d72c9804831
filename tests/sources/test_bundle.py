"""Bundle write -> read round trip, absent modalities, and reading that never loses the patient."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfuse_core.problems import DataError, Severity
from medfuse_core.record import ChestImage, ImageMetadata, Labs, Note, PatientRecord, Vitals
from medfuse_core.sources.bundle import find_bundles, read_bundle, write_bundle


def _chest_like(size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = 0.2 + 0.6 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.05)
    pixels[10:30, 40:60] = 0.95  # a bright "bone" patch
    return pixels.astype(np.float32)


def make_record() -> PatientRecord:
    t0 = pd.Timestamp("2131-05-07 08:00:00")
    labs = Labs(pd.DataFrame({
        "time": [t0 + pd.Timedelta(hours=h) for h in (1, 1, 1, 13)],
        "itemid": [50963, 50912, 50971, 50813],
        "item": ["NTproBNP", "Creatinine", "Potassium", "Lactate"],
        "value": [4210.0, 1.1, math.nan, 0.5],
        "value_text": ["4210", "1.1", "HEMOLYZED", "<0.5"],
        "censored": ["", "", "", "below"],
        "unit": ["pg/mL", "mg/dL", "mEq/L", "mmol/L"],
        "ref_low": [0, 0.5, 3.3, 0.5],
        "ref_high": [450, 1.1, 5.1, 2.0],
        "flag": ["abnormal", "", "", ""],
    }))
    vitals = Vitals(pd.DataFrame({
        "time": [t0 + pd.Timedelta(minutes=5), t0 + pd.Timedelta(minutes=5), t0 + pd.Timedelta(hours=1)],
        "channel": ["Heart Rate", "Temperature", "Glascow coma scale eye opening"],
        "value": [112.0, 38.4, 4.0],
        "value_text": ["112", "38.4", "4 Spontaneously"],
    }))
    notes = [
        Note(t0 + pd.Timedelta(hours=2), "Physician", "Pt with CHF exacerbation.\nNo evidence of pneumonia. <script>alert(1)</script> café"),
        Note(t0 + pd.Timedelta(hours=23), "Nursing", "Resting comfortably."),
    ]
    images = [
        ChestImage(t0 + pd.Timedelta(hours=3), "PA", _chest_like(),
                   metadata=ImageMetadata(view_position="PA", study_date="2131-05-07", pixel_spacing_mm=(0.8, 0.8),
                                          photometric="MONOCHROME1", bits_stored=12, file_format="dicom")),
        ChestImage(t0 + pd.Timedelta(hours=30), "AP", _chest_like(), metadata=ImageMetadata(file_format="png")),
    ]
    return PatientRecord("P-RT-1", age=71.0, sex="F", index_time=t0, labs=labs, vitals=vitals, notes=notes,
                         images=images, labels={"Congestive heart failure; nonhypertensive": 1, "In-hospital mortality": 0},
                         truth={"labels": {"Congestive heart failure; nonhypertensive": 1, "In-hospital mortality": 0}})


def test_round_trip_keeps_every_modality(tmp_path: Path) -> None:
    original = make_record()
    folder = write_bundle(original, tmp_path / "P-RT-1")
    back = read_bundle(folder)

    assert [p for p in back.problems if p.severity is Severity.ERROR] == []
    assert (back.patient_id, back.age, back.sex, back.index_time) == ("P-RT-1", 71.0, "F", original.index_time)
    assert back.labels == original.labels
    assert back.truth == original.truth
    assert back.present_modalities == ("labs", "notes", "vitals", "image")

    labs, want = back.labs.table, original.labs.table
    assert list(labs["itemid"]) == list(want["itemid"])
    assert list(labs["value_text"]) == list(want["value_text"])
    np.testing.assert_allclose(labs["value"].to_numpy(), want["value"].to_numpy(), equal_nan=True)
    assert list(labs["censored"]) == ["", "", "", "below"]
    assert list(labs["unit"]) == list(want["unit"])
    assert list(labs["time"]) == list(want["time"])

    vitals = back.vitals.table.sort_values(["time", "channel"]).reset_index(drop=True)
    assert list(vitals["channel"]) == ["Heart Rate", "Temperature", "Glascow coma scale eye opening"]
    np.testing.assert_allclose(vitals["value"].to_numpy(), [112.0, 38.4, 4.0])

    assert [n.text for n in back.notes] == [n.text for n in original.notes]
    assert [n.category for n in back.notes] == ["Physician", "Nursing"]
    assert [n.time for n in back.notes] == [n.time for n in original.notes]

    assert [i.view for i in back.images] == ["PA", "AP"]
    assert back.images[0].metadata.file_format == "dicom"
    assert back.images[0].metadata.photometric == "MONOCHROME1"
    assert back.images[0].metadata.pixel_spacing_mm == pytest.approx((0.8, 0.8))
    assert back.images[1].metadata.file_format == "png"
    for got, sent in zip(back.images, original.images):
        assert got.pixels.shape == sent.pixels.shape
        # display orientation survives: MONOCHROME1 is inverted on write and again on read
        assert np.corrcoef(got.pixels.ravel(), sent.pixels.ravel())[0, 1] > 0.99


def test_only_patient_json_is_required(tmp_path: Path) -> None:
    folder = write_bundle(PatientRecord("P-EMPTY", age=50.0), tmp_path / "empty")
    assert sorted(p.name for p in folder.iterdir()) == ["patient.json"]
    back = read_bundle(folder)
    assert back.present_modalities == ()
    assert back.problems == []
    assert back.labels is None and back.truth is None


def test_unusable_patient_json_raises_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    with pytest.raises(DataError, match="patient.json"):
        read_bundle(folder)
    (folder / "patient.json").write_text('{"patient_id": "X", "age": ')
    with pytest.raises(DataError, match=r"patient\.json: line 1 column \d+: expected valid JSON"):
        read_bundle(folder)


def test_one_bad_file_does_not_lose_the_patient(tmp_path: Path) -> None:
    folder = write_bundle(make_record(), tmp_path / "p")
    (folder / "images" / "image_00.dcm").write_bytes(b"not a dicom at all" * 10)
    with (folder / "labs.csv").open("a") as f:
        f.write("2131-05-08 09:00:00,50912,Creatinine,1.0,mg/dL,0.5,1.1,,EXTRA,FIELDS\n")
    back = read_bundle(folder)
    assert back.present_modalities == ("labs", "notes", "vitals", "image")
    assert len(back.images) == 1 and back.images[0].view == "AP"
    assert len(back.labs.table) == 4  # the malformed row is left out, the others kept
    messages = [str(p) for p in back.problems]
    assert any("image_00.dcm" in m for m in messages)
    assert any("labs.csv: row: expected 8 fields, found 10" in m for m in messages)


def test_films_only_reads_patient_json_and_the_images_alone(tmp_path: Path) -> None:
    folder = write_bundle(make_record(), tmp_path / "p")
    (folder / "images" / "image_00.dcm").write_bytes(b"not a dicom at all" * 10)
    (folder / "labs.csv").write_text("not,a,lab,table\n")  # never opened
    back = read_bundle(folder, films_only=True)
    assert back.present_modalities == ("image",)
    assert (back.patient_id, back.age, back.labels) == ("P-RT-1", 71.0, make_record().labels)
    assert len(back.images) == 1 and back.images[0].view == "AP"  # a corrupt film still costs only itself
    messages = [str(p) for p in back.problems]
    assert any("image_00.dcm" in m for m in messages) and not any("labs.csv" in m for m in messages)


def test_index_cannot_point_outside_the_bundle(tmp_path: Path) -> None:
    folder = write_bundle(make_record(), tmp_path / "p")
    (tmp_path / "secret.txt").write_text("not part of the bundle")
    (folder / "notes" / "index.csv").write_text("file,time,category\n../../secret.txt,,Physician\nnote_01.txt,,Nursing\n")
    back = read_bundle(folder)
    assert [n.text for n in back.notes] == ["Resting comfortably."]
    assert any(p.field == "row 1: file" and "expected an existing file in notes/" in p.message for p in back.problems)


def test_find_bundles(tmp_path: Path) -> None:
    for pid in ("A", "B"):
        write_bundle(PatientRecord(pid), tmp_path / "cohort" / pid)
    (tmp_path / "cohort" / "not_a_bundle").mkdir()
    assert [p.name for p in find_bundles(tmp_path / "cohort")] == ["A", "B"]
    assert find_bundles(tmp_path / "cohort" / "A") == [tmp_path / "cohort" / "A"]


def test_latin1_csv_is_read_with_a_warning(tmp_path: Path) -> None:
    folder = write_bundle(PatientRecord("P-L1"), tmp_path / "p")
    (folder / "labs.csv").write_bytes("time,item,value,unit\n2131-01-01 10:00,Vitamin B12,350,µg/L\n".encode("latin-1"))
    back = read_bundle(folder)
    assert back.labs.table["unit"].tolist() == ["µg/L"]
    assert any("read as Latin-1" in p.message for p in back.problems)


def test_written_json_is_plain_and_readable(tmp_path: Path) -> None:
    folder = write_bundle(make_record(), tmp_path / "p")
    meta = json.loads((folder / "patient.json").read_text())
    assert meta["index_time"] == "2131-05-07 08:00:00"
    shutil.rmtree(folder / "notes")
    assert read_bundle(folder).notes == []


def test_colour_and_32_bit_sources_are_rewritten_as_grey(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from medfuse_core.sources.images import load_image

    images = []
    for name in ("SC_rgb_rle.dcm", "rtdose.dcm"):
        loaded = load_image(get_testdata_file(name))
        images.append(ChestImage(None, "PA", loaded.pixels, metadata=loaded.metadata))
    back = read_bundle(write_bundle(PatientRecord("P-RGB", images=images), tmp_path / "p"))
    assert [i.metadata.photometric for i in back.images] == ["MONOCHROME2", "MONOCHROME2"]
    for got, sent in zip(back.images, images):
        assert np.corrcoef(got.pixels.ravel(), sent.pixels.ravel())[0, 1] > 0.99
