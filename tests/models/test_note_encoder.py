"""NoteEncoder: masked attention pooling over sentence embeddings."""

from __future__ import annotations

import pytest
import torch

from medfuse_core.features.batch import PatientFeatures, collate
from medfuse_core.models.config import NoteEncoderConfig
from medfuse_core.models.note_encoder import NoteEncoder

CONFIG = NoteEncoderConfig(embedding_dim=16, adapter_dim=12, output_dim=8, dropout=0.0)


@pytest.fixture
def encoder() -> NoteEncoder:
    torch.manual_seed(0)
    return NoteEncoder(CONFIG).eval()


def test_shapes_and_weights(encoder: NoteEncoder) -> None:
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out, attn = encoder(x, mask)
    assert out.shape == (3, 8) and attn.shape == (3, 5)
    torch.testing.assert_close(attn.sum(1), torch.ones(3))
    assert (attn[~mask] == 0).all() and (attn[mask] > 0).all()
    assert encoder.feature_dim == 8
    # one sentence: the output is that sentence's projection
    torch.testing.assert_close(out[2], encoder.project(x[2, :1])[0])


def test_padded_sentences_do_not_change_the_output(encoder: NoteEncoder) -> None:
    x = torch.randn(2, 3, 16)
    mask = torch.ones(2, 3, dtype=torch.bool)
    out, attn = encoder(x, mask)
    padded = torch.cat([x, torch.randn(2, 4, 16) * 100, torch.full((2, 1, 16), float("nan"))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    out_p, attn_p = encoder(padded, padded_mask)
    torch.testing.assert_close(out_p, out, atol=1e-6, rtol=0)
    torch.testing.assert_close(attn_p[:, :3], attn, atol=1e-6, rtol=0)
    assert (attn_p[:, 3:] == 0).all()


def test_all_masked_row_gives_zeros_and_finite_grads(encoder: NoteEncoder) -> None:
    x = torch.randn(2, 4, 16, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out, attn = encoder(x, mask)
    assert torch.equal(out[1], torch.zeros(8)) and torch.equal(attn[1], torch.zeros(4))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all() and x.grad[0, :2].abs().sum() > 0
    for p in encoder.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_runs_on_collated_batch_with_a_patient_without_notes(encoder: NoteEncoder) -> None:
    def patient(n_sentences: int) -> PatientFeatures:
        import numpy as np

        return PatientFeatures(
            patient_id="p", present=np.array([False, n_sentences > 0, False, False]),
            lab_items=np.zeros(0, np.int64), lab_values=np.zeros((0, 4), np.float32),
            note_embeddings=np.random.default_rng(n_sentences).normal(size=(n_sentences, 16)).astype(np.float32),
            vitals=np.zeros((2, 76), np.float32), image=np.zeros((1, 4, 4), np.float32), labels=np.zeros(2, np.float32),
        )

    batch = collate([patient(3), patient(0)])
    out, attn = encoder(batch.note_embeddings, batch.note_mask)
    assert out.shape == (2, 8) and torch.equal(out[1], torch.zeros(8))
    alone, _ = encoder(batch.note_embeddings[:1, :3], batch.note_mask[:1, :3])
    torch.testing.assert_close(out[:1], alone)


def test_wrong_embedding_dim_is_a_clear_error(encoder: NoteEncoder) -> None:
    with pytest.raises(ValueError, match="embedding_dim"):
        encoder(torch.randn(1, 2, 384), torch.ones(1, 2, dtype=torch.bool))
