"""Every number the viewer ranks by, recomputed independently from raw activations (issue 13).

For each of the four families a tiny random-weight model is saved to a folder and an atlas is built
from it through the CLI (sites resid_pre and ln_final over a 630-token skewed word corpus, whose
last window is short). The raw activations come from a plain ``transformers`` forward pass
(``hidden_states``); every derived number is then recomputed in ``derived_helpers.Expected`` from
the documents alone and compared with what ``show --json``, ``find --json``, ``sample --atlas
--json``, ``export --parquet``, the viewer's overview and the atlas's .npy files report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from derived_helpers import (
    POS0_LIMIT,
    SELECTIVE_SHARE,
    SELECTIVE_Z,
    Expected,
    K,
    expected_bounds,
    interesting_units,
    make_case,
    sampled_units,
    seeded_starts,
    simulate_winners,
)

FAMILIES = ("llama", "gpt2", "gpt_neo", "gpt_neox")
F32 = dict(rtol=2e-5, atol=1e-6)  # a float32 store against a float64 recomputation
TUNING = dict(rtol=1e-4, atol=1e-4)  # float32 tuning sums over a few hundred tokens
F32A, TUNINGA = dict(rel=2e-5, abs=1e-6), dict(rel=1e-4, abs=1e-4)  # the same for pytest.approx


@pytest.fixture(scope="module", params=FAMILIES)
def case(request, tmp_path_factory):
    return make_case(tmp_path_factory.mktemp(f"derived-{request.param}"), request.param)


@pytest.fixture(scope="module")
def exp(case):
    return Expected(case)


@pytest.fixture(scope="module")
def rows(exp):
    return interesting_units(exp, 10)


@pytest.fixture(scope="module")
def pages(case, rows):
    """show --json of the interesting units, by row."""
    return {u: case.show(case.unit_name(u)) for u in rows}


def load(case, name):
    return np.load(case.atlas / name)


def text(t: int) -> str:
    return f"w{t}"  # the tiny word-level tokenizer: id N is the word wN


# =================================================================================================
# the stored lists and the reference summary
# =================================================================================================
def test_stored_lists_are_the_brute_force_top_k(case, exp):
    """Premise of everything below: the atlas's lists are the brute force over raw activations."""
    for name, (v, p) in {"top": (exp.top, exp.top_pos), "bottom": (exp.bottom, exp.bottom_pos),
                         "top0": (exp.top0, exp.top0_pos), "bottom0": (exp.bottom0, exp.bottom0_pos)}.items():
        np.testing.assert_array_equal(load(case, f"{name}_positions.npy"), p, err_msg=name)
        np.testing.assert_array_equal(load(case, f"{name}_values.npy"), v, err_msg=name)
    np.testing.assert_array_equal(load(case, "ref_positions.npy"), exp.all_pos)
    np.testing.assert_allclose(load(case, "ref_probs.npy"), exp.probs, **F32)


def test_reference_summary(case, exp):
    """miss, top token and share, pos0_share, and the x_* fields (window position 0 excluded)."""
    ref = load(case, "refstat.npy")
    np.testing.assert_allclose(ref["miss"], exp.miss, **F32)
    np.testing.assert_allclose(ref["x_miss"], exp.xmiss, **F32)
    np.testing.assert_allclose(ref["top_share"], exp.top_share, **F32)
    np.testing.assert_allclose(ref["x_top_share"], exp.x_top_share, **F32)
    np.testing.assert_allclose(ref["pos0_share"], exp.pos0_share, **F32)
    clear = exp.top_gap > 1e-5  # no near-tie between the two most probable tokens
    np.testing.assert_array_equal(ref["top_token"][clear], exp.top_token[clear])
    clear = exp.x_top_gap > 1e-5
    np.testing.assert_array_equal(ref["x_top_token"][clear], exp.x_top_token[clear])
    # the atlas is one where excluding position 0 matters: the check above can tell them apart
    assert (np.abs(exp.x_top_share - exp.top_share) > 1e-3).sum() > 5
    assert ((exp.pos0_share > 0.01) & (exp.pos0_share < 0.99)).sum() > 5


