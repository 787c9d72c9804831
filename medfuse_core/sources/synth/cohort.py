"""Generate synthetic patients in memory or a whole cohort of bundle folders with cohort.json.

Patient `i` of seed `s` draws from `SeedSequence(s, spawn_key=(i,))` (the i-th child of
`SeedSequence(s).spawn`), so it is the same patient whatever the cohort size, and each modality has
its own child stream, so e.g. the image size never changes the labs.
"""

from __future__ import annotations

import logging
import json
import multiprocessing as mp
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.sources.bundle import write_bundle
from medfuse_core.sources.synth.diseases import DISEASE_NAMES, GENERATOR_VERSION, LABEL_NAMES
from medfuse_core.sources.synth.images import make_images
from medfuse_core.sources.synth.labs import make_labs
from medfuse_core.sources.synth.notes import make_notes
from medfuse_core.sources.synth.plan import make_plan
from medfuse_core.sources.synth.realism import CLEAN, Realism
from medfuse_core.sources.synth.truth import build_truth
from medfuse_core.sources.synth.vitals import make_vitals
from medfuse_core.sources.synth.workers import limit_blas_threads

logger = logging.getLogger(__name__)

COHORT_FILE = "cohort.json"
# "realism" last: spawning one more child leaves the first five (and so every clean patient) unchanged
_STREAMS = ("plan", "labs", "vitals", "notes", "images", "realism")


@dataclass
class SynthPatient:
    """A generated patient: the record (with labels and truth) and its finding masks by file name."""

    record: PatientRecord
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _streams(rng_or_seed: np.random.Generator | int, index: int) -> dict[str, np.random.Generator]:
    if isinstance(rng_or_seed, np.random.Generator):
        children = rng_or_seed.spawn(len(_STREAMS))
    else:
        root = np.random.SeedSequence(int(rng_or_seed), spawn_key=(index,))
        children = [np.random.default_rng(s) for s in root.spawn(len(_STREAMS))]
    return dict(zip(_STREAMS, children))


def synthesize(rng_or_seed: np.random.Generator | int, index: int, *, image_size: int = 512,
               realism: Realism = CLEAN) -> SynthPatient:
    """Patient `index`: from a cohort seed (reproducible per index) or from a caller's generator.
    `realism`: the clean textbook world or the MIMIC-like ward (realism.py)."""
    rng = _streams(rng_or_seed, index)
    plan = make_plan(rng["plan"], index, realism, rng["realism"])
    labs, lab_ev = make_labs(rng["labs"], plan)
    vitals, vital_ev = make_vitals(rng["vitals"], plan)
    notes, spans = make_notes(rng["notes"], plan)
    images, image_ev = make_images(rng["images"], plan, image_size)
    record = PatientRecord(
        patient_id=plan.patient_id,
        age=plan.conditions.age,
        sex=plan.conditions.sex,
        index_time=plan.index_time,
        labs=labs,
        vitals=vitals,
        notes=notes,
        images=images,
        labels=plan.labels(),
        source=f"synthetic:{GENERATOR_VERSION}" + ("" if realism.clean else f":{realism.name}"),
    )
    present = {m: record.has(m) for m in MODALITIES}
    record.truth, masks = build_truth(plan, lab_ev, spans, vital_ev, image_ev, present)
    return SynthPatient(record, masks)


def generate_patient(rng_or_seed: np.random.Generator | int, index: int, *, image_size: int = 512,
                     realism: Realism = CLEAN) -> PatientRecord:
    """The record of patient `index` (labels and truth included; masks via `synthesize`)."""
    return synthesize(rng_or_seed, index, image_size=image_size, realism=realism).record


