"""Checks that kill the mutants `make mutation` left alive in analysis/context_shares.py,
engine/context_pass.py and engine/concept.py (issue 13, docs/MUTATION.md; the equivalent ones are
listed in /work/notes/mut_M3.md).

The two-context statistic is checked against the rule of the module doc read literally, start by
start (``value_at``), on hand-placed candidates: a candidate at corpus position 0 and at a document's
start, contexts of exactly 1, an odd window length, a NaN value, segments at start numbers past
2**32, a space of one start. The shifted partition and its batches are checked against a plain loop,
the shifted values against a plain forward of the tiny model, and the concept accumulator against
numpy on hand-made observations (tokens outside every observation, spans, a batch of one
observation). Every function under test is called inside its test (docs/MUTATION.md, "Module-scoped
fixtures").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from atlas_helpers import single_thread, synthetic_source, tiny_tokens
from context_helpers import value_at
from tiny_models import tiny_loaded

from maxact.analysis import context_shares as CS
from maxact.analysis.context_shares import (
    Segments,
    context_segments,
    context_simulate,
    context_win_probabilities,
    measured_contexts,
)
from maxact.capture import capture
from maxact.config import AtlasConfig
from maxact.engine.concept import BatchObservations, ConceptAccumulator, ObservationMap
from maxact.engine.context_pass import (
    ShiftedWindows,
    gather_shifted,
    shift_batches,
    shifted_windows,
)
from maxact.engine.groups import GroupMoments
from maxact.engine.runner import STATE_VERSION, AtlasRun
from maxact.errors import MaxactError
from maxact.windows import StartSpace, Windowing


# ---- measured contexts -----------------------------------------------------------------------------
def expected_contexts(p: int, doc_starts: list[int], length: int, shift_value: float) -> tuple[int, int]:
    """The module doc by hand: (first context, shift context or -1) of a candidate at position p."""
    d = max(i for i, s in enumerate(doc_starts) if s <= p)
    rel = p - doc_starts[d]
    half = length // 2
    first = rel % length
    if rel < half or np.isnan(shift_value):
        return first, -1
    shift = (rel - half) % length
    return first, (shift if first > 0 and shift > 0 else -1)


def test_measured_contexts_of_hand_placed_candidates_in_three_documents():
    doc_starts, length = [0, 10, 40], 9  # an odd window: half = 4
    # position 0; a document's start; rel 5 (shift context 1); rel 10 (first context 1); rel 4 = half
    # (shift context 0); rel 3 (first half window); rel 7 in the third document; a NaN shift value; empty
    positions = np.array([[0, 10, 15, 50, 14, 13, 47, 20, -1]], dtype=np.int64)
    first_values = np.arange(9, dtype=np.float32)[None] + 0.5
    shift_values = np.array([[1, 2, 3, 4, 5, 6, 7, np.nan, 9]], dtype=np.float32) + np.float32(0.25)
    m = measured_contexts(positions, first_values, shift_values, np.array(doc_starts, dtype=np.int64), length)
    want = [expected_contexts(int(p), doc_starts, length, float(v)) for p, v in zip(positions[0, :8], shift_values[0])]
    assert m.first_context[0, :8].tolist() == [w[0] for w in want]
    assert m.shift_context[0].tolist() == [w[1] for w in want] + [-1]
    assert m.first_context[0, :8].tolist() == [0, 0, 5, 1, 4, 3, 7, 1]  # the hand count, as a check
    assert m.shift_context[0].tolist() == [-1, -1, 1, 6, -1, -1, 3, -1, -1]
    want_shift = np.where(m.shift_context >= 0, shift_values.astype(np.float64), np.nan)
    np.testing.assert_array_equal(m.shift_value, want_shift)
    np.testing.assert_array_equal(m.first_value, first_values.astype(np.float64))
    assert m.first_context.dtype == m.shift_context.dtype == np.int64
    assert m.first_value.dtype == m.shift_value.dtype == np.float64  # float32 inputs are widened


# ---- segments -------------------------------------------------------------------------------------
def per_start_values(positions, m, space: StartSpace, skip_c0: bool) -> list[dict]:
    """Per unit: {(candidate, start number): value} over every start covering the candidate (NaN
    values and context 0 under skip_c0 cover nothing)."""
    starts = space.starts_at(np.arange(space.n_starts))
    out = []
    for u in range(positions.shape[0]):
        got = {}
        for k, p in enumerate(positions[u]):
            for i, s in enumerate(starts):
                if p >= 0 and s <= p < s + space.length:
                    v = value_at(int(p - s), m, u, k, skip_c0)
                    if v > -np.inf:  # NaN is not > -inf either
                        got[(k, i)] = v
        out.append(got)
    return out


def segments_as_starts(seg: Segments) -> list[dict]:
    out = []
    for u in range(seg.lo.shape[0]):
        got = {}
        for lo, hi, v, k in zip(seg.lo[u], seg.hi[u], seg.value[u], seg.candidate[u]):
            for i in range(lo, hi + 1):
                assert (int(k), i) not in got  # a start lies in one segment of a candidate
                got[(int(k), i)] = float(v)
        out.append(got)
    return out


def check_order(seg: Segments) -> None:
    """Best first: value desc, then candidate rank, then the segment of smaller context (larger start
    numbers); empty segments (lo > hi) are exactly those valued -inf."""
    for u in range(seg.lo.shape[0]):
        lo, hi, v, k = seg.lo[u], seg.hi[u], seg.value[u], seg.candidate[u]
        assert ((lo > hi) == (v == -np.inf)).all(), (lo, hi, v)
        assert not np.isnan(v).any()
        for j in range(len(v) - 1):
            if lo[j + 1] > hi[j + 1]:
                continue
            tie_broken = k[j] < k[j + 1] or (k[j] == k[j + 1] and lo[j] > hi[j + 1])
            assert v[j] > v[j + 1] or (v[j] == v[j + 1] and tie_broken), (u, j)


def hand_case():
    """Two units in three documents (the one at 23 too short for a reference window of 6 tokens),
    atlas windows of 8: candidates at position 0, a NaN first value, an empty slot, one whose two
    contexts give the same value (unit 1, so its ties are ordered in the second row too)."""
    doc_starts = np.array([0, 23, 27], dtype=np.int64)
    space = StartSpace.of(doc_starts, 60, 6)
    positions = np.array([[0, 5, 13, 36, -1], [2, 13, 18, 44, 50]], dtype=np.int64)
    first = np.array([[1.0, np.nan, 3.0, 0.5, 9.0], [2.0, 1.5, 1.5, 0.5, 3.0]])
    shift = np.array([[np.nan, 2.0, 4.0, 0.25, 9.0], [np.nan, 1.5, 0.5, 1.0, 3.0]])
    return positions, measured_contexts(positions, first, shift, doc_starts, 8), space


@pytest.mark.parametrize("skip_c0", [False, True])
def test_segments_cover_each_start_with_its_documented_value_best_first(skip_c0):
    positions, m, space = hand_case()
    assert (m.shift_context[1, 1:3] >= 0).all() and m.shift_value[1, 1] == m.first_value[1, 1]  # a tie
    seg = context_segments(positions, m, space, skip_c0)
    assert segments_as_starts(seg) == per_start_values(positions, m, space, skip_c0)
    check_order(seg)


def test_a_candidate_with_one_context_is_one_segment_in_simulation():
    # one document of 20 tokens, reference windows of 6: starts 0..13; the candidate at 8, measured
    # once; a batch whose first window has it at context 3 and whose second window at context 0
    doc_starts = np.zeros(1, dtype=np.int64)
    space = StartSpace.of(doc_starts, 20, 6)
    positions = np.array([[8]], dtype=np.int64)
    m = measured_contexts(positions, np.array([[2.0]]), np.array([[np.nan]]), doc_starts, 16)
    seg = context_segments(positions, m, space)
    cand, row, value = context_simulate(seg, np.array([[5, 8], [8, 5]]), space.n_starts)
    assert cand.tolist() == [0, 0] and value.tolist() == [2.0, 2.0]
    assert row.tolist() == [0, 0]  # the first window holding the winner, whatever its context


# ---- win probabilities ----------------------------------------------------------------------------
def test_win_probabilities_of_hand_made_segments():
    # two segments that tile [0, 9] between them: the worse one (last) still wins when the better is
    # not drawn, and no start is left over
    seg = Segments(np.array([[0, 6]]), np.array([[5, 9]]), np.array([[2.0, 1.0]]), np.array([[0, 1]]))
    probs, miss = context_win_probabilities(seg, 2, 10, 2)
    np.testing.assert_allclose(probs, [[1 - 0.4**2, 0.4**2]], rtol=1e-15)
    assert miss.tolist() == [0.0]


def test_win_probabilities_past_two_to_the_32_starts():
    # segment 0 starts past 2**32; the piece after segment 1 lies exactly 6 past it modulo 2**32
    big = 2**32
    seg = Segments(np.array([[big + 10, 5]]), np.array([[big + 20, 15]]), np.array([[2.0, 1.0]]),
                   np.array([[1, 0]]))
    n, batch = 2**33, 3
    probs, miss = context_win_probabilities(seg, 2, n, batch)
    p1 = 1 - (1 - 11 / n) ** batch
    p0 = (1 - 11 / n) ** batch - (1 - 22 / n) ** batch
    np.testing.assert_allclose(probs, [[p0, p1]], rtol=1e-6)
    np.testing.assert_allclose(miss, [(1 - 22 / n) ** batch], rtol=1e-15)


def test_win_probabilities_in_a_space_of_one_start_and_of_none():
    # one document of 7 tokens, reference windows of 6: one start; the candidate at 6 is covered by none
    doc_starts = np.zeros(1, dtype=np.int64)
    space = StartSpace.of(doc_starts, 7, 6)
    assert space.n_starts == 1
    positions = np.array([[2, 6]], dtype=np.int64)
    m = measured_contexts(positions, np.array([[1.0, 5.0]]), np.full((1, 2), np.nan), doc_starts, 4)
    probs, miss = context_win_probabilities(context_segments(positions, m, space), 2, space.n_starts, 3)
    assert probs.tolist() == [[1.0, 0.0]] and miss.tolist() == [0.0]
    with pytest.raises(ValueError, match="no reference window fits: 0 starts"):
        context_win_probabilities(context_segments(positions, m, space), 2, 0, 3)


def test_win_probabilities_take_units_a_chunk_at_a_time(monkeypatch):
    positions, m, space = hand_case()
    seg = context_segments(positions, m, space)
    whole = context_win_probabilities(seg, 5, space.n_starts, 4)
    seg3 = Segments(*(np.concatenate([x, x[:1]]) for x in seg))  # three units
    sizes = []
    real = CS._new_coverage
    monkeypatch.setattr(CS, "UNIT_CHUNK", 2)
    monkeypatch.setattr(CS, "_new_coverage", lambda part: sizes.append(len(part.lo)) or real(part))
    probs, miss = context_win_probabilities(seg3, 5, space.n_starts, 4)
    assert sizes == [2, 1]
    np.testing.assert_array_equal(probs, np.concatenate([whole[0], whole[0][:1]]))
    np.testing.assert_array_equal(miss, np.concatenate([whole[1], whole[1][:1]]))


# ---- the shifted partition ------------------------------------------------------------------------
def plain_shifted(positions, doc_starts, n_tokens, length):
    """Per position: (start, length) of its shifted window, or None in a first half window."""
    out = []
    for p in positions:
        d = max(i for i, s in enumerate(doc_starts) if s <= p)
        end = doc_starts[d + 1] if d + 1 < len(doc_starts) else n_tokens
        rel = p - doc_starts[d] - length // 2
        if rel < 0:
            out.append(None)
            continue
        s = doc_starts[d] + length // 2 + rel // length * length
        out.append((s, min(s + length, end) - s))
    return out


@pytest.mark.parametrize("length", [1, 4])
def test_shifted_windows_against_a_plain_loop(length):
    doc_starts, n_tokens = [0, 10, 13], 30
    positions = np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 13, 14, 15, 20, 29], dtype=np.int64)
    w = shifted_windows(positions, np.array(doc_starts), n_tokens, length)
    want = plain_shifted(positions.tolist(), doc_starts, n_tokens, length)
    got = [None if i < 0 else (int(w.starts[i]), int(w.lengths[i])) for i in w.window_of]
    assert got == want
    assert w.window_of.tolist() == [-1 if x is None else sorted(set(filter(None, want))).index(x) for x in want]
    assert w.starts.tolist() == sorted({x[0] for x in want if x is not None})


def test_shift_batches_longest_first_and_capped_by_tokens():
    w = ShiftedWindows(np.arange(7) * 10, np.array([4, 4, 4, 2, 4, 3, 2]), np.zeros(0, dtype=np.int64))
    got = [b.tolist() for b in shift_batches(w, 4, 2)]
    assert got == [[0, 1], [2, 4], [5], [3, 6]]  # 2 windows of 4, 2 of 3 (8 // 3), 4 of 2
    assert [b.tolist() for b in shift_batches(w, 4, 1)] == [[0], [1], [2], [4], [5], [3, 6]]


class NoModel:
    """A model that must not be touched."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name})")


