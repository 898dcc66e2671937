"""Checks that kill the mutants `make mutation` found alive in analysis/concept.py, analysis/probe.py
and engine/concept.py (issue 13, docs/MUTATION.md).

Every statistic is recomputed here from raw values (scipy.stats, scikit-learn, numpy brute force)
on inputs placed on the functions' boundaries: groups of 0, 1 and 2 observations, constant groups,
variances below 1, p of exactly 0, q exactly on the threshold, a category that is every token fed.
The concept page reads a stand-in atlas (``FakeAtlas``) whose per-type moments are computed here
from raw activations the way docs/STORE.md defines them, so the page is checked against scipy on
those activations. Every function is called inside its test (docs/MUTATION.md, "Module-scoped
fixtures").
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from maxact.analysis import concept as C
from maxact.analysis import probe as P
from maxact.errors import MaxactError
from maxact.store import format as F


def moments(x_in: np.ndarray, x_out: np.ndarray) -> C.TwoGroups:
    """Raw values (n_in, U) and (n_out, U) -> their TwoGroups, in float64."""

    def one(x):
        x = np.asarray(x, dtype=np.float64)
        m = x.mean(0) if len(x) else np.full(x.shape[1], np.nan)
        return np.full(x.shape[1], len(x), dtype=np.int64), m, ((x - m) ** 2).sum(0)

    return C.TwoGroups(*one(x_in), *one(x_out))


def group(n: list[int], mean: list[float], m2: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(n, dtype=np.int64), np.asarray(mean, dtype=np.float64), np.asarray(m2, dtype=np.float64)


# ---- the two-group statistics -------------------------------------------------------------------
def test_sample_var_is_ddof_one_from_two_observations():
    v = C.sample_var(np.array([0, 1, 2, 3, 5]), np.array([5.0, 5.0, 4.0, 9.0, 2.0]))
    np.testing.assert_array_equal(v, [np.nan, np.nan, 4.0, 4.5, 0.5])


@pytest.mark.parametrize("n_in,n_out", [(2, 7), (7, 2), (2, 2)])
def test_welch_with_groups_of_two_matches_scipy(n_in, n_out):
    rng = np.random.default_rng(n_in * 10 + n_out)
    x_in, x_out = rng.normal(0.5, 1.0, (n_in, 4)), rng.normal(0.0, 2.0, (n_out, 4))
    t, df, p = C.welch(moments(x_in, x_out))
    ref = sps.ttest_ind(x_in, x_out, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-9)
    np.testing.assert_allclose(df, ref.df, rtol=1e-9)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-9)
    s = C.separation(moments(x_in, x_out))
    np.testing.assert_allclose(s.df, ref.df, rtol=1e-9)
    np.testing.assert_allclose(s.t, ref.statistic, rtol=1e-9)


def test_cohens_d_on_its_boundaries():
    # unit 0: 1 + 2 observations (one degree of freedom); 1: an empty category (no degree of
    # freedom); 2: two constant groups (pooled sd 0); 3: a pooled sd below 1
    n_in, mean_in, m2_in = group([1, 0, 3, 4], [1.0, 0.0, 2.0, 0.3], [0.0, 0.0, 0.0, 0.02])
    n_out, mean_out, m2_out = group([2, 2, 3, 4], [0.0, 1.0, 1.0, 0.1], [2.0, 2.0, 0.0, 0.04])
    d = C.cohens_d(C.TwoGroups(n_in, mean_in, m2_in, n_out, mean_out, m2_out))
    assert d[0] == pytest.approx(1.0 / np.sqrt(2.0 / 1), rel=1e-12)
    assert np.isnan(d[1]) and np.isnan(d[2])
    assert d[3] == pytest.approx(0.2 / np.sqrt(0.06 / 6), rel=1e-12)


def test_cohens_d_and_binormal_auroc_of_small_variances_against_raw_values():
    rng = np.random.default_rng(7)
    x_in, x_out = rng.normal(0.01, 0.01, (9, 5)), rng.normal(0.0, 0.02, (12, 5))
    d = C.cohens_d(moments(x_in, x_out))
    pooled = np.sqrt((8 * x_in.var(0, ddof=1) + 11 * x_out.var(0, ddof=1)) / 19)
    np.testing.assert_allclose(d, (x_in.mean(0) - x_out.mean(0)) / pooled, rtol=1e-9)
    z = (x_in.mean(0) - x_out.mean(0)) / np.sqrt(x_in.var(0, ddof=1) + x_out.var(0, ddof=1))
    np.testing.assert_allclose(C.binormal_auroc(moments(x_in, x_out)), sps.norm.cdf(z), rtol=1e-9)


def test_binormal_auroc_of_constant_groups_is_nan():
    g = C.TwoGroups(*group([3, 3], [1.0, 1.0], [0.0, 0.0]), *group([4, 4], [0.0, 1.0], [0.0, 0.0]))
    assert np.isnan(C.binormal_auroc(g)).all()


def test_degenerate_groups_raise_no_warning():
    """Constant groups, groups of one and none: NaN statistics, and nothing printed."""
    g = C.TwoGroups(*group([3, 3, 1, 0], [1.0, 1.0, 1.0, np.nan], [0.0, 0.0, 0.0, 0.0]),
                    *group([4, 4, 1, 5], [0.0, 1.0, 2.0, 1.0], [0.0, 0.0, 0.0, 3.0]))
    count = np.array([[3, 3, 3, 0], [4, 4, 0, 0]])
    mean = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = C.separation(g)
        a = C.anova(count, mean, np.zeros((2, 4)))
        empty = C.exact_auroc(np.zeros((0, 3)), np.ones((4, 3)))
    assert np.isnan(s.t).all() and np.isnan(s.p).all() and np.isnan(s.d).all() and np.isnan(s.auroc).all()
    assert np.isnan(a.f).all() and np.isnan(a.p).all()
    assert np.isnan(empty).all() and empty.shape == (3,)


def test_exact_auroc_with_one_observation_on_a_side_and_none():
    rng = np.random.default_rng(8)
    for n_in, n_out in ((1, 6), (6, 1)):
        x_in, x_out = rng.normal(0, 1, (n_in, 5)), rng.normal(0.2, 1, (n_out, 5))
        auc = C.exact_auroc(x_in, x_out)
        y = np.r_[np.ones(n_in), np.zeros(n_out)]
        for u in range(5):
            assert auc[u] == pytest.approx(roc_auc_score(y, np.r_[x_in[:, u], x_out[:, u]]), abs=1e-12)
    for x_in, x_out in ((np.zeros((0, 4)), np.ones((3, 4))), (np.ones((3, 4)), np.zeros((0, 4)))):
        empty = C.exact_auroc(x_in, x_out)
        assert empty.shape == (4,) and empty.dtype == np.float64 and np.isnan(empty).all()


# ---- ANOVA and pooling --------------------------------------------------------------------------
def test_anova_with_per_unit_counts_and_groups_of_one_matches_f_oneway():
    rng = np.random.default_rng(9)
    # unit u sees groups of sizes sizes[:, u]: a group of 1 observation counts as a group
    sizes = np.array([[1, 5, 4], [6, 1, 7], [5, 8, 1]])  # (G, U)
    values = [[rng.normal(g * 0.5, 0.1, sizes[g, u]) for g in range(3)] for u in range(3)]
    mean = np.array([[values[u][g].mean() for u in range(3)] for g in range(3)])
    m2 = np.array([[((values[u][g] - values[u][g].mean()) ** 2).sum() for u in range(3)] for g in range(3)])
    a = C.anova(sizes, mean, m2)
    for u in range(3):
        ref = sps.f_oneway(*values[u])
        assert a.f[u] == pytest.approx(ref.statistic, rel=1e-9)
        assert a.p[u] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
        allx = np.concatenate(values[u])
        assert a.eta2[u] == pytest.approx(
            sum(len(v) * (v.mean() - allx.mean()) ** 2 for v in values[u]) / ((allx - allx.mean()) ** 2).sum(), rel=1e-9)
    assert (a.eta2 < 1.0).all() and ((a.f > 0) & np.isfinite(a.f)).all()


def test_anova_boundaries_of_f():
    # unit 0: two constant groups (no within-group spread): F undefined; unit 1: one group with
    # observations, whose pooled mean differs from its own in the last bit: F undefined
    count = np.array([3, 0])
    mean = np.array([[1.0, 0.1], [2.0, 0.0]])
    m2 = np.array([[0.0, 1.0], [0.0, 0.0]])
    a = C.anova(np.array([[3, 3], [4, 0]]), mean, m2)
    assert np.isnan(a.f).all() and np.isnan(a.p).all()
    assert a.eta2[0] == 1.0
    one = C.anova(count, mean[:, 1:], m2[:, 1:])
    assert np.isnan(one.f).all()


def test_anova_of_small_sums_of_squares_against_raw_values():
    x = [np.array([0.01, 0.02, 0.015]), np.array([0.03, 0.028, 0.035, 0.031])]
    a = C.anova(np.array([3, 4]), np.array([[v.mean()] for v in x]), np.array([[((v - v.mean()) ** 2).sum()] for v in x]))
    ref = sps.f_oneway(*x)
    assert a.f[0] == pytest.approx(ref.statistic, rel=1e-9)
    allx = np.concatenate(x)
    assert a.eta2[0] == pytest.approx(sum(len(v) * (v.mean() - allx.mean()) ** 2 for v in x)
                                      / ((allx - allx.mean()) ** 2).sum(), rel=1e-9)


def test_combine_one_observation_no_observation_and_float32_m2():
    one = C.combine(np.array([1]), np.array([[0.25, -3.0]]), np.array([[0.0, 0.0]]))
    assert one[0].tolist() == [1, 1] and one[0].dtype == np.int64
    np.testing.assert_array_equal(one[1], [0.25, -3.0])
    np.testing.assert_array_equal(one[2], [0.0, 0.0])
    none = C.combine(np.array([0, 0]), np.array([[0.5, 1.0, 2.0], [1.0, 1.0, 1.0]]), np.zeros((2, 3)))
    assert none[0].tolist() == [0, 0, 0]
    assert none[1].shape == (3,) and np.isnan(none[1]).all() and np.isnan(none[2]).all()
    # float32 M2 rows (the atlas's type_m2.npy) are summed in float64: 1 + 3e-8 is 1 in float32
    m2 = np.array([[1.0], [3e-8]], dtype=np.float32)
    pooled = C.combine(np.array([2, 2]), np.zeros((2, 1), dtype=np.float32), m2)
    assert pooled[2][0] == m2.astype(np.float64).sum() and pooled[2][0] > 1.0


# ---- tables -------------------------------------------------------------------------------------
def table(n_units: int = 6, n_in: int = 5, n_out: int = 9) -> C.ConceptTable:
    rng = np.random.default_rng(10)
    g = moments(rng.normal(0.3, 1, (n_in, n_units)), rng.normal(0, 1, (n_out, n_units)))
    return C.ConceptTable("cat", "src", [f"u{i}" for i in range(n_units)], g, C.separation(g), C.AUROC_BINORMAL)


def test_table_json_every_key_and_integer_counts():
    t = table()
    out = C.table_json(t)
    assert out["category"] == "cat" and out["source"] == "src" and out["auroc_method"] == C.AUROC_BINORMAL
    assert out["n_in"] == 5 and out["n_out"] == 9 and out["n_units"] == 6
    assert set(out) == {"category", "n_in", "n_out", "source", "auroc_method", "n_units", "units"}
    order = np.argsort(-t.stats.t, kind="stable")
    for row, u in zip(out["units"], order):
        assert list(row) == list(C.COLUMNS)
        assert row["unit"] == f"u{u}"
        assert type(row["n_in"]) is int and type(row["n_out"]) is int and (row["n_in"], row["n_out"]) == (5, 9)
        assert type(row["t"]) is float and row["t"] == t.stats.t[u] and row["auroc"] == t.stats.auroc[u]
    cols = C.table_columns(t)
    assert cols["unit"].dtype == object  # write_table_files hands object columns to pyarrow as lists


def test_table_json_of_an_empty_category_and_of_no_units():
    t = table()
    g = t.groups._replace(n_in=np.zeros(6, dtype=np.int64), n_out=np.zeros(6, dtype=np.int64))
    out = C.table_json(t._replace(groups=g))
    assert out["n_in"] == 0 and out["n_out"] == 0
    none = C.table_json(table(n_units=0))
    assert none["n_in"] == 0 and none["n_out"] == 0 and none["units"] == [] and none["n_units"] == 0


def test_anova_json_every_key_and_top():
    mean = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 0.5]])
    a = C.GroupsAnova(np.array([2.0, np.nan, 5.0]), np.array([0.2, np.nan, 0.01]), np.array([0.1, np.nan, 0.4]))
    t = C.AnovaTable("token-length", "atlas x", ("short", "long"), ["a", "b", "c"], np.array([4, 6]), mean, a)
    out = C.anova_json(t)
    assert out == {"property": "token-length", "source": "atlas x",
                   "groups": [{"name": "short", "n": 4}, {"name": "long", "n": 6}], "n_units": 3,
                   "units": [{"unit": "c", "F": 5.0, "p": 0.01, "eta2": 0.4, "means": [2.0, 0.5]},
                             {"unit": "a", "F": 2.0, "p": 0.2, "eta2": 0.1, "means": [0.0, 1.0]},
                             {"unit": "b", "F": None, "p": None, "eta2": None, "means": [1.0, 1.0]}],
                   "histograms": []}
    assert [u["unit"] for u in C.anova_json(t, top=1)["units"]] == ["c"]
    assert C.anova_json(t, histograms=[{"unit": "a"}])["histograms"] == [{"unit": "a"}]


# ---- the atlas-only category and the concept page ------------------------------------------------
class FakeAtlas:
    """What concept_page, type_category and atlas_units read of an atlas, computed here from raw
    activations (docs/STORE.md, "Per-type moments"): tokens (n,) and acts (n, U), the sites side
    by side; rows of type_counts / type_dev / type_m2 are the tracked types, then the rest."""

    def __init__(self, tokens, acts, vocab, tracked, widths=(None,), moments_kept=True):
        tokens, acts = np.asarray(tokens), np.asarray(acts, dtype=np.float64)
        self.path = Path("/nowhere/fake-atlas")
        self.vocab = vocab
        widths = [acts.shape[1]] if widths == (None,) else list(widths)
        offsets = np.cumsum([0] + widths)
        self.sites = [SimpleNamespace(name=f"L{i}.resid_pre" if i < len(widths) - 1 else "ln_final",
                                      site="resid_pre" if i < len(widths) - 1 else "ln_final",
                                      layer=i if i < len(widths) - 1 else None, width=w, offset=int(o))
                      for i, (w, o) in enumerate(zip(widths, offsets))]
        unit_mean = acts.mean(0)
        masks = [tokens == t for t in tracked] + [~np.isin(tokens, tracked)]
        counts = np.array([m.sum() for m in masks], dtype=np.int64)
        dev = np.zeros((len(masks), acts.shape[1]))
        m2 = np.zeros((len(masks), acts.shape[1]))
        for i, m in enumerate(masks):
            if m.any():
                dev[i] = acts[m].mean(0) - unit_mean
                m2[i] = ((acts[m] - acts[m].mean(0)) ** 2).sum(0)
        total = np.zeros(acts.shape[1], dtype=F.TYPE_STATS_DTYPE)
        total["count"], total["mean"], total["m2"] = len(tokens), unit_mean, ((acts - unit_mean) ** 2).sum(0)
        self.arrays = {F.TUNING_IDS: np.asarray(tracked, dtype=np.int64), F.TYPE_COUNTS: counts,
                       F.TYPE_DEV: dev.astype(np.float32), F.TYPE_M2: m2.astype(np.float32), F.TYPE_STATS: total}
        files = set(self.arrays) if moments_kept else {F.TUNING_IDS}
        self.manifest = SimpleNamespace(files=files)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def token_text(self, token_id: int) -> str:
        return self.vocab[token_id]


VOCAB = ["a", "b", "c", "d", "e", "f"]


def corpus(n_units: int, seed: int = 0, n: int = 300):
    """Tokens over ids 0..5 (all of them tracked but 5) and activations that depend on the token."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 6, n)
    tokens[:6] = np.arange(6)
    acts = rng.normal(0, 1, (n, n_units)) + 0.3 * tokens[:, None] * rng.normal(0, 1, n_units)
    return tokens, acts


