"""Catalogue of the lab items the cohort draws: real MIMIC-III item ids, names, units and ranges.

Item ids and names are those of MIMIC-III D_LABITEMS (checked by a test against the demo table);
units are the ones LABEVENTS uses; reference ranges are typical adult hospital ranges. `typical`
is the mean and spread of a stay without the disease that moves the item, chosen close to the
medians of the MIMIC-III demo lab values (ICU patients are often a little anaemic, for instance).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabItem:
    """One lab test as a clinician reads it."""

    key: str
    itemid: int
    name: str  # D_LABITEMS label
    unit: str
    ref_low: float
    ref_high: float
    typical: tuple[float, float]  # mean, sd without disease
    decimals: int  # as reported
    panel: str  # "chem", "cbc", "gas", "cardiac", "once", "extra"

    def fmt(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"

    def flag(self, value: float) -> str:
        return "abnormal" if value < self.ref_low or value > self.ref_high else ""


LAB_ITEMS: tuple[LabItem, ...] = (
    LabItem("sodium", 50983, "Sodium", "mEq/L", 133, 145, (139.0, 2.2), 0, "chem"),
    LabItem("potassium", 50971, "Potassium", "mEq/L", 3.3, 5.1, (4.1, 0.3), 1, "chem"),
    LabItem("chloride", 50902, "Chloride", "mEq/L", 96, 108, (103.0, 3.0), 0, "chem"),
    LabItem("bicarbonate", 50882, "Bicarbonate", "mEq/L", 22, 32, (25.0, 2.5), 0, "chem"),
    LabItem("bun", 51006, "Urea Nitrogen", "mg/dL", 6, 20, (14.0, 3.0), 0, "chem"),
    LabItem("creatinine", 50912, "Creatinine", "mg/dL", 0.5, 1.1, (0.85, 0.12), 1, "chem"),
    LabItem("glucose", 50931, "Glucose", "mg/dL", 70, 100, (108.0, 14.0), 0, "chem"),
    LabItem("anion_gap", 50868, "Anion Gap", "mEq/L", 8, 20, (13.0, 2.0), 0, "chem"),
    LabItem("magnesium", 50960, "Magnesium", "mg/dL", 1.6, 2.6, (2.0, 0.2), 1, "extra"),
    LabItem("calcium", 50893, "Calcium, Total", "mg/dL", 8.4, 10.3, (8.7, 0.4), 1, "extra"),
    LabItem("phosphate", 50970, "Phosphate", "mg/dL", 2.7, 4.5, (3.4, 0.5), 1, "extra"),
    LabItem("wbc", 51301, "White Blood Cells", "K/uL", 4.0, 11.0, (7.8, 1.6), 1, "cbc"),
    LabItem("hemoglobin", 51222, "Hemoglobin", "g/dL", 12.0, 16.0, (11.2, 1.4), 1, "cbc"),
    LabItem("hematocrit", 51221, "Hematocrit", "%", 36.0, 48.0, (33.5, 4.0), 1, "cbc"),
    LabItem("platelets", 51265, "Platelet Count", "K/uL", 150, 440, (230.0, 60.0), 0, "cbc"),
    LabItem("lactate", 50813, "Lactate", "mmol/L", 0.5, 2.0, (1.2, 0.3), 1, "gas"),
    LabItem("ph", 50820, "pH", "units", 7.35, 7.45, (7.40, 0.03), 2, "gas"),
    LabItem("ntprobnp", 50963, "NTproBNP", "pg/mL", 0, 450, (180.0, 90.0), 0, "cardiac"),
    LabItem("hba1c", 50852, "% Hemoglobin A1c", "%", 4.0, 6.0, (5.4, 0.3), 1, "once"),
    LabItem("albumin", 50862, "Albumin", "g/dL", 3.5, 5.2, (3.6, 0.4), 1, "extra"),
)

LAB_BY_KEY: dict[str, LabItem] = {item.key: item for item in LAB_ITEMS}

# Items whose reporting limits produce censored text, as in MIMIC ("<0.3", ">70000").
REPORT_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "ntprobnp": (5.0, 70000.0),
    "creatinine": (0.3, None),
    "lactate": (0.3, None),
    "platelets": (5.0, None),
}
