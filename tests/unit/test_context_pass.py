"""The context pass (`maxact atlas --context-pass`): shares with two measured contexts per candidate
against a brute force over every start, the shifted values against a plain forward of the shifted
windows, and shards + merge and resume against one run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atlas_helpers import build_tiny_atlas, merge_tiny_partials, single_thread, tiny_tokens
from context_helpers import value_at
from tiny_models import tiny_loaded

from maxact.analysis.context_shares import (
    MeasuredContexts,
    context_segments,
    context_simulate,
    context_win_probabilities,
    measured_contexts,
)
from maxact.analysis.refstat import win_probabilities
from maxact.capture import capture
from maxact.engine.context_pass import gather_shifted
from maxact.store import format as F
from maxact.windows import StartSpace, Windowing


def test_a_value_at_window_position_0_is_not_a_second_context():
    doc_starts = np.zeros(1, dtype=np.int64)
    positions = np.array([[16, 24, 40, 3]])  # windows of 16: first contexts 0, 8, 8, 3; shifted: 8, 0, 0, none
    m = measured_contexts(positions, np.ones((1, 4)), np.full((1, 4), 2.0), doc_starts, 16)
    assert m.first_context.tolist() == [[0, 8, 8, 3]]
    assert m.shift_context.tolist() == [[-1, -1, -1, -1]]  # a sink value (either partition) is no context
    m = measured_contexts(np.array([[20]]), np.ones((1, 1)), np.full((1, 1), 2.0), doc_starts, 16)
    assert (m.first_context.tolist(), m.shift_context.tolist(), m.shift_value.tolist()) == ([[4]], [[12]], [[2.0]])


def brute_force(positions, m: MeasuredContexts, space: StartSpace, batch: int, skip_c0: bool):
    """Every start: its best candidate and value; starts ranked by value; P(rank r is the batch's best)."""
    U, K = positions.shape
    N = space.n_starts
    starts = space.starts_at(np.arange(N))
    probs, miss = np.zeros((U, K)), np.zeros(U)
    for u in range(U):
        best = []
        for s in starts:
            cands = [(value_at(int(p - s), m, u, k, skip_c0), -k) for k, p in enumerate(positions[u])
                     if p >= 0 and s <= p < s + space.length]
            cands = [c for c in cands if c[0] > -np.inf]
            best.append(max(cands) if cands else None)
        covered = sorted((b for b in best if b is not None), reverse=True)
        for r, (_, neg_k) in enumerate(covered):
            probs[u, -neg_k] += ((N - r) / N) ** batch - ((N - r - 1) / N) ** batch
        miss[u] = ((N - len(covered)) / N) ** batch
    return probs, miss


def random_case(seed: int, U: int = 3, K: int = 6):
    rng = np.random.default_rng(seed)
    doc_starts = np.array([0, 23, 31, 70], dtype=np.int64)  # the document at 23 is too short for a window
    n_tokens, length, ref_length = 97, 8, 6
    space = StartSpace.of(doc_starts, n_tokens, ref_length)
    positions = np.stack([rng.choice(n_tokens, K, replace=False) for _ in range(U)]).astype(np.int64)
    positions[0, -1] = -1  # an empty slot
    first = rng.normal(size=(U, K))
    shift = np.where(rng.random((U, K)) < 0.8, rng.normal(size=(U, K)), np.nan)
    return positions, measured_contexts(positions, first, shift, doc_starts, length), space


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("skip_c0", [False, True])
def test_expected_shares_match_every_start_enumerated(seed, skip_c0):
    positions, m, space = random_case(seed)
    batch = 3
    probs, miss = context_win_probabilities(context_segments(positions, m, space, skip_c0), positions.shape[1],
                                            space.n_starts, batch)
    want_p, want_miss = brute_force(positions, m, space, batch, skip_c0)
    np.testing.assert_allclose(probs, want_p, atol=1e-12)
    np.testing.assert_allclose(miss, want_miss, atol=1e-12)
    np.testing.assert_allclose(probs.sum(1) + miss, 1.0, atol=1e-12)


def test_one_context_gives_the_one_context_shares():
    positions, m, space = random_case(5)
    one = m._replace(shift_context=np.full_like(m.shift_context, -1), shift_value=np.full_like(m.shift_value, np.nan))
    # with one value per candidate the ranking is by value: order the candidates so
    order = np.argsort(-np.where(positions >= 0, one.first_value, -np.inf), axis=1, kind="stable")
    pos = np.take_along_axis(positions, order, 1)
    one = MeasuredContexts(*(np.take_along_axis(x, order, 1) for x in one))
    probs, miss = context_win_probabilities(context_segments(pos, one, space), pos.shape[1], space.n_starts, 4)
    want, want_miss = win_probabilities(pos, space, 4)
    np.testing.assert_allclose(probs, want, atol=1e-12)
    np.testing.assert_allclose(miss, want_miss, atol=1e-12)


def test_simulation_values_each_window_by_its_context():
    positions, m, space = random_case(3)
    rng = np.random.default_rng(0)
    index = rng.integers(0, space.n_starts, size=(50, 3))
    for u in range(positions.shape[0]):
        seg = context_segments(positions[u : u + 1], MeasuredContexts(*(x[u : u + 1] for x in m)), space)
        cand, row, value = context_simulate(seg, index, space.n_starts)
        starts = space.starts_at(index)
        for s_i in range(len(index)):
            per_window = []
            for w, s in enumerate(starts[s_i]):
                cs = [(value_at(int(p - s), m, u, k, False), -k) for k, p in enumerate(positions[u])
                      if p >= 0 and s <= p < s + space.length]
                per_window.append((max(cs), -w) if cs else None)
            hits = [x for x in per_window if x is not None]
            if not hits:
                assert cand[s_i] == -1
                continue
            (v, neg_k), neg_w = max(hits)
            assert (cand[s_i], row[s_i], value[s_i]) == (-neg_k, -neg_w, v)


def test_shifted_values_match_a_plain_forward_of_the_shifted_windows():
    lm = tiny_loaded("llama")
    rng = np.random.default_rng(0)
    doc_starts = np.array([0, 50, 53, 140], dtype=np.int64)
    tokens = tiny_tokens(200, 1)
    length = 16
    refs = [r for r in lm.adapter.site_refs(("resid_post", "mlp_post"), (1,))]
    widths = [lm.adapter.width(r) for r in refs]
    positions = rng.integers(-1, 200, size=(sum(widths), 5)).astype(np.int64)
    plain = {}  # (window start, bos) -> every site of a plain forward of that one window
    for bos in (None, 1):
        windowing = Windowing(length + (bos is not None), bos, "short")
        with single_thread():
            got = gather_shifted(lm, tokens, doc_starts, windowing, refs, widths, positions, per_batch=3)
        offsets = np.cumsum([0] + widths)
        ends = np.append(doc_starts[1:], len(tokens))
        for u, k in zip(*np.nonzero(positions >= 0)):
            p = positions[u, k]
            d = np.searchsorted(doc_starts, p, side="right") - 1
            rel = p - doc_starts[d] - length // 2
            if rel < 0:
                assert np.isnan(got[u, k])
                continue
            s = doc_starts[d] + length // 2 + rel // length * length
            ids = tokens[s : min(s + length, ends[d])].astype(np.int64)
            if bos is not None:
                ids = np.concatenate([[bos], ids])
            site = np.searchsorted(offsets, u, side="right") - 1
            if (s, bos) not in plain:
                plain[(s, bos)] = capture(lm.adapter, torch.from_numpy(ids)[None], refs)  # each (1, T, width)
            want = float(plain[(s, bos)][refs[site]][0, (bos is not None) + p - s, u - offsets[site]])
            assert got[u, k] == pytest.approx(want, abs=1e-5), (u, k, p, bos)


def _ref_arrays(atlas):
    names = [F.REF_POSITIONS, F.REF_PROBS, F.REF_SHIFT_VALUES, F.TOP_SHIFT_VALUES]
    ref = atlas[F.REF]  # its shares (the tuning fields may round differently after a merge)
    shares = ["top_token", "top_share", "pos0_share", "miss", "x_top_token", "x_top_share", "x_miss"]
    return {n: np.asarray(atlas[n]) for n in names} | {f"refstat.{f}": np.asarray(ref[f]) for f in shares}


def test_context_pass_atlas_is_the_same_from_shards_and_from_a_resumed_run(tmp_path):
    from maxact.store.reader import Atlas

    common = dict(n_tokens=500, seq=32, sites=("resid_post", "mlp_post"), layers=(1,), context_pass=True)
    _, _, one, _ = build_tiny_atlas(tmp_path / "one", **common)
    assert one.manifest.reference.contexts == 2
    assert "context_pass_seconds" in one.manifest.timing
    _, _, off, _ = build_tiny_atlas(tmp_path / "off", **{**common, "context_pass": False})
    assert off.manifest.reference.contexts == 1 and F.REF_SHIFT_VALUES not in off.manifest.files
    assert not np.array_equal(np.asarray(one[F.REF_PROBS]), np.asarray(off[F.REF_PROBS]))  # context matters here

    for i in range(2):
        build_tiny_atlas(tmp_path / f"s{i}", shard=(i, 2), **common)
    merge_tiny_partials([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", n_tokens=500)
    merged = Atlas(tmp_path / "merged")
    want = _ref_arrays(one)
    for name, arr in _ref_arrays(merged).items():
        np.testing.assert_array_equal(arr, want[name], err_msg=name)

    # a run stopped after its first batch and resumed from the checkpoint
    from atlas_helpers import synthetic_source

    from maxact.config import AtlasConfig
    from maxact.engine.runner import AtlasRun
    from maxact.pipeline import build_atlas
    from maxact.pipeline.outdir import save_state

    lm = tiny_loaded("llama")
    cfg = AtlasConfig(model="tiny-llama", corpus="synthetic", seq=32, sites=common["sites"], layers=(1,), k=8,
                      k_ctx=4, max_types=64, windows_per_batch=4, ref_samples=200, context_pass=True)
    source = synthetic_source(tiny_tokens(500, 0))
    out = tmp_path / "resumed"
    with single_thread():
        run = AtlasRun(lm, source, cfg)
        run.run(progress=False, stop_after_batches=1)
        (out / F.RUN_DIR).mkdir(parents=True)
        save_state(run.state(), out / F.RUN_DIR / F.CHECKPOINT)
        build_atlas(lm, source, cfg, out, resume=True, progress=False, echo=lambda m: None)
    for name, arr in _ref_arrays(Atlas(out)).items():
        np.testing.assert_array_equal(arr, want[name], err_msg=name)


def test_merge_refuses_partials_with_and_without_the_context_pass(tmp_path):
    from maxact.errors import MaxactError

    common = dict(n_tokens=300, seq=32, sites=("resid_post",), layers=(1,))
    build_tiny_atlas(tmp_path / "s0", shard=(0, 2), context_pass=True, **common)
    build_tiny_atlas(tmp_path / "s1", shard=(1, 2), context_pass=False, **common)
    with pytest.raises(MaxactError, match="context-pass"):
        merge_tiny_partials([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m", n_tokens=300)


@pytest.mark.parametrize("skip_pos0", [False, True])
def test_sample_from_a_context_atlas_values_each_window_by_its_context(tmp_path, skip_pos0):
    from maxact.analysis.pages import simulate_unit

    _, tokens, atlas, cfg = build_tiny_atlas(tmp_path / "a", n_tokens=400, seq=32, sites=("resid_post",),
                                             layers=(1,), context_pass=True)
    space = atlas.start_space(cfg.seq)
    for row in (0, 5):
        part = (F.TOP_POSITIONS, F.TOP_VALUES, F.TOP_SHIFT_VALUES) if skip_pos0 else (
            F.REF_POSITIONS, None, F.REF_SHIFT_VALUES)
        positions = np.asarray(atlas[part[0]][row])[None]
        if skip_pos0:
            first = np.asarray(atlas[part[1]][row])[None]
        else:  # the merged list's values, from the two lists it merges
            both = dict(zip(np.concatenate([atlas[F.TOP_POSITIONS][row], atlas[F.TOP0_POSITIONS][row]]).tolist(),
                            np.concatenate([atlas[F.TOP_VALUES][row], atlas[F.TOP0_VALUES][row]]).tolist()))
            first = np.array([[both.get(int(p), np.nan) for p in positions[0]]])
        m = measured_contexts(positions, first, np.asarray(atlas[part[2]][row])[None], atlas.doc_starts, 32)
        assert (m.shift_context >= 0).any()
        sim = simulate_unit(atlas, row, 4, 32, 30, 7, skip_pos0)
        for s_i, starts in enumerate(sim.starts):
            hits = [(value_at(int(p - s), m, 0, k, skip_pos0), -k)
                    for s in starts for k, p in enumerate(positions[0]) if p >= 0 and s <= p < s + space.length]
            hits = [h for h in hits if h[0] > -np.inf]
            if not hits:
                assert sim.token_ids[s_i] == -1
                continue
            v, neg_k = max(hits)
            assert sim.values[s_i] == np.float32(v)
            assert sim.token_ids[s_i] == tokens[positions[0, -neg_k]]
