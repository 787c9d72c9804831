"""Disentanglement diagnostics over a cohort, for the lab page (no Streamlit: the page caches the result).

One pass of the model over the cohort (eval mode, no grad) gives each patient's specific projections
s_m, shared projections c_m (B, 4, d, MODALITIES order) and the exact Shapley contributions of the
five fusion tokens; from these:

* contribution shares: per disease, the mean over patients of |contribution of a token| / sum of
  |contributions| of the five tokens (patients whose contributions are all zero are skipped);
* InfoNCE estimate of I(c_m; c_n) (medfuse_core.models.disentangle.info_nce_mi_estimate): a lower bound
  in nats, averaged over modality pairs, at most log(N);
* vCLUB estimate of I(s_m; c_m) per modality, with the checkpoint's own trained estimator
  (model.mi_estimators.estimators[m]); the estimator shuffles pairs, so it is averaged over
  `vclub_repeats` seeded permutations. An upper-bound estimate; near 0 = disentangled;
* linear CKA between modalities' shared projections (patients with both present);
* leakage probe: can the modality be decoded from c_m? Logistic regression, cross-validated with folds
  grouped by patient, accuracy vs the majority-class rate (chance). Accuracy near chance = the shared
  space does not say which modality it came from;
* a 2-D PCA of all specific and shared vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.record import MODALITIES

TOKEN_KEYS = TOKEN_NAMES  # the fusion tokens, in the model's order


# ------------------------------------------------------------------------------------ pure maths


def _centre(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n examples
    (n x p and n x q): ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F), in [0, 1]; NaN if n < 2 or a
    representation is constant."""
    x, y = _centre(x), _centre(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples: {x.shape[0]} vs {y.shape[0]} rows")
    if x.shape[0] < 2:
        return float("nan")
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norm = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norm) if norm > 0 else float("nan")


def cka_matrix(shared: np.ndarray, present: np.ndarray, min_rows: int = 3) -> np.ndarray:
    """(4, 4) linear CKA between the modalities' shared projections, each pair over the patients
    having both; NaN where fewer than `min_rows` patients have both."""
    m = shared.shape[1]
    out = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            rows = present[:, i] & present[:, j]
            if int(rows.sum()) >= min_rows:
                out[i, j] = linear_cka(shared[rows, i], shared[rows, j])
    return out


@dataclass
class ProbeResult:
    accuracy: float  # mean cross-validated accuracy
    chance: float  # majority-class rate
    n: int  # rows (patient, modality)
    folds: int
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def above_chance(self) -> float:
        return self.accuracy - self.chance


def leakage_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, folds: int = 5,
                  seed: int = 0, names: Sequence[str] | None = None) -> ProbeResult:
    """Cross-validated accuracy of a (standardised) logistic regression predicting class `y` from `x`.

    Folds are grouped by `groups` (the patient) when given, so a patient's projections never sit on
    both sides of a split. NaN accuracy when there are fewer than two classes or too few rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    per_class = {str(names[int(c)] if names is not None else c): int(n) for c, n in zip(classes, counts)}
    chance = float(counts.max() / counts.sum()) if len(y) else float("nan")
    if len(classes) < 2 or len(y) < 2 * folds:
        return ProbeResult(float("nan"), chance, len(y), 0, per_class)
    if groups is not None and len(np.unique(groups)) >= folds:
        splits = list(GroupKFold(n_splits=folds).split(x, y, groups))
    else:
        k = max(2, min(folds, int(counts.min())))
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y))
    accuracies, weights = [], []
    for train, test in splits:
        if len(np.unique(y[train])) < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        model.fit(x[train], y[train])
        accuracies.append(float((model.predict(x[test]) == y[test]).mean()))
        weights.append(len(test))
    accuracy = float(np.average(accuracies, weights=weights)) if accuracies else float("nan")
    return ProbeResult(accuracy, chance, len(y), len(accuracies), per_class)


def modality_rows(projections: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten (B, 4, d) to the present (patient, modality) rows: (x (n, d), modality index, patient index)."""
    b, m = np.nonzero(present)
    return projections[b, m], m, b


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) coordinates on the first two principal components and their explained-variance ratios."""
    xc = _centre(x)
    if xc.shape[0] < 2:
        return np.zeros((xc.shape[0], 2)), np.zeros(2)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    coords = xc @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, np.pad(ratio, (0, 2 - len(ratio)))


def contribution_shares(contributions: np.ndarray) -> np.ndarray:
    """(K, 5) mean over patients of |contribution| / sum |contributions| per disease and token.

    contributions: (B, K, 5) exact Shapley values. Patient-disease pairs whose five values are all
    zero are left out of that disease's mean; a disease with none gets zeros."""
    a = np.abs(np.asarray(contributions, dtype=np.float64))
    total = a.sum(-1, keepdims=True)
    valid = total[..., 0] > 0  # (B, K)
    share = np.divide(a, total, out=np.zeros_like(a), where=total > 0)
    counts = valid.sum(0)  # (K,)
    return np.divide(share.sum(0), counts[:, None], out=np.zeros(share.shape[1:]), where=counts[:, None] > 0)


# ---------------------------------------------------------------------------------- the model pass


