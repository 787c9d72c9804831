"""The training objective of the fusion model: label loss + the disentanglement terms.

Terms (weights in `LossConfig`, the run config's `train.loss`; each 0 turns it off):
- bce: masked binary cross-entropy of the labels, on the coalition of tokens the step kept.
- infonce: InfoNCE between the modalities' shared projections (MEDFuse's alignment).
- vclub: the vCLUB upper bound on I(specific; shared) per modality (MEDFuse's MI loss).
- consensus: `partner_alignment`; the shared token may only carry what two modalities agree on.
- decorrelation: `cross_correlation` of s_m and c_m; the specific token keeps out what c_m holds.
- shared_aux: BCE of the shared token alone, so whatever several modalities know is carried there.
- parsimony: squared gap between the logit with the specific tokens and the shared token alone
  (the latter held fixed): a specific token is used only for what the shared one cannot explain.

Why the last four exist is measured, not assumed: see benchmarks/results/faithfulness.md (the
route-accuracy pair across loss settings) and DESIGN.md, "Known trap".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch

from medfuse_core.models.baselines import SINGLE_VARIANTS, VARIANTS
from medfuse_core.models.disentangle import cross_correlation, info_nce, partner_alignment

TERMS: tuple[str, ...] = ("bce", "infonce", "vclub", "consensus", "decorrelation", "shared_aux", "parsimony")


@dataclass
class LossConfig:
    """Weights of the training objective and the dropout that makes coalitions in-distribution: training-only
    settings (the run config's `train.loss`; the checkpoint records them in its `train` section). Older
    checkpoints wrote them as `model.loss`; runtime/checkpoint.py `upgrade_config` moves them here."""

    infonce_weight: float = 0.1
    infonce_temperature: float = 0.1
    vclub_weight: float = 0.1
    consensus_weight: float = 0.0  # partner alignment of shared projections
    decorrelation_weight: float = 0.0  # cross-correlation of specific vs shared projections
    shared_aux_weight: float = 0.0  # label loss of the shared token alone
    parsimony_weight: float = 0.0  # specific tokens only for what the shared token cannot explain
    modality_dropout: float = 0.3  # chance a present modality is hidden for a training example (train/loop.py)
    token_dropout: float = 0.15  # chance a specific token is masked for a training example (train/loop.py)
    shared_token_dropout: float | None = None  # chance the shared token is masked (None: token_dropout)

    @classmethod
    def from_dict(cls, data: dict) -> "LossConfig":
        """The config of `data`; a key LossConfig does not have is an error naming it (never ignored)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"train.loss.{unknown[0]}: unknown setting; expected some of {sorted(known)}")
        return cls(**data)

    def term_weights(self) -> dict[str, float]:
        """The weight of every term of TERMS but the label loss (whose weight is 1), by term name."""
        return {"infonce": self.infonce_weight, "vclub": self.vclub_weight, "consensus": self.consensus_weight,
                "decorrelation": self.decorrelation_weight, "shared_aux": self.shared_aux_weight,
                "parsimony": self.parsimony_weight}


# every weight of the objective beyond the label loss: what a baseline trains without (`variant_loss`)
DISENTANGLEMENT_WEIGHTS: tuple[str, ...] = ("infonce_weight", "vclub_weight", "consensus_weight",
                                            "decorrelation_weight", "shared_aux_weight", "parsimony_weight")


def variant_loss(variant: str, loss: LossConfig) -> LossConfig:
    """The objective a model variant (models/baselines.py) really trains with; a copy when anything changes.

    A baseline has no disentanglement: its disentanglement weights are 0 (its `mi_estimators` are kept so the
    training loop runs unchanged, but nothing of theirs reaches its loss); a baseline without token fusion gets no
    token dropout ("no_mi" keeps it: it is the model without the disentanglement losses, nothing else); a
    single-modality model gets no modality dropout (hiding its only modality would only turn examples into
    bias-only ones). What this returns is what the checkpoint's `train.loss` records."""
    if variant not in VARIANTS:
        raise ValueError(f"model variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant == "medfuse_lens":
        return loss
    loss = copy.deepcopy(loss)
    loss.infonce_weight = loss.vclub_weight = loss.consensus_weight = 0.0
    loss.decorrelation_weight = loss.shared_aux_weight = loss.parsimony_weight = 0.0
    if variant != "no_mi":
        loss.token_dropout = 0.0
    if variant in SINGLE_VARIANTS:
        loss.modality_dropout = 0.0
    return loss


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE over known labels (NaN = unknown)."""
    known = ~torch.isnan(labels)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[known].float(), labels[known])


@dataclass
class ObjectiveValue:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # the unweighted value of every term in TERMS


def fusion_objective(model: torch.nn.Module, out, labels: torch.Tensor, config: LossConfig) -> ObjectiveValue:
    """The loss of one step from the model's output (`ModelOutput`) on the kept coalition."""
    specific, shared = out.specific.float(), out.shared.float()
    zero = out.logits.sum() * 0.0
    terms = {name: zero for name in TERMS}
    terms["bce"] = masked_bce(out.logits, labels)
    if config.infonce_weight:
        terms["infonce"] = info_nce(shared, out.present, config.infonce_temperature)
    if config.vclub_weight:
        terms["vclub"] = model.mi_estimators.upper_bound(specific, shared, out.present)
    if config.consensus_weight:
        terms["consensus"] = partner_alignment(shared, out.present)
    if config.decorrelation_weight:
        terms["decorrelation"] = cross_correlation(specific, shared, out.present)
    if config.shared_aux_weight or config.parsimony_weight:
        shared_only = torch.zeros_like(out.token_mask)
        shared_only[:, -1] = out.token_mask[:, -1]  # the shared token is the last one
        shared_logits = model.fusion(out.tokens, shared_only)
        terms["shared_aux"] = masked_bce(shared_logits, labels)
        terms["parsimony"] = (out.logits.float() - shared_logits.detach().float()).pow(2).mean()
    weights = config.term_weights()
    total = terms["bce"] + sum(weights[name] * terms[name] for name in TERMS[1:])
    return ObjectiveValue(total, terms)