def test_type_category_against_raw_values():
    tokens, acts = corpus(8)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2, 3, 4])
    rows = np.array([6, 1, 3], dtype=np.int64)
    g = C.type_category(atlas, [1, 3], rows)
    is_in = np.isin(tokens, [1, 3])
    x = acts[:, rows]
    assert g.n_in.dtype == np.int64 and g.n_out.dtype == np.int64
    assert g.n_in.tolist() == [is_in.sum()] * 3 and g.n_out.tolist() == [(~is_in).sum()] * 3
    np.testing.assert_allclose(g.mean_in, x[is_in].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.mean_out, x[~is_in].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.m2_in, ((x[is_in] - x[is_in].mean(0)) ** 2).sum(0), rtol=1e-5)
    np.testing.assert_allclose(g.m2_out, ((x[~is_in] - x[~is_in].mean(0)) ** 2).sum(0), rtol=1e-5)


def test_type_category_with_no_token_and_one_token_outside():
    tokens = np.array([0, 1, 0, 1, 1, 2])
    acts = np.array([[0.1, 1.0], [0.3, 2.0], [0.2, 1.5], [0.35, 2.5], [0.31, 2.2], [0.05, 7.0]])
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2])
    every = C.type_category(atlas, [0, 1, 2], np.array([0, 1]))
    assert every.n_out.tolist() == [0, 0] and np.isnan(every.mean_out).all()
    one_out = C.type_category(atlas, [0, 1], np.array([0, 1]))
    assert one_out.n_out.tolist() == [1, 1]
    np.testing.assert_allclose(one_out.mean_out, acts[5], rtol=1e-5)
    np.testing.assert_allclose(one_out.m2_out, [0.0, 0.0], atol=1e-5)
    # a spread below 1 outside the category
    small = C.type_category(atlas, [2], np.array([0, 1]))
    x = acts[tokens != 2]
    np.testing.assert_allclose(small.m2_out, ((x - x.mean(0)) ** 2).sum(0), rtol=1e-5)
    assert small.m2_out[0] < 0.1


