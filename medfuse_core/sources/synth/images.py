"""Synthetic chest films: drawn findings for the image route, with DICOM header variety.

Findings per disease: heart failure -> cardiomegaly + vascular congestion, pneumonia -> a focal
opacity, pleural disease -> an effusion or a pneumothorax. A second (follow-up) film redraws the same
patient (same generator state, so the same anatomy) with the findings at another strength. Headers
vary as real exports do: AP or PA, 12/14/16 bits stored, ~15% MONOCHROME1, pixel spacing of a
0.14-0.2 mm detector scaled to the stored size, study date within the stay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medfuse_core.record import ChestImage, ImageMetadata
from medfuse_core.sources.synth.chest import draw_chest
from medfuse_core.sources.synth.evidence import ImageEvidence
from medfuse_core.sources.synth.plan import PatientPlan

FINDING_DISEASE = {
    "cardiomegaly": "chf",
    "congestion": "chf",
    "focal_opacity": "pneumonia",
    "effusion": "pleural",
    "pneumothorax": "pleural",
}
DETECTOR_PIXELS = 2500  # a real film is about this many pixels across at 0.14-0.2 mm


def _findings(rng: np.random.Generator, plan: PatientPlan) -> list[str]:
    """Findings to draw; always one draw from `rng`, so a film's anatomy never depends on the labels."""
    u = rng.random()
    findings: list[str] = []
    if plan.plants("chf", "image"):
        findings += ["cardiomegaly", "congestion"]
    if plan.plants("pneumonia", "image"):
        findings.append("focal_opacity")
    if plan.plants("pleural", "image"):
        findings += ["effusion"] if u < 0.65 else ["pneumothorax"] if u < 0.95 else ["effusion", "pneumothorax"]
    return findings


def _film(pixels: np.ndarray, view: str) -> np.ndarray:
    """Add the collimator edge (black rows) and a lead side marker (white block), as on real films.

    They also pin the film to the full [0, 1] range, so a reader that stretches min..max gives back
    the same grey levels.
    """
    out = np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=True)
    n = out.shape[0]
    edge = max(1, n // 128)
    out[:edge, :] = 0.0
    out[-edge:, :] = 0.0
    side = max(3, n // 40)
    r0, c0 = 2 * edge + side, n // 16 if view == "PA" else n - n // 16 - side
    out[r0:r0 + side, c0:c0 + side] = 1.0
    return out


def _metadata(rng: np.random.Generator, size: int, when: pd.Timestamp) -> ImageMetadata:
    spacing = round(float(rng.uniform(0.14, 0.2)) * DETECTOR_PIXELS / size, 4)
    return ImageMetadata(
        modality="DX",
        view_position="AP" if rng.random() < 0.65 else "PA",
        study_date=when.strftime("%Y-%m-%d"),
        pixel_spacing_mm=(spacing, spacing),
        photometric="MONOCHROME1" if rng.random() < 0.15 else "MONOCHROME2",
        bits_stored=int(rng.choice([12, 14, 16], p=[0.5, 0.2, 0.3])),
        file_format="dicom",
        rows=size,
        columns=size,
    )


def make_images(rng: np.random.Generator, plan: PatientPlan, size: int = 512) -> tuple[list[ChestImage], list[ImageEvidence]]:
    """The stay's films (time order) and, per film and finding, the planted region."""
    if plan.n_images == 0:
        return [], []
    findings = _findings(rng, plan)
    anatomy_seed = int(rng.integers(2**63))
    hours = [float(rng.uniform(0.3, 6.0))]
    if plan.n_images > 1:
        hours.append(float(rng.uniform(18.0, plan.end_hours - 1.0)))
    images: list[ChestImage] = []
    evidence: list[ImageEvidence] = []
    # weak evidence (a weak positive or a mimic) is a fainter, smaller finding; one film has one severity
    strength = min((plan.strength(FINDING_DISEASE[f]) for f in findings), default=1.0)
    for i, h in enumerate(hours):
        severity = float(rng.uniform(0.8, 1.3)) if i == 0 else float(rng.uniform(0.6, 1.2))
        if strength < 1.0:
            severity *= strength
        drawing = draw_chest(np.random.default_rng(anatomy_seed), findings, size, severity=severity)
        when = (plan.index_time + pd.Timedelta(minutes=round(h * 60))).floor("min")
        meta = _metadata(rng, size, when)
        view = meta.view_position or ""
        images.append(ChestImage(time=when, view=view, pixels=_film(drawing.pixels, view), metadata=meta))
        for finding in findings:
            mask = drawing.masks.get(finding)
            if mask is None or not mask.any():
                continue
            box = tuple(int(v) for v in drawing.boxes[finding])
            evidence.append(ImageEvidence(FINDING_DISEASE[finding], i, finding, box, mask))
    return images, evidence