def test_gather_shifted_runs_nothing_without_candidates_or_with_windows_of_one_token():
    tokens = tiny_tokens(40, 0)
    doc_starts = np.zeros(1, dtype=np.int64)
    empty = np.full((3, 2), -1, dtype=np.int64)
    got = gather_shifted(NoModel(), tokens, doc_starts, Windowing(8, None, "short"), [], [3], empty, 2)
    assert got.shape == (3, 2) and got.dtype == np.float32 and np.isnan(got).all()
    some = np.array([[5, 20], [-1, 30], [7, -1]], dtype=np.int64)
    got = gather_shifted(NoModel(), tokens, doc_starts, Windowing(1, None, "short"), [], [3], some, 2)
    assert got.dtype == np.float32 and np.isnan(got).all()


@pytest.mark.parametrize("length,n_candidates", [(2, 1), (5, 3)])
def test_gather_shifted_with_windows_of_two_tokens_and_one_candidate(length, n_candidates):
    lm = tiny_loaded("llama")
    tokens = tiny_tokens(60, 2)
    doc_starts = np.array([0, 25], dtype=np.int64)
    refs = list(lm.adapter.site_refs(("resid_post",), (1,)))
    width = lm.adapter.width(refs[0])
    positions = np.full((width, 2), -1, dtype=np.int64)
    placed = [(3, 1, 30), (0, 0, 44), (5, 0, 9)][:n_candidates]  # (unit, slot, position)
    for u, k, p in placed:
        positions[u, k] = p
    with single_thread():
        got = gather_shifted(lm, tokens, doc_starts, Windowing(length, None, "short"), refs, [width], positions, 4)
    assert got.dtype == np.float32
    want = np.full((width, 2), np.nan, dtype=np.float32)
    for u, k, p in placed:
        (s, n), = plain_shifted([p], doc_starts.tolist(), len(tokens), length)
        acts = capture(lm.adapter, torch.from_numpy(tokens[s : s + n].astype(np.int64))[None], refs)[refs[0]]
        want[u, k] = float(acts[0, p - s, u])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.isnan(got).sum() == 2 * width - n_candidates


