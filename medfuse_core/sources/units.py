"""Units: the text a lab or monitor prints -> UCUM -> pint, and conversion to the model's unit.

Parsing is UCUM (the unit code of LOINC and FHIR) through `ucumvert`, which builds pint units from
UCUM's grammar. Clinical systems also print units that are not UCUM ("K/uL", "x10^9/L", "mEq/L",
"K/mcL", "°F", "bpm"); `to_ucum` rewrites the common ones first (the table `_SPELLINGS`). A unit
that neither understands is *unknown*; one of another kind than the model's (mg/dL for a count) is
*incompatible*; in both cases the value is not used, never guessed.

Conversions (`Conversion`, per test and unit, cached):
- same kind: pint's factor (g/L -> g/dL, 10*9/L -> 10*3/uL, L/L -> %, pmol/L -> nmol/L);
- molar <-> mass where the test has a molar mass (glucose 180.156 g/mol: mmol/L x 18.0156 = mg/dL);
- equivalents: mEq = mmol x valence (Ca, Mg: 2; Na, K, Cl, HCO3: 1); no valence, no conversion;
- affine ones pint cannot know from the unit alone: HbA1c mmol/mol (IFCC) -> % (NGSP) by the
  IFCC-NGSP master equation NGSP = 0.09148 x IFCC + 2.152 (Hoelzel et al., Clin Chem 2004);
- temperature (°F -> °C) through pint's offset units, for the vitals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["Conversion", "UnitProblem", "to_ucum", "conversion", "convert_array"]

# Clinical spellings -> UCUM; keys are lower-cased with spaces removed and µ/μ/mc written as u.
_SPELLINGS: dict[str, str] = {}
for _ucum, _spellings in {
    "10*3/uL": ("k/ul", "k/mm3", "k/cumm", "thou/ul", "th/ul", "x10^3/ul", "10^3/ul", "x10e3/ul", "10e3/ul",
                "10*3/ul", "x10*3/ul", "1000/ul", "x1000/ul", "x10(3)/ul", "10^3/mm3", "x10^3/mm3", "10*3/mm3",
                "thousand/ul", "k/ul(x1000)"),
    "10*9/L": ("x10^9/l", "10^9/l", "10*9/l", "x10*9/l", "x10e9/l", "10e9/l", "x10(9)/l", "10^9cells/l"),
    "10*6/uL": ("m/ul", "x10^6/ul", "10^6/ul", "10*6/ul", "x10e6/ul", "mil/ul", "million/ul"),
    "10*12/L": ("x10^12/l", "10^12/l", "10*12/l", "x10e12/l"),
    "/uL": ("/ul", "cells/ul", "/mm3", "cells/mm3", "/cumm", "#/ul"),
    "meq/L": ("meq/l", "meq/liter"),
    "mmol/L": ("mmol/l", "mm/l", "mmol/liter"),
    "umol/L": ("umol/l",),
    "nmol/L": ("nmol/l",),
    "pmol/L": ("pmol/l",),
    "mg/dL": ("mg/dl", "mg%", "mg/100ml"),
    "g/dL": ("g/dl", "gm/dl", "g/100ml"),
    "g/L": ("g/l",),
    "mg/L": ("mg/l",),
    "ug/L": ("ug/l",),
    "ng/mL": ("ng/ml",),
    "ng/L": ("ng/l",),
    "pg/mL": ("pg/ml",),
    "mmol/mol": ("mmol/mol",),
    "[IU]/L": ("iu/l", "[iu]/l"),
    "%": ("%", "percent", "pct", "%hb", "%oftotalhgb", "%ofhgb"),
    "1": ("fraction", "ratio", "l/l", "{ratio}", "1", "{fraction}"),
    "[pH]": ("units", "unit", "ph", "[ph]", "phunits", "phunit", "{ph}"),
    "Cel": ("°c", "c", "degc", "cel", "celsius", "°celsius", "degreesc", "degreescelsius", "[degc]"),
    "[degF]": ("°f", "f", "degf", "[degf]", "fahrenheit", "°fahrenheit", "degreesf", "degreesfahrenheit"),
    "/min": ("/min", "bpm", "beats/min", "breaths/min", "{beats}/min", "{breaths}/min", "permin", "1/min",
             "/minute", "beatsperminute", "breathsperminute", "min-1"),
    "mm[Hg]": ("mmhg", "mm[hg]", "mmofhg", "torr"),
    "kg": ("kg", "kgs", "kilogram", "kilograms"),
    "g": ("g", "gram", "grams"),
    "[lb_av]": ("lb", "lbs", "[lb_av]", "pound", "pounds"),
    "[oz_av]": ("oz", "[oz_av]", "ounce", "ounces"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "m": ("m", "meter", "metre"),
    "[in_i]": ("in", "inch", "inches", "[in_i]", "\""),
}.items():
    for _s in _spellings:
        _SPELLINGS[_s] = _ucum

# (test key, given UCUM) -> (scale, offset) for conversions that are not a unit factor.
_AFFINE: dict[tuple[str, str], tuple[float, float]] = {
    ("itemid:50852", "mmol/mol"): (0.09148, 2.152),  # HbA1c IFCC mmol/mol -> NGSP %
}


class UnitProblem(Exception):
    """A unit that cannot be used: `kind` is "unknown" or "incompatible"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Conversion:
    """value_in_model_unit = value * scale + offset."""

    scale: float
    offset: float = 0.0

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype="float64") * self.scale + self.offset


