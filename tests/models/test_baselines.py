"""The baselines: same contract as MedFuseLens, absent modalities really absent, trainable, reloadable."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfuse_core.features.batch import collate
from medfuse_core.models.baselines import VARIANTS, LateFusion, MedFuseLSTM, SingleModality, build_model
from medfuse_core.models.config import ModelConfig
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import MODALITIES
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.train.loop import TrainConfig, train
from medfuse_core.train.objective import variant_loss
from tests.model_fixtures import tiny_config

BASELINES = [v for v in VARIANTS if v != "medfuse_lens"]
SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(range(4), r)]


@pytest.fixture(autouse=True)
def _one_thread():
    """The CPU is shared with a training run: one thread while these tests run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(featurizer, variant: str, seed: int = 0):
    config = tiny_config(featurizer)
    config.variant = variant
    torch.manual_seed(seed)
    return build_model(config).eval()


def _present(n: int, subset) -> torch.Tensor:
    present = torch.zeros(n, 4, dtype=torch.bool)
    present[:, list(subset)] = True
    return present


def test_factory_picks_the_class_and_fixes_the_losses(small_cohort) -> None:
    featurizer = small_cohort[0]
    expected = {"medfuse_lens": MedFuseLens, "no_mi": MedFuseLens, "late_fusion": LateFusion,
                "medfuse_lstm": MedFuseLSTM, "single:notes": SingleModality}
    for variant, cls in expected.items():
        assert type(_model(featurizer, variant)) is cls
    ours, no_mi = _model(featurizer, "medfuse_lens"), _model(featurizer, "no_mi")
    loss = TrainConfig().loss
    assert loss.infonce_weight > 0 and loss.vclub_weight > 0
    no_mi_loss = variant_loss(no_mi.config.variant, loss)  # what train() trains the variant with
    assert no_mi_loss.infonce_weight == no_mi_loss.vclub_weight == 0.0
    assert no_mi_loss.token_dropout == variant_loss(ours.config.variant, loss).token_dropout  # only the MI losses change
    single = _model(featurizer, "single:image")
    assert variant_loss(single.config.variant, loss).modality_dropout == 0.0 and not hasattr(single, "lab_encoder")
    with pytest.raises(ValueError, match="expected one of"):
        _model(featurizer, "single:ecg")
    # the variant survives config.json
    config = ModelConfig.from_dict(json.loads(json.dumps(no_mi.config.to_dict())))
    assert config.variant == "no_mi" and variant_loss(config.variant, loss).vclub_weight == 0.0
    older = {k: v for k, v in ours.config.to_dict().items() if k != "variant"}  # a checkpoint from before variants
    assert ModelConfig.from_dict(older).variant == "medfuse_lens"


@pytest.mark.parametrize("variant", BASELINES)
def test_every_subset_gives_finite_logits_and_absent_inputs_change_nothing(small_cohort, variant: str) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer, variant)
    batch = collate(features[:6])
    assert len(SUBSETS) == 15
    with torch.no_grad():
        for subset in SUBSETS:
            present = _present(6, subset)
            out = model(batch, present=present)
            assert out.logits.shape == (6, len(model.labels)), subset
            assert torch.isfinite(out.logits).all(), (variant, subset)
            assert out.specific.shape == out.shared.shape == (6, 4, model.config.fusion.d_model)
            assert out.tokens.shape == (6, 5, model.config.fusion.d_model) and out.token_mask.shape == (6, 5)
            assert bool((out.present <= present).all())
        # hide labs and image, then scramble their inputs: nothing may move
        present = batch.present.clone()
        present[:, [MODALITIES.index("labs"), MODALITIES.index("image")]] = False
        before = model(batch, present=present).logits
        batch.image.normal_()
        batch.lab_values.normal_()
        batch.lab_items.random_(1, featurizer.vocabulary.size)
        after = model(batch, present=present).logits
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_single_modality_without_its_modality_gives_the_bias(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer, "single:vitals")
    batch = collate(features[:4])
    with torch.no_grad():
        out = model(batch, present=_present(4, [0, 1, 3]))  # everything but vitals
    torch.testing.assert_close(out.logits, model.classifier.bias.expand(4, -1))


