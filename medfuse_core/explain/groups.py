"""Group-level attribution: exact Shapley values of the fusion tokens, per patient and label.

The game
--------
Players are the fusion tokens ``TOKEN_NAMES`` = [specific:labs, specific:notes, specific:vitals,
specific:image, shared]. The value of a coalition S for patient b and label k is the fusion head's
logit with every token outside S masked::

    v_bk(S) = fusion(tokens_b, token_mask_b & S)[k]

so v(all) is the model's logit (``full_logit``) and v(empty) the head's base value (``empty_logit``).
A token that is absent for a patient (``token_mask`` False) is masked whether or not it is in S, so
v(S | {i}) and v(S) are the same input: its Shapley value is exactly 0 and the other tokens get the
Shapley values of the game over the present tokens alone (the Shapley values of a game with a null
player are those of the game without it). The code makes "the same input" literal: each coalition's
value is read from the entry of its effective coalition S & present, so the marginal contributions of
an absent token are exact zeros, not rounding noise.

Exact values (``method="exact"``) evaluate all 2^n coalitions of all patients in ONE batched call of
the fusion head (rows = patients x coalitions) and combine the logits in float64 with the weights
|S|! (n - |S| - 1)! / n!, which gives completeness ``values.sum(-1) == full_logit - empty_logit`` to
float32 rounding.

Finer game (``shared_per_modality=True``, 8 players): the 4 specific tokens s_m and the 4 per-modality
shared projections c_m. For a coalition S (specific players S_s, shared players S_c, P the present
modalities)::

    v(S) = fusion([s_m visible iff m in S_s & P] + [shared token = mean of c_m over m in S_c & P,
                                                     visible iff S_c & P is not empty])[k]

With every player in S this is exactly the model (the shared token is the mean over the present
modalities, as in ``build_tokens``), and with none it is the same base value, so completeness holds
against the same full and empty logits. The shared token is a mean, not a sum, of the c_m, so the four
shared players' values do not add up to the 5-player game's "shared" value in general.

Cross-checks with Captum on the same value function (``captum_shapley``, ``feature_ablation``) use a
float "gate" input (B, n), 1 = player kept, baseline 0, one feature-mask group per player; the forward
function thresholds the gates (they are exactly 0/1 for these methods). ``integrated_gradients_on_gates``
is a continuous relaxation: the token vectors are multiplied by the gates and stay visible
(mask = present), so its baseline is "all tokens zero but visible", not the masked base value; it
reports Captum's convergence delta.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.record import MODALITIES

FusionFn = Callable[[Tensor, Tensor], Tensor]  # tokens (N, 5, d), token_mask (N, 5) -> logits (N, K)

MODALITY_PLAYER_NAMES: tuple[str, ...] = tuple(f"specific:{m}" for m in MODALITIES) + tuple(f"shared:{m}" for m in MODALITIES)
METHODS = ("exact", "captum_shapley", "ablation", "integrated_gradients")


@dataclass
class GroupContributions:
    """Per patient and label contributions of each player (token) to the logit.

    values (B, K, n): contribution of each player; full_logit (B, K): the model's logit; empty_logit
    (B, K): the reference (every token masked; for integrated gradients, the all-zero-gates baseline).
    For "exact" and "captum_shapley", values.sum(-1) == full_logit - empty_logit. "ablation" values are
    leave-one-out differences full - v(all but i), which do not add up in general.
    """

    values: Tensor
    full_logit: Tensor
    empty_logit: Tensor
    token_names: tuple[str, ...]
    labels: list[str]
    method: str = "exact"
    present: Tensor | None = None  # (B, n) bool: players present for the patient
    convergence_delta: Tensor | None = None  # (B, K), integrated gradients only

    def completeness_gap(self) -> Tensor:
        """values.sum(-1) - (full_logit - empty_logit), (B, K); ~0 for Shapley methods."""
        return self.values.sum(-1) - (self.full_logit - self.empty_logit)

    def for_patient(self, index: int) -> dict[str, dict[str, float]]:
        """{label: {player: value}} for one patient of the batch."""
        rows = self.values[index].tolist()
        return {label: dict(zip(self.token_names, row)) for label, row in zip(self.labels, rows)}


# ----------------------------------------------------------------------------------------- games


class _TokenGame:
    """The fusion tokens as players (5 in the built-in model); built from tensors only so Captum can
    expand them row-wise."""

    def __init__(self, fusion_fn: FusionFn, tokens: Tensor, token_mask: Tensor, names: Sequence[str] | None = None):
        self.fusion_fn, self.tokens, self.token_mask = fusion_fn, tokens, token_mask.bool()
        self.n_players = int(tokens.shape[1])
        self.names = tuple(names) if names is not None else _default_token_names(self.n_players)

    @property
    def present(self) -> Tensor:
        return self.token_mask

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.tokens, self.token_mask)

    def evaluate(self, keep: Tensor) -> Tensor:
        """keep (B, C, 5) bool -> logits (B, C, K), all B*C rows in one fusion call."""
        b, c, n = keep.shape
        d = self.tokens.shape[-1]
        tokens = self.tokens.unsqueeze(1).expand(b, c, n, d).reshape(b * c, n, d)
        mask = (self.token_mask.unsqueeze(1) & keep).reshape(b * c, n)
        return self.fusion_fn(tokens, mask).reshape(b, c, -1)


class _ModalityGame:
    """8 players: specific s_m (0..3) and shared c_m (4..7); the shared token is the mean of the kept c_m."""

    def __init__(self, fusion_fn: FusionFn, specific: Tensor, shared: Tensor, present: Tensor,
                 names: Sequence[str] | None = None):
        self.fusion_fn, self.specific, self.shared, self.modality_present = fusion_fn, specific, shared, present.bool()
        self.n_players = 2 * int(specific.shape[1])
        self.names = tuple(names) if names is not None else (
            MODALITY_PLAYER_NAMES if self.n_players == len(MODALITY_PLAYER_NAMES) else
            tuple(f"specific:{i}" for i in range(self.n_players // 2)) + tuple(f"shared:{i}" for i in range(self.n_players // 2)))

    @property
    def present(self) -> Tensor:
        return torch.cat([self.modality_present, self.modality_present], dim=1)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.specific, self.shared, self.modality_present)

    def evaluate(self, keep: Tensor) -> Tensor:
        b, c, _ = keep.shape
        m = self.n_players // 2
        d = self.specific.shape[-1]
        present = self.modality_present.unsqueeze(1)
        spec_keep = keep[..., :m] & present  # (B, C, 4)
        shared_keep = keep[..., m:] & present
        weights = shared_keep.to(self.shared.dtype)
        pooled = torch.einsum("bcm,bmd->bcd", weights, self.shared) / weights.sum(-1, keepdim=True).clamp(min=1.0)
        tokens = torch.cat([self.specific.unsqueeze(1).expand(b, c, m, d), pooled.unsqueeze(2)], dim=2)
        mask = torch.cat([spec_keep, shared_keep.any(-1, keepdim=True)], dim=-1)
        return self.fusion_fn(tokens.reshape(b * c, m + 1, d), mask.reshape(b * c, m + 1)).reshape(b, c, -1)


# ------------------------------------------------------------------------------- exact Shapley


def coalition_matrix(n_players: int, device: torch.device | str | None = None) -> Tensor:
    """(2^n, n) bool: row c holds coalition c, player i in it iff bit i of c is set."""
    index = torch.arange(2**n_players, device=device)
    return (index.unsqueeze(1) >> torch.arange(n_players, device=device)) & 1 == 1


@lru_cache(maxsize=None)
def _marginal_tables(n_players: int) -> tuple[Tensor, Tensor, Tensor]:
    """For every player i, the 2^(n-1) coalitions S without i, S | {i}, and the weights
    |S|! (n - |S| - 1)! / n! (float64)."""
    without, with_, weights = [], [], []
    for i in range(n_players):
        s = [c for c in range(2**n_players) if not (c >> i) & 1]
        without.append(s)
        with_.append([c | (1 << i) for c in s])
        weights.append([math.factorial(bin(c).count("1")) * math.factorial(n_players - bin(c).count("1") - 1) / math.factorial(n_players) for c in s])
    return torch.tensor(without), torch.tensor(with_), torch.tensor(weights, dtype=torch.float64)


def shapley_from_coalition_values(values: Tensor, present: Tensor) -> Tensor:
    """Exact Shapley values from all coalition values.

    values (B, 2^n, K): v(S) for coalition index S (bit i = player i); present (B, n) bool. Each
    coalition's value is replaced by that of S & present (absent players are null, exactly), the
    marginal contributions are formed and weighted in float64. Returns (B, K, n) float64.
    """
    b, c, k = values.shape
    n = present.shape[1]
    if c != 2**n:
        raise ValueError(f"expected 2^{n} = {2**n} coalition values, got {c}")
    bits = (present.long() << torch.arange(n, device=present.device)).sum(1)  # (B,)
    effective = torch.arange(c, device=values.device).unsqueeze(0) & bits.unsqueeze(1)  # (B, C)
    v = values.to(torch.float64).gather(1, effective.unsqueeze(-1).expand(b, c, k))
    without, with_, weights = (t.to(values.device) for t in _marginal_tables(n))
    marginal = v[:, with_] - v[:, without]  # (B, n, 2^(n-1), K)
    return torch.einsum("bnsk,ns->bkn", marginal, weights)


def _exact(game: _TokenGame | _ModalityGame, labels: Sequence[str] | None, chunk_rows: int | None) -> GroupContributions:
    present = game.present
    b, n = present.shape
    coalitions = coalition_matrix(n, device=present.device)  # (C, n)
    keep = coalitions.unsqueeze(0).expand(b, -1, -1)
    if chunk_rows is None or b * len(coalitions) <= chunk_rows:
        logits = game.evaluate(keep)  # one batched call: B * 2^n rows
    else:  # memory bound for very large batches only
        per = max(1, chunk_rows // len(coalitions))
        parts = [_sub_game(game, slice(i, i + per)).evaluate(keep[i : i + per]) for i in range(0, b, per)]
        logits = torch.cat(parts, dim=0)
    values = shapley_from_coalition_values(logits, present)
    full, empty = logits[:, -1], logits[:, 0]
    return GroupContributions(values.to(full.dtype), full, empty, game.names, _label_names(labels, full.shape[1]), "exact", present)


def _sub_game(game: _TokenGame | _ModalityGame, rows: slice) -> _TokenGame | _ModalityGame:
    return type(game)(game.fusion_fn, *(t[rows] for t in game.tensors()), names=game.names)


def _default_token_names(n_tokens: int) -> tuple[str, ...]:
    """The built-in model's token names when there are as many tokens, else positional names."""
    if n_tokens == len(TOKEN_NAMES):
        return TOKEN_NAMES
    return tuple(f"specific:{i}" for i in range(n_tokens - 1)) + ("shared",)


