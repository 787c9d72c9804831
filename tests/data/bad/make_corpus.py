"""Write the malformed-input corpus: one small bundle per case, each with one thing wrong.

Run from the repository root to regenerate (the output is committed, a few KB):
    python tests/data/bad/make_corpus.py
What each case must produce is in expected.json, checked by tests/sources/test_bad_corpus.py.
The cases in GENERATED (a 1 MB note, an 8000 x 8000 image) are too big to commit: the tests write them
with `write_generated(folder)` into a temporary folder (expected.json marks them "generated": true).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from medfuse_core.sources.images import write_image

HERE = Path(__file__).resolve().parent
PATIENT = {"patient_id": "BAD", "age": 64, "sex": "M", "index_time": "2131-05-07 08:00:00"}
LABS_HEADER = "time,itemid,item,value,unit,ref_low,ref_high,flag\n"
GOOD_LAB = "2131-05-07 09:00:00,50912,Creatinine,1.0,mg/dL,0.5,1.1,\n"
GOOD_VITAL = "2131-05-07 09:00:00,Heart Rate,88\n"


def _pixels(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return ((xx + yy) / (2 * size - 2)).astype(np.float32)


NO_PATIENT_JSON = "no patient.json"
NOTE_INDEX = "file,time,category\nnote_00.txt,2131-05-07 10:00:00,Physician\n"
GOOD_NOTE = "Pt comfortable, afebrile. Lungs clear."


class Link(str):
    """A file content that is instead written as a symbolic link to this target."""


def bundle(name: str, files: dict[str, str | bytes], patient: dict | str | None = None, root: Path = HERE) -> Path:
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    meta = PATIENT | {"patient_id": name} if patient is None else patient
    if meta != NO_PATIENT_JSON:
        (folder / "patient.json").write_text(meta if isinstance(meta, str) else json.dumps(meta, indent=1))
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(str(content))
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def image_bundle(name: str, image_bytes: bytes, file: str = "image_00.dcm", root: Path = HERE) -> None:
    bundle(name, {"images/index.csv": f"file,time,view\n{file},2131-05-07 10:00:00,PA\n", f"images/{file}": image_bytes},
           root=root)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def dicom_with(**tags) -> bytes:
    """A good DX DICOM with some header tags replaced."""
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(dicom_bytes()))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encapsulated_dicom(transfer_syntax: str) -> bytes:
    """A DICOM whose (junk) pixel data is encapsulated under `transfer_syntax`. pydicom refuses to write a
    syntax it does not know (JPEG XL), so the file is written as HTJ2K, whose UID has the same length,
    and the UID's bytes are then swapped."""
    from pydicom.encaps import encapsulate

    stand_in = "1.2.840.10008.1.2.4.201"  # HTJ2K Lossless
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(dicom_bytes()))
    ds.file_meta.TransferSyntaxUID = stand_in
    ds.PixelData = encapsulate([b"\xff\x0a" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if len(transfer_syntax) == len(stand_in):
        return data.replace(stand_in.encode(), transfer_syntax.encode())
    raise ValueError(f"transfer syntax UID must have {len(stand_in)} characters: {transfer_syntax}")


# ------------------------------------------------------------------------ generated at test time

HUGE_NOTE_BYTES = 1024**2
HUGE_IMAGE_SIDE = 8000


def notes_huge(root: Path) -> None:
    """A 1 MB note: read up to MAX_NOTE_CHARS characters, the rest cut off with a warning."""
    line = "Pt resting comfortably, vitals stable, plan unchanged; continue current management.\n"
    text = (line * (HUGE_NOTE_BYTES // len(line) + 1))[:HUGE_NOTE_BYTES]
    bundle("notes_huge", {"notes/index.csv": NOTE_INDEX, "notes/note_00.txt": text}, root=root)


def image_huge(root: Path) -> None:
    """An 8000 x 8000 grey PNG (64 M pixels, a gradient: ~100 KB compressed): downsampled to 4000 x 4000."""
    row = np.linspace(0, 255, HUGE_IMAGE_SIDE).astype(np.uint8)
    image_bundle("image_huge", png_bytes(np.broadcast_to(row, (HUGE_IMAGE_SIDE, HUGE_IMAGE_SIDE)).copy()),
                 file="image_00.png", root=root)


def patient_json_deep_nesting(root: Path) -> None:
    """100,000 nested brackets: Python's json raised RecursionError (issue 19)."""
    bundle("patient_json_deep_nesting", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL},
           patient="[" * 100_000 + "]" * 100_000, root=root)


def truth_json_deep_nesting(root: Path) -> None:
    bundle("truth_json_deep_nesting", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL,
                                       "truth.json": '{"evidence": ' + "[" * 100_000 + "]" * 100_000 + "}"}, root=root)


def patient_json_huge_id(root: Path) -> None:
    """A 10 MB patient id (it used to reach the audit log whole)."""
    bundle("patient_json_huge_id", {}, patient=json.dumps(PATIENT | {"patient_id": "X" * 10 * 1024**2}), root=root)


def labs_field_over_csv_limit(root: Path) -> None:
    """A field longer than Python's csv limit (131,072 characters): the row was dropped without a word."""
    bundle("labs_field_over_csv_limit", {"labs.csv": LABS_HEADER + GOOD_LAB
                                         + "2131-05-07 10:00:00,50971,Potassium," + "9" * 140_000 + ",mEq/L,3.3,5.1,\n"
                                         + GOOD_LAB.replace("09:00", "11:00")}, root=root)


GENERATED = {"notes_huge": notes_huge, "image_huge": image_huge, "patient_json_deep_nesting": patient_json_deep_nesting,
             "truth_json_deep_nesting": truth_json_deep_nesting, "patient_json_huge_id": patient_json_huge_id,
             "labs_field_over_csv_limit": labs_field_over_csv_limit}


def write_generated(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the GENERATED cases (all, or `names`) under `root`; {case: folder}."""
    for name in names or GENERATED:
        GENERATED[name](root)
    return {name: root / name for name in names or GENERATED}


def dicom_bytes(**kwargs) -> bytes:
    tmp = HERE / "_tmp.dcm"
    write_image(_pixels(), tmp, **kwargs)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def main() -> None:
    for old in HERE.iterdir():
        if old.is_dir() and not old.name.startswith("_"):
            shutil.rmtree(old)

    # patient.json
    bundle("patient_json_truncated", {}, patient='{"patient_id": "X", "age": 6')
    bundle("patient_json_no_id", {}, patient={"age": 50, "sex": "F"})
    bundle("patient_json_bad_fields", {}, patient={"patient_id": "bad_fields", "age": "old", "sex": "X",
                                                   "index_time": "yesterday", "labels": {"Pneumonia": "maybe"}})
    # labs
    bundle("labs_missing_value_column", {"labs.csv": "time,item,unit\n2131-05-07 09:00:00,Creatinine,mg/dL\n"})
    bundle("labs_bad_time", {"labs.csv": LABS_HEADER + GOOD_LAB + "last tuesday,50971,Potassium,4.2,mEq/L,3.3,5.1,\n"})
    bundle("labs_ragged_row", {"labs.csv": LABS_HEADER + GOOD_LAB + "2131-05-07 10:00:00,50971,Potassium,4.2,mEq/L,3.3,5.1,,oops,extra\n"})
    bundle("labs_no_item", {"labs.csv": LABS_HEADER + GOOD_LAB + "2131-05-07 10:00:00,,,4.2,mEq/L,3.3,5.1,\n"})
    bundle("labs_bad_reference_range", {"labs.csv": LABS_HEADER + "2131-05-07 09:00:00,50912,Creatinine,1.0,mg/dL,low,1.1,\n"})
    # vitals
    bundle("vitals_outlier", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL + "2131-05-07 10:00:00,Heart Rate,999\n"})
    bundle("vitals_unknown_category", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL + "2131-05-07 10:00:00,Glascow coma scale eye opening,Blinks twice\n"})
    bundle("vitals_missing_channel_column", {"vitals.csv": "time,value\n2131-05-07 09:00:00,88\n"})
    bundle("vitals_non_numeric", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL + "2131-05-07 10:00:00,Systolic blood pressure,see chart\n"})
    # notes
    bundle("notes_missing_file", {"notes/index.csv": "file,time,category\nnote_00.txt,2131-05-07 10:00:00,Physician\nnote_07.txt,2131-05-07 11:00:00,Nursing\n",
                                  "notes/note_00.txt": "Pt comfortable."})
    bundle("notes_not_utf8", {"notes/index.csv": "file,time,category\nnote_00.txt,2131-05-07 10:00:00,Physician\n",
                              "notes/note_00.txt": "Temp 38.5 \xb0C, caf\xe9".encode("latin-1")})
    bundle("notes_without_index", {"notes/note_00.txt": "Pt comfortable."})
    bundle("notes_path_escape", {"notes/index.csv": "file,time,category\n../../../etc/passwd,2131-05-07 10:00:00,Physician\n"})
    # images
    image_bundle("image_random_bytes", bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)))
    image_bundle("image_empty_file", b"")
    good = dicom_bytes()
    image_bundle("image_truncated_dicom", good[: len(good) - 700])
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(dicom_bytes()))
    del ds.PixelData
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    image_bundle("image_dicom_without_pixels", buffer.getvalue())
    image_bundle("image_not_an_image_sop", Path(pydicom.data.get_testdata_file("rtplan.dcm")).read_bytes())
    png = HERE / "_tmp.png"
    write_image(_pixels(64), png)
    image_bundle("image_truncated_png", png.read_bytes()[:120], file="image_00.png")
    png.unlink()
    image_bundle("image_text_named_png", b"this is a radiology report, not a picture\n", file="image_00.png")
    # labs, continued
    bundle("labs_no_item_columns", {"labs.csv": "time,value,unit\n2131-05-07 09:00:00,1.0,mg/dL\n"})
    bundle("labs_text_values", {"labs.csv": LABS_HEADER + "".join(
        f"2131-05-07 {9 + i:02d}:00:00,{itemid},{item},{value},{unit},,,\n" for i, (itemid, item, value, unit) in enumerate([
            (51484, "Ketone", "NEG", "mg/dL"), (50971, "Potassium", "HEMOLYZED", "mEq/L"),
            (51003, "Troponin T", "<0.01", "ng/mL"), (50910, "Creatine Kinase (CK)", ">1000", "IU/L"),
            (51265, "Platelet Count", '"1,234"', "K/uL"), (50862, "Albumin", "GREATER THAN 5", "g/dL")]))})
    bundle("labs_negative_time", {"labs.csv": LABS_HEADER + GOOD_LAB + "-3.5,50971,Potassium,4.2,mEq/L,3.3,5.1,\n"})
    bundle("labs_duplicate_rows", {"labs.csv": LABS_HEADER + GOOD_LAB + GOOD_LAB
                                   + "2131-05-07 09:00:00,50971,Potassium,4.2,mEq/L,3.3,5.1,\n" + GOOD_LAB})
    bundle("labs_unit_conflict", {"labs.csv": LABS_HEADER
                                  + "2131-05-07 09:00:00,50931,Glucose,110,mg/dL,70,100,\n"
                                  + "2131-05-07 10:00:00,50931,Glucose,6.1,mmol/L,3.9,5.6,\n"
                                  + "2131-05-07 12:00:00,50931,Glucose,140,mg/dL,70,100,\n"})
    bundle("labs_empty_file", {"labs.csv": b"", "vitals.csv": "time,channel,value\n" + GOOD_VITAL})
    # vitals, continued
    bundle("vitals_unknown_channel", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL + "2131-05-07 10:00:00,Pain score,7\n"})
    bundle("vitals_irregular_times", {"vitals.csv": "time,channel,value\n"
                                      "2131-05-07 13:27:41.250,Heart Rate,92\n"
                                      "2131-05-07T09:00,Heart Rate,88\n"
                                      "2131-05-07 09:00:30,Heart Rate,90\n"
                                      "2131-05-07 09:01:00,Respiratory rate,18\n"
                                      "2131-05-10 02:00:00,Heart Rate,76\n"})
    bundle("vitals_time_zones", {"vitals.csv": "time,channel,value\n"
                                 "2131-05-07T09:00:00+02:00,Heart Rate,88\n"
                                 "2131-05-07 10:00:00Z,Heart Rate,90\n"
                                 "2131-05-07 11:00:00 -0500,Heart Rate,86\n"})
    bundle("vitals_out_of_range_low", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL
                                       + "2131-05-07 10:00:00,Oxygen saturation,-5\n"
                                       + "2131-05-07 10:00:00,Respiratory rate,400\n"})
    # notes, continued
    bundle("notes_empty", {"notes/index.csv": NOTE_INDEX + "note_01.txt,2131-05-07 11:00:00,Nursing\n",
                           "notes/note_00.txt": "", "notes/note_01.txt": GOOD_NOTE})
    bundle("notes_html_script", {"notes/index.csv": NOTE_INDEX, "notes/note_00.txt":
                                 "<script>alert('x')</script><b>CHF</b> exacerbation; BP <90/60 on arrival."})
    bundle("notes_utf16", {"notes/index.csv": NOTE_INDEX, "notes/note_00.txt": "Temp 38.5 °C, café.".encode("utf-16")})
    # images, continued
    image_bundle("image_text_named_dcm", b"%PDF-1.4\n% a radiology report saved as .dcm\n1 0 obj << >> endobj\n")
    image_bundle("image_ct_slice", dicom_with(Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"))
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0], colour[..., 1] = 200, np.arange(32, dtype=np.uint8)[None, :] * 8
    image_bundle("image_rgb_png", png_bytes(colour, "RGB"), file="image_00.png")
    image_bundle("image_png_16bit", png_bytes((_pixels(32) * 65535).round().astype(np.uint16)), file="image_00.png")
    image_bundle("image_no_codec_jpeg_xl", encapsulated_dicom("1.2.840.10008.1.2.4.110"))
    image_bundle("image_private_transfer_syntax", encapsulated_dicom("1.2.826.0.1.3680043.999"))
    # bundle folders
    bundle("bundle_no_patient_json", {"labs.csv": LABS_HEADER + GOOD_LAB}, patient=NO_PATIENT_JSON)
    bundle("bundle_symlink_outside", {"labs.csv": Link("../labs_bad_time/labs.csv"),
                                      "vitals.csv": "time,channel,value\n" + GOOD_VITAL,
                                      "notes/index.csv": NOTE_INDEX, "notes/note_00.txt": Link("/etc/passwd")})
    # issue 19: links anywhere in a bundle, encodings, ids, dates far from the index time
    bundle("notes_index_symlink", {"notes/index.csv": Link("/etc/passwd"), "notes/note_00.txt": GOOD_NOTE,
                                   "vitals.csv": "time,channel,value\n" + GOOD_VITAL})
    bundle("image_index_symlink_environ", {"images/index.csv": Link("/proc/self/environ"),
                                           "vitals.csv": "time,channel,value\n" + GOOD_VITAL})
    bundle("notes_symlink_inside", {"notes/index.csv": NOTE_INDEX + "note_01.txt,2131-05-07 11:00:00,Nursing\n",
                                    "notes/note_00.txt": Link("note_01.txt"), "notes/note_01.txt": GOOD_NOTE})
    bundle("labs_utf16", {"labs.csv": (LABS_HEADER + GOOD_LAB).encode("utf-16")})
    bundle("patient_json_long_id", {}, patient=PATIENT | {"patient_id": "P" * 300})
    bundle("patient_json_not_utf8", {}, patient="{}")
    (HERE / "patient_json_not_utf8" / "patient.json").write_bytes(b'{"patient_id": "caf\xe9", "age": 64}')
    bundle("patient_json_no_index_time", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL,
                                          "labs.csv": LABS_HEADER + GOOD_LAB},
           patient={k: v for k, v in PATIENT.items() if k != "index_time"} | {"patient_id": "patient_json_no_index_time"})
    late = PATIENT | {"index_time": "2199-05-07 08:00:00"}
    bundle("labs_dated_1900", {"labs.csv": LABS_HEADER + GOOD_LAB.replace("2131", "2199")
                               + "1900-01-01 00:00:00,50971,Potassium,4.2,mEq/L,3.3,5.1,\n"},
           patient=late | {"patient_id": "labs_dated_1900"})
    bundle("vitals_dated_1900", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL.replace("2131", "2199")
                                 + "1900-01-01 00:00:00,Heart Rate,80\n"},
           patient=late | {"patient_id": "vitals_dated_1900"})
    bundle("vitals_17_years_later", {"vitals.csv": "time,channel,value\n" + GOOD_VITAL
                                     + "2148-05-07 09:00:00,Heart Rate,80\n"})
    # truth.json
    bundle("truth_span_outside_note", {
        "notes/index.csv": "file,time,category\nnote_00.txt,2131-05-07 10:00:00,Physician\n",
        "notes/note_00.txt": "Hx of CHF.",
        "truth.json": json.dumps({"labels": {}, "evidence": {"Congestive heart failure; nonhypertensive": {
            "notes": [{"file": "notes/note_00.txt", "start": 6, "end": 400, "text": "CHF"}]}}}),
    })
    print(f"wrote {sum(1 for p in HERE.iterdir() if p.is_dir())} cases to {HERE}")


if __name__ == "__main__":
    main()