# ---- the concept accumulator ----------------------------------------------------------------------
def numpy_moments(values: np.ndarray, groups: np.ndarray, G: int):
    count = np.bincount(groups, minlength=G)
    mean = np.zeros((G, values.shape[1]))
    m2 = np.zeros((G, values.shape[1]))
    for g in range(G):
        x = values[groups == g].astype(np.float64)
        if len(x):
            mean[g] = x.mean(0)
            m2[g] = ((x - mean[g]) ** 2).sum(0)
    return count, mean, m2


def feed(acc: ConceptAccumulator, obs_map: ObservationMap, x: torch.Tensor, batches: list[np.ndarray]):
    """x (n_tokens, U): row p the activations at corpus position p; each batch (W, T) positions."""
    for positions in batches:
        acc.update(x[torch.from_numpy(positions.reshape(-1))], BatchObservations.of(obs_map, positions, "cpu"))


def test_single_tokens_with_unlabelled_tokens_between_them():
    # 10 tokens; 4 and 7 belong to no observation; observation i is token i (i < 4), i + 1 (4 <= i < 6)
    # or 9 (i = 7); group i % 3; observations 1, 5 and 7 kept for the probe
    token_obs = np.array([0, 1, 2, 3, -1, 4, 5, -1, 6, 7], dtype=np.int64)
    obs_map = ObservationMap(token_obs, np.arange(8) % 3, np.ones(8, dtype=np.int64),
                             np.isin(np.arange(8), [1, 5, 7]), 3)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    acc = ConceptAccumulator(4, 3, [1, 3], [slice(1, 3)])
    feed(acc, obs_map, x, [np.array([[9, 8, 7], [6, 5, 4]]), np.array([[3, 2, 1, 0]])])
    rows = np.flatnonzero(token_obs >= 0)
    count, mean, m2 = numpy_moments(x.numpy()[rows], obs_map.obs_group[token_obs[rows]], 3)
    assert acc.moments.count.tolist() == count.tolist()
    np.testing.assert_allclose(acc.moments.mean.numpy(), mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acc.moments.m2.numpy(), m2, rtol=1e-5, atol=1e-6)
    assert acc.histograms().sum(2).tolist() == [count.tolist()] * 2
    values, ids = acc.probe_matrix(0)
    assert ids.tolist() == [1, 5, 7] and values.dtype == np.float32
    np.testing.assert_array_equal(values, x.numpy()[[1, 6, 9], 1:3])


