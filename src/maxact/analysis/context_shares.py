"""The reference statistic with two contexts per candidate (`maxact atlas --context-pass`,
docs/METHOD.md, "Context").

The atlas pass measures each top-K candidate p once, with the context c1 its place in the window
partition gives it (c1 = p - window start). The context pass measures it again in a partition
shifted by half a window, with context c2 (none for the first half window of a document). A
reference window drawn at start s gives p the context c = p - s; the candidate is valued there at
the largest measured context <= c, else at the smaller one.

A value measured at context 0 (the first token of a window, where attention sinks write values no
other context gives) is not a context effect: a candidate first measured at context 0 keeps that one
value, as in the one-context statistic (it stands for whatever token a window starts with), and a
second measurement at context 0 is not used. So each candidate's covering starts split into at most
two intervals of constant value (segments): c < t and c >= t, with t = max(c1, c2). A batch is
won by the best segment that one of its windows covers. Ranked by value, the first j segments cover
C_j starts (the size of the union of their start intervals: segments of different candidates may
nest, so it is counted over the elementary pieces their endpoints cut), and as for one context

    P(segment of rank j wins) = (1 - C_{j-1}/n_starts) ** batch - (1 - C_j/n_starts) ** batch.

This is exact for the piecewise-constant values; the approximation is in the values themselves (two
measured contexts stand for every other one) and in the top-K list, chosen by the first context.
numpy only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from maxact.windows import StartSpace

UNIT_CHUNK = 2048  # units whose elementary pieces are held at once


class MeasuredContexts(NamedTuple):
    """Per candidate (U, K): the two contexts where it was measured and the values there."""

    first_context: np.ndarray  # (U, K) int64 tokens before it in its atlas-pass window
    first_value: np.ndarray  # (U, K) float64
    shift_context: np.ndarray  # (U, K) int64 tokens before it in its shifted window; -1: not measured
    shift_value: np.ndarray  # (U, K) float64, NaN: not measured


class Segments(NamedTuple):
    """Each unit's candidate segments, best first (value desc, then candidate rank, then the
    segment of smaller context). Start numbers [lo, hi]; lo > hi: empty (value -inf)."""

    lo: np.ndarray  # (U, S) int64, S = 2 K
    hi: np.ndarray  # (U, S) int64
    value: np.ndarray  # (U, S) float64
    candidate: np.ndarray  # (U, S) int64 rank of the candidate in the unit's top-K list


def measured_contexts(positions: np.ndarray, first_values: np.ndarray, shift_values: np.ndarray,
                      doc_starts: np.ndarray, window_length: int) -> MeasuredContexts:
    """positions (U, K) int64 (-1 empty); first_values (U, K) from the atlas pass; shift_values (U, K)
    from the context pass (NaN: not measured). Offsets follow from the two partitions: windows of
    ``window_length`` corpus tokens from each document's start, and from start + window_length // 2."""
    p = np.maximum(positions, 0)
    doc = np.searchsorted(doc_starts, p, side="right") - 1
    rel = p - np.asarray(doc_starts, dtype=np.int64)[doc]  # tokens before p in its document
    half = window_length // 2
    first_context = rel % window_length
    shift_context = (rel - half) % window_length
    # a second context only away from window position 0 in both partitions (see the module doc)
    measured = (positions >= 0) & (rel >= half) & ~np.isnan(shift_values) & (first_context > 0) & (shift_context > 0)
    shift_context = np.where(measured, shift_context, -1)
    return MeasuredContexts(first_context.astype(np.int64), np.asarray(first_values, dtype=np.float64),
                            shift_context.astype(np.int64),
                            np.where(measured, np.asarray(shift_values, dtype=np.float64), np.nan))


def context_segments(positions: np.ndarray, contexts: MeasuredContexts, space: StartSpace,
                     skip_c0: bool = False) -> Segments:
    """positions (U, K) int64 (-1 empty). skip_c0: a candidate cannot win at context 0 (the window's
    first position, as `sample --skip-pos0`)."""
    U, K = positions.shape
    a, b = space.covering(positions)  # (U, K) covering start numbers
    c_at_a = np.where(positions >= 0, positions - space.starts_at(np.where(a <= b, a, 0)), 0)  # context at start a
    two = contexts.shift_context >= 0
    first_is_lo = contexts.first_context <= np.where(two, contexts.shift_context, contexts.first_context)
    v_lo = np.where(first_is_lo, contexts.first_value, contexts.shift_value)
    v_hi = np.where(first_is_lo, np.where(two, contexts.shift_value, contexts.first_value), contexts.first_value)
    t = np.where(two, np.maximum(contexts.first_context, contexts.shift_context), 0)  # B: c >= t; A: c < t
    c_min = 1 if skip_c0 else 0
    # start number i gives context c = c_at_a - (i - a)
    b_lo, b_hi = a, np.minimum(b, a + c_at_a - np.maximum(t, c_min))
    a_lo, a_hi = np.maximum(a, a + c_at_a - (t - 1)), np.minimum(b, a + c_at_a - c_min)
    lo = np.concatenate([b_lo, a_lo], axis=1)  # (U, 2K): segment B of each candidate, then A
    hi = np.concatenate([b_hi, a_hi], axis=1)
    value = np.concatenate([v_hi, v_lo], axis=1)
    candidate = np.concatenate([np.arange(K)] * 2)[None, :].repeat(U, 0)
    empty = (lo > hi) | np.concatenate([positions < 0] * 2, axis=1) | np.isnan(value)
    value = np.where(empty, -np.inf, value)
    lo, hi = np.where(empty, 1, lo), np.where(empty, 0, hi)
    which = np.concatenate([np.zeros(K, dtype=np.int64), np.ones(K, dtype=np.int64)])[None, :].repeat(U, 0)
    rows = np.arange(U)[:, None].repeat(2 * K, 1)
    order = np.lexsort((-which.ravel(), candidate.ravel(), -value.ravel(), rows.ravel())).reshape(U, 2 * K)
    order -= (np.arange(U) * 2 * K)[:, None]
    take = lambda x: np.take_along_axis(x, order, 1)  # noqa: E731
    return Segments(take(lo), take(hi), take(value), take(candidate))