def test_type_category_of_an_atlas_without_type_moments_says_so():
    tokens, acts = corpus(3)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1], moments_kept=False)
    with pytest.raises(MaxactError, match=r"^atlas /nowhere/fake-atlas keeps no per-type second moments \(made "
                                          r"before them\); rebuild it, or give --model to run the streaming pass$"):
        C.type_category(atlas, [0], np.arange(3))


def test_atlas_units_error_lists_eight_sites():
    tokens, acts = corpus(10)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1], widths=(1,) * 10)
    with pytest.raises(MaxactError) as e:
        C.atlas_units(atlas, ("mlp_out",), None)
    names = ", ".join(f"L{i}.resid_pre" for i in range(8))
    assert str(e.value) == f"--sites/--layers select no site of this atlas; it holds {names}, ... (10 in all)"


def page_expected(tokens, acts, category: list[int]):
    """scipy's Welch t, p, Benjamini-Hochberg q and Cohen's d over the raw activations."""
    is_in = np.isin(tokens, category)
    x_in, x_out = acts[is_in], acts[~is_in]
    ref = sps.ttest_ind(x_in, x_out, equal_var=False)
    n1, n2 = len(x_in), len(x_out)
    sd = np.sqrt(((n1 - 1) * x_in.var(0, ddof=1) + (n2 - 1) * x_out.var(0, ddof=1)) / (n1 + n2 - 2))
    return ref.statistic, ref.pvalue, (x_in.mean(0) - x_out.mean(0)) / sd


