"""The lab catalogue uses real MIMIC-III item ids and names."""

from __future__ import annotations

import pandas as pd

from medfuse_core.sources.synth.lab_items import LAB_ITEMS


def test_itemids_and_names_match_d_labitems(shared_data):
    d = pd.read_csv(shared_data / "mimic-iii-demo" / "D_LABITEMS.csv.gz")
    labels = dict(zip(d["itemid"], d["label"]))
    for item in LAB_ITEMS:
        assert labels.get(item.itemid) == item.name, (item.itemid, item.name)


def test_units_and_ranges_are_sane():
    units = {item.key: item.unit for item in LAB_ITEMS}
    assert units["creatinine"] == "mg/dL" and units["sodium"] == "mEq/L" and units["wbc"] == "K/uL"
    assert units["ntprobnp"] == "pg/mL" and units["lactate"] == "mmol/L" and units["hba1c"] == "%"
    for item in LAB_ITEMS:
        assert item.ref_low < item.ref_high
        assert item.ref_low - 3 * item.typical[1] < item.typical[0] < item.ref_high + 3 * item.typical[1]
