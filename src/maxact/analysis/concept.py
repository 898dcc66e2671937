"""How every unit separates a category from the rest, from per-unit summaries of the two groups
(count, mean, M2 = sum of squared deviations from the mean): Welch's t, its two-sided p,
Benjamini-Hochberg q over all units tested, Cohen's d and the AUROC; and, for a property with
several groups, the one-way ANOVA F, its p and eta squared (docs/CONCEPTS.md).

The summaries come from an atlas's per-type second moments (``type_category``, no model), from a
streaming pass over a corpus (pipeline/concept_pass.py) or from contrast sets whose every value is
kept (``exact_auroc``). numpy and scipy.special only (scipy.stats is slow to import).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special

from maxact.analysis.floats import json_float
from maxact.config import CONCEPT
from maxact.errors import MaxactError, choices_text
from maxact.store import format as F
from maxact.store.reader import Atlas

# how the AUROC of a table was computed (ConceptTable.auroc_method), said in every output
AUROC_EXACT = "exact: Mann-Whitney U / (n_in * n_out) over every value, ties counted half"
AUROC_BINORMAL = ("binormal approximation from the moments alone: Phi((mean_in - mean_out) / "
                  "sqrt(var_in + var_out)); not rank-based, exact only for two normal groups")


class TwoGroups(NamedTuple):
    """Per-unit summaries of the category (``in``) and the rest (``out``), arrays of shape (U,)."""

    n_in: np.ndarray  # int64
    mean_in: np.ndarray  # float64
    m2_in: np.ndarray  # float64 sum of squared deviations from mean_in
    n_out: np.ndarray
    mean_out: np.ndarray
    m2_out: np.ndarray


class Separation(NamedTuple):
    """Per-unit statistics (U,) float64; NaN where a group has fewer than 2 observations or both
    groups are constant (t undefined)."""

    t: np.ndarray  # Welch's t, in minus out
    df: np.ndarray  # Welch-Satterthwaite degrees of freedom
    p: np.ndarray  # two-sided
    q: np.ndarray  # Benjamini-Hochberg over every unit with a finite p
    d: np.ndarray  # Cohen's d, pooled standard deviation (n - 1 weights)
    auroc: np.ndarray  # P(in > out) + P(in = out) / 2, or its binormal approximation (see auroc_method)


class GroupsAnova(NamedTuple):
    """One-way ANOVA per unit over G groups, arrays (U,) float64."""

    f: np.ndarray
    p: np.ndarray
    eta2: np.ndarray  # between-group sum of squares / total sum of squares


def sample_var(n: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Unbiased variance (ddof 1), NaN below 2 observations."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, m2 / np.maximum(n - 1, 1), np.nan)


def welch(g: TwoGroups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t, its degrees of freedom and two-sided p, as scipy.stats.ttest_ind(equal_var=False)."""
    v_in, v_out = sample_var(g.n_in, g.m2_in), sample_var(g.n_out, g.m2_out)
    a, b = v_in / np.maximum(g.n_in, 1), v_out / np.maximum(g.n_out, 1)
    se2 = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se2 > 0, (g.mean_in - g.mean_out) / np.sqrt(se2), np.nan)
        df = se2**2 / (a**2 / np.maximum(g.n_in - 1, 1) + b**2 / np.maximum(g.n_out - 1, 1))
    p = 2.0 * special.stdtr(df, -np.abs(t))  # two-sided: scipy.stats.t.sf(|t|, df) * 2
    return t, df, p