def test_tuning_and_selectivity_fields(case, exp):
    """Tracked types, tuning means, top_token_z, top_token_lift, best_token and best_z."""
    ref = load(case, "refstat.npy")
    np.testing.assert_array_equal(load(case, "tuning_token_ids.npy"), exp.tracked)
    counts = load(case, "tuning_counts.npy")
    np.testing.assert_array_equal(counts[:-1], exp.tracked_counts)
    assert counts[-1] == exp.n - exp.tracked_counts.sum()
    means = load(case, "tuning_means.npy")
    np.testing.assert_allclose(means[:-1], exp.type_means, **TUNING)
    np.testing.assert_allclose(means[-1], exp.other_mean, **TUNING)

    np.testing.assert_array_equal(np.isnan(ref["top_token_z"]), np.isnan(exp.top_token_z))
    np.testing.assert_allclose(ref["top_token_z"], exp.top_token_z, **TUNING)
    np.testing.assert_allclose(ref["top_token_lift"], exp.top_token_lift, rtol=1e-4)
    clear = exp.best_gap > 1e-3
    np.testing.assert_array_equal(ref["best_token"][clear], exp.best_token[clear])
    np.testing.assert_allclose(ref["best_z"], exp.best_z, **TUNING)
    # the top token is often a tracked type seen often enough, and often not the best one
    assert (~np.isnan(exp.top_token_z)).sum() > 20 and (exp.best_token != exp.top_token).sum() > 20
    assert (exp.tracked_counts < exp.min_count).any()  # some tracked types carry no z


# =================================================================================================
# the viewer's overview: score, clean, selective, rankings
# =================================================================================================
def _near_threshold(exp):
    z0 = np.nan_to_num(exp.top_token_z, nan=0.0)
    return ((np.abs(z0 - SELECTIVE_Z) < 1e-3) | (np.abs(exp.top_share - SELECTIVE_SHARE) < 1e-4)
            | (np.abs(exp.pos0_share - POS0_LIMIT) < 1e-4))


def test_overview_score_and_criteria(case, exp):
    from maxact.analysis.overview import overview, site_units
    from maxact.store.reader import Atlas

    atlas = Atlas(case.atlas)
    near = _near_threshold(exp)
    ov = overview(atlas, top=12)
    cells = {c["site"]: c for c in ov["cells"]}
    for site in case.manifest["sites"]:
        lo, width = site["offset"], site["width"]
        listing = site_units(atlas, site["name"], 1, 1000)
        assert listing["total"] == width and len(listing["units"]) == width
        listed = [case.row_of(g["unit"]) for g in listing["units"]]
        assert sorted(listed) == list(range(lo, lo + width))
        for r, g in zip(listed, listing["units"]):
            assert g["score"] == pytest.approx(exp.score[r], rel=1e-4, abs=1e-5), g
            assert g["top_share"] == pytest.approx(exp.top_share[r], **F32A)
            assert g["pos0_share"] == pytest.approx(exp.pos0_share[r], **F32A)
            assert g["x_top_share"] == pytest.approx(exp.x_top_share[r], **F32A)
            if np.isnan(exp.top_token_z[r]):
                assert g["top_token_z"] is None
            else:
                assert g["top_token_z"] == pytest.approx(exp.top_token_z[r], **TUNINGA)
            assert g["best_z"] == pytest.approx(exp.best_z[r], **TUNINGA)
            if exp.top_gap[r] > 1e-5:
                assert g["top_token"] == text(exp.top_token[r])
            if exp.x_top_gap[r] > 1e-5:
                assert g["x_top_token"] == text(exp.x_top_token[r])
            if not near[r]:
                assert g["selective"] == bool(exp.selective[r]), g
        # most selective first: the recomputed scores fall along the listing (rounded to 1e-3)
        s = exp.score[listed]
        assert (np.diff(s) <= 1.5e-3).all(), s
        cell = cells[site["name"]]
        rows = slice(lo, lo + width)
        if not near[rows].any():
            assert cell["n_clean"] == int(exp.clean[rows].sum())
            assert cell["n_selective"] == int(exp.selective[rows].sum())
            assert cell["frac_selective"] == pytest.approx(exp.selective[rows].mean())
            shares = exp.top_share[rows][exp.clean[rows]]
            assert cell["mean_top_share"] == pytest.approx(shares.mean(), **F32A)
            assert cell["median_top_share"] == pytest.approx(np.median(shares), **F32A)
        if exp.score[rows].max() > 0:
            assert cell["best"]["score"] == pytest.approx(exp.score[rows].max(), abs=1.5e-3)
    # the top units overall: positive scores, the highest of the atlas
    top = ov["top_units"]
    assert 0 < len(top) <= 12
    twelfth = np.sort(exp.score)[::-1][len(top) - 1]
    for u in top:
        r = case.row_of(u["unit"])
        assert exp.score[r] > 0 and exp.score[r] >= twelfth - 1.5e-3
    # both sides of each criterion occur, so a flipped criterion changes the answer
    assert exp.clean.any() and (~exp.clean).any()
    assert ((exp.score > 0) & (exp.pos0_share > 0.01)).any()


