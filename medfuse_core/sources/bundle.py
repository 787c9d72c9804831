"""Patient bundles: the on-disk form of a `PatientRecord`, also the dashboard's upload format.

One folder per patient:

    P00000/
      patient.json        {"patient_id", "age", "sex", "index_time", "labels"?}
      labs.csv            time,itemid,item,value,unit,ref_low,ref_high,flag   (value as text)
      vitals.csv          time,channel,value                                  (value as text)
      notes/index.csv     file,time,category   + the text files it names
      images/index.csv    file,time,view       + DICOM / PNG / JPEG files it names
      truth.json          planted evidence (synthetic patients only)

Every file but patient.json is optional. Reading never loses the patient for a bad file: what cannot
be used is left out and reported as a `Problem` on the record; only an unusable patient.json raises.

Nothing is read from outside the bundle folder: a file or folder that is a link to elsewhere is left
out with an error. A note is read up to `MAX_NOTE_CHARS` characters (the rest is cut off, with a
warning), so a huge file cannot stall the dashboard; HTML in a note is kept as text (the validator
notes it; the dashboard escapes it). Images must be chest radiographs (see `load_image(radiograph=True)`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medfuse_core import bounded_json
from medfuse_core.problems import DataError, Problem, error, excerpt, warning
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES, ChestImage, ImageMetadata, Labs, Note, PatientRecord, Vitals
from medfuse_core.sources.csv_text import read_csv_text
from medfuse_core.sources.images import load_image, write_image
from medfuse_core.sources.labs import check_patient_labs, labs_from_table, to_clock
from medfuse_core.sources.vitals import vitals_from_table

PATIENT_FILE = "patient.json"
LABS_FILE = "labs.csv"
VITALS_FILE = "vitals.csv"
NOTES_DIR = "notes"
IMAGES_DIR = "images"
INDEX_FILE = "index.csv"
TRUTH_FILE = "truth.json"

IMAGE_SUFFIXES = {"dicom": ".dcm", "png": ".png", "jpeg": ".jpg"}
MAX_PATIENT_JSON_BYTES = 1024**2  # a patient.json is ~1 KB; labels for thousands of diseases fit
MAX_PATIENT_ID_CHARS = 128  # MRNs and MIMIC ids are < 20; an id is written into every audit line
MAX_NOTE_CHARS = 200_000  # longer notes are cut (a discharge summary is rarely over 50,000 characters)
_LABS_EXPECTED = "time, value and item or itemid"
_VITALS_EXPECTED = "time, channel and value"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def is_bundle(folder: Path) -> bool:
    return (Path(folder) / PATIENT_FILE).is_file()


def find_bundles(root: Path) -> list[Path]:
    """`root` itself if it is a bundle, else every bundle folder below it, sorted."""
    root = Path(root)
    if is_bundle(root):
        return [root]
    return sorted(p.parent for p in root.rglob(PATIENT_FILE))


# ----------------------------------------------------------------------------------------- reading


def read_bundle(folder: str | Path, films_only: bool = False) -> PatientRecord:
    """Read one bundle. Raises `DataError` only when patient.json itself is unusable.
    `films_only`: patient.json and the images, nothing else (what the image encoder's stage 1 needs
    from another cohort; about 5x faster than the whole bundle on the synthetic cohort)."""
    folder = Path(folder)
    record, clock = _read_patient_json(folder)
    problems = record.problems
    times = _BundleTimes(record.index_time, clock)
    if films_only:
        record.images = (_read_images(folder / IMAGES_DIR, problems, times)
                         if _kept_inside(folder / IMAGES_DIR, folder, problems) else [])
        return record
    labs = _read_table(folder / LABS_FILE, labs_from_table, Labs, problems, folder, _LABS_EXPECTED, times)
    record.labs, found = check_patient_labs(labs, str(folder / LABS_FILE))
    problems.extend(found)
    record.vitals = _read_table(folder / VITALS_FILE, vitals_from_table, Vitals, problems, folder, _VITALS_EXPECTED,
                                times)
    record.notes = (_read_notes(folder / NOTES_DIR, problems, times)
                    if _kept_inside(folder / NOTES_DIR, folder, problems) else [])
    record.images = (_read_images(folder / IMAGES_DIR, problems, times)
                     if _kept_inside(folder / IMAGES_DIR, folder, problems) else [])
    record.truth = _read_truth(folder / TRUTH_FILE, problems) if _kept_inside(folder / TRUTH_FILE, folder, problems) else None
    _read_registered(folder, record)
    return record


def _read_registered(folder: Path, record: PatientRecord) -> None:
    """The other registered modalities (medfuse_core/modalities.py), each by its loader
    `(folder, problems) -> data or None`. A loader that fails costs its modality, never the patient."""
    for spec in REGISTRY:
        if spec.key in MODALITIES or not spec.loader:
            continue
        try:
            record.extra[spec.key] = spec.resolve("loader")(folder, record.problems)
        except DataError as exc:
            record.problems.append(exc.problem)
            record.extra[spec.key] = None
        except (OSError, ValueError) as exc:
            record.problems.append(error(str(folder / (spec.bundle_files[0] if spec.bundle_files else "")), spec.key,
                                         f"expected a readable {spec.long_name}: {exc}"))
            record.extra[spec.key] = None


# Relative times: a column of minutes or hours from patient.json's index_time, in place of `time`.
RELATIVE_TIME_COLUMNS = {"offset_minutes": 60, "offset_hours": 3600}  # seconds per unit


@dataclass(frozen=True)
class _BundleTimes:
    """The bundle's time rule for every file: its index time and its clock (the index time's UTC
    offset, None when it has none); see `labs.parse_times`."""

    index_time: pd.Timestamp | None
    clock: datetime.tzinfo | None

    def absolute(self, table: pd.DataFrame, file: str, problems: list[Problem]) -> pd.DataFrame:
        """`table` with a `time` column made from a relative-time column when it has no `time` column."""
        columns = {str(c).replace("\ufeff", "").strip().lower(): c for c in table.columns}
        relative = next((c for c in RELATIVE_TIME_COLUMNS if c in columns), None)
        if "time" in columns or relative is None:
            return table
        if self.index_time is None:
            problems.append(warning(file, relative, "expected an index_time in patient.json to place times given "
                                                    "relative to it; these rows have no time"))
            return table.assign(time="")
        seconds = pd.to_numeric(table[columns[relative]].astype(str).str.strip(), errors="coerce")
        seconds = (seconds * RELATIVE_TIME_COLUMNS[relative]).round()
        seconds = seconds.where(seconds.abs() < 200 * 365 * 86400)  # beyond any stay: left to the time checks
        stamps = self.index_time + pd.to_timedelta(seconds, unit="s")
        return table.assign(time=stamps.dt.strftime("%Y-%m-%d %H:%M:%S").fillna(table[columns[relative]].astype(str)))

    def stamp(self, value: Any, file: str, field: str, problems: list[Problem]) -> pd.Timestamp | None:
        return _timestamp(value, file, field, problems, self.clock)


def _outside(path: Path, folder: Path) -> bool:
    """True when `path` exists only as a link to somewhere outside `folder`."""
    return path.is_symlink() and not path.resolve().is_relative_to(folder.resolve())


def _link_message(path: Path, what: str, folder: Path | None = None) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if folder is not None and not _outside(path, folder):
        return f"expected a {what}, not a link (to {excerpt(target)}); links are not followed; left out"
    return f"expected a {what} inside the bundle folder; it is a link to {excerpt(target)}, outside it; left out"


def _linked(path: Path, folder: Path) -> Path | None:
    """The first link on the way from `folder` to `path` (`path` included), or None. Every file and folder
    read from a bundle must be itself: a link, even to a file inside, could be swapped for /etc/passwd."""
    try:
        parts = path.relative_to(folder).parts
    except ValueError:
        return path
    here = folder
    for part in parts:
        here = here / part
        if here.is_symlink():
            return here
    return None


def _kept_inside(path: Path, folder: Path, problems: list[Problem]) -> bool:
    """False (with an error problem) when `path` is, or lies under, a link; nothing is read through it."""
    link = _linked(path, folder)
    if link is None:
        return True
    problems.append(error(str(link), "", _link_message(link, "folder" if link.is_dir() else "file", folder)))
    return False


def _read_patient_json(folder: Path) -> tuple[PatientRecord, datetime.tzinfo | None]:
    path = folder / PATIENT_FILE
    if path.is_symlink():
        raise DataError(str(path), "", _link_message(path, "file", folder))
    if not path.is_file():
        raise DataError(str(path), "", "expected a patient.json file in every bundle folder")
    try:
        meta = bounded_json.read(path, max_bytes=MAX_PATIENT_JSON_BYTES)
    except bounded_json.JsonLimitError as exc:
        raise DataError(str(path), exc.field, exc.message) from None
    except OSError as exc:
        raise DataError(str(path), "", f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict):
        raise DataError(str(path), "", f"expected a JSON object, found {type(meta).__name__}")
    patient_id = meta.get("patient_id")
    if not isinstance(patient_id, (str, int)) or isinstance(patient_id, bool) or not str(patient_id).strip():
        raise DataError(str(path), "patient_id", "expected a non-empty string")
    patient_id = str(patient_id).strip()
    if len(patient_id) > MAX_PATIENT_ID_CHARS:
        raise DataError(str(path), "patient_id", f"expected at most {MAX_PATIENT_ID_CHARS} characters; found "
                                                 f"{len(patient_id):,} ({excerpt(patient_id, 20)})")
    if not patient_id.isprintable():
        raise DataError(str(path), "patient_id", f"expected printable characters only (no line breaks or control "
                                                 f"characters); found {excerpt(patient_id)}")
    problems: list[Problem] = []
    clock = _clock(meta.get("index_time"))
    record = PatientRecord(
        patient_id=str(patient_id).strip(),
        age=_age(meta.get("age"), str(path), problems),
        sex=_sex(meta.get("sex"), str(path), problems),
        index_time=_timestamp(meta.get("index_time"), str(path), "index_time", problems, clock),
        labels=_labels(meta.get("labels"), str(path), problems),
        problems=problems,
        source=str(folder),
    )
    return record, clock


def _clock(value: Any) -> datetime.tzinfo | None:
    """The UTC offset the index time is written with, None when it has none (or is unusable)."""
    try:
        stamp = pd.Timestamp(value) if isinstance(value, str) and value.strip() else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None if stamp is None or pd.isna(stamp) else stamp.tzinfo


def _age(value: Any, file: str, problems: list[Problem]) -> float | None:
    if value is None:
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        problems.append(warning(file, "age", f"expected a number of years, found {value!r}; age left unknown"))
        return None
    if not 0 <= age <= 130:
        problems.append(warning(file, "age", f"expected 0 to 130 years, found {age:g}; age left unknown"))
        return None
    return age


_SEX = {"f": "F", "female": "F", "m": "M", "male": "M"}


def _sex(value: Any, file: str, problems: list[Problem]) -> str | None:
    if value is None or value == "":
        return None
    sex = _SEX.get(str(value).strip().lower())
    if sex is None:
        problems.append(warning(file, "sex", f"expected 'F' or 'M', found {value!r}; sex left unknown"))
    return sex


def _timestamp(value: Any, file: str, field: str, problems: list[Problem],
               clock: datetime.tzinfo | None = None) -> pd.Timestamp | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError, OverflowError):
        stamp = pd.NaT
    if pd.isna(stamp):
        problems.append(warning(file, field, f"expected an ISO date-time like 2131-05-07 14:00, found {value!r}"))
        return None
    if stamp.tzinfo is not None and clock is None:
        problems.append(warning(file, field, f"{value!r} carries a UTC offset but patient.json's index_time has "
                                             "none; the offset was dropped and the local clock time kept"))
    return to_clock(stamp, clock)


def _labels(value: Any, file: str, problems: list[Problem]) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(warning(file, "labels", f"expected an object of label name -> 0 or 1, found {type(value).__name__}"))
        return None
    labels: dict[str, int] = {}
    for name, flag in value.items():
        if flag in (0, 1, True, False):
            labels[str(name)] = int(flag)
        else:
            problems.append(warning(file, f"labels.{name}", f"expected 0 or 1, found {flag!r}; label left out"))
    return labels


def _read_table(path: Path, parse, empty_type, problems: list[Problem], folder: Path, expected: str,
                times: _BundleTimes | None = None):
    if not _kept_inside(path, folder, problems) or not path.is_file():
        return empty_type()
    raw = read_csv_text(path, problems)
    if raw is None:
        return empty_type()
    if len(raw.columns) == 0:
        problems.append(warning(str(path), "", f"expected a header line with columns {expected}, then rows; "
                                               "the file is empty, so nothing was read from it"))
        return empty_type()
    if times is not None:
        raw = times.absolute(raw, str(path), problems)
    try:
        table, found = parse(raw, str(path), times.clock if times is not None else None)
    except DataError as exc:
        problems.append(exc.problem)
        return empty_type()
    problems.extend(found)
    return table


def _read_index(folder: Path, problems: list[Problem], required_suffixes: tuple[str, ...]) -> pd.DataFrame | None:
    """The folder's index.csv, or one built from its files (with a warning) when it has none."""
    index_path = folder / INDEX_FILE
    if index_path.is_symlink():
        problems.append(error(str(index_path), "", _link_message(index_path, "file", folder)))
        return None
    if not index_path.is_file():
        files = sorted(p.name for p in folder.iterdir()
                       if not p.is_symlink() and p.is_file() and p.suffix.lower() in required_suffixes)
        if files:
            problems.append(warning(str(index_path), "", "expected an index.csv with columns file,time,... ; "
                                    f"using the {len(files)} files found, without times"))
        return pd.DataFrame({"file": files})
    index = read_csv_text(index_path, problems)
    if index is None:
        return None
    index.columns = [str(c).strip().lower() for c in index.columns]
    if "file" not in index.columns:
        problems.append(error(str(index_path), "file", f"expected a 'file' column; found "
                                                       f"{excerpt(', '.join(map(str, index.columns)), 60)}"))
        return None
    return index