def _new_coverage(seg: Segments) -> np.ndarray:
    """(U, S) int64: starts covered by segment j and by no better segment."""
    U, S = seg.lo.shape
    big = np.iinfo(np.int64).max // 4
    nonempty = seg.lo <= seg.hi
    ends = np.sort(np.concatenate([np.where(nonempty, seg.lo, big), np.where(nonempty, seg.hi + 1, big)], 1), 1)
    left, length = ends[:, :-1], np.diff(ends, axis=1)  # elementary pieces [left, left + length)
    # a piece lies inside segment j when its left end does: compare relative to lo (one unsigned
    # comparison: 0 <= left - lo <= hi - lo), in 32 bits where the starts allow
    small = np.int32 if int(seg.hi.max(initial=0)) < np.iinfo(np.int32).max // 2 else np.int64
    unsigned = np.uint32 if small is np.int32 else np.uint64
    left_s = np.where(left < big, left, -1).astype(small)
    lo_s = np.where(nonempty, seg.lo, -3).astype(small)  # an empty segment covers no piece
    span = np.where(nonempty, seg.hi - seg.lo, 0).astype(small).astype(unsigned)
    owner = np.full(left.shape, S, dtype=np.int32)  # best segment covering each piece; S: none
    for j in range(S - 1, -1, -1):  # better segments overwrite worse ones
        np.putmask(owner, (left_s - lo_s[:, j : j + 1]).astype(unsigned) <= span[:, j : j + 1], j)
    flat = (np.arange(U)[:, None] * (S + 1) + owner).ravel()
    new = np.bincount(flat, weights=np.where(length > 0, length, 0).ravel().astype(np.float64),
                      minlength=U * (S + 1)).reshape(U, S + 1)
    return new[:, :S].astype(np.int64)


def context_win_probabilities(seg: Segments, n_candidates: int, n_starts: int,
                              batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) P(the batch is won by candidate k) and (U,) P(no candidate covered), for batches of
    ``batch`` starts uniform over ``n_starts``."""
    if n_starts < 1:
        raise ValueError(f"no reference window fits: {n_starts} starts")
    U, S = seg.lo.shape
    probs = np.zeros((U, n_candidates))
    miss = np.ones(U)
    for lo in range(0, U, UNIT_CHUNK):
        part = Segments(*(x[lo : lo + UNIT_CHUNK] for x in seg))
        C = np.cumsum(_new_coverage(part), axis=1).astype(np.float64)
        survive = (1.0 - C / n_starts) ** batch  # P(no segment of rank <= j covered)
        before = np.concatenate([np.ones((len(C), 1)), survive[:, :-1]], axis=1)
        per_seg = before - survive  # (u, S)
        n = len(C)
        flat = (np.arange(n)[:, None] * n_candidates + part.candidate).ravel()
        probs[lo : lo + n] = np.bincount(flat, weights=per_seg.ravel(), minlength=n * n_candidates).reshape(n, -1)
        miss[lo : lo + n] = survive[:, -1]
    return probs, miss


def context_simulate(seg: Segments, index: np.ndarray, n_starts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One unit (Segments of one row): index (samples, batch) start numbers drawn from [0, n_starts)
    -> (samples,) winning candidate rank (-1: missed), (samples,) row of the first window holding
    the winning segment, (samples,) float64 winning value (NaN: missed)."""
    lo, hi, value, cand = (x[0] for x in seg)
    S = len(lo)
    best_at = np.full(n_starts, S, dtype=np.int64)  # (n_starts,) best segment a window covers
    for j in range(S - 1, -1, -1):
        if lo[j] <= hi[j]:
            best_at[lo[j] : hi[j] + 1] = j
    per_window = best_at[index]  # (samples, batch)
    best = per_window.min(1)
    row = per_window.argmin(1)
    hit = best < S
    safe = np.minimum(best, S - 1)
    return np.where(hit, cand[safe], -1), row, np.where(hit, value[safe], np.nan)