# =================================================================================================
# show --json: tally, reference, examples, contexts, statistics, tuning lists
# =================================================================================================
def test_show_tally_and_reference(exp, rows, pages):
    samples = exp.ref_samples
    for u in rows:
        page = pages[u]
        ref = page["reference"]
        geometry = {"batch": exp.ref_batch, "seq": exp.ref_seq, "samples": samples, "seed": exp.ref_seed}
        assert {k: ref["geometry"][k] for k in geometry} == geometry
        assert ref["miss_prob"] == pytest.approx(exp.miss[u], **F32A)
        assert ref["pos0_share"] == pytest.approx(exp.pos0_share[u], **F32A)
        x = ref["excluding_pos0"]
        assert x["top_share"] == pytest.approx(exp.x_top_share[u], **F32A)
        assert x["miss_prob"] == pytest.approx(exp.xmiss[u], **F32A)
        if exp.x_top_gap[u] > 1e-5:
            assert x["top_token"] == exp.x_top_token[u] and x["top_token_text"] == text(exp.x_top_token[u])

        counts, missed, _ = exp.simulated_tally(u)
        shares = exp.shares[u]
        assert ref["distinct"] == len(counts)
        tally = {r["token_id"]: r for r in page["tally"]}
        assert len(tally) == len(page["tally"])
        for t, r in tally.items():
            assert r["token"] == text(t)
            assert r["count"] == counts.get(t, 0), (u, t)
            assert r["share"] == r["count"] / samples  # of the simulated batches
            assert r["expected_share"] == pytest.approx(shares.get(t, 0.0), rel=1e-5, abs=1e-6), (u, t)
            assert r["occurrences"] == exp.occ[t]
            per_occurrence = shares.get(t, 0.0) * samples / exp.occ[t]  # expected wins / occurrences
            assert r["wins_per_occurrence"] == pytest.approx(per_occurrence, rel=1e-5, abs=1e-6)
        # every winner is listed; so is every token with a visible expected share
        shown = {t for t, s in shares.items() if s >= 1e-4 * (1 + 1e-3)} | set(counts)
        maybe = {t for t, s in shares.items() if abs(s - 1e-4) < 1e-7}
        assert shown - maybe <= set(tally) <= shown | maybe
        assert sum(r["count"] for r in page["tally"]) == samples - missed
        # most expected first
        keys = [(-r["expected_share"], -r["count"], r["token_id"]) for r in page["tally"]]
        assert keys == sorted(keys)
        if exp.top_gap[u] > 1e-5 and page["tally"]:
            assert page["tally"][0]["token_id"] == exp.top_token[u]


def test_show_examples_and_contexts_align(case, exp, rows, pages):
    seq, n = exp.seq, exp.n
    with_context = 0
    for u in rows:
        page = pages[u]
        for part, (vals, poss), limit in (("top", (exp.top, exp.top_pos), None),
                                          ("bottom", (exp.bottom, exp.bottom_pos), None),
                                          ("top_pos0", (exp.top0, exp.top0_pos), 8),
                                          ("bottom_pos0", (exp.bottom0, exp.bottom0_pos), 8)):
            items = page[part]
            assert [it["position"] for it in items] == poss[u][:limit].tolist(), part
            assert [it["value"] for it in items] == vals[u][:limit].tolist(), part
            for it in items:
                p = it["position"]
                assert it["token_id"] == exp.tokens[p] and it["token"] == text(exp.tokens[p])
                assert it["window_pos"] == p % seq
                if "context" not in it:
                    continue
                with_context += 1
                c = it["context"]
                start, ids = c["start"], c["token_ids"]
                assert ids == exp.tokens[start : start + len(ids)].tolist()
                assert c["tokens"] == [text(t) for t in ids]
                assert start + c["focus"] == p and ids[c["focus"]] == it["token_id"]
                assert len(c["values"]) == len(ids)
                assert c["values"][c["focus"]] == float(np.float16(it["value"]))
                w0, w1 = exp.window_of(p)  # never across the edge of the atlas window
                assert start == max(w0, p - 24) and start + len(ids) == min(w1, p + 8, n)
                acts = case.acts[start : start + len(ids), u].astype(np.float16).astype(float)
                assert c["values"] == acts.tolist()
    assert with_context >= 8 * len(rows)


