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
from typing import Callable

DEMO_SEED = 2026
DEMO_SIZE = 40
DEMO_IMAGE_SIZE = 512


def cache_home() -> Path:
    return Path(os.environ.get("MEDFUSE_LENS_HOME", Path.home() / ".cache" / "medfuse-lens"))


def built_once(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """`target`, built by `build(folder)` unless `target/marker` exists. The build writes to a scratch
    folder renamed into place, so concurrent or interrupted builds never leave half a folder behind."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / marker).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def demo_cohort_dir() -> Path:
    """The demo cohort's folder, generating it first if it is not there yet."""
    from medfuse_core.sources.synth import GENERATOR_VERSION, generate_cohort

    target = cache_home() / f"demo-cohort-{GENERATOR_VERSION}-seed{DEMO_SEED}-n{DEMO_SIZE}"
    return built_once(target, "cohort.json",
                      lambda folder: generate_cohort(DEMO_SIZE, DEMO_SEED, folder, image_size=DEMO_IMAGE_SIZE))
