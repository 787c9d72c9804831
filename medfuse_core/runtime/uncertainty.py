"""An interval beside every probability: Mondrian split-conformal (crepes), per label, wider where the
model knows less.

The conformal part is crepes' `ConformalRegressor` (a maintained library, requirements.txt), Mondrian:
one calibration group per label, set of modalities used (any non-empty set of the four: 15 groups) and
outcome. For label k and a patient seen through the set of modalities g, with p its calibrated probability, the interval is
[p - down_kg, p + up_kg] clipped to [0, 1]: `up_kg` is crepes' interval half-width over the group's
validation *positives* (non-conformity 1 - p), `down_kg` over its *negatives* (non-conformity p). It is
a prediction interval for the outcome: a positive's interval reaches 1, and a negative's reaches 0, with
probability at least `level` each (over patients like the validation ones). Its ends therefore say
which outcomes cannot be excluded: an interval reaching both 0 and 1 excludes neither; one straddling
the decision threshold is an "uncertain" decision.

Ties are broken by the model's own score. The per-label isotonic calibration maps most patients to a
handful of values (0.003 and 0.997 for 10 of 11 demo labels), so 1 - p ties by the hundreds, and a
conformal quantile among ties covers every tied patient: the coverage overshot the level (0.95-0.99
held-out at 0.90, benchmarks/results/uncertainty.md before this change). The non-conformity is
therefore 1 - p + TIE_BREAK (1 - s) (positives) and p + TIE_BREAK s (negatives), s the model's
probability before calibration: the calibration is monotone, so this orders patients as p does, ties
by s, is strictly monotone in the model's logit, and lands the coverage on the level; the shown ends
move by at most TIE_BREAK (1e-6). (crepes' randomised "smoothing" would also break ties, but a page must
show the same interval for the same patient each time.)

Why by outcome: with a rare label, a quantile of |y - p| pooled over both outcomes sits among the many
easy negatives and stays near 0 even where the model misses most positives. Why by the modalities used:
a patient with one modality is where the model knows least (issue 17: a labs-only patient showed
Pneumonia 100 %, range 100-100 %); pooled with four-modality patients, whose errors are tiny, its
interval would be far too narrow. Which set, not only how many: the groups by number of modalities
mixed, say, the 3-modality patients without a film (easy) with those without labs (hard), and covered
the first too often; chosen on the validation cohort (20 random halves: fit on one, coverage of the
other's patients as they come): mean |coverage - 0.90| per label 0.023 by set against 0.028 by number,
the labels' mean coverage 0.896-0.921 by set against 0.894-0.938 by number. The validation patients
are also seen with modalities withheld (every non-empty subset of the ones they have), so every group
has rows (at least 24 of each outcome for the demo checkpoint); benchmarks/uncertainty.py measures
the coverage on held-out patients as they come.

v3 (what `calibrate` fits now; v2 checkpoints still load and are used as fitted): the Mondrian category is
the label, the set of modalities used and a bin of the calibrated probability (SCORE_BINS quantile bins of
the label's validation rows), not the outcome; one reach per category, the same non-conformity, so the
coverage holds within each bin over both outcomes together. Why: on a ward (`synth --realism ward`) about a
quarter of a label's positives score like negatives (their evidence is not in the window, or the
condition was never coded); covering 90 % of the positives then takes every interval up to 1 (held-out
median width 0.996 with four modalities, coverage 0.90-0.95 as the positives over-cover). By score bin,
measured on the same held-out ward cohort (benchmarks/results/interval_alternatives.md): 10 of 11 labels
within 90 +- 2 points against 5, median width 0.98 with one modality and 0.73 with four (v2: 1.00 and
0.996), and 54 % of the disease decisions "uncertain" instead of 93 %. A category with fewer than
`min_rows` validation rows, but some (MIN_ROWS, chosen on halves of the validation cohort:
benchmarks/results/interval_min_rows.md), takes the reach of its bin pooled over the sets with as many
modalities, or over every set when those are too few too: a category of a handful of rows otherwise gives
the whole range or a quantile of noise. A set of modalities with no validation row keeps the whole range. Marginal within a bin is weaker than per outcome: a rare label's
positives hidden among low scores stay uncovered when they are under 1 - level of their bin.

A group with too few validation rows for the level (crepes: n < level / (1 - level)), or none, gets the
whole side (up = 1 or down = 1): honest about knowing nothing.

Stored beside the weights, never pickled: `conformal.safetensors` holds the validation rows' s, groups
and outcomes; at load their calibrated p comes from the checkpoint's own calibration and crepes is
fitted again (so a refit calibration never leaves stale intervals), config.json `uncertainty` holds the
method, level, group sizes and how it was fitted. Fitting is in train/conformal_fit.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from crepes import ConformalRegressor
from safetensors.torch import load_file, save_file

from medfuse_core.record import MODALITIES

GROUPS = 15  # every non-empty set of the four built-in modalities, by its bit code (`group_of`)
CONFORMAL_FILE = "conformal.safetensors"
METHOD_BY_OUTCOME = "crepes_mondrian_conformal_by_outcome_and_modalities_v2"
METHOD = "crepes_mondrian_conformal_by_score_bin_and_modalities_v3"
METHODS = (METHOD_BY_OUTCOME, METHOD)  # v2 checkpoints still load, and are used as fitted
SCORE_BINS = 5  # v3: quantile bins of the calibrated probability per label (benchmarks/results/interval_alternatives.md)
MIN_ROWS = 40  # v3: categories with fewer validation rows are pooled (chosen on validation halves: interval_min_rows.md)
LIBRARY = "crepes 0.9.1 ConformalRegressor (Mondrian)"
TIE_BREAK = 1e-6  # weight of the model's score s in the non-conformity: breaks ties of p, never reorders them


def group_of(used: np.ndarray) -> np.ndarray:
    """(N,) the group of each row of a used-modalities mask (N, M): the bit code sum of 2^m over the
    modalities m used (1..15 for the four built-in ones; 0: none)."""
    used = np.asarray(used, dtype=bool)
    return (used * (1 << np.arange(used.shape[1]))).sum(1).astype(np.int64)


def group_bins(groups: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """crepes' Mondrian category of a row: 2 (g - 1) + outcome."""
    return 2 * (np.asarray(groups, dtype=np.int64) - 1) + np.asarray(outcome, dtype=np.int64)


