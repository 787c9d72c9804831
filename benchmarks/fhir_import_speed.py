"""Import speed of `import fhir`: N synthetic FHIR R4 patient Bundles of realistic size, timed.

Each generated patient Bundle is shaped like a Synthea export of one admission with some history:
a Patient, two ambulatory encounters years before and one inpatient stay, ~56 Observations (30 labs
in the stay: 15 LOINC analytes twice, with UCUM units and reference ranges; 5 vital-sign rounds of
a blood-pressure panel, heart rate, respiratory rate, temperature and SpO2; 6 labs of the old
visits; a smoking status), 3 notes (base64 text/plain, 1.5-3 KB each: two DocumentReferences and
the DiagnosticReport copy Synthea also writes), a lab-panel DiagnosticReport, 5 Conditions (SNOMED)
and 12 resources the importer does not use (Claim, ExplanationOfBenefit, Immunization,
MedicationRequest, Procedure): about 80 resources, ~90 KB of JSON per patient. The first Bundle is
validated whole with fhir.resources (R4B) so the generator cannot drift from FHIR R4.

The import is `medfuse_core.sources.fhir.import_fhir` (what `python -m medfuse_core import fhir`
runs), timed from the first file read to cohort.json written, with `--workers` processes reading.
Goal: 1,000 patients in under a minute. Timings are only meaningful on a quiet machine.

    python benchmarks/fhir_import_speed.py --n 1000 [--workers 2] [--keep DIR]

Writes benchmarks/results/fhir_import_speed.json and .md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medfuse_core.sources.fhir import import_fhir  # noqa: E402
from medfuse_core.provenance import write_benchmark_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SECONDS = 60.0  # for 1,000 patients

# LOINC, display, UCUM unit, low, high (normal range), typical value
LABS = [
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 100, 110),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.2, 1.0),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20, 18),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 139),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 4.2),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 102),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 22, 29, 25),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.6, 10.3, 9.4),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11, 8.0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12, 17.5, 13.5),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 36, 50, 41),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 250),
    ("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", 0.5, 2.2, 1.4),
    ("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.8, 1.2, 1.1),
    ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.1, 1.2, 0.8),
]
VITALS = [("8867-4", "Heart rate", "/min", 85), ("9279-1", "Respiratory rate", "/min", 18),
          ("8310-5", "Body temperature", "Cel", 37.2), ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry",
                                                          "%", 96)]
CONDITIONS = [("44054006", "Diabetes mellitus type 2 (disorder)"), ("59621000", "Essential hypertension (disorder)"),
              ("55822004", "Hyperlipidemia (disorder)"), ("49436004", "Atrial fibrillation (disorder)"),
              ("233604007", "Pneumonia (disorder)"), ("10509002", "Acute bronchitis (disorder)"),
              ("195662009", "Acute viral pharyngitis (disorder)")]
NOTE_WORDS = ("patient presents with shortness of breath and productive cough for three days denies chest pain "
              "history of hypertension and type 2 diabetes on metformin and lisinopril vital signs notable for "
              "tachycardia and low grade fever chest radiograph shows right lower lobe consolidation plan start "
              "ceftriaxone and azithromycin monitor oxygen saturation and renal function").split()
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S-05:00")


def _quantity(value: float, unit: str) -> dict:
    return {"value": round(value, 2), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def _obs(rng: random.Random, pid: str, enc: str, t: datetime, loinc: str, display: str, category: str, **value) -> dict:
    return {"resourceType": "Observation", "id": f"o{rng.getrandbits(64):016x}", "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category, "display": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}], "text": display},
            "subject": {"reference": f"urn:uuid:{pid}"}, "encounter": {"reference": f"urn:uuid:{enc}"},
            "effectiveDateTime": _iso(t), "issued": _iso(t), **value}


def _note(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(NOTE_WORDS) for _ in range(n_words)).capitalize() + ".\n"


def patient_bundle(k: int, seed: int = 0) -> dict:
    """One synthetic patient Bundle (deterministic in k and seed)."""
    rng = random.Random(seed * 1_000_003 + k)
    pid = f"{k:08d}-0000-4000-8000-{rng.getrandbits(48):012x}"
    admit = datetime(2020, 1, 1, 8) + timedelta(hours=rng.randrange(0, 24 * 700))
    encounters = [(f"e{k}-old{j}", "AMB", admit - timedelta(days=400 * (j + 1)), timedelta(minutes=30)) for j in range(2)]
    encounters.append((f"e{k}-stay", "IMP", admit, timedelta(days=rng.randint(2, 8))))
    resources: list[dict] = [{
        "resourceType": "Patient", "id": pid, "gender": rng.choice(["male", "female"]),
        "birthDate": f"{rng.randint(1930, 1995)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "name": [{"use": "official", "family": f"Family{k}", "given": [f"Given{k}"]}],
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": pid}],
        "address": [{"city": "Boston", "state": "MA", "country": "US"}],
    }]
    for eid, cls, start, length in encounters:
        resources.append({"resourceType": "Encounter", "id": eid, "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
                          "subject": {"reference": f"urn:uuid:{pid}"},
                          "period": {"start": _iso(start), "end": _iso(start + length)}})
    stay = encounters[-1][0]
    for day in range(2):  # 15 analytes twice in the stay
        t = admit + timedelta(hours=2 + 24 * day)
        for loinc, display, unit, low, high, typical in LABS:
            value = typical * rng.uniform(0.7, 1.4)
            resources.append(_obs(rng, pid, stay, t, loinc, display, "laboratory", valueQuantity=_quantity(value, unit),
                                  referenceRange=[{"low": _quantity(low, unit), "high": _quantity(high, unit)}]))
    for eid, _, start, _ in encounters[:2]:  # 3 labs per old visit: outside the index encounter
        for loinc, display, unit, _, _, typical in LABS[:3]:
            resources.append(_obs(rng, pid, eid, start + timedelta(minutes=10), loinc, display, "laboratory",
                                  valueQuantity=_quantity(typical, unit)))
    for r in range(5):  # vital-sign rounds
        t = admit + timedelta(hours=1 + 8 * r)
        resources.append({**_obs(rng, pid, stay, t, "85354-9", "Blood pressure panel", "vital-signs"), "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": _quantity(rng.randint(100, 160), "mm[Hg]")},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": _quantity(rng.randint(55, 95), "mm[Hg]")}]})
        for loinc, display, unit, typical in VITALS:
            resources.append(_obs(rng, pid, stay, t, loinc, display, "vital-signs",
                                  valueQuantity=_quantity(typical * rng.uniform(0.9, 1.15), unit)))
    resources.append(_obs(rng, pid, stay, admit, "72166-2", "Tobacco smoking status", "social-history",
                          valueCodeableConcept={"text": "Never smoked tobacco"}))
    for j in range(2):  # notes: two DocumentReferences, the first also as a DiagnosticReport (as Synthea does)
        t = admit + timedelta(hours=3 + 24 * j)
        data = base64.b64encode(_note(rng, rng.randint(220, 420)).encode()).decode()
        kind = {"system": "http://loinc.org", "code": "34117-2", "display": "History and physical note"}
        resources.append({"resourceType": "DocumentReference", "id": f"d{k}-{j}", "status": "current",
                          "type": {"coding": [kind]}, "subject": {"reference": f"urn:uuid:{pid}"}, "date": _iso(t),
                          "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": data}}],
                          "context": {"encounter": [{"reference": f"urn:uuid:{stay}"}]}})
        if j == 0:
            resources.append({"resourceType": "DiagnosticReport", "id": f"r{k}-{j}", "status": "final",
                              "code": {"coding": [kind]}, "subject": {"reference": f"urn:uuid:{pid}"},
                              "encounter": {"reference": f"urn:uuid:{stay}"}, "effectiveDateTime": _iso(t),
                              "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": data}]})
    resources.append({"resourceType": "DiagnosticReport", "id": f"p{k}", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "51990-0", "display": "Basic metabolic panel"}]},
                      "subject": {"reference": f"urn:uuid:{pid}"}, "effectiveDateTime": _iso(admit + timedelta(hours=2))})
    for j, (code, display) in enumerate(rng.sample(CONDITIONS, 5)):
        resources.append({"resourceType": "Condition", "id": f"c{k}-{j}",
                          "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                         "code": "active"}]},
                          "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                          "subject": {"reference": f"urn:uuid:{pid}"},
                          "onsetDateTime": _iso(admit - timedelta(days=rng.randint(0, 3000)))})
    for j in range(3):  # what the importer does not read
        t = _iso(admit - timedelta(days=400 * j))
        resources += [
            {"resourceType": "Immunization", "id": f"i{k}-{j}", "status": "completed", "occurrenceDateTime": t,
             "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
             "patient": {"reference": f"urn:uuid:{pid}"}},
            {"resourceType": "MedicationRequest", "id": f"m{k}-{j}", "status": "active", "intent": "order", "authoredOn": t,
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                       "code": "860975"}]}, "subject": {"reference": f"urn:uuid:{pid}"}},
            {"resourceType": "Procedure", "id": f"pr{k}-{j}", "status": "completed", "performedDateTime": t,
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "430193006"}]},
             "subject": {"reference": f"urn:uuid:{pid}"}},
            {"resourceType": "Claim", "id": f"cl{k}-{j}", "status": "active", "use": "claim", "created": t,
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
             "patient": {"reference": f"urn:uuid:{pid}"}, "provider": {"display": "Clinic"},
             "priority": {"coding": [{"code": "normal"}]},
             "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Medicare"}}]},
        ]
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                       "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]}


def generate(folder: Path, n: int, seed: int) -> dict:
    from fhir.resources.R4B.bundle import Bundle

    folder.mkdir(parents=True, exist_ok=True)
    Bundle.model_validate(patient_bundle(0, seed))  # the generator writes valid FHIR R4 (R4B models)
    sizes, resources = 0, 0
    for k in range(n):
        data = patient_bundle(k, seed)
        text = json.dumps(data)
        (folder / f"patient_{k:05d}.json").write_text(text, encoding="utf-8")
        sizes += len(text)
        resources += len(data["entry"])
    return {"files": n, "resources": resources, "mb": round(sizes / 1e6, 1)}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the reading workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def markdown(result: dict) -> str:
    g, r = result["generated"], result["import"]
    verdict = "met" if r["seconds"] <= GOAL_SECONDS * g["files"] / 1000 else "NOT met"
    return "\n".join([
        "# FHIR import speed",
        "",
        f"`import_fhir` (`python -m medfuse_core import fhir`) on {g['files']} synthetic FHIR R4 patient Bundles "
        f"({g['resources']} resources, {g['mb']} MB of JSON; ~{g['resources'] // max(g['files'], 1)} resources per "
        f"patient, shaped like a Synthea admission: see the script), {r['workers']} reading process(es). "
        f"{result['meta']['date']}, {result['meta']['platform']}, {result['meta']['cpus']} CPUs.",
        "",
        "| patients | workers | wall seconds | CPU seconds | patients/s | resources/s | lab rows | vital rows | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {g['files']} | {r['workers']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {g['files'] / r['seconds']:.1f} | "
        f"{g['resources'] / r['seconds']:.0f} | {r['lab_results']} | {r['vital_values']} | {r['notes']} |",
        "",
        f"Goal: 1,000 patients in under {GOAL_SECONDS:.0f} s (scaled to {g['files']}: "
        f"{GOAL_SECONDS * g['files'] / 1000:.1f} s) in wall time: {verdict}. CPU seconds (this process and the "
        "reading workers) say what the import costs where other work shares the machine.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="patients (Bundle files)")
    parser.add_argument("--workers", type=int, default=1, help="processes reading the files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated Bundles and bundles here")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fhir_speed_"))
    try:
        generated = generate(work / "fhir", args.n, args.seed)
        shutil.rmtree(work / "bundles", ignore_errors=True)
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        summary = import_fhir(work / "fhir", work / "bundles", workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
        assert summary.n == args.n and not summary.problems, summary.describe()
        result = {
            "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "platform": platform.platform(),
                     "cpus": os.cpu_count(), "python": platform.python_version(), "seed": args.seed},
            "generated": generated,
            "import": {"workers": args.workers, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                       "patients": summary.n,
                       "lab_results": summary.counts["lab results"], "vital_values": summary.counts["vital-sign values"],
                       "notes": summary.counts["notes"], "counts": dict(sorted(summary.counts.items()))},
        }
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    write_benchmark_result(args.out_dir, "fhir_import_speed", result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
