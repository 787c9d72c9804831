"""Single-route diseases leave no trace outside their route: counterfactual twins prove it.

A patient is regenerated from the same random streams with one disease removed from the plan; every
modality outside the disease's route must come out identical, byte for byte, and the notes must
never name a single-route disease of another modality at all.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from medfuse_core.sources.synth import DISEASES
from medfuse_core.sources.synth.cohort import _streams
from medfuse_core.sources.synth.images import make_images
from medfuse_core.sources.synth.labs import make_labs
from medfuse_core.sources.synth.notes import make_notes
from medfuse_core.sources.synth.phrases import FORBIDDEN
from medfuse_core.sources.synth.plan import PatientPlan, make_plan
from medfuse_core.sources.synth.vitals import make_vitals

SEED = 4242
SIZE = 96
SINGLE = [d for d in DISEASES if d.single_route]


def _without(plan: PatientPlan, key: str) -> PatientPlan:
    c = dataclasses.replace(plan.conditions, diseases=plan.conditions.diseases - {key})
    return dataclasses.replace(
        plan, conditions=c,
        planted={k: v for k, v in plan.planted.items() if k != key},
        windows={k: v for k, v in plan.windows.items() if k != key},
    )


def _modalities(plan: PatientPlan, index: int) -> dict:
    rng = _streams(SEED, index)
    labs, _ = make_labs(rng["labs"], plan)
    vitals, _ = make_vitals(rng["vitals"], plan)
    notes, _ = make_notes(rng["notes"], plan)
    images, _ = make_images(rng["images"], plan, SIZE)
    return {"labs": labs.table, "vitals": vitals.table, "notes": [n.text for n in notes],
            "image": [im.pixels for im in images]}


def _same(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    return len(a) == len(b) and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


def _positive_plans(key: str, n: int = 12) -> list[PatientPlan]:
    out, i = [], 0
    while len(out) < n and i < 2000:
        plan = make_plan(_streams(SEED, i)["plan"], i)
        if plan.conditions.has(key) and plan.planted.get(key):
            out.append(plan)
        i += 1
    return out


@pytest.mark.parametrize("disease", SINGLE, ids=lambda d: d.key)
def test_single_route_disease_changes_only_its_route(disease):
    plans = _positive_plans(disease.key)
    assert len(plans) >= 8
    changed = 0
    for plan in plans:
        with_d = _modalities(plan, plan.index)
        without = _modalities(_without(plan, disease.key), plan.index)
        for modality in ("labs", "vitals", "notes", "image"):
            if modality != disease.route:
                assert _same(with_d[modality], without[modality]), (disease.key, modality, plan.patient_id)
        changed += not _same(with_d[disease.route], without[disease.route])
    assert changed == len(plans)


_SHORT = re.compile(r"\b(" + "|".join(w for w in FORBIDDEN if len(w) <= 3) + r")\b")


def test_notes_never_name_single_route_diseases(cohort):
    long_words = [w.lower() for w in FORBIDDEN if len(w) > 3]
    for p in cohort:
        for note in p.record.notes:
            low = note.text.lower()
            assert not [w for w in long_words if w in low], (p.record.patient_id, note.text)
            assert not _SHORT.search(note.text), (p.record.patient_id, _SHORT.search(note.text))


def test_planted_image_regions_differ_from_the_twin_without_findings():
    """The film with findings differs from its finding-free twin inside the masks, not elsewhere."""
    checked = 0
    for key in ("chf", "pneumonia", "pleural"):
        for plan in [p for p in _positive_plans(key, 30) if "image" in p.planted[key]][:6]:
            rng = _streams(SEED, plan.index)
            images, evidence = make_images(rng["images"], plan, SIZE)
            twin, _ = make_images(_streams(SEED, plan.index)["images"], _without(plan, key), SIZE)
            for e in [e for e in evidence if e.disease == key]:
                delta = np.abs(images[e.image].pixels - twin[e.image].pixels)
                union = np.zeros_like(e.mask)
                for other in evidence:
                    if other.image == e.image:
                        union |= other.mask
                assert delta[e.mask].mean() > 0.02, (plan.patient_id, e.finding, delta[e.mask].mean())
                assert delta[e.mask].mean() > 3 * delta[~union].mean()
                checked += 1
    assert checked >= 8
