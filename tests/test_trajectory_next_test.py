"""Risk over time (medfuse_core/trajectory.py) and the next test (medfuse_core/next_test.py) on the demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfuse_core.record import MODALITIES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor():
    import torch

    from medfuse_core.predictor import Predictor

    torch.set_num_threads(1)
    return Predictor.load(ROOT / "assets" / "demo_model", device="cpu")


@pytest.fixture(scope="module")
def full_patient():
    from medfuse_core.sources.synth import generate_patient

    for i in range(30):
        record = generate_patient(2000, i, image_size=256)
        if all(record.has(m) for m in MODALITIES):
            return record
    pytest.fail("no held-out synthetic patient with all four modalities in the first 30")


def test_cut_record_keeps_only_what_had_arrived(full_patient) -> None:
    from medfuse_core.trajectory import cut_record, cutoffs

    points = cutoffs(full_patient)
    assert {6.0, 12.0, 24.0, 36.0, 48.0} <= set(points) and points == sorted(points)
    note_hours = [float(full_patient.hours_since_index(n.time)) for n in full_patient.notes]
    assert any(any(abs(p - h) < 0.011 and p >= h for p in points) for h in note_hours if 0 < h <= 48)
    early = cut_record(full_patient, 6.0)
    cut = full_patient.index_time + np.timedelta64(6, "h")
    assert (early.labs.table["time"] <= cut).all() and len(early.labs.table) < len(full_patient.labs.table)
    assert all(n.time <= cut for n in early.notes) and len(full_patient.notes) >= len(early.notes)


def test_trajectory_ends_at_the_full_prediction_and_says_what_moved_it(predictor, full_patient) -> None:
    from medfuse_core.trajectory import risk_trajectory

    trajectory = risk_trajectory(predictor, full_patient)
    last = trajectory.points[-1]
    assert last.hours == 48.0
    full = predictor.probabilities(predictor.predict_features(predictor.featurize([full_patient])[0]))[0]
    np.testing.assert_allclose(last.probabilities, full, atol=1e-5)  # the 48 h window is the whole prediction
    arrivals = [a for p in trajectory.points for a in p.arrived]
    assert any("note at" in a for a in arrivals) and any("chest X-ray at" in a for a in arrivals)
    moves = [m for label in trajectory.labels for m in trajectory.biggest_moves(label)]
    assert moves and all("->" in m and "%" in m for m in moves)
    hours, probs = trajectory.series(trajectory.labels[0])
    assert len(hours) == len(probs) >= 5


def test_next_test_range_brackets_the_completion_and_uses_k_neighbours(predictor, full_patient) -> None:
    from medfuse_core.next_test import ReferenceBank, build_reference_bank, encode, next_test_ranges
    from medfuse_core.sources.synth import generate_patient

    bank = build_reference_bank(predictor, [generate_patient(1000, i, image_size=256) for i in range(12)])
    features, _ = predictor.featurize([full_patient])
    encoded, present = encode(predictor, features)
    withheld = present[0].copy()
    withheld[MODALITIES.index("image")] = False
    ranges = next_test_ranges(predictor, encoded, withheld, bank, k=5)
    assert [r.modality for r in ranges] == ["image"]
    r = ranges[0]
    assert len(r.neighbours) == min(5, int(bank.present[:, MODALITIES.index("image")].sum()))
    assert np.all(r.low <= r.median + 1e-12) and np.all(r.median <= r.high + 1e-12)
    assert np.all((0 <= r.low) & (r.high <= 1))

    # completing with the patient's own film gives exactly its probability with the film
    own = ReferenceBank(["self"], present.copy(), {m: encoded[m].copy() for m in MODALITIES})
    exact = next_test_ranges(predictor, encoded, withheld, own, k=1)[0]
    full = predictor.probabilities(predictor.predict_features(features))[0]
    np.testing.assert_allclose(exact.low, full, atol=1e-5)
    np.testing.assert_allclose(exact.high, full, atol=1e-5)
    assert next_test_ranges(predictor, encoded, present[0], bank) == []  # nothing missing, nothing to suggest
