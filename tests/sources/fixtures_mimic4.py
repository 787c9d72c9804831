"""Tiny MIMIC-IV and MEDS trees for the reader tests, in the official layouts and column names.

MIMIC-IV: 3 patients, 4 admissions, 3 ICU stays (two in one admission), labs with text values,
ICD-9 and ICD-10 diagnoses, discharge and radiology notes, CXR metadata with two JPGs (one study in
a stay, one outside any stay) and a third row whose file is missing. Every value the tests check is
written here, in plain sight; the expected counts sit beside the rows that make them.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medfuse_core.sources.images import write_image

S1, S2, S3 = "10000032", "10000084", "10000117"
H1, H2, H3, H4 = "22595853", "22841357", "23052089", "27988844"  # H1, H2: S1; H3: S2; H4: S3
STAY1, STAY2, STAY3 = "39553978", "31269608", "30000001"  # STAY1 in H1; STAY2 (first), STAY3 in H3
CXR_INSIDE = ("50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014")  # S1, in H1 and STAY1
CXR_OUTSIDE = ("53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab")  # S1, in no stay
CXR_MISSING = ("56699142", "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c")  # S2, in H3 / STAY2, no file


def _write_csv_gz(path: Path, columns: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=columns)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False)


ADMISSION_COLUMNS = ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                     "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
                     "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"]
LAB_COLUMNS = ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime",
               "storetime", "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag",
               "priority", "comments"]
CHART_COLUMNS = ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value",
                 "valuenum", "valueuom", "warning"]
NOTE_COLUMNS = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
CXR_COLUMNS = ["dicom_id", "study_id", "subject_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
               "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]

DISCHARGE_H1 = "Name: ___ Unit No: ___\nDischarge Diagnosis: congestive heart failure.\n"
DISCHARGE_H3 = "Discharge Diagnosis: sepsis.\nDischarge Condition: expired.\n"
RADIOLOGY_H1 = "EXAMINATION: CHEST (PA AND LAT)\nIMPRESSION: Mild pulmonary vascular congestion.\n"


def write_mimic4_tree(root: Path, *, tables: tuple[str, ...] | None = None) -> Path:
    """Write the MIMIC-IV fixture under `root` (hosp/, icu/, note/, cxr/); only `tables` if given."""

    def want(name: str) -> bool:
        return tables is None or name in tables

    hosp, icu, note, cxr = root / "hosp", root / "icu", root / "note", root / "cxr"
    root.mkdir(parents=True, exist_ok=True)
    if want("patients"):
        _write_csv_gz(hosp / "patients.csv.gz", ["subject_id", "gender", "anchor_age", "anchor_year",
                                                  "anchor_year_group", "dod"], [
            [S1, "F", 52, 2180, "2014 - 2016", "2180-09-09"],
            [S2, "M", 72, 2160, "2017 - 2019", "2160-11-25"],
            [S3, "F", 91, 2183, "2008 - 2010", ""],  # older than 89: age set to 90
        ])
    if want("admissions"):
        _write_csv_gz(hosp / "admissions.csv.gz", ADMISSION_COLUMNS, [
            [S1, H1, "2180-05-06 22:23:00", "2180-05-07 17:15:00", "", "URGENT", "P874LG", "TRANSFER FROM HOSPITAL",
             "HOME", "Other", "ENGLISH", "WIDOWED", "WHITE", "2180-05-06 19:17:00", "2180-05-06 23:30:00", 0],
            [S1, H2, "2180-06-26 18:27:00", "2180-06-27 18:49:00", "", "EW EMER.", "P09Q6Y", "EMERGENCY ROOM",
             "HOME", "Medicaid", "ENGLISH", "WIDOWED", "WHITE", "", "", 0],
            [S2, H3, "2160-11-21 01:56:00", "2160-11-25 14:52:00", "2160-11-25 14:52:00", "EW EMER.", "P2CXEP",
             "EMERGENCY ROOM", "DIED", "Medicare", "ENGLISH", "MARRIED", "WHITE", "", "", 1],
            [S3, H4, "2183-09-18 18:10:00", "2183-09-21 16:30:00", "", "EW EMER.", "P4FEPY", "EMERGENCY ROOM",
             "HOME", "Other", "ENGLISH", "SINGLE", "WHITE", "", "", 0],
        ])
    if want("icustays"):
        _write_csv_gz(icu / "icustays.csv.gz", ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit",
                                                "intime", "outtime", "los"], [
            [S1, H1, STAY1, "MICU", "MICU", "2180-05-06 23:00:00", "2180-05-07 15:00:00", 0.67],
            [S2, H3, STAY2, "MICU", "MICU", "2160-11-21 03:00:00", "2160-11-22 10:00:00", 1.29],
            [S2, H3, STAY3, "CCU", "CCU", "2160-11-23 08:00:00", "2160-11-24 12:00:00", 1.17],
        ])
    if want("labevents"):
        _write_csv_gz(hosp / "labevents.csv.gz", LAB_COLUMNS, [
            [1, S1, H1, 101, 50912, "", "2180-05-06 23:30:00", "", "1.2", 1.2, "mg/dL", 0.5, 1.1, "abnormal", "STAT", ""],
            [2, S1, H1, 101, 50931, "", "2180-05-06 23:30:00", "", "145", 145, "mg/dL", 70, 100, "abnormal", "STAT", ""],
            [3, S1, H1, 101, 51006, "", "2180-05-06 23:30:00", "", "<5", "", "mg/dL", 6, 20, "", "STAT", ""],
            [4, S2, H3, 102, 50820, "", "2160-11-21 04:00:00", "", "7.31", 7.31, "units", 7.35, 7.45, "abnormal", "", ""],
            [5, S2, H3, 103, 50931, "", "2160-11-23 09:00:00", "", "HEMOLYZED", "", "mg/dL", 70, 100, "", "", ""],
            [6, S2, H3, 104, 51237, "", "2160-11-20 23:00:00", "", "1.3", 1.3, "", 0.9, 1.1, "abnormal", "", ""],
            [7, S3, "", 105, 50912, "", "2183-01-02 10:00:00", "", "0.9", 0.9, "mg/dL", 0.5, 1.1, "", "", ""],
            [8, S3, "29999999", 106, 50912, "", "2183-02-02 10:00:00", "", "1.0", 1.0, "mg/dL", 0.5, 1.1, "", "", ""],
            [9, S3, H4, 107, 50912, "", "2183-09-19 06:00:00", "", "0.8", 0.8, "mg/dL", 0.5, 1.1, "", "", ""],
            [10, S1, H2, 108, 50971, "", "2180-06-26 20:00:00", "", "", 4.1, "mEq/L", 3.5, 5.1, "", "", ""],
        ])
    if want("d_labitems"):
        _write_csv_gz(hosp / "d_labitems.csv.gz", ["itemid", "label", "fluid", "category"], [
            [50912, "Creatinine", "Blood", "Chemistry"], [50931, "Glucose", "Blood", "Chemistry"],
            [51006, "Urea Nitrogen", "Blood", "Chemistry"], [50820, "pH", "Blood", "Blood Gas"],
            [51237, "INR(PT)", "Blood", "Hematology"], [50971, "Potassium", "Blood", "Chemistry"],
        ])
    if want("diagnoses_icd"):
        _write_csv_gz(hosp / "diagnoses_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], [
            [S1, H1, 1, "4280", 9], [S1, H1, 2, "5849", 9], [S1, H1, 3, "I10", 10],
            [S1, H2, 1, "42731", 9], [S1, H2, 2, "E119", 10],
            [S2, H3, 1, "0389", 9], [S2, H3, 2, "0000", 9],  # 0000: ICD-9 syntax, in no CCS group
        ])  # H4 has no diagnoses
    if want("chartevents"):
        rows = [
            [S1, H1, STAY1, 1, "2180-05-06 23:15:00", "", 220045, "88", 88, "bpm", 0],
            [S1, H1, STAY1, 1, "2180-05-07 00:15:00", "", 220045, "92", 92, "bpm", 0],
            [S1, H1, STAY1, 1, "2180-05-06 23:15:00", "", 220179, "120", 120, "mmHg", 0],
            [S1, H1, STAY1, 1, "2180-05-06 23:20:00", "", 223761, "98.6", 98.6, "°F", 0],  # -> 37 C
            [S1, H1, STAY1, 1, "2180-05-06 23:20:00", "", 220739, "Spontaneously", 4, "", 0],
            [S1, H1, STAY1, 1, "2180-05-06 23:20:00", "", 223951, "Normal <3 Seconds", "", "", 0],
            [S1, H1, STAY1, 1, "2180-05-07 01:00:00", "", 220045, "400", 400, "bpm", 1],  # outlier: dropped
            [S1, H1, STAY1, 1, "2180-05-06 23:15:00", "", 220048, "SR (Sinus Rhythm)", "", "", 0],  # not a channel
            [S2, H3, STAY2, 2, "2160-11-21 05:00:00", "", 220045, "110", 110, "bpm", 0],
            [S2, H3, STAY2, 2, "2160-11-21 05:00:00", "", 220210, "22", 22, "insp/min", 0],
            [S2, H3, STAY3, 2, "2160-11-23 10:00:00", "", 220045, "80", 80, "bpm", 0],
            [S2, H3, STAY3, 2, "2160-11-23 10:00:00", "", 220277, "97", 97, "%", 0],
            [S2, H3, "", 2, "2160-11-23 12:00:00", "", 220045, "85", 85, "bpm", 0],  # no stay_id: by time -> STAY3
        ]
        _write_csv_gz(icu / "chartevents.csv.gz", CHART_COLUMNS, rows)
    if want("d_items"):
        _write_csv_gz(icu / "d_items.csv.gz", ["itemid", "label", "abbreviation", "linksto", "category", "unitname",
                                               "param_type", "lownormalvalue", "highnormalvalue"], [
            [220045, "Heart Rate", "HR", "chartevents", "Routine Vital Signs", "bpm", "Numeric", "", ""],
            [220179, "Non Invasive Blood Pressure systolic", "NBPs", "chartevents", "Routine Vital Signs", "mmHg",
             "Numeric", "", ""],
            [220277, "O2 saturation pulseoxymetry", "SpO2", "chartevents", "Respiratory", "%", "Numeric", "", ""],
        ])
    if want("discharge"):
        _write_csv_gz(note / "discharge.csv.gz", NOTE_COLUMNS, [
            [f"{S1}-DS-21", S1, H1, "DS", 21, "2180-05-07 00:00:00", "2180-05-09 15:26:00", DISCHARGE_H1],
            [f"{S2}-DS-5", S2, H3, "DS", 5, "2160-11-25 00:00:00", "2160-11-25 18:00:00", DISCHARGE_H3],
        ])
    if want("radiology"):
        _write_csv_gz(note / "radiology.csv.gz", NOTE_COLUMNS, [
            [f"{S1}-RR-14", S1, H1, "RR", 14, "2180-05-06 23:40:00", "2180-05-07 09:00:00", RADIOLOGY_H1],
        ])
    if want("cxr"):
        _write_csv_gz(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", CXR_COLUMNS, [
            [CXR_INSIDE[1], CXR_INSIDE[0], S1, "CHEST (PA AND LAT)", "PA", 64, 48, 21800506, "235900.000",
             "CHEST (PA AND LAT)", "postero-anterior", "Erect"],
            [CXR_OUTSIDE[1], CXR_OUTSIDE[0], S1, "CHEST (PORTABLE AP)", "AP", 64, 48, 21800601, "120000.000",
             "CHEST (PORTABLE AP)", "antero-posterior", "Erect"],
            [CXR_MISSING[1], CXR_MISSING[0], S2, "CHEST (PORTABLE AP)", "AP", 64, 48, 21601121, "60000.5",
             "CHEST (PORTABLE AP)", "antero-posterior", "Erect"],
        ])
        for (study, dicom), subject in ((CXR_INSIDE, S1), (CXR_OUTSIDE, S1)):
            folder = cxr / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            write_image(image_pixels(), folder / f"{dicom}.jpg")
    return root


def image_pixels() -> np.ndarray:
    """A 64 x 48 grey ramp: what the two fixture JPGs hold."""
    return np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (64, 1))


# ------------------------------------------------------------------------------------------ MEDS

MEDS_SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                         ("numeric_value", pa.float32()), ("text_value", pa.string()), ("hadm_id", pa.int64())])
MEDS_DISCHARGE = "Discharge diagnosis: heart failure."


def meds_rows(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows))
    return pa.table([pa.array(list(c), type=f.type) for c, f in zip(columns, MEDS_SCHEMA)], schema=MEDS_SCHEMA)


def write_meds_tree(root: Path) -> Path:
    """Two subjects in two shards (data/train/0.parquet, data/held_out/0.parquet) + metadata/codes.parquet.

    Subject 1: two admissions (hadm 1001, 1002) delimited by HOSPITAL_ADMISSION / HOSPITAL_DISCHARGE,
    a lab outside both, death in the second. Subject 2: no admission, an unknown code.
    """
    t = pd.Timestamp
    train = [
        (1, t("2100-01-01"), "MEDS_BIRTH", None, None, None),
        (1, None, "GENDER//F", None, None, None),
        (1, t("2160-01-01 08:00"), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", None, None, 1001),
        (1, t("2160-01-01 09:00"), "VITALS//Heart Rate", 88.0, None, 1001),
        (1, t("2160-01-01 09:00"), "MEASUREMENT//220179//mmHg", 120.0, None, 1001),
        (1, t("2160-01-01 10:00"), "LAB//50912//mg/dL", 1.5, None, 1001),
        (1, t("2160-01-01 10:00"), "LAB//50931//mg/dL", None, "HEMOLYZED", 1001),
        (1, t("2160-01-01 11:00"), "PROCEDURE//ICD//9//3995", None, None, 1001),
        (1, t("2160-01-03 12:00"), "DIAGNOSIS//ICD//9//4280", None, None, 1001),
        (1, t("2160-01-03 12:00"), "DIAGNOSIS//ICD//10//I10", None, None, 1001),
        (1, t("2160-01-03 12:00"), "NOTE//Discharge summary", None, MEDS_DISCHARGE, 1001),
        (1, t("2160-01-03 12:00"), "HOSPITAL_DISCHARGE//HOME", None, None, 1001),
        (1, t("2160-06-01 09:00"), "LAB//50912//mg/dL", 1.1, None, None),  # between stays
        (1, t("2161-05-01 07:00"), "HOSPITAL_ADMISSION//URGENT//TRANSFER FROM HOSPITAL", None, None, 1002),
        (1, t("2161-05-01 08:00"), "VITALS//HR", 100.0, None, 1002),
        (1, t("2161-05-01 08:30"), "DIAGNOSIS//ICD//9//0389", None, None, 1002),
        (1, t("2161-05-02 11:00"), "MEDS_DEATH", None, None, None),
        (1, t("2161-05-02 11:00"), "HOSPITAL_DISCHARGE//DIED", None, None, 1002),
    ]
    held_out = [
        (2, None, "GENDER//M", None, None, None),
        (2, t("2050-06-01"), "MEDS_BIRTH", None, None, None),
        (2, t("2120-01-01 10:00"), "VITALS//Respiratory rate", 18.0, None, None),
        (2, t("2120-01-01 10:00"), "LAB//51006//mg/dL", 20.0, None, None),
        (2, t("2120-01-01 11:00"), "FOO//BAR", 1.0, None, None),
    ]
    for split, rows in (("train", train), ("held_out", held_out)):
        folder = root / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(meds_rows(rows), folder / "0.parquet")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    codes = pa.table({"code": ["LAB//50912//mg/dL", "LAB//51006//mg/dL"],
                      "description": ["Creatinine", "Urea Nitrogen"],
                      "parent_codes": pa.array([["LOINC/2160-0"], ["LOINC/3094-0"]], type=pa.list_(pa.string()))})
    pq.write_table(codes, root / "metadata" / "codes.parquet")
    return root
