"""Group-level attribution: exact Shapley values of the fusion tokens, checked against analytic toys,
brute-force permutations, Captum, and the real tiny model on the small synthetic cohort."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from medfuse_core.explain import (
    MODALITY_PLAYER_NAMES,
    captum_shapley,
    feature_ablation,
    group_contributions,
    integrated_gradients_on_gates,
    shapley_from_coalition_values,
    token_contributions,
)
from medfuse_core.features.batch import collate
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import MODALITIES
from tests.model_fixtures import tiny_config

IMAGE, NOTES, LABS = MODALITIES.index("image"), MODALITIES.index("notes"), MODALITIES.index("labs")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CPU is shared with a training run: one thread here, the caller's setting restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------- the toy


class ToyFusion:
    """FusionHead call signature; logit_k = sum_i w_ki x_i + v_k x_0 x_4, x_i = token_i[0] * mask_i.

    Its Shapley values are w_ki c_i, plus half of v_k c_0 c_4 to each of tokens 0 and 4 (c_i = token_i[0],
    over the present tokens). Counts its calls and rows to check the one-batched-call promise."""

    def __init__(self, n_labels: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(n_labels, 5, generator=g, dtype=torch.float64)
        self.v = torch.randn(n_labels, generator=g, dtype=torch.float64)
        self.calls: list[int] = []

    def __call__(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.shape[0])
        x = tokens[..., 0].double() * token_mask.double()
        return (x @ self.w.T + (x[:, 0] * x[:, 4]).unsqueeze(1) * self.v).to(tokens.dtype)

    def shapley(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        c = tokens[..., 0].double() * token_mask.double()  # absent tokens: c = 0
        out = c.unsqueeze(1) * self.w.unsqueeze(0)  # (B, K, 5)
        half = 0.5 * (c[:, 0] * c[:, 4]).unsqueeze(1) * self.v
        out[:, :, 0] += half
        out[:, :, 4] += half
        return out


def _toy_inputs(b: int = 4, d: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, 5, d, generator=g) + 0.5
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[1, 2] = False  # a patient without notes-like token 2
    mask[2, 4] = False  # the interaction partner absent: no interaction credit to token 0 either
    mask[3] = False  # nothing present
    return tokens, mask


def test_toy_exact_values_match_the_analytic_shapley_values() -> None:
    toy = ToyFusion()
    tokens, mask = _toy_inputs()
    res = token_contributions(toy, tokens, mask)
    assert res.values.shape == (4, 3, 5) and res.token_names == TOKEN_NAMES
    torch.testing.assert_close(res.values.double(), toy.shapley(tokens, mask), atol=1e-6, rtol=0)
    assert toy.calls == [4 * 32]  # all coalitions of all patients in one call
    assert torch.all(res.values[1, :, 2] == 0) and torch.all(res.values[2, :, 4] == 0) and torch.all(res.values[3] == 0)
    assert res.completeness_gap().abs().max() < 1e-6


def test_chunked_evaluation_gives_the_same_values() -> None:
    toy = ToyFusion()
    tokens, mask = _toy_inputs()
    whole = token_contributions(toy, tokens, mask)
    toy.calls.clear()
    chunked = token_contributions(toy, tokens, mask, chunk_rows=64)
    assert toy.calls == [64, 64]
    torch.testing.assert_close(chunked.values, whole.values, atol=0, rtol=0)


def test_toy_captum_methods_on_the_same_game() -> None:
    toy = ToyFusion()
    tokens, mask = _toy_inputs()
    expected = toy.shapley(tokens, mask)
    shap = token_contributions(toy, tokens, mask, method="captum_shapley")
    torch.testing.assert_close(shap.values.double(), expected, atol=1e-5, rtol=0)
    # FeatureAblation is leave-one-out: w_i c_i, and the whole interaction to each of tokens 0 and 4
    abl = token_contributions(toy, tokens, mask, method="ablation")
    c = tokens[..., 0].double() * mask.double()
    loo = c.unsqueeze(1) * toy.w
    both = (c[:, 0] * c[:, 4]).unsqueeze(1) * toy.v
    loo[:, :, 0] += both
    loo[:, :, 4] += both
    torch.testing.assert_close(abl.values.double(), loo, atol=1e-5, rtol=0)
    # the toy is a polynomial in the gates, so IG along the straight path is its Shapley value
    ig = token_contributions(toy, tokens, mask, method="integrated_gradients")
    torch.testing.assert_close(ig.values.double(), expected, atol=1e-5, rtol=0)
    assert ig.convergence_delta.shape == (4, 3) and ig.convergence_delta.abs().max() < 1e-5


def test_combination_matches_brute_force_permutations() -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 5, 2
    values = torch.randn(2, 2**n, k, generator=g, dtype=torch.float64)
    present = torch.tensor([[True] * 5, [True, False, True, True, False]])
    phi = shapley_from_coalition_values(values, present)
    for b in range(2):
        players = [i for i in range(n) if present[b, i]]
        brute = torch.zeros(k, n, dtype=torch.float64)
        for order in itertools.permutations(players):
            coalition = 0
            for i in order:
                brute[:, i] += values[b, coalition | (1 << i)] - values[b, coalition]
                coalition |= 1 << i
        brute /= math.factorial(len(players))
        torch.testing.assert_close(phi[b], brute, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def tiny(small_cohort):
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    batch = collate(features)
    with torch.no_grad():
        out = model(batch)
    return model, batch, out, features


def _sub(tiny, rows):
    return collate([tiny[3][i] for i in rows])


def test_completeness_and_full_logit_on_the_tiny_model(tiny) -> None:
    model, batch, out, _ = tiny
    res = group_contributions(model, batch)
    assert res.values.shape == (32, len(model.labels), 5) and res.labels == model.labels
    assert res.values.dtype == torch.float32
    assert res.completeness_gap().abs().max() < 1e-5
    torch.testing.assert_close(res.full_logit, out.logits, atol=1e-5, rtol=0)
    # the empty coalition is the head's base value, the same for every patient
    torch.testing.assert_close(res.empty_logit, res.empty_logit[:1].expand_as(res.empty_logit), atol=1e-6, rtol=0)


def test_exact_agrees_with_captum_shapley_values(tiny) -> None:
    model, batch, _, _ = tiny
    rows = [0, 3, 5, 13]  # 3 modalities, all 4, 2, notes only
    sub = _sub(tiny, rows)
    exact = group_contributions(model, sub)
    captum = captum_shapley(model, sub, perturbations_per_eval=8)
    assert captum.labels == model.labels
    torch.testing.assert_close(captum.values, exact.values, atol=1e-4, rtol=0)
    one = captum_shapley(model, sub, label_index=4)
    assert one.values.shape == (4, 1, 5)
    torch.testing.assert_close(one.values[:, 0], exact.values[:, 4], atol=1e-4, rtol=0)


def test_absent_modalities_get_exactly_zero(tiny) -> None:
    model, batch, out, _ = tiny
    res = group_contributions(model, batch)
    no_image = ~batch.present[:, IMAGE]
    no_notes = ~batch.present[:, NOTES]
    assert no_image.sum() >= 5 and no_notes.sum() >= 3
    assert torch.all(res.values[no_image][..., IMAGE] == 0)
    assert torch.all(res.values[no_notes][..., NOTES] == 0)
    assert res.values[..., :4].permute(0, 2, 1)[batch.present].abs().amax(-1).min() > 0  # present: some label moves
    # forcing labs off for everyone (the shared token is then pooled over the rest)
    forced = batch.present.clone()
    forced[:, LABS] = False
    off = group_contributions(model, batch, present=forced)
    assert torch.all(off.values[..., LABS] == 0)
    assert off.completeness_gap().abs().max() < 1e-5


def test_absent_tokens_are_null_players_of_the_raw_game(tiny) -> None:
    """Masked and absent are the same input: without the S & present canonicalisation, the raw game
    over all 5 players already gives an absent token ~0 and the others the present-token game's values."""
    model, batch, out, _ = tiny
    rows = (~batch.present[:, IMAGE]).nonzero().flatten()[:4]
    tokens, mask = out.tokens[rows], out.token_mask[rows]
    coalitions = (torch.arange(32).unsqueeze(1) >> torch.arange(5)) & 1 == 1
    with_image = coalitions[:, IMAGE]
    masks = mask.unsqueeze(1) & coalitions  # (b, 32, 5)
    # the head's input for S and S | {image} is identical, mask included
    assert torch.equal(masks[:, with_image], masks[:, ~with_image])
    with torch.no_grad():
        raw = model.fusion(tokens.unsqueeze(1).expand(-1, 32, -1, -1).reshape(-1, 5, tokens.shape[-1]), masks.reshape(-1, 5))
    raw = raw.reshape(len(rows), 32, -1)
    phi_raw = shapley_from_coalition_values(raw, torch.ones(len(rows), 5, dtype=torch.bool))
    assert phi_raw[..., IMAGE].abs().max() < 1e-6
    exact = group_contributions(model, _sub(tiny, rows.tolist()))
    torch.testing.assert_close(phi_raw.float(), exact.values, atol=1e-5, rtol=0)


