"""The objective's terms: each is on only when weighted, and the coalition terms read the right tokens."""

from __future__ import annotations

import pytest
import torch

from medfuse_core.features.batch import collate
from medfuse_core.models.model import MedFuseLens
from medfuse_core.train.objective import DISENTANGLEMENT_WEIGHTS, TERMS, LossConfig, fusion_objective, variant_loss
from tests.model_fixtures import tiny_config


def _setup(small_cohort, **weights):
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    batch = collate(features[:12])
    return model, batch, LossConfig(**weights)


def test_total_is_the_weighted_sum_of_the_terms(small_cohort) -> None:
    weights = {"infonce_weight": 0.3, "vclub_weight": 0.2, "consensus_weight": 2.0, "decorrelation_weight": 0.7,
               "shared_aux_weight": 0.5, "parsimony_weight": 0.1}
    model, batch, loss = _setup(small_cohort, **weights)
    out = model(batch)
    value = fusion_objective(model, out, batch.labels, loss)
    expected = value.terms["bce"] + sum(weights[f"{t}_weight"] * value.terms[t] for t in TERMS if t != "bce")
    assert torch.isclose(value.total, expected, rtol=1e-6)
    assert all(torch.isfinite(v) for v in value.terms.values())
    assert float(value.terms["consensus"]) > 0 and float(value.terms["parsimony"]) > 0


def test_unweighted_terms_are_not_computed(small_cohort) -> None:
    model, batch, loss = _setup(small_cohort, infonce_weight=0.0, vclub_weight=0.0)
    value = fusion_objective(model, model(batch), batch.labels, loss)
    assert {t: float(v) for t, v in value.terms.items() if t != "bce"} == {t: 0.0 for t in TERMS if t != "bce"}
    assert torch.isclose(value.total, value.terms["bce"])


def test_parsimony_vanishes_and_shared_aux_is_the_bce_when_only_the_shared_token_is_kept(small_cohort) -> None:
    model, batch, loss = _setup(small_cohort, shared_aux_weight=1.0, parsimony_weight=1.0)
    keep = torch.zeros(batch.size, 5, dtype=torch.bool)
    keep[:, 4] = True
    value = fusion_objective(model, model(batch, token_keep=keep), batch.labels, loss)
    assert float(value.terms["parsimony"]) < 1e-10
    assert torch.isclose(value.terms["shared_aux"], value.terms["bce"], rtol=1e-6)


def test_every_term_has_its_named_weight_and_the_baselines_train_without_them() -> None:
    loss = LossConfig(infonce_weight=1.0, vclub_weight=2.0, consensus_weight=3.0, decorrelation_weight=4.0,
                      shared_aux_weight=5.0, parsimony_weight=6.0, modality_dropout=0.3, token_dropout=0.2)
    weights = loss.term_weights()
    assert set(weights) == set(TERMS) - {"bce"}
    # each term reads its own field (distinct values: a swapped name would show)
    assert sorted(weights.values()) == sorted(getattr(loss, name) for name in DISENTANGLEMENT_WEIGHTS)
    assert weights["vclub"] == loss.vclub_weight and weights["parsimony"] == loss.parsimony_weight
    assert variant_loss("medfuse_lens", loss) is loss
    no_mi = variant_loss("no_mi", loss)
    assert set(no_mi.term_weights().values()) == {0.0}
    assert (no_mi.token_dropout, no_mi.modality_dropout) == (0.2, 0.3)  # only the disentanglement losses change
    late = variant_loss("late_fusion", loss)
    assert late.token_dropout == 0.0 and late.modality_dropout == 0.3
    single = variant_loss("single:image", loss)
    assert single.token_dropout == single.modality_dropout == 0.0
    assert loss.vclub_weight == 2.0  # the caller's config is left as it was
    with pytest.raises(ValueError, match="expected one of"):
        variant_loss("single:ecg", loss)
    with pytest.raises(ValueError, match="train.loss.vclub"):
        LossConfig.from_dict({"vclub": 0.1})
