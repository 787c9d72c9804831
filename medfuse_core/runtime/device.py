"""Device choice, in one place: "auto" is CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """torch.device for `name` ("auto", "cpu", "cuda", "cuda:1", ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
