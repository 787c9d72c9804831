"""Integrated Gradients on a registered modality's raw model input: the evidence method any numeric
modality can use without code of its own (a waveform, a score vector).

Baseline: the all-zero input (what an absent modality is fed). One attribution per input element,
in the input's shape, with Captum's convergence delta; only the modality's own encoder and the part of
the model after the encoders run per step (the explainer's `_forward`).
"""

from __future__ import annotations

from typing import Any

import torch


def input_attribution(explainer: Any, label: int, modality: str, n_steps: int = 64) -> tuple[dict[str, Any], float]:
    """({"attribution": nested list in the input's shape, "total": float}, |convergence delta|) for one
    label; ({}, 0.0) when the patient does not have the modality."""
    from captum.attr import IntegratedGradients

    if not explainer.has(modality):
        return {}, 0.0
    x = explainer.batch.extra[modality].float()
    with explainer.gradients():
        attr, delta = IntegratedGradients(explainer.forward_of(modality, modality)).attribute(
            x, baselines=torch.zeros_like(x), target=label, n_steps=n_steps, return_convergence_delta=True)
    values = attr.detach()[0].double().cpu()
    return {"attribution": values.tolist(), "total": float(values.sum())}, float(delta.abs().max())