def test_show_statistics_and_histogram(case, exp, rows, pages):
    hist = load(case, "hist.npy")
    np.testing.assert_array_equal(load(case, "hist_bounds.npy"), expected_bounds())
    np.testing.assert_array_equal(hist, exp.hist)
    for u in rows:
        st = pages[u]["stats"]
        assert st["count"] == exp.n
        assert st["mean"] == pytest.approx(exp.mean[u], rel=1e-6, abs=1e-7)
        assert st["std"] == pytest.approx(exp.std[u], rel=1e-5, abs=1e-7)
        assert st["max"] == float(case.acts[:, u].max()) and st["min"] == float(case.acts[:, u].min())
        nz = np.nonzero(exp.hist[u])[0]
        assert st["hist"]["counts"] == exp.hist[u][nz[0] : nz[-1] + 1].tolist()
        assert st["hist"]["bounds"] == expected_bounds()[nz[0] : nz[-1] + 1].tolist()


def test_show_tuning_lists(exp, rows, pages):
    ok = exp.tracked_counts >= exp.min_count
    for u in rows:
        tuning = pages[u]["tuning"]
        m = exp.type_means[:, u]
        idx = [i for i in np.argsort(-m, kind="stable") if ok[i]]
        for name, want in (("highest", idx[:15]), ("lowest", idx[::-1][:15])):
            got = tuning[name]
            assert [r["token_id"] for r in got] == exp.tracked[want].tolist(), (u, name)
            for r, i in zip(got, want):
                assert r["token"] == text(exp.tracked[i]) and r["count"] == exp.tracked_counts[i]
                assert r["mean"] == pytest.approx(m[i], **TUNINGA)
                assert r["z"] == pytest.approx(exp.z[i, u], **TUNINGA)
        assert tuning["other"]["count"] == exp.n - exp.tracked_counts.sum()
        assert tuning["other"]["mean"] == pytest.approx(exp.other_mean[u], **TUNINGA)
    assert ok.sum() > 15  # the lists are cut: highest and lowest differ


