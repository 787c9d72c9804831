"""The objective's terms: each is on only when weighted, and the coalition terms read the right tokens."""

from __future__ import annotations

import torch

from medfuse_core.features.batch import collate
from medfuse_core.models.model import MedFuseLens
from medfuse_core.train.objective import TERMS, fusion_objective
from tests.model_fixtures import tiny_config


def _setup(small_cohort, **weights):
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    config = tiny_config(featurizer)
    for name, value in weights.items():
        setattr(config.loss, name, value)
    model = MedFuseLens(config).eval()
    batch = collate(features[:12])
    return model, batch


def test_total_is_the_weighted_sum_of_the_terms(small_cohort) -> None:
    weights = {"infonce_weight": 0.3, "vclub_weight": 0.2, "consensus_weight": 2.0, "decorrelation_weight": 0.7,
               "shared_aux_weight": 0.5, "parsimony_weight": 0.1}
    model, batch = _setup(small_cohort, **weights)
    out = model(batch)
    value = fusion_objective(model, out, batch.labels, model.config.loss)
    expected = value.terms["bce"] + sum(weights[f"{t}_weight"] * value.terms[t] for t in TERMS if t != "bce")
    assert torch.isclose(value.total, expected, rtol=1e-6)
    assert all(torch.isfinite(v) for v in value.terms.values())
    assert float(value.terms["consensus"]) > 0 and float(value.terms["parsimony"]) > 0


def test_unweighted_terms_are_not_computed(small_cohort) -> None:
    model, batch = _setup(small_cohort, infonce_weight=0.0, vclub_weight=0.0)
    value = fusion_objective(model, model(batch), batch.labels, model.config.loss)
    assert {t: float(v) for t, v in value.terms.items() if t != "bce"} == {t: 0.0 for t in TERMS if t != "bce"}
    assert torch.isclose(value.total, value.terms["bce"])


def test_parsimony_vanishes_and_shared_aux_is_the_bce_when_only_the_shared_token_is_kept(small_cohort) -> None:
    model, batch = _setup(small_cohort, shared_aux_weight=1.0, parsimony_weight=1.0)
    keep = torch.zeros(batch.size, 5, dtype=torch.bool)
    keep[:, 4] = True
    value = fusion_objective(model, model(batch, token_keep=keep), batch.labels, model.config.loss)
    assert float(value.terms["parsimony"]) < 1e-10
    assert torch.isclose(value.terms["shared_aux"], value.terms["bce"], rtol=1e-6)
