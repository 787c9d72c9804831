"""Write the malformed-input corpus: one small bundle per case, each with one thing wrong.

Run from the repository root to regenerate (the output is committed, a few KB):
    python tests/data/bad/make_corpus.py
What each case must produce is in expected.json, checked by tests/sources/test_bad_corpus.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom

from medfuse_core.sources.images import write_image

HERE = Path(__file__).resolve().parent
PATIENT = {"patient_id": "BAD", "age": 64, "sex": "M", "index_time": "2131-05-07 08:00:00"}
LABS_HEADER = "time,itemid,item,value,unit,ref_low,ref_high,flag\n"
GOOD_LAB = "2131-05-07 09:00:00,50912,Creatinine,1.0,mg/dL,0.5,1.1,\n"
GOOD_VITAL = "2131-05-07 09:00:00,Heart Rate,88\n"


def _pixels(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return ((xx + yy) / (2 * size - 2)).astype(np.float32)


def bundle(name: str, files: dict[str, str | bytes], patient: dict | str | None = None) -> Path:
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    meta = PATIENT | {"patient_id": name} if patient is None else patient
    (folder / "patient.json").write_text(meta if isinstance(meta, str) else json.dumps(meta, indent=1))
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def image_bundle(name: str, image_bytes: bytes, file: str = "image_00.dcm") -> None:
    bundle(name, {"images/index.csv": f"file,time,view\n{file},2131-05-07 10:00:00,PA\n", f"images/{file}": image_bytes})


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
