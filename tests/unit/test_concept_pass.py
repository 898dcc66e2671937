"""Per-type second moments in the atlas, the concept pass and the probe, each against brute force
from ``capture`` activations or a direct scikit-learn call; the atlas-only answer against the pass
over the same tokens; `maxact concept` end to end on tiny models (docs/CONCEPTS.md)."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from atlas_helpers import (
    build_tiny_atlas,
    error_line,
    merge_tiny_partials,
    run_cli,
    save_tiny_folder,
    single_thread,
    synthetic_source,
    write_word_corpus,
)
from tiny_models import tiny_loaded

from maxact.analysis.categories import span_labels, token_labels
from maxact.analysis.concept import separation, type_category
from maxact.analysis.probe import ProbeSettings, fit_probe
from maxact.capture import capture
from maxact.engine import groups as engine_groups
from maxact.engine.groups import GroupMoments
from maxact.engine.moments import N_BINS, bin_of
from maxact.engine.runner import ordered_refs
from maxact.pipeline.concept_pass import PassRequest, run_concept_pass
from maxact.store import format as F
from maxact.units import SiteRef, UnitId

N_TOKENS, SEQ = 700, 32
SITES = ("resid_pre", "mlp_post", "attn_q")


def brute_acts(lm, tokens: np.ndarray, refs, seq: int, bos: int | None = None) -> np.ndarray:
    """(n, U) float64 activations of every token, windows [0, seq), [seq, 2 seq), ... fed alone."""
    rows = []
    length = seq - (bos is not None)
    for s in range(0, len(tokens), length):
        ids = tokens[s : s + length].astype(np.int64)
        if bos is not None:
            ids = np.concatenate([[bos], ids])
        with single_thread():
            c = capture(lm.adapter, torch.from_numpy(ids)[None], refs)
        rows.append(torch.cat([c[r][0] for r in refs], 1).numpy()[(bos is not None):])
    return np.concatenate(rows).astype(np.float64)


def moments(x: np.ndarray):
    m = x.mean(0)
    return len(x), m, ((x - m) ** 2).sum(0)


# ---- engine --------------------------------------------------------------------------------------
def test_group_moments_match_brute_force_and_merge(monkeypatch):
    monkeypatch.setattr(engine_groups, "MAX_COLUMNS", 5)  # several column slices per batch
    rng = np.random.default_rng(0)
    x = (rng.standard_t(3, (500, 12)) * 3 + 800 * (rng.uniform(size=(500, 1)) < 0.02)).astype(np.float32)
    g = rng.integers(0, 4, 500)
    g[g == 2] = 1  # group 2 never seen
    one, a, b = GroupMoments(4, 12), GroupMoments(4, 12), GroupMoments(4, 12)
    for lo in range(0, 500, 128):
        one.add(torch.from_numpy(x[lo : lo + 128]), torch.from_numpy(g[lo : lo + 128]))
        (a if lo < 256 else b).add(torch.from_numpy(x[lo : lo + 128]), torch.from_numpy(g[lo : lo + 128]))
    a.merge(b)
    for k in range(4):
        xs = x[g == k].astype(np.float64)
        for acc in (one, a):
            assert int(acc.count[k]) == len(xs)
            if len(xs):
                n, m, m2 = moments(xs)
                np.testing.assert_allclose(acc.mean[k].numpy(), m, rtol=1e-6, atol=1e-5)
                np.testing.assert_allclose(acc.m2[k].numpy(), m2, rtol=1e-5)
            else:
                assert (acc.mean[k] == 0).all() and (acc.m2[k] == 0).all()


# ---- the atlas's per-type moments ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    lm, tokens, atlas, cfg = build_tiny_atlas(tmp_path_factory.mktemp("concept") / "atlas", n_tokens=N_TOKENS,
                                              sites=SITES, max_types=12, seq=SEQ)
    refs = ordered_refs(lm.adapter, cfg)
    return lm, tokens, atlas, cfg, refs, brute_acts(lm, tokens, refs, SEQ)


def test_type_moments_match_brute_force(tiny):
    lm, tokens, atlas, cfg, refs, x = tiny
    ids = np.asarray(atlas[F.TUNING_IDS])
    row_of = np.full(int(tokens.max()) + 1, len(ids))
    row_of[ids] = np.arange(len(ids))
    rows = row_of[tokens]
    counts = np.asarray(atlas[F.TYPE_COUNTS])
    np.testing.assert_array_equal(counts, np.bincount(rows, minlength=len(ids) + 1))
    np.testing.assert_array_equal(counts, np.asarray(atlas[F.TUNING_COUNTS]))
    _, mean, total = moments(x)
    ts = np.asarray(atlas[F.TYPE_STATS])
    assert (ts["count"] == N_TOKENS).all()
    np.testing.assert_allclose(ts["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(ts["m2"], total, rtol=1e-6)
    dev, m2 = np.asarray(atlas[F.TYPE_DEV]), np.asarray(atlas[F.TYPE_M2])
    between = np.zeros(x.shape[1])
    for r in range(len(ids) + 1):
        n, m, s = moments(x[rows == r])
        np.testing.assert_allclose(dev[r], m - mean, atol=1e-6)
        np.testing.assert_allclose(m2[r], s, rtol=2e-6, atol=1e-6)
        between += n * (m - mean) ** 2
    np.testing.assert_allclose(ts["eta2"], between / total, atol=1e-6)
    # L0.resid_pre is the embedding: constant on each tracked type, all its spread within "other"
    w = lm.adapter.width(refs[0])
    assert np.abs(m2[:-1, :w]).max() < 1e-9 and (ts["eta2"][:w] == pytest.approx(1 - m2[-1, :w] / ts["m2"][:w], abs=1e-6))


def test_type_moments_of_merged_shards_equal_one_run(tiny, tmp_path):
    lm, tokens, atlas, cfg, refs, x = tiny
    for i in range(3):
        build_tiny_atlas(tmp_path / f"s{i}", n_tokens=N_TOKENS, sites=SITES, max_types=12, seq=SEQ, shard=(i, 3))
    merge_tiny_partials([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged", n_tokens=N_TOKENS)
    from maxact.store.reader import Atlas

    merged = Atlas(tmp_path / "merged")
    np.testing.assert_array_equal(np.asarray(merged[F.TYPE_COUNTS]), np.asarray(atlas[F.TYPE_COUNTS]))
    for name in (F.TYPE_DEV, F.TYPE_M2):
        np.testing.assert_allclose(np.asarray(merged[name]), np.asarray(atlas[name]), rtol=1e-5, atol=1e-6)
    a, b = np.asarray(merged[F.TYPE_STATS]), np.asarray(atlas[F.TYPE_STATS])
    for field in ("mean", "m2", "eta2"):
        np.testing.assert_allclose(a[field], b[field], rtol=1e-6, atol=1e-7)


def test_atlas_only_category_equals_brute_force_and_the_pass(tiny):
    lm, tokens, atlas, cfg, refs, x = tiny
    ids = np.asarray(atlas[F.TUNING_IDS])
    category = [int(ids[1]), int(ids[4]), int(ids[7])]
    rows = np.arange(atlas.n_units)
    g = type_category(atlas, category, rows)
    inside = np.isin(tokens, category)
    for n, m, s, xs in ((g.n_in, g.mean_in, g.m2_in, x[inside]), (g.n_out, g.mean_out, g.m2_out, x[~inside])):
        bn, bm, bs = moments(xs)
        assert (n == bn).all()
        np.testing.assert_allclose(m, bm, atol=1e-6)
        np.testing.assert_allclose(s, bs, rtol=1e-5, atol=1e-5)
    with single_thread():
        r = run_concept_pass(lm, synthetic_source(tokens), cfg, PassRequest(token_labels(tokens, category), False),
                             progress=False)
    assert r.unit_names() == [str(atlas.unit_at(int(i))) for i in rows]
    atlas_stats, pass_stats = separation(g), separation(g._replace(mean_in=r.mean[0], m2_in=r.m2[0],
                                                                   mean_out=r.mean[1], m2_out=r.m2[1]))
    assert r.count.tolist() == [int(g.n_in[0]), int(g.n_out[0])]
    ok = np.isfinite(pass_stats.t)
    np.testing.assert_array_equal(ok, np.isfinite(atlas_stats.t))
    np.testing.assert_allclose(atlas_stats.t[ok], pass_stats.t[ok], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(atlas_stats.d[ok], pass_stats.d[ok], rtol=1e-4, atol=1e-5)


# ---- the pass --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])
def test_pass_spans_and_skip_pos0_match_brute_force(tiny, fused):
    lm, tokens, atlas, cfg, refs, x = tiny
    rng = np.random.default_rng(7)
    starts = np.sort(rng.choice(N_TOKENS - 3, 60, replace=False))
    starts = starts[np.r_[True, np.diff(starts) > 3]]
    spans = np.stack([starts, starts + rng.integers(1, 4, len(starts))], 1)
    spans = np.r_[spans, [[SEQ - 1, SEQ + 1]]]  # across a window boundary: left out
    spans = spans[np.argsort(spans[:, 0])]
    spans = spans[np.r_[True, spans[1:, 0] >= spans[:-1, 1]]]
    labels = span_labels(N_TOKENS, spans, np.zeros(len(spans), dtype=np.int64), "mean", ("in", "out"), rest_group=1)
    request = PassRequest(labels, skip_pos0=True, hist_units=(UnitId("mlp_post", 1, 3), UnitId("resid_pre", 0, 0)))
    with single_thread():
        r = run_concept_pass(lm, synthetic_source(tokens), replace(cfg, fuse_sites=fused), request, progress=False)
    window = np.arange(N_TOKENS) // SEQ
    values, groups = [], []
    for o in range(labels.n_obs):
        pos = np.nonzero(labels.token_obs == o)[0]
        if window[pos[0]] != window[pos[-1]] or (pos % SEQ == 0).any():
            continue
        values.append(x[pos].mean(0))
        groups.append(labels.obs_group[o])
    values, groups = np.array(values), np.array(groups)
    assert r.n_dropped == labels.n_obs - len(values) >= 1 + N_TOKENS // SEQ - 2
    for k in (0, 1):
        n, m, s = moments(values[groups == k])
        assert r.count[k] == n
        np.testing.assert_allclose(r.mean[k], m, atol=2e-6)
        np.testing.assert_allclose(r.m2[k], s, rtol=1e-5, atol=1e-5)
    unit_names = r.unit_names()
    for h, u in zip(r.hist, request.hist_units):
        col = unit_names.index(str(u))
        codes = bin_of(torch.from_numpy(values[:, col].astype(np.float32)[:, None])).numpy()[:, 0]
        for k in (0, 1):
            np.testing.assert_array_equal(h[k], np.bincount(codes[groups == k], minlength=N_BINS))


def test_pass_with_bos_feeds_the_atlas_windows(tiny):
    lm, tokens, atlas, cfg, refs, x = tiny
    bos_cfg = replace(cfg, bos=True, sites=("mlp_post",))
    with single_thread():
        r = run_concept_pass(lm, synthetic_source(tokens), bos_cfg, PassRequest(token_labels(tokens, [5, 6]), False),
                             progress=False)
    xb = brute_acts(lm, tokens, ordered_refs(lm.adapter, bos_cfg), SEQ, bos=0)
    inside = np.isin(tokens, [5, 6])
    for k, xs in ((0, xb[inside]), (1, xb[~inside])):
        np.testing.assert_allclose(r.mean[k], xs.mean(0), atol=2e-6)


def test_probe_matches_a_direct_sklearn_call():
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (300, 20)) * rng.uniform(0.2, 3, 20)
    y = x[:, 2] * 0.8 - x[:, 7] + rng.normal(0, 1, 300) > 0.3
    t = stats.ttest_ind(x[y], x[~y], equal_var=False).statistic
    s = ProbeSettings(folds=5, c=0.5, max_iter=2000, seed=4, top=3)
    r = fit_probe(x.astype(np.float32), y, t, s)
    cv = StratifiedKFold(5, shuffle=True, random_state=4)
    l2 = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
    l1 = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, l1_ratio=1.0, solver="liblinear", max_iter=2000,
                                                             random_state=4))
    xf = x.astype(np.float32).astype(np.float64)
    assert r.l2_accuracy == pytest.approx(cross_val_score(l2, xf, y, cv=cv).mean(), abs=1e-9)
    assert r.l1_accuracy == pytest.approx(cross_val_score(l1, xf, y, cv=cv).mean(), abs=1e-9)
    w = l2.fit(xf, y)[-1].coef_[0]
    assert [i for i, _ in r.top_units] == list(np.argsort(-np.abs(w))[:3])
    np.testing.assert_allclose(r.direction, w / l2[0].scale_, rtol=1e-5)
    np.testing.assert_allclose(r.mean_diff, xf[y].mean(0) - xf[~y].mean(0), rtol=1e-5, atol=1e-6)
    assert r.spearman == pytest.approx(stats.spearmanr(np.abs(w), np.abs(t)).statistic, abs=1e-9)
    assert r.baseline == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert r.l1_nonzero == np.count_nonzero(l1.fit(xf, y)[-1].coef_[0])


# ---- the command -------------------------------------------------------------------------------------
def test_cli_from_the_atlas_alone(tiny, tmp_path):
    lm, tokens, atlas, cfg, refs, x = tiny
    tok = str(int(np.asarray(atlas[F.TUNING_IDS])[2]))
    r = run_cli("concept", atlas.path, "--token", tok, "--json", "--csv", tmp_path / "t.csv", "--sites", "mlp_post",
                "--layers", "1-2")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_in"] == int((tokens == int(tok)).sum()) and out["n_out"] == N_TOKENS - out["n_in"]
    assert out["auroc_method"].startswith("binormal")
    assert {u["unit"].split(".")[0] for u in out["units"]} == {"L1", "L2"} and len(out["units"]) == out["n_units"]
    ts = [u["t"] for u in out["units"] if u["t"] is not None]
    assert ts == sorted(ts, reverse=True)
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(tmp_path / "t.csv")
    assert table.column_names == ["unit", "n_in", "n_out", "mean_in", "mean_out", "t", "p", "q", "d", "auroc"]
    assert table.column("unit").to_pylist() == [u["unit"] for u in out["units"]]


@pytest.mark.parametrize("args, message", [
    ((), "give one kind of category"),
    (("--token", "5", "--by", "capitalized"), "give one kind of category"),
    (("--pos", "x.txt"), "need both --pos FILE"),
    (("--token", "9999"), "--token '9999' is no token of the vocabulary (token texts carry their leading space, "
                          "e.g. ' not'); the nearest token texts are '9', "),
    (("--token", "5", "--save-direction", "d.npy"), "--save-direction writes the probe's direction: add --probe"),
    (("--token", "5", "--probe", "--save-direction", "d.txt"), "give a .npy or a .safetensors file"),
    (("--token", "TRACKED", "--sites", "attn_k"), "select no site of this atlas"),
])
def test_cli_errors_are_one_line(tiny, args, message, tmp_path, monkeypatch):
    lm, tokens, atlas, cfg, refs, x = tiny
    monkeypatch.chdir(tmp_path)
    tracked = str(int(np.asarray(atlas[F.TUNING_IDS])[0]))
    r = run_cli("concept", atlas.path, *[tracked if a == "TRACKED" else a for a in args])
    assert r.exit_code == 2 and message in error_line(r)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("words") / "words.txt", 600, seed=2)


def _pass_args(folder, words):
    return ("--model", folder, "--corpus", words, "--sites", "mlp_post", "--layers", "1")


def test_cli_words_probe_and_direction(folder, words, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    (tmp_path / "w.txt").write_text("w5\nw7 w8\n")
    for name in ("d.npy", "d.safetensors"):
        r = run_cli("concept", "--words", tmp_path / "w.txt", *_pass_args(folder, words), "--probe", "--json",
                    "--save-direction", tmp_path / name)
        assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    text = open(words).read().split()
    n_in = text.count("w5") + sum(a == "w7" and b == "w8" for a, b in zip(text, text[1:]))
    assert out["n_in"] == n_in and out["n_out"] == len(text) - n_in - sum(a == "w7" and b == "w8" for a, b in zip(text, text[1:]))
    probe, = out["probes"]
    assert probe["site"] == "L1.mlp_post" and probe["n_in"] == n_in and 0 <= probe["l2"]["accuracy"] <= 1
    rows = np.load(tmp_path / "d.npy")
    tensors = load_file(tmp_path / "d.safetensors")
    assert rows.shape == (2, 96)
    np.testing.assert_array_equal(rows[0], tensors["probe"])
    np.testing.assert_array_equal(rows[1], tensors["mean_diff"])
    with safe_open(tmp_path / "d.safetensors", "np") as f:
        assert f.metadata()["site"] == "L1.mlp_post"


def test_cli_contrast_sets_give_exact_auroc(folder, tmp_path):
    from sklearn.metrics import roc_auc_score

    from maxact.capture import capture as cap

    (tmp_path / "pos.txt").write_text("w1 w2 w3\nw4 [[w5 w6]] w7\nw9 w3\n")
    (tmp_path / "neg.txt").write_text("w1 w2 w8\nw4 [[w11]] w7\nw2\nw10 w3 w4 w5\n")
    r = run_cli("concept", "--pos", tmp_path / "pos.txt", "--neg", tmp_path / "neg.txt", "--model", folder,
                "--sites", "resid_post", "--layers", "2", "--json", "--word-token", "mean")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["auroc_method"].startswith("exact") and out["n_in"] == 3 and out["n_out"] == 4
    lm = tiny_loaded("llama")
    ref = SiteRef("resid_post", 2)
    targets = [([1, 2, 3], [2]), ([4, 5, 6, 7], [1, 2]), ([9, 3], [1]), ([1, 2, 8], [2]), ([4, 11, 7], [1]), ([2], [0]),
               ([10, 3, 4, 5], [3])]
    values = []
    for ids, at in targets:
        a = cap(lm.adapter, torch.tensor([ids]), [ref])[ref][0].numpy()
        values.append(a[at].mean(0))
    values = np.array(values)
    y = np.r_[np.ones(3), np.zeros(4)]
    for u in out["units"][:5]:
        i = int(u["unit"].split(":")[1])
        assert u["auroc"] == pytest.approx(roc_auc_score(y, values[:, i]), abs=1e-12)
        assert u["mean_in"] == pytest.approx(values[:3, i].mean(), abs=1e-5)


def test_cli_by_property_with_histograms(folder, words, tmp_path):
    r = run_cli("concept", "--by", "token-length", *_pass_args(folder, words), "--unit", "L1.mlp_post:3", "--json",
                "--plot", tmp_path / "h.png")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["property"] == "token-length" and [g["name"] for g in out["groups"]][:3] == ["1", "2", "3"]
    assert sum(g["n"] for g in out["groups"]) == 600
    (h,) = out["histograms"]
    assert h["unit"] == "L1.mlp_post:3" and sum(sum(c) for c in h["counts"].values()) == 600
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_tags_need_a_tagged_corpus(folder, words, tmp_path):
    r = run_cli("concept", "--tag", "np*", *_pass_args(folder, words))
    assert r.exit_code == 2 and "--tag needs a part-of-speech tagged corpus" in error_line(r)
    path = tmp_path / "tagged.jsonl.gz"
    rows = [{"doc": "a", "words": [f"w{i}" for i in range(1, 40)], "tags": ["np" if i % 3 else "vb" for i in range(1, 40)]}] * 4
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    r = run_cli("concept", "--tag", "jj", "--model", folder, "--corpus", path, "--sites", "mlp_post", "--layers", "1")
    assert r.exit_code == 2 and "--tag 'jj' matches no tag of the corpus; its tags are np, vb" in error_line(r)
    r = run_cli("concept", "--tag", "vb*", "--model", folder, "--corpus", path, "--sites", "mlp_post", "--layers", "1",
                "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_in"] == 4 * 13 and out["n_out"] == 4 * 26


def test_viewer_concept_route_is_the_cli_table(tiny):
    from maxact.web.app import HTTPError, Viewer

    lm, tokens, atlas, cfg, refs, x = tiny
    tok = str(int(np.asarray(atlas[F.TUNING_IDS])[3]))
    v = Viewer(atlas.path, model=lm)
    page = v.concept([tok], "mlp_post", 10)
    r = run_cli("concept", atlas.path, "--token", tok, "--sites", "mlp_post", "--json")
    cli = json.loads(r.stdout)
    assert page["units"] == cli["units"][:10] and page["n_in"] == cli["n_in"]
    volcano = page["volcano"]
    assert len(volcano["units"]) == len(volcano["d"]) == len(volcano["logp"]) <= cli["n_units"]
    by_unit = {u["unit"]: u for u in cli["units"]}
    for name, d in zip(volcano["units"][:20], volcano["d"][:20]):
        assert d == pytest.approx(by_unit[name]["d"], abs=1e-4)
    with pytest.raises(HTTPError, match="is no token of the vocabulary"):
        v.concept(["nope"])
    with pytest.raises(HTTPError, match="give one or more tokens"):
        v.concept([])


def test_atlas_only_answer_imports_no_torch(tiny):
    import subprocess
    import sys

    lm, tokens, atlas, cfg, refs, x = tiny
    tok = str(int(np.asarray(atlas[F.TUNING_IDS])[0]))
    code = f"""