def _label_names(labels: Sequence[str] | None, k: int) -> list[str]:
    if labels is None:
        return [f"label_{i}" for i in range(k)]
    if len(labels) != k:
        raise ValueError(f"{len(labels)} label names for {k} logits")
    return list(labels)


# ----------------------------------------------------------------------------------- Captum


def _label_indices(label_index: int | Sequence[int] | None, k: int) -> list[int]:
    if label_index is None:
        return list(range(k))
    if isinstance(label_index, int):
        return [label_index]
    return [int(i) for i in label_index]


def _gate_forward(game_type: type, fusion_fn: FusionFn) -> Callable[..., Tensor]:
    """Captum forward: gates (N, n) float, thresholded (1 = kept), + the game's tensors -> logits (N, K)."""

    def forward(gates: Tensor, *tensors: Tensor) -> Tensor:
        return game_type(fusion_fn, *tensors).evaluate((gates > 0.5).unsqueeze(1))[:, 0]

    return forward


def _perturbation(method: str, game: _TokenGame | _ModalityGame, labels: Sequence[str] | None,
                  label_index: int | Sequence[int] | None, perturbations_per_eval: int) -> GroupContributions:
    """Captum ShapleyValues or FeatureAblation over player gates, all selected labels in one call
    (the batch is repeated once per label, with one target per row)."""
    from captum.attr import FeatureAblation, ShapleyValues

    present = game.present
    b, n = present.shape
    with torch.no_grad():
        ends = game.evaluate(torch.stack([torch.zeros(b, n, dtype=torch.bool), torch.ones(b, n, dtype=torch.bool)], 1).to(present.device))
    k_all = ends.shape[-1]
    chosen = _label_indices(label_index, k_all)
    reps = len(chosen)
    tensors = tuple(t.repeat_interleave(reps, dim=0) for t in game.tensors())
    gates = torch.ones(b * reps, n, dtype=torch.float32, device=present.device)
    feature_mask = torch.arange(n, device=present.device).unsqueeze(0)
    target = chosen * b
    algorithm = (ShapleyValues if method == "captum_shapley" else FeatureAblation)(_gate_forward(type(game), game.fusion_fn))
    with torch.no_grad():
        attr = algorithm.attribute(gates, baselines=0.0, target=target, additional_forward_args=tensors,
                                   feature_mask=feature_mask, perturbations_per_eval=perturbations_per_eval)
    values = attr.reshape(b, reps, n).to(ends.dtype)
    names = _label_names(labels, k_all)
    return GroupContributions(values, ends[:, 1, chosen], ends[:, 0, chosen], game.names, [names[i] for i in chosen], method, present)


