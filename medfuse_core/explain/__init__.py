"""Explanations of MedFuse Lens predictions.

groups.py: group-level attribution, exact Shapley values of the fusion tokens (or of the 4 specific +
4 per-modality shared projections) per patient and label, with Captum cross-checks.
"""

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
