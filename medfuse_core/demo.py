"""The bundled demo: a small synthetic cohort generated deterministically on first use.

Generated rather than committed (it holds DICOM files); it takes a few seconds and is cached under
`$MEDFUSE_LENS_HOME` (default `~/.cache/medfuse-lens`). Generation writes to a temporary folder and
renames it into place, so two dashboard processes starting together cannot see half a cohort.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DEMO_SEED = 2026
DEMO_SIZE = 40
DEMO_IMAGE_SIZE = 512


def cache_home() -> Path:
    return Path(os.environ.get("MEDFUSE_LENS_HOME", Path.home() / ".cache" / "medfuse-lens"))


def demo_cohort_dir() -> Path:
    """The demo cohort's folder, generating it first if it is not there yet."""
    from medfuse_core.sources.synth import GENERATOR_VERSION, generate_cohort

    target = cache_home() / f"demo-cohort-{GENERATOR_VERSION}-seed{DEMO_SEED}-n{DEMO_SIZE}"
    if (target / "cohort.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        generate_cohort(DEMO_SIZE, DEMO_SEED, scratch, image_size=DEMO_IMAGE_SIZE)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "cohort.json").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
