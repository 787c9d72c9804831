"""Route accuracy: do the group contributions credit the representation that really carries a disease?

Scored against the synthetic cohort's planted routes (`sources/synth/diseases.py`), always as a pair
because the two pull against each other (DESIGN.md, "Known trap"):

- single-route: among true positives of a single-route disease whose route modality is present,
  the share where the largest contribution is that modality's specific token;
- shared-route: among true positives of a shared-route disease with at least two of its route
  modalities present, the share where the shared token holds at least half of the total absolute
  contribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medfuse_core.models.fusion import SHARED_TOKEN
from medfuse_core.record import MODALITIES
from medfuse_core.sources.synth.diseases import DISEASES


@dataclass
class RouteAccuracy:
    single: float  # NaN when no case qualifies
    shared: float
    n_single: int
    n_shared: int
    per_disease: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> {accuracy, n}

    def to_dict(self) -> dict:
        return {"single_route": self.single, "shared_route": self.shared, "n_single": self.n_single,
                "n_shared": self.n_shared, "per_disease": self.per_disease}


def route_accuracy(values: np.ndarray, labels: np.ndarray, positive: np.ndarray, present: np.ndarray,
                   label_names: list[str]) -> RouteAccuracy:
    """values (B, K, 5) token contributions; labels (B, K) 0/1 (NaN unknown); positive (B, K) the
    model's decisions; present (B, 4) modalities. Labels without a planted route (mortality) are skipped."""
    values, labels, positive, present = map(np.asarray, (values, labels, positive, present))
    hits = {"single": 0, "shared": 0}
    counts = {"single": 0, "shared": 0}
    per_disease: dict[str, dict[str, float]] = {}
    by_name = {d.name: d for d in DISEASES}
    for k, name in enumerate(label_names):
        disease = by_name.get(name)
        if disease is None:
            continue
        route_columns = [MODALITIES.index(m) for m in disease.modalities]
        true_positive = (labels[:, k] == 1) & positive[:, k].astype(bool)
        if disease.single_route:
            eligible = true_positive & present[:, route_columns[0]].astype(bool)
            correct = np.argmax(values[:, k, :], axis=1) == route_columns[0]
            kind = "single"
        else:
            eligible = true_positive & (present[:, route_columns].astype(bool).sum(axis=1) >= 2)
            magnitude = np.abs(values[:, k, :])
            correct = magnitude[:, SHARED_TOKEN] >= 0.5 * magnitude.sum(axis=1)
            kind = "shared"
        n, h = int(eligible.sum()), int((correct & eligible).sum())
        hits[kind] += h
        counts[kind] += n
        per_disease[name] = {"route": disease.route, "accuracy": h / n if n else float("nan"), "n": n}
    rate = {kind: hits[kind] / counts[kind] if counts[kind] else float("nan") for kind in hits}
    return RouteAccuracy(rate["single"], rate["shared"], counts["single"], counts["shared"], per_disease)
