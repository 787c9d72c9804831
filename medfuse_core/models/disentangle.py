"""Specific and shared projections per modality, and the two losses that pull them apart.

- InfoNCE aligns the *shared* projections of the modalities present for the same patient: it keeps
  in c_m what another modality of the same patient can predict.
- vCLUB (Cheng et al., ICML 2020, sampled variant) is an upper bound on I(s_m; c_m); minimising it
  removes from the *specific* projection what the shared one already holds. Its variational network
  q(c | s) is trained in alternation (maximum likelihood on detached pairs).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medfuse_core.record import MODALITIES


def _mlp(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(out_dim, out_dim))


class Disentangler(nn.Module):
    """Per modality m: s_m = specific_m(h_m), c_m = shared_m(h_m), both of width d_model."""

    def __init__(self, input_dims: dict[str, int], d_model: int, dropout: float = 0.1,
                 modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.modalities = tuple(modalities)
        self.specific = nn.ModuleDict({m: _mlp(input_dims[m], d_model, dropout) for m in self.modalities})
        self.shared = nn.ModuleDict({m: _mlp(input_dims[m], d_model, dropout) for m in self.modalities})

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """features[m]: (B, input_dims[m]) -> specific (B, M, d), shared (B, M, d), in `modalities` order."""
        specific = torch.stack([self.specific[m](features[m]) for m in self.modalities], dim=1)
        shared = torch.stack([self.shared[m](features[m]) for m in self.modalities], dim=1)
        return specific, shared


def info_nce(shared: torch.Tensor, present: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between the shared projections of every pair of modalities.

    shared: (B, M, d); present: (B, M) bool. For a pair (m, n) only patients with both present take
    part; the loss is averaged over pairs with at least two such patients. Returns 0 when no pair
    qualifies. The implied MI estimate log(N) - loss never exceeds log(N).
    """
    z = nn.functional.normalize(shared, dim=-1)
    losses = []
    for i in range(z.shape[1]):
        for j in range(i + 1, z.shape[1]):
            both = present[:, i] & present[:, j]
            if int(both.sum()) < 2:
                continue
            a, b = z[both, i], z[both, j]
            logits = a @ b.T / temperature
            target = torch.arange(a.shape[0], device=a.device)
            losses.append(0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)))
    if not losses:
        return shared.sum() * 0.0
    return torch.stack(losses).mean()


def info_nce_mi_estimate(shared: torch.Tensor, present: torch.Tensor, temperature: float = 0.1) -> float:
    """The InfoNCE lower bound on I(c_m; c_n), averaged over pairs: log(N) - loss, in nats."""
    z = nn.functional.normalize(shared, dim=-1)
    estimates = []
    for i in range(z.shape[1]):
        for j in range(i + 1, z.shape[1]):
            both = present[:, i] & present[:, j]
            n = int(both.sum())
            if n < 2:
                continue
            logits = z[both, i] @ z[both, j].T / temperature
            target = torch.arange(n, device=z.device)
            estimates.append(math.log(n) - float(nn.functional.cross_entropy(logits, target)))
    return float(sum(estimates) / len(estimates)) if estimates else float("nan")


class VCLUB(nn.Module):
    """Sampled vCLUB upper bound on I(x; y) with a Gaussian q(y | x)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 128):
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean log q(y | x) up to a constant: what the estimator maximises (on detached inputs)."""
        mu, logvar = self.mu(x), self.logvar(x)
        return (-((mu - y) ** 2) / logvar.exp() - logvar).sum(-1).mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The MI upper bound estimate: E[log q(y|x)] over pairs minus over shuffled pairs."""
        if x.shape[0] < 2:
            return x.sum() * 0.0
        mu, logvar = self.mu(x), self.logvar(x)
        permutation = torch.randperm(x.shape[0], device=x.device)
        positive = -((mu - y) ** 2) / logvar.exp()
        negative = -((mu - y[permutation]) ** 2) / logvar.exp()
        return (positive.sum(-1) - negative.sum(-1)).mean() / 2.0


class ModalityVCLUB(nn.Module):
    """One vCLUB estimator per modality, for I(s_m; c_m) over the patients where m is present."""

    def __init__(self, d_model: int, hidden: int = 128, modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.modalities = tuple(modalities)
        self.estimators = nn.ModuleDict({m: VCLUB(d_model, d_model, hidden) for m in self.modalities})

    def _pairs(self, specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor):
        for i, m in enumerate(self.modalities):
            rows = present[:, i]
            if int(rows.sum()) >= 2:
                yield m, specific[rows, i], shared[rows, i]

    def upper_bound(self, specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean over modalities of the vCLUB bound; gradients flow into the projections.

        Each bound is clamped at 0 from below: MI is never negative, and a negative estimate only
        means the projections have moved where q(c|s) is not yet fitted. Without the clamp the
        encoders learn to game the estimator (the bound runs to large negative values) instead
        of removing shared information from the specific projection."""
        bounds = [self.estimators[m](s, c).clamp(min=0.0) for m, s, c in self._pairs(specific, shared, present)]
        return torch.stack(bounds).mean() if bounds else specific.sum() * 0.0

    def estimator_loss(self, specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of q(c | s) on detached pairs: the estimator's own training step."""
        losses = [-self.estimators[m].log_likelihood(s.detach(), c.detach())
                  for m, s, c in self._pairs(specific, shared, present)]
        return torch.stack(losses).mean() if losses else specific.sum() * 0.0


def partner_alignment(shared: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Consensus constraint on the shared projections: each feature of c_m must match that feature
    of at least one *other* present modality (its closest partner, held fixed).

    Why not align c_m with every other modality (or their mean): a disease whose evidence is in
    labs, notes and image but not vitals would then be pushed out of the shared token, because vitals
    cannot match it. Matching the closest partner keeps what any two modalities agree on and removes
    only what a modality alone knows (a lab-only disease cannot have a partner). Features are
    layer-normalised first, so the loss cannot be lowered by shrinking c. Patients with one modality
    present do not take part; returns 0 when nobody has two.
    """
    z = nn.functional.layer_norm(shared, shared.shape[-1:])
    n_present = present.sum(dim=1)
    terms = []
    for i in range(z.shape[1]):
        rows = present[:, i] & (n_present >= 2)
        if not bool(rows.any()):
            continue
        partners = [j for j in range(z.shape[1]) if j != i]
        gaps = torch.stack([((z[:, i] - z[:, j].detach()) ** 2).masked_fill(~present[:, j : j + 1], math.inf)
                            for j in partners])  # (M-1, B, d)
        terms.append(gaps.min(dim=0).values[rows].mean())
    return torch.stack(terms).mean() if terms else shared.sum() * 0.0


def cross_correlation(specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor, min_rows: int = 8) -> torch.Tensor:
    """Mean squared cross-correlation between the features of s_m and c_m over the batch, averaged
    over modalities: a linear, estimator-free companion of vCLUB that keeps what the shared projection
    holds out of the specific one. Modalities with fewer than `min_rows` patients are skipped."""
    terms = []
    for i in range(specific.shape[1]):
        rows = present[:, i]
        if int(rows.sum()) < min_rows:
            continue
        s, c = specific[rows, i], shared[rows, i]
        s = (s - s.mean(0)) / (s.std(0) + 1e-4)
        c = (c - c.mean(0)) / (c.std(0) + 1e-4)
        terms.append(((s.T @ c) / s.shape[0]).pow(2).mean())
    return torch.stack(terms).mean() if terms else specific.sum() * 0.0