def test_concept_page_every_key_against_scipy():
    tokens, acts = corpus(60)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2, 3, 4], widths=(30, 30))
    page = C.concept_page(atlas, ["b", "d"])
    assert set(page) == {"category", "n_in", "n_out", "source", "auroc_method", "n_units", "units", "volcano"}
    assert page["category"] == "tokens 'b', 'd' (2 types)" and page["source"] == "atlas fake-atlas"
    assert page["auroc_method"] == C.AUROC_BINORMAL and page["n_units"] == 60 and len(page["units"]) == 50
    full = C.concept_page(atlas, ["b", "d"], top=1000)
    assert full["units"][:50] == page["units"]
    names = [f"L0.resid_pre:{i}" for i in range(30)] + [f"ln_final:{i}" for i in range(30)]
    t, p, d = page_expected(tokens, acts, [1, 3])
    q = sps.false_discovery_control(p)
    by_unit = {u["unit"]: u for u in full["units"]}
    for u, name in enumerate(names):
        row = by_unit[name]
        assert row["t"] == pytest.approx(t[u], rel=1e-5) and row["p"] == pytest.approx(p[u], rel=1e-4, abs=1e-12)
        assert row["q"] == pytest.approx(q[u], rel=1e-4) and row["d"] == pytest.approx(d[u], rel=1e-5)
    v = full["volcano"]
    assert set(v) == {"units", "d", "logp", "q_below", "q_threshold"} and v["q_threshold"] == 0.05
    assert v["units"] == names
    assert v["d"] == [round(by_unit[n]["d"], 4) for n in names]
    assert v["logp"] == [float(np.round(-np.log10(by_unit[n]["p"]), 3)) for n in names]
    assert all(type(b) is int for b in v["q_below"])
    assert v["q_below"] == [int(by_unit[n]["q"] < 0.05) for n in names] and 0 < sum(v["q_below"]) < 60