def test_span_means_every_token_in_an_observation_and_a_batch_of_one():
    # 6 tokens in 3 spans: [0, 1, 2] group 1, [3] group 0, [4, 5] group 1; the second batch holds
    # one observation only
    obs_map = ObservationMap(np.array([0, 0, 0, 1, 2, 2], dtype=np.int64), np.array([1, 0, 1]),
                             np.array([3, 1, 2], dtype=np.int64), np.array([True, True, False]), 2)
    assert not obs_map.single_tokens
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    acc = ConceptAccumulator(3, 2, [0], [slice(0, 3)])
    feed(acc, obs_map, x, [np.array([[0, 1, 2, 3]]), np.array([[4, 5]])])
    xs = x.numpy().astype(np.float64)
    spans = np.stack([xs[0:3].mean(0), xs[3], xs[4:6].mean(0)])
    count, mean, m2 = numpy_moments(spans, obs_map.obs_group, 2)
    assert acc.moments.count.tolist() == count.tolist() == [1, 2]
    np.testing.assert_allclose(acc.moments.mean.numpy(), mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acc.moments.m2.numpy(), m2, rtol=1e-5, atol=1e-6)
    values, ids = acc.probe_matrix(0)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(values, spans[:2], rtol=1e-6)


def test_span_means_are_float32_whatever_the_default_dtype():
    obs_map = ObservationMap(np.array([0, 0, 1], dtype=np.int64), np.array([0, 1]), np.array([2, 1]),
                             np.zeros(2, dtype=bool), 2)
    obs = BatchObservations.of(obs_map, np.array([[0, 1, 2]]), "cpu")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = obs.values(torch.tensor([[1.0], [2.0], [5.0]], dtype=torch.float32))
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and got[:, 0].tolist() == [1.5, 5.0]


