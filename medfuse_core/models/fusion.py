"""Fusion over representation tokens: [s_labs, s_notes, s_vitals, s_image, c_shared] -> label logits.

Two heads, chosen by `FusionConfig.head`: `FusionHead` (a learned [CLS] token reads the other
tokens through attention; masked tokens are invisible to it) and `AdditiveFusionHead` (a sum of
one term per visible token; the demo's). With every token masked either returns the model's base
value (the "empty logit"), which is what group attributions are measured against. Both are cheap,
so explanation code evaluates many token coalitions in one batched call of the head.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medfuse_core.models.config import FusionConfig
from medfuse_core.record import MODALITIES

def token_names(modalities: Sequence[str] = MODALITIES) -> tuple[str, ...]:
    """The fusion tokens of a model reading `modalities`: one specific token each, then the shared one."""
    return tuple(f"specific:{m}" for m in modalities) + ("shared",)


TOKEN_NAMES: tuple[str, ...] = token_names()  # the built-in model's tokens
SHARED_TOKEN = len(MODALITIES)  # its shared token's index; in any model the shared token is the last one


def pool_shared(shared: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of the per-modality shared projections over the modalities present: (B, M, d) -> (B, d)."""
    weights = present.to(shared.dtype).unsqueeze(-1)
    return (shared * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def build_tokens(specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fusion tokens (B, 5, d) and their mask (B, 5): specific tokens of present modalities, and the
    shared token whenever any modality is present."""
    tokens = torch.cat([specific, pool_shared(shared, present).unsqueeze(1)], dim=1)
    token_mask = torch.cat([present, present.any(dim=1, keepdim=True)], dim=1)
    return tokens, token_mask


class FusionHead(nn.Module):
    """Transformer over the representation tokens with a [CLS] readout and one logit per label."""

    def __init__(self, d_model: int, n_labels: int, layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 n_tokens: int = len(TOKEN_NAMES)):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.token_type = nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, n_labels)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """tokens (N, 5, d), token_mask (N, 5) bool (True = visible) -> logits (N, K)."""
        n = tokens.shape[0]
        # masked tokens are zeroed as well as hidden, so nothing of them can reach the output
        x = torch.cat([self.cls.expand(n, -1, -1), (tokens + self.token_type) * token_mask.unsqueeze(-1)], dim=1)
        padding = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=tokens.device), ~token_mask], dim=1)
        out = self.encoder(x, src_key_padding_mask=padding)
        return self.classifier(self.norm(out[:, 0]))


class AdditiveFusionHead(nn.Module):
    """One small MLP per token, their label logits summed: logit = bias + sum over visible tokens of g_t(token_t).

    Why: with no interaction between tokens, the Shapley value of a token *is* its term g_t(token_t),
    so "how much came from the film's specific representation" is read off the model instead of
    being estimated, and it cannot be spread over tokens by interactions the loss never sees. The
    late-fusion baseline (an average of per-modality heads) shows the cost in quality is small.
    """

    def __init__(self, d_model: int, n_labels: int, dropout: float = 0.1, n_tokens: int = len(TOKEN_NAMES)):
        super().__init__()
        self.terms = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout),
                          nn.Linear(d_model, n_labels))
            for _ in range(n_tokens))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def token_terms(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(N, 5, K): each token's term of the logit, 0 where the token is masked."""
        terms = torch.stack([term(tokens[:, t]) for t, term in enumerate(self.terms)], dim=1)
        return torch.where(token_mask.unsqueeze(-1), terms, torch.zeros_like(terms))  # exact 0, even from inf/NaN

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """tokens (N, 5, d), token_mask (N, 5) bool (True = visible) -> logits (N, K)."""
        return self.bias + self.token_terms(tokens, token_mask).sum(dim=1)


def build_fusion_head(config: FusionConfig, n_labels: int, n_tokens: int = len(TOKEN_NAMES)) -> nn.Module:
    """The head `config.head` names: "transformer" (attention across tokens) or "additive"."""
    if config.head == "transformer":
        return FusionHead(config.d_model, n_labels, config.layers, config.heads, config.dropout, n_tokens)
    if config.head == "additive":
        return AdditiveFusionHead(config.d_model, n_labels, config.dropout, n_tokens)
    raise ValueError(f"fusion.head {config.head!r}: expected 'transformer' or 'additive'")
