"""Lab vocabulary and per-item lab tokens: exact summary features on a hand-made table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medfuse_core.features.labs import (
    N_FEATURES, LabItemStats, LabVocabulary, cohort_lab_features, lab_features,
)
from medfuse_core.record import Labs, PatientRecord

T0 = pd.Timestamp("2100-01-01 00:00")


def _row(hours, itemid, item, value, text=None, censored="", unit="mg/dL", ref=(np.nan, np.nan)):
    return {"time": T0 + pd.Timedelta(hours=hours), "itemid": itemid, "item": item, "value": value,
            "value_text": text if text is not None else f"{value}", "censored": censored, "unit": unit,
            "ref_low": ref[0], "ref_high": ref[1], "flag": ""}


def _vocab() -> LabVocabulary:
    return LabVocabulary([
        LabItemStats("itemid:50912", "Creatinine", "mg/dL", "identity", 1.0, 0.5, 0.5, 1.1, 10),
        LabItemStats("itemid:50813", "Lactate", "mmol/L", "log1p", float(np.log1p(1.0)), 0.25, 0.5, 2.0, 10),
        LabItemStats("name:troponin t", "Troponin T", "ng/mL", "identity", 0.0, 1.0, None, None, 10),
        LabItemStats("itemid:50971", "Potassium", "mEq/L", "identity", 4.0, 0.3, 3.3, 5.1, 10),
    ])


def _labs() -> Labs:
    return Labs(pd.DataFrame([
        _row(20, 50912, "Creatinine", 2.0),  # out of time order on purpose
        _row(1, 50912, "Creatinine", 1.0),
        _row(10, 50912, "Creatinine", np.nan, "<0.5", "below"),  # censored: its bound, 0.5
        _row(60, 50912, "Creatinine", 5.0),  # after the 48 h window
        _row(-2, 50912, "Creatinine", 9.0),  # before the index time
        _row(5, 50813, "Lactate", 1.0),
        _row(6, 50813, "Lactate", 3.0),
        _row(3, 50971, "Potassium", np.nan, "HEMOLYZED"),  # text only: no token
        _row(4, None, "Troponin T", 100.0),  # no itemid: by name; z = 100 clipped to 8
        _row(7, 99999, "Mystery", 3.0),  # unknown item: dropped, listed
    ]))


def test_tokens_exact_values_window_censoring_text_and_unknown():
    tokens = lab_features(_labs(), T0, _vocab(), hours=48.0)
    np.testing.assert_array_equal(tokens.item_ids, [1, 2, 3])
    assert tokens.item_ids.dtype == np.int64 and tokens.values.dtype == np.float32
    lactate = (np.log1p(3.0) - np.log1p(1.0)) / 0.25
    expected = np.array([
        [2.0, -1.0, 2.0, 2.0],  # creatinine z: 0 (1 h), -1 (10 h, "<0.5"), 2 (20 h): last, min, max, last - first
        [lactate, 0.0, lactate, lactate],
        [8.0, 8.0, 8.0, 0.0],
    ], dtype=np.float32)
    np.testing.assert_allclose(tokens.values, expected, atol=1e-6)
    assert tokens.keys == ["itemid:50912", "itemid:50813", "name:troponin t"]
    assert tokens.names == ["Creatinine", "Lactate", "Troponin T"]
    assert tokens.unknown == ["Mystery"]
    ids, values = tokens  # unpacks like the (ids, values) pair PatientFeatures wants
    assert ids is tokens.item_ids and values is tokens.values


def test_no_index_time_uses_all_rows():
    tokens = lab_features(_labs(), None, _vocab())
    # creatinine in time order: -2 h 9.0 (z 16 -> 8), 1 h 0, 10 h -1, 20 h 2, 60 h 5.0 (z 8)
    np.testing.assert_allclose(tokens.values[0], [8.0, -1.0, 8.0, 0.0], atol=1e-6)


def test_short_window_and_empty_labs():
    tokens = lab_features(_labs(), T0, _vocab(), hours=2.0)
    np.testing.assert_array_equal(tokens.item_ids, [1])  # only the 1 h creatinine
    np.testing.assert_allclose(tokens.values, [[0.0, 0.0, 0.0, 0.0]])
    for labs in (Labs(), Labs(pd.DataFrame([_row(3, 50971, "Potassium", np.nan, "HEMOLYZED")]))):
        ids, values = lab_features(labs, T0, _vocab())
        assert ids.shape == (0,) and ids.dtype == np.int64
        assert values.shape == (0, N_FEATURES) and values.dtype == np.float32


def test_cohort_features_match_per_patient():
    records = [PatientRecord("a", index_time=T0, labs=_labs()), PatientRecord("b"),
               PatientRecord("c", index_time=T0 + pd.Timedelta(hours=4), labs=_labs())]
    batch = cohort_lab_features(records, _vocab())
    for record, tokens in zip(records, batch):
        single = lab_features(record.labs, record.index_time, _vocab())
        np.testing.assert_array_equal(tokens.item_ids, single.item_ids)
        np.testing.assert_allclose(tokens.values, single.values)
    assert len(batch[1]) == 0


def test_id_of_lookup_rules():
    vocab = _vocab()
    assert vocab.size == 5
    assert vocab.id_of(50912, "anything") == 1
    assert vocab.id_of(None, " Troponin T ") == 3
    assert vocab.id_of(None, "creatinine") == 1  # no itemid: the unique display name of an itemid item
    assert vocab.id_of(12345, "Creatinine") == 0  # an unknown itemid is never guessed from its name
    assert vocab.id_of(None, "nothing") == 0


def _fit_records() -> list[PatientRecord]:
    rng_values = [1.0, 2.0, 3.0, 4.0, 5.0]
    skewed = [1.0, 1.0, 1.0, 2.0, 300.0]
    records = []
    for i in range(5):
        rows = [_row(1, 1, "Alpha", rng_values[i], unit="u", ref=(1.0, 4.0)),
                _row(2, 2, "Beta", skewed[i], unit="pg/mL", ref=(0.0, 50.0)),
                _row(3, 2, "Beta", np.nan, "NEG")]
        if i == 0:
            rows.append(_row(1, 3, "Rare", 7.0))
        rows.append(_row(1, None, "Gamma", 10.0 + i, unit=""))
        records.append(PatientRecord(f"p{i}", index_time=T0, labs=Labs(pd.DataFrame(rows))))
    records.append(PatientRecord("empty"))
    return records


def test_vocabulary_fit_and_round_trip():
    vocab = LabVocabulary.fit(_fit_records(), max_items=128, min_count=2)
    assert [s.key for s in vocab.items] == ["itemid:1", "itemid:2", "name:gamma"]  # Rare: 1 patient < min_count
    alpha, beta, gamma = vocab.items
    assert alpha.transform == "identity" and alpha.center == 3.0
    assert alpha.scale == pytest.approx(2.0 / 1.349)  # IQR 4 - 2
    assert (alpha.unit, alpha.ref_low, alpha.ref_high, alpha.count) == ("u", 1.0, 4.0, 5)
    assert beta.transform == "log1p" and beta.center == pytest.approx(np.log1p(1.0))
    assert beta.count == 5 and gamma.name == "Gamma" and gamma.unit == "" and gamma.ref_low is None
    np.testing.assert_allclose(vocab.normalise(np.array([2]), np.array([300.0])),
                               [min(8.0, (np.log1p(300.0) - beta.center) / beta.scale)])
    assert beta.denormalise(beta.normalise(np.array([2.0]))) == pytest.approx([2.0])

    again = LabVocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.to_dict() == vocab.to_dict()
    assert again.id_of(None, "gamma") == 3

    assert [s.key for s in LabVocabulary.fit(_fit_records(), max_items=1, min_count=2).items] == ["itemid:1"]
    assert len(LabVocabulary.fit([PatientRecord("x")])) == 0