def bh_q(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries of p (NaN stays NaN)."""
    q = np.full(p.shape, np.nan)
    ok = np.nonzero(np.isfinite(p))[0]
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]  # ascending p
        scaled = p[order] * m / np.arange(1, m + 1)
        q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def cohens_d(g: TwoGroups) -> np.ndarray:
    """(mean_in - mean_out) / pooled sd, the pooled variance weighting each group by n - 1."""
    dof = g.n_in + g.n_out - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt((g.m2_in + g.m2_out) / np.where(dof > 0, dof, np.nan))
        return np.where(pooled > 0, (g.mean_in - g.mean_out) / pooled, np.nan)


def binormal_auroc(g: TwoGroups) -> np.ndarray:
    """Phi((mean_in - mean_out) / sqrt(var_in + var_out)): the AUROC if both groups were normal."""
    v = sample_var(g.n_in, g.m2_in) + sample_var(g.n_out, g.m2_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(v > 0, (g.mean_in - g.mean_out) / np.sqrt(v), np.nan)
    return special.ndtr(z)


def exact_auroc(x_in: np.ndarray, x_out: np.ndarray) -> np.ndarray:
    """x_in (n_in, U), x_out (n_out, U) -> (U,) P(in > out) + P(in = out) / 2 (Mann-Whitney U over
    n_in * n_out, average ranks for ties), as sklearn.metrics.roc_auc_score with in as positive."""
    n_in, n_out = x_in.shape[0], x_out.shape[0]
    if n_in == 0 or n_out == 0:
        return np.full(x_in.shape[1], np.nan)
    from scipy.stats import rankdata  # the contrast sets only: scipy.stats is slow to import

    ranks = rankdata(np.concatenate([x_in, x_out]).astype(np.float64), axis=0)  # (n, U)
    u = ranks[:n_in].sum(0) - n_in * (n_in + 1) / 2.0
    return u / (n_in * n_out)


def separation(g: TwoGroups, auroc: np.ndarray | None = None) -> Separation:
    """Every statistic of the two groups; auroc: exact values when the caller has them, else the
    binormal approximation."""
    t, df, p = welch(g)
    return Separation(t, df, p, bh_q(p), cohens_d(g), binormal_auroc(g) if auroc is None else auroc)


def anova(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> GroupsAnova:
    """count (G,) or (G, U), mean and m2 (G, U) -> F, p and eta squared per unit over the groups
    that hold observations (as scipy.stats.f_oneway over the groups' values)."""
    count = np.broadcast_to(np.asarray(count, dtype=np.float64).reshape(len(mean), -1), mean.shape)
    n = count.sum(0)  # (U,)
    k = (count > 0).sum(0)  # (U,) groups with observations
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = (count * mean).sum(0) / n
        between = (count * (mean - grand) ** 2).sum(0)
        within = np.where(count > 0, m2, 0.0).sum(0)
        f = np.where((k > 1) & (n > k) & (within > 0), (between / (k - 1)) / (within / (n - k)), np.nan)
        eta2 = np.where(between + within > 0, between / (between + within), np.nan)
    with np.errstate(invalid="ignore"):
        p = special.fdtrc(k - 1, n - k, f)  # scipy.stats.f.sf(f, k - 1, n - k)
    return GroupsAnova(f, p, eta2)


def combine(count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (k,) counts, (k, U) means and M2 -> one group's n (U,), mean (U,) and M2 (U,): the
    exact pooled moments (Chan), as float64."""
    w = np.asarray(count, dtype=np.float64)[:, None]  # (k, 1)
    n = w.sum()
    mean = np.asarray(mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (w * mean).sum(0) / n if n > 0 else np.full(mean.shape[1], np.nan)
    m2 = np.asarray(m2, dtype=np.float64).sum(0) + (w * (mean - pooled) ** 2).sum(0)
    return np.full(mean.shape[1], int(n), dtype=np.int64), pooled, m2


def has_type_moments(atlas: Atlas) -> bool:
    """Whether the atlas keeps per-type second moments (atlases made before them do not)."""
    return all(name in atlas.manifest.files for name in (F.TYPE_COUNTS, F.TYPE_DEV, F.TYPE_M2, F.TYPE_STATS))


class UnitRows(NamedTuple):
    """Units of an atlas chosen by site kind and block."""

    rows: np.ndarray  # (U,) int64 rows in every per-unit array
    names: list[str]  # (U,) their unit ids


def atlas_units(atlas: Atlas, sites: tuple[str, ...] | None, layers: tuple[int, ...] | None) -> UnitRows:
    """The atlas's units of the chosen site kinds and blocks (None: all), in manifest order."""
    chosen = [s for s in atlas.sites if (sites is None or s.site in sites)
              and (layers is None or s.layer is None or s.layer in layers)]
    if not chosen:
        raise MaxactError(f"--sites/--layers select no site of this atlas; it holds "
                          f"{choices_text([s.name for s in atlas.sites], 8)}")
    rows = np.concatenate([np.arange(s.offset, s.offset + s.width) for s in chosen]).astype(np.int64)
    return UnitRows(rows, [f"{s.name}:{i}" for s in chosen for i in range(s.width)])  # str(UnitId)


def type_category(atlas: Atlas, token_ids: list[int], rows: np.ndarray) -> TwoGroups:
    """The two groups of a category that is a set of tracked token types, for the units ``rows``
    (int64 (U,), atlas rows), from the atlas alone: in = the category's types pooled exactly
    (Chan) from their per-type count, mean and M2; out = every other token fed, the unit's totals
    minus the category (exact in real numbers; in floating point the out-group's M2 carries a
    relative error of about 1e-7 x M2_in / M2_out, from the float32 per-type M2)."""
    if not has_type_moments(atlas):
        raise MaxactError(f"atlas {atlas.path} keeps no per-type second moments (made before them); rebuild "
                          f"it, or give --model to run the streaming pass")
    tracked = np.asarray(atlas[F.TUNING_IDS])
    where = {int(t): i for i, t in enumerate(tracked.tolist())}
    type_rows = sorted({where[int(t)] for t in token_ids})
    count = np.asarray(atlas[F.TYPE_COUNTS])[type_rows]  # (k,)
    dev = np.asarray(atlas[F.TYPE_DEV][type_rows])[:, rows]  # (k, U) float32, mean_t - unit mean
    m2 = np.asarray(atlas[F.TYPE_M2][type_rows])[:, rows]  # (k, U) float32
    total = np.asarray(atlas[F.TYPE_STATS])[rows]
    n_total = int(np.asarray(atlas[F.TYPE_COUNTS]).sum())
    n_in, dev_in, m2_in = combine(count, dev, m2)
    n_out = n_total - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        dev_out = np.where(n_out > 0, -n_in * dev_in / np.maximum(n_out, 1), np.nan)  # sum of n_g dev_g is 0
        between = n_in * dev_in**2 + n_out * dev_out**2
    m2_out = np.maximum(total["m2"] - m2_in - between, 0.0)
    mean = total["mean"]
    return TwoGroups(n_in, mean + dev_in, m2_in, n_out.astype(np.int64), mean + dev_out, m2_out)


# ---- tables ----------------------------------------------------------------------------------------
class ConceptTable(NamedTuple):
    """Every unit tested against one category."""

    category: str  # what the category is, in words
    source: str  # where the numbers come from (the atlas, a pass over a corpus, contrast sets)
    units: list[str]  # (U,) unit ids
    groups: TwoGroups
    stats: Separation
    auroc_method: str  # AUROC_EXACT or AUROC_BINORMAL


class AnovaTable(NamedTuple):
    """Every unit tested across the groups of a property."""

    prop: str  # the property (--by)
    source: str
    group_names: tuple[str, ...]
    units: list[str]
    count: np.ndarray  # (G,) int64 observations of each group
    mean: np.ndarray  # (G, U) float64
    anova: GroupsAnova


def by_decreasing(x: np.ndarray) -> np.ndarray:
    """Indices of x from largest to smallest, NaN last (ties: lower index first)."""
    return np.lexsort((np.arange(len(x)), -np.nan_to_num(x, nan=0.0), np.isnan(x)))


COLUMNS = ("unit", "n_in", "n_out", "mean_in", "mean_out", "t", "p", "q", "d", "auroc")


def table_columns(table: ConceptTable) -> dict[str, np.ndarray]:
    """The whole table by column (CSV, Parquet), rows sorted by t descending."""
    order = by_decreasing(table.stats.t)
    g, s = table.groups, table.stats
    cols = {"unit": np.asarray(table.units, dtype=object), "n_in": g.n_in, "n_out": g.n_out, "mean_in": g.mean_in,
            "mean_out": g.mean_out, "t": s.t, "p": s.p, "q": s.q, "d": s.d, "auroc": s.auroc}
    return {k: np.asarray(v)[order] for k, v in cols.items()}


def _json_floats(x: np.ndarray) -> list:
    """(n,) floats as a list of Python floats, None where NaN or infinite (json_float, vectorised)."""
    x = np.asarray(x, dtype=np.float64)
    out = x.astype(object)
    out[~np.isfinite(x)] = None
    return out.tolist()


def table_json(table: ConceptTable, top: int | None = None) -> dict:
    """``{"category", "n_in", "n_out", "source", "auroc_method", "n_units", "units": [{"unit",
    "n_in", "n_out", "mean_in", "mean_out", "t", "p", "q", "d", "auroc"}, ...]}``, units sorted by t
    descending (the first ``top``; all when None)."""
    n = len(table.units) if top is None else min(top, len(table.units))
    cols = {k: v[:n] for k, v in table_columns(table).items()}
    values = [cols["unit"].tolist()] + [cols[k].astype(np.int64).tolist() if k.startswith("n_") else _json_floats(cols[k])
                                        for k in COLUMNS[1:]]
    units = [dict(zip(COLUMNS, row)) for row in zip(*values)]
    return {"category": table.category, "n_in": int(np.max(table.groups.n_in, initial=0)),
            "n_out": int(np.max(table.groups.n_out, initial=0)), "source": table.source,
            "auroc_method": table.auroc_method, "n_units": len(table.units), "units": units}


def anova_json(table: AnovaTable, top: int | None = None, histograms: list[dict] | None = None) -> dict:
    """``{"property", "source", "groups": [{"name", "n"}], "n_units", "units": [{"unit", "F", "p",
    "eta2", "means"}], "histograms"}``, units sorted by F descending."""
    order = by_decreasing(table.anova.f)[: len(table.units) if top is None else top]
    a = table.anova
    return {"property": table.prop, "source": table.source,
            "groups": [{"name": n, "n": int(c)} for n, c in zip(table.group_names, table.count)],
            "n_units": len(table.units),
            "units": [{"unit": table.units[i], "F": json_float(a.f[i]), "p": json_float(a.p[i]),
                       "eta2": json_float(a.eta2[i]), "means": [json_float(m) for m in table.mean[:, i]]}
                      for i in order.tolist()],
            "histograms": histograms or []}


def volcano_points(s: Separation) -> tuple[np.ndarray, np.ndarray]:
    """(drawn (U,) bool, -log10 p (U,) float64) of a volcano plot: a unit is drawn when its d and p
    are defined; p of 0 (beyond float64) is drawn at the smallest positive p, or at the smallest
    positive float64 when every p is 0."""
    floor = np.nanmin(np.where(s.p > 0, s.p, np.nan)) if (s.p > 0).any() else np.finfo(np.float64).tiny
    with np.errstate(invalid="ignore"):
        logp = -np.log10(np.where(s.p > 0, s.p, floor))
    return np.isfinite(s.d) & np.isfinite(s.p), logp


def concept_page(atlas: Atlas, token_texts: list[str], sites: tuple[str, ...] | None = None, top: int = 50) -> dict:
    """The viewer's concept page (`/api/concept`): ``table_json`` of a category of tracked token
    types answered from the atlas alone (the first ``top`` units), and ``volcano``: Cohen's d and
    -log10 p of every unit tested whose d and p are defined (p of 0 drawn at the smallest positive
    p, or at the smallest positive float64 when every p is 0), in the table's unit order before
    sorting, with the units' ids."""
    from maxact.analysis.categories import token_ids_for

    ids = token_ids_for(atlas.vocab, token_texts)
    tracked = set(np.asarray(atlas[F.TUNING_IDS]).tolist())
    missing = [atlas.token_text(i) for i in ids if i not in tracked]
    if missing:
        raise MaxactError(f"{', '.join(repr(t) for t in missing)} is not among the {len(tracked)} token types the "
                          f"atlas tracks: run `maxact concept` with the model for a streaming pass")
    rows, names = atlas_units(atlas, sites, None)
    groups = type_category(atlas, ids, rows)
    texts = ", ".join(repr(t) for t in token_texts)
    table = ConceptTable(f"tokens {texts} ({len(ids)} type{'s' * (len(ids) != 1)})", f"atlas {atlas.path.name}",
                         names, groups, separation(groups), AUROC_BINORMAL)
    out = table_json(table, top)
    s = table.stats
    ok, logp = volcano_points(s)
    out["volcano"] = {"units": [names[i] for i in np.nonzero(ok)[0]],
                      "d": np.round(s.d[ok], 4).tolist(), "logp": np.round(logp[ok], 3).tolist(),
                      "q_below": (s.q[ok] < CONCEPT.q_threshold).astype(int).tolist(),
                      "q_threshold": CONCEPT.q_threshold}
    return out
