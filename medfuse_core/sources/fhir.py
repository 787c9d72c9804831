"""FHIR R4 Bundles (one JSON file per patient, as Synthea and most EHR exports write them) -> patient bundles.

`python -m medfuse_core import fhir --root DIR --out BUNDLES` calls `import_fhir`: every `*.json` file
under DIR holding a FHIR Bundle becomes one bundle folder (patient.json, labs.csv, vitals.csv,
notes/, images/) plus out/cohort.json and out/import_problems.csv.

Models: fhir.resources 8.3.0's top-level package is FHIR R5 (5.0.0); R4 resources are validated with
its `fhir.resources.R4B` subpackage (FHIR 4.3.0), the one that matches R4 Bundles: R4B left every
resource read here (Patient, Encounter, Observation, DocumentReference, DiagnosticReport, Media,
Binary, ImagingStudy, Condition) as in R4 4.0.1, and Media, which R5 removed, is there. Each used
resource is validated on its own (`model_validate`), so a malformed one costs only itself: it is
left out with a Problem naming the file, the entry, the resource and the field. The values written
are then taken from the JSON as written, so nothing is re-formatted or converted.

What is read (the "index encounter" is the patient's latest inpatient, acute, emergency or
observation Encounter by period.start, else the latest Encounter of any class; its period.start is
the index time):
- Patient: id (the bundle folder name), gender (male/female -> M/F), birthDate (age at the index
  time in completed years), deceasedDateTime (in-hospital mortality: 1 when inside the index
  encounter's period, 0 when the encounter ended without it; no label without a period end).
- Observation, category `laboratory` -> labs.csv: time (effectiveDateTime, effectivePeriod.start or
  issued, as written), `loinc` (the http://loinc.org coding), item (code.text, else the LOINC display),
  value (valueQuantity.value with its comparator, "<0.5"; or valueString / valueCodeableConcept text /
  valueInteger / valueBoolean), unit (the UCUM code when valueQuantity.system is UCUM, else
  valueQuantity.unit: as written, never converted: the bundle reader converts), ref_low/ref_high
  (referenceRange[0]), flag (interpretation H/HH -> high, L/LL -> low, A/AA -> abnormal).
- Observation, category `vital-signs` (or no category and a LOINC code of the map below) ->
  vitals.csv (time, channel, value, unit as written) on the 17 mimic3-benchmarks channels by LOINC
  (`VITAL_LOINC`); panels (blood pressure 85354-9 / 55284-4) give a row per component. Laboratory
  glucose, pH and oxygen saturation go to vitals too, as the MIMIC readers take them from LABEVENTS.
- DocumentReference (content[].attachment) and DiagnosticReport (presentedForm[]) with inline
  base64 text (contentType text/*) -> notes/ (time: DocumentReference.date / context.period.start;
  DiagnosticReport effectiveDateTime / issued; category: type / code display). A second copy of the
  same text at the same time (Synthea writes each note as both) is counted, not written twice.
- Media (content), Binary and attachments whose url names a Binary of the bundle, with contentType
  image/png, image/jpeg or application/dicom, inline (base64) or a local file under --root (a relative
  path or file: URL) -> images/ (view: Media.view). ImagingStudy holds no pixels: counted.
- Condition -> the 25 phenotype labels (all 25 given, 0 or 1, when the bundle has any Condition)
  from the conditions active during the index encounter (onset not after its end, not abated before
  its start, or recorded by it; refuted / entered-in-error left out): ICD-9-CM codes through the
  HCUP CCS groups, ICD-10-CM through the CMS GEM (`icd10_gem.py`), SNOMED CT through
  `SNOMED_PHENOTYPES` (our table, below). A Condition with no code in these is counted as unmapped.

Which rows: those referencing the index encounter, or timed within [index time - 24 h, encounter
end] (open-ended without an end); the rest of a life-long record (Synthea writes decades) is
counted as outside the index encounter, not written. `history=True` (`--history`) keeps them all.

Counted, never a crash: resource types not read (by type), observations of other categories
(social history, surveys), vital signs on no model channel, results without a value, notes and
films not inline or not local, malformed resources, unmapped conditions (by system and code).
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import os
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import ValidationError
from tqdm.auto import tqdm

from medfuse_core.problems import DataError, Problem, Severity, error, warning
from medfuse_core.sources.bundle import IMAGES_DIR, INDEX_FILE, LABS_FILE, NOTES_DIR, PATIENT_FILE, VITALS_FILE
from medfuse_core.sources.phenotypes import MORTALITY, load_phenotype_definitions, match_phenotypes

COHORT_FILE = "cohort.json"
PROBLEMS_FILE = "import_problems.csv"
FHIR_PACKAGE = "fhir.resources.R4B"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = {"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"}
ICD9 = {"http://hl7.org/fhir/sid/icd-9-cm", "http://hl7.org/fhir/sid/icd-9"}
INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC", "EMER", "OBSENC"}
LOOKBACK = timedelta(hours=24)

USED = ("Patient", "Encounter", "Observation", "DocumentReference", "DiagnosticReport", "Media", "Binary",
        "ImagingStudy", "Condition")

# LOINC -> mimic3-benchmarks channel (names as in its discretizer_config.json)
VITAL_LOINC: dict[str, str] = {
    "8867-4": "Heart Rate",
    "8480-6": "Systolic blood pressure",
    "8462-4": "Diastolic blood pressure",
    "8478-0": "Mean blood pressure",
    "9279-1": "Respiratory rate",
    "8310-5": "Temperature",  # body temperature
    "8331-1": "Temperature",  # oral temperature
    "2708-6": "Oxygen saturation",  # oxygen saturation in arterial blood
    "59408-5": "Oxygen saturation",  # SpO2 by pulse oximetry
    "20564-1": "Oxygen saturation",  # oxygen saturation in blood
    "29463-7": "Weight",  # body weight
    "3141-9": "Weight",  # body weight, measured
    "8302-2": "Height",  # body height
    "8306-3": "Height",  # body height, lying
    "2339-0": "Glucose",  # glucose, blood
    "2345-7": "Glucose",  # glucose, serum or plasma
    "41653-7": "Glucose",  # glucose, capillary blood, glucometer
    "2744-1": "pH",  # pH of arterial blood
    "11558-4": "pH",  # pH of blood
    "3150-0": "Fraction inspired oxygen",  # inhaled oxygen concentration
    "9269-2": "Glascow coma scale total",
}
BLOOD_PRESSURE_PANELS = {"85354-9", "55284-4"}  # read through their components
LAB_VITALS = {code for code, channel in VITAL_LOINC.items() if channel in ("Glucose", "pH", "Oxygen saturation")}

# SNOMED CT concept -> benchmark phenotype(s): our table, for the conditions Synthea and EHR problem
# lists code in SNOMED; concepts chosen by their meaning to match the HCUP CCS group's ICD-9 codes.
SNOMED_PHENOTYPES: dict[str, tuple[str, ...]] = {
    "59621000": ("Essential hypertension",),
    "38341003": ("Essential hypertension",),  # hypertensive disorder
    "44054006": ("Diabetes mellitus without complication",),  # type 2
    "46635009": ("Diabetes mellitus without complication",),  # type 1
    "127013003": ("Diabetes mellitus with complications",),  # disorder of kidney due to diabetes
    "422034002": ("Diabetes mellitus with complications",),  # diabetic retinopathy, type 2
    "368581000119106": ("Diabetes mellitus with complications",),  # neuropathy due to type 2 diabetes
    "55822004": ("Disorders of lipid metabolism",),  # hyperlipidemia
    "13644009": ("Disorders of lipid metabolism",),  # hypercholesterolemia
    "302870006": ("Disorders of lipid metabolism",),  # hypertriglyceridemia
    "84114007": ("Congestive heart failure; nonhypertensive",),  # heart failure
    "42343007": ("Congestive heart failure; nonhypertensive",),
    "88805009": ("Congestive heart failure; nonhypertensive",),  # chronic congestive heart failure
    "49436004": ("Cardiac dysrhythmias",),  # atrial fibrillation
    "22298006": ("Acute myocardial infarction",),
    "401303003": ("Acute myocardial infarction",),  # acute STEMI
    "401314000": ("Acute myocardial infarction",),  # acute NSTEMI
    "53741008": ("Coronary atherosclerosis and other heart disease",),
    "414545008": ("Coronary atherosclerosis and other heart disease",),  # ischemic heart disease
    "230690007": ("Acute cerebrovascular disease",),  # stroke
    "13645005": ("Chronic obstructive pulmonary disease and bronchiectasis",),
    "185086009": ("Chronic obstructive pulmonary disease and bronchiectasis",),  # chronic obstructive bronchitis
    "87433001": ("Chronic obstructive pulmonary disease and bronchiectasis",),  # pulmonary emphysema
    "91302008": ("Septicemia (except in labor)",),  # sepsis
    "76571007": ("Septicemia (except in labor)", "Shock"),  # septic shock
    "27942005": ("Shock",),
    "233604007": ("Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",),
    "14669001": ("Acute and unspecified renal failure",),  # acute renal failure syndrome
    "709044004": ("Chronic kidney disease",),
    "431855005": ("Chronic kidney disease",),  # stage 1
    "431856006": ("Chronic kidney disease",),  # stage 2
    "433144002": ("Chronic kidney disease",),  # stage 3
    "431857002": ("Chronic kidney disease",),  # stage 4
    "433146000": ("Chronic kidney disease",),  # stage 5
    "65710008": ("Respiratory failure; insufficiency; arrest (adult)",),  # acute respiratory failure
    "409622000": ("Respiratory failure; insufficiency; arrest (adult)",),
    "74474003": ("Gastrointestinal hemorrhage",),
    "34095006": ("Fluid and electrolyte disorders",),  # dehydration
    "43339004": ("Fluid and electrolyte disorders",),  # hypokalemia
    "89627008": ("Fluid and electrolyte disorders",),  # hyponatremia
}

_FLAGS = {"H": "high", "HH": "high", "HU": "high", "L": "low", "LL": "low", "LU": "low", "A": "abnormal", "AA": "abnormal"}
_IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "application/dicom": ".dcm"}
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
_LAB_HEADER = ["time", "itemid", "item", "value", "unit", "ref_low", "ref_high", "flag", "loinc"]
_VITAL_HEADER = ["time", "channel", "value", "unit"]


@cache
def _model(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


# ------------------------------------------------------------------------------------ small readers


def _parse_time(text: object) -> datetime | None:
    """A FHIR date / dateTime / instant as an aware UTC datetime (a date alone: its midnight; no
    offset: taken as UTC). Only for choosing rows and the index encounter; files keep the text."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    if len(value) == 4:
        value += "-01-01"
    elif len(value) == 7:
        value += "-01"
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)