def test_late_fusion_averages_only_the_present_modalities(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer, "late_fusion")
    with torch.no_grad():  # a non-zero empty logit, so "no modality" is told apart from a mean of zeros
        model.empty_logits.fill_(0.7)
    batch = collate(features[:4])
    with torch.no_grad():
        heads, _ = model.head_logits(model.modality_features(batch, torch.ones(4, 4, dtype=torch.bool) & batch.present))
        for subset in SUBSETS:
            present = _present(4, subset) & batch.present
            logits = model(batch, present=present).logits
            for row in range(4):
                used = present[row].nonzero().flatten().tolist()
                expected = heads[row, used].mean(0) if used else torch.full_like(logits[row], 0.7)
                torch.testing.assert_close(logits[row], expected)
        # an absent head's logit is not zero, so averaging it in (or dividing by 4) would show
        labs_only = model(batch, present=_present(4, [0]) & batch.present).logits
        assert not torch.allclose(heads[:, 1:], torch.zeros_like(heads[:, 1:]))
        rows = batch.present[:, 0]
        torch.testing.assert_close(labs_only[rows], heads[rows, 0])


def test_medfuse_lstm_skips_absent_modalities(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer, "medfuse_lstm")
    batch = collate(features[:6])
    vitals = MODALITIES.index("vitals")
    assert bool(batch.present[:, vitals].all())
    present = _present(6, [vitals])
    with torch.no_grad():
        logits = model(batch, present=present).logits
        step = model.project["vitals"](model.modality_features(batch, present)["vitals"])
        _, (h, _) = model.lstm(step.unsqueeze(1))  # a one-step sequence, nothing padded in
        torch.testing.assert_close(logits, model.classifier(h[-1]))
        # two modalities: the LSTM over exactly those two steps, in MODALITIES order
        pair = _present(6, [0, vitals]) & batch.present
        rows = pair.sum(1) == 2
        features_ = model.modality_features(batch, pair)
        steps = torch.stack([model.project["labs"](features_["labs"]), model.project["vitals"](features_["vitals"])], dim=1)
        _, (h2, _) = model.lstm(steps[rows])
        torch.testing.assert_close(model(batch, present=pair).logits[rows], model.classifier(h2[-1]))
        # no modality: the learned empty logits
        empty = model(batch, present=torch.zeros(6, 4, dtype=torch.bool)).logits
        torch.testing.assert_close(empty, model.empty_logits.expand(6, -1))


@pytest.mark.parametrize("variant", BASELINES)
def test_trains_three_epochs_with_falling_bce_and_reloads_identically(small_cohort, tmp_path: Path, variant: str) -> None:
    featurizer, features, _, _ = small_cohort
    model = _model(featurizer, variant, seed=3)
    config = TrainConfig(epochs=3, batch_size=8, lr=3e-3, patience=100, progress=False, seed=3)
    result = train(model, features[:24], features[24:], config, tmp_path)
    bce = [h.train_bce for h in result.history]
    assert len(bce) == 3 and all(np.isfinite(bce))
    assert bce[0] > bce[1] > bce[2], (variant, bce)
    assert all(h.train_loss == pytest.approx(h.train_bce, rel=1e-5) for h in result.history)  # MI weights are 0
    # checkpoint round trip through the factory, from the config as config.json holds it
    config_json = json.loads(json.dumps(model.config.to_dict()))
    torch.manual_seed(123)  # a different init: everything must come from the file
    reloaded = build_model(ModelConfig.from_dict(config_json)).eval()
    assert type(reloaded) is type(model)
    ckpt.load_weights(reloaded, tmp_path)
    model.eval()
    batch = collate(features[24:])
    with torch.no_grad():
        np.testing.assert_array_equal(model(batch).logits.numpy(), reloaded(batch).logits.numpy())
