"""Lab encoder: shapes, no NaN for patients without labs, padding invariance, MAE masking and loss."""

from __future__ import annotations

import pytest
import torch

from medfuse_core.models.config import LabEncoderConfig
from medfuse_core.models.lab_encoder import LabEncoder, LabMAE, random_token_mask

CONFIG = LabEncoderConfig(vocab_size=12, value_features=4, d_model=16, layers=2, heads=2, dropout=0.1,
                          decoder_layers=1, mask_ratio=0.75, output_dim=8)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch():
    torch.manual_seed(0)
    items = torch.tensor([[3, 5, 7, 1, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0], [1, 2, 3, 4, 11]])
    values = torch.randn(4, 5, 4) * 3
    return items, values


def test_shapes_and_finite_with_an_empty_patient():
    encoder = LabEncoder(CONFIG)
    items, values = _batch()
    for mode in (encoder.train, encoder.eval):
        mode()
        summary, states = encoder(items, values, items > 0)
        assert summary.shape == (4, 8) and states.shape == (4, 5, 16)
        assert torch.isfinite(summary).all() and torch.isfinite(states).all()
        assert summary[1].abs().sum() == 0  # no lab token -> zero summary
        assert states[items == 0].abs().sum() == 0
    summary, _ = encoder(items, values)
    summary.sum().backward()  # gradients are finite too
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_padding_invariance_and_values_at_padding_ignored():
    encoder = LabEncoder(CONFIG).eval()
    items, values = _batch()
    with torch.no_grad():
        summary, states = encoder(items, values)
        wide_items = torch.cat([items, torch.zeros(4, 3, dtype=torch.long)], dim=1)
        wide_values = torch.cat([values, torch.randn(4, 3, 4) * 100], dim=1)  # junk under padding
        wide_summary, wide_states = encoder(wide_items, wide_values)
    torch.testing.assert_close(wide_summary, summary, atol=1e-5, rtol=0)
    torch.testing.assert_close(wide_states[:, :5], states, atol=1e-5, rtol=0)
    # order of tokens does not matter either (a set, no positions)
    perm = torch.tensor([3, 1, 0, 2, 4])
    with torch.no_grad():
        permuted, _ = encoder(items[:1, perm], values[:1, perm])
    torch.testing.assert_close(permuted, summary[:1], atol=1e-5, rtol=0)


def test_precomputed_value_embeddings_match_and_carry_gradients():
    encoder = LabEncoder(CONFIG).eval()
    items, values = _batch()
    embedded = encoder.value_embedding(values).detach().requires_grad_(True)
    summary, _ = encoder(items, values, value_embeddings=embedded)
    torch.testing.assert_close(summary, encoder(items, values)[0])
    summary[0].sum().backward()
    per_item = embedded.grad.abs().sum(-1)
    assert (per_item[0, :4] > 0).all() and per_item[0, 4] == 0  # attributable per real item only


def test_random_token_mask_counts():
    mask = torch.tensor([[True] * 4 + [False] * 4, [True] + [False] * 7, [True] * 8, [False] * 8])
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        masked = random_token_mask(mask, 0.75, g)
        assert not (masked & ~mask).any()
        assert masked.sum(1).tolist() == [3, 0, 6, 0]  # round(0.75 n), at least one token kept


def test_mae_predictions_ignore_masked_values_and_loss_is_masked_mse():
    torch.manual_seed(1)
    config = CONFIG
    mae = LabMAE(LabEncoder(config), config).eval()
    items, values = _batch()
    masked = random_token_mask(items > 0, config.mask_ratio, torch.Generator().manual_seed(3))
    out = mae(items, values, masked=masked)
    assert out.prediction.shape == values.shape and out.n_masked == int(masked.sum()) == 3 + 4
    expected = ((out.prediction - values) ** 2).mean(-1)[masked].mean()
    torch.testing.assert_close(out.loss, expected)

    changed = values.clone()
    changed[masked] += 50.0  # the encoder never sees masked values: same predictions, other loss
    changed[items == 0] -= 7.0  # nor padding
    out2 = mae(items, changed, masked=masked)
    torch.testing.assert_close(out2.prediction, out.prediction)
    assert out2.loss > out.loss + 100

    visible = (items > 0) & ~masked
    moved = values.clone()
    moved[visible] += 5.0  # visible values change predictions (they are the context)
    assert not torch.allclose(mae(items, moved, masked=masked).prediction[masked], out.prediction[masked])

    empty = mae(items[1:2], values[1:2])  # a patient without labs: nothing masked, zero loss
    assert empty.n_masked == 0 and float(empty.loss.detach()) == 0.0