def model_scores(logits: np.ndarray) -> np.ndarray:
    """s: the model's probability before calibration, float64 (the conformal score's scale)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


Calibrate = Callable[[np.ndarray], np.ndarray]  # logits (..., K) -> calibrated probabilities


def logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), 1e-300, 1 - 1e-16)
    return np.log(s) - np.log1p(-s)


@dataclass
class ConformalIntervals:
    """The validation rows crepes is fitted on, and the reach up and down per label and group (the set
    of modalities used, `group_of`) that crepes gives at `level`, in calibrated-probability units."""

    labels: list[str]
    level: float  # e.g. 0.9
    scores: np.ndarray  # (R, K) s of the validation rows (every non-empty modality subset of each patient)
    groups: np.ndarray  # (R,) the group of each row (`group_of` the modalities it was seen through)
    outcomes: np.ndarray  # (R, K) 0 / 1, NaN unknown
    calibrate: Calibrate | None = None  # the checkpoint's calibration; None: s is shown as it is
    fitted_on: dict[str, Any] = field(default_factory=dict)
    score_bins: int = 0  # v3: Mondrian by set of modalities x this many bins of p; 0: v2, by set x outcome
    min_rows: int = 0  # v3: a category with fewer validation rows takes the reach of its bin pooled over the
    # sets with as many modalities (or, if those are too few too, over every set); 0: no pooling
    up: np.ndarray = field(init=False)  # v2 (K, n_groups): column g - 1 for patients of group g; v3 (K, n_groups, bins)
    down: np.ndarray = field(init=False)  # the same shape as `up` (v3: the same reach both ways)
    edges: np.ndarray = field(init=False)  # v3 (K, bins - 1): the bin edges on p, quantiles of the validation rows'
    calibration_rows: np.ndarray = field(init=False)  # (K, n_groups, 2) negatives, positives; v3 (K, n_groups, bins)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.outcomes = np.asarray(self.outcomes, dtype=np.float64)
        k = len(self.labels)
        if self.scores.shape != self.outcomes.shape or self.scores.ndim != 2 or self.scores.shape[1] != k \
                or self.groups.shape != (len(self.scores),):
            raise ValueError(f"uncertainty: expected scores and outcomes (rows, {k}) and groups (rows,)")
        if not np.all((self.scores >= 0) & (self.scores <= 1)):
            raise ValueError("uncertainty: expected scores from 0 to 1")
        if not np.all((self.groups >= 1) & (self.groups <= 127)):
            raise ValueError("uncertainty: expected a group from 1 to 127 per row (a non-empty set of modalities)")
        n_groups = max(GROUPS, int(self.groups.max(initial=0)))
        known_outcomes = self.outcomes[~np.isnan(self.outcomes)]
        if not np.all((known_outcomes == 0) | (known_outcomes == 1)):
            raise ValueError("uncertainty: expected outcomes 0, 1 or unknown")
        if self.score_bins:
            self._fit_by_score_bin(n_groups)
            return
        self.edges = np.zeros((k, 0))
        self.up, self.down = np.ones((k, n_groups)), np.ones((k, n_groups))
        self.calibration_rows = np.zeros((k, n_groups, 2), dtype=int)
        up_scores, down_scores = self.nonconformity(self.scores)
        for j in range(k):
            known = ~np.isnan(self.outcomes[:, j])
            outcome = self.outcomes[known, j].astype(np.int64)
            bins = group_bins(self.groups[known], outcome)
            self.calibration_rows[j] = np.bincount(bins, minlength=2 * n_groups).reshape(n_groups, 2)
            if not known.any():
                continue
            residuals = np.where(outcome == 1, up_scores[known, j], down_scores[known, j])
            reach = self._category_reach(residuals, bins, 2 * n_groups)
            self.down[j], self.up[j] = reach[0::2], reach[1::2]

    def _fit_by_score_bin(self, n_groups: int) -> None:
        """v3: one reach per label, set of modalities and bin of the calibrated probability p (quantile
        bins of the label's validation rows), from the same non-conformity as v2 (1 - p for a positive, p for
        a negative, ties broken by s): coverage at the level within each bin, over both outcomes together.
        Why not by outcome on a ward: when more than 1 - level of a label's positives score like negatives
        (evidence absent from the window, conditions coded without any), covering that share of the
        positives takes every interval up to 1 (measured: median width 0.996 with four modalities)."""
        k, bins = len(self.labels), self.score_bins
        p = self.probabilities(self.scores)
        up_scores, down_scores = self.nonconformity(self.scores, p)
        self.edges = np.zeros((k, bins - 1))
        self.up = np.ones((k, n_groups, bins))
        self.calibration_rows = np.zeros((k, n_groups, bins), dtype=int)
        size = np.array([bin(g + 1).count("1") for g in range(n_groups)])  # modalities in each set
        for j in range(k):
            known = ~np.isnan(self.outcomes[:, j])
            if not known.any():
                continue
            self.edges[j] = np.quantile(p[known, j], np.arange(1, bins) / bins)
            category = (self.groups[known] - 1) * bins + np.searchsorted(self.edges[j], p[known, j], side="right")
            counts = np.bincount(category, minlength=n_groups * bins)
            self.calibration_rows[j] = counts.reshape(n_groups, bins)
            residuals = np.where(self.outcomes[known, j] == 1, up_scores[known, j], down_scores[known, j])
            reach = self._category_reach(residuals, category, n_groups * bins)
            if self.min_rows:
                score_bin = category % bins
                size_key = size[category // bins] * bins + score_bin
                by_size = self._category_reach(residuals, size_key, (size.max() + 1) * bins)
                by_size_rows = np.bincount(size_key, minlength=(size.max() + 1) * bins)
                anywhere = self._category_reach(residuals, score_bin, bins)
                for c in np.flatnonzero((counts > 0) & (counts < self.min_rows)):  # a set never seen keeps the whole range
                    pooled = size[c // bins] * bins + c % bins
                    reach[c] = by_size[pooled] if by_size_rows[pooled] >= self.min_rows else anywhere[c % bins]
            self.up[j] = reach.reshape(n_groups, bins)
        self.down = self.up

    def _category_reach(self, residuals: np.ndarray, category: np.ndarray, n_categories: int) -> np.ndarray:
        """crepes' reach at the level per category (n_categories,); the whole range (1) for a category too
        small for the level (crepes warns and gives it) or without rows (crepes leaves it at 0)."""
        every = np.arange(n_categories)
        regressor = ConformalRegressor().fit(residuals, bins=category)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reach = regressor.predict_int(np.zeros(n_categories), bins=every, confidence=self.level)[:, 1]
        counts = np.bincount(category, minlength=n_categories)
        return np.where(counts > 0, np.minimum(reach, 1.0), 1.0)

    def _reach(self, p: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(up, down) per row and label (N, K) for calibrated p (N, K) of patients of `groups` (N,);
        the whole side (1) for a group never fitted."""
        up, down = np.ones_like(p), np.ones_like(p)
        seen = (groups >= 1) & (groups <= self.up.shape[1])
        if not self.score_bins:
            up[seen] = self.up[:, groups[seen] - 1].T
            down[seen] = self.down[:, groups[seen] - 1].T
            return up, down
        for j in range(len(self.labels)):
            b = np.searchsorted(self.edges[j], p[seen, j], side="right")
            up[seen, j] = self.up[j, groups[seen] - 1, b]
        return up, up.copy()

    @property
    def description(self) -> str:
        """How these intervals were made, in words (explain JSON `trust.intervals.method`)."""
        by = f"a bin of the calibrated probability ({self.score_bins} bins)" if self.score_bins else "the outcome"
        return f"conformal (crepes), Mondrian by label, the set of modalities used and {by}"

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability p of model scores s."""
        s = np.asarray(scores, dtype=np.float64)
        return s if self.calibrate is None else np.asarray(self.calibrate(logit(s)), dtype=np.float64)

    @property
    def tie_break(self) -> float:
        """TIE_BREAK with a calibration; 0 without (p is s itself: nothing to break)."""
        return 0.0 if self.calibrate is None else TIE_BREAK

    def nonconformity(self, scores: np.ndarray, probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(as a positive, as a negative): 1 - p and p, ties broken by s."""
        s = np.asarray(scores, dtype=np.float64)
        p = self.probabilities(s) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        return 1.0 - p + self.tie_break * (1.0 - s), p + self.tie_break * s

    def intervals(self, scores: np.ndarray, groups: np.ndarray,
                  probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (N, K), around the calibrated probabilities p (N, K; computed from s when not
        given) of model scores s (N, K) of patients of `groups` (N,) (`group_of` the modalities used;
        0, nothing used, or a group never fitted -> the whole [0, 1]). An end reaches 1 (0) exactly when the non-conformity as a positive (negative) is
        within the reach, as in the fit."""
        s = np.asarray(scores, dtype=np.float64)
        p = self.probabilities(s) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        groups = np.asarray(groups, dtype=int)
        up, down = self._reach(p, groups)
        as_positive, as_negative = self.nonconformity(s, p)
        high = np.minimum(p + up - self.tie_break * (1.0 - s), 1.0)  # reaches 1 iff as_positive <= up
        low = np.maximum(p - down + self.tie_break * s, 0.0)
        # within float rounding of the reach counts as reaching it (s + (1 - s') with s == s' must reach 1)
        reaches_1, reaches_0 = as_positive <= up + 1e-12, as_negative <= down + 1e-12
        return (np.where(reaches_0, 0.0, np.clip(low, 1e-9, np.maximum(p, 1e-9))),
                np.where(reaches_1, 1.0, np.clip(high, np.minimum(p, 1 - 1e-9), 1 - 1e-9)))

    def for_logits(self, logits: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The intervals of a model's logits (N, K) from the modalities `used` (N, M) bool."""
        p = None if self.calibrate is None else np.asarray(self.calibrate(logits), dtype=np.float64)
        return self.intervals(model_scores(logits), group_of(used), p)

    # ---- checkpoint files

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write conformal.safetensors into `folder`; returns config.json's `uncertainty` section."""
        path = Path(folder) / CONFORMAL_FILE
        tmp = path.with_name(path.name + ".tmp")
        tensors = {"scores": torch.tensor(self.scores, dtype=torch.float64),
                   "groups": torch.tensor(self.groups, dtype=torch.int8),
                   "outcomes": torch.tensor(self.outcomes, dtype=torch.float32)}  # NaN: unknown
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
        tmp.replace(path)
        return self.to_config()

    def to_config(self) -> dict[str, Any]:
        """config.json's `uncertainty` section: what was fitted and how (the rows themselves are in the file)."""
        by_bin = {"score_bins": self.score_bins, "min_rows": self.min_rows,
                  "bin_edges": {name: [float(e) for e in self.edges[k]] for k, name in enumerate(self.labels)}} \
            if self.score_bins else {}
        return {"method": METHOD if self.score_bins else METHOD_BY_OUTCOME, "library": LIBRARY, "file": CONFORMAL_FILE,
                "level": self.level, **by_bin,
                "labels": list(self.labels),
                "groups": "bit code of the modalities used: " + ", ".join(f"{1 << m} {name}" for m, name in enumerate(MODALITIES))
                          + " (their sum for several)",
                "calibration_rows": {name: [[int(n) for n in row] for row in self.calibration_rows[k]]
                                     for k, name in enumerate(self.labels)},
                "fitted_on": self.fitted_on}

    @classmethod
    def load(cls, folder: str | Path, config: dict[str, Any] | None, labels: Sequence[str],
             calibrate: Calibrate | None = None) -> "ConformalIntervals | None":
        """The checkpoint's intervals, or None when it has none fitted for these labels (no `uncertainty`
        section of this method, no file, or other labels): every result then says so."""
        checked = check_section(config, labels)
        if checked is None:
            return None
        path = Path(folder) / CONFORMAL_FILE
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        missing = {"scores", "groups", "outcomes"} - set(tensors)
        if missing:
            raise ValueError(f"{path.name}: expected the tensors scores, groups and outcomes; missing {sorted(missing)}")
        columns = [checked.index(name) for name in labels]
        return cls(list(labels), float(config["level"]), tensors["scores"].double().numpy()[:, columns],
                   tensors["groups"].long().numpy(), tensors["outcomes"].double().numpy()[:, columns],
                   calibrate, dict(config.get("fitted_on") or {}),
                   score_bins=int(config.get("score_bins", 0)) if config["method"] == METHOD else 0,
                   min_rows=int(config.get("min_rows", 0)) if config["method"] == METHOD else 0)


def check_section(config: dict[str, Any] | None, labels: Sequence[str]) -> list[str] | None:
    """The fitted label order of config.json's `uncertainty` section, None when it has no intervals of
    this method for every one of `labels`; ValueError naming what is malformed."""
    if not config or config.get("method") not in METHODS:
        return None
    fitted = config.get("labels")
    if not isinstance(fitted, list) or not all(isinstance(name, str) for name in fitted):
        raise ValueError("uncertainty: expected `labels`, the list of label names the intervals were fitted for")
    level = config.get("level")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"uncertainty: expected `level` a number between 0 and 1, found {level!r}")
    bins = config.get("score_bins")
    if config.get("method") == METHOD and (isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 50):
        raise ValueError(f"uncertainty: expected `score_bins` a whole number from 2 to 50, found {bins!r}")
    rows = config.get("min_rows", 0)
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= 100_000:
        raise ValueError(f"uncertainty: expected `min_rows` a whole number from 0, found {rows!r}")
    if config.get("file", CONFORMAL_FILE) != CONFORMAL_FILE:
        raise ValueError(f"uncertainty: expected `file` {CONFORMAL_FILE!r}")
    if any(name not in fitted for name in labels):
        return None
    return fitted
