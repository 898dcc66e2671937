"""The reference statistic from a unit's top-K (docs/METHOD.md): exact given each position's one
measured activation (the atlas pass's, in its own window); activations depend on context, which this
ignores (analysis/context_shares.py values each candidate at two measured contexts instead).

A batch of ``batch`` windows, starts uniform over the ``StartSpace`` of the geometry (in a single
text [0, n_tokens - seq); with documents, the starts whose window fits inside one document,
numbered in corpus order), is won by the highest-ranked top-K position that some window covers.
Position p is covered by an interval of start numbers (in a single text [max(0, p - seq + 1),
min(p, n_starts - 1)]), and these intervals move forward with p. If C_k starts cover at least one
of the first k positions, no window of a batch covers any of them with probability
(1 - C_k / n_starts) ** batch, so

    P(winner = rank k) = (1 - C_{k-1}/n_starts) ** batch - (1 - C_k/n_starts) ** batch

and the batch is "missed" (won by a position outside the top-K) with (1 - C_K/n_starts) ** batch.
``win_probabilities`` computes this for many units at once; ``simulate`` draws seeded batches for
one unit, with the same starts an exact run of the same seed and geometry would draw.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from maxact.windows import StartSpace


def merge_ranked(v1, p1, v2, p2, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two ranked lists (U, K1), (U, K2) by (value desc, position asc); NaN/-1 = empty.

    Values are compared as float32, positions as int64, the order of engine/keys.py."""
    v = np.concatenate([v1, v2], axis=1)
    p = np.concatenate([p1, p2], axis=1)
    empty = np.isnan(v)
    vk = np.where(empty, -np.inf, v).astype(np.float64)
    pk = np.where(empty, np.iinfo(np.int64).max, p)
    order = _lexsort_rows(-vk, pk)[:, :k]
    return np.take_along_axis(v, order, -1), np.take_along_axis(p, order, -1)


def merge_ranked_min(v1, p1, v2, p2, k: int) -> tuple[np.ndarray, np.ndarray]:
    """As merge_ranked, for bottom lists (value asc, position asc)."""
    v, p = merge_ranked(-v1, p1, -v2, p2, k)
    return -v, p


def _lexsort_rows(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Row-wise argsort by (primary asc, secondary asc) for 2-D arrays."""
    o2 = np.argsort(secondary, axis=1, kind="stable")
    p2 = np.take_along_axis(primary, o2, 1)
    o1 = np.argsort(p2, axis=1, kind="stable")
    return np.take_along_axis(o2, o1, 1)


def start_intervals(positions: np.ndarray, space: StartSpace) -> tuple[np.ndarray, np.ndarray]:
    """For each position (-1 = none), the numbers of the first and last start whose window covers it
    (a > b: none)."""
    return space.covering(positions)


def covered_counts(positions: np.ndarray, space: StartSpace) -> np.ndarray:
    """(U, K) int64: C_k, the number of starts covering at least one of the first k+1 positions."""
    a, b = start_intervals(positions, space)  # (U, K)
    U, K = positions.shape
    new = np.zeros((U, K), dtype=np.int64)
    for k in range(K):
        lo, hi = a[:, k].copy(), b[:, k].copy()
        if k:
            pk = positions[:, k : k + 1]
            prev_p, prev_a, prev_b = positions[:, :k], a[:, :k], b[:, :k]
            valid = prev_p >= 0
            left = valid & (prev_p < pk)  # earlier-ranked positions to the left cover a prefix
            right = valid & (prev_p > pk)  # ... to the right cover a suffix
            lo = np.maximum(lo, np.where(left, prev_b + 1, np.iinfo(np.int64).min).max(1))
            hi = np.minimum(hi, np.where(right, prev_a - 1, np.iinfo(np.int64).max).min(1))
        new[:, k] = np.maximum(hi - lo + 1, 0)
    return np.cumsum(new, axis=1)


def win_probabilities(positions: np.ndarray, space: StartSpace, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) P(winner = rank k) and (U,) P(no top-K position covered) for batches of ``batch``."""
    n_starts = space.n_starts
    if n_starts < 1:
        raise ValueError(f"corpus of {space.n_tokens} tokens is too short for windows of {space.length}")
    C = covered_counts(positions, space).astype(np.float64)
    survive = (1.0 - C / n_starts) ** batch  # P(none of the first k+1 covered)
    before = np.concatenate([np.ones((C.shape[0], 1)), survive[:, :-1]], axis=1)
    return before - survive, survive[:, -1]


def token_shares(probs: np.ndarray, token_ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per unit: (token ids, summed win probability), most probable first (ties: smaller id)."""
    out = []
    for pr, tk in zip(probs, token_ids):
        keep = pr > 0
        ids, inv = np.unique(tk[keep], return_inverse=True)
        sums = np.bincount(inv, weights=pr[keep], minlength=len(ids))
        order = np.lexsort((ids, -sums))
        out.append((ids[order], sums[order]))
    return out


@lru_cache(maxsize=8)
def seeded_draws(space: StartSpace, batch: int, samples: int, seed: int) -> np.ndarray:
    """(samples, batch) read-only start numbers, drawn as an exact run with this seed and geometry
    draws them. They depend on the geometry and the seed, not on the unit: drawn once, shared."""
    rng = np.random.default_rng(seed)
    index = np.stack([space.draw_index(rng, batch) for _ in range(samples)])
    index.flags.writeable = False
    return index


def simulate(
    positions: np.ndarray,  # (K,) ranked top positions of one unit (-1 = empty)
    space: StartSpace, batch: int, samples: int, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded batches: (samples, batch) starts, (samples,) winning rank (-1: missed), (samples,) row
    of the first window holding it. The best rank a window covers is tabulated once per start."""
    index = seeded_draws(space, batch, samples, seed)  # (S, B) start numbers
    K = len(positions)
    a, b = space.covering(positions)  # (K,) the start numbers whose window covers each position
    best_at = np.full(space.n_starts, K, dtype=np.int64)  # (n_starts,) best rank a window covers
    for k in range(K - 1, -1, -1):  # smaller ranks overwrite larger ones
        if positions[k] >= 0:
            best_at[a[k] : b[k] + 1] = k
    rank_per_window = best_at[index]  # (S, B)
    best = rank_per_window.min(1)
    row = rank_per_window.argmin(1)  # first window holding the best rank
    return space.starts_at(index), np.where(best < K, best, -1), row