def test_concept_page_one_type_with_one_token():
    tokens, acts = corpus(4)
    tokens = np.where(tokens == 4, 3, tokens)
    tokens[-1] = 4  # type 4 occurs once: t and p are undefined (no variance inside), d is not
    acts = np.concatenate([acts, np.full((len(tokens), 1), 0.5)], axis=1)  # unit 4 constant: d undefined too
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2, 3, 4])
    page = C.concept_page(atlas, ["e"])
    assert page["category"] == "tokens 'e' (1 type)" and page["n_in"] == 1
    rows = {u["unit"]: u for u in page["units"]}
    assert all(u["t"] is None and u["p"] is None for u in page["units"])
    assert rows["ln_final:4"]["d"] is None and all(rows[f"ln_final:{i}"]["d"] is not None for i in range(4))
    # p is undefined for every unit: no unit is drawn (d alone places no point)
    v = page["volcano"]
    assert v["units"] == [] and v["logp"] == [] and v["d"] == [] and v["q_below"] == []


def separated(n_units_far: int, n_units_near: int):
    """Tokens 0 (the category) and 1; the first units separate them so far that p is 0."""
    rng = np.random.default_rng(5)
    tokens = np.r_[np.zeros(200, dtype=np.int64), np.ones(300, dtype=np.int64)]
    far = np.where(tokens[:, None] == 0, 50.0, 0.0) + rng.normal(0, 1e-2, (500, n_units_far))
    near = rng.normal(0, 1, (500, n_units_near)) + 0.2 * (tokens[:, None] == 0)
    return tokens, np.concatenate([far, near], axis=1)