# =================================================================================================
# find --json
# =================================================================================================
def test_find_ranks_by_z_with_win_shares(case, exp):
    ok = np.nonzero(exp.tracked_counts >= exp.min_count)[0]
    for i in (0, int(ok[len(ok) // 2]), int(ok[-1])):
        t = int(exp.tracked[i])
        found = case.find(text(t), "--limit", "100000")
        assert found["token_id"] == t and found["occurrences"] == exp.occ[t]
        z = (exp.type_means[i] - exp.mean) / exp.std
        units = found["units"]
        assert len(units) == exp.U
        listed = []
        for g in units:
            r = case.row_of(g["unit"])
            listed.append(r)
            assert g["z"] == pytest.approx(z[r], **TUNINGA)
            assert g["mean_on_token"] == pytest.approx(exp.type_means[i, r], **TUNINGA)
            assert g["unit_mean"] == pytest.approx(exp.mean[r], rel=1e-6, abs=1e-7)
            assert g["unit_std"] == pytest.approx(exp.std[r], rel=1e-5, abs=1e-7)
            win = exp.shares[r].get(t, 0.0)
            assert g["win_share"] == pytest.approx(win, rel=1e-5, abs=1e-6), (g, win)
            per_occurrence = win * exp.ref_samples / exp.occ[t]
            assert g["wins_per_occurrence"] == pytest.approx(per_occurrence, rel=1e-5, abs=1e-6)
            assert g["top_share"] == pytest.approx(exp.top_share[r], **F32A)
            if exp.top_gap[r] > 1e-5:
                assert g["top_token"] == text(exp.top_token[r])
        assert sorted(listed) == list(range(exp.U))
        assert (np.diff(z[listed]) <= 1e-4).all()  # most selective first
        assert sum(exp.shares[r].get(t, 0.0) > 0 for r in range(exp.U)) > 0
        # one site only, the default limit of 20
        ln = [j for j in range(exp.U) if case.unit_name(j).startswith("ln_final:")]
        ln.sort(key=lambda j: -z[j])
        got = [case.row_of(g["unit"]) for g in case.find(text(t), "--site", "ln_final")["units"]]
        assert len(got) == 20 and set(got) <= set(ln)
        if z[ln[19]] - z[ln[20]] > 1e-4:
            assert set(got) == set(ln[:20])


# =================================================================================================
# sample --atlas --json
# =================================================================================================
@pytest.mark.parametrize("skip_pos0", [False, True])
def test_sample_atlas_winners(case, exp, rows, tmp_path, skip_pos0):
    batch, samples, seed = 5, 80, 13
    units = rows[:4]
    args = ["sample", "--atlas", case.atlas, "--batch", batch, "--seq", exp.seq, "--samples", samples,
            "--seed", seed, "--json", tmp_path / "s.json"]
    for u in units:
        args += ["--unit", case.unit_name(u)]
    if skip_pos0:
        args.append("--skip-pos0")
    case.run(*args)
    result = sampled_units(json.loads((tmp_path / "s.json").read_text()))
    starts = seeded_starts(exp.n, exp.seq, batch, samples, seed)
    later_rows = 0
    for u, obj in zip(units, result, strict=True):
        assert obj.unit == case.unit_name(u)
        assert obj.starts == starts.tolist()
        positions = exp.top_pos[u] if skip_pos0 else exp.all_pos[u]
        winners = simulate_winners(positions, starts, exp.seq)
        counts: dict[int, int] = {}
        pos0 = 0
        assert len(obj.winners) == samples
        for b, (win, w) in enumerate(zip(obj.winners, winners)):
            if w.rank < 0:
                assert win is None
                continue
            row, col = win["row"], win["col"]
            assert 0 <= row < batch and 0 <= col < exp.seq, win
            assert obj.starts[b][row] + col == w.position, (b, win, w)
            assert exp.tokens[obj.starts[b][row] + col] == win["token_id"]
            assert row == w.row and win["token_id"] == exp.tokens[w.position]
            assert win["value"] == float(case.acts[w.position, u])
            later_rows += row > 0
            counts[win["token_id"]] = counts.get(win["token_id"], 0) + 1
            pos0 += w.position % exp.seq == 0
        tally = {r["token_id"]: r for r in obj.tally}
        assert {t: r["count"] for t, r in tally.items()} == counts
        assert all(r["share"] == r["count"] / samples for r in tally.values())
        assert obj.distinct == len(counts) and obj.pos0_wins == pos0
        if skip_pos0:
            assert pos0 == 0
    assert later_rows > 0  # winners outside the first window: the column's origin matters


# =================================================================================================
# export --parquet
# =================================================================================================
def test_export_ranks_and_unit_columns(case, exp, tmp_path):
    import pyarrow.parquet as pq

    case.run("export", case.atlas, "--parquet", tmp_path / "pq")
    ex = pq.read_table(tmp_path / "pq" / "examples.parquet").to_pydict()
    row_of = {case.unit_name(r): r for r in range(exp.U)}
    lists = {"top": (exp.top, exp.top_pos), "bottom": (exp.bottom, exp.bottom_pos),
             "top0": (exp.top0, exp.top0_pos), "bottom0": (exp.bottom0, exp.bottom0_pos)}
    seen = {kind: np.zeros((exp.U, K), dtype=int) for kind in lists}
    for unit, kind, rank, value, position, token_id in zip(
            ex["unit"], ex["kind"], ex["rank"], ex["value"], ex["position"], ex["token_id"]):
        r = row_of[unit]
        vals, poss = lists[kind]
        assert position == poss[r, rank] and value == vals[r, rank], (unit, kind, rank)
        assert token_id == exp.tokens[position]
        seen[kind][r, rank] += 1
    assert all((s == 1).all() for s in seen.values())  # every rank 0..K-1 of every list, once

    units = pq.read_table(tmp_path / "pq" / "units.parquet").to_pydict()
    assert units["unit"] == [case.unit_name(r) for r in range(exp.U)]
    np.testing.assert_allclose(units["mean"], exp.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(units["ref_top_share"], exp.top_share, **F32)
    np.testing.assert_allclose(units["ref_pos0_share"], exp.pos0_share, **F32)
    np.testing.assert_allclose(units["ref_x_top_share"], exp.x_top_share, **F32)
    np.testing.assert_allclose(units["ref_top_token_lift"], exp.top_token_lift, rtol=1e-4)
    np.testing.assert_allclose(np.array(units["ref_top_token_z"], dtype=float), exp.top_token_z, **TUNING)
    clear = exp.top_gap > 1e-5
    assert np.array(units["ref_top_token_text"])[clear].tolist() == [text(t) for t in exp.top_token[clear]]
