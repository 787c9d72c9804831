"""Multi-label evaluation: discrimination, thresholds, calibration, bootstrap intervals.

Labels may be unknown (NaN) for some patients; every figure uses the patients where that label is
known. A label with only one class among them has no AUROC/AUPRC (NaN) and is left out of macros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y)
    return y[keep].astype(int), p[keep]


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _known(y, p)
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _known(y, p)
    return float(average_precision_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on validation, applied on test)."""
    y, p = _known(y, p)
    if y.sum() == 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    tp = np.cumsum(y[order])
    fp = np.cumsum(1 - y[order])
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    # "p >= t" takes every tie of t at once: only the last of a run of equal probabilities is a possible cut
    # (a calibrated probability from an isotonic map has many ties)
    f1[np.r_[ranked[1:] == ranked[:-1], False]] = -1.0
    best = int(np.argmax(f1))
    return float(ranked[best])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE over all known (patient, label) pairs with equal-width probability bins."""
    y, p = _known(y.ravel(), p.ravel())
    if len(y) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(ece)


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (nan, nan) when n is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_iter: int = 200) -> float:
    """One temperature T minimising the BCE of logits / T on known labels (fitted on validation).

    T is kept in TEMPERATURE_RANGE: on near-constant logits the optimum runs off to 0 or infinity,
    which would turn every probability into the same number."""
    keep = ~np.isnan(y)
    z = torch.tensor(logits[keep], dtype=torch.float64)
    t = torch.tensor(y[keep], dtype=torch.float64)
    low, high = (float(np.log(v)) for v in TEMPERATURE_RANGE)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    # a line search keeps LBFGS from stepping to absurd temperatures on flat logits
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.clamp(low, high).exp(), t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().clamp(low, high).exp())


@dataclass
class LabelMetrics:
    auroc: float
    auprc: float
    f1: float
    threshold: float
    prevalence: float
    n: int


def label_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> LabelMetrics:
    yk, pk = _known(y, p)
    f1 = float(f1_score(yk, pk >= threshold, zero_division=0)) if len(yk) else float("nan")
    return LabelMetrics(auroc(y, p), auprc(y, p), f1, threshold, float(yk.mean()) if len(yk) else float("nan"), len(yk))


def macro(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def micro_f1(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> float:
    keep = ~np.isnan(y)
    pred = p >= thresholds[None, :]
    return float(f1_score(y[keep].astype(int), pred[keep], zero_division=0))


def bootstrap_macro(y: np.ndarray, p: np.ndarray, n_resamples: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of macro AUROC and macro AUPRC, resampling patients."""
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    aurocs, auprcs = [], []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        aurocs.append(macro([auroc(y[idx, k], p[idx, k]) for k in range(y.shape[1])]))
        auprcs.append(macro([auprc(y[idx, k], p[idx, k]) for k in range(y.shape[1])]))
    ci = lambda v: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]  # noqa: E731
    return {"macro_auroc": ci(aurocs), "macro_auprc": ci(auprcs)}