def test_concept_page_draws_p_of_zero_at_the_smallest_positive_p():
    tokens, acts = separated(2, 3)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1])
    page = C.concept_page(atlas, ["a"], top=1000)
    by_unit = {u["unit"]: u for u in page["units"]}
    p = [by_unit[f"ln_final:{i}"]["p"] for i in range(5)]
    assert p[0] == 0.0 and p[1] == 0.0 and min(p[2:]) > 0
    floor = float(np.round(-np.log10(min(p[2:])), 3))
    v = page["volcano"]
    assert v["units"] == [f"ln_final:{i}" for i in range(5)]
    assert v["logp"][:2] == [floor, floor]
    assert v["logp"][2:] == [float(np.round(-np.log10(x), 3)) for x in p[2:]]


def test_concept_page_with_every_p_zero_draws_them_at_zero():
    tokens, acts = separated(3, 0)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = C.concept_page(atlas, ["a"], top=1000)
    assert [u["p"] for u in page["units"]] == [0.0, 0.0, 0.0]
    assert page["volcano"]["units"] == ["ln_final:0", "ln_final:1", "ln_final:2"]
    top = float(np.round(-np.log10(np.finfo(np.float64).tiny), 3))  # 307.653: above every p > 0
    assert page["volcano"]["logp"] == [top, top, top]


def test_concept_page_q_exactly_on_the_threshold_is_not_below(monkeypatch):
    tokens, acts = corpus(12)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2, 3, 4])
    first = C.concept_page(atlas, ["b", "c"], top=1000)
    q = {u["unit"]: u["q"] for u in first["units"]}
    on = first["volcano"]["units"][3]
    monkeypatch.setattr(C, "CONCEPT", dataclasses.replace(C.CONCEPT, q_threshold=q[on]))
    v = C.concept_page(atlas, ["b", "c"], top=1000)["volcano"]
    assert v["q_threshold"] == q[on]
    assert v["q_below"] == [int(q[n] < q[on]) for n in v["units"]]
    assert v["q_below"][3] == 0


