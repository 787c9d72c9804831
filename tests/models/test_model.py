"""The assembled model: any subset of modalities, absent inputs ignored, checkpoint round trip."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from medfuse_core.features.batch import collate
from medfuse_core.models.config import ModelConfig
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import MODALITIES
from medfuse_core.runtime import checkpoint as ckpt
from tests.model_fixtures import tiny_config


def _model(featurizer) -> MedFuseLens:
    torch.manual_seed(0)
    return MedFuseLens(tiny_config(featurizer)).eval()


def test_every_non_empty_modality_subset_gives_finite_outputs(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer)
    batch = collate(features[:8])
    subsets = [s for r in range(1, 5) for s in itertools.combinations(range(4), r)]
    assert len(subsets) == 15
    with torch.no_grad():
        for subset in subsets:
            present = torch.zeros(8, 4, dtype=torch.bool)
            present[:, list(subset)] = True
            out = model(batch, present=present)
            assert out.logits.shape == (8, len(model.labels))
            assert torch.isfinite(out.logits).all(), subset
            used = out.present.any(dim=0).nonzero().flatten().tolist()
            assert set(used) <= set(subset)


def test_absent_modality_inputs_cannot_change_the_output(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer)
    batch = collate(features[:6])
    present = batch.present.clone()
    present[:, MODALITIES.index("image")] = False
    present[:, MODALITIES.index("labs")] = False
    with torch.no_grad():
        before = model(batch, present=present).logits
        batch.image.normal_()
        batch.lab_values.normal_()
        after = model(batch, present=present).logits
    torch.testing.assert_close(before, after)


def test_checkpoint_round_trip_gives_identical_outputs(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer)
    ckpt.save_weights(model, tmp_path)
    config = model.config
    torch.manual_seed(123)  # different init: everything must come from the file
    reloaded = MedFuseLens(config).eval()
    ckpt.load_weights(reloaded, tmp_path)
    batch = collate(features[:8])
    with torch.no_grad():
        np.testing.assert_array_equal(model(batch).logits.numpy(), reloaded(batch).logits.numpy())
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_additive_head_round_trips_and_old_configs_keep_the_transformer(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    config = tiny_config(featurizer)
    config.fusion.head = "additive"
    torch.manual_seed(0)
    model = MedFuseLens(config).eval()
    ckpt.save_weights(model, tmp_path)
    reloaded = MedFuseLens(ModelConfig.from_dict(config.to_dict())).eval()
    ckpt.load_weights(reloaded, tmp_path)
    batch = collate(features[:8])
    with torch.no_grad():
        np.testing.assert_array_equal(model(batch).logits.numpy(), reloaded(batch).logits.numpy())
    # a config.json written before the head was configurable has no "head": the transformer
    old = config.to_dict()
    del old["fusion"]["head"]
    assert ModelConfig.from_dict(old).fusion.head == "transformer"
    bad = config.to_dict()
    bad["fusion"]["head"] = "attention"
    with pytest.raises(ValueError, match="fusion.head 'attention'"):
        MedFuseLens(ModelConfig.from_dict(bad))
