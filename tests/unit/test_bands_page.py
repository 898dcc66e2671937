"""The unit page's activation bands (analysis/bands.py) against the atlas arrays and a brute-force
reading of the corpus: levels highest first, the random sample = the candidates with the smallest
hash, contexts cut from the token stream inside the example's window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atlas_helpers import build_tiny_atlas, splitmix64

from maxact.analysis.bands import position_hash
from maxact.analysis.pages import unit_page
from maxact.engine import bands as engine_bands
from maxact.store import format as F


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    lm, tokens, atlas, cfg = build_tiny_atlas(tmp_path_factory.mktemp("bands") / "atlas", n_tokens=2000, seed=3)
    return tokens, atlas, cfg


def test_numpy_hash_is_the_engines_hash():
    rng = np.random.default_rng(0)
    positions = np.concatenate([np.arange(100), rng.integers(0, 2**40, 1000)]).astype(np.int64)
    for seed in (0, 1, 12345, 2**63 + 7):
        ours = position_hash(positions, seed)
        engine = engine_bands.position_hash(torch.from_numpy(positions), seed).numpy().view(np.uint64)
        np.testing.assert_array_equal(ours, engine)
        np.testing.assert_array_equal(ours, splitmix64(positions, seed % 2**64))


def test_levels_are_the_kept_examples_highest_band_first(tiny):
    tokens, atlas, cfg = tiny
    edges = np.asarray(atlas[F.BAND_EDGES])
    for row in (0, 5, atlas.n_units - 1):
        page = unit_page(atlas, str(atlas.unit_at(row)))["bands"]
        pos, val = np.asarray(atlas[F.BAND_POSITIONS][row]), np.asarray(atlas[F.BAND_VALUES][row])
        expected = [b for b in range(len(edges) - 2, -1, -1) if (pos[b] >= 0).any()]
        assert [lvl["band"] for lvl in page["levels"]] == expected
        for lvl in page["levels"]:
            b = lvl["band"]
            assert [e["position"] for e in lvl["examples"]] == [int(p) for p in pos[b] if p >= 0]
            for e, v in zip(lvl["examples"], val[b]):
                assert e["value"] == pytest.approx(float(v))
                assert e["token_id"] == int(tokens[e["position"]])
                if b > 0:  # the value lies in its band
                    assert edges[b] <= e["value"] < edges[b + 1] or (b == 1 and 0 < e["value"] < edges[2])
                else:
                    assert e["value"] <= 0


def test_random_sample_is_the_smallest_hashes_of_all_candidates(tiny):
    tokens, atlas, cfg = tiny
    n = len(tokens)
    h = splitmix64(np.arange(n, dtype=np.int64), cfg.seed)
    cand = np.flatnonzero(h < np.uint64(1 << 58))
    want = cand[np.argsort(h[cand], kind="stable")][:4].tolist()
    page = unit_page(atlas, str(atlas.unit_at(7)))["bands"]
    assert page["sampling"] == {"one_in": 64, "per_band": 4, "hash": "splitmix64", "seed": cfg.seed}
    assert [e["position"] for e in page["random"]] == want


def test_band_contexts_are_cut_from_the_tokens_inside_the_window(tiny):
    tokens, atlas, cfg = tiny
    page = unit_page(atlas, str(atlas.unit_at(3)))["bands"]
    examples = [e for lvl in page["levels"] for e in lvl["examples"]] + page["random"]
    assert examples
    for e in examples:
        c = e["context"]
        assert c["token_ids"] == tokens[c["start"] : c["start"] + len(c["token_ids"])].tolist()
        assert c["start"] + c["focus"] == e["position"]
        window = e["position"] // cfg.seq
        assert c["start"] // cfg.seq == window == (c["start"] + len(c["token_ids"]) - 1) // cfg.seq
        assert e["window_pos"] == e["position"] % cfg.seq
