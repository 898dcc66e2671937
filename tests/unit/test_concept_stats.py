"""The statistics of `maxact concept` (analysis/concept.py) against scipy, scikit-learn and brute
force on small inputs, to 1e-6; and the category definitions (analysis/categories.py)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from maxact.analysis import concept as C
from maxact.analysis.categories import (
    match_tags,
    phrase_spans,
    property_groups,
    read_tagged,
    span_labels,
    token_ids_for,
    token_labels,
    token_spans,
)
from maxact.errors import MaxactError


def _groups(x_in: np.ndarray, x_out: np.ndarray) -> C.TwoGroups:
    def mom(x):
        m = x.mean(0)
        return np.full(x.shape[1], len(x)), m, ((x - m) ** 2).sum(0)

    return C.TwoGroups(*mom(x_in), *mom(x_out))


@pytest.fixture
def samples():
    rng = np.random.default_rng(1)
    x_in = rng.normal(0.3, 1.0, (40, 25)) * rng.uniform(0.5, 2, 25)
    x_out = rng.standard_t(3, (300, 25)) + rng.normal(0, 0.2, 25)
    x_in[:, 0] = np.round(x_in[:, 0])  # ties
    x_out[:, 0] = np.round(x_out[:, 0])
    return x_in, x_out


def test_welch_matches_scipy(samples):
    x_in, x_out = samples
    t, df, p = C.welch(_groups(x_in, x_out))
    ref = stats.ttest_ind(x_in, x_out, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-6)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(df, ref.df, rtol=1e-6)


def test_welch_undefined_for_tiny_or_constant_groups():
    g = C.TwoGroups(np.array([1, 5, 5]), np.array([1.0, 2.0, 2.0]), np.array([0.0, 1.0, 0.0]),
                    np.array([5, 1, 5]), np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 0.0]))
    t, _, p = C.welch(g)
    assert np.isnan(t).all() and np.isnan(p).all()


def test_bh_matches_scipy_and_keeps_nan():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 1e-4, 20), [0.0, 1.0]])
    q = C.bh_q(p)
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    with_nan = np.concatenate([p, [np.nan, np.nan]])
    q2 = C.bh_q(with_nan)
    assert np.isnan(q2[-2:]).all()
    np.testing.assert_allclose(q2[:-2], q, rtol=1e-12)


def test_bh_by_brute_force():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001])
    m = len(p)
    brute = [min(min(p[j] * m / (np.sum(p <= p[j])) for j in range(m) if p[j] >= p[i]), 1) for i in range(m)]
    np.testing.assert_allclose(C.bh_q(p), brute, rtol=1e-12)


def test_cohens_d_and_binormal_auroc_by_brute_force(samples):
    x_in, x_out = samples
    g = _groups(x_in, x_out)
    n1, n2 = len(x_in), len(x_out)
    pooled = np.sqrt(((n1 - 1) * x_in.var(0, ddof=1) + (n2 - 1) * x_out.var(0, ddof=1)) / (n1 + n2 - 2))
    np.testing.assert_allclose(C.cohens_d(g), (x_in.mean(0) - x_out.mean(0)) / pooled, rtol=1e-9)
    z = (x_in.mean(0) - x_out.mean(0)) / np.sqrt(x_in.var(0, ddof=1) + x_out.var(0, ddof=1))
    np.testing.assert_allclose(C.binormal_auroc(g), stats.norm.cdf(z), rtol=1e-9)


def test_exact_auroc_matches_sklearn_and_pairs(samples):
    x_in, x_out = samples
    auc = C.exact_auroc(x_in, x_out)
    y = np.r_[np.ones(len(x_in)), np.zeros(len(x_out))]
    for u in range(x_in.shape[1]):
        assert auc[u] == pytest.approx(roc_auc_score(y, np.r_[x_in[:, u], x_out[:, u]]), abs=1e-12)
    # brute force over pairs, ties half
    u = 0
    pairs = (x_in[:, u][:, None] > x_out[:, u][None, :]) + 0.5 * (x_in[:, u][:, None] == x_out[:, u][None, :])
    assert auc[0] == pytest.approx(pairs.mean(), abs=1e-12)


def test_separation_uses_exact_auroc_when_given(samples):
    x_in, x_out = samples
    g = _groups(x_in, x_out)
    exact = C.exact_auroc(x_in, x_out)
    np.testing.assert_array_equal(C.separation(g, exact).auroc, exact)
    np.testing.assert_array_equal(C.separation(g).auroc, C.binormal_auroc(g))


def test_anova_matches_f_oneway_and_brute_force_eta2():
    rng = np.random.default_rng(3)
    groups = [rng.normal(k * 0.2, 1 + k * 0.1, (n, 7)) for k, n in enumerate((15, 40, 9, 60))]
    count = np.array([len(x) for x in groups])
    mean = np.stack([x.mean(0) for x in groups])
    m2 = np.stack([((x - x.mean(0)) ** 2).sum(0) for x in groups])
    a = C.anova(count, mean, m2)
    ref = stats.f_oneway(*groups)
    np.testing.assert_allclose(a.f, ref.statistic, rtol=1e-6)
    np.testing.assert_allclose(a.p, ref.pvalue, rtol=1e-6)
    allx = np.concatenate(groups)
    between = sum(len(x) * (x.mean(0) - allx.mean(0)) ** 2 for x in groups)
    np.testing.assert_allclose(a.eta2, between / ((allx - allx.mean(0)) ** 2).sum(0), rtol=1e-9)


def test_anova_skips_empty_groups():
    rng = np.random.default_rng(4)
    groups = [rng.normal(0, 1, (10, 3)), rng.normal(1, 1, (12, 3))]
    count = np.array([10, 0, 12])
    mean = np.stack([groups[0].mean(0), np.zeros(3), groups[1].mean(0)])
    m2 = np.stack([((groups[0] - groups[0].mean(0)) ** 2).sum(0), np.zeros(3), ((groups[1] - groups[1].mean(0)) ** 2).sum(0)])
    np.testing.assert_allclose(C.anova(count, mean, m2).f, stats.f_oneway(*groups).statistic, rtol=1e-6)


def test_combine_pools_exactly():
    rng = np.random.default_rng(5)
    parts = [rng.normal(k, 1, (n, 4)) for k, n in enumerate((3, 8, 1))]
    n, mean, m2 = C.combine([len(x) for x in parts], np.stack([x.mean(0) for x in parts]),
                            np.stack([((x - x.mean(0)) ** 2).sum(0) for x in parts]))
    allx = np.concatenate(parts)
    assert (n == 12).all()
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m2, ((allx - allx.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_table_json_sorted_by_t_with_nan_last(samples):
    x_in, x_out = samples
    g = _groups(x_in, x_out)
    g = g._replace(m2_in=np.where(np.arange(25) == 3, 0.0, g.m2_in), m2_out=np.where(np.arange(25) == 3, 0.0, g.m2_out))
    t = C.ConceptTable("c", "s", [f"u{i}" for i in range(25)], g, C.separation(g), C.AUROC_BINORMAL)
    out = C.table_json(t)
    ts = [u["t"] for u in out["units"]]
    assert ts[-1] is None and out["units"][-1]["unit"] == "u3"
    assert ts[:-1] == sorted(ts[:-1], reverse=True)
    assert set(out["units"][0]) == set(C.COLUMNS) and out["n_in"] == 40 and out["n_out"] == 300
    assert len(C.table_json(t, top=5)["units"]) == 5


# ---- categories ----------------------------------------------------------------------------------
def test_token_ids_and_nearest_texts():
    vocab = [" not", "not", " never", " knot", " note"]
    assert token_ids_for(vocab, [" not", " never"]) == [0, 2]
    with pytest.raises(MaxactError, match=r"' nott'.*nearest token texts are ' not'"):
        token_ids_for(vocab, [" nott"])
    labels = token_labels(np.array([0, 1, 2, 0, 3]), [0, 2])
    assert labels.obs_group.tolist() == [0, 1, 0, 0, 1] and labels.group_counts().tolist() == [3, 2]


def test_tag_patterns():
    tags = ("*", "*-hl", "do*", "np", "np$", "np-tl", "nn", "vb", "vbd")
    assert match_tags(["*"], tags) == ["*"]  # a pattern that is a tag means that tag
    assert match_tags(["np*"], tags) == ["np", "np$", "np-tl"]
    assert match_tags(["*[*]*"], tags) == ["*", "*-hl", "do*"]
    assert match_tags(["vb*", "nn"], tags) == ["nn", "vb", "vbd"]
    with pytest.raises(MaxactError, match=r"--tag 'jj\*' matches no tag.*np-tl"):
        match_tags(["jj*"], tags)


def test_phrases_to_token_spans_and_labels():
    text = "he did not go, notably not here; not-at-all"
    chars = phrase_spans(text, ["not", "not here"])
    assert [text[a:b] for a, b in chars] == ["not", "not here", "not"]
    # tokens: "he"," did"," not"," go",","," not","ably"," not"," here",";"," not","-","at"...
    starts = [0, 2, 6, 10, 13, 14, 18, 22, 26, 31, 32, 36, 37, 39, 40]
    ends = starts[1:] + [len(text)]
    offsets = np.array(list(zip(starts, ends)))
    spans = token_spans(offsets, chars)
    assert spans.tolist() == [[2, 3], [7, 9], [10, 11]]
    last = span_labels(len(offsets), spans, np.zeros(3, dtype=np.int64), "last", ("in", "out"), rest_group=1)
    in_tokens = [i for i, o in enumerate(last.token_obs) if o >= 0 and last.obs_group[o] == 0]
    assert in_tokens == [2, 8, 10]
    assert last.group_counts().tolist() == [3, len(offsets) - 4]  # the covered " not" of "not here" is no observation
    first = span_labels(len(offsets), spans, np.zeros(3, dtype=np.int64), "first", ("in", "out"), rest_group=1)
    assert [i for i, o in enumerate(first.token_obs) if o >= 0 and first.obs_group[o] == 0] == [2, 7, 10]
    mean = span_labels(len(offsets), spans, np.zeros(3, dtype=np.int64), "mean", ("in", "out"), rest_group=None)
    assert mean.obs_size.tolist() == [1, 2, 1] and mean.token_obs[7] == mean.token_obs[8] == 1


def test_overlapping_spans_are_dropped():
    labels = span_labels(10, np.array([[1, 4], [3, 5], [6, 6], [7, 9]]), np.array([0, 1, 0, 1]), "last",
                         ("in", "out"), rest_group=None)
    assert labels.n_obs == 2 and labels.obs_group.tolist() == [0, 1]


def test_properties_of_token_texts():
    names, group = property_groups("token-length", [" a", "ab", " abcdefghij", "   "])
    assert names[-1] == "8+" and group.tolist() == [0, 1, 7, 0]
    names, group = property_groups("capitalized", [" The", "the", " 12", "É"])
    assert names == ("capitalized", "lowercase", "no letter") and group.tolist() == [0, 1, 2, 0]
    with pytest.raises(MaxactError, match="--by 'size' is not one of token-length, capitalized"):
        property_groups("size", [])


def test_read_tagged(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    rows = [{"doc": "a", "words": ["The", "dog", "did", "not", "bark", "."], "tags": ["at", "nn", "dod", "*", "vb", "."]},
            {"doc": "a", "words": ["``", "Yes", "''"], "tags": ["``", "rb", "''"]},
            {"doc": "b", "words": ["Alice", "ran"], "tags": ["np", "vbd"]}]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    t = read_tagged(path)
    assert t.texts == ['The dog did not bark . " Yes "', "Alice ran"]
    assert [t.texts[d][a:b] for d, (a, b) in zip(t.word_doc, t.word_chars)][3] == "not"
    assert t.tags[t.word_tags[3]] == "*" and t.word_doc.tolist() == [0] * 9 + [1, 1]
