"""Lab encoder: a transformer over one token per lab item, and its masked-autoencoder pretraining.

Input (see `features/labs.py`): `items` (B, L) vocabulary ids, 0 = padding; `values` (B, L, V)
per-item summary features of normalised values (last, min, max, trend); `mask` (B, L) True for a
real token (defaults to items > 0).

`LabEncoder`, read top to bottom:

* token = `item_embedding(item)` + `value_embedding(values)`, the latter an MLP V -> d -> d. The
  value embedding is its own named submodule so that Captum's LayerIntegratedGradients can
  attribute to it, and `forward(..., value_embeddings=...)` accepts precomputed value embeddings
  (IntegratedGradients on the embeddings, or counterfactual "this item at a baseline value").
  No positional encoding: a patient's lab items form a set.
* A learned [CLS] token is prepended. It is never masked, so no attention row is all-masked
  (PyTorch would give NaN there) and a patient with no lab token still has a finite output.
* `nn.TransformerEncoder` (pre-norm, batch first, GELU) with the key padding mask, then a final
  LayerNorm.
* Output `(summary, token_states)`: summary = Linear(LayerNorm(CLS state)) (B, output_dim), set
  to exactly 0 for patients without a lab token; token_states (B, L, d_model), 0 at padding.

`LabMAE` (pretraining only), as MAE (He et al. 2022) on a set of lab items:

* Per patient, `round(mask_ratio * n)` of its n tokens are masked at random, at least one kept
  (patients with one token get no masked token and no loss).
* The encoder sees ONLY the visible tokens (compacted to the longest visible set in the batch).
* A shallow decoder (`decoder_layers` pre-norm layers) runs over [CLS state, visible states,
  mask tokens], each plus a decoder item embedding; a mask token is a learned vector plus the
  decoder item embedding of the item it stands for (the "which item to reconstruct" query; the
  item identity plays the role of MAE's position embedding). A linear head predicts the V value
  features of every token; the loss is the MSE over masked tokens only (all V features, mean
  over masked tokens of the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medfuse_core.models.config import LabEncoderConfig

__all__ = ["LabEncoder", "LabMAE", "LabMAEOutput", "LabValueEmbedding", "random_token_mask"]

# Item embeddings start at N(0, 1) (nn.Embedding's default), the scale of the value embedding: at a
# BERT-like 0.02 the pre-norm LayerNorm drowns item identity in the value part, and MAE training
# then sits on the per-item-mean plateau for many epochs (measured on the synthetic cohort).
_ITEM_STD = 1.0


def _transformer(d_model: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=d_model, nhead=heads, dim_feedforward=4 * d_model, dropout=dropout,
        activation="gelu", batch_first=True, norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


class LabValueEmbedding(nn.Module):
    """MLP from the V value features of a token to d_model."""

    def __init__(self, value_features: int, d_model: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(value_features, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.net(values)


class LabEncoder(nn.Module):
    def __init__(self, config: LabEncoderConfig):
        super().__init__()
        self.config = config
        d = int(config.d_model)
        self.d_model = d
        self.feature_dim = int(config.output_dim)
        self.item_embedding = nn.Embedding(int(config.vocab_size), d, padding_idx=0)
        self.value_embedding = LabValueEmbedding(int(config.value_features), d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = _transformer(d, int(config.heads), int(config.layers), float(config.dropout))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, int(config.output_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.item_embedding.weight, std=_ITEM_STD)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        nn.init.normal_(self.cls_token, std=0.02)

    def embed(self, items: torch.Tensor, values: torch.Tensor, value_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B, L, d): item embedding + value embedding."""
        if value_embeddings is None:
            value_embeddings = self.value_embedding(values.to(self.item_embedding.weight.dtype))
        return self.item_embedding(items) + value_embeddings

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer over [CLS] + tokens -> (CLS state (B, d), token states (B, L, d), 0 at padding)."""
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        x = self.norm(self.encoder(x, src_key_padding_mask=~keep))
        states = x[:, 1:] * mask.unsqueeze(-1).to(x.dtype)
        return x[:, 0], states

    def forward(self, items: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
                value_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summary (B, output_dim), token_states (B, L, d_model)); summary is 0 for no lab token."""
        mask = (items > 0) if mask is None else mask.bool() & (items > 0)
        cls, states = self.encode(self.embed(items, values, value_embeddings), mask)
        summary = self.head(cls) * mask.any(dim=1, keepdim=True).to(cls.dtype)
        return summary, states


