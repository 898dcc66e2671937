"""Checks of the reading side (analysis/, store/export.py) that kill the mutants `make mutation`
found alive (docs/MUTATION.md).

A tiny atlas is built once; a copy gets a hand-written reference summary (refstat.npy, same shape
and dtype) whose units sit exactly on the selectivity criteria's boundaries, and the scores, flags
and ranking are recomputed here from the formulas of analysis/overview.py's docstring.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from atlas_helpers import build_tiny_atlas

from maxact.analysis.overview import overview, site_units, unit_scores
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.export import export_parquet
from maxact.store.reader import Atlas

# analysis/overview.py docstring: selective = z > 3 and share > 0.5 and pos0_share < 0.5;
# score = share * (1 - pos0_share) * clip(z, 0, 10), 0 when the top token is rarer than min_tuning_count
Z, SHARE, POS0 = 3.0, 0.5, 0.5

# (top_share, pos0_share, top_token_z) of the first units; the rest get share 0 and z NaN
CRAFTED = [
    (0.9, 0.0, 3.0),  # z on the bound: not selective
    (0.5, 0.0, 5.0),  # share on the bound: not selective
    (0.9, 0.5, 5.0),  # pos0 share on the bound: not clean, not selective
    (0.9, 0.25, 5.0),  # selective
    (1.0, 0.0, 4.0),  # these two tie at 3 decimals of score (4.0 and 3.9998):
    (0.9999, 0.0, 4.0002),  # the higher z ranks first
    (0.8, 0.1, 12.0),  # z clipped at 10
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutants_analysis")
    _, tokens, atlas, _ = build_tiny_atlas(root / "atlas", "llama", n_tokens=300, seed=2, k=12,
                                           sites=("resid_pre", "mlp_post"), layers=(0, 1))
    return root, tokens, atlas


@pytest.fixture(scope="module")
def crafted(built):
    """A copy of the atlas whose refstat.npy holds CRAFTED; the top token is the commonest one."""
    root, tokens, atlas = built
    out = root / "crafted"
    shutil.copytree(atlas.path, out)
    ref = np.load(out / F.REF)
    common = int(np.bincount(tokens).argmax())
    ref["top_token"], ref["top_share"], ref["pos0_share"], ref["top_token_z"] = common, 0.0, 0.0, np.nan
    for row, (share, pos0, z) in enumerate(CRAFTED):
        ref[row]["top_share"], ref[row]["pos0_share"], ref[row]["top_token_z"] = share, pos0, z
    np.save(out / F.REF, ref)
    # unit 0's reference list: the corpus's last position alone, winning every batch
    positions, probs = np.load(out / F.REF_POSITIONS), np.load(out / F.REF_PROBS)
    positions[0], probs[0] = -1, 0.0
    positions[0, 0], probs[0, 0] = len(tokens) - 1, 1.0
    np.save(out / F.REF_POSITIONS, positions)
    np.save(out / F.REF_PROBS, probs)
    return Atlas(out)


def expected_scores(atlas):
    """(U,) score, selective and clean from the docstring's formulas, in float64 from the stored float32."""
    ref = np.load(atlas.path / F.REF)
    counts = np.bincount(np.load(atlas.path / F.TOKENS), minlength=len(atlas.vocab))
    out = []
    for r in ref:
        share, pos0, z = float(r["top_share"]), float(r["pos0_share"]), float(r["top_token_z"])
        z0 = 0.0 if math.isnan(z) else z
        rare = r["top_token"] < 0 or counts[r["top_token"]] < atlas.manifest.min_tuning_count
        score = 0.0 if rare else share * (1 - pos0) * min(max(z0, 0.0), 10.0)
        clean = pos0 < POS0
        out.append((score, z0 > Z and share > SHARE and clean, clean, z, share))
    return out


def test_scores_and_flags_follow_the_documented_criteria(crafted):
    s = unit_scores(crafted)
    want = expected_scores(crafted)
    np.testing.assert_allclose(s.score, [w[0] for w in want], rtol=1e-12)
    assert s.selective.tolist() == [w[1] for w in want]
    assert s.clean.tolist() == [w[2] for w in want]
    assert s.selective[:4].tolist() == [False, False, False, True]


