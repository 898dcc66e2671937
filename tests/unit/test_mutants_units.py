"""Checks that kill the mutants of the second `make mutation` round in analysis/pages.py (a unit's
page: reference tally, tuning, the page's own keys), analysis/bands.py, sampling.py and
store/reader.py (docs/MUTATION.md; equivalent ones: /work/notes/mut_M4.md).

The atlas functions read copies of one tiny atlas with hand-written reference probabilities,
statistics or tuning means, and are checked against numbers recomputed here from the raw arrays.
Every function under test is called inside the test (docs/MUTATION.md, "Module-scoped fixtures").
"""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
from atlas_helpers import (
    FIVE_SITES,
    five_site_atlas,
    synthetic_source,
    tiny_tokens,
)
from tiny_models import tiny_loaded

from maxact.analysis.bands import CONTEXT_AFTER, CONTEXT_BEFORE, activation_bands, position_hash
from maxact.analysis.pages import (
    examples,
    neighbours,
    reference_tally,
    simulate_unit,
    tuning,
    unit_page,
)
from maxact.errors import MaxactError
from maxact.sampling import SampleConfig, sample_exact
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.units import parse_unit

SITES = FIVE_SITES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return five_site_atlas(tmp_path_factory.mktemp("mutants_units"))


def _copy(built, name, arrays):
    """A copy of the atlas with some arrays replaced (the manifest's shapes follow)."""
    out = built.root / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(built.path, out)
    manifest = json.loads((out / F.MANIFEST).read_text())
    for fname, arr in arrays.items():
        np.save(out / fname, arr)
        manifest["files"][fname]["shape"] = list(arr.shape)
    (out / F.MANIFEST).write_text(json.dumps(manifest))
    return Atlas(out)


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


# ---- bands ---------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1


def _splitmix64(p: int, seed: int) -> int:
    """The p-th output of splitmix64 seeded with ``seed``, in Python integers."""
    z = ((p + 1) * 0x9E3779B97F4A7C15 + seed) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def test_position_hash_is_splitmix64_with_the_seed_taken_modulo_2_64():
    positions = np.array([0, 1, 5, 299, 1 << 40], dtype=np.int64)
    for seed in (0, 7, _M64, 1 << 64, (1 << 64) + 3, -1):
        want = [_splitmix64(int(p), seed % (1 << 64)) for p in positions]
        assert position_hash(positions, seed).tolist() == want, seed


def test_band_levels_and_examples_every_key(built):
    atlas = Atlas(built.path)
    edges = np.load(atlas.path / F.BAND_EDGES)
    positions, values = np.load(atlas.path / F.BAND_POSITIONS), np.load(atlas.path / F.BAND_VALUES)
    filled = (positions >= 0).any(axis=2)  # (U, B)
    row = int(np.nonzero(filled.sum(1) >= 2)[0][0])
    got = activation_bands(atlas, row)
    bands = [b for b in range(len(edges) - 2, -1, -1) if filled[row, b]]
    assert [lv["band"] for lv in got["levels"]] == bands
    for level in got["levels"]:
        b = level["band"]
        assert set(level) == {"band", "low", "high", "examples"}
        assert level["low"] == _finite(edges[b]) and level["high"] == _finite(edges[b + 1])
        kept = [(int(p), float(v)) for p, v in zip(positions[row, b], values[row, b]) if p >= 0]
        assert len(level["examples"]) == len(kept)
        for ex, (p, v) in zip(level["examples"], kept):
            start, end = (int(x[0]) for x in atlas.window_bounds(np.array([p])))
            lo, hi = max(start, p - CONTEXT_BEFORE), min(end, p + CONTEXT_AFTER + 1)
            ids = built.tokens[lo:hi].tolist()
            tok = int(built.tokens[p])
            assert ex == {"position": p, "token_id": tok, "token": atlas.vocab[tok], "value": v,
                          "window_pos": p - start,
                          "context": {"start": lo, "focus": p - lo, "token_ids": ids,
                                      "tokens": [atlas.vocab[t] for t in ids]}}