def test_single_token_observations_are_the_rows_in_their_order():
    # one group; the batch runs backwards, so its rows hold observations 2, 1, 0: -2**24, 2**24, 1.
    # Summed in row order the float32 sum is exact; in observation order 2**24 + 1 rounds away
    obs_map = ObservationMap(np.arange(3, dtype=np.int64), np.zeros(3, dtype=np.int64),
                             np.ones(3, dtype=np.int64), np.zeros(3, dtype=bool), 1)
    x = torch.tensor([[1.0], [2.0**24], [-(2.0**24)]], dtype=torch.float32)
    acc = ConceptAccumulator(1, 1, [], [])
    positions = np.array([[2, 1, 0]])
    feed(acc, obs_map, x, [positions])
    ref = GroupMoments(1, 1)
    ref.add(x[torch.from_numpy(positions.reshape(-1))], torch.zeros(3, dtype=torch.int64))
    np.testing.assert_array_equal(acc.moments.mean.numpy(), ref.mean.numpy())
    np.testing.assert_array_equal(acc.moments.m2.numpy(), ref.m2.numpy())
    assert acc.moments.mean.item() == pytest.approx(1 / 3, rel=1e-6)


# ---- the runner's checkpoint refusals (engine/runner.py) -------------------------------------------
def test_a_checkpoint_of_another_version_shard_or_corpus_is_refused_by_name():
    lm = tiny_loaded("llama")
    source = synthetic_source(tiny_tokens(200, 0))
    cfg = AtlasConfig(seq=32, sites=("resid_post",), layers=(1,), k=4, k_ctx=2, max_types=16, windows_per_batch=2)
    with single_thread():
        run = AtlasRun(lm, source, cfg)
        run.run(progress=False, stop_after_batches=1)
        state = run.state()
        again = AtlasRun(lm, source, cfg)
        with pytest.raises(MaxactError, match=f"ckpt was written by .*state version 999, this one writes {STATE_VERSION}"):
            again.load_state({**state, "schema": 999}, "ckpt")
        with pytest.raises(MaxactError, match=r"ckpt was made with a different configuration \(k: 5 there, 4 now; "
                                              r"shard: \(1, 2\) there, None now\); rerun without --resume"):
            again.load_state({**state, "config": {**state["config"], "k": 5}, "shard": (1, 2)}, "ckpt")
        with pytest.raises(MaxactError, match=r"\(the corpus tokens differ \(123 tokens there, 200 now, or their "
                                              r"document starts\)\)"):
            again.load_state({**state, "tokens_sha256": "0" * 64, "n_tokens": 123}, "ckpt")
        again.load_state(state, "ckpt")
    assert again.cursor == run.cursor == 1