def test_site_listing_ranks_by_rounded_score_then_z(crafted):
    want = expected_scores(crafted)
    site = crafted.sites[0]
    rows = range(site.offset, site.offset + site.width)

    def key(r):
        score, _, _, z, share = want[r]
        return (-round(score, 3), -(z if not math.isnan(z) else -math.inf), -share, r)

    expected = [str(crafted.unit_at(r)) for r in sorted(rows, key=key)]
    listing = site_units(crafted, site.name, page=1, per_page=1000)
    assert [u["unit"] for u in listing["units"]] == expected
    assert expected.index(str(crafted.unit_at(5))) < expected.index(str(crafted.unit_at(4)))
    assert listing["site"] == site.name and listing["total"] == site.width
    assert listing["n_selective"] == sum(want[r][1] for r in rows)


def test_overview_lists_kinds_and_criteria(crafted):
    view = overview(crafted)
    assert view["kinds"] == list(dict.fromkeys(s.site for s in crafted.sites)) == ["resid_pre", "mlp_post"]
    assert view["criteria"] == {"selective_z": Z, "selective_share": SHARE, "pos0_limit": POS0}


def test_an_unknown_site_is_refused_with_the_sites_held(crafted):
    with pytest.raises(MaxactError, match="site 'L9.resid_pre' is not in this atlas; it holds L0.resid_pre"):
        site_units(crafted, "L9.resid_pre")


# ---- Parquet export --------------------------------------------------------------------------------
def test_parquet_tables_have_the_documented_columns_and_types(built, tmp_path):
    _, tokens, atlas = built
    out = tmp_path / "a" / "b"  # folders that do not exist yet
    export_parquet(atlas, out)
    units = pq.read_table(out / "units.parquet").to_pydict()
    assert units["site"] == [s.site for s in atlas.sites for _ in range(s.width)]
    assert units["unit"][:2] == [f"{atlas.sites[0].name}:0", f"{atlas.sites[0].name}:1"]
    examples = pq.read_table(out / "examples.parquet")
    assert str(examples.schema.field("token_id").type) == "int64"
    ex = examples.to_pydict()
    assert ex["token_id"] == [int(tokens[p]) for p in ex["position"]]
    toks = pq.read_table(out / "tokens.parquet")
    assert toks.column_names == ["position", "token_id", "token"]
    assert toks.column("token_id").to_pylist() == tokens.tolist()


# ---- a unit's page, read back against the atlas's own files -------------------------------------------
def test_page_examples_carry_their_stored_contexts(built):
    """docs/STORE.md: the first K_ctx examples of top and bottom keep the unit's activation on the 24
    tokens before and the 7 after, NaN outside the example's window; the page shows the part inside
    the window with the token ids of the stream."""
    from maxact.analysis.pages import unit_page

    _, tokens, atlas = built
    seq = atlas.manifest.seq
    for row in (0, atlas.n_units - 1):
        page = unit_page(atlas, str(atlas.unit_at(row)))
        for part in ("top", "bottom"):
            positions = np.load(atlas.path / f"{part}_positions.npy")[row]
            stored = np.load(atlas.path / f"{part}_context.npy")[row].astype(np.float32)  # (K_ctx, 32)
            items = page[part]
            assert [it["position"] for it in items] == [int(p) for p in positions if p >= 0]
        for part, stem in (("top_pos0", "top0"), ("bottom_pos0", "bottom0")):  # the first 8 of K = 12
            positions = np.load(atlas.path / f"{stem}_positions.npy")[row]
            assert (positions >= 0).sum() > 8
            assert [it["position"] for it in page[part]] == positions[:8].tolist()
            for rank, it in enumerate(items):
                if rank >= stored.shape[0]:
                    assert "context" not in it
                    continue
                p = it["position"]
                w0 = p - p % seq
                lo, hi = max(w0, p - 24), min(w0 + seq, p + 8, len(tokens))
                c = it["context"]
                assert (c["start"], c["focus"]) == (lo, p - lo)
                assert c["token_ids"] == tokens[lo:hi].tolist()
                assert c["values"] == stored[rank][lo - (p - 24): hi - (p - 24)].tolist()


