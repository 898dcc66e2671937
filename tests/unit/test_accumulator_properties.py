"""Property-based tests (hypothesis) of the streaming accumulators and their merges (issue 13):
any input, cut into any batches and spread over any shards, merges to the one-run result, and
that result is the brute force. Also the histogram's bins, from the value's magnitude alone
(docs/STORE.md), for exact zeros of both signs, denormals, the bin edges and infinities.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from derived_helpers import N_BINS, expected_bin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from maxact.engine.moments import StreamingMoments
from maxact.engine.topk import StreamingTopK

BEFORE, WIDTH = 24, 32  # docs/STORE.md: 24 tokens before each example, the example and 7 after
HIST_STRIDE = 8  # docs/STORE.md: the histogram counts every 8th corpus position


def fast(examples: int):
    """Reproducible (derandomized, no example database) and bounded: the file runs in seconds."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def feed(acc, *tensors) -> None:
    """Give raw tensors to an accumulator: ``add`` where the batch-object ``update`` exists."""
    (acc.add if hasattr(acc, "add") else acc.update)(*tensors)


# a few values that repeat (ties, both zeros) beside arbitrary float32 ones
TIES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-3, 7.0])
VALUES = st.one_of(TIES, st.floats(-1e4, 1e4, width=32, allow_subnormal=False))


# =================================================================================================
# top-K: any windows, any batches, any shards
# =================================================================================================
@st.composite
def topk_inputs(draw):
    W = draw(st.integers(1, 7))  # windows
    T = draw(st.integers(1, 9))  # tokens per window
    U = draw(st.integers(1, 3))  # units
    acts = draw(arrays(np.float32, (W, T, U), elements=VALUES))
    k = draw(st.integers(1, 6))
    k_ctx = draw(st.integers(0, k))
    shard_of = draw(st.lists(st.integers(0, 2), min_size=W, max_size=W))  # shard of each window
    batch = draw(st.integers(1, W))  # windows per update
    order = draw(st.permutations(range(W)))  # the order windows reach the one-run accumulator
    return acts, k, k_ctx, shard_of, batch, order, draw(st.booleans())


def run_topk(acts, windows, k, k_ctx, largest, batch):
    """One accumulator over ``windows`` of ``acts`` (W, T, U), ``batch`` windows per update;
    window w covers corpus positions w*T .. w*T + T - 1."""
    W, T, U = acts.shape
    acc = StreamingTopK(U, k, k_ctx, largest)
    for i in range(0, len(windows), batch):
        ws = list(windows[i : i + batch])
        x = torch.from_numpy(np.ascontiguousarray(acts[ws]))  # (w, T, U)
        pos = torch.tensor(ws, dtype=torch.int64)[:, None] * T + torch.arange(T)  # (w, T)
        feed(acc, x.clone(), pos)
    return acc


def brute_topk(acts, k, k_ctx, largest):
    """(U, k) values, positions, (U, k_ctx, 32) contexts by (value, earlier position); the two
    zeros tie; empty slots NaN / -1."""
    W, T, U = acts.shape
    flat = acts.reshape(W * T, U).astype(np.float64) + 0.0  # -0.0 + 0.0 == +0.0
    pos = np.arange(W * T)
    vals, poss = np.full((U, k), np.nan, np.float32), np.full((U, k), -1, np.int64)
    ctx = np.full((U, k_ctx, WIDTH), np.nan, np.float16)
    for u in range(U):
        order = np.lexsort((pos, -flat[:, u] if largest else flat[:, u]))[:k]
        vals[u, : len(order)], poss[u, : len(order)] = flat[order, u], pos[order]
        for r, p in enumerate(pos[order][:k_ctx]):
            w, t = divmod(int(p), T)
            for j in range(WIDTH):
                if 0 <= t - BEFORE + j < T:
                    ctx[u, r, j] = acts[w, t - BEFORE + j, u]
    return vals, poss, ctx


@fast(150)
@given(topk_inputs())
def test_topk_any_shards_merge_to_one_run_and_brute_force(inputs):
    acts, k, k_ctx, shard_of, batch, order, largest = inputs
    one = run_topk(acts, order, k, k_ctx, largest, batch)
    shards = [run_topk(acts, [w for w in range(len(shard_of)) if shard_of[w] == s], k, k_ctx, largest, batch)
              for s in (2, 0, 1)]
    merged = shards[0]
    for other in shards[1:]:
        merged.merge(other)
    v, p, c = brute_topk(acts, k, k_ctx, largest)
    for acc in (one, merged):
        got_v, got_p = acc.values_positions()
        np.testing.assert_array_equal(got_p.numpy(), p)
        np.testing.assert_array_equal(got_v.numpy(), v)
        assert tuple(acc.context.shape) == (acts.shape[2], k_ctx, WIDTH)
        np.testing.assert_array_equal(acc.context.numpy(), c)  # NaN == NaN here
    assert torch.equal(one.keys, merged.keys)