@dataclass
class CohortDiagnostics:
    """Everything the lab page shows for one (source, checkpoint); numpy only, cheap to cache."""

    labels: list[str]
    patient_ids: list[str]
    specific: np.ndarray  # (B, 4, d)
    shared: np.ndarray  # (B, 4, d)
    present: np.ndarray  # (B, 4) bool
    contributions: np.ndarray  # (B, K, 5)
    truth: np.ndarray  # (B, K) float, NaN where the record has no label
    shares: np.ndarray  # (K, 5)
    info_nce: float  # nats, InfoNCE between modalities' shared projections (mean over pairs)
    info_nce_ceiling: float  # log(N): the most InfoNCE can say with N patients
    vclub: dict[str, float]  # modality -> vCLUB estimate of I(s_m; c_m); NaN when < 2 patients
    cka: np.ndarray  # (4, 4)
    probe: ProbeResult
    specific_probe: ProbeResult  # the same probe on s_m (should be decodable: a reference point)
    pca: np.ndarray  # (rows, 2): present specific rows, then present shared rows
    pca_ratio: np.ndarray  # (2,)
    pca_kind: np.ndarray  # (rows,) "specific" / "shared"
    pca_modality: np.ndarray  # (rows,) modality index
    pca_patient: np.ndarray  # (rows,) patient index
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def cohort_diagnostics(predictor: Any, records: Sequence[Any], batch_size: int = 64, vclub_repeats: int = 8,
                       seed: int = 0) -> CohortDiagnostics:
    """One forward pass of `predictor.model` over `records` and every diagnostic of the module."""
    from medfuse_core.explain.concurrency import eval_mode
    from medfuse_core.explain.encoding import encode
    from medfuse_core.explain.groups import token_contributions
    from medfuse_core.features.batch import collate
    from medfuse_core.models.disentangle import info_nce_mi_estimate

    model = predictor.model
    labels = list(predictor.labels)
    specific, shared, present, contributions, ids = [], [], [], [], []
    notes: list[str] = []
    with eval_mode(model), torch.no_grad():  # reference-counted across sessions' threads (concurrency.py)
        for start in range(0, len(records), batch_size):
            chunk = list(records[start:start + batch_size])
            features, _ = predictor.featurize(chunk)
            out = encode(model, collate(list(features)).to(predictor.device)).output  # each encoder once
            specific.append(out.specific.float().cpu())
            shared.append(out.shared.float().cpu())
            present.append(out.present.bool().cpu())
            if hasattr(model, "fusion"):
                contributions.append(token_contributions(model.fusion, out.tokens, out.token_mask).values.double().cpu())
            ids += [f.patient_id for f in features]
        s = torch.cat(specific) if specific else torch.zeros(0, len(MODALITIES), 1)
        c = torch.cat(shared) if shared else torch.zeros(0, len(MODALITIES), 1)
        p = torch.cat(present) if present else torch.zeros(0, len(MODALITIES), dtype=torch.bool)
        info_nce = info_nce_mi_estimate(c, p) if len(ids) else float("nan")
        vclub: dict[str, float] = {}
        estimators = getattr(getattr(model, "mi_estimators", None), "estimators", None)
        for i, m in enumerate(MODALITIES):
            rows = p[:, i]
            if estimators is None or m not in estimators or int(rows.sum()) < 2:
                vclub[m] = float("nan")
                continue
            generator_state = torch.get_rng_state()
            torch.manual_seed(seed)
            est = estimators[m].to(predictor.device)
            values = [float(est(s[rows, i].to(predictor.device), c[rows, i].to(predictor.device)))
                      for _ in range(max(1, vclub_repeats))]
            torch.set_rng_state(generator_state)
            vclub[m] = float(np.mean(values))
        if estimators is None:
            notes.append("This checkpoint has no vCLUB estimators.")
    s_np, c_np, p_np = s.numpy(), c.numpy(), p.numpy()
    contrib = (torch.cat(contributions).numpy() if contributions
               else np.zeros((len(ids), len(labels), len(TOKEN_KEYS))))
    if not contributions:
        notes.append("This model has no fusion tokens: no contribution shares.")
    truth = np.full((len(ids), len(labels)), np.nan)
    by_id = {r.patient_id: r for r in records}
    for b, pid in enumerate(ids):
        for k, name in enumerate(labels):
            v = (getattr(by_id.get(pid), "labels", None) or {}).get(name)
            if v is not None:
                truth[b, k] = float(v)
    xc, mc, bc = modality_rows(c_np, p_np)
    xs, ms, bs = modality_rows(s_np, p_np)
    probe = leakage_probe(xc, mc, bc, names=MODALITIES)
    specific_probe = leakage_probe(xs, ms, bs, names=MODALITIES)
    coords, ratio = pca_2d(np.concatenate([xs, xc]) if len(xs) else np.zeros((0, s_np.shape[-1])))
    return CohortDiagnostics(
        labels=labels, patient_ids=ids, specific=s_np, shared=c_np, present=p_np, contributions=contrib, truth=truth,
        shares=contribution_shares(contrib) if len(ids) else np.zeros((len(labels), len(TOKEN_KEYS))),
        info_nce=float(info_nce), info_nce_ceiling=math.log(len(ids)) if len(ids) > 1 else float("nan"),
        vclub=vclub, cka=cka_matrix(c_np, p_np), probe=probe, specific_probe=specific_probe,
        pca=coords, pca_ratio=ratio, pca_kind=np.array(["specific"] * len(xs) + ["shared"] * len(xc)),
        pca_modality=np.concatenate([ms, mc]), pca_patient=np.concatenate([bs, bc]), notes=notes)