def test_the_last_position_of_the_corpus_is_tallied_by_its_own_token(built, crafted):
    from maxact.analysis.pages import reference_tally

    _, tokens, _ = built
    assert tokens[-1] != tokens[-2]
    tally = reference_tally(crafted, 0)["tally"]
    assert tally[0]["token_id"] == int(tokens[-1]) and tally[0]["expected_share"] == 1.0
    assert tally[0]["occurrences"] == int((tokens == tokens[-1]).sum())


def test_page_stats_count_is_an_integer(built):
    """The token count is a JSON integer (630, not 630.0) and equals the corpus length."""
    from maxact.analysis.pages import stats

    _, tokens, atlas = built
    count = stats(atlas, 0)["count"]
    assert type(count) is int and count == len(tokens)


def test_page_tuning_lists_and_the_other_row(built):
    """Lowest: the tracked types seen at least min_tuning_count times, by increasing mean; other: the
    last row of tuning_counts / tuning_means (every untracked token)."""
    from maxact.analysis.pages import tuning

    _, _, atlas = built
    ids = np.load(atlas.path / F.TUNING_IDS)
    counts = np.load(atlas.path / F.TUNING_COUNTS)
    means = np.load(atlas.path / F.TUNING_MEANS)[:, 3].astype(np.float64)  # (V+1,) of unit row 3
    seen = [i for i in range(len(ids)) if counts[i] >= atlas.manifest.min_tuning_count]
    page = tuning(atlas, 3)
    assert [r["token_id"] for r in page["lowest"]] == [int(ids[i]) for i in sorted(seen, key=lambda i: means[i])][:15]
    assert page["other"] == {"count": int(counts[-1]), "mean": float(means[-1])}


def test_neighbours_are_the_adjacent_indices_and_the_same_index_elsewhere(built):
    from maxact.analysis.pages import neighbours
    from maxact.units import parse_unit

    _, _, atlas = built
    wide = max(atlas.sites, key=lambda s: s.width)
    narrow = min(atlas.sites, key=lambda s: s.width)
    assert narrow.width < wide.width
    index = narrow.width  # one past the narrow sites' last unit
    unit = parse_unit(f"{wide.name}:{index}")
    got = neighbours(atlas, unit)
    assert got["prev"] == f"{wide.name}:{index - 1}" and got["next"] == f"{wide.name}:{index + 1}"
    related = [s.name for s in atlas.sites if s.name != wide.name and index < s.width
               and (s.site == wide.site or s.layer == wide.layer)]
    assert got["same_index"] == [f"{name}:{index}" for name in related]


def test_band_levels_and_random_sample_from_hand_written_bands(built, tmp_path):
    """Unit 0's bands rewritten: the top band holds positions 0 and 5, band 0 holds position 7. The
    page lists the top band first, then band 0; the random sample is the kept positions by
    increasing splitmix64 hash; each example shows 12 tokens before and 4 after, inside its window."""
    from atlas_helpers import splitmix64

    from maxact.analysis.bands import activation_bands

    root, tokens, atlas = built
    out = tmp_path / "bands"
    shutil.copytree(atlas.path, out)
    positions, values = np.load(out / F.BAND_POSITIONS), np.load(out / F.BAND_VALUES)
    top = positions.shape[1] - 1
    positions[0], values[0] = -1, np.nan
    positions[0, top, :2], values[0, top, :2] = (0, 5), (300.0, 400.0)
    positions[0, 0, 0], values[0, 0, 0] = 7, -1.0
    np.save(out / F.BAND_POSITIONS, positions)
    np.save(out / F.BAND_VALUES, values)
    copy = Atlas(out)
    page = activation_bands(copy, 0)
    assert [(lvl["band"], [e["position"] for e in lvl["examples"]]) for lvl in page["levels"]] == [
        (top, [0, 5]), (0, [7])]
    seed, seq = copy.manifest.bands.seed, copy.manifest.seq
    by_hash = sorted([0, 5, 7], key=lambda p: int(splitmix64(np.array([p]), seed)[0]))
    assert [e["position"] for e in page["random"]] == by_hash
    for e in page["random"]:
        p = e["position"]
        lo, hi = max(p - p % seq, p - 12), min(p - p % seq + seq, len(tokens), p + 5)
        c = e["context"]
        assert (c["start"], c["focus"], c["token_ids"]) == (lo, p - lo, tokens[lo:hi].tolist())
        assert c["tokens"] == [copy.token_text(int(t)) for t in tokens[lo:hi]]
