"""The disentanglement losses measure what they claim to."""

from __future__ import annotations

import math

import torch

from medfuse_core.models.disentangle import VCLUB, info_nce, info_nce_mi_estimate


def _train_estimator(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> VCLUB:
    club = VCLUB(x.shape[1], y.shape[1], hidden=32)
    optimizer = torch.optim.Adam(club.parameters(), lr=5e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        (-club.log_likelihood(x, y)).backward()
        optimizer.step()
    return club


def _pairs(n: int, d: int, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, d)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d)


def test_vclub_estimates_more_information_for_correlated_than_independent_pairs() -> None:
    torch.manual_seed(0)
    n, d = 1024, 4
    estimates = {}
    for rho in (0.9, 0.0):
        club = _train_estimator(*_pairs(n, d, rho))
        with torch.no_grad():  # evaluated on fresh pairs: the estimator must not just remember its sample
            estimates[rho] = float(club(*_pairs(n, d, rho)))
    # true MI: -d/2 log(1 - rho^2) = 3.3 nats at rho 0.9, 0 at rho 0; vCLUB is an upper bound
    assert estimates[0.9] > 3.3
    assert abs(estimates[0.0]) < 0.5
    assert estimates[0.9] > estimates[0.0] + 2.0


def test_info_nce_never_exceeds_log_batch_size() -> None:
    torch.manual_seed(1)
    for batch in (4, 16, 64):
        base = torch.randn(batch, 1, 8)
        perfectly_aligned = base.repeat(1, 4, 1)  # every modality's shared projection identical
        present = torch.ones(batch, 4, dtype=torch.bool)
        estimate = info_nce_mi_estimate(perfectly_aligned, present, temperature=0.05)
        assert estimate <= math.log(batch) + 1e-6
        assert estimate > math.log(batch) - 0.5  # and reaches the bound when views agree
        random_views = torch.randn(batch, 4, 8)
        assert info_nce_mi_estimate(random_views, present, 0.05) < math.log(batch)


def test_info_nce_uses_only_patients_with_both_modalities() -> None:
    torch.manual_seed(2)
    shared = torch.randn(6, 4, 8, requires_grad=True)
    present = torch.zeros(6, 4, dtype=torch.bool)
    present[:, 0] = True
    present[:3, 1] = True  # labs+notes for three patients, nothing else paired
    loss = info_nce(shared, present)
    loss.backward()
    assert torch.isfinite(loss)
    assert shared.grad[3:, 1].abs().sum() == 0 and shared.grad[:, 2:].abs().sum() == 0
    nobody_paired = torch.zeros(6, 4, dtype=torch.bool)
    nobody_paired[:, 0] = True
    assert float(info_nce(shared, nobody_paired)) == 0.0