def test_shared_per_modality_game(tiny) -> None:
    model, batch, out, _ = tiny
    res = group_contributions(model, batch, shared_per_modality=True)
    assert res.values.shape == (32, len(model.labels), 8) and res.token_names == MODALITY_PLAYER_NAMES
    assert res.completeness_gap().abs().max() < 1e-5
    torch.testing.assert_close(res.full_logit, out.logits, atol=1e-5, rtol=0)
    five = group_contributions(model, batch)
    torch.testing.assert_close(res.empty_logit, five.empty_logit, atol=1e-6, rtol=0)
    absent = ~torch.cat([batch.present, batch.present], dim=1)  # (B, 8)
    assert torch.all(res.values.permute(0, 2, 1)[absent] == 0)
    # same value function: leaving one specific token out is the same input in both games
    sub = _sub(tiny, [3, 7])
    abl8 = feature_ablation(model, sub, shared_per_modality=True)
    abl5 = feature_ablation(model, sub)
    torch.testing.assert_close(abl8.values[..., :4], abl5.values[..., :4], atol=1e-5, rtol=0)


def test_integrated_gradients_reports_its_convergence_delta(tiny) -> None:
    model, batch, _, _ = tiny
    sub = _sub(tiny, [0, 3])
    ig = integrated_gradients_on_gates(model, sub, n_steps=32)
    assert ig.values.shape == (2, len(model.labels), 5) and ig.convergence_delta.shape == (2, len(model.labels))
    assert torch.isfinite(ig.values).all()
    # Captum's delta is the completeness error against the IG baseline (zeroed, visible tokens)
    torch.testing.assert_close(ig.completeness_gap(), ig.convergence_delta, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        group_contributions(model, sub, method="integrated_gradients", shared_per_modality=True)
    with pytest.raises(ValueError):
        group_contributions(model, sub, method="lime")


def test_training_mode_is_restored_and_results_are_deterministic(tiny) -> None:
    model, batch, _, _ = tiny
    sub = _sub(tiny, [1, 2])
    model.train()
    try:
        a = group_contributions(model, sub)
        assert model.training
        b = group_contributions(model, sub)
    finally:
        model.eval()
    torch.testing.assert_close(a.values, b.values, atol=0, rtol=0)
    assert set(a.for_patient(0)) == set(model.labels) and list(a.for_patient(0)[model.labels[0]]) == list(TOKEN_NAMES)


def test_additive_head_shapley_values_are_its_token_terms(small_cohort) -> None:
    """With the additive head a token's Shapley value is, by construction, its own term of the logit:
    the exact game, Captum's ShapleyValues and the head's `token_terms` all agree."""
    featurizer, features, _, _ = small_cohort
    config = tiny_config(featurizer)
    config.fusion.head = "additive"
    torch.manual_seed(1)
    model = MedFuseLens(config).eval()
    batch = collate(features)
    with torch.no_grad():
        out = model(batch)
        terms = model.fusion.token_terms(out.tokens, out.token_mask).transpose(1, 2)  # (B, K, 5)
    exact = group_contributions(model, batch)
    torch.testing.assert_close(exact.values, terms, atol=1e-5, rtol=0)
    torch.testing.assert_close(exact.empty_logit, model.fusion.bias.expand_as(exact.empty_logit), atol=1e-6, rtol=0)
    assert exact.completeness_gap().abs().max() < 1e-5
    assert torch.all(exact.values[~batch.present[:, IMAGE]][..., IMAGE] == 0)
    rows = [0, 3, 5]
    captum = captum_shapley(model, collate([features[i] for i in rows]))
    torch.testing.assert_close(captum.values, terms[rows], atol=1e-4, rtol=0)