def _codings(concept: object) -> list[dict]:
    return [c for c in (concept or {}).get("coding", []) or [] if isinstance(c, dict)] if isinstance(concept, dict) else []


def _code(concept: object, system: str | set[str]) -> str:
    systems = {system} if isinstance(system, str) else system
    return next((str(c.get("code", "")).strip() for c in _codings(concept) if c.get("system") in systems and c.get("code")), "")


def _display(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    return str(concept.get("text") or next((c.get("display") for c in _codings(concept) if c.get("display")), "") or "")


def _number(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _reference_id(reference: object) -> str:
    """'Encounter/123', 'urn:uuid:abc' or a full URL -> its last part (the id)."""
    if not isinstance(reference, dict):
        return ""
    text = str(reference.get("reference") or "")
    return text.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _age(birth: object, index: datetime | None) -> float | None:
    born = _parse_time(birth)
    if born is None or index is None:
        return None
    years = index.year - born.year - ((index.month, index.day) < (born.month, born.day))
    return float(years)


# --------------------------------------------------------------------------------- one patient file


@dataclass
class FhirPatient:
    """What one FHIR Bundle file gives: the bundle folder's content, its problems and counts."""

    file: str
    patient_id: str = ""
    age: float | None = None
    sex: str | None = None
    index_time: str = ""
    labels: dict[str, int] | None = None
    labs: list[list[str]] = field(default_factory=list)
    vitals: list[list[str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # time, category, text
    images: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # time, view, suffix, bytes
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    unmapped_conditions: Counter = field(default_factory=Counter)  # "system|code display" -> rows


class _BundleReader:
    """Reads one Bundle file into a FhirPatient (one instance per file)."""

    def __init__(self, path: Path, root: Path, history: bool):
        self.path, self.root, self.history = path, root, history
        self.out = FhirPatient(file=str(path))
        self.window: tuple[datetime | None, datetime | None] = (None, None)
        self.encounter_ids: set[str] = set()
        self.seen_notes: set[tuple[object, int]] = set()
        self.patient: dict = {}
        self.mortality: int | None = None  # in-hospital mortality, when the index encounter tells it

    def problem(self, where: str, message: str, severity=warning) -> None:
        self.out.problems.append(severity(str(self.path), where, message))

    # ---- the file

    def read(self) -> FhirPatient:
        entries = self._entries()
        if entries is None:
            self.out.counts["unreadable files"] += 1
            return self.out
        by_type = self._validated(entries)
        self._patient(by_type["Patient"])
        if len(by_type["Patient"]) > 1:
            self._only_the_first_patient(by_type)
        self._encounter(by_type["Encounter"], by_type["Patient"])
        for where, resource in by_type["Observation"]:
            self._observation(where, resource)
        self._documents(by_type)
        if by_type["ImagingStudy"]:
            self.out.counts["imaging studies (no pixels in FHIR)"] += len(by_type["ImagingStudy"])
        self._conditions(by_type["Condition"])
        never = datetime.max.replace(tzinfo=timezone.utc)
        self.out.notes.sort(key=lambda note: _parse_time(note[0]) or never)
        self.out.images.sort(key=lambda image: _parse_time(image[0]) or never)
        return self.out

    def _entries(self) -> list | None:
        """The Bundle's entries; None (with an error problem) when the file is not a FHIR Bundle in JSON."""
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            self.problem("", f"expected a FHIR Bundle in JSON: {exc}", error)
            return None
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            found = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
            self.problem("resourceType", f"expected a FHIR Bundle, found {found!r}; file left out", error)
            return None
        entries = data.get("entry") or []
        return entries if isinstance(entries, list) else []

    def _validated(self, entries: list) -> dict[str, list[tuple[str, dict]]]:
        """Used resources by type, each validated alone with its fhir.resources R4B model; the rest counted."""
        by_type: dict[str, list[tuple[str, dict]]] = {t: [] for t in USED}
        for n, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            rtype = resource.get("resourceType") if isinstance(resource, dict) else None
            self.out.counts["resources"] += 1
            if rtype not in by_type:
                self.out.counts[f"ignored {rtype or 'entry without a resource'}"] += 1
                continue
            where = f"entry[{n}] {rtype}/{resource.get('id', '')}"
            try:
                _model(rtype).model_validate(resource)
            except (ValidationError, ValueError, TypeError) as exc:
                first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
                loc = ".".join(str(x) for x in first["loc"])
                self.problem(f"{where}: {loc}" if loc else where, f"not valid FHIR R4: {first['msg']}; resource left out")
                self.out.counts["malformed resources"] += 1
                continue
            by_type[rtype].append((where, resource))
        return by_type

    def _only_the_first_patient(self, by_type: dict[str, list[tuple[str, dict]]]) -> None:
        """A Bundle of several patients (a search result): resources of the others are left out, counted."""
        others = {str(r.get("id", "")) for _, r in by_type["Patient"][1:]}
        for rtype in USED:
            kept = [(w, r) for w, r in by_type[rtype]
                    if not others & {_reference_id(r.get(k)) for k in ("subject", "patient")}]
            if len(kept) < len(by_type[rtype]):
                self.out.counts["resources of another patient in the Bundle"] += len(by_type[rtype]) - len(kept)
            by_type[rtype] = kept

    def _documents(self, by_type: dict[str, list[tuple[str, dict]]]) -> None:
        """Notes and films: DocumentReference, DiagnosticReport.presentedForm, Media, Binary."""
        binaries = {r.get("id", ""): (w, r) for w, r in by_type["Binary"]}
        used_binaries: set[str] = set()
        for where, resource in by_type["DocumentReference"]:
            attachments = [c.get("attachment") for c in resource.get("content") or [] if isinstance(c, dict)]
            context = resource.get("context") or {}
            when = resource.get("date") or (context.get("period") or {}).get("start") or ""
            category = _display(resource.get("type")) or next((_display(c) for c in resource.get("category") or []), "")
            if self._inside(when, [_reference_id(e) for e in context.get("encounter") or []]):
                self._attachments(where, attachments, when, category, "", binaries, used_binaries)
        for where, resource in by_type["DiagnosticReport"]:
            forms = resource.get("presentedForm") or []
            when = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") \
                or resource.get("issued") or ""
            if not forms:
                self.out.counts["diagnostic reports without text (results read as Observations)"] += 1
                continue
            if self._inside(when, [_reference_id(resource.get("encounter"))]):
                self._attachments(where, forms, when, _display(resource.get("code")), "", binaries, used_binaries)
        for where, resource in by_type["Media"]:
            when = resource.get("createdDateTime") or (resource.get("createdPeriod") or {}).get("start") \
                or resource.get("issued") or ""
            if self._inside(when, [_reference_id(resource.get("encounter"))]):
                self._attachments(where, [resource.get("content")], when, "", _view(resource.get("view")), binaries,
                                  used_binaries)
        for binary_id, (where, resource) in binaries.items():
            if binary_id not in used_binaries:  # a Binary no attachment names: a film or note without context
                self._attachments(where, [resource], "", "", "", {}, set(), binary=True)

    # ---- demographics and index encounter

    def _patient(self, patients: list[tuple[str, dict]]) -> None:
        if not patients:
            self.out.patient_id = self.path.stem
            self.problem("Patient", "no valid Patient resource: bundle named after the file, age and sex unknown")
            return
        if len(patients) > 1:
            self.problem("Patient", f"{len(patients)} Patient resources; only the first ({patients[0][1].get('id')}) "
                         "is imported, resources of the others are left out (export one Bundle per patient)")
        self.patient = patients[0][1]
        self.out.patient_id = str(self.patient.get("id") or self.path.stem)
        self.out.sex = {"male": "M", "female": "F"}.get(str(self.patient.get("gender", "")).lower())

    def _encounter(self, encounters: list[tuple[str, dict]], patients) -> None:
        timed = [(e, _parse_time((e.get("period") or {}).get("start"))) for _, e in encounters]
        timed = [(e, t) for e, t in timed if t is not None]
        if not timed:
            self.problem("Encounter", "no Encounter with a period.start: no index time; every resource is kept")
            self.history = True
            return
        inpatient = [(e, t) for e, t in timed if (e.get("class") or {}).get("code") in INPATIENT_CLASSES]
        encounter, start = max(inpatient or timed, key=lambda et: et[1])
        period = encounter.get("period") or {}
        self.out.index_time = str(period.get("start"))
        self.encounter_ids = {str(encounter.get("id", ""))}
        end = _parse_time(period.get("end"))
        self.window = (start - LOOKBACK, end)
        if patients:
            self.out.age = _age(self.patient.get("birthDate"), start)
            death = _parse_time(self.patient.get("deceasedDateTime"))
            if death is not None and start <= death and (end is None or death <= end):
                self.mortality = 1
            else:
                self.mortality = 0 if end is not None else None

    def _inside(self, when: object, encounters: list[str]) -> bool:
        """Whether a resource belongs to the index encounter (by reference or by time); counted if not."""
        if self.history or self.encounter_ids & set(encounters):
            return True
        stamp = _parse_time(when)
        start, end = self.window
        if stamp is not None and stamp >= start and (end is None or stamp <= end):
            return True
        self.out.counts["outside the index encounter" if stamp is not None else "untimed, of another encounter"] += 1
        return False

    # ---- observations

    def _observation(self, where: str, resource: dict) -> None:
        categories = {c.get("code") for concept in resource.get("category") or [] for c in _codings(concept)}
        loinc = _code(resource.get("code"), LOINC)
        if "laboratory" in categories:
            kind = "lab"
        elif "vital-signs" in categories or (not categories and (loinc in VITAL_LOINC or loinc in BLOOD_PRESSURE_PANELS)):
            kind = "vital"
        else:
            label = ", ".join(sorted(c for c in categories if c)) or "no category"
            self.out.counts[f"observations not read ({label})"] += 1
            return
        when = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") \
            or resource.get("effectiveInstant") or resource.get("issued") or ""
        if not self._inside(when, [_reference_id(resource.get("encounter"))]):
            return
        parts = [resource] if loinc not in BLOOD_PRESSURE_PANELS else []
        parts += [c for c in resource.get("component") or [] if isinstance(c, dict)]
        for part in parts:
            value, unit = _value(part)
            code = _code(part.get("code"), LOINC)
            if value == "":
                if part is resource and resource.get("component"):
                    continue  # a panel whose values are its components
                self.out.counts["observations without a value"] += 1
                continue
            if kind == "lab":
                ranges = part.get("referenceRange") or [{}]
                low = _number(((ranges[0] or {}).get("low") or {}).get("value"))
                high = _number(((ranges[0] or {}).get("high") or {}).get("value"))
                flags = [c.get("code") for concept in part.get("interpretation") or [] for c in _codings(concept)]
                flag = next((_FLAGS[f] for f in flags if f in _FLAGS), "")
                item = _display(part.get("code")) or code
                self.out.labs.append([when, "", item, value, unit, low, high, flag, code])
                self.out.counts["lab results"] += 1
                if code not in LAB_VITALS:
                    continue
            channel = VITAL_LOINC.get(code)
            if channel is None:
                self.out.counts[f"vital signs on no model channel (LOINC {code or 'none'})"] += 1
                continue
            self.out.vitals.append([when, channel, value, unit])
            self.out.counts["vital-sign values"] += 1

    # ---- notes and films

    def _attachments(self, where: str, attachments: list, when: str, category: str, view: str,
                     binaries: dict, used_binaries: set[str], binary: bool = False) -> None:
        for attachment in attachments:
            if not isinstance(attachment, dict):
                continue
            content_type = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
            data = attachment.get("data")
            url = str(attachment.get("url") or "")
            if data is None and url:
                target = url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
                if (url.startswith("Binary/") or url.startswith("urn:uuid:")) and target in binaries:
                    used_binaries.add(target)
                    binary_resource = binaries[target][1]
                    data = binary_resource.get("data")
                    content_type = content_type or str(binary_resource.get("contentType") or "").split(";")[0].lower()
            payload: bytes | None = None
            if data is not None:
                try:
                    payload = base64.b64decode(data, validate=True)
                except (binascii.Error, ValueError):
                    self.problem(f"{where}: data", "expected base64 data; attachment left out")
                    self.out.counts["attachments with bad base64"] += 1
                    continue
            elif url and content_type in _IMAGE_TYPES:
                payload = self._local_file(where, url)
                if payload is None:
                    continue
            if content_type.startswith("text/"):
                if payload is None:
                    self.out.counts["notes not inline (url only)"] += 1
                    continue
                text = payload.decode("utf-8", errors="replace")
                key = (_parse_time(when) or when, hash(text))
                if key in self.seen_notes:
                    self.out.counts["duplicate notes (same text and time)"] += 1
                    continue
                self.seen_notes.add(key)
                self.out.notes.append((when, category, text))
                self.out.counts["notes"] += 1
            elif content_type in _IMAGE_TYPES:
                if payload is None:
                    self.out.counts["films not inline or local"] += 1
                    continue
                self.out.images.append((when, view, _IMAGE_TYPES[content_type], payload))
                self.out.counts["films"] += 1
            elif not binary:
                self.out.counts[f"attachments not read ({content_type or 'no contentType'})"] += 1
            else:
                self.out.counts[f"ignored Binary ({content_type or 'no contentType'})"] += 1

    def _local_file(self, where: str, url: str) -> bytes | None:
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            self.out.counts["films not inline or local"] += 1
            return None
        path = Path(unquote(parsed.path))
        path = path if path.is_absolute() else self.path.parent / path
        try:
            resolved = path.resolve(strict=True)
            if not resolved.is_relative_to(self.root.resolve()) or not resolved.is_file():
                raise OSError("outside the import folder")
            return resolved.read_bytes()
        except OSError as exc:
            self.problem(f"{where}: url", f"expected a readable file under {self.root}: {url} ({exc}); film left out")
            self.out.counts["films not inline or local"] += 1
            return None

    # ---- labels

    def _conditions(self, conditions: list[tuple[str, dict]]) -> None:
        mortality = self.mortality
        if not conditions:
            self.out.labels = {MORTALITY: mortality} if mortality is not None else None
            return
        definitions = load_phenotype_definitions()
        labels = {name: 0 for name in definitions.benchmark}
        start, end = self.window
        for where, resource in conditions:
            status = _code(resource.get("verificationStatus"), _any_system(resource.get("verificationStatus")))
            if status in ("refuted", "entered-in-error"):
                self.out.counts["conditions refuted or entered in error"] += 1
                continue
            onset = _parse_time(resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
                                or resource.get("recordedDate"))
            abated = _parse_time(resource.get("abatementDateTime") or (resource.get("abatementPeriod") or {}).get("end"))
            by_reference = bool(self.encounter_ids & {_reference_id(resource.get("encounter"))})
            active = (onset is None or end is None or onset <= end) and (abated is None or start is None or abated >= start)
            if not (self.history or by_reference or active):
                self.out.counts["conditions not active during the index encounter"] += 1
                continue
            groups = _condition_groups(resource.get("code"), definitions)
            if groups is None:
                coding = next(iter(_codings(resource.get("code"))), {})
                key = f"{coding.get('system', '')}|{coding.get('code', '')} {coding.get('display', '')}".strip()
                self.out.unmapped_conditions[key] += 1
                self.out.counts["conditions unmapped"] += 1
                continue
            self.out.counts["conditions mapped"] += 1
            for group in groups:
                if group in labels:
                    labels[group] = 1
        if mortality is not None:
            labels[MORTALITY] = mortality
        self.out.labels = labels


def _any_system(concept: object) -> set[str]:
    return {c.get("system") for c in _codings(concept)}


_VIEW_WORDS = (("postero", "PA"), ("antero", "AP"), ("lateral", "LATERAL"))


def _view(concept: object) -> str:
    """Media.view -> "PA" / "AP" / "LATERAL" / "LL" where its text, code or display says so, else ""."""
    words = [str(concept.get("text") or "")] if isinstance(concept, dict) else []
    words += [str(c.get(k) or "") for c in _codings(concept) for k in ("code", "display")]
    for word in words:
        if word.strip().upper() in ("PA", "AP", "LL", "LATERAL"):
            return word.strip().upper()
    for word in words:
        for stem, view in _VIEW_WORDS:
            if stem in word.lower():
                return view
    return ""


def _value(part: dict) -> tuple[str, str]:
    """(value text, unit) of an Observation or component as written: comparator kept, unit not converted."""
    quantity = part.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        unit = quantity.get("code") if quantity.get("system") == UCUM and quantity.get("code") else quantity.get("unit")
        return f"{quantity.get('comparator', '')}{_number(quantity.get('value'))}", str(unit or "")
    for key in ("valueString", "valueInteger"):
        if part.get(key) is not None:
            return str(part[key]), ""
    if part.get("valueBoolean") is not None:
        return ("true" if part["valueBoolean"] else "false"), ""
    if part.get("valueCodeableConcept") is not None:
        return _display(part["valueCodeableConcept"]), ""
    return "", ""


def _condition_groups(code: object, definitions) -> frozenset[str] | None:
    """CCS groups of a Condition's codings (any coding that maps); None when none maps."""
    groups: set[str] = set()
    mapped = False
    for coding in _codings(code):
        system, value = coding.get("system"), str(coding.get("code") or "")
        if system == SNOMED and value in SNOMED_PHENOTYPES:
            groups |= set(SNOMED_PHENOTYPES[value])
            mapped = True
        elif system in ICD10 or system in ICD9:
            match = match_phenotypes([value], ["10" if system in ICD10 else "9"], definitions, map_icd10=True)
            if match.icd10_groups or match.groups:
                mapped = True
                groups |= {g for gs in match.icd10_groups.values() for g in gs} | set(match.groups.values())
    return frozenset(groups) if mapped else None


def read_fhir_bundle(path: str | Path, root: str | Path | None = None, history: bool = False) -> FhirPatient:
    """One FHIR Bundle JSON file -> FhirPatient (what its bundle folder will hold); never raises for bad content."""
    path = Path(path)
    reader = _BundleReader(path, Path(root) if root is not None else path.parent, history)
    try:
        return reader.read()
    except Exception as exc:  # noqa: BLE001 -- a reader bug on one file must not cost the other patients
        out = FhirPatient(file=str(path), problems=reader.out.problems)
        out.problems.append(error(str(path), "", f"could not be read ({type(exc).__name__}: {exc}); file left out"))
        out.counts["unreadable files"] += 1
        return out


# ------------------------------------------------------------------------------------------ writing


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_fhir_patient(patient: FhirPatient, folder: Path) -> None:
    """The bundle folder of one patient: values and units as the FHIR resources wrote them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (LABS_FILE, VITALS_FILE):  # what an earlier import into the same folder left
        (folder / name).unlink(missing_ok=True)
    for name in (NOTES_DIR, IMAGES_DIR):
        shutil.rmtree(folder / name, ignore_errors=True)
    meta: dict[str, object] = {"patient_id": patient.patient_id, "age": patient.age, "sex": patient.sex,
                               "index_time": patient.index_time}
    if patient.labels is not None:
        meta["labels"] = patient.labels
    (folder / PATIENT_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if patient.labs:
        _write_csv(folder / LABS_FILE, _LAB_HEADER, patient.labs)
    if patient.vitals:
        _write_csv(folder / VITALS_FILE, _VITAL_HEADER, patient.vitals)
    if patient.notes:
        notes = folder / NOTES_DIR
        notes.mkdir(exist_ok=True)
        rows = []
        for n, (when, category, text) in enumerate(patient.notes):
            name = f"note_{n:02d}.txt"
            (notes / name).write_text(text, encoding="utf-8")
            rows.append([name, when, category])
        _write_csv(notes / INDEX_FILE, ["file", "time", "category"], rows)
    if patient.images:
        images = folder / IMAGES_DIR
        images.mkdir(exist_ok=True)
        rows = []
        for n, (when, view, suffix, payload) in enumerate(patient.images):
            name = f"image_{n:02d}{suffix}"
            (images / name).write_bytes(payload)
            rows.append([name, when, view])
        _write_csv(images / INDEX_FILE, ["file", "time", "view"], rows)


# ------------------------------------------------------------------------------------------- import


@dataclass
class FhirImportSummary:
    """What `import_fhir` found and wrote."""

    root: str
    out_dir: Path
    n: int = 0
    files: int = 0
    label_counts: Counter = field(default_factory=Counter)  # label -> patients positive
    label_known: Counter = field(default_factory=Counter)  # label -> patients with the label given
    modality_counts: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    unmapped_conditions: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, patient: FhirPatient, folder_name: str | None) -> None:
        self.files += 1
        self.counts.update(patient.counts)
        self.unmapped_conditions.update(patient.unmapped_conditions)
        self.problems.extend(patient.problems)
        if folder_name is None:
            return
        self.n += 1
        self.patients.append(folder_name)
        for modality, present in (("labs", patient.labs), ("vitals", patient.vitals), ("notes", patient.notes),
                                  ("image", patient.images)):
            self.modality_counts[modality] += bool(present)
        for name, value in (patient.labels or {}).items():
            self.label_known[name] += 1
            self.label_counts[name] += value

    @property
    def ignored_types(self) -> dict[str, int]:
        return {k[len("ignored "):]: v for k, v in sorted(self.counts.items()) if k.startswith("ignored ")}

    def to_json(self) -> dict[str, object]:
        label_names = [n for n in load_phenotype_definitions().label_names if n in self.label_known]
        return {
            "source": "fhir",
            "root": self.root,
            "unit": "patient",
            "n": self.n,
            "label_names": label_names,
            "diseases": [n for n in label_names if n != MORTALITY],
            "prevalence": {k: round(self.label_counts[k] / self.label_known[k], 4) for k in label_names},
            "label_counts": {k: int(self.label_counts[k]) for k in label_names},
            "label_known": {k: int(self.label_known[k]) for k in label_names},
            "modality_counts": {m: int(self.modality_counts[m]) for m in ("labs", "notes", "vitals", "image")},
            "resource_counts": dict(sorted(self.counts.items())),
            "ignored_resource_types": self.ignored_types,
            "unmapped_conditions": dict(self.unmapped_conditions.most_common()),
            "problems": len(self.problems),
            "patients": self.patients,
        }

    def describe(self) -> str:
        c = self.counts
        lines = [f"{self.n} patients from {self.files} FHIR files in {self.root} written to {self.out_dir} in "
                 f"{self.seconds:.1f} s ({c['resources']} resources)"]
        for modality in ("labs", "vitals", "notes", "image"):
            lines.append(f"  {modality:7s} in {self.modality_counts[modality]} of {self.n} patients")
        lines.append(f"read: {c['lab results']} lab results, {c['vital-sign values']} vital-sign values, {c['notes']} notes, "
                     f"{c['films']} films, {c['conditions mapped']} conditions mapped to the phenotypes")
        not_read = {k: v for k, v in sorted(c.items()) if not k.startswith("ignored ") and k not in (
            "resources", "lab results", "vital-sign values", "notes", "films", "conditions mapped")}
        if not_read:
            lines.append("not read: " + "; ".join(f"{v} {k}" for k, v in not_read.items()))
        if self.ignored_types:
            lines.append("resource types not used: " + ", ".join(f"{k} {v}" for k, v in self.ignored_types.items()))
        if self.unmapped_conditions:
            top = ", ".join(f"{k} ({v})" for k, v in self.unmapped_conditions.most_common(5))
            lines.append(f"conditions with no phenotype mapping: {sum(self.unmapped_conditions.values())}, e.g. {top}")
        lines += [f"  {self.label_counts[k] / self.label_known[k]:6.1%}  {k} (of {self.label_known[k]} patients)"
                  for k in self.to_json()["label_names"]]
        n_errors = sum(p.severity is Severity.ERROR for p in self.problems)
        lines.append(f"{len(self.problems)} problem(s) ({n_errors} error(s)), listed in {self.out_dir / PROBLEMS_FILE}")
        lines += [f"  {p}" for p in self.problems[:10]]
        if len(self.problems) > 10:
            lines.append(f"  ... and {len(self.problems) - 10} more")
        return "\n".join(lines)


def _read_one(args: tuple[str, str, bool]) -> FhirPatient:
    path, root, history = args
    return read_fhir_bundle(path, root, history)


def find_fhir_files(root: Path) -> list[Path]:
    """Every *.json file under `root`, in path order (hidden folders skipped)."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder) / n for n in sorted(names) if n.lower().endswith(".json") and not n.startswith(".")]
    return files


def import_fhir(root: str | Path, out_dir: str | Path, workers: int = 1, history: bool = False,
                limit: int | None = None, progress: bool = True) -> FhirImportSummary:
    """Write one bundle folder per FHIR Bundle file under `root`, cohort.json and import_problems.csv.

    `workers` > 1 reads files in that many processes (the writing stays in this one, in file order).
    """
    start = time.perf_counter()
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise DataError(str(root), "", "expected a folder of FHIR Bundle JSON files (one per patient)")
    files = find_fhir_files(root)
    if limit is not None:
        files = files[: max(int(limit), 0)]
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = FhirImportSummary(root=str(root), out_dir=out_dir)
    jobs = [(str(p), str(root), history) for p in files]
    taken: set[str] = set()
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        results = pool.map(_read_one, jobs, chunksize=8) if workers > 1 else map(_read_one, jobs)
        for patient in tqdm(results, total=len(jobs), desc="import FHIR", unit="file", disable=not progress):
            if patient.counts["unreadable files"]:
                summary.add(patient, None)
                continue
            name = _SAFE_ID.sub("_", patient.patient_id).strip("._") or Path(patient.file).stem
            if name in taken:
                n = 2
                while f"{name}-{n}" in taken:
                    n += 1
                patient.problems.append(warning(patient.file, "Patient.id", f"patient id {patient.patient_id!r} "
                                                f"already imported; this bundle is written as {name}-{n}"))
                name = f"{name}-{n}"
            taken.add(name)
            patient.patient_id = name  # unique in the cohort and the folder's name
            write_fhir_patient(patient, out_dir / name)
            summary.add(patient, name)
    summary.seconds = time.perf_counter() - start
    with (out_dir / PROBLEMS_FILE).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["severity", "file", "field", "message"])
        writer.writerows([p.severity.value, p.file, p.field, p.message] for p in summary.problems)
    (out_dir / COHORT_FILE).write_text(json.dumps(summary.to_json(), indent=1) + "\n", encoding="utf-8")
    return summary


class _Inline:
    """A stand-in for the process pool when reading in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


__all__ = ["FhirImportSummary", "FhirPatient", "SNOMED_PHENOTYPES", "VITAL_LOINC", "import_fhir", "read_fhir_bundle"]
