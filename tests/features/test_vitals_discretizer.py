"""Vitals -> the 76-feature MedFuse series, checked against hand-computed matrices and against a
line-by-line transcription of mimic3-benchmarks' `Discretizer.transform` (mimic3models/
preprocessing.py, YerevaNN/mimic3-benchmarks, MIT licence) on random patients."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medfuse_core.features.vitals import (
    DiscretizedVitals,
    DiscretizerConfig,
    Normalizer,
    continuous_columns,
    discretize,
    discretize_record,
    feature_names,
)
from medfuse_core.record import PatientRecord, Vitals
from medfuse_core.sources.vital_channels import CHANNEL_NAMES, channel_spec

T0 = pd.Timestamp("2131-05-07 14:00")
NAMES = feature_names()
HR = NAMES.index("Heart Rate")
EYE = NAMES.index("Glascow coma scale eye opening->To Pain")  # first column of the eye block
MOTOR = NAMES.index("Glascow coma scale motor response->1 No Response")
CRR = NAMES.index("Capillary refill rate->0.0")


def mask(channel: str) -> int:
    return NAMES.index(f"mask->{channel}")


def vitals(rows: list[tuple[float, str, float, str]]) -> Vitals:
    """Rows (hours after T0, channel, value, value_text) -> Vitals."""
    return Vitals(
        pd.DataFrame(
            {
                "time": [T0 + pd.Timedelta(hours=h) for h, *_ in rows],
                "channel": [r[1] for r in rows],
                "value": [r[2] for r in rows],
                "value_text": [r[3] for r in rows],
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def test_seventy_six_names_in_reference_order() -> None:
    assert len(NAMES) == 76
    assert NAMES[:4] == [
        "Capillary refill rate->0.0",
        "Capillary refill rate->1.0",
        "Diastolic blood pressure",
        "Fraction inspired oxygen",
    ]
    assert NAMES[4:12] == [
        f"Glascow coma scale eye opening->{v}"
        for v in [
            "To Pain", "3 To speech", "1 No Response", "4 Spontaneously",
            "None", "To Speech", "Spontaneously", "2 To pain",
        ]
    ]
    assert NAMES[12] == "Glascow coma scale motor response->1 No Response"
    assert NAMES[24] == "Glascow coma scale total->11"
    assert NAMES[37] == "Glascow coma scale verbal response->1 No Response"
    assert NAMES[49:59] == [
        "Glucose", "Heart Rate", "Height", "Mean blood pressure", "Oxygen saturation",
        "Respiratory rate", "Systolic blood pressure", "Temperature", "Weight", "pH",
    ]
    assert NAMES[59:] == [f"mask->{c}" for c in CHANNEL_NAMES]
    assert NAMES[59] == "mask->Capillary refill rate" and NAMES[-1] == "mask->pH"
    assert len(continuous_columns(NAMES)) == 12


# ---------------------------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------------------------


def test_bins_last_wins_carry_forward_and_normal_before_first() -> None:
    # HR at 1.5 h and 1.9 h (bin 1: the later, 90, wins) and at 4.2 h (bin 4).
    rows = [(1.9, "Heart Rate", 90.0, "90"), (1.5, "Heart Rate", 80.0, "80"), (4.2, "Heart Rate", 70.0, "70")]
    d = discretize(vitals(rows), T0)
    assert d.values.dtype == np.float32 and d.values.shape == (48, 76)
    assert d.observed.shape == (48, 17) and d.observed.dtype == bool
    np.testing.assert_array_equal(d.hours[:3], [0.0, 1.0, 2.0])
    assert d.hours[-1] == 47.0
    expected_hr = [86, 90, 90, 90, 70, 70] + [70] * 42  # normal 86 before the first observation
    expected_mask = [0, 1, 0, 0, 1, 0] + [0] * 42
    np.testing.assert_array_equal(d.values[:, HR], np.array(expected_hr, dtype=np.float32))
    np.testing.assert_array_equal(d.values[:, mask("Heart Rate")], expected_mask)
    # Every other channel: its normal value, never observed.
    assert d.values[0, NAMES.index("Temperature")] == np.float32(36.6)
    assert d.values[0, NAMES.index("Fraction inspired oxygen")] == np.float32(0.21)
    assert d.observed.sum() == 2


def test_same_time_same_channel_table_order_wins() -> None:
    d = discretize(vitals([(2.5, "Heart Rate", 100.0, "100"), (2.5, "Heart Rate", 101.0, "101")]), T0)
    assert d.values[2, HR] == 101.0


def test_categorical_one_hot_normal_fill_and_variant_text() -> None:
    # Eye opening "2 To pain" at 0.5 h; bare score "4" at 2.5 h; "spontaneously" (folded) at 3.5 h.
    rows = [
        (0.5, "Glascow coma scale eye opening", 2.0, "2 To pain"),
        (2.5, "Glascow coma scale eye opening", 4.0, "4"),
        (3.5, "Glascow coma scale eye opening", 4.0, "spontaneously"),
        (1.5, "Glascow coma scale motor response", 6.0, "6"),
        (1.2, "Capillary refill rate", 1.0, "Abnormal >3 secs"),
    ]
    d = discretize(vitals(rows), T0)
    eye = d.values[:5, EYE : EYE + 8]
    # block order: To Pain, 3 To speech, 1 No Response, 4 Spontaneously, None, To Speech, Spontaneously, 2 To pain
    np.testing.assert_array_equal(
        eye,
        [
            [0, 0, 0, 0, 0, 0, 0, 1],  # bin 0: "2 To pain" as written
            [0, 0, 0, 0, 0, 0, 0, 1],  # bin 1: carried forward
            [0, 0, 0, 1, 0, 0, 0, 0],  # bin 2: "4" -> first value scoring 4: "4 Spontaneously"
            [0, 0, 0, 0, 0, 0, 1, 0],  # bin 3: "spontaneously" -> "Spontaneously"
            [0, 0, 0, 0, 0, 0, 1, 0],
        ],
    )
    motor = d.values[:3, MOTOR : MOTOR + 12]
    normal = np.zeros(12)
    normal[9] = 1  # "6 Obeys Commands", the normal value
    obeys = np.zeros(12)
    obeys[7] = 1  # "6" -> first value scoring 6 in config order: "Obeys Commands"
    np.testing.assert_array_equal(motor, [normal, obeys, obeys])
    np.testing.assert_array_equal(d.values[:3, CRR : CRR + 2], [[1, 0], [0, 1], [0, 1]])  # normal "0.0" first
    np.testing.assert_array_equal(d.values[:5, mask("Glascow coma scale eye opening")], [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(d.values[:3, mask("Capillary refill rate")], [0, 1, 0])


def test_unknown_category_skipped_like_an_empty_cell() -> None:
    d = discretize(vitals([(0.5, "Glascow coma scale total", np.nan, "bogus")]), T0)
    assert not d.observed.any()
    assert d.values[0, NAMES.index("Glascow coma scale total->15")] == 1.0


def test_bin_edges_follow_the_reference_eps_rule() -> None:
    # int(t - 1e-6): t = 0 -> bin 0, t = 1.0 -> bin 0, t = 1.0 + 1 s -> bin 1, t = 48.0 -> bin 47.
    rows = [
        (0.0, "Heart Rate", 60.0, "60"),
        (1.0, "Heart Rate", 61.0, "61"),
        (1.0 + 1 / 3600, "Heart Rate", 62.0, "62"),
        (48.0, "Respiratory rate", 30.0, "30"),
    ]
    d = discretize(vitals(rows), T0)
    np.testing.assert_array_equal(d.values[:3, HR], [61, 62, 62])
    np.testing.assert_array_equal(d.values[:3, mask("Heart Rate")], [1, 1, 0])
    rr = NAMES.index("Respiratory rate")
    assert d.values[46, rr] == 19 and d.values[47, rr] == 30
    assert d.observed[47, CHANNEL_NAMES.index("Respiratory rate")]


def test_before_index_and_beyond_horizon_are_ignored() -> None:
    # The benchmark's task creation keeps -eps < t < 48 + eps; the discretizer skips t > end + eps.
    rows = [
        (-0.5, "Heart Rate", 150.0, "150"),
        (-3.0, "Heart Rate", 151.0, "151"),
        (48.5, "Heart Rate", 152.0, "152"),
        (60.0, "Heart Rate", 153.0, "153"),
    ]
    d = discretize(vitals(rows), T0)
    assert not d.observed.any()
    assert (d.values[:, HR] == 86).all()


def test_shorter_horizon_and_timestep() -> None:
    cfg = DiscretizerConfig(timestep=0.5, hours=3.0)
    assert cfg.n_bins == 6
    rows = [(0.75, "Heart Rate", 70.0, "70"), (3.0, "Heart Rate", 71.0, "71"), (3.2, "Heart Rate", 72.0, "72")]
    d = discretize(vitals(rows), T0, cfg)
    np.testing.assert_array_equal(d.hours, [0, 0.5, 1, 1.5, 2, 2.5])
    np.testing.assert_array_equal(d.values[:, HR], [86, 70, 70, 70, 70, 71])
    assert DiscretizerConfig(hours=47.5).n_bins == 48  # int(48.5 - eps)


def test_other_impute_strategies() -> None:
    rows = [
        (1.5, "Heart Rate", 80.0, "80"),
        (3.5, "Heart Rate", 70.0, "70"),
        (1.5, "Glascow coma scale eye opening", 1.0, "1 No Response"),
    ]
    v = vitals(rows)
    hr = {
        s: discretize(v, T0, DiscretizerConfig(hours=5.0, impute=s)).values[:, HR]
        for s in ("zero", "normal_value", "next")
    }
    np.testing.assert_array_equal(hr["zero"], [0, 80, 0, 70, 0])
    np.testing.assert_array_equal(hr["normal_value"], [86, 80, 86, 70, 86])
    np.testing.assert_array_equal(hr["next"], [80, 80, 70, 70, 86])
    eye_zero = discretize(v, T0, DiscretizerConfig(hours=5.0, impute="zero")).values[:, EYE : EYE + 8]
    np.testing.assert_array_equal(eye_zero.sum(axis=1), [0, 1, 0, 0, 0])  # nothing written when unobserved
    with pytest.raises(ValueError):
        DiscretizerConfig(impute="mean")


def test_empty_vitals_and_unknown_channels() -> None:
    for v in (Vitals(), vitals([(1.0, "Pain score", 3.0, "3")])):
        d = discretize(v, T0)
        assert d.values.shape == (48, 76) and not d.observed.any()
        assert (d.values[:, 59:] == 0).all()
        assert (d.values[:, HR] == 86).all()
        assert (d.values[:, NAMES.index("Glascow coma scale total->15")] == 1).all()
    d = discretize(Vitals(), None)
    assert d.values.shape == (48, 76)


def test_record_without_index_time_counts_from_first_vitals() -> None:
    # "Pain score" is not one of the 17 channels, so it does not set the origin.
    v = vitals([(1.0, "Pain score", 1.0, "1"), (5.0, "Heart Rate", 80.0, "80"), (7.5, "Heart Rate", 70.0, "70")])
    d = discretize_record(PatientRecord(patient_id="p", vitals=v))
    np.testing.assert_array_equal(d.values[:4, HR], [80, 80, 70, 70])  # from 5.0 h: t = 0 and 2.5
    d = discretize_record(PatientRecord(patient_id="p", vitals=v, index_time=T0))
    assert d.values[4, HR] == 80 and d.observed[4, CHANNEL_NAMES.index("Heart Rate")]  # int(5 - eps) = 4
    assert isinstance(d, DiscretizedVitals) and d.names == NAMES


# ---------------------------------------------------------------------------------------------
# Against a literal transcription of the reference on random patients
# ---------------------------------------------------------------------------------------------


class ReferenceDiscretizer:
    """Discretizer.transform of mimic3-benchmarks, transcribed loop for loop (timestep, masks on,
    start_time="zero"); rows are (hours, {channel: text}) sorted by time."""

    def __init__(self, timestep: float, impute: str) -> None:
        spec = channel_spec()
        self.ids = list(CHANNEL_NAMES)
        self.cat = {c: spec[c].categorical for c in self.ids}
        self.possible = {c: list(spec[c].possible_values) for c in self.ids}
        self.normal = {c: spec[c].normal_text for c in self.ids}
        self.timestep, self.impute = timestep, impute

    def transform(self, rows: list[tuple[float, dict[str, str]]], end: float) -> np.ndarray:
        eps = 1e-6
        n_ch = len(self.ids)
        max_hours = end - 0
        n_bins = int(max_hours / self.timestep + 1.0 - eps)
        begin, cur = [], 0
        for c in self.ids:
            begin.append(cur)
            cur += len(self.possible[c]) if self.cat[c] else 1
        data = np.zeros((n_bins, cur), dtype=float)
        mask_ = np.zeros((n_bins, n_ch), dtype=int)
        original = [["" for _ in range(n_ch)] for _ in range(n_bins)]

        def write(bin_id: int, channel: str, value: str) -> None:
            cid = self.ids.index(channel)
            if self.cat[channel]:
                one_hot = np.zeros(len(self.possible[channel]))
                one_hot[self.possible[channel].index(value)] = 1
                for pos in range(len(one_hot)):
                    data[bin_id, begin[cid] + pos] = one_hot[pos]
            else:
                data[bin_id, begin[cid]] = float(value)

        for t, cells in rows:
            if t > max_hours + eps:
                continue
            bin_id = int(t / self.timestep - eps)
            assert 0 <= bin_id < n_bins
            for channel, value in cells.items():
                if value == "":
                    continue
                cid = self.ids.index(channel)
                mask_[bin_id][cid] = 1
                write(bin_id, channel, value)
                original[bin_id][cid] = value

        if self.impute in ("normal_value", "previous"):
            prev = [[] for _ in range(n_ch)]
            for bin_id in range(n_bins):
                for cid, channel in enumerate(self.ids):
                    if mask_[bin_id][cid] == 1:
                        prev[cid].append(original[bin_id][cid])
                        continue
                    if self.impute == "normal_value" or not prev[cid]:
                        imputed = self.normal[channel]
                    else:
                        imputed = prev[cid][-1]
                    write(bin_id, channel, imputed)
        if self.impute == "next":
            prev = [[] for _ in range(n_ch)]
            for bin_id in range(n_bins - 1, -1, -1):
                for cid, channel in enumerate(self.ids):
                    if mask_[bin_id][cid] == 1:
                        prev[cid].append(original[bin_id][cid])
                        continue
                    imputed = prev[cid][-1] if prev[cid] else self.normal[channel]
                    write(bin_id, channel, imputed)
        return np.hstack([data, mask_.astype(np.float32)])


def random_patient(rng: np.random.Generator) -> tuple[Vitals, list[tuple[float, dict[str, str]]]]:
    """A random long table, and the same events as the reference's input after the benchmark's
    task filter (-eps < t < 48 + eps), one row per event in time order."""
    spec = channel_spec()
    n = int(rng.integers(0, 120))
    seconds = rng.integers(-4 * 3600, 52 * 3600, size=n)
    on_the_hour = rng.random(n) < 0.2  # exact bin edges, often
    seconds = np.where(on_the_hour, (seconds // 3600) * 3600, seconds)
    channels = rng.choice(list(CHANNEL_NAMES), size=n)
    values, texts = [], []
    for c in channels:
        if spec[c].categorical:
            text = str(rng.choice(spec[c].possible_values))
            values.append(spec[c].value_map[text])
            texts.append(text)
        else:
            x = float(np.round(rng.normal(float(spec[c].normal_text), 10.0), 2))
            values.append(x)
            texts.append(repr(x))
    table = pd.DataFrame(
        {"time": T0 + pd.to_timedelta(seconds, unit="s"), "channel": channels, "value": values, "value_text": texts}
    )
    shuffled = table.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))  # input order must not matter
    table = shuffled.sort_values("time", kind="stable")  # ties keep their (shuffled) table order
    events = []
    for time, channel, text in zip(table["time"], table["channel"], table["value_text"]):
        t = (time - T0) / pd.Timedelta(hours=1)
        if -1e-6 < t < 48 + 1e-6:
            events.append((t, {channel: text}))
    return Vitals(shuffled), events


@pytest.mark.parametrize("impute", ["previous", "zero", "normal_value", "next"])
def test_matches_reference_transcription_on_random_patients(impute: str) -> None:
    rng = np.random.default_rng(7)
    reference = ReferenceDiscretizer(1.0, impute)
    for _ in range(50):
        v, events = random_patient(rng)
        ours = discretize(v, T0, DiscretizerConfig(impute=impute)).values
        expected = reference.transform(events, end=48.0).astype(np.float32)
        np.testing.assert_array_equal(ours, expected)


def test_matches_reference_with_other_timestep() -> None:
    rng = np.random.default_rng(8)
    reference = ReferenceDiscretizer(0.8, "previous")  # the reference's own default timestep
    for _ in range(20):
        v, events = random_patient(rng)
        ours = discretize(v, T0, DiscretizerConfig(timestep=0.8)).values
        np.testing.assert_array_equal(ours, reference.transform(events, end=48.0).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Normalizer
# ---------------------------------------------------------------------------------------------


def test_normalizer_fit_transform_save_load(tmp_path) -> None:
    rng = np.random.default_rng(3)
    series = [discretize(random_patient(rng)[0], T0) for _ in range(6)]
    norm = Normalizer.fit(series)
    stacked = np.vstack([s.values for s in series]).astype(np.float64)
    cont = continuous_columns(NAMES)
    assert norm.columns == tuple(cont) and norm.names[0] == "Diastolic blood pressure"
    np.testing.assert_allclose(norm.means, stacked[:, cont].mean(axis=0), rtol=1e-12)
    stds = np.maximum(stacked[:, cont].std(axis=0, ddof=1), 1e-7)
    np.testing.assert_allclose(norm.stds, stds, rtol=1e-6)

    out = norm.transform(series[0].values)
    assert out.dtype == np.float32 and out.shape == (48, 76)
    categorical_or_mask = [i for i in range(76) if i not in cont]
    np.testing.assert_array_equal(out[:, categorical_or_mask], series[0].values[:, categorical_or_mask])
    expected = (series[0].values[:, cont].astype(np.float64) - np.array(norm.means)) / np.array(norm.stds)
    np.testing.assert_array_equal(out[:, cont], expected.astype(np.float32))

    path = tmp_path / "normalizer.json"
    norm.save(path)
    assert json.loads(path.read_text())["format"] == "medfuse-lens/vitals-normalizer"
    loaded = Normalizer.load(path)
    assert loaded == norm
    np.testing.assert_array_equal(loaded.transform(series[1].values), norm.transform(series[1].values))


def test_normalizer_constant_column_gets_floor_std() -> None:
    x = np.zeros((10, 76), dtype=np.float32)
    norm = Normalizer.fit([x])
    assert set(norm.stds) == {1e-7}
    with pytest.raises(ValueError):
        Normalizer.fit([x[:1]])
    with pytest.raises(ValueError):
        Normalizer.from_dict({"format": "pickle"})
