"""bf16 autocast: the code path CUDA training and inference take, run here on the CPU (CI has no GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfuse_core.models.model import MedFuseLens
from medfuse_core.runtime.precision import uses_bf16
from medfuse_core.train.loop import TrainConfig, predict_logits, train
from tests.model_fixtures import tiny_config


def test_policy_is_bf16_on_cuda_and_fp32_on_cpu_unless_asked() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not uses_bf16(cpu) and uses_bf16(cuda)
    assert uses_bf16(cpu, "bf16") and not uses_bf16(cuda, "fp32")
    with pytest.raises(ValueError, match="precision 'fp16'"):
        uses_bf16(cpu, "fp16")
    with pytest.raises(ValueError, match="train.precision 'half'"):
        TrainConfig(precision="half")


def test_bf16_forward_is_close_to_fp32_but_really_bf16(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    full = predict_logits(model, features[:16], precision="fp32")
    half = predict_logits(model, features[:16], precision="bf16")
    assert np.isfinite(half).all()
    gap = np.abs(full - half).max()
    assert 1e-5 < gap < 0.1  # not the fp32 path (bf16 keeps 8 bits of mantissa), yet the same model


def test_training_in_bf16_both_stages_learns(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(1)
    model = MedFuseLens(tiny_config(featurizer))
    config = TrainConfig(epochs=8, batch_size=8, lr=3e-3, patience=100, progress=False, seed=1, precision="bf16",
                         encoder_epochs=1, freeze_encoders=True)
    result = train(model, features[:24], features[24:], config, tmp_path)
    bce = [h.train_bce for h in result.history]
    assert all(np.isfinite(bce)) and bce[-1] < 0.8 * bce[0]
    assert all(np.isfinite(log.train_bce) for log in result.encoder_history)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 copy of the weights
