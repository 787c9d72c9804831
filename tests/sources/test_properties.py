"""Property tests (hypothesis) of the readers: arbitrary input never raises anything but a clear
DataError, and numbers come back as written. Examples are few and small so the suite stays fast."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medfuse_core.features.vitals import discretize_record
from medfuse_core.problems import DataError, Problem
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import MAX_NOTE_CHARS, read_bundle, read_note_text
from medfuse_core.sources.images import load_image
from medfuse_core.sources.labs import labs_from_table, parse_lab_value, parse_lab_values, parse_times, to_float
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from medfuse_core.sources.vitals import vitals_from_table

# database=None: no .hypothesis/ folder in the work tree; failures print their example to reproduce.
FAST = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
lab_words = st.sampled_from(["NEG", "POS", "HEMOLYZED", "TRACE", "see comment", "<", ">", "<=", "≥", "LESS THAN",
                             "GREATER THAN OR EQUAL TO", "mg/dL", "1+", "+1", "10-20", ",", ".", "-", "e5", " "])
lab_text = st.one_of(st.text(max_size=30), st.lists(lab_words | finite.map(repr), max_size=4).map(" ".join))


# ------------------------------------------------------------------------------------------ labs


@FAST
@given(lab_text)
def test_lab_value_parser_never_raises_and_never_invents_a_number(text: str) -> None:
    parsed = parse_lab_value(text)
    assert isinstance(parsed.value, float) and (math.isnan(parsed.value) or math.isfinite(parsed.value))
    assert parsed.censored in ("", "below", "above")
    if math.isnan(parsed.value):
        assert parsed.censored == ""


@FAST
@given(finite)
def test_lab_numbers_round_trip(x: float) -> None:
    assert parse_lab_value(repr(x)).value == x
    assert parse_lab_value(f"  {x!r} ").value == x
    assert (parse_lab_value(f"<{x!r}").value, parse_lab_value(f"<{x!r}").censored) == (x, "below")
    assert (parse_lab_value(f"GREATER THAN {x!r}").value, parse_lab_value(f"> {x!r}").censored) == (x, "above")
    assert to_float(pd.Series([repr(x)])).iloc[0] == x


@FAST
@given(st.integers(min_value=-10**15, max_value=10**15))
def test_lab_numbers_with_thousands_separators_round_trip(n: int) -> None:
    assert parse_lab_value(f"{n:,}").value == n
    assert to_float(pd.Series([f"{n:,}"])).iloc[0] == n


@FAST
@given(finite, st.sampled_from(["mg/dL", "mmol/L", "%", "K/uL", "x10^9/L"]))
def test_a_number_with_a_unit_is_never_read_as_another_number(x: float, unit: str) -> None:
    value = parse_lab_value(f"{x!r} {unit}").value
    assert math.isnan(value) or value == x


@FAST
@given(st.lists(lab_text, max_size=12))
def test_vectorised_lab_parser_agrees_with_the_scalar_one(texts: list[str]) -> None:
    table = parse_lab_values(pd.Series(texts, dtype=object))
    for text, (value, censored) in zip(texts, table.itertuples(index=False)):
        one = parse_lab_value(text)
        assert (math.isnan(value) and math.isnan(one.value)) or value == one.value
        assert censored == one.censored


@FAST
@given(st.lists(st.text(max_size=25), max_size=10))
def test_time_parser_never_raises(texts: list[str]) -> None:
    times, problems = parse_times(pd.Series(texts, dtype=object), "labs.csv")
    assert len(times) == len(texts) and all(isinstance(p, Problem) for p in problems)
    assert times.isna().all() or (times.dropna() >= pd.Timestamp.min).all()


cell = st.one_of(st.text(max_size=12), finite.map(repr), st.sampled_from(["", "2131-05-07 09:00", "NEG", "<0.5"]))


@FAST
@given(st.lists(st.tuples(cell, cell, cell, cell, cell), max_size=8),
       st.permutations(["time", "itemid", "item", "value", "unit"]))
def test_labs_table_of_arbitrary_cells_never_raises(rows, columns) -> None:
    raw = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns, dtype=object)
    labs, problems = labs_from_table(raw.astype(str), "labs.csv")
    assert len(labs.table) <= len(rows) and all(isinstance(p, Problem) for p in problems)


# ---------------------------------------------------------------------------------------- vitals

T0 = pd.Timestamp("2131-05-07 08:00:00")
vital_time = st.one_of(
    st.floats(min_value=-100, max_value=200, allow_nan=False).map(lambda h: str(T0 + pd.Timedelta(hours=h))),
    st.sampled_from(["2131-05-07T09:00:00+02:00", "2131-05-07 10:00Z", "", "not a time", "2131-13-40 99:00"]),
)
vital_value = st.one_of(finite.map(repr), st.integers(-1000, 1000).map(str),
                        st.sampled_from(["", "120/80", "4 Spontaneously", "Obeys Commands", "abc", "nan", "inf"]))
vital_channel = st.one_of(st.sampled_from(CHANNEL_NAMES + ("HR", "SpO2", "gcs total", "Pain score", "")),
                          st.text(max_size=10))


@FAST
@given(st.lists(st.tuples(vital_time, vital_channel, vital_value), max_size=25), st.booleans())
def test_vitals_of_arbitrary_values_and_times_discretize_to_48_by_76(rows, with_index_time: bool) -> None:
    raw = pd.DataFrame(rows, columns=["time", "channel", "value"], dtype=object).astype(str) if rows else pd.DataFrame()
    vitals, problems = vitals_from_table(raw, "vitals.csv")
    assert all(isinstance(p, Problem) for p in problems)
    record = PatientRecord("V", index_time=T0 if with_index_time else None, vitals=vitals)
    out = discretize_record(record)
    assert out.values.shape == (48, 76) and out.observed.shape == (48, 17)
    assert np.isfinite(out.values).all()


# ----------------------------------------------------------------------------------------- notes


@FAST
@given(st.binary(max_size=300))
def test_note_bytes_never_raise(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "note.txt"
        path.write_bytes(data)
        problems: list[Problem] = []
        text = read_note_text(path, problems)
    assert isinstance(text, str) and len(text) <= MAX_NOTE_CHARS
    if data.startswith(b"\xef\xbb\xbf") or not data:
        return
    try:
        assert text == data.decode("utf-8") and problems == []  # UTF-8 comes back unchanged, silently
    except UnicodeDecodeError:
        assert problems and problems[0].field == ""


@settings(FAST, max_examples=30)
@given(st.binary(max_size=200), st.sampled_from(["index", "no index"]))
def test_a_bundle_with_an_arbitrary_note_always_reads(data: bytes, index: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "patient.json").write_text('{"patient_id": "N"}')
        (folder / "notes").mkdir()
        (folder / "notes" / "n.txt").write_bytes(data)
        if index == "index":
            (folder / "notes" / "index.csv").write_text("file,time,category\nn.txt,2131-05-07 10:00,Nursing\n")
        record = read_bundle(folder)
    assert record.patient_id == "N" and len(record.notes) <= 1


# ---------------------------------------------------------------------------------------- images


@settings(FAST, max_examples=60)
@given(st.one_of(st.binary(max_size=400), st.binary(max_size=300).map(lambda b: bytes(128) + b"DICM" + b),
                 st.binary(max_size=300).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)))
def test_arbitrary_image_bytes_give_a_clear_error_or_an_image(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.dcm"
        path.write_bytes(data)
        try:
            loaded = load_image(path, radiograph=True)
        except DataError as exc:
            assert exc.problem.file == str(path) and exc.problem.message.startswith(("expected", "refused"))
            return
    # random bytes that happen to decode: still a display image
    assert loaded.pixels.ndim == 2 and 0.0 <= loaded.pixels.min() <= loaded.pixels.max() <= 1.0


@pytest.mark.parametrize("text", ["<0.01", ">1000", "NEG", "1,234", "GREATER THAN 5", "  7.4 "])
def test_examples_from_the_corpus(text: str) -> None:
    """The property tests' named cases, pinned."""
    expected = {"<0.01": (0.01, "below"), ">1000": (1000.0, "above"), "1,234": (1234.0, ""),
                "GREATER THAN 5": (5.0, "above"), "  7.4 ": (7.4, "")}
    parsed = parse_lab_value(text)
    if text == "NEG":
        assert math.isnan(parsed.value) and parsed.censored == ""
    else:
        assert (parsed.value, parsed.censored) == expected[text]
