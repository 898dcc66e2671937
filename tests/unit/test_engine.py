"""Streaming accumulators against brute force on inputs small enough to compute both ways."""

import numpy as np
import pytest
import torch

from maxact.engine.keys import pack, unpack
from maxact.engine.moments import HIST_STRIDE, N_BINS, bin_bounds, bin_of
from maxact.engine.site import SiteAccumulator
from maxact.engine.topk import C_AFTER, C_BEFORE

W, T, U, K, KC, V = 3, 16, 5, 8, 4, 6


def make_batches(n_batches, seed, ties=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        acts = torch.randn(W, T, U, generator=g) * 3
        if ties:  # coarse values: many exact ties across positions
            acts = torch.round(acts)
        pos = (b * W + torch.arange(W))[:, None] * T + torch.arange(T)  # (W, T)
        rows = torch.randint(0, V + 1, (W * T,), generator=g)
        out.append((acts, pos, rows))
    return out


def run(batches):
    acc = SiteAccumulator(U, K, KC, V)
    for acts, pos, rows in batches:
        acc.update(acts.clone(), pos, rows)
    acc.flush()
    return acc


def brute_top(batches, largest, pos0):
    """(U, K) values and positions by (value desc/asc, position asc), from all tokens at once."""
    acts = torch.cat([a for a, _, _ in batches])  # (nW, T, U)
    pos = torch.cat([p for _, p, _ in batches])
    keep = (pos % T == 0) if pos0 else (pos % T != 0)
    vals_out, pos_out = [], []
    for u in range(U):
        v = acts[..., u][keep].numpy()
        p = pos[keep].numpy()
        order = np.lexsort((p, -v if largest else v))[:K]
        vals_out.append(np.pad(v[order], (0, K - len(order)), constant_values=np.nan))
        pos_out.append(np.pad(p[order], (0, K - len(order)), constant_values=-1))
    return np.array(vals_out), np.array(pos_out)


@pytest.mark.parametrize("ties", [True, False])
def test_topk_equals_brute_force(ties):
    batches = make_batches(5, seed=1, ties=ties)
    acc = run(batches)
    for part, largest, pos0 in [("top", True, False), ("bottom", False, False),
                                ("top0", True, True), ("bottom0", False, True)]:
        v, p = getattr(acc, part).values_positions()
        bv, bp = brute_top(batches, largest, pos0)
        np.testing.assert_array_equal(p.numpy(), bp, err_msg=part)
        np.testing.assert_array_equal(v.numpy(), bv.astype(np.float32), err_msg=part)


def test_contexts_are_the_activations_around_each_example():
    batches = make_batches(4, seed=2, ties=False)
    acc = run(batches)
    acts = torch.cat([a for a, _, _ in batches]).reshape(-1, U)  # (n, U) by corpus position
    for part in ("top", "bottom"):
        _, pos = getattr(acc, part).values_positions()
        ctx = getattr(acc, part).context
        for u in range(U):
            for r in range(KC):
                p = int(pos[u, r])
                w0 = p - p % T
                for j, off in enumerate(range(-C_BEFORE, C_AFTER)):
                    q = p + off
                    got = ctx[u, r, j].item()
                    if w0 <= q < w0 + T:
                        assert got == pytest.approx(acts[q, u].half().item()), (part, u, r, off)
                    else:
                        assert np.isnan(got)


def test_moments_hist_tuning_match_numpy():
    batches = make_batches(4, seed=3, ties=False)
    acc = run(batches)
    x = torch.cat([a.reshape(-1, U) for a, _, _ in batches]).double().numpy()  # (n, U)
    positions = torch.cat([p.reshape(-1) for _, p, _ in batches]).numpy()
    s = acc.moments.summary()
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-5)
    np.testing.assert_allclose(s["frac_pos"], (x > 0).mean(0))
    # skew, kurtosis, histogram: tokens at positions that are multiples of HIST_STRIDE
    xs = x[positions % HIST_STRIDE == 0]
    d = xs - xs.mean(0)
    np.testing.assert_allclose(s["skew"], (d**3).mean(0) / xs.std(0) ** 3, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s["kurtosis"], (d**4).mean(0) / xs.var(0) ** 2 - 3, rtol=1e-4)
    sub = xs.astype(np.float32)
    bounds = bin_bounds()
    expect = np.zeros((U, N_BINS), dtype=np.int64)
    for u in range(U):
        for val in sub[:, u]:
            if val == 0:
                b = N_BINS // 2 - (1 if np.signbit(val) else 0)
            else:
                b = next(i for i, (lo, hi) in enumerate(bounds)
                         if (lo <= val < hi if val > 0 else lo < val <= hi))
            expect[u, b] += 1
    np.testing.assert_array_equal(acc.moments.hist.numpy(), expect)
    rows = torch.cat([r for _, _, r in batches]).numpy()
    for v in range(V + 1):
        np.testing.assert_allclose(acc.tuning.sums[v].numpy(), x[rows == v].sum(0), rtol=1e-5, atol=1e-4)


def test_bins_follow_bounds():
    x = torch.tensor([0.5, -0.5, 1e-4, -1e-4, 3000.0, 9000.0, -9000.0, 2.0**-10, 1.0])
    b = bin_of(x).numpy()
    bounds = bin_bounds()
    for val, i in zip(x.numpy(), b):
        lo, hi = bounds[i]
        assert (lo <= val < hi) if val > 0 else (lo < val <= hi), (val, i, lo, hi)


def test_merge_equals_one_run():
    batches = make_batches(6, seed=4, ties=True)
    whole = run(batches)
    a, b = run(batches[:2]), run(batches[2:])
    a.merge(b)
    for part in ("top", "bottom", "top0", "bottom0"):
        assert torch.equal(getattr(a, part).keys, getattr(whole, part).keys), part
        ca, cw = getattr(a, part).context, getattr(whole, part).context
        assert torch.equal(torch.nan_to_num(ca, nan=-7), torch.nan_to_num(cw, nan=-7)), part
    assert torch.equal(a.moments.hist_t, whole.moments.hist_t)
    assert torch.equal(a.moments.n_pos, whole.moments.n_pos)
    for part in ("full", "sub"):
        for m in ("mean", "m2", "m3", "m4"):
            got, want = getattr(getattr(a.moments, part), m), getattr(getattr(whole.moments, part), m)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.tuning.sums, whole.tuning.sums, rtol=1e-5, atol=1e-5)


def test_keys_order_is_value_then_earlier_position():
    v = torch.tensor([1.0, 1.0, 2.0, -0.0, 0.0, -3.0])
    p = torch.tensor([5, 2, 9, 7, 1, 0])
    k = pack(v, p, largest=True)
    order = torch.argsort(k, descending=True)
    assert p[order].tolist() == [9, 2, 5, 1, 7, 0]  # -0.0 and 0.0 tie: earlier position first
    kb = pack(v, p, largest=False)
    assert p[torch.argsort(kb, descending=True)].tolist() == [0, 1, 7, 2, 5, 9]
    vals, pos = unpack(k, largest=True)
    assert torch.equal(vals, v) and torch.equal(pos, p)  # -0.0 == 0.0 for torch.equal