def random_token_mask(mask: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) bool: `round(ratio * n)` of each row's n real tokens, at random, at least one kept."""
    n = mask.sum(dim=1)
    n_mask = torch.clamp(torch.round(n.to(torch.float64) * ratio).long(), max=torch.clamp(n - 1, min=0))
    noise = torch.rand(mask.shape, generator=generator, device=mask.device if generator is None else generator.device)
    noise = noise.to(mask.device).masked_fill(~mask, 2.0)  # padding sorts last
    rank = noise.argsort(dim=1).argsort(dim=1)
    return mask & (rank < n_mask.unsqueeze(1))


@dataclass
class LabMAEOutput:
    loss: torch.Tensor  # scalar: MSE over masked tokens (0 when none is masked)
    prediction: torch.Tensor  # (B, L, V) predicted value features at every position
    masked: torch.Tensor  # (B, L) bool: tokens hidden from the encoder and scored
    n_masked: int


class LabMAE(nn.Module):
    def __init__(self, encoder: LabEncoder, config: LabEncoderConfig):
        super().__init__()
        self.encoder = encoder
        self.config = config
        d = encoder.d_model
        self.decoder_embed = nn.Linear(d, d)
        self.decoder_item_embedding = nn.Embedding(int(config.vocab_size), d, padding_idx=0)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = _transformer(d, int(config.heads), int(config.decoder_layers), float(config.dropout))
        self.decoder_norm = nn.LayerNorm(d)
        self.prediction_head = nn.Linear(d, int(config.value_features))
        self.prediction_bias = nn.Embedding(int(config.vocab_size), int(config.value_features), padding_idx=0)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_item_embedding.weight, std=_ITEM_STD)
        nn.init.zeros_(self.prediction_bias.weight)

    def forward(self, items: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
                masked: torch.Tensor | None = None, generator: torch.Generator | None = None) -> LabMAEOutput:
        """`masked` (B, L) bool chooses the hidden tokens; else `random_token_mask(mask_ratio)`."""
        mask = (items > 0) if mask is None else mask.bool() & (items > 0)
        if masked is None:
            masked = random_token_mask(mask, float(self.config.mask_ratio), generator)
        masked = masked & mask
        visible = mask & ~masked

        # Encoder on the visible tokens only, compacted to the longest visible set.
        order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)
        k = max(int(visible.sum(dim=1).max()), 1) if visible.numel() else 1
        idx = order[:, :k]
        vis_mask = visible.gather(1, idx)
        vis_items = items.gather(1, idx) * vis_mask
        vis_values = values.gather(1, idx.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        cls, vis_states = self.encoder.encode(self.encoder.embed(vis_items, vis_values), vis_mask)

        # Back to the original positions; masked positions get the mask token.
        d = vis_states.shape[-1]
        states = vis_states.new_zeros(items.shape[0], items.shape[1], d).scatter(1, idx.unsqueeze(-1).expand(-1, -1, d), vis_states)
        x = torch.where(visible.unsqueeze(-1), self.decoder_embed(states), self.mask_token.to(states.dtype).expand_as(states))
        x = x + self.decoder_item_embedding(items * mask)
        x = torch.cat([self.decoder_embed(cls).unsqueeze(1), x], dim=1)
        keep = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        x = self.decoder_norm(self.decoder(x, src_key_padding_mask=~keep))
        prediction = self.prediction_head(x[:, 1:]) + self.prediction_bias(items * mask)

        n_masked = int(masked.sum())
        err = ((prediction - values.to(prediction.dtype)) ** 2).mean(dim=-1)
        loss = (err * masked.to(err.dtype)).sum() / max(n_masked, 1)
        return LabMAEOutput(loss, prediction, masked, n_masked)
