"""The training objective of the fusion model: label loss + the disentanglement terms.

Terms (weights in `LossConfig`; each 0 turns it off):
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

from dataclasses import dataclass

import torch

from medfuse_core.models.config import LossConfig
from medfuse_core.models.disentangle import cross_correlation, info_nce, partner_alignment

TERMS: tuple[str, ...] = ("bce", "infonce", "vclub", "consensus", "decorrelation", "shared_aux", "parsimony")


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
    # every term but bce is weighted by LossConfig.<term>_weight
    total = terms["bce"] + sum(getattr(config, f"{name}_weight") * terms[name] for name in TERMS[1:])
    return ObjectiveValue(total, terms)
