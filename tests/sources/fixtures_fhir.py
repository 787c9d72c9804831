"""FHIR R4 Bundle fixtures in the shape Synthea and EHR exports write (validated with fhir.resources R4B in
the tests): a Synthea-like patient with a lifetime of history, one with a malformed Observation and unused
resource types, one with films (inline Media, a Binary referenced by url, a local file), a file that is
not a Bundle and a file that is not JSON.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

SYNTHEA = "8f3c1b2a-5d4e-4f60-9a7b-1c2d3e4f5a6b"
MALFORMED = "malformed-1"
FILMS = "films-1"
ENC_OLD, ENC = "enc-wellness-2015", "enc-inpatient-2021"
NOTE_TEXT = "Chief complaint: shortness of breath.\nAssessment: community-acquired pneumonia.\n"
CAT = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory",
                    "display": "laboratory"}]}]
VITAL = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs",
                      "display": "vital-signs"}]}]


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def png_bytes(size: int = 32, fmt: str = "PNG") -> bytes:
    pixels = (np.linspace(0, 255, size * size).reshape(size, size)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def quantity(value: float, unit: str, code: str | None = None, comparator: str | None = None) -> dict:
    q = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": code or unit}
    if comparator:
        q["comparator"] = comparator
    return q


def observation(oid: str, loinc: str, display: str, when: str, category: list, encounter: str, pid: str = SYNTHEA,
                **value) -> dict:
    return {
        "resourceType": "Observation", "id": oid, "status": "final", "category": category,
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}], "text": display},
        "subject": {"reference": f"urn:uuid:{pid}"}, "encounter": {"reference": f"urn:uuid:{encounter}"},
        "effectiveDateTime": when, "issued": when.replace("+", ".000+") if "+" in when else when, **value,
    }


def entry(resource: dict) -> dict:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry(r) for r in resources]}


def patient(pid: str, gender: str, birth: str, **extra) -> dict:
    return {
        "resourceType": "Patient", "id": pid,
        "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": gender[0].upper()}],
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": pid}],
        "name": [{"use": "official", "family": "Doe123", "given": ["Jane456"], "prefix": ["Mrs."]}],
        "gender": gender, "birthDate": birth,
        "address": [{"city": "Boston", "state": "MA", "country": "US"}], **extra,
    }


def encounter(eid: str, cls: str, start: str, end: str, pid: str = SYNTHEA) -> dict:
    return {
        "resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185347001", "display": "Encounter for problem"}],
                  "text": "Encounter for problem"}],
        "subject": {"reference": f"urn:uuid:{pid}"}, "period": {"start": start, "end": end},
    }


def condition(cid: str, system: str, code: str, display: str, onset: str, abatement: str | None = None,
              pid: str = SYNTHEA) -> dict:
    resource = {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "resolved" if abatement else "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"urn:uuid:{pid}"}, "onsetDateTime": onset, "recordedDate": onset,
    }
    if abatement:
        resource["abatementDateTime"] = abatement
    return resource


SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
T = "2021-03-04T10:00:00-05:00"  # the inpatient encounter's start


def synthea_bundle() -> dict:
    """A Synthea-like patient: an old wellness visit, an inpatient stay with labs, vitals, notes, conditions."""
    resources = [
        patient(SYNTHEA, "female", "1950-06-15"),
        encounter(ENC_OLD, "AMB", "2015-01-10T09:00:00-05:00", "2015-01-10T09:30:00-05:00"),
        encounter(ENC, "IMP", T, "2021-03-09T12:00:00-05:00"),
        # labs in the stay: mmol/L glucose as written, a comparator, a reference range with an H flag
        observation("lab-glucose", "2339-0", "Glucose [Moles/volume] in Blood", "2021-03-04T11:00:00-05:00", CAT, ENC,
                    valueQuantity=quantity(5.9, "mmol/L")),
        observation("lab-creat", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "2021-03-04T11:00:00-05:00",
                    CAT, ENC, valueQuantity=quantity(1.9, "mg/dL"),
                    referenceRange=[{"low": quantity(0.5, "mg/dL"), "high": quantity(1.1, "mg/dL")}],
                    interpretation=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                 "code": "H"}]}]),
        observation("lab-lactate", "2524-7", "Lactate [Moles/volume] in Serum or Plasma", "2021-03-04T12:30:00-05:00",
                    CAT, ENC, valueQuantity=quantity(0.5, "mmol/L", comparator="<")),
        observation("lab-wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "2021-03-05T06:00:00-05:00",
                    CAT, ENC, valueQuantity={"value": 14.2, "unit": "10^3/uL", "system": "http://unitsofmeasure.org",
                                             "code": "10*3/uL"}),
        # vitals: a blood-pressure panel with components, heart rate, Fahrenheit, pounds, BMI (no model channel)
        {**observation("vs-bp", "85354-9", "Blood pressure panel with all children optional", "2021-03-04T10:05:00-05:00",
                       VITAL, ENC),
         "component": [
             {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
              "valueQuantity": quantity(151, "mm[Hg]")},
             {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
              "valueQuantity": quantity(88, "mm[Hg]")}]},
        observation("vs-hr", "8867-4", "Heart rate", "2021-03-04T10:05:00-05:00", VITAL, ENC,
                    valueQuantity=quantity(112, "/min")),
        observation("vs-temp", "8310-5", "Body temperature", "2021-03-04T10:05:00-05:00", VITAL, ENC,
                    valueQuantity={"value": 101.3, "unit": "degF", "system": "http://unitsofmeasure.org", "code": "[degF]"}),
        observation("vs-weight", "29463-7", "Body Weight", "2021-03-04T10:05:00-05:00", VITAL, ENC,
                    valueQuantity={"value": 154.3, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}),
        observation("vs-bmi", "39156-5", "Body mass index (BMI) [Ratio]", "2021-03-04T10:05:00-05:00", VITAL, ENC,
                    valueQuantity=quantity(27.1, "kg/m2")),
        # history: a lab of the 2015 wellness visit, social history and a survey
        observation("lab-old", "2339-0", "Glucose [Moles/volume] in Blood", "2015-01-10T09:10:00-05:00", CAT, ENC_OLD,
                    valueQuantity=quantity(5.1, "mmol/L")),
        observation("smoking", "72166-2", "Tobacco smoking status", "2021-03-04T10:10:00-05:00",
                    [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "social-history"}]}], ENC,
                    valueCodeableConcept={"coding": [{"system": SNOMED, "code": "266919005", "display": "Never smoker"}],
                                          "text": "Never smoker"}),
        observation("phq", "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score", "2021-03-04T10:10:00-05:00",
                    [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}],
                    ENC, valueQuantity=quantity(3, "{score}")),
        # the note twice, as Synthea writes it: DocumentReference and DiagnosticReport.presentedForm
        {"resourceType": "DocumentReference", "id": "doc-1", "status": "superseded",
         "type": {"coding": [{"system": "http://loinc.org", "code": "34117-2", "display": "History and physical note"}]},
         "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                                   "code": "clinical-note"}]}],
         "subject": {"reference": f"urn:uuid:{SYNTHEA}"}, "date": "2021-03-04T13:00:00.000-05:00",
         "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": b64(NOTE_TEXT)}}],
         "context": {"encounter": [{"reference": f"urn:uuid:{ENC}"}],
                     "period": {"start": "2021-03-04T13:00:00-05:00"}}},
        {"resourceType": "DiagnosticReport", "id": "dr-note", "status": "final",
         "category": [{"coding": [{"system": "http://loinc.org", "code": "34117-2"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "34117-2", "display": "History and physical note"}]},
         "subject": {"reference": f"urn:uuid:{SYNTHEA}"}, "encounter": {"reference": f"urn:uuid:{ENC}"},
         "effectiveDateTime": "2021-03-04T13:00:00.000-05:00", "issued": "2021-03-04T13:00:00.000-05:00",
         "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": b64(NOTE_TEXT)}]},
        {"resourceType": "DiagnosticReport", "id": "dr-panel", "status": "final", "category": CAT,
         "code": {"coding": [{"system": "http://loinc.org", "code": "51990-0", "display": "Basic metabolic panel"}]},
         "subject": {"reference": f"urn:uuid:{SYNTHEA}"}, "encounter": {"reference": f"urn:uuid:{ENC}"},
         "effectiveDateTime": "2021-03-04T11:00:00-05:00", "result": [{"reference": "urn:uuid:lab-creat"}]},
        # conditions: active chronic ones (SNOMED and ICD-10-CM), one unmapped, one resolved years ago
        condition("c-dm", SNOMED, "44054006", "Diabetes mellitus type 2 (disorder)", "1998-02-01T08:00:00-05:00"),
        condition("c-htn", SNOMED, "59621000", "Essential hypertension (disorder)", "2001-05-02T08:00:00-05:00"),
        condition("c-hf", ICD10, "I50.9", "Heart failure, unspecified", "2021-03-04T10:30:00-05:00"),
        condition("c-bronch", SNOMED, "10509002", "Acute bronchitis (disorder)", "2021-03-04T10:30:00-05:00"),
        condition("c-sinus", SNOMED, "444814009", "Viral sinusitis (disorder)", "2015-01-10T09:00:00-05:00",
                  "2015-01-24T09:00:00-05:00"),
        # what the importer does not use
        {"resourceType": "Immunization", "id": "imm-1", "status": "completed",
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
         "patient": {"reference": f"urn:uuid:{SYNTHEA}"}, "occurrenceDateTime": "2015-01-10T09:00:00-05:00"},
        {"resourceType": "MedicationRequest", "id": "med-1", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]},
         "subject": {"reference": f"urn:uuid:{SYNTHEA}"}, "authoredOn": "2021-03-04T10:00:00-05:00"},
        {"resourceType": "Claim", "id": "claim-1", "status": "active",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
         "use": "claim", "patient": {"reference": f"urn:uuid:{SYNTHEA}"}, "created": "2021-03-09T12:00:00-05:00",
         "provider": {"display": "Hospital"}, "priority": {"coding": [{"code": "normal"}]},
         "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Medicare"}}]},
    ]
    return bundle(resources)


def malformed_bundle() -> dict:
    """A patient who died in hospital; one malformed Observation, an unknown resource type, an ImagingStudy."""
    resources = [
        patient(MALFORMED, "male", "1941-11-30", deceasedDateTime="2021-06-02T04:00:00Z"),
        encounter("enc-m", "EMER", "2021-06-01T08:00:00Z", "2021-06-02T04:00:00Z", pid=MALFORMED),
        observation("bad-obs", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "2021-06-01T09:00:00Z", CAT,
                    "enc-m", MALFORMED, valueQuantity={"value": "four point one", "unit": "mmol/L"}),
        observation("good-obs", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "2021-06-01T09:00:00Z", CAT,
                    "enc-m", MALFORMED, valueQuantity=quantity(131, "mmol/L")),
        {"resourceType": "ImagingStudy", "id": "is-1", "status": "available", "subject": {"reference": f"urn:uuid:{MALFORMED}"},
         "started": "2021-06-01T10:00:00Z",
         "series": [{"uid": "1.2.3.4", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"},
                     "instance": [{"uid": "1.2.3.4.5", "sopClass": {"system": "urn:ietf:rfc:3986",
                                                                   "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1.1"}}]}]},
        {"resourceType": "Provenance", "id": "prov-1", "target": [{"reference": f"urn:uuid:{MALFORMED}"}],
         "recorded": "2021-06-02T04:00:00Z", "agent": [{"who": {"display": "EHR"}}]},
        condition("c-sepsis", ICD10, "A41.9", "Sepsis, unspecified organism", "2021-06-01T09:00:00Z", pid=MALFORMED),
    ]
    return bundle(resources)


def films_bundle(local_name: str) -> dict:
    """Films three ways: inline Media, a Binary referenced by a DocumentReference, a local file; one file outside."""
    enc = encounter("enc-f", "IMP", "2022-01-01T00:00:00Z", "2022-01-03T00:00:00Z", pid=FILMS)
    media_inline = {"resourceType": "Media", "id": "media-1", "status": "completed",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]},
                    "view": {"coding": [{"system": SNOMED, "code": "399348003", "display": "postero-anterior"}]},
                    "subject": {"reference": f"urn:uuid:{FILMS}"}, "encounter": {"reference": "urn:uuid:enc-f"},
                    "createdDateTime": "2022-01-01T06:00:00Z",
                    "content": {"contentType": "image/png", "data": b64(png_bytes())}}
    media_local = {**media_inline, "id": "media-2", "view": {"text": "AP"}, "createdDateTime": "2022-01-02T06:00:00Z",
                   "content": {"contentType": "image/png", "url": local_name}}
    media_outside = {**media_inline, "id": "media-3", "createdDateTime": "2022-01-02T07:00:00Z",
                     "content": {"contentType": "image/png", "url": "../../outside.png"}}
    binary = {"resourceType": "Binary", "id": "bin-1", "contentType": "image/jpeg", "data": b64(png_bytes(40, "JPEG"))}
    docref = {"resourceType": "DocumentReference", "id": "doc-img", "status": "current",
              "subject": {"reference": f"urn:uuid:{FILMS}"}, "date": "2022-01-02T08:00:00Z",
              "content": [{"attachment": {"contentType": "image/jpeg", "url": "Binary/bin-1"}}]}
    return bundle([patient(FILMS, "male", "1980-01-01"), enc, media_inline, media_local, media_outside, binary, docref])


def write_fhir_folder(root: Path) -> Path:
    """The fixture folder: three Bundles, a local film, a bare Patient and a file that is not JSON."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "synthea").mkdir()
    (root / "synthea" / f"Jane456_Doe123_{SYNTHEA}.json").write_text(json.dumps(synthea_bundle(), indent=1))
    (root / "malformed.json").write_text(json.dumps(malformed_bundle()))
    (root / "films").mkdir()
    (root / "films" / "film.png").write_bytes(png_bytes(48))
    (root / "films" / "films.json").write_text(json.dumps(films_bundle("film.png")))
    (root.parent / "outside.png").write_bytes(png_bytes(16))
    (root / "not_a_bundle.json").write_text(json.dumps(patient("lonely", "female", "1990-01-01")))
    (root / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    return root
