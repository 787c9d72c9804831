"""Clinician-facing names and sentences shared by several pages and components (no maths, no torch).

Modality and fusion-token names come from the modality registry (medfuse_core/modalities.py), so a
modality is named the same way on every page and in every export.
"""

from __future__ import annotations

from medfuse_core.features import window
from medfuse_core.modalities import REGISTRY, SHARED_TOKEN, token_labels

# The clinician-facing names of the fusion tokens, in TOKEN_NAMES order.
TOKEN_LABELS: dict[str, str] = token_labels()
# fusion token name -> the modality it belongs to (the shared token: none)
TOKEN_MODALITY: dict[str, str] = {TOKEN_LABELS[s.token_name]: s.key for s in REGISTRY if s.token_name in TOKEN_LABELS}
TOKEN_KEYS: tuple[str, ...] = tuple(TOKEN_LABELS)
SHARED_KEY = SHARED_TOKEN

UNCERTAINTY_NAME = "modality-subset range"
UNCERTAINTY_HELP = ("Lowest and highest calibrated probability when the model sees only some of this "
                    "patient's modalities (every non-empty subset). A wide range means the prediction "
                    "hinges on one modality. It is not a confidence interval.")

ALL_OUT_OF_DOMAIN_MESSAGE = ("Insufficient data: every source this patient has was unlike the data the model was "
                             "trained on, so each was left out and nothing was left to predict from: no prediction.")
NO_DOMAIN_CHECK_MESSAGE = ("No applicability-domain check: this checkpoint has no domain file, so nothing says "
                           "whether this patient's data look like the data the model was trained on (no source is "
                           "called in or out of domain).")
NO_INTERVALS_MESSAGE = "No uncertainty interval: this checkpoint has none fitted."

NO_DATA_MESSAGE = ("No data: this patient has no labs, notes, vitals or image that the model can use (in the "
                   f"first {window.HOURS:g} h after the index time), so there is no prediction.")


def display_name(modality: str) -> str:
    """Short name ("X-ray")."""
    return REGISTRY[modality].display_name


def long_name(modality: str) -> str:
    """Name in running text ("chest X-ray")."""
    return REGISTRY[modality].long_name
