"""Note encoder: the trained adapter over precomputed sentence embeddings -> one vector per patient.

The text model (`TextBackbone`) is not inside: its sentence vectors are computed once and cached
(`features/embedding_cache.py`), so training only fits this adapter. Explanations compose the two
(backbone -> (B, S, D) -> this module) to attribute down to note tokens.

Per sentence: LayerNorm -> Linear(D, adapter_dim) -> GELU -> Dropout -> Linear(adapter_dim,
output_dim). Over sentences: attention pooling with one learned query; score_s = <key(h_s), q> /
sqrt(output_dim), softmax over the real sentences only (`mask`), output = sum_s w_s h_s.
A patient with no sentence (all-masked row) gets exactly zero output and zero weights, with finite
gradients (no -inf softmax, so no NaN). Padded slots never change the output, whatever they hold.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from medfuse_core.models.config import NoteEncoderConfig

__all__ = ["NoteEncoder", "NoteEncoderOutput"]


class NoteEncoderOutput(NamedTuple):
    embedding: torch.Tensor  # (B, output_dim); zeros for patients without a sentence
    attention: torch.Tensor  # (B, S) pooling weights over sentences; zeros where masked


class NoteEncoder(nn.Module):
    def __init__(self, config: NoteEncoderConfig):
        super().__init__()
        self.config = config
        d_in, d_hidden, d_out = int(config.embedding_dim), int(config.adapter_dim), int(config.output_dim)
        self.feature_dim = d_out
        self.project = nn.Sequential(
            nn.LayerNorm(d_in),
            nn.Linear(d_in, d_hidden),
            nn.GELU(),
            nn.Dropout(float(config.dropout)),
            nn.Linear(d_hidden, d_out),
        )
        self.key = nn.Linear(d_out, d_out)
        self.query = nn.Parameter(torch.randn(d_out) / math.sqrt(d_out))

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor | None = None) -> NoteEncoderOutput:
        """embeddings (B, S, D) sentence vectors, mask (B, S) True for a real sentence."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.config.embedding_dim:
            raise ValueError(
                f"note embeddings: expected (B, S, {self.config.embedding_dim}), got {tuple(embeddings.shape)}; "
                "is config.notes.embedding_dim the text model's hidden size?"
            )
        if mask is None:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
        mask = mask.bool()
        # Zero padded slots first, so whatever they hold (NaN included) cannot leak into gradients.
        x = torch.where(mask.unsqueeze(-1), embeddings, torch.zeros((), dtype=embeddings.dtype, device=embeddings.device))
        h = self.project(x)  # (B, S, d_out)
        scores = self.key(h) @ self.query / math.sqrt(h.shape[-1])  # (B, S)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # all-masked rows: all zero
        pooled = (weights.unsqueeze(-1) * h).sum(dim=1)
        return NoteEncoderOutput(pooled, weights)
