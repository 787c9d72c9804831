"""MIMIC-III tables -> one `PatientRecord` per hospital admission (or per ICU stay).

Works on real extracts, warts included: table files found ignoring case (`ADMISSIONS.csv.gz`,
`admissions.csv`), headers in either case, `LABEVENTS_PARTIAL` (HADM_ID, ITEMID, CHARTTIME, VALUE,
VALUEUOM, FLAG only) in place of `LABEVENTS`, a header-only `NOTEEVENTS`, no `CHARTEVENTS`. Only the
needed columns are read, and the big event tables in chunks, keeping the rows of the stays read.

- Unit: `unit="admission"` (id `H{hadm_id}`, index time ADMITTIME) or `unit="icustay"` (id
  `S{icustay_id}`, index time INTIME). In ICU-stay mode an admission's events are split among its
  stays by time: a row belongs to the last stay whose INTIME is at or before it, rows before the first
  stay to the first stay, so no row of an admission with a stay is lost or counted twice. Admissions
  without a stay give no record in that mode (their rows are counted as not imported).
- Demographics from PATIENTS: sex, and age at the index time from DOB. MIMIC-III shifts the DOB of
  patients older than 89 so that they appear ~300 years old; such ages are capped at 90 with a warning.
- Labs from LABEVENTS (or LABEVENTS_PARTIAL) joined by HADM_ID, names from D_LABITEMS.LABEL, units
  from VALUEUOM, flags from FLAG, values through `labs_from_table` (text kept). Rows without a
  HADM_ID are outpatient labs that cannot be tied to a stay: counted, not imported.
- Vitals on the mimic3-benchmarks channels through its `itemid_to_variable_map.csv`, filtered as its
  `read_itemid_to_variable_map` does (LEVEL2 set, COUNT > 0, STATUS == "ready"; a derived copy of
  those 114 rows is vendored as `itemid_to_variable_map_ready.csv`): CHARTEVENTS rows of chartevents
  items, plus LABEVENTS rows of labevents items (glucose 50931/50809/51478, pH 50820/51491/50831/51094,
  oxygen saturation 50817), which stay in the labs too. As the benchmark's `clean_lab` and
  `clean_events`, a lab value that is not a plain number ("NEG", "GREATER THAN 500") gives no vitals row.
  Weight and height in oz / lb / in are converted as its `clean_weight` / `clean_height`.
- Notes from NOTEEVENTS by HADM_ID (time CHARTTIME, else CHARTDATE); ISERROR = 1 notes left out.
- Labels: the 25 benchmark phenotypes from DIAGNOSES_ICD (`phenotypes.py`) and "In-hospital
  mortality" from ADMISSIONS.HOSPITAL_EXPIRE_FLAG.

A missing optional table means the modality (or label set) is absent, with one warning on
`Mimic3Reader.problems`; an optional table without a column it needs is an error problem there and
is left out. ADMISSIONS (and ICUSTAYS in ICU-stay mode) are required: without them, or without one
of their needed columns, `DataError` is raised, naming file and column.

All table access is in `_Tables` (pandas reading CSV / CSV.GZ), so it can be swapped for DuckDB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_core.problems import DataError, Problem, error, warning
from medfuse_core.record import Labs, Note, PatientRecord, Vitals
from medfuse_core.sources.ehr_reader import (
    LAB_KEYS,
    VITAL_KEYS,
    MAX_AGE,
    ReaderStats,
    RecordReader,
    renumber_problems,
    align_rows,
    empty_table,
    items_linked_to,
)
from medfuse_core.sources.labs import labs_from_table
from medfuse_core.sources.phenotypes import (
    MORTALITY,
    PhenotypeDefinitions,
    examples,
    load_phenotype_definitions,
    match_phenotypes,
)
from medfuse_core.sources.vitals import vitals_from_table

UNITS = ("admission", "icustay")
SHIFTED_AGE = 120.0  # an age above this can only come from that shift
CHUNK_ROWS = 1_000_000
_BENCHMARK_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")  # clean_lab: anything else is NaN, then dropped

# table -> (columns that must be there, columns used when there)
_SCHEMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ADMISSIONS": (("subject_id", "hadm_id", "admittime"), ("hospital_expire_flag",)),
    "PATIENTS": (("subject_id",), ("gender", "dob")),
    "ICUSTAYS": (("subject_id", "hadm_id", "icustay_id", "intime"), ()),
    "LABEVENTS": (("hadm_id", "itemid", "charttime", "value"), ("valueuom", "flag")),
    "D_LABITEMS": (("itemid", "label"), ()),
    "DIAGNOSES_ICD": (("hadm_id",), ("icd9_code", "icd_code", "icd_version")),
    "NOTEEVENTS": (("hadm_id", "text"), ("chartdate", "charttime", "category", "iserror")),
    "CHARTEVENTS": (("hadm_id", "itemid", "charttime", "value"), ("icustay_id", "valueuom")),
}
_ALTERNATIVES = {"LABEVENTS": ("LABEVENTS", "LABEVENTS_PARTIAL")}
_OPTIONAL_TABLES = {
    "PATIENTS": "no age or sex",
    "LABEVENTS": "no labs (and no glucose / pH / oxygen saturation vitals)",
    "D_LABITEMS": "lab names left empty (item ids kept)",
    "DIAGNOSES_ICD": "no phenotype labels",
    "NOTEEVENTS": "no notes",
    "CHARTEVENTS": "no bedside vitals (only those mimic3-benchmarks takes from LABEVENTS)",
}


# ----------------------------------------------------------------------------------------- tables


def _table_key(path: Path) -> str | None:
    name = path.name.upper()
    for suffix in (".CSV.GZ", ".CSV"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _clean_ids(values: pd.Series) -> pd.Series:
    """Id text as written ("193924", " 193924", "193924.0" -> "193924"); "" where missing."""
    return values.str.strip().str.replace(r"\.0+$", "", regex=True)


class _Tables:
    """The MIMIC-III tables of one folder: found ignoring case, read as text with lower-case headers.

    The one place that touches the files: a DuckDB (or Parquet) backend replaces this class.
    """

    def __init__(self, root: Path, problems: list[Problem]):
        self.root = root
        self.problems = problems
        self.files: dict[str, Path] = {}
        candidates = sorted(p for p in [*root.glob("*"), *root.glob("*/*")] if p.is_file())
        for path in candidates:
            key = _table_key(path)
            if key is None:
                continue
            if key in self.files:
                problems.append(warning(str(path), "", f"another file holds table {key}: {self.files[key].name} is used"))
                continue
            self.files[key] = path

    def path(self, table: str) -> Path | None:
        for name in _ALTERNATIVES.get(table, (table,)):
            if name in self.files:
                return self.files[name]
        return None

    def _columns(self, path: Path, table: str) -> dict[str, str]:
        """lower-case name -> name as written in the header."""
        try:
            header = pd.read_csv(path, nrows=0, encoding_errors="replace")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, UnicodeError) as exc:
            raise DataError(str(path), "", f"expected a CSV table ({table}) with a header line: {exc}") from None
        out: dict[str, str] = {}
        for name in header.columns:
            out.setdefault(str(name).replace("\ufeff", "").strip().lower(), name)
        return out

    def read(
        self,
        table: str,
        keep: Callable[[pd.DataFrame], pd.Series] | None = None,
    ) -> pd.DataFrame | None:
        """The needed columns of `table` as text ("" when empty), lower-case names; None if absent.

        `keep(chunk)` selects the rows to keep, chunk by chunk, so a big table never sits in memory
        whole. Raises `DataError` naming the file and the first missing required column.
        """
        path = self.path(table)
        if path is None:
            return None
        required, optional = _SCHEMA[table]
        columns = self._columns(path, table)
        for name in required:
            if name not in columns:
                found = ", ".join(columns) if columns else "no columns"
                raise DataError(str(path), name, f"expected columns {', '.join(required)} in {table}; found {found}")
        wanted = [n for n in (*required, *optional) if n in columns]
        usecols = [columns[n] for n in wanted]
        parts = []
        try:
            reader = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=usecols, chunksize=CHUNK_ROWS,
                                 encoding_errors="replace")
            for chunk in reader:
                chunk = chunk.rename(columns={columns[n]: n for n in wanted})[wanted]
                if keep is not None:
                    chunk = chunk[keep(chunk).to_numpy()]
                parts.append(chunk)
        except (pd.errors.ParserError, OSError, EOFError, UnicodeError) as exc:
            raise DataError(str(path), "", f"expected a readable CSV table ({table}): {exc}") from None
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=wanted)
        return out.astype(str) if len(out) else out.astype(object)


# --------------------------------------------------------------------------------------- mappings


def _convert_weight_height(variables: pd.Series, values: pd.Series, units: pd.Series, labels: pd.Series) -> pd.Series:
    """clean_weight / clean_height: oz -> lb, lb -> kg, in -> cm (by unit or item label); text out."""
    hints = (units.str.lower() + " " + labels.str.lower())
    number = pd.to_numeric(values.str.strip(), errors="coerce")
    out = values.copy()
    weight = variables == "Weight"
    oz = weight & hints.str.contains("oz", regex=False)
    lb = weight & (oz | hints.str.contains("lb", regex=False))
    kg = number.where(~oz, number / 16.0).where(~lb, number.where(~oz, number / 16.0) * 0.453592)
    inch = (variables == "Height") & hints.str.contains("in", regex=False)
    cm = np.round(number * 2.54)
    convert = (lb | inch) & number.notna()
    out[convert & lb] = kg[convert & lb].map(lambda v: f"{v:.4g}")
    out[convert & inch] = cm[convert & inch].map(lambda v: f"{v:g}")
    return out


class Mimic3Reader(RecordReader):
    """Records of one MIMIC-III folder, one per admission or ICU stay, in subject and time order.

    Tables are read once, on first use; `problems` holds reader-level warnings (missing tables,
    rows that could not be placed), each record its own.
    """

    def __init__(
        self,
        root: str | Path,
        unit: str = "admission",
        *,
        limit: int | None = None,
        definitions: PhenotypeDefinitions | None = None,
    ):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(str(self.root), "", "expected a folder of MIMIC-III tables (ADMISSIONS.csv.gz, ...)")
        self.unit = unit
        self.limit = limit
        self.definitions = definitions or load_phenotype_definitions()
        self.problems: list[Problem] = []
        self.stats = ReaderStats()
        self._tables = _Tables(self.root, self.problems)
        self._units: pd.DataFrame | None = None
        self._loaded = False

    # ---- public

    @property
    def index(self) -> pd.DataFrame:
        """One row per record, in iteration order: record_id, subject_id, hadm_id, icustay_id, index_time."""
        return self._unit_table()[["record_id", "subject_id", "hadm_id", "icustay_id", "index_time"]].copy()

    def __iter__(self) -> Iterator[PatientRecord]:
        self._load()
        for position in range(len(self._units)):
            yield self._record(position)

    def records(self) -> list[PatientRecord]:
        return list(self)

    # ---- units

    def _note_missing_tables(self) -> None:
        for table in ("ADMISSIONS", *_OPTIONAL_TABLES, *(("ICUSTAYS",) if self.unit == "icustay" else ())):
            path = self._tables.path(table)
            self.stats.tables[table] = path.name if path else ""
            if path is None and table in _OPTIONAL_TABLES:
                self.problems.append(warning(str(self.root), table, f"table not found: {_OPTIONAL_TABLES[table]}"))

    def _required(self, table: str) -> pd.DataFrame:
        frame = self._tables.read(table)
        if frame is None:
            raise DataError(str(self.root), table, f"expected a {table}.csv or {table}.csv.gz table in the folder")
        return frame

    def _optional(self, table: str, keep: Callable[[pd.DataFrame], pd.Series] | None = None) -> pd.DataFrame | None:
        """An optional table, or None (with an error problem) when it lacks a column it needs."""
        try:
            return self._tables.read(table, keep)
        except DataError as exc:
            self.problems.append(error(exc.problem.file, exc.problem.field, exc.problem.message + "; table left out"))
            return None

    def _unit_table(self) -> pd.DataFrame:
        """One row per record: record_id, subject_id, hadm_id, icustay_id, index_time (+ admission data)."""
        if self._units is not None:
            return self._units
        self._note_missing_tables()
        admissions = self._required("ADMISSIONS")
        for name in ("subject_id", "hadm_id"):
            admissions[name] = _clean_ids(admissions[name])
        admissions["admittime"] = pd.to_datetime(admissions["admittime"], errors="coerce")
        if "hospital_expire_flag" not in admissions:
            self.problems.append(warning(self._file("ADMISSIONS"), "hospital_expire_flag",
                                         "column not found: no in-hospital mortality label"))
        if self.unit == "admission":
            units = admissions.assign(icustay_id="", index_time=admissions["admittime"])
            units["record_id"] = "H" + units["hadm_id"]
        else:
            stays = self._required("ICUSTAYS")
            for name in ("subject_id", "hadm_id", "icustay_id"):
                stays[name] = _clean_ids(stays[name])
            stays["index_time"] = pd.to_datetime(stays["intime"], errors="coerce")
            units = stays.drop(columns=["intime"]).merge(admissions.drop(columns=["subject_id"]), on="hadm_id",
                                                         how="left", indicator=True)
            orphans = units["_merge"] == "left_only"
            if orphans.any():
                example = units["icustay_id"][orphans].iloc[0]
                message = (f"{int(orphans.sum())} ICU stays of no admission in ADMISSIONS, e.g. ICUSTAY_ID "
                           f"{example}; read without admission data")
                self.problems.append(warning(self._file("ICUSTAYS"), "hadm_id", message))
            units = units.drop(columns=["_merge"])
            units["record_id"] = "S" + units["icustay_id"]
        units["_subject"] = pd.to_numeric(units["subject_id"], errors="coerce")
        units = units.sort_values(["_subject", "subject_id", "index_time", "record_id"], kind="stable")
        units = units.drop(columns=["_subject"]).reset_index(drop=True)
        if self.limit is not None:
            units = units.head(max(int(self.limit), 0)).reset_index(drop=True)
        self._units = units
        return units

    def _file(self, table: str) -> str:
        path = self._tables.path(table)
        return str(path) if path else table

    # ---- events -> record positions

    def _positions(self, hadm_ids: pd.Series, times: pd.Series) -> np.ndarray:
        """Record position of each event row (-1 where it belongs to no record read)."""
        units = self._units
        if self.unit == "admission":
            lookup = pd.Series(np.arange(len(units)), index=units["hadm_id"])
            lookup = lookup[~lookup.index.duplicated()]
            return hadm_ids.map(lookup).fillna(-1).astype(int).to_numpy()
        out = np.full(len(hadm_ids), -1, dtype=int)
        stays = pd.DataFrame({"hadm_id": units["hadm_id"], "intime": units["index_time"], "pos": np.arange(len(units))})
        stays = stays[stays["intime"].notna()].sort_values("intime")
        first = stays.sort_values(["hadm_id", "intime"]).drop_duplicates("hadm_id").set_index("hadm_id")["pos"]
        rows = pd.DataFrame({"hadm_id": hadm_ids.to_numpy(), "time": pd.to_datetime(times, errors="coerce").to_numpy(),
                             "row": np.arange(len(hadm_ids))})
        timed = rows[rows["time"].notna() & rows["hadm_id"].isin(first.index)].sort_values("time")
        if len(timed):
            matched = pd.merge_asof(timed, stays, left_on="time", right_on="intime", by="hadm_id", direction="backward")
            out[matched["row"].to_numpy()] = matched["pos"].fillna(-1).astype(int).to_numpy()
        unmatched = (out == -1) & rows["hadm_id"].isin(first.index).to_numpy()
        out[unmatched] = rows["hadm_id"][unmatched].map(first).to_numpy()
        return out

    @staticmethod
    def _groups(positions: np.ndarray) -> dict[int, np.ndarray]:
        placed = np.flatnonzero(positions >= 0)
        if not len(placed):
            return {}
        order = placed[np.argsort(positions[placed], kind="stable")]
        keys, starts = np.unique(positions[order], return_index=True)
        return dict(zip(keys.tolist(), np.split(order, starts[1:])))

    def _keep_rows_of_units(self) -> Callable[[pd.DataFrame], pd.Series]:
        wanted = set(self._units["hadm_id"])
        return lambda chunk: _clean_ids(chunk["hadm_id"]).isin(wanted)

    # ---- loading

    def _load(self) -> None:
        if self._loaded:
            return
        units = self._unit_table()
        self._patients = self._load_patients()
        self._labs, self._lab_groups, lab_vitals = self._load_labs()
        chart_vitals = self._load_chartevents()
        self._vitals, self._vital_groups = self._merge_vitals(lab_vitals, chart_vitals)
        self._notes, self._note_groups = self._load_notes()
        self._phenotypes = self._load_diagnoses(units)
        self._loaded = True

    def _load_patients(self) -> pd.DataFrame | None:
        patients = self._optional("PATIENTS")
        if patients is None:
            return None
        patients["subject_id"] = _clean_ids(patients["subject_id"])
        patients = patients.drop_duplicates("subject_id").set_index("subject_id")
        if "dob" in patients:
            patients["dob"] = pd.to_datetime(patients["dob"], errors="coerce")
        return patients

    def _load_labs(self) -> tuple[pd.DataFrame | None, dict[int, np.ndarray], pd.DataFrame | None]:
        labs_path = self._tables.path("LABEVENTS")
        labs = self._optional("LABEVENTS") if labs_path is not None else None
        if labs is None:
            return None, {}, None
        self.stats.lab_rows = len(labs)
        labs["hadm_id"] = _clean_ids(labs["hadm_id"])
        labs["itemid"] = labs["itemid"].str.strip()
        self.stats.lab_rows_without_stay = int((labs["hadm_id"] == "").sum())
        names = self._lab_item_names()
        labs["item"] = labs["itemid"].map(names).fillna("") if names is not None else ""
        positions = self._positions(labs["hadm_id"], labs["charttime"])
        self.stats.lab_rows_unplaced = int(((positions < 0) & (labs["hadm_id"] != "").to_numpy()).sum())
        if self.stats.lab_rows_unplaced:
            unplaced = labs["hadm_id"][(positions < 0) & (labs["hadm_id"] != "").to_numpy()]
            self.problems.append(warning(str(labs_path), "hadm_id", f"{self.stats.lab_rows_unplaced} lab rows with a "
                                         f"HADM_ID of no record read (e.g. {unplaced.iloc[0]}); not imported"))
        placed = np.flatnonzero(positions >= 0)
        raw = pd.DataFrame({
            "time": labs["charttime"], "itemid": labs["itemid"], "item": labs["item"], "value": labs["value"],
            "unit": labs["valueuom"] if "valueuom" in labs else "", "flag": labs["flag"] if "flag" in labs else "",
        }).iloc[placed].reset_index(drop=True)
        lab_items = items_linked_to("labevents")
        is_vital = labs["itemid"].isin(lab_items.index) & labs["value"].str.strip().str.match(_BENCHMARK_NUMBER)
        is_vital &= positions >= 0
        vitals = pd.DataFrame({
            "time": labs["charttime"][is_vital], "channel": labs["itemid"][is_vital].map(lab_items["variable"]),
            "value": labs["value"][is_vital], "position": positions[is_vital.to_numpy()],
        })
        self.stats.vital_rows_from_labs = len(vitals)
        table, groups = self._parse_split(raw, positions[placed], labs_from_table, str(labs_path), LAB_KEYS,
                                          file_rows=placed)
        self.stats.lab_rows_placed = int(sum(len(g) for g in groups.values()))
        return table, groups, vitals

    def _lab_item_names(self) -> pd.Series | None:
        items = self._optional("D_LABITEMS")
        if items is None:
            return None
        items["itemid"] = items["itemid"].str.strip()
        return items.drop_duplicates("itemid").set_index("itemid")["label"].str.strip()

    def _load_chartevents(self) -> pd.DataFrame | None:
        chart_items = items_linked_to("chartevents")
        wanted = set(self._units["hadm_id"])

        def keep(chunk: pd.DataFrame) -> pd.Series:
            return chunk["itemid"].str.strip().isin(chart_items.index) & _clean_ids(chunk["hadm_id"]).isin(wanted)

        events = self._optional("CHARTEVENTS", keep)
        if events is None:
            return None
        itemid = events["itemid"].str.strip()
        variables = itemid.map(chart_items["variable"])
        units = events["valueuom"] if "valueuom" in events else pd.Series("", index=events.index)
        values = _convert_weight_height(variables, events["value"], units, itemid.map(chart_items["label"]))
        hadm = _clean_ids(events["hadm_id"])
        if self.unit == "icustay" and "icustay_id" in events:
            by_stay = pd.Series(np.arange(len(self._units)), index=self._units["icustay_id"])
            positions = _clean_ids(events["icustay_id"]).map(by_stay[~by_stay.index.duplicated()])
            by_time = pd.Series(self._positions(hadm, events["charttime"]), index=events.index)
            positions = positions.fillna(by_time).astype(int).to_numpy()
        else:
            positions = self._positions(hadm, events["charttime"])
        self.stats.vital_rows_from_chartevents = int((positions >= 0).sum())
        return pd.DataFrame({"time": events["charttime"], "channel": variables, "value": values, "position": positions})

    def _merge_vitals(self, *parts: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[int, np.ndarray]]:
        present = [p for p in parts if p is not None]
        if not present:
            return None, {}
        vitals = pd.concat(present, ignore_index=True)
        files = [self._tables.path(t) for t in ("LABEVENTS", "CHARTEVENTS")]
        label = "vitals from " + " and ".join(p.name for p in files if p is not None)
        positions = vitals["position"].to_numpy()
        return self._parse_split(vitals.drop(columns=["position"]), positions, vitals_from_table, label, VITAL_KEYS)

    def _parse_split(
        self, raw: pd.DataFrame, positions: np.ndarray, parse, file: str, keys: tuple[str, ...],
        file_rows: np.ndarray | None = None,
    ):
        """Parse all rows in one call and split the result by record: (contract table, record -> rows).

        The parsers sort stably by time and may drop rows (no time, outliers) for reasons that are a
        function of the key columns only, so output rows are matched back to input rows by key and
        occurrence. Problems go on the reader. Where rows cannot be matched one to one, each record's
        rows are parsed on their own instead (slower, same result).
        """
        parsed, problems = parse(raw, file)
        table = parsed.table
        source_rows = align_rows(raw, table, keys, file)
        if source_rows is None:
            return self._parse_per_record(raw, positions, parse, file)
        self.problems.extend(renumber_problems(problems, file_rows) if file_rows is not None else problems)
        return table, self._groups(positions[source_rows])

    def _parse_per_record(self, raw, positions, parse, file):
        parts, groups, start = [], {}, 0
        for position, rows in self._groups(positions).items():
            hadm = self._units["hadm_id"].iloc[position]
            parsed, problems = parse(raw.iloc[rows].reset_index(drop=True), f"{file} (HADM_ID {hadm})")
            self.problems.extend(problems)
            parts.append(parsed.table)
            groups[position] = np.arange(start, start + len(parsed.table))
            start += len(parsed.table)
        if not parts:
            return None, {}
        return pd.concat(parts, ignore_index=True), groups

    def _load_notes(self) -> tuple[pd.DataFrame | None, dict[int, np.ndarray]]:
        notes = self._optional("NOTEEVENTS", self._keep_rows_of_units())
        if notes is None or not len(notes):
            return None, {}
        if "iserror" in notes:
            in_error = notes["iserror"].str.strip() == "1"
            self.stats.notes_in_error = int(in_error.sum())
            notes = notes[~in_error].reset_index(drop=True)
        charttime = notes["charttime"].str.strip() if "charttime" in notes else pd.Series("", index=notes.index)
        chartdate = notes["chartdate"].str.strip() if "chartdate" in notes else pd.Series("", index=notes.index)
        notes["time"] = pd.to_datetime(charttime.where(charttime != "", chartdate), errors="coerce")
        positions = self._positions(_clean_ids(notes["hadm_id"]), notes["time"])
        self.stats.note_rows = int((positions >= 0).sum())
        return notes, self._groups(positions)

    def _load_diagnoses(self, units: pd.DataFrame) -> dict[str, object] | None:
        diagnoses = self._optional("DIAGNOSES_ICD", self._keep_rows_of_units())
        if diagnoses is None:
            return None
        code_column = "icd9_code" if "icd9_code" in diagnoses else "icd_code" if "icd_code" in diagnoses else None
        if code_column is None:
            self.problems.append(error(self._file("DIAGNOSES_ICD"), "icd9_code",
                                       "expected an icd9_code (or icd_code) column; no phenotype labels"))
            return None
        diagnoses["hadm_id"] = _clean_ids(diagnoses["hadm_id"])
        diagnoses = diagnoses[diagnoses[code_column].str.strip() != ""]
        self.stats.diagnosis_rows = len(diagnoses)
        out = {}
        for hadm_id, rows in diagnoses.groupby("hadm_id", sort=False):
            versions = rows["icd_version"] if "icd_version" in rows else None
            match = match_phenotypes(rows[code_column], versions, self.definitions)
            self.stats.icd10_codes += match.icd10
            self.stats.unknown_codes += match.unknown
            out[hadm_id] = match
        if self.stats.icd10_codes:
            message = (f"{len(self.stats.icd10_codes)} ICD-10 codes not mapped (the phenotypes are ICD-9 groups), "
                       f"e.g. {', '.join(examples(self.stats.icd10_codes, 5))}")
            self.problems.append(warning(self._file("DIAGNOSES_ICD"), code_column, message))
        return out

    # ---- one record

    def _record(self, position: int) -> PatientRecord:
        unit = self._units.iloc[position]
        record_id = str(unit["record_id"])
        index_time = unit["index_time"] if pd.notna(unit["index_time"]) else None
        key = f"HADM_ID {unit['hadm_id']}" if self.unit == "admission" else f"ICUSTAY_ID {unit['icustay_id']}"
        where = f"{self.root}: {key}"
        problems: list[Problem] = []
        age, sex = self._demographics(unit, index_time, where, problems)
        record = PatientRecord(
            patient_id=record_id, age=age, sex=sex, index_time=index_time, problems=problems, source=where,
            labs=self._table_for(position, self._labs, self._lab_groups, Labs),
            vitals=self._table_for(position, self._vitals, self._vital_groups, Vitals),
        )
        record.notes = self._notes_for(position)
        record.labels = self._labels(unit, where, problems)
        return record

    def _demographics(
        self, unit: pd.Series, index_time: pd.Timestamp | None, where: str, problems: list[Problem]
    ) -> tuple[float | None, str | None]:
        if self._patients is None or unit["subject_id"] not in self._patients.index:
            if self._patients is not None:
                problems.append(warning(self._file("PATIENTS"), "subject_id",
                                        f"SUBJECT_ID {unit['subject_id']} not found: age and sex unknown"))
            return None, None
        patient = self._patients.loc[unit["subject_id"]]
        sex = str(patient.get("gender", "")).strip().upper()
        sex = sex if sex in ("F", "M") else None
        dob = patient.get("dob", pd.NaT)
        if index_time is None or pd.isna(dob):
            return None, sex
        # in seconds, so a ~300-year gap (shifted DOB) cannot overflow; the benchmark's year is 365 days
        age = (pd.Timestamp(index_time).as_unit("s") - pd.Timestamp(dob).as_unit("s")) / pd.Timedelta(days=365)
        if age > SHIFTED_AGE:
            message = (f"{where}: age {age:.0f} years from DOB {dob:%Y-%m-%d}: MIMIC-III shifts the DOB of patients "
                       f"older than 89; age set to {MAX_AGE:g}")
            problems.append(warning(self._file("PATIENTS"), "dob", message))
            return MAX_AGE, sex
        if age < 0:
            message = f"{where}: DOB {dob:%Y-%m-%d} after the index time; age unknown"
            problems.append(warning(self._file("PATIENTS"), "dob", message))
            return None, sex
        return round(float(age), 2), sex

    @staticmethod
    def _table_for(position: int, table: pd.DataFrame | None, groups: dict[int, np.ndarray], kind):
        rows = groups.get(position)
        if table is None or rows is None:
            return kind(empty_table(kind).copy())
        return kind(table.iloc[rows].reset_index(drop=True))

    def _notes_for(self, position: int) -> list[Note]:
        rows = self._note_groups.get(position)
        if self._notes is None or rows is None:
            return []
        notes = self._notes.iloc[rows].sort_values("time", kind="stable")
        path = self._file("NOTEEVENTS")
        return [
            Note(time=None if pd.isna(t) else t, category=str(c).strip(), text=str(x), source=path)
            for t, c, x in zip(notes["time"], notes["category"] if "category" in notes else [""] * len(notes),
                               notes["text"])
        ]

    def _labels(self, unit: pd.Series, where: str, problems: list[Problem]) -> dict[str, int] | None:
        labels: dict[str, int] = {}
        if self._phenotypes is not None:
            match = self._phenotypes.get(unit["hadm_id"])
            if match is None:
                problems.append(warning(self._file("DIAGNOSES_ICD"), "hadm_id",
                                        f"{where}: no diagnoses; phenotype labels set to 0"))
                labels.update({name: 0 for name in self.definitions.benchmark})
            else:
                labels.update(match.labels)
        raw_flag = unit.get("hospital_expire_flag")
        flag = raw_flag.strip() if isinstance(raw_flag, str) else ""
        if flag in ("0", "1"):
            labels[MORTALITY] = int(flag)
        elif isinstance(raw_flag, str):
            problems.append(warning(self._file("ADMISSIONS"), "hospital_expire_flag",
                                    f"{where}: expected 0 or 1, found {flag!r}; no mortality label"))
        return labels or None
