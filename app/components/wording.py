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

NO_DATA_MESSAGE = ("No data: this patient has no labs, notes, vitals or image that the model can use (in the "
                   f"first {window.HOURS:g} h after the index time), so there is no prediction.")


def display_name(modality: str) -> str:
    """Short name ("X-ray")."""
    return REGISTRY[modality].display_name


def long_name(modality: str) -> str:
    """Name in running text ("chest X-ray")."""
    return REGISTRY[modality].long_name
