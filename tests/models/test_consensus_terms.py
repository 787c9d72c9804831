"""The disentanglement terms of the objective measure what they claim to."""

from __future__ import annotations

import torch

from medfuse_core.models.disentangle import cross_correlation, partner_alignment


def _present(rows: int, columns: list[int]) -> torch.Tensor:
    present = torch.zeros(rows, 4, dtype=torch.bool)
    present[:, columns] = True
    return present


def test_partner_alignment_is_zero_when_two_modalities_agree_and_a_third_differs() -> None:
    torch.manual_seed(0)
    agreed = torch.randn(64, 8)
    shared = torch.stack([agreed, agreed, torch.randn(64, 8), torch.zeros(64, 8)], dim=1)
    present = _present(64, [0, 1, 2])
    # labs and notes match each other exactly: they pay nothing; vitals has no partner and pays
    z = torch.nn.functional.layer_norm(shared, (8,))
    loss = partner_alignment(shared, present)
    vitals_gap = torch.stack([(z[:, 2] - z[:, j]).pow(2) for j in (0, 1)]).min(0).values.mean()
    assert torch.isclose(loss, vitals_gap / 3, rtol=1e-5)


def test_partner_alignment_penalises_what_only_one_modality_knows() -> None:
    torch.manual_seed(1)
    common = torch.randn(256, 1).expand(256, 4)
    lab_only = torch.randn(256, 4)
    with_lab_only = torch.stack([torch.cat([common, lab_only], 1), torch.cat([common, torch.zeros(256, 4)], 1)], 1)
    without = torch.stack([torch.cat([common, torch.zeros(256, 4)], 1)] * 2, 1)
    pad = torch.zeros(256, 2, 8)
    present = _present(256, [0, 1])
    assert float(partner_alignment(torch.cat([without, pad], 1), present)) < 1e-6
    assert float(partner_alignment(torch.cat([with_lab_only, pad], 1), present)) > 0.1


def test_partner_alignment_ignores_single_modality_patients_and_absent_partners() -> None:
    shared = torch.randn(16, 4, 8)
    assert float(partner_alignment(shared, _present(16, [2]))) == 0.0
    # an absent modality never serves as a partner, whatever its projection holds
    shared[:, 3] = shared[:, 0]
    assert float(partner_alignment(shared, _present(16, [0, 1]))) > 0.0


def test_cross_correlation_sees_shared_content_in_the_specific_projection() -> None:
    torch.manual_seed(2)
    c = torch.randn(512, 4, 16)
    independent = torch.randn(512, 4, 16)
    copied = c + 0.1 * torch.randn(512, 4, 16)
    present = torch.ones(512, 4, dtype=torch.bool)
    low = float(cross_correlation(independent, c, present))
    high = float(cross_correlation(copied, c, present))
    assert low < 0.005  # ~1/N for independent features
    assert high > 0.05  # one perfectly correlated pair out of 16 per row: ~1/16
    assert float(cross_correlation(copied, c, torch.zeros(512, 4, dtype=torch.bool))) == 0.0
