"""Where MEDFuse Lens keeps what it builds once (demo cohort, sentence embeddings, imports)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

HOME_ENV = "MEDFUSE_LENS_HOME"


def cache_home() -> Path:
    """$MEDFUSE_LENS_HOME, else ~/.cache/medfuse-lens."""
    return Path(os.environ.get(HOME_ENV, Path.home() / ".cache" / "medfuse-lens"))


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
