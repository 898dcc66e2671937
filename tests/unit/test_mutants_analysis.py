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
    _, tokens, atlas, _ = build_tiny_atlas(root / "atlas", "llama", n_tokens=300, seed=2,
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
