"""The viewer's concept page, the site listings and the selectivity score, against computations
written here from raw activations and hand-made summaries (issue 13: the survivors of `make
mutation` in analysis/concept.py and analysis/overview.py).

- ``concept_page`` (the `/api/concept` answer from the atlas alone) against scipy's Welch t-test,
  Benjamini-Hochberg and Cohen's d over the raw activations of a tiny Llama (``hidden_states``);
- ``site_units`` pagination (pages, the 1..1000 bounds) against the full listing;
- ``UnitScores`` on hand-made reference summaries: NaN z, token id 0, no top token, the z clip,
  the position-0 and share boundaries, the minimum occurrence count.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from derived_helpers import make_case
from scipy import stats as sps

from maxact.errors import MaxactError


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return make_case(tmp_path_factory.mktemp("pages-llama"), "llama")


@pytest.fixture(scope="module")
def atlas(case):
    from maxact.store.reader import Atlas

    return Atlas(case.atlas)


def test_concept_page_against_scipy_on_raw_activations(case, atlas):
    from maxact.analysis.concept import concept_page

    tokens = case.tokens.astype(np.int64)
    counts = np.bincount(tokens)
    tracked = np.asarray(atlas["tuning_token_ids.npy"])
    category = [int(t) for t in tracked[[1, 3]]]  # two tracked types, neither the most frequent
    texts = [f"w{t}" for t in category]
    page = concept_page(atlas, texts, top=1000)
    x = case.acts.astype(np.float64)  # (n, U) manifest order
    is_in = np.isin(tokens, category)
    n_in, n_out = int(is_in.sum()), int((~is_in).sum())
    assert n_in == counts[category].sum() and page["n_in"] == n_in and page["n_out"] == n_out
    assert page["n_units"] == x.shape[1] and len(page["units"]) == x.shape[1]
    t, p = sps.ttest_ind(x[is_in], x[~is_in], equal_var=False)
    q = sps.false_discovery_control(np.where(np.isnan(p), 1.0, p))
    sd = np.sqrt(((n_in - 1) * x[is_in].var(0, ddof=1) + (n_out - 1) * x[~is_in].var(0, ddof=1)) / (n_in + n_out - 2))
    d = (x[is_in].mean(0) - x[~is_in].mean(0)) / sd
    names = [case.unit_name(u) for u in range(x.shape[1])]
    by_unit = {u["unit"]: u for u in page["units"]}
    finite = np.isfinite(t)
    assert finite.sum() > 10
    for u in np.nonzero(finite)[0]:
        row = by_unit[names[u]]
        assert row["n_in"] == n_in and row["n_out"] == n_out
        assert row["mean_in"] == pytest.approx(x[is_in, u].mean(), rel=1e-5, abs=1e-6)
        assert row["mean_out"] == pytest.approx(x[~is_in, u].mean(), rel=1e-5, abs=1e-6)
        assert row["t"] == pytest.approx(t[u], rel=1e-4, abs=1e-4)
        assert row["p"] == pytest.approx(p[u], rel=1e-3, abs=1e-12)
        assert row["d"] == pytest.approx(d[u], rel=1e-4, abs=1e-4)
        if np.isfinite(p).all():
            assert row["q"] == pytest.approx(q[u], rel=1e-3, abs=1e-12)
    # sorted by t, descending
    ts = [u["t"] for u in page["units"] if u["t"] is not None]
    assert ts == sorted(ts, reverse=True)
    # the first `top` units only
    assert [u["unit"] for u in concept_page(atlas, texts, top=7)["units"]] == [u["unit"] for u in page["units"][:7]]
    # the volcano: every unit with a finite d, -log10 p and the q < 0.05 mark, in manifest order
    v = page["volcano"]
    ok = np.isfinite(d) & np.isfinite(p) & (p > 0)
    assert v["units"] == [names[u] for u in np.nonzero(ok)[0]]
    np.testing.assert_allclose(v["d"], np.round(d[ok], 4), atol=2e-4)
    np.testing.assert_allclose(v["logp"], -np.log10(p[ok]), rtol=1e-3, atol=2e-3)
    assert v["q_threshold"] == 0.05
    q_units = {u["unit"]: u["q"] for u in page["units"]}
    assert v["q_below"] == [int(q_units[names[u]] < 0.05) for u in np.nonzero(ok)[0]]
    assert 0 < sum(v["q_below"]) < len(v["q_below"]), "both sides of the q threshold occur"
    assert "w" in page["category"] and str(len(category)) in page["category"]


def test_concept_page_sites_and_untracked_tokens(case, atlas):
    from maxact.analysis.concept import concept_page

    tracked = np.asarray(atlas["tuning_token_ids.npy"])
    only = concept_page(atlas, [f"w{int(tracked[0])}"], sites=("ln_final",), top=1000)
    assert {u["unit"].split(":")[0] for u in only["units"]} == {"ln_final"}
    assert only["n_units"] == atlas.manifest.site("ln_final").width
    untracked = sorted(set(range(1, 97)) - set(tracked.tolist()))
    if untracked:
        with pytest.raises(MaxactError, match=f"'w{untracked[0]}' is not among the {len(tracked)} token types"):
            concept_page(atlas, [f"w{untracked[0]}"])


def test_site_units_pages(case, atlas):
    from maxact.analysis.overview import site_units

    name = case.manifest["sites"][0]["name"]
    full = site_units(atlas, name, 1, 1000)
    total = full["total"]
    assert full["pages"] == 1 and full["page"] == 1 and full["per_page"] == 1000
    assert full["site"] == name and full["info"]["name"] == name
    assert full["n_selective"] == sum(u["selective"] for u in full["units"])
    per = 7
    pages = math.ceil(total / per)
    assert pages > 2
    seen = []
    for page in range(1, pages + 1):
        part = site_units(atlas, name, page, per)
        assert part["pages"] == pages and part["page"] == page and part["total"] == total
        seen += part["units"]
    assert seen == full["units"]
    assert site_units(atlas, name, pages + 1, per)["units"] == []
    for page, per_page in ((0, 10), (1, 0), (1, 1001)):
        with pytest.raises(MaxactError, match=f"got page={page}, per_page={per_page}"):
            site_units(atlas, name, page, per_page)
    with pytest.raises(MaxactError, match="site 'L9.nope' is not in this atlas; it holds"):
        site_units(atlas, "L9.nope")


def _scores(rows, counts, min_count=3):
    """UnitScores over hand-made reference summaries (fields as store/format.py REF_DTYPE)."""
    from maxact.analysis.overview import UnitScores
    from maxact.store import format as F

    ref = np.zeros(len(rows), dtype=F.REF_DTYPE)
    for i, r in enumerate(rows):
        for k, v in r.items():
            ref[k][i] = v
    class Fake:  # the three things UnitScores reads of an Atlas
        token_counts = np.asarray(counts)
        manifest = SimpleNamespace(min_tuning_count=min_count)

        def __getitem__(self, name):
            assert name == F.REF
            return ref

    return UnitScores(Fake())


def test_unit_scores_by_hand():
    counts = [5, 1, 9, 4]  # token 0 occurs 5 times (>= min 3), token 1 once (< min)
    base = dict(top_token=2, top_share=0.8, pos0_share=0.1, top_token_z=4.0, best_token=2, best_z=4.0,
                x_top_token=2, x_top_share=0.7)
    rows = [
        base,                                    # 0: selective, score 0.8 * 0.9 * 4
        base | {"top_token_z": np.nan},          # 1: z unknown: score 0, not selective
        base | {"top_token": 0},                 # 2: token id 0 is a token like any other
        base | {"top_token": 1},                 # 3: top token rarer than min_tuning_count: score 0
        base | {"top_token": -1},                # 4: no top token: score 0
        base | {"top_token_z": 25.0},            # 5: z clipped at 10
        base | {"pos0_share": 0.5},              # 6: half the wins at position 0: not clean
        base | {"top_share": 0.5},               # 7: share 0.5 is not above 0.5
        base | {"top_token_z": 3.0},             # 8: z 3 is not above 3
        base | {"top_token_z": -2.0},            # 9: negative z: score 0
    ]
    s = _scores(rows, counts)
    want = [0.8 * 0.9 * 4, 0.0, 0.8 * 0.9 * 4, 0.0, 0.0, 0.8 * 0.9 * 10, 0.8 * 0.5 * 4, 0.5 * 0.9 * 4,
            0.8 * 0.9 * 3, 0.0]
    np.testing.assert_allclose(s.score, want, rtol=1e-6)
    # the criterion is z > 3, share > 0.5 and clean (overview.py's docstring); the count gates the score only
    assert s.selective.tolist() == [True, False, True, True, True, True, False, False, False, False]
    assert s.clean.tolist() == [True] * 6 + [False] + [True] * 3
    assert s.score.dtype == np.float64 and s.best_token.dtype == np.int64 and s.x_top_token.dtype == np.int64
    assert s.top_share[0] == pytest.approx(0.8) and s.x_top_share[0] == pytest.approx(0.7)


def test_an_unknown_token_names_the_five_nearest_texts():
    import difflib

    from maxact.analysis.categories import token_ids_for

    vocab = [" not", " note", " nut", " knot", " net", " nod", "not", " no", " a"]
    with pytest.raises(MaxactError) as err:
        token_ids_for(vocab, [" nott"])
    msg = str(err.value)
    near = difflib.get_close_matches(" nott", vocab, n=len(vocab), cutoff=0.0)
    listed = msg.split("the nearest token texts are ", 1)[1]
    assert listed == ", ".join(repr(t) for t in near[:5])  # exactly the five nearest, nearest first
    assert token_ids_for(vocab, ["not", " not", " not"]) == [0, 6]


def test_a_site_of_one_unit_has_its_selective_fraction_out_of_one(case, atlas, tmp_path):
    """A derived site of one direction, e_i of a selective residual dimension: the same activations,
    so the same selectivity; its cell says 1 of 1 (overview's frac_selective)."""
    from maxact.analysis.overview import overview, unit_scores
    from maxact.store.reader import Atlas

    s = unit_scores(atlas)
    site = next(x for x in atlas.sites if x.site == "resid_pre" and s.selective[x.rows].any())
    chosen = [i for i in range(site.width) if s.selective[site.offset + i]]
    basis = np.zeros((1, site.width), dtype=np.float32)
    basis[0, chosen[0]] = 1.0
    np.save(tmp_path / "e.npy", basis)
    from derived_helpers import MAX_TYPES, REF_BATCH, REF_SAMPLES, REF_SEED, SEQ, K, cli_ok

    out = tmp_path / "atlas"
    cli_ok("atlas", "--model", case.folder, "--corpus", case.atlas.parent / "corpus.txt", "--out", out,
           "--seq", SEQ, "--k", K, "--sites", "resid_pre", "--layers", site.layer, "--windows-per-batch", 3,
           "--max-types", MAX_TYPES, "--ref-batch", REF_BATCH, "--ref-samples", REF_SAMPLES, "--seed", REF_SEED,
           "--directions", f"one={tmp_path / 'e.npy'}@{site.name}")
    cells = {c["site"]: c for c in overview(Atlas(out))["cells"]}
    assert cells["one"]["n_units"] == 1 and cells["one"]["n_selective"] == 1
    assert cells["one"]["frac_selective"] == 1.0


def test_word_token_modes_and_the_error_naming_them():
    from maxact.analysis.categories import WORD_TOKENS, check_word_token

    assert [check_word_token(m) for m in WORD_TOKENS] == list(WORD_TOKENS)
    with pytest.raises(MaxactError) as err:
        check_word_token("middle")
    assert str(err.value) == f"--word-token 'middle' is not one of {', '.join(WORD_TOKENS)}"


def test_a_unit_of_a_site_the_atlas_lacks_lists_eight_sites(tmp_path):
    from atlas_helpers import build_tiny_atlas

    _, _, atlas, _ = build_tiny_atlas(tmp_path / "a", n_tokens=200, sites=("resid_pre", "mlp_post", "attn_out"))
    names = [s.name for s in atlas.sites]
    assert len(names) == 9
    with pytest.raises(MaxactError) as err:
        atlas.row("L0.mlp_pre:1")
    assert str(err.value) == (f"unit L0.mlp_pre:1 is not in this atlas; it holds the sites "
                              f"{', '.join(names[:8])}, ... (9 in all)")


def _value_at(atlas, row: int, position: int) -> float:
    """The unit's stored value at a corpus position among its top lists (positions 0 included)."""
    pos = np.concatenate([atlas["top_positions.npy"][row], atlas["top0_positions.npy"][row]])
    val = np.concatenate([atlas["top_values.npy"][row], atlas["top0_values.npy"][row]])
    return float(val[np.nonzero(pos == position)[0][0]])


def test_simulated_batches_report_the_winner_they_found(case, atlas):
    """sample --atlas's simulation: each winner's value is the unit's value at the winning position,
    its token the token there (int64), its column the offset in the window that holds it."""
    from maxact.analysis.pages import simulate_unit

    tokens = np.asarray(atlas.tokens)
    checked = 0
    for row in range(0, atlas.n_units, 7):
        sim = simulate_unit(atlas, row, batch=4, seq=16, samples=40, seed=3, skip_pos0=False)
        assert sim.token_ids.dtype == np.int64 and sim.values.dtype == np.float32
        for b in np.nonzero(sim.values == sim.values)[0]:  # hits
            start = int(sim.starts[b, sim.rows[b]])
            position = start + int(sim.cols[b])
            assert 0 <= sim.cols[b] < 16
            assert sim.token_ids[b] == tokens[position]
            assert sim.values[b] == pytest.approx(_value_at(atlas, row, position), abs=0)
            checked += 1
    assert checked > 100


def test_simulation_with_two_contexts_is_seeded(tmp_path):
    from atlas_helpers import build_tiny_atlas

    from maxact.analysis.pages import simulate_unit
    from maxact.analysis.refstat import seeded_draws

    _, _, atlas, _ = build_tiny_atlas(tmp_path / "a", n_tokens=300, sites=("resid_pre",), context_pass=True)
    assert atlas.manifest.reference.contexts == 2
    one = simulate_unit(atlas, 5, batch=4, seq=32, samples=30, seed=11, skip_pos0=False)
    two = simulate_unit(atlas, 5, batch=4, seq=32, samples=30, seed=11, skip_pos0=False)
    np.testing.assert_array_equal(one.starts, two.starts)
    space = atlas.start_space(32)
    np.testing.assert_array_equal(one.starts, space.starts_at(seeded_draws(space, 4, 30, 11)))
