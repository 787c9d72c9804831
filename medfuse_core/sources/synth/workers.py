"""Worker processes for cohort generation: one BLAS thread each, so processes do not oversubscribe.

The chest drawing resamples with a matrix product; NumPy's OpenBLAS then starts one thread per core
in every forked worker, and N workers on N cores run slower than one. There is no threadpoolctl
dependency here, so the thread count is set through OpenBLAS's own C entry point when it can be
found, and left alone (just slower) when it cannot.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")


def _loaded_openblas() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in lines if "openblas" in line.lower() and ".so" in line})


def limit_blas_threads(n: int = 1) -> bool:
    """Set OpenBLAS to `n` threads in this process; True if it could be done."""
    import numpy  # noqa: F401  (makes sure the library is loaded)

    done = False
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                done = True
                break
    return done
