"""What a prediction can be trusted for: the applicability-domain check, the modalities left out because
they are out of domain, the interval beside every probability, and the prediction's state.

States (issue 17, item 5), one per label and one for the patient:
- "insufficient data": nothing the model can use (no modality, or every one out of domain); no number;
- "out of domain": at least one modality was unlike the training data and was left out of the prediction
  (the prediction stands on the others, and says which were left out and why);
- "uncertain": the label's interval straddles its decision threshold (the decision could go either way);
- "above threshold" / "below threshold": the decision, with its interval on one side of the threshold.
A patient "needs review" when it is out of domain, has insufficient data, or is uncertain for any label.
Pure functions over arrays: the Predictor, explain, score and the app call them with what they computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medfuse_core.runtime.domain import UNAVAILABLE, DomainCheck
from medfuse_core.record import MODALITIES

INSUFFICIENT = "insufficient data"
OUT_OF_DOMAIN = "out of domain"
UNCERTAIN = "uncertain"
ABOVE = "above threshold"
BELOW = "below threshold"
PATIENT_STATES = (INSUFFICIENT, OUT_OF_DOMAIN, UNCERTAIN, "ok")  # the worklist's order: needs review first


def label_states(probabilities: np.ndarray, thresholds: np.ndarray, low: np.ndarray | None,
                 high: np.ndarray | None) -> list[str]:
    """Per label: UNCERTAIN when low < threshold <= high (the decision "p >= threshold" is not the same
    at both ends of the interval), else ABOVE / BELOW by the probability. Without intervals, no label
    is called uncertain (nothing was measured to say so)."""
    out = []
    for k, (p, t) in enumerate(zip(probabilities, thresholds)):
        if low is not None and high is not None and low[k] < t <= high[k]:
            out.append(UNCERTAIN)
        else:
            out.append(ABOVE if p >= t else BELOW)
    return out


def out_of_domain_reason(check: DomainCheck) -> str:
    """Plain words for what was left out and why, '' when nothing was."""
    if not check.flagged:
        return ""
    words = [{"image": "the chest film"}.get(m, f"the {m}") for m in check.flagged]
    names = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    one_thing = check.flagged == ["image"]  # "the labs", "the notes", "the vitals" are plural words
    return (f"{names[0].upper() + names[1:]} did not look like the data the model was trained on, so "
            f"{'it was' if one_thing else 'they were'} left out of this prediction.")


@dataclass
class PatientTrust:
    """One patient's trust information beside its prediction."""

    domain: DomainCheck
    left_out: list[str]  # modalities present but left out (out of domain)
    low: np.ndarray | None  # (K,) interval ends, None when the checkpoint has no intervals
    high: np.ndarray | None
    level: float | None
    states: list[str] = field(default_factory=list)  # per label
    interval_method: str = ""  # how the intervals were made, in words

    @property
    def status(self) -> str:
        if self.left_out:
            return OUT_OF_DOMAIN
        if UNCERTAIN in self.states:
            return UNCERTAIN
        return "ok"

    @property
    def needs_review(self) -> bool:
        return self.status != "ok"

    @property
    def reason(self) -> str:
        return out_of_domain_reason(self.domain) if self.left_out else ""

    def label_dict(self, k: int) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.states[k] if self.states else None}
        if self.low is not None and self.high is not None:
            out["interval"] = {"low": float(self.low[k]), "high": float(self.high[k]), "level": self.level}
        else:
            out["interval"] = None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "needs_review": self.needs_review, "domain": self.domain.to_dict(),
                "left_out": list(self.left_out), "reason": self.reason,
                "intervals": None if self.low is None else {"level": self.level, "method": self.interval_method}}


def patient_trust(probabilities: np.ndarray, thresholds: np.ndarray, check: DomainCheck | None, left_out: Sequence[str],
                  low: np.ndarray | None, high: np.ndarray | None, level: float | None,
                  interval_method: str = "") -> PatientTrust:
    states = label_states(probabilities, thresholds, low, high)
    return PatientTrust(check or UNAVAILABLE, list(left_out), low, high, level, states, interval_method)


def modalities_to_use(present: np.ndarray, checks: Sequence[DomainCheck], exclude: bool,
                      modalities: Sequence[str] = MODALITIES) -> tuple[np.ndarray, list[list[str]]]:
    """(used (N, M) bool, left out per patient): with `exclude`, every flagged modality is left out."""
    modalities = list(modalities)
    used = np.array(present, dtype=bool, copy=True)
    left_out: list[list[str]] = []
    for i, check in enumerate(checks):
        dropped = [m for m in modalities if m in check.flagged] if exclude else []
        for m in dropped:
            used[i, modalities.index(m)] = False
        left_out.append(dropped)
    return used, left_out
