"""The autocast policy, in one place: bf16 autocast on CUDA, full fp32 on the CPU, unless asked otherwise.

Why a choice at all: on CUDA bf16 autocast is the fast path and loses nothing measurable here; on a
CPU it is slower than fp32 on most machines, so "auto" leaves it off. "bf16" forces it on any device,
which is how CI (no GPU) runs the exact code path a CUDA training run takes (tests/runtime/test_precision.py).
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str, field: str = "precision") -> str:
    """`precision` if it is one of PRECISIONS; else a ValueError naming `field`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{field} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def mixed_precision(device: torch.device, precision: str = "auto") -> torch.autocast:
    """The autocast context for `device` under `precision` ("auto" | "bf16" | "fp32")."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))
