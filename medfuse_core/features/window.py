"""The observation window, defined once: the model reads what happened in the first `HOURS` hours
after the index time (admission or ICU intime), the vitals in `TIMESTEP`-hour bins (MedFuse /
mimic3-benchmarks in-hospital mortality: 48 bins of 1 h).

A checkpoint records the window it was trained with (`FeatureSpec.hours`, `.timestep`), which is what
scoring, explanations and the pages then use; these constants are the defaults a new run starts from.
"""

HOURS = 48.0
TIMESTEP = 1.0
