"""Model invariants on the tiny demo checkpoint (hypothesis): the order of a patient's lab rows does not
matter, the same input gives the same output, and a record with no usable data gets "no data", never a
number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medfuse_core.explain.scores import score_records
from medfuse_core.predictor import NoData, NoDataError, Prediction, Predictor, no_data_reason
from medfuse_core.record import Labs, PatientRecord, Vitals

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def predictor(demo_checkpoint) -> Predictor:
    return Predictor.load(demo_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def patients() -> list[PatientRecord]:
    """Demo patients with labs, and with at least two lab rows sharing nothing but the item (no ties)."""
    from medfuse_core.demo import demo_cohort_dir
    from medfuse_core.sources.bundle import find_bundles, read_bundle

    records = [read_bundle(f) for f in find_bundles(demo_cohort_dir())[:12]]
    return [r for r in records if len(r.labs.table) > 3]


def _shuffled(record: PatientRecord, seed: int) -> PatientRecord:
    table = record.labs.table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return PatientRecord(record.patient_id, record.age, record.sex, record.index_time, labs=Labs(table),
                         vitals=record.vitals, notes=record.notes, images=record.images)


def test_demo_patients_have_no_tied_lab_rows(patients) -> None:
    """The shuffle property holds for rows of one item at distinct times (a tie of item and time with two
    values is ambiguous: the featurizer keeps the later row in the file). The cohort has none."""
    assert patients
    for r in patients:
        t = r.labs.table
        assert not t.duplicated(["itemid", "item", "time"]).any(), r.patient_id


@SMALL
@given(st.integers(0, 10), st.integers(0, 2**31 - 1))
def test_lab_row_order_does_not_change_the_prediction(predictor, patients, which: int, seed: int) -> None:
    record = patients[which % len(patients)]
    before, after = predictor.predict([record, _shuffled(record, seed)])
    assert isinstance(before, Prediction) and isinstance(after, Prediction)
    np.testing.assert_allclose(after.probabilities, before.probabilities, rtol=0, atol=1e-5)
    np.testing.assert_allclose(after.logits, before.logits, rtol=0, atol=1e-5)


@SMALL
@given(st.integers(0, 10))
def test_same_input_twice_gives_identical_output(predictor, patients, which: int) -> None:
    record = patients[which % len(patients)]
    first = predictor.predict([record])[0]
    second = predictor.predict([record])[0]
    assert np.array_equal(first.logits, second.logits) and np.array_equal(first.probabilities, second.probabilities)
    both = score_records(predictor, [record])[record.patient_id], score_records(predictor, [record])[record.patient_id]
    assert np.array_equal(both[0].probabilities, both[1].probabilities)
    assert np.array_equal(both[0].contributions, both[1].contributions)


def _empty_records() -> list[PatientRecord]:
    t0 = pd.Timestamp("2131-05-07 08:00")
    late = pd.DataFrame({"time": [t0 + pd.Timedelta(days=9)], "channel": ["Heart Rate"], "value": [88.0],
                         "value_text": ["88"]})
    return [PatientRecord("NOTHING", age=70.0, sex="F", index_time=t0),
            PatientRecord("TOO_LATE", age=70.0, index_time=t0, vitals=Vitals(late))]  # outside the 48 h window


def test_no_modality_is_no_data_not_a_number(predictor, patients) -> None:
    empty, late = _empty_records()
    results = predictor.predict([empty, patients[0], late])
    assert [type(r) for r in results] == [NoData, Prediction, NoData]
    assert results[0].reason == no_data_reason(48.0) and "no data" in results[0].reason
    # an abstention, stated as such (issue 17): the state and the (here absent) domain check travel with it
    assert results[0].to_dict() == {"patient_id": "NOTHING", "no_data": results[0].reason,
                                    "state": "insufficient data", "domain": results[0].domain.to_dict()}
    assert "probability" not in str(results[0].to_dict())
    alone = predictor.predict([patients[0]])[0]
    np.testing.assert_allclose(results[1].probabilities, alone.probabilities, atol=1e-6)  # the others unaffected
    with pytest.raises(NoDataError, match="NOTHING: no data"):
        predictor.predict_one(empty)
    assert isinstance(predictor.predict_one(patients[0]), Prediction)


def test_dashboard_scores_leave_no_data_patients_out(predictor, patients) -> None:
    empty, late = _empty_records()
    scores = score_records(predictor, [empty, patients[0], late])
    assert list(scores) == [patients[0].patient_id]