# ---- pages: the reference tally -------------------------------------------------------------------
def _pieces_of(target: float) -> list[np.float32]:
    """Three float32 numbers >= 0 whose float64 sum, left to right, is exactly ``target`` > 0."""
    out, rest = [], target
    for _ in range(3):
        piece = np.float32(rest)
        if float(piece) > rest:  # round down: the rest stays >= 0 (a reference probability is never < 0)
            piece = np.nextafter(piece, np.float32(0))
        out.append(piece)
        rest -= float(piece)
    assert rest == 0.0
    return out


def test_reference_tally_rows_filter_and_order(built):
    """Tokens that won simulated batches but carry no expected share are kept (ordered by count,
    most first, after every token with a share); tokens without a win are kept from 1e-4 on."""
    atlas = Atlas(built.path)
    ref = atlas.manifest.reference
    ref_pos = np.load(atlas.path / F.REF_POSITIONS)
    occ = np.bincount(built.tokens, minlength=len(atlas.vocab))
    for row in range(atlas.n_units):  # a unit with winners counted 1 and two other counts, and 3 losers
        won = simulate_unit(atlas, row, ref.batch, ref.seq, ref.samples, ref.seed, False).token_ids
        ids, n = np.unique(won[won >= 0], return_counts=True)
        counts = dict(zip(ids.tolist(), n.tolist()))
        pos = ref_pos[row]
        losers = [int(built.tokens[p]) for p in pos if p >= 0 and int(built.tokens[p]) not in counts]
        many = [t for t in dict.fromkeys(losers) if losers.count(t) >= 3]
        if 1 in counts.values() and len(set(counts.values())) >= 3 and many and len(set(losers)) >= 3:
            break
    else:
        pytest.fail("no unit fits the test")
    e_tok = many[0]  # share exactly 1e-4, no win: kept
    d_tok, f_tok = [t for t in dict.fromkeys(losers) if t != e_tok][:2]  # 5e-5: dropped; 0.5: first
    probs = np.load(atlas.path / F.REF_PROBS)
    probs[row] = 0.0  # the winners have no expected share
    pos_tok = np.where(pos >= 0, built.tokens[np.maximum(pos, 0)], -1)  # (K,) token at each slot
    slots = {t: np.nonzero(pos_tok == t)[0].tolist() for t in (d_tok, e_tok, f_tok)}
    probs[row, slots[e_tok][:3]] = _pieces_of(1e-4)
    probs[row, slots[d_tok][0]], probs[row, slots[f_tok][0]] = 5e-5, 0.5
    assert float(np.bincount(np.zeros(3, dtype=np.int64), weights=_pieces_of(1e-4))[0]) == 1e-4
    atlas = _copy(built, "ref_rows", {F.REF_PROBS: probs})
    got = reference_tally(atlas, row)

    def want(t, share):
        c = counts.get(t, 0)
        return {"token_id": t, "token": atlas.vocab[t], "count": c, "share": c / ref.samples,
                "expected_share": share, "occurrences": int(occ[t]),
                "wins_per_occurrence": share * ref.samples / int(occ[t])}

    by_count = sorted(counts, key=lambda t: (-counts[t], t))
    assert got["tally"] == ([want(f_tok, float(np.float32(0.5))), want(e_tok, 1e-4)]
                            + [want(t, 0.0) for t in by_count])
    assert [r["count"] for r in got["tally"][2:]][-1] == 1


# ---- pages: tuning -------------------------------------------------------------------------------
def _tuning_arrays(built):
    return (np.load(built.path / F.TUNING_IDS), np.load(built.path / F.TUNING_COUNTS),
            np.load(built.path / F.TUNING_MEANS), np.load(built.path / F.STATS))


