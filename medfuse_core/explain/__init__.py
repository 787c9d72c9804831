"""Explanations of MedFuse Lens predictions.

groups.py: group-level attribution, exact Shapley values of the fusion tokens (or of the 4 specific +
4 per-modality shared projections) per patient and label, with Captum cross-checks.
evidence.py: evidence maps per label with Captum (lab items, note sentences and tokens, vitals hours x
channels, image Grad-CAM / IG on the film's pixel grid).
api.py: `explain(record, predictor) -> Explanation`, everything for one patient, serialisable to JSON.
"""

from medfuse_core.explain.api import Explanation, LabelExplanation, explain
from medfuse_core.explain.evidence import EvidenceExplainer, LabelEvidence, evidence_maps
from medfuse_core.explain.groups import (
    METHODS,
    MODALITY_PLAYER_NAMES,
    GroupContributions,
    captum_shapley,
    feature_ablation,
    group_contributions,
    integrated_gradients_on_gates,
    modality_contributions,
    shapley_from_coalition_values,
    token_contributions,
)

__all__ = [
    "EvidenceExplainer",
    "Explanation",
    "LabelEvidence",
    "LabelExplanation",
    "evidence_maps",
    "explain",
    "METHODS",
    "MODALITY_PLAYER_NAMES",
    "GroupContributions",
    "captum_shapley",
    "feature_ablation",
    "group_contributions",
    "integrated_gradients_on_gates",
    "modality_contributions",
    "shapley_from_coalition_values",
    "token_contributions",
]
