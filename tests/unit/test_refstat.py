"""The reference statistic simulated from a unit's top-K (analysis/refstat.py), against exact
enumeration of every start tuple, Monte-Carlo batches, and brute force over starts.

Geometry: windows [s, s + seq) with starts s uniform on [0, n - seq), ``batch`` of them per batch;
the batch is won by the highest-ranked top-K position some window covers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from atlas_helpers import one_text, simulate_by_coverage

from maxact.analysis.refstat import (
    covered_counts,
    merge_ranked,
    merge_ranked_min,
    simulate,
    start_intervals,
    token_shares,
    win_probabilities,
)
from maxact.engine.keys import pack, unpack


def winner(positions, starts, seq):
    """Brute force for one batch: (best rank covered or -1, first window holding it)."""
    best, row = len(positions), 0
    for w, s in enumerate(starts):
        for k, p in enumerate(positions):
            if p >= 0 and s <= p < s + seq:
                if k < best:
                    best, row = k, w
                break  # ranks are scanned best first: the first covered is this window's best
    return (best if best < len(positions) else -1), row


def ranked_positions(rng, n, K, n_valid, must=()):
    """(K,) distinct positions in [0, n) in a random rank order, -1 padded after n_valid."""
    extra = rng.choice(np.setdiff1d(np.arange(n), must), n_valid - len(must), replace=False)
    pos = rng.permutation(np.concatenate([np.asarray(must, dtype=np.int64), extra]))
    return np.concatenate([pos, np.full(K - n_valid, -1)]).astype(np.int64)


def brute_covered(positions, n, seq):
    n_starts = n - seq
    out = np.zeros(positions.shape, dtype=np.int64)
    for u, row in enumerate(positions):
        for k in range(len(row)):
            prefix = [p for p in row[: k + 1] if p >= 0]
            out[u, k] = sum(any(s <= p < s + seq for p in prefix) for s in range(n_starts))
    return out


# ---- geometry: which starts cover which positions ---------------------------------------------
def test_start_intervals_and_end_effects():
    n, seq = 50, 10  # starts 0..39; the last window covers 39..48; token 49 is never covered
    pos = np.array([0, 5, 9, 10, 39, 40, 48, 49, -1])
    a, b = start_intervals(pos, one_text(n, seq))
    counts = np.maximum(b - a + 1, 0)
    assert counts.tolist() == [1, 6, 10, 10, 10, 9, 1, 0, 0]
    for p, c in zip(pos, counts):
        assert c == sum(s <= p < s + seq for s in range(n - seq)) if p >= 0 else c == 0
    # the last token never wins; the one before it only through the last start
    probs, miss = win_probabilities(np.array([[49, 48]]), one_text(n, seq), batch=3)
    assert probs[0, 0] == 0.0
    assert probs[0, 1] == pytest.approx(1 - (1 - 1 / 40) ** 3)
    assert miss[0] == pytest.approx((1 - 1 / 40) ** 3)
    with pytest.raises(ValueError, match="too short"):
        win_probabilities(np.array([[0]]), one_text(10, 10), 1)


@pytest.mark.parametrize("seed", range(4))
def test_covered_counts_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, seq, K = 60, 7, 6
    rows = [ranked_positions(rng, n, K, K, must=(n - 1,)),  # the uncoverable last token
            ranked_positions(rng, n, K, 4, must=(0, n - seq)),  # window edges, empty tail slots
            ranked_positions(rng, n, K, K, must=(20, 21, 22)),  # neighbours: overlapping intervals
            np.full(K, -1)]  # an empty list
    pos = np.stack(rows)
    np.testing.assert_array_equal(covered_counts(pos, one_text(n, seq)), brute_covered(pos, n, seq))


# ---- win probabilities ------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_win_probabilities_equal_exact_enumeration(batch):
    """n = 12, seq = 4: 8 starts, every one of the 8**batch start tuples enumerated."""
    n, seq, K = 12, 4, 5
    n_starts = n - seq
    pos = np.array([[3, 10, 0, 11, 6],  # 11: the last token, never covered
                    [7, 6, 5, -1, -1],
                    [9, 1, 4, 8, 2],
                    [-1, -1, -1, -1, -1]])
    expect = np.zeros((len(pos), K))
    miss = np.zeros(len(pos))
    tuples = list(itertools.product(range(n_starts), repeat=batch))
    for u, row in enumerate(pos):
        for starts in tuples:
            rank, _ = winner(row, starts, seq)
            if rank < 0:
                miss[u] += 1
            else:
                expect[u, rank] += 1
    probs, got_miss = win_probabilities(pos, one_text(n, seq), batch)
    np.testing.assert_allclose(probs, expect / len(tuples), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_miss, miss / len(tuples), rtol=0, atol=1e-12)
    np.testing.assert_allclose(probs.sum(1) + got_miss, 1.0)


def test_win_probabilities_agree_with_monte_carlo():
    n, seq, batch, samples, K = 200, 20, 3, 20000, 6
    rng = np.random.default_rng(5)
    pos = np.stack([ranked_positions(rng, n, K, K),
                    ranked_positions(rng, n, K, K, must=(n - 1, n - 2, 0)),
                    ranked_positions(rng, n, K, 3, must=(100, 101))])
    probs, miss = win_probabilities(pos, one_text(n, seq), batch)
    for u in range(len(pos)):
        _, rank, _ = simulate(pos[u], one_text(n, seq), batch, samples, seed=u)
        freq = np.bincount(rank + 1, minlength=K + 1) / samples  # index 0: missed
        p = np.concatenate([[miss[u]], probs[u]])
        sigma = np.sqrt(p * (1 - p) / samples)
        assert (np.abs(freq - p) <= 3 * sigma + 1e-12).all(), (u, freq, p)


# ---- simulated batches ------------------------------------------------------------------------
def test_simulate_draws_the_starts_of_exact_sampling_and_finds_each_winner():
    n, seq, batch, samples, seed = 90, 12, 4, 300, 3
    rng = np.random.default_rng(0)
    pos = ranked_positions(rng, n, 8, 7, must=(n - 1, 0))
    starts, rank, row = simulate(pos, one_text(n, seq), batch, samples, seed)
    exact_rng = np.random.default_rng(seed)  # the draws of maxact.sampling.sample_exact, batch by batch
    np.testing.assert_array_equal(starts, np.stack([one_text(n, seq).draw(exact_rng, batch) for _ in range(samples)]))
    for b in range(samples):
        assert (rank[b], row[b] if rank[b] >= 0 else 0) == winner(pos, starts[b], seq)
    assert (rank == -1).any() and (rank == 0).any()  # both outcomes occur in this geometry


@pytest.mark.parametrize("seed", range(3))
def test_simulate_equals_brute_force_coverage(seed):
    rng = np.random.default_rng(seed)
    n, seq, batch, samples = 150, 16, 5, 400
    for pos in (ranked_positions(rng, n, 8, 8), ranked_positions(rng, n, 8, 5, must=(n - 1, 0, n - seq)),
                np.full(8, -1)):
        a = simulate_by_coverage(pos, n, seq, batch, samples, seed)
        b = simulate(pos, one_text(n, seq), batch, samples, seed)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_token_shares_sum_by_token_most_probable_first():
    probs = np.array([[0.25, 0.375, 0.125, 0.25, 0.0]])
    toks = np.array([[5, 7, 5, 9, 3]])
    (ids, sums), = token_shares(probs, toks)
    assert ids.tolist() == [5, 7, 9]  # 5 and 7 tie at 0.375: the smaller id first; 3 never wins
    assert sums.tolist() == [0.375, 0.375, 0.25]


# ---- merging ranked lists -----------------------------------------------------------------------
def test_merge_ranked_breaks_ties_by_earlier_position():
    nan = np.nan
    v1, p1 = np.array([[3.0, 2.0, 2.0, nan]], np.float32), np.array([[10, 5, 9, -1]])
    v2, p2 = np.array([[2.0, 2.0, 1.0, nan]], np.float32), np.array([[7, 3, 100, -1]])
    v, p = merge_ranked(v1, p1, v2, p2, 8)
    assert p.tolist() == [[10, 3, 5, 7, 9, 100, -1, -1]]
    np.testing.assert_array_equal(v, [[3, 2, 2, 2, 2, 1, nan, nan]])
    v, p = merge_ranked(np.array([[0.0]]), np.array([[9]]), np.array([[-0.0]]), np.array([[4]]), 2)
    assert p.tolist() == [[4, 9]]  # -0.0 and 0.0 tie, as in engine/keys.py
    # bottom lists: lowest first, ties again by earlier position
    v, p = merge_ranked_min(np.array([[-1.0, 2.0]]), np.array([[8, 1]]), np.array([[-1.0, 5.0]]),
                            np.array([[2, 0]]), 3)
    assert p.tolist() == [[2, 8, 1]] and v.tolist() == [[-1.0, -1.0, 2.0]]


@pytest.mark.parametrize("largest", [True, False])
def test_merge_ranked_equals_the_key_order_of_the_engine(largest):
    """Two ranked halves merged equal one ranking of everything by engine/keys.py's packed keys."""
    rng = np.random.default_rng(1 + largest)
    U, n, K = 6, 40, 7
    vals = np.round(rng.normal(size=(U, n)) * 2).astype(np.float32)  # many exact ties
    pos = np.stack([rng.permutation(1000)[:n] for _ in range(U)])

    def ranked(v, p, k):
        keys = pack(torch.from_numpy(v), torch.from_numpy(p), largest)
        top, _ = keys.topk(k, dim=1)
        rv, rp = unpack(top, largest)
        return rv.numpy(), rp.numpy()

    h = n // 2
    a, b = ranked(vals[:, :h], pos[:, :h], K), ranked(vals[:, h:], pos[:, h:], K)
    merge = merge_ranked if largest else merge_ranked_min
    v, p = merge(*a, *b, K)
    ev, ep = ranked(vals, pos, K)
    np.testing.assert_array_equal(p, ep)
    np.testing.assert_array_equal(v, ev)