def _indexed_files(folder: Path, suffixes: tuple[str, ...], kind: str, problems: list[Problem], times: _BundleTimes):
    """(row number, index row, file path, index path) for every index row naming a file in `folder`;
    a row naming no existing file inside the folder is an error problem and is skipped."""
    if not folder.is_dir():
        return
    index = _read_index(folder, problems, suffixes)
    if index is None:
        return
    where = str(folder / INDEX_FILE)
    index = times.absolute(index, where, problems)
    for row_number, row in enumerate(index.to_dict("records"), start=1):
        name = str(row.get("file", "")).strip()
        path = _inside(folder, name)
        link = _linked(folder / name, folder) if name else None
        if link is not None:
            problems.append(error(where, f"row {row_number}: file", f"{_link_message(link, 'file', folder)} "
                                                                    f"({kind} {excerpt(name)})"))
            continue
        if path is None or not path.is_file():
            problems.append(error(where, f"row {row_number}: file",
                                  f"expected an existing file in {folder.name}/, found {excerpt(name)}; {kind} left out"))
            continue
        yield row_number, row, path, where


def read_note_text(path: Path, problems: list[Problem]) -> str:
    """A note file's text: UTF-8 (or UTF-16 with a byte-order mark), at most MAX_NOTE_CHARS characters.
    Never raises on content: undecodable bytes are replaced, and each departure is a problem."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
        raw = f.read(4 * MAX_NOTE_CHARS + 4)  # enough bytes for MAX_NOTE_CHARS characters in any UTF
        more = bool(f.read(1))
    text = _decode_note(raw, more, path, problems)
    size = path.stat().st_size
    if len(text) > MAX_NOTE_CHARS or more:
        problems.append(warning(str(path), "text", f"expected at most {MAX_NOTE_CHARS:,} characters; the note is "
                                                   f"longer ({size:,} bytes): only the first {MAX_NOTE_CHARS:,} "
                                                   "characters are kept"))
        text = text[:MAX_NOTE_CHARS]
    return text


def _decode_note(raw: bytes, cut: bool, path: Path, problems: list[Problem]) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.append(warning(str(path), "", "expected UTF-8 text; read as UTF-16 (the file starts with its "
                                               "byte-order mark)"))
        if cut and len(raw) % 2:
            raw = raw[:-1]
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            return raw[: exc.start].decode("utf-8-sig")  # a character split by the read limit
        problems.append(warning(str(path), "", f"expected UTF-8 text ({exc.reason} at byte {exc.start}); "
                                               "undecodable bytes replaced"))
        return raw.decode("utf-8", errors="replace")


def _read_notes(folder: Path, problems: list[Problem], times: _BundleTimes) -> list[Note]:
    notes = []
    for row_number, row, path, where in _indexed_files(folder, (".txt",), "note", problems, times):
        text = read_note_text(path, problems)
        if not text.strip():
            problems.append(warning(str(path), "text", "expected note text; the file is empty; note left out"))
            continue
        notes.append(Note(
            time=times.stamp(row.get("time"), where, f"row {row_number}: time", problems),
            category=str(row.get("category", "")).strip(),
            text=text.replace("\r\n", "\n"),
            source=str(path),
        ))
    return notes


def _read_images(folder: Path, problems: list[Problem], times: _BundleTimes) -> list[ChestImage]:
    images = []
    for row_number, row, path, where in _indexed_files(folder, (".dcm", ".dicom", ".png", ".jpg", ".jpeg"), "image",
                                                       problems, times):
        try:
            loaded = load_image(path, radiograph=True)
        except DataError as exc:
            problems.append(exc.problem)
            continue
        problems.extend(loaded.problems)
        view = str(row.get("view", "")).strip() or (loaded.metadata.view_position or "")
        images.append(ChestImage(
            time=times.stamp(row.get("time"), where, f"row {row_number}: time", problems),
            view=view,
            pixels=loaded.pixels,
            source=str(path),
            metadata=loaded.metadata,
        ))
    return images


def _inside(folder: Path, name: str) -> Path | None:
    """`folder/name` if it stays inside `folder` (an index must not point elsewhere on disk)."""
    if not name:
        return None
    path = folder / name
    return path if path.resolve().is_relative_to(folder.resolve()) else None


def _read_truth(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        truth = bounded_json.read(path)
    except bounded_json.JsonLimitError as exc:
        problems.append(error(str(path), exc.field, f"{exc.message}; truth left out"))
        return None
    except OSError as exc:
        problems.append(error(str(path), "", f"cannot be read ({exc.strerror or exc}); truth left out"))
        return None
    if not isinstance(truth, dict):
        problems.append(error(str(path), "", "expected a JSON object; truth left out"))
        return None
    return truth


# ----------------------------------------------------------------------------------------- writing


def write_bundle(record: PatientRecord, folder: str | Path) -> Path:
    """Write `record` as a bundle folder (created if needed) and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "patient_id": record.patient_id,
        "age": record.age,
        "sex": record.sex,
        "index_time": _format_time(record.index_time),
    }
    if record.labels is not None:
        meta["labels"] = record.labels
    (folder / PATIENT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if record.labs.present:
        _write_labs(record.labs, folder / LABS_FILE)
    if record.vitals.present:
        _write_vitals(record.vitals, folder / VITALS_FILE)
    if record.notes:
        _write_notes(record.notes, folder / NOTES_DIR)
    if record.images:
        _write_images(record, folder / IMAGES_DIR)
    if record.truth is not None:
        (folder / TRUTH_FILE).write_text(json.dumps(record.truth, indent=1) + "\n", encoding="utf-8")
    return folder


def _format_time(stamp: pd.Timestamp | None) -> str:
    return "" if stamp is None or pd.isna(stamp) else pd.Timestamp(stamp).strftime(_TIME_FORMAT)


def _value_text(value: float, text: str) -> str:
    if text:
        return text
    return "" if value is None or math.isnan(value) else f"{value:g}"


def _write_labs(labs: Labs, path: Path) -> None:
    t = labs.table
    out = pd.DataFrame({
        "time": t["time"].dt.strftime(_TIME_FORMAT).fillna(""),
        "itemid": t["itemid"].astype("string").fillna(""),
        "item": t["item"],
        "value": [_value_text(v, s) for v, s in zip(t["value"], t["value_text"])],
        "unit": t["unit"],
        "ref_low": t["ref_low"].map(lambda v: "" if math.isnan(v) else f"{v:g}"),
        "ref_high": t["ref_high"].map(lambda v: "" if math.isnan(v) else f"{v:g}"),
        "flag": t["flag"],
    })
    out.to_csv(path, index=False)


def _write_vitals(vitals: Vitals, path: Path) -> None:
    t = vitals.table
    out = pd.DataFrame({
        "time": t["time"].dt.strftime(_TIME_FORMAT).fillna(""),
        "channel": t["channel"],
        "value": [_value_text(v, s) for v, s in zip(t["value"], t["value_text"])],
    })
    out.to_csv(path, index=False)


def _write_notes(notes: list[Note], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    rows = []
    for i, note in enumerate(notes):
        name = f"note_{i:02d}.txt"
        (folder / name).write_text(note.text, encoding="utf-8", newline="\n")
        rows.append({"file": name, "time": _format_time(note.time), "category": note.category})
    pd.DataFrame(rows, columns=["file", "time", "category"]).to_csv(folder / INDEX_FILE, index=False)


def _write_images(record: PatientRecord, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    rows = []
    for i, image in enumerate(record.images):
        meta: ImageMetadata = image.metadata
        name = f"image_{i:02d}{IMAGE_SUFFIXES.get(meta.file_format or 'dicom', '.dcm')}"
        write_image(
            image.pixels,
            folder / name,
            # pixels are already display grey: colour or 32-bit sources are written as 16-bit grey
            photometric="MONOCHROME1" if meta.photometric == "MONOCHROME1" else "MONOCHROME2",
            bits_stored=min(max(meta.bits_stored or 12, 8), 16),
            view_position=meta.view_position or image.view or None,
            study_date=meta.study_date,
            pixel_spacing_mm=meta.pixel_spacing_mm,
            patient_id=record.patient_id,
        )
        rows.append({"file": name, "time": _format_time(image.time), "view": image.view})
    pd.DataFrame(rows, columns=["file", "time", "view"]).to_csv(folder / INDEX_FILE, index=False)