def test_concept_page_names_every_untracked_token():
    tokens, acts = corpus(3)
    atlas = FakeAtlas(tokens, acts, VOCAB, [0, 1, 2])
    with pytest.raises(MaxactError) as e:
        C.concept_page(atlas, ["a", "e", "f"])
    assert str(e.value) == ("'e', 'f' is not among the 3 token types the atlas tracks: run `maxact concept` "
                            "with the model for a streaming pass")


# ---- the probe ----------------------------------------------------------------------------------
def probe_data(n_in: int, n_out: int, d: int = 6, seed: int = 11):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_in, dtype=bool), np.zeros(n_out, dtype=bool)]
    x = rng.normal(0, 1, (n_in + n_out, d)) * rng.uniform(0.5, 2, d) + 0.8 * y[:, None] * (np.arange(d) < 2)
    t = sps.ttest_ind(x[y], x[~y], equal_var=False).statistic
    return x.astype(np.float32), y, t


def direct_probe(x, y, s: P.ProbeSettings, folds: int):
    """The probe as scikit-learn computes it, written here."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xf = x.astype(np.float64)
    cv = StratifiedKFold(folds, shuffle=True, random_state=s.seed)
    l2 = make_pipeline(StandardScaler(), LogisticRegression(C=s.c, max_iter=s.max_iter))
    l1 = make_pipeline(StandardScaler(), LogisticRegression(C=s.c, l1_ratio=1.0, solver="liblinear",
                                                             max_iter=s.max_iter, random_state=s.seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc2, acc1 = cross_val_score(l2, xf, y, cv=cv), cross_val_score(l1, xf, y, cv=cv)
        l2.fit(xf, y)
        l1.fit(xf, y)
    return acc2, acc1, l2, l1


@pytest.mark.parametrize("n_in,n_out", [(3, 40), (40, 3)])
def test_probe_folds_are_capped_by_the_smaller_class(n_in, n_out):
    x, y, t = probe_data(n_in, n_out)
    s = P.ProbeSettings(folds=5, c=1.0, max_iter=200, seed=0, top=3)
    r = P.fit_probe(x, y, t, s)
    assert (r.n_in, r.n_out, r.folds) == (n_in, n_out, 3)
    assert r.baseline == 40 / 43
    acc2, acc1, _, _ = direct_probe(x, y, s, 3)
    assert r.l2_accuracy == acc2.mean() and r.l2_accuracy_std == acc2.std()
    assert r.l1_accuracy == acc1.mean() and r.l1_accuracy_std == acc1.std()


def test_probe_with_two_of_a_class_and_fewer():
    x, y, t = probe_data(2, 10)
    r = P.fit_probe(x, y.astype(np.int64), t, P.ProbeSettings(folds=5, c=1.0, max_iter=200, seed=0, top=2))
    assert (r.n_in, r.n_out, r.folds) == (2, 10, 2)
    np.testing.assert_allclose(r.mean_diff, x[y].astype(np.float64).mean(0) - x[~y].astype(np.float64).mean(0),
                               rtol=1e-6)
    x, y, t = probe_data(1, 10)
    with pytest.raises(MaxactError, match=r"^--probe needs at least 2 observations of each class; the pass kept 1 "
                                          r"of the category and 10 of the rest$"):
        P.fit_probe(x, y, t, P.ProbeSettings(folds=5, c=1.0, max_iter=200, seed=0, top=2))


def test_probe_follows_max_iter_and_seed_whatever_the_global_random_state():
    """One solver iteration: the fits are far from converged, so every setting shows."""
    x, y, t = probe_data(30, 30, d=40)
    s = P.ProbeSettings(folds=3, c=1.0, max_iter=1, seed=2, top=40)
    np.random.seed(0)
    r = P.fit_probe(x, y, t, s)
    np.random.seed(1)
    again = P.fit_probe(x, y, t, s)
    acc2, acc1, l2, l1 = direct_probe(x, y, s, 3)
    for one in (r, again):
        assert one.l1_nonzero == np.count_nonzero(l1[-1].coef_[0])
        assert one.l1_accuracy == acc1.mean() and one.l2_accuracy == acc2.mean()
        np.testing.assert_array_equal(one.direction, (l2[-1].coef_[0] / l2[0].scale_).astype(np.float32))
    assert r.direction.dtype == np.float32 and r.mean_diff.dtype == np.float32


def test_probe_lists_tied_weights_by_index_and_skips_nan_t():
    x, y, t = probe_data(25, 25, d=10)
    x = np.concatenate([x, np.repeat(x[:, :1], 30, axis=1)], axis=1)  # 30 copies of unit 0: tied weights
    t = np.r_[t, np.full(30, t[0])]
    t[5] = np.nan
    r = P.fit_probe(x, y, t, P.ProbeSettings(folds=3, c=1.0, max_iter=500, seed=0, top=40))
    w = dict(r.top_units)
    tied = sorted(i for i in w if i == 0 or i >= 10)
    assert [i for i, _ in r.top_units if i in tied] == tied
    weights = np.array([wi for _, wi in r.top_units])
    assert (np.diff(np.abs(weights)) <= 0).all()
    keep = ~np.isnan(t)
    full_w = np.zeros(x.shape[1])
    for i, wi in r.top_units:
        full_w[i] = wi
    assert np.isfinite(r.spearman)
    assert r.spearman == pytest.approx(sps.spearmanr(np.abs(full_w)[keep], np.abs(t)[keep]).statistic, abs=1e-9)


def example_result() -> P.ProbeResult:
    return P.ProbeResult(n_in=12, n_out=30, folds=4, baseline=30 / 42, l2_accuracy=0.81, l2_accuracy_std=0.05,
                         l1_accuracy=0.78, l1_accuracy_std=0.04, l1_nonzero=7, top_units=[(3, 1.25), (0, -0.5)],
                         spearman=0.42, direction=np.zeros(4, np.float32), mean_diff=np.zeros(4, np.float32))


def test_probe_json_every_key():
    assert P.probe_json("L1.resid_pre", example_result()) == {
        "site": "L1.resid_pre", "n_in": 12, "n_out": 30, "folds": 4, "baseline": 30 / 42,
        "l2": {"accuracy": 0.81, "accuracy_std": 0.05},
        "l1": {"accuracy": 0.78, "accuracy_std": 0.04, "nonzero": 7},
        "top_units": [{"unit": "L1.resid_pre:3", "weight": 1.25}, {"unit": "L1.resid_pre:0", "weight": -0.5}],
        "spearman_abs_weight_abs_t": 0.42}


def test_probe_text():
    assert P.probe_text("L1.resid_pre", example_result()) == (
        "probe L1.resid_pre: 12 in / 30 out, 4-fold accuracy L2 0.810 (+-0.050), L1 0.780 (+-0.040, 7 units "
        "non-zero), majority baseline 0.714; Spearman |w| vs |t| 0.420\n"
        "  largest standardised L2 weights: L1.resid_pre:3 (+1.25), L1.resid_pre:0 (-0.50)")


# ---- the concept pass's probe observations ---------------------------------------------------------
def test_probe_matrix_empty_and_sorted_by_observation_id():
    import torch

    from maxact.engine.concept import BatchObservations, ConceptAccumulator, ObservationMap

    acc = ConceptAccumulator(6, 2, [], [slice(2, 5), slice(0, 6)])
    values, ids = acc.probe_matrix(0)
    assert values.shape == (0, 3) and values.dtype == np.float32 and ids.shape == (0,) and ids.dtype == np.int64
    assert acc.probe_matrix(1)[0].shape == (0, 6)
    # 8 tokens, one observation each; observations 1, 2, 5 and 6 kept for the probe; fed in two
    # batches whose positions run backwards, so the kept ids arrive as 6, 5, then 2, 1
    obs_map = ObservationMap(token_obs=np.arange(8, dtype=np.int64), obs_group=np.array([0, 1] * 4),
                             obs_size=np.ones(8, dtype=np.int64), probe=np.isin(np.arange(8), [1, 2, 5, 6]),
                             n_groups=2)
    x = torch.arange(48, dtype=torch.float32).reshape(8, 6)  # row p: the activations at position p
    for positions in (np.array([[7, 6, 5, 4]]), np.array([[3, 2, 1, 0]])):
        acc.update(x[torch.from_numpy(positions.reshape(-1))], BatchObservations.of(obs_map, positions, "cpu"))
    values, ids = acc.probe_matrix(0)
    assert ids.tolist() == [1, 2, 5, 6] and ids.dtype == np.int64
    np.testing.assert_array_equal(values, x.numpy()[[1, 2, 5, 6], 2:5])
