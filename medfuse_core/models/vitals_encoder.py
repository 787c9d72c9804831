"""Vitals encoder: MedFuse's LSTM over the 76-feature discretized series -> the last hidden state.

Follows MedFuse's `models/ehr_models.py::LSTM` (nyuad-cai/MedFuse):

* A stack of `layers` LSTMs (input 76 -> hidden), batch first. MedFuse builds it as separate
  1-layer `nn.LSTM`s; one `nn.LSTM(num_layers=layers)` is the same network (same parameters,
  same computation), so that is what is used here.
* **No dropout between the layers.** MedFuse passes `dropout` to each 1-layer `nn.LSTM`, where
  PyTorch ignores it; the effective MedFuse model has none, and neither has this one.
* The feature is the **last layer's final hidden state** h_T (MedFuse's `ht` after the last
  layer), then `Dropout(dropout)` on it (MedFuse's `self.do`), -> (B, hidden).
* Initialisation as MedFuse: input-hidden weights Xavier-uniform, hidden-hidden weights
  orthogonal, biases zero (MedFuse's `initialize_weights`, applied to every layer).
* Lengths: MedFuse packs with per-stay lengths (`pack_padded_sequence(enforce_sorted=False)`),
  so h_T is taken at each stay's own last step. `forward(x, lengths)` does the same when lengths
  are given; the default input here is the fixed 48-step discretized grid, with no lengths.

Parameter count (analytic): sum over layers l of 4 * hidden * (in_l + hidden + 2), with in_0 = 76,
in_l = hidden after that; for the default (76, 256, 2 layers): 342,016 + 526,336 = 868,352
(`lstm_parameter_count`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from medfuse_core.models.config import VitalsEncoderConfig

__all__ = ["VitalsEncoder", "lstm_parameter_count"]


def lstm_parameter_count(input_dim: int, hidden: int, layers: int) -> int:
    """Parameters of a unidirectional `nn.LSTM`: 4 gates x (W_ih, W_hh, b_ih, b_hh) per layer."""
    total, width = 0, input_dim
    for _ in range(layers):
        total += 4 * hidden * (width + hidden + 2)
        width = hidden
    return total


class VitalsEncoder(nn.Module):
    def __init__(self, config: VitalsEncoderConfig):
        super().__init__()
        self.config = config
        self.feature_dim = int(config.hidden)
        self.lstm = nn.LSTM(
            input_size=int(config.input_dim), hidden_size=int(config.hidden),
            num_layers=int(config.layers), batch_first=True, dropout=0.0,
        )
        self.dropout = nn.Dropout(float(config.dropout)) if config.dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MedFuse's initialisation: Xavier-uniform W_ih, orthogonal W_hh, zero biases."""
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(param)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            elif name.startswith("bias"):
                nn.init.zeros_(param)

    def forward(self, vitals: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """vitals (B, T, input_dim); lengths (B,) valid steps per row (optional) -> (B, hidden)."""
        if vitals.ndim != 3 or vitals.shape[-1] != self.config.input_dim:
            raise ValueError(f"expected vitals of shape (B, T, {self.config.input_dim}), got {tuple(vitals.shape)}")
        # oneDNN has no bf16 LSTM primitive on CPUs without AVX-512 BF16 (an AVX2-only EPYC raises "could not
        # create a primitive descriptor"), so under CPU autocast the recurrence runs in fp32; CUDA autocast
        # (cuDNN) keeps it in bf16. The layers around it stay under autocast either way.
        cpu_autocast = vitals.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        with torch.autocast("cpu", enabled=False) if cpu_autocast else contextlib.nullcontext():
            vitals = vitals.float() if cpu_autocast else vitals
            if lengths is not None:
                lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu().clamp(1, vitals.shape[1])
                packed = pack_padded_sequence(vitals, lengths, batch_first=True, enforce_sorted=False)
                _, (h, _) = self.lstm(packed)  # h is returned in the original batch order
            else:
                _, (h, _) = self.lstm(vitals)
        return self.dropout(h[-1])