# =================================================================================================
# moments and histogram: any rows, any batches, any shards
# =================================================================================================
@st.composite
def moment_inputs(draw):
    N = draw(st.integers(1, 40))
    U = draw(st.integers(1, 3))
    x = draw(arrays(np.float32, (N, U), elements=VALUES))
    first = draw(st.integers(0, 20))  # corpus position of the first row
    cuts = sorted(draw(st.lists(st.integers(1, max(N - 1, 1)), max_size=5, unique=True)))
    shard_of = draw(st.lists(st.integers(0, 2), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    return x, first, cuts, shard_of


def run_moments(pieces):
    acc = StreamingMoments(pieces[0][0].shape[1]) if pieces else None
    for x, pos in pieces:
        feed(acc, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(pos))
    return acc


@fast(200)
@given(moment_inputs())
def test_moments_any_shards_merge_to_one_run(inputs):
    x, first, cuts, shard_of = inputs
    N, U = x.shape
    pos = np.arange(first, first + N, dtype=np.int64)
    bounds = [0, *[c for c in cuts if c < N], N]
    pieces = [(x[a:b], pos[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    one = run_moments(pieces)
    single = run_moments([(x, pos)])  # the same data in one batch
    parts = [run_moments([pc for pc, s in zip(pieces, shard_of) if s == i]) for i in range(3)]
    parts = [p for p in parts if p is not None and p.count]
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)

    x64 = x.astype(np.float64)
    sub = x[pos % HIST_STRIDE == 0]
    hist = np.zeros((U, N_BINS), dtype=np.int64)
    for row in sub:
        for u, v in enumerate(row.tolist()):
            hist[u, expected_bin(v)] += 1
    scale = float(np.abs(x64).max()) + 1.0
    for acc in (one, single, merged):
        s = acc.summary()
        assert acc.count == N and (s["count"] == N).all()
        np.testing.assert_array_equal(acc.hist.numpy(), hist)  # exact, whatever the cut
        np.testing.assert_array_equal(s["frac_pos"], (x64 > 0).mean(0))
        np.testing.assert_allclose(s["mean"], x64.mean(0), rtol=0, atol=2e-6 * scale)
        np.testing.assert_allclose(s["std"], x64.std(0), rtol=0, atol=2e-3 * scale)
        if N > 1:  # skew and kurtosis: every token
            var = x64.var(0)
            d = x64 - x64.mean(0)
            ok = var > 1e-4 * scale**2  # well conditioned: skew and kurtosis are defined
            skew = np.where(ok, (d**3).mean(0) / np.where(ok, var, 1) ** 1.5, 0)
            kurt = np.where(ok, (d**4).mean(0) / np.where(ok, var, 1) ** 2 - 3, 0)
            np.testing.assert_allclose(s["skew"][ok], skew[ok], rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(s["kurtosis"][ok], kurt[ok], rtol=1e-3, atol=1e-3)
    # the same batches in one run or in shards: the float64 folds agree to rounding
    a, b = one.summary(), merged.summary()
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(b["std"], a["std"], rtol=1e-7, atol=1e-9 * scale)
    for name in ("skew", "kurtosis"):
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-6)


# =================================================================================================
# histogram bins of special values
# =================================================================================================
EDGES = [0.0, 2.0**-10, 1.5 * 2.0**-10, 2.0**-10 * (1 - 2.0**-24), 1.0, 1.5, 1.5 * (1 - 2.0**-24), 2.0,
         3.0, 1000.0, 2.0**12 * (1 - 2.0**-24), 2.0**12, 3.0e38, math.inf, 2.0**-126, 2.0**-127,
         1.1754942e-38]  # the last three: the smallest normal, and denormals at or above 2**-127


def hist_of(values: list[float]) -> np.ndarray:
    acc = StreamingMoments(1)
    x = torch.tensor(values, dtype=torch.float32)[:, None]  # (N, 1)
    feed(acc, x, torch.arange(len(values), dtype=torch.int64) * HIST_STRIDE)  # every row counted
    return acc.hist.numpy()[0]


def test_histogram_bins_from_magnitude():
    values = EDGES + [-v for v in EDGES]  # -0.0 among them
    assert math.copysign(1.0, values[len(EDGES)]) < 0
    got = hist_of(values)
    want = np.bincount([expected_bin(float(np.float32(v))) for v in values], minlength=N_BINS)
    np.testing.assert_array_equal(got, want)
    assert got[N_BINS // 2 - 1] == 1 and got[N_BINS // 2] == 1  # one -0.0, one +0.0: their own bins
    assert got[0] == 3 and got[-1] == 3  # overflow bins: 4096, 3e38 and inf of each sign
    for v in (0.0, -0.0, 2.0**-127, 1.0, 1.5, -1.5, 4096.0, math.inf, -math.inf):
        assert hist_of([v]).tolist() == np.eye(N_BINS, dtype=int)[expected_bin(v)].tolist(), v


def test_tiny_denormals_are_not_exact_zeros():
    for v in (2.0**-149, 1e-40, -1e-40):
        assert hist_of([v]).argmax() == expected_bin(v), v


@fast(100)
@given(arrays(np.float32, st.integers(1, 30),
              elements=st.floats(width=32, allow_nan=False, allow_subnormal=True)))
def test_histogram_bins_of_any_values(values):
    got = hist_of(values.tolist())
    want = np.bincount([expected_bin(v) for v in values.tolist()], minlength=N_BINS)
    np.testing.assert_array_equal(got, want)