@cache
def registry():
    """The UCUM-aware pint registry (built once; about a second)."""
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _spelling_key(text: str) -> str:
    key = re.sub(r"\s+", "", text).replace("µ", "u").replace("μ", "u")
    key = re.sub(r"mc(?=g|l|mol)", "u", key, flags=re.IGNORECASE)  # mcg, mcL, mcmol
    return key.casefold()


@cache
def to_ucum(text: str) -> str | None:
    """The UCUM code of a unit as printed, None when it is not understood ("" stays "")."""
    text = str(text).strip()
    if not text:
        return ""
    known = _SPELLINGS.get(_spelling_key(text))
    if known is not None:
        return known
    candidate = re.sub(r"\s+", "", text).replace("µ", "u").replace("μ", "u")
    try:
        _quantity(candidate)
    except Exception:  # ucumvert raises lark and pint errors of several kinds for text it cannot parse
        return None
    return candidate


@cache
def _quantity(ucum: str):
    ureg = registry()
    if ucum in ("1", "[pH]"):
        return ureg.Quantity(1.0, "dimensionless")
    return ureg.from_ucum(ucum)


def _is_equivalents(ucum: str) -> bool:
    return "eq" in ucum.casefold()


@cache
def conversion(given_ucum: str, model_ucum: str, molar_mass: float | None = None, valence: int | None = None,
               test_key: str = "") -> Conversion:
    """How to convert values in `given_ucum` to `model_ucum` for one analyte; raises UnitProblem."""
    if (test_key, given_ucum) in _AFFINE:
        return Conversion(*_AFFINE[(test_key, given_ucum)])
    if given_ucum == model_ucum:  # the common case needs no units registry (building it takes ~1 s)
        return Conversion(1.0)
    if "[pH]" in (given_ucum, model_ucum):  # pH is a number on its own scale: only pH units match it
        if given_ucum in ("[pH]", "1") and model_ucum in ("[pH]", "1"):
            return Conversion(1.0)
        raise UnitProblem("incompatible", "not a pH unit")
    given, model = _quantity(given_ucum), _quantity(model_ucum)
    scale = 1.0
    for ucum, direction in ((given_ucum, -1), (model_ucum, 1)):
        if _is_equivalents(ucum):  # pint counts 1 eq as 1 mol; 1 mmol of Ca2+ is 2 mEq
            if valence is None:
                raise UnitProblem("incompatible", "equivalents (mEq) need the analyte's valence, which is not defined for it")
            scale *= float(valence) ** direction
    if given.dimensionality == model.dimensionality:
        return Conversion(scale * float(given.to(model.units).magnitude) / float(model.magnitude))
    if molar_mass is not None:
        mass = given._REGISTRY.Quantity(molar_mass, "g/mol")  # the registry ucumvert built `given` in
        for candidate in (given * mass, given / mass):
            if candidate.dimensionality == model.dimensionality:
                return Conversion(scale * float(candidate.to(model.units).magnitude) / float(model.magnitude))
    raise UnitProblem("incompatible", f"{given_ucum} is not convertible to {model_ucum}")


def convert_array(values: np.ndarray, given_ucum: str, model_ucum: str) -> np.ndarray:
    """Convert an array with pint itself (offset units such as °F -> °C); raises UnitProblem."""
    try:
        unit = _quantity(given_ucum)
        given = unit._REGISTRY.Quantity(np.asarray(values, dtype="float64"), unit.units)
        model = _quantity(model_ucum)
        return np.asarray(given.to(model.units).magnitude, dtype="float64") / float(model.magnitude)
    except UnitProblem:
        raise
    except Exception as exc:  # pint's DimensionalityError and friends
        raise UnitProblem("incompatible", f"{given_ucum} is not convertible to {model_ucum}") from exc
