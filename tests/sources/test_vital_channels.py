"""The 17 mimic3-benchmarks channels, read from the vendored resource files."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import pytest

from medfuse_core.sources.vital_channels import CHANNEL_NAMES, channel_spec

VENDORED = ("LICENSE", "channel_info.json", "discretizer_config.json", "variable_ranges.csv")
GCS = (
    "Glascow coma scale eye opening",
    "Glascow coma scale motor response",
    "Glascow coma scale total",
    "Glascow coma scale verbal response",
)


def vendored(name: str) -> bytes:
    return resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks", name).read_bytes()


def config() -> dict:
    return json.loads(vendored("discretizer_config.json"))


@pytest.mark.parametrize("name", VENDORED)
def test_vendored_resources_are_byte_identical_to_shared(name: str, shared_data: Path) -> None:
    upstream = shared_data / "mimic3-benchmarks"
    assert vendored(name) == (upstream / name).read_bytes()


def test_seventeen_channels_in_discretizer_order() -> None:
    assert len(channel_spec()) == 17
    assert CHANNEL_NAMES == tuple(channel_spec()) == tuple(config()["id_to_channel"])
    assert all(channel_spec()[n].name == n for n in CHANNEL_NAMES)


def test_categorical_channels_are_gcs_and_capillary_refill() -> None:
    categorical = {n for n, c in channel_spec().items() if c.categorical}
    assert categorical == set(GCS) | {"Capillary refill rate"}
    assert all(not c.value_map for c in channel_spec().values() if not c.categorical)


def test_gcs_maps() -> None:
    spec = channel_spec()
    eye = spec["Glascow coma scale eye opening"].value_map
    assert eye["4 Spontaneously"] == eye["Spontaneously"] == 4.0
    assert eye["2 To pain"] == eye["To Pain"] == 2.0
    assert eye["None"] == 0.0
    motor = spec["Glascow coma scale motor response"].value_map
    assert motor["6 Obeys Commands"] == 6.0 and motor["Abnormal extension"] == 2.0 and motor["No response"] == 1.0
    verbal = spec["Glascow coma scale verbal response"].value_map
    assert verbal["1.0 ET/Trach"] == verbal["No Response-ETT"] == 1.0 and verbal["5 Oriented"] == 5.0
    total = spec["Glascow coma scale total"].value_map
    assert total == {str(i): float(i) for i in range(3, 16)}
    assert spec["Capillary refill rate"].value_map == {"0.0": 0.0, "1.0": 1.0}


def test_every_categorical_possible_value_has_a_score() -> None:
    for name in GCS + ("Capillary refill rate",):
        c = channel_spec()[name]
        assert c.possible_values == tuple(config()["possible_values"][name])
        assert set(c.possible_values) == set(c.value_map)


def test_normal_values_as_in_discretizer_config() -> None:
    normal = config()["normal_values"]
    assert {n: c.normal_text for n, c in channel_spec().items()} == normal
    spec = channel_spec()
    assert spec["Heart Rate"].normal_value == 86.0
    assert spec["Temperature"].normal_value == 36.6
    assert spec["Fraction inspired oxygen"].normal_value == 0.21
    assert spec["Glascow coma scale eye opening"].normal_value == 4.0  # "4 Spontaneously"
    assert spec["Glascow coma scale total"].normal_value == 15.0
    assert spec["Capillary refill rate"].normal_value == 0.0


def test_ranges_from_variable_ranges_csv() -> None:
    spec = channel_spec()
    t = spec["Temperature"]
    assert (t.outlier_low, t.valid_low, t.valid_high, t.outlier_high) == (14.2, 26.0, 45.0, 47.0)
    hr = spec["Heart Rate"]  # "Heart rate" in variable_ranges.csv
    assert (hr.outlier_low, hr.valid_low, hr.valid_high, hr.outlier_high) == (0.0, 0.0, 350.0, 390.0)
    for c in spec.values():
        limits = (c.outlier_low, c.valid_low, c.valid_high, c.outlier_high)
        assert all(math.isfinite(x) for x in limits), c.name
        assert c.outlier_low <= c.valid_low <= c.valid_high <= c.outlier_high, c.name
