"""truth.json: what was planted where, per positive disease, written from the generators' reports.

`routes_planted` is derived from the evidence actually written (a route whose modality is missing,
or that the plan left out to make a positive incomplete, has no evidence and is not listed), so
attribution is scored against what the data really holds. File names follow the bundle layout
(notes/note_00.txt, images/image_00.dcm) in record order; masks are PNGs under truth/.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth.diseases import DISEASES, GENERATOR_VERSION
from medfuse_core.sources.synth.evidence import ImageEvidence, LabEvidence, NoteSpan, VitalEvidence
from medfuse_core.sources.synth.plan import PatientPlan
from medfuse_core.sources.synth.realism import CLEAN

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def note_file(index: int) -> str:
    return f"notes/note_{index:02d}.txt"


def image_file(index: int) -> str:
    return f"images/image_{index:02d}.dcm"


def mask_file(index: int, finding: str) -> str:
    return f"truth/image_{index:02d}_{finding}.png"


def _span(s: NoteSpan) -> dict[str, Any]:
    return {"file": note_file(s.note), "start": s.start, "end": s.end, "text": s.text}


def build_truth(
    plan: PatientPlan,
    labs: list[LabEvidence],
    notes: list[NoteSpan],
    vitals: list[VitalEvidence],
    images: list[ImageEvidence],
    present: dict[str, bool],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON-ready truth of one patient and its masks by truth-relative file name."""
    evidence: dict[str, Any] = {}
    mimics: dict[str, Any] = {}
    masks: dict[str, np.ndarray] = {}
    for disease in DISEASES:
        mimic = disease.key in plan.deviations.mimics
        if not (plan.conditions.has(disease.key) or mimic):
            continue
        entry: dict[str, Any] = {
            "route": disease.route,
            "labs": [{"itemid": e.itemid, "item": e.item, "time": e.time.strftime(TIME_FORMAT)}
                     for e in labs if e.disease == disease.key],
            "notes": [_span(s) for s in notes if s.disease == disease.key and s.kind == "evidence"],
            "vitals": [{"channel": e.channel, "hours": list(e.hours)} for e in vitals if e.disease == disease.key],
            "image": [],
        }
        for e in images:
            if e.disease == disease.key:
                path = mask_file(e.image, e.finding)
                masks[path] = e.mask
                entry["image"].append({"file": image_file(e.image), "finding": e.finding, "box": list(e.box), "mask": path})
        entry["routes_planted"] = [m for m in MODALITIES if entry[m]]
        entry["routes_available"] = [m for m in disease.modalities if present[m]]
        keys = ("route", "routes_planted", "routes_available", "labs", "notes", "vitals", "image")
        if plan.realism != CLEAN.name:
            entry["evidence_strength"] = plan.strength(disease.key)
            keys += ("evidence_strength",)
        (mimics if mimic else evidence)[disease.name] = {k: entry[k] for k in keys}
    truth = {
        "generator_version": GENERATOR_VERSION,
        "patient_id": plan.patient_id,
        "labels": plan.labels(),
        "severity": plan.conditions.severity,
        "modalities": {m: bool(present[m]) for m in MODALITIES},
        "evidence": evidence,
        "distractors": [dict(_span(s), kind=s.kind, disease=_name(s.disease)) for s in notes if s.kind != "evidence"],
    }
    if plan.realism != CLEAN.name:
        # what the realism setting did: evidence of diseases the patient does not have, and labels coded wrong
        truth["realism"] = plan.realism
        truth["mimics"] = mimics
        truth["label_noise"] = {"uncoded": sorted(_name(k) for k in plan.deviations.uncoded),
                                "overcoded": sorted(_name(k) for k in plan.deviations.overcoded)}
    return truth, masks


def _name(key: str) -> str:
    return next(d.name for d in DISEASES if d.key == key)
