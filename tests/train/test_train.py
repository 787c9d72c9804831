"""Training does what it says: it fits, it decreases the loss, it resumes, and it reports honestly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medfuse_core.models.model import MedFuseLens
from medfuse_core.train.loop import TrainConfig, modality_dropout, predict_logits, train
from medfuse_core.train.metrics import auroc
from medfuse_core.train.objective import LossConfig
from tests.model_fixtures import tiny_config


# nothing but the label loss, no dropout of modalities or tokens: a pure test of capacity to fit
LABEL_LOSS_ONLY = LossConfig(infonce_weight=0.0, vclub_weight=0.0, modality_dropout=0.0, token_dropout=0.0)


def _plain(featurizer) -> MedFuseLens:
    """The tiny model without dropout (trained with LABEL_LOSS_ONLY)."""
    config = tiny_config(featurizer)
    config.labs.dropout = config.notes.dropout = config.vitals.dropout = config.fusion.dropout = 0.0
    return MedFuseLens(config)


def test_tiny_model_overfits_16_patients(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    model = _plain(featurizer)
    train_set = features[:16]
    config = TrainConfig(epochs=40, batch_size=16, lr=1e-2, patience=100, progress=False, seed=0, loss=LABEL_LOSS_ONLY)
    train(model, train_set, train_set, config, tmp_path)
    logits = predict_logits(model, train_set)
    labels = np.stack([f.labels for f in train_set])
    scores = [auroc(labels[:, k], logits[:, k]) for k in range(labels.shape[1]) if len(np.unique(labels[:, k])) == 2]
    assert len(scores) >= 5
    assert min(scores) == 1.0


def test_loss_decreases_and_run_folder_is_complete(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(1)
    model = MedFuseLens(tiny_config(featurizer))
    config = TrainConfig(epochs=8, batch_size=8, lr=3e-3, patience=100, progress=False, seed=1)
    result = train(model, features[:24], features[24:], config, tmp_path)
    bce = [h.train_bce for h in result.history]
    assert len(bce) == 8
    assert bce[-1] < 0.8 * bce[0]
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "trainer_state.json").is_file()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(8))


def test_resume_continues_where_it_stopped(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort

    def run(folder: Path, epochs: int) -> list[float]:
        torch.manual_seed(2)
        model = MedFuseLens(tiny_config(featurizer))
        config = TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=100, progress=False, seed=2)
        return [h.train_loss for h in train(model, features[:24], features[24:], config, folder).history]

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4)
    assert len(resumed) == 4
    np.testing.assert_allclose(resumed, straight, rtol=1e-4)


def test_modality_dropout_keeps_one_modality_per_patient() -> None:
    generator = torch.Generator().manual_seed(0)
    present = torch.ones(500, 4, dtype=torch.bool)
    present[:100, 1:] = False  # single-modality patients keep theirs
    kept = modality_dropout(present, 0.9, generator)
    assert bool((kept <= present).all())
    assert bool(kept.any(dim=1).all())
    assert bool(kept[:100, 0].all())
    assert 0.05 < float(kept[100:].float().mean()) < 0.4
