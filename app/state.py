"""Process-wide cached data for the pages: the current patient source and its records.

Pages never read files themselves; they ask here, so a cohort is read once per process.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from medfuse_core.demo import demo_cohort_dir
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import find_bundles
from medfuse_core.sources.validate import validate_bundle


@st.cache_resource(show_spinner="Preparing the demo cohort (first start only)...")
def demo_dir() -> Path:
    return demo_cohort_dir()


@st.cache_resource(show_spinner="Reading patient bundles...")
def load_cohort(root: str) -> list[PatientRecord]:
    """Every readable bundle under `root`; unreadable ones are skipped (their problems shown elsewhere)."""
    records = []
    for folder in find_bundles(Path(root)):
        _, record = validate_bundle(folder)
        if record is not None:
            records.append(record)
    return records


SOURCE_ENV = "MEDFUSE_LENS_SOURCE"  # a folder of bundles (or one bundle) to show instead of the demo


def current_source() -> Path:
    """The folder of bundles the dashboard shows: the user's pick, else $MEDFUSE_LENS_SOURCE, else the demo."""
    return Path(st.session_state.get("source_dir") or os.environ.get(SOURCE_ENV) or demo_dir())