def write_patient(patient: SynthPatient, folder: Path) -> Path:
    """Write the bundle plus the truth masks (truth/image_00_<finding>.png, 0 or 255)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)  # a stale bundle could keep files this patient does not have
    write_bundle(patient.record, folder)
    for name, mask in patient.masks.items():
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return folder


@dataclass
class CohortSummary:
    """What was generated: counts per label and modality, and how fast."""

    out_dir: Path
    n: int
    seed: int
    label_counts: dict[str, int]
    modality_counts: dict[str, int]
    seconds: float
    generator_version: str = GENERATOR_VERSION
    realism: Realism = CLEAN

    @property
    def prevalence(self) -> dict[str, float]:
        return {k: v / self.n if self.n else 0.0 for k, v in self.label_counts.items()}

    @property
    def patients_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        """cohort.json: deterministic for (n, seed), so no timings in it."""
        return {
            "generator_version": self.generator_version,
            "seed": self.seed,
            "n": self.n,
            "label_names": list(LABEL_NAMES),
            "diseases": list(DISEASE_NAMES),
            "prevalence": {k: round(v, 4) for k, v in self.prevalence.items()},
            "label_counts": self.label_counts,
            "modality_counts": self.modality_counts,
            "patients": [f"P{i:05d}" for i in range(self.n)],
            **({} if self.realism.clean else {"realism": self.realism.to_dict()}),
        }

    def describe(self) -> str:
        setting = "" if self.realism.clean else f", realism {self.realism.name}"
        lines = [f"{self.n} patients (seed {self.seed}, {self.generator_version}{setting}) in {self.out_dir} "
                 f"in {self.seconds:.1f} s ({self.patients_per_s:.1f} patients/s)",
                 "modalities present: " + ", ".join(f"{m} {c}" for m, c in self.modality_counts.items())]
        lines += [f"  {p:6.1%}  {name}" for name, p in self.prevalence.items()]
        return "\n".join(lines)


def _make_and_write(args: tuple[int, int, Path, int, Realism]) -> tuple[dict[str, int], dict[str, bool]]:
    seed, index, out_dir, image_size, realism = args
    patient = synthesize(seed, index, image_size=image_size, realism=realism)
    write_patient(patient, out_dir / patient.record.patient_id)
    record = patient.record
    return dict(record.labels or {}), {m: record.has(m) for m in MODALITIES}


def worker_count(n: int, workers: int | None) -> int:
    """Processes to use. By default several only for larger cohorts, and never from a process that
    already runs other threads (a dashboard server): forking those can deadlock on their locks."""
    if workers is not None:
        return max(1, workers)
    if n < 16 or threading.active_count() > 1 or "fork" not in mp.get_all_start_methods():
        return 1
    return min(4, os.cpu_count() or 1)


def generate_cohort(n: int, seed: int, out_dir: Path, *, image_size: int = 512, progress: bool = False,
                    workers: int | None = None, realism: Realism = CLEAN) -> CohortSummary:
    """Write `n` bundles (out_dir/P00000 ...) and out_dir/cohort.json; the same for any `workers`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = [(seed, i, out_dir, image_size, realism) for i in range(n)]
    label_counts = {name: 0 for name in LABEL_NAMES}
    modality_counts = {m: 0 for m in MODALITIES}
    n_workers = worker_count(n, workers)
    pool = None
    if n_workers > 1:
        pool = ProcessPoolExecutor(n_workers, mp_context=mp.get_context("fork"), initializer=limit_blas_threads)
    try:
        results = pool.map(_make_and_write, jobs, chunksize=4) if pool else map(_make_and_write, jobs)
        for done, (labels, present) in enumerate(results, start=1):
            for name, value in labels.items():
                label_counts[name] += int(value)
            for m, has in present.items():
                modality_counts[m] += int(has)
            if progress and (done % 10 == 0 or done == n):
                logger.info("synth: %d/%d patients", done, n)
    finally:
        if pool:
            pool.shutdown()
    summary = CohortSummary(out_dir, n, seed, label_counts, modality_counts, time.perf_counter() - start,
                            realism=realism)
    (out_dir / COHORT_FILE).write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary
