"""The bundled demo: a small synthetic cohort generated deterministically on first use.

Generated rather than committed (it holds DICOM files); it takes a few seconds and is cached under
`$MEDFUSE_LENS_HOME` (default `~/.cache/medfuse-lens`). Generation writes to a temporary folder and
renames it into place, so two dashboard processes starting together cannot see half a cohort.
The demo is a ward, not a textbook (`realism` "ward": MIMIC-like prevalences, positives with weak or
absent evidence, mimics, label noise; sources/synth/realism.py), like the data of the demo model.
"""

from __future__ import annotations

from pathlib import Path

from medfuse_core.runtime.cache import built_once, cache_home

DEMO_SEED = 2026
DEMO_SIZE = 40
DEMO_IMAGE_SIZE = 512
DEMO_REALISM = "ward"


def demo_cohort_dir() -> Path:
    """The demo cohort's folder, generating it first if it is not there yet."""
    from medfuse_core.sources.synth import GENERATOR_VERSION, generate_cohort, realism_named

    target = cache_home() / f"demo-cohort-{GENERATOR_VERSION}-{DEMO_REALISM}-seed{DEMO_SEED}-n{DEMO_SIZE}"
    return built_once(target, "cohort.json",
                      lambda folder: generate_cohort(DEMO_SIZE, DEMO_SEED, folder, image_size=DEMO_IMAGE_SIZE,
                                                     realism=realism_named(DEMO_REALISM)))
