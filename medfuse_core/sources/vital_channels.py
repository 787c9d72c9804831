"""The 17 clinical time-series channels of mimic3-benchmarks (MedFuse's vitals input).

Read from the benchmark's own resource files, vendored unchanged (MIT licence) in
`medfuse_core/resources/mimic3_benchmarks/` so the package works without ../shared; a test checks
they are byte-identical to `../shared/data/mimic3-benchmarks/`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class VitalChannel:
    """One channel: its categorical map (if any), normal value and plausible ranges."""

    name: str
    categorical: bool
    possible_values: tuple[str, ...]  # categorical strings, in the discretizer's one-hot order
    value_map: dict[str, float]  # categorical string -> score (channel_info.json); empty if numeric
    normal_text: str  # imputation value as in discretizer_config.json ("4 Spontaneously", "86")
    outlier_low: float  # below: physiologically impossible, dropped
    valid_low: float  # below (but above outlier_low): clipped to valid_low
    valid_high: float
    outlier_high: float

    @property
    def normal_value(self) -> float:
        """The normal value as a number (the score of the normal category for categoricals)."""
        if self.categorical:
            return self.value_map[self.normal_text]
        return float(self.normal_text)


def _resource_text(name: str) -> str:
    return resources.files("medfuse_core.resources").joinpath("mimic3_benchmarks", name).read_text()


def _ranges_by_name() -> dict[str, tuple[float, float, float, float]]:
    rows = csv.DictReader(_resource_text("variable_ranges.csv").splitlines())
    out = {}
    for row in rows:
        cells = [row["OUTLIER LOW"], row["VALID LOW"], row["VALID HIGH"], row["OUTLIER HIGH"]]
        if all(c.strip() for c in cells):
            # variable_ranges.csv writes "Heart rate" where the discretizer writes "Heart Rate"
            out[row["LEVEL2"].strip().lower()] = tuple(float(c) for c in cells)
    return out


@cache
def channel_spec() -> dict[str, VitalChannel]:
    """All 17 channels by name, in the discretizer's channel order."""
    config = json.loads(_resource_text("discretizer_config.json"))
    info = json.loads(_resource_text("channel_info.json"))
    ranges = _ranges_by_name()
    spec: dict[str, VitalChannel] = {}
    for name in config["id_to_channel"]:
        categorical = bool(config["is_categorical_channel"][name])
        value_map = {k: float(v) for k, v in info.get(name, {}).get("values", {}).items()}
        low_o, low_v, high_v, high_o = ranges.get(name.lower(), (-math.inf, -math.inf, math.inf, math.inf))
        spec[name] = VitalChannel(
            name=name,
            categorical=categorical,
            possible_values=tuple(config["possible_values"][name]),
            value_map=value_map,
            normal_text=config["normal_values"][name],
            outlier_low=low_o,
            valid_low=low_v,
            valid_high=high_v,
            outlier_high=high_o,
        )
    return spec


CHANNEL_NAMES: tuple[str, ...] = tuple(channel_spec())