def test_tuning_z_every_key_and_the_last_tracked_type(built):
    ids, counts, means, st = _tuning_arrays(built)
    min_count = Atlas(built.path).manifest.min_tuning_count
    V = len(ids)
    row = next(r for r in range(means.shape[1]) if len(np.unique(means[:V, r])) == V)
    counts[V - 1] = max(counts[V - 1], min_count)
    means[V - 1, row] = means[:, row].max() + 1.0  # the last tracked type has the highest mean
    st["mean"][row], st["std"][row] = 0.25, 0.5  # a std below 1
    atlas = _copy(built, "tuning", {F.TUNING_COUNTS: counts, F.TUNING_MEANS: means, F.STATS: st})
    got = tuning(atlas, row)
    ok = sorted((i for i in range(V) if counts[i] >= min_count), key=lambda i: -float(means[i, row]))

    def want(i):
        m = float(means[i, row])
        return {"token_id": int(ids[i]), "token": atlas.vocab[int(ids[i])], "count": int(counts[i]),
                "mean": m, "z": (m - 0.25) / 0.5}

    assert got["highest"][0]["token_id"] == int(ids[V - 1])
    assert got == {"highest": [want(i) for i in ok[:15]], "lowest": [want(i) for i in ok[::-1][:15]],
                   "tracked_types": V, "min_count": min_count,
                   "other": {"count": int(counts[-1]), "mean": float(means[-1, row])}}


def test_tuning_of_a_constant_unit_has_no_z_and_no_warning(built):
    ids, counts, means, st = _tuning_arrays(built)
    st["mean"][3], st["std"][3] = 0.25, 0.0
    atlas = _copy(built, "tuning_constant", {F.STATS: st})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tuning(atlas, 3)
    assert got["highest"] and all(r["z"] is None for r in got["highest"] + got["lowest"])


# ---- pages: the unit page ------------------------------------------------------------------------
def test_unit_page_info_limits_reference_and_neighbours(built):
    atlas = Atlas(built.path)
    text = "L1.mlp_post:3"
    unit = parse_unit(text)
    row = atlas.row(unit)
    assert len(examples(atlas, row, "top")) >= 2 and len(examples(atlas, row, "bottom")) >= 2
    page = unit_page(atlas, text, limit=1)
    site = atlas.site_of(unit)
    assert page["info"] == {"site": "mlp_post", "layer": 1, "index": 3, "hf_module": site.hf_module,
                            "reads": site.reads, "tl_hook": site.tl_hook}
    assert page["top"] == examples(atlas, row, "top", 1) and len(page["top"]) == 1
    assert page["bottom"] == examples(atlas, row, "bottom", 1) and len(page["bottom"]) == 1
    ref = reference_tally(atlas, row)
    assert page["reference"] == {k: v for k, v in ref.items() if k != "tally"}
    assert "tally" not in page["reference"] and page["tally"] == ref["tally"]
    assert page["neighbours"] == neighbours(atlas, unit)


def test_unit_at_past_the_last_row_names_the_row(built):
    atlas = Atlas(built.path)
    assert str(atlas.unit_at(atlas.n_units - 1)) == "ln_final:63"
    with pytest.raises(IndexError) as e:
        atlas.unit_at(atlas.n_units)
    assert e.value.args == (atlas.n_units,)


# ---- sampling ------------------------------------------------------------------------------------
def _sample_config(**kw) -> SampleConfig:
    base = dict(model="tiny-llama", corpus="synthetic", batch=3, seq=12, samples=4, seed=0)
    return SampleConfig(**{**base, **kw})


def test_sample_exact_shows_its_progress_by_default_and_keeps_float32_values(capsys):
    units = [parse_unit("L0.resid_pre:0"), parse_unit("L1.resid_pre:3")]
    source = synthetic_source(tiny_tokens(200, 0))
    result = sample_exact(tiny_loaded("llama"), source, units, _sample_config())
    err = capsys.readouterr().err
    assert "batches: 100%" in err and "4/4" in err
    assert [u.unit for u in result.units] == units
    assert all(u.values.dtype == np.float32 and u.values.shape == (4,) for u in result.units)


def test_sample_exact_errors_name_the_model_and_the_corpus(monkeypatch):
    lm = tiny_loaded("llama")
    units = [parse_unit("L0.resid_pre:0")]
    with pytest.raises(MaxactError, match="^synthetic-short has 10 tokens, too few for --seq 12"):
        short = synthetic_source(tiny_tokens(10, 0))
        sample_exact(lm, short, units, _sample_config(corpus="synthetic-short"), progress=False)
    monkeypatch.setattr(lm.model.config, "bos_token_id", None)
    with pytest.raises(MaxactError, match="^--bos: model tiny-llama has no BOS token"):
        source = synthetic_source(tiny_tokens(200, 0))
        sample_exact(lm, source, units, _sample_config(bos=True), progress=False)
