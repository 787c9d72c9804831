"""Scoring explanations against the synthetic cohort's planted truth (truth.json): benchmark-only.

Nothing in the product path imports this package: the dashboard, the CLI's explain/score commands and
the library's explain/ know nothing of planted truth. benchmarks/faithfulness.py and its tests do.

* routes.py        the planted route (specific vs shared) of each disease and the route accuracy
* faithfulness.py  evidence vs planted spans/regions, deletion curves, the faithfulness report
"""