def _integrated_gradients(fusion_fn: FusionFn, tokens: Tensor, token_mask: Tensor, labels: Sequence[str] | None,
                          label_index: int | Sequence[int] | None, n_steps: int, internal_batch_size: int | None,
                          names: Sequence[str]) -> GroupContributions:
    from captum.attr import IntegratedGradients

    b, n = token_mask.shape

    def forward(gates: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        return fusion_fn(tokens * gates.unsqueeze(-1), token_mask)

    with torch.no_grad():
        full = forward(torch.ones(b, n, dtype=tokens.dtype), tokens, token_mask)
        base = forward(torch.zeros(b, n, dtype=tokens.dtype), tokens, token_mask)
    chosen = _label_indices(label_index, full.shape[1])
    reps = len(chosen)
    gates = torch.ones(b * reps, n, dtype=tokens.dtype, device=tokens.device)
    args = (tokens.repeat_interleave(reps, 0), token_mask.repeat_interleave(reps, 0))
    with torch.enable_grad():
        attr, delta = IntegratedGradients(forward).attribute(
            gates, baselines=0.0, target=chosen * b, additional_forward_args=args, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True)
    names = _label_names(labels, full.shape[1])
    return GroupContributions(attr.detach().reshape(b, reps, n).to(full.dtype), full[:, chosen], base[:, chosen], tuple(names),
                              [names[i] for i in chosen], "integrated_gradients", token_mask.bool(),
                              delta.detach().reshape(b, reps).to(full.dtype))


# ------------------------------------------------------------------------------ entry points


def token_contributions(fusion_fn: FusionFn, tokens: Tensor, token_mask: Tensor, *, method: str = "exact",
                        labels: Sequence[str] | None = None, label_index: int | Sequence[int] | None = None,
                        perturbations_per_eval: int = 1, n_steps: int = 50, internal_batch_size: int | None = None,
                        chunk_rows: int | None = None, token_names: Sequence[str] | None = None) -> GroupContributions:
    """The core: contributions of the 5 fusion tokens from precomputed tokens (B, 5, d) and mask (B, 5).

    ``fusion_fn`` is anything with the ``FusionHead.forward`` signature (tokens, token_mask) -> (N, K).
    ``label_index`` restricts the Captum methods to some labels (exact always gives all of them).
    """
    _check_method(method)
    game = _TokenGame(fusion_fn, tokens, token_mask, token_names)
    if method == "exact":
        with torch.no_grad():
            return _exact(game, labels, chunk_rows)
    if method == "integrated_gradients":
        return _integrated_gradients(fusion_fn, tokens, token_mask.bool(), labels, label_index, n_steps, internal_batch_size,
                                     game.names)
    return _perturbation(method, game, labels, label_index, perturbations_per_eval)


def modality_contributions(fusion_fn: FusionFn, specific: Tensor, shared: Tensor, present: Tensor, *, method: str = "exact",
                           labels: Sequence[str] | None = None, label_index: int | Sequence[int] | None = None,
                           perturbations_per_eval: int = 1, chunk_rows: int | None = None) -> GroupContributions:
    """The 8-player game (4 specific + 4 per-modality shared projections); see the module docstring."""
    _check_method(method)
    if method == "integrated_gradients":
        raise ValueError("integrated_gradients is defined on the 5 token gates only (shared_per_modality=False)")
    game = _ModalityGame(fusion_fn, specific, shared, present)
    if method == "exact":
        with torch.no_grad():
            return _exact(game, labels, chunk_rows)
    return _perturbation(method, game, labels, label_index, perturbations_per_eval)


def group_contributions(model, batch, *, method: str = "exact", shared_per_modality: bool = False,
                        present: Tensor | None = None, label_index: int | Sequence[int] | None = None,
                        **options) -> GroupContributions:
    """Per patient and label group contributions of a ``MedFuseLens`` (any module whose forward gives a
    ``ModelOutput`` and which has ``.fusion`` and ``.labels``).

    method: "exact" (all 2^n coalitions, one batched fusion call), "captum_shapley" (Captum
    ShapleyValues, same game), "ablation" (Captum FeatureAblation: leave-one-out), or
    "integrated_gradients" (Captum IG on multiplicative token gates; 5 tokens only).
    shared_per_modality: the 8-player game instead of the 5 tokens. present: (B, 4) modality override
    (as in ``model.forward``). options: perturbations_per_eval, n_steps, internal_batch_size, chunk_rows.
    """
    _check_method(method)
    with eval_mode(model):  # deterministic model; reference-counted across threads (concurrency.py)
        with torch.no_grad():
            out = model(batch, present=present)
        labels = getattr(model, "labels", None)
        if shared_per_modality:
            return modality_contributions(model.fusion, out.specific, out.shared, out.present, method=method,
                                          labels=labels, label_index=label_index, **options)
        return token_contributions(model.fusion, out.tokens, out.token_mask, method=method, labels=labels,
                                   label_index=label_index, token_names=getattr(model, "token_names", None), **options)


def captum_shapley(model, batch, label_index: int | Sequence[int] | None = None, **options) -> GroupContributions:
    """Captum ``ShapleyValues`` (all 5! orderings) on the token gates; same game as "exact"."""
    return group_contributions(model, batch, method="captum_shapley", label_index=label_index, **options)


def feature_ablation(model, batch, label_index: int | Sequence[int] | None = None, **options) -> GroupContributions:
    """Captum ``FeatureAblation`` on the token gates: values[i] = v(all) - v(all but i)."""
    return group_contributions(model, batch, method="ablation", label_index=label_index, **options)


def integrated_gradients_on_gates(model, batch, label_index: int | Sequence[int] | None = None, **options) -> GroupContributions:
    """Captum ``IntegratedGradients`` on gates that multiply the token vectors (mask = present),
    baseline gates 0; ``convergence_delta`` (B, K) is Captum's completeness error."""
    return group_contributions(model, batch, method="integrated_gradients", label_index=label_index, **options)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
