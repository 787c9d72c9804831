"""One patient's batch with one input replaced by n attribution rows (the rest repeated)."""

from __future__ import annotations

from dataclasses import replace

import torch

from medfuse_core.features.batch import Batch


def with_input(batch: Batch, name: str, value: torch.Tensor) -> Batch:
    """`batch` (one patient) with input `name` (a Batch field or an extra modality's key) replaced by
    `value` (n rows), the rest repeated to n rows."""
    n = int(value.shape[0])
    out = batch.map(lambda v: v.expand(n, *v.shape[1:]))
    if name in out.extra:
        return replace(out, extra={**out.extra, name: value})
    return replace(out, **{name: value})
