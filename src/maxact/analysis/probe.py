"""A linear probe over all units of one site at once (docs/CONCEPTS.md, "Probe"): L2- and
L1-regularised logistic regression (scikit-learn, imported only when a probe is fitted) on standardised activations, stratified k-fold
cross-validated accuracy against the majority baseline, the units with the largest weights, and
the Spearman rank agreement between |weight| and |t| (the course compares exactly these two).

The probe's direction in activation space is the L2 weight vector divided by each unit's standard
deviation (the model was fitted on standardised units); the difference of class means is the
other direction a site is given. numpy, scipy and scikit-learn only.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from maxact.errors import MaxactError


class ProbeSettings(NamedTuple):
    folds: int
    c: float  # scikit-learn's C (inverse regularisation strength), both penalties
    max_iter: int
    seed: int
    top: int  # units with the largest |L2 weight| listed


class ProbeResult(NamedTuple):
    """One site's probe; accuracies are means over the folds of held-out accuracy."""

    n_in: int
    n_out: int
    folds: int
    baseline: float  # share of the larger class: the accuracy of always answering it
    l2_accuracy: float
    l2_accuracy_std: float
    l1_accuracy: float
    l1_accuracy_std: float
    l1_nonzero: int  # units with a non-zero weight in the L1 probe fitted on every observation
    top_units: list[tuple[int, float]]  # (index in the site, standardised L2 weight), largest |w| first
    spearman: float  # Spearman rho between |standardised L2 weight| and |t| over the site's units
    direction: np.ndarray  # (d,) float32 L2 weights in activation units (w / std of each unit)
    mean_diff: np.ndarray  # (d,) float32 mean of the category minus mean of the rest


def _model(penalty: str, s: ProbeSettings):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if penalty == "l1":
        clf = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=s.c, max_iter=s.max_iter,
                                 random_state=s.seed)
    else:
        clf = LogisticRegression(C=s.c, max_iter=s.max_iter)
    return make_pipeline(StandardScaler(), clf)


def fit_probe(values: np.ndarray, is_in: np.ndarray, t: np.ndarray, s: ProbeSettings) -> ProbeResult:
    """values (m, d) float32 observations of one site, is_in (m,) bool their class, t (d,) Welch's t
    of the site's units (from every observation of the pass)."""
    from scipy import stats
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    y = np.asarray(is_in, dtype=bool)
    n_in, n_out = int(y.sum()), int((~y).sum())
    folds = min(s.folds, n_in, n_out)
    if folds < 2:
        raise MaxactError(f"--probe needs at least 2 observations of each class; the pass kept {n_in} of the "
                          f"category and {n_out} of the rest")
    x = np.asarray(values, dtype=np.float64)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=s.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the accuracy is reported either way
        acc = {p: cross_val_score(_model(p, s), x, y, cv=cv, scoring="accuracy") for p in ("l2", "l1")}
        l2 = _model("l2", s).fit(x, y)
        l1 = _model("l1", s).fit(x, y)
    w = l2[-1].coef_[0]  # (d,) standardised weights
    scale = l2[0].scale_  # (d,) the units' standard deviations (1 where constant)
    order = np.argsort(-np.abs(w), kind="stable")[: s.top]
    rho = stats.spearmanr(np.abs(w), np.abs(t), nan_policy="omit").statistic
    mean_diff = x[y].mean(0) - x[~y].mean(0)
    return ProbeResult(
        n_in, n_out, folds, max(n_in, n_out) / (n_in + n_out),
        float(acc["l2"].mean()), float(acc["l2"].std()), float(acc["l1"].mean()), float(acc["l1"].std()),
        int(np.count_nonzero(l1[-1].coef_[0])), [(int(i), float(w[i])) for i in order], float(rho),
        (w / scale).astype(np.float32), mean_diff.astype(np.float32))


def probe_json(site: str, r: ProbeResult) -> dict:
    """The probe of one site as `maxact concept --json` prints it (``probes`` list)."""
    return {"site": site, "n_in": r.n_in, "n_out": r.n_out, "folds": r.folds, "baseline": r.baseline,
            "l2": {"accuracy": r.l2_accuracy, "accuracy_std": r.l2_accuracy_std},
            "l1": {"accuracy": r.l1_accuracy, "accuracy_std": r.l1_accuracy_std, "nonzero": r.l1_nonzero},
            "top_units": [{"unit": f"{site}:{i}", "weight": w} for i, w in r.top_units],
            "spearman_abs_weight_abs_t": r.spearman}


def probe_text(site: str, r: ProbeResult) -> str:
    top = ", ".join(f"{site}:{i} ({w:+.2f})" for i, w in r.top_units)
    return (f"probe {site}: {r.n_in} in / {r.n_out} out, {r.folds}-fold accuracy L2 {r.l2_accuracy:.3f} "
            f"(+-{r.l2_accuracy_std:.3f}), L1 {r.l1_accuracy:.3f} (+-{r.l1_accuracy_std:.3f}, {r.l1_nonzero} "
            f"units non-zero), majority baseline {r.baseline:.3f}; Spearman |w| vs |t| {r.spearman:.3f}\n"
            f"  largest standardised L2 weights: {top}")