import sys
from click.testing import CliRunner
from maxact.cli import main
r = CliRunner().invoke(main, ["concept", {str(atlas.path)!r}, "--token", {tok!r}, "--json"])
assert r.exit_code == 0, r.output
heavy = [m for m in ("torch", "transformers", "matplotlib", "sklearn") if m in sys.modules]
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unit_page_and_overview_carry_eta2(tiny):
    from maxact.analysis.overview import overview
    from maxact.analysis.pages import unit_page

    lm, tokens, atlas, cfg, refs, x = tiny
    eta2 = np.asarray(atlas[F.TYPE_STATS])["eta2"]
    for row in (0, 70, atlas.n_units - 1):
        assert unit_page(atlas, str(atlas.unit_at(row)))["stats"]["eta2"] == pytest.approx(float(eta2[row]))
    for cell in overview(atlas)["cells"]:
        rows = atlas.manifest.site(cell["site"]).rows
        assert cell["mean_eta2"] == pytest.approx(float(np.nanmean(eta2[rows])))


def test_atlas_units_are_the_atlas_rows_and_ids(tiny):
    from maxact.analysis.concept import atlas_units

    lm, tokens, atlas, cfg, refs, x = tiny
    every = atlas_units(atlas, None, None)
    assert every.rows.tolist() == list(range(atlas.n_units))
    assert every.names == [str(atlas.unit_at(r)) for r in range(atlas.n_units)]
    some = atlas_units(atlas, ("mlp_post",), (0, 2))
    assert [atlas.unit_at(int(r)).site for r in some.rows] == ["mlp_post"] * len(some.rows)
    assert some.names == [str(atlas.unit_at(int(r))) for r in some.rows] and {n[:2] for n in some.names} == {"L0", "L2"}
