"""Streaming accumulators against brute force on inputs small enough to compute both ways."""

import numpy as np
import pytest
import torch
from atlas_helpers import expected_bands, splitmix64

from maxact.engine.keys import pack, unpack
from maxact.engine.moments import HIST_STRIDE, N_BINS, bin_bounds, bin_of
from maxact.engine.site import SiteAccumulator
from maxact.engine.statistic import StatisticSettings
from maxact.engine.topk import C_AFTER, C_BEFORE

W, T, U, K, KC, V = 3, 16, 5, 8, 4, 6
SETTINGS = StatisticSettings(k=K, k_ctx=KC, n_types=V, seed=0)


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
    acc = SiteAccumulator(U, SETTINGS)
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
    # skew and kurtosis: every token; the histogram: tokens at positions that are multiples of HIST_STRIDE
    d = x - x.mean(0)
    np.testing.assert_allclose(s["skew"], (d**3).mean(0) / x.std(0) ** 3, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s["kurtosis"], (d**4).mean(0) / x.var(0) ** 2 - 3, rtol=1e-4)
    xs = x[positions % HIST_STRIDE == 0]
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
    for part in ("full",):  # every moment over every token (state version 3)
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


# =================================================================================================
# activation bands: a seeded 1-in-64 subsample, the PER_BAND smallest hashes per unit and band
# =================================================================================================
def spread_batches(n_batches, seed, w=8, t=64, u=4):
    """Activations spread over every band (both signs, 2**-9 .. 2**10, exact zeros), at corpus
    positions far apart so that hashes of large positions are exercised too."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        mag = torch.exp2(torch.rand(w, t, u, generator=g) * 19 - 9)
        sign = torch.where(torch.rand(w, t, u, generator=g) < 0.3, -1.0, 1.0)
        acts = (mag * sign).float()
        acts[torch.rand(w, t, u, generator=g) < 0.05] = 0.0
        pos = (10**9 + (b * w + torch.arange(w))[:, None] * t + torch.arange(t))  # (w, t)
        out.append((acts, pos, torch.zeros(w * t, dtype=torch.int64)))
    return out


def bands_of(batches, settings=SETTINGS):
    acc = SiteAccumulator(batches[0][0].shape[2], settings)
    for acts, pos, rows in batches:
        acc.update(acts.clone(), pos, rows)
    return acc


def test_position_hash_is_splitmix64():
    from maxact.engine.bands import position_hash

    p = np.array([0, 1, 2, 63, 10**9, 2**32 - 1, 123456789], dtype=np.int64)
    for seed in (0, 1, 2**40 + 7):
        got = position_hash(torch.from_numpy(p), seed).numpy().view(np.uint64)
        np.testing.assert_array_equal(got, splitmix64(p, seed))
    # splitmix64's published first output for seed 0 (Vigna's reference implementation)
    assert splitmix64(np.array([0]), 0)[0] == np.uint64(0xE220A8397B1DCDAF)


def test_band_of_follows_the_edges():
    from maxact.engine.bands import BAND_EDGES, N_BANDS, band_of

    assert len(BAND_EDGES) == N_BANDS + 1 and N_BANDS == 17
    x = np.array([-np.inf, -5.0, -0.0, 0.0, 1e-45, 2.0**-7, 2.0**-6, 0.5, 1.0, 1.5, 2.0**7, 2.0**8 - 1e-3,
                  2.0**8, 1e30, np.inf, np.nan], dtype=np.float32)
    b = band_of(torch.from_numpy(x)).numpy()
    for val, band in zip(x, b):
        if not val > 0:
            assert band == 0, val
        else:
            lo, hi = BAND_EDGES[band], BAND_EDGES[band + 1]
            assert lo <= val and (val < hi or hi == np.inf), (val, band)  # the last band holds +inf


@pytest.mark.parametrize("block_rows", [256, 3])
def test_bands_equal_brute_force(monkeypatch, block_rows):
    import maxact.engine.bands as bands

    monkeypatch.setattr(bands, "BLOCK_ROWS", block_rows)  # folds every few candidates, or in one go
    batches = spread_batches(40, seed=5)
    acc = bands_of(batches)
    acts = torch.cat([a.reshape(-1, a.shape[2]) for a, _, _ in batches]).numpy()
    positions = torch.cat([p.reshape(-1) for _, p, _ in batches]).numpy()
    want_p, want_v = expected_bands(acts, positions, SETTINGS.seed)
    got = acc.bands.arrays()
    assert (want_p >= 0).sum() > 100  # many slots filled, in many bands
    assert len({int(b) for b in np.nonzero((want_p >= 0).any(2))[1]}) >= 15
    np.testing.assert_array_equal(got["band_positions"], want_p)
    np.testing.assert_array_equal(got["band_values"], want_v)
    # another seed draws another subsample
    other = bands_of(batches, StatisticSettings(k=K, k_ctx=KC, n_types=V, seed=1)).bands.arrays()
    assert not np.array_equal(other["band_positions"], want_p)


def test_bands_merge_equals_one_run_and_hold_the_overall_smallest_hashes():
    from maxact.engine.bands import PER_BAND

    batches = spread_batches(30, seed=6)
    whole = bands_of(batches).bands.arrays()
    parts = [bands_of(batches[i:j]) for i, j in ((0, 7), (7, 20), (20, 30))]
    parts[2].merge(parts[0])  # any order
    parts[2].merge(parts[1])
    merged = parts[2].bands.arrays()
    np.testing.assert_array_equal(merged["band_positions"], whole["band_positions"])
    np.testing.assert_array_equal(merged["band_values"], whole["band_values"])
    # a uniform sample of R per unit is readable from the kept examples: the R candidates with the
    # smallest hash overall are always among them
    positions = torch.cat([p.reshape(-1) for _, p, _ in batches]).numpy()
    h = splitmix64(positions, SETTINGS.seed)
    overall = np.sort(positions[h < np.uint64(1 << 58)][np.argsort(h[h < np.uint64(1 << 58)])][:PER_BAND])
    for u in range(whole["band_positions"].shape[0]):
        kept = whole["band_positions"][u].ravel()
        kept = kept[kept >= 0]
        np.testing.assert_array_equal(np.sort(kept[np.argsort(splitmix64(kept, SETTINGS.seed))][:PER_BAND]), overall)


# =================================================================================================
# the accumulator protocol: states split and join by the declared unit axes
# =================================================================================================
def test_split_and_join_follow_the_declared_axes():
    from maxact.engine.statistic import UndeclaredStateError, join_states, split_state

    batches = make_batches(3, seed=7)
    acc = run(batches)
    widths = [2, 3]
    parts = acc.split(widths)
    cut = [SiteAccumulator(w, SETTINGS) for w in widths]
    for c, s in zip(cut, parts):
        c.load_state(s)
    # every per-unit tensor is cut on its units' axis; shared scalars are copied
    assert torch.equal(cut[1].moments.hist_t, acc.moments.hist_t[:, 2:])
    assert torch.equal(cut[1].tuning.sums, acc.tuning.sums[:, 2:])
    assert torch.equal(cut[0].top.keys, acc.top.keys[:2]) and torch.equal(cut[1].bands.values.isnan(),
                                                                           acc.bands.values[2:].isnan())
    assert cut[0].moments.count == acc.moments.count
    joined = join_states(parts, acc.state_axes())
    for part, tensors in acc.state().items():
        for name, t in tensors.items():
            assert torch.equal(torch.nan_to_num(joined[part][name], nan=-7), torch.nan_to_num(t, nan=-7)), (part, name)
    # a tensor a statistic does not declare is refused, never split on a guessed axis
    state = acc.state()
    state["moments"]["m5"] = torch.zeros(U)
    with pytest.raises(UndeclaredStateError, match="m5"):
        split_state(state, acc.state_axes(), widths)
    with pytest.raises(UndeclaredStateError, match="m5"):
        join_states([state, state], acc.state_axes())
    state = acc.state()
    with pytest.raises(UndeclaredStateError, match="units"):
        split_state(state, acc.state_axes(), [2, 2])  # widths that do not add up to the units


def test_a_registered_statistic_is_fed_merged_and_saved(monkeypatch):
    """The recipe of docs/DEVELOPING.md: a statistic registered once is in every accumulator, fed
    every batch, merged, saved, split and joined, with no edit of SiteAccumulator."""
    import maxact.engine.registry as registry
    from maxact.engine.statistic import Feed

    class TokenCount:
        STATE_AXES = {"n": None, "sum": 0}
        SHARED_ARRAYS: dict = {}
        feed = Feed.TOKENS

        def __init__(self, width):
            self.n, self.sum = torch.tensor(0), torch.zeros(width, dtype=torch.float64)

        def update(self, batch):
            self.n += batch.flat.shape[0]
            self.sum += batch.flat.double().sum(0)

        def merge(self, other):
            self.n, self.sum = self.n + other.n, self.sum + other.sum

        def arrays(self):
            return {"token_sum": self.sum.numpy()}

        def state(self):
            return {"n": self.n, "sum": self.sum}

        def load_state(self, s):
            self.n, self.sum = s["n"], s["sum"]

    monkeypatch.setitem(registry.STATISTICS, "count", lambda width, s, device: TokenCount(width))
    batches = make_batches(4, seed=8, ties=False)
    a, b = run(batches[:1]), run(batches[1:])
    a.merge(b)
    x = torch.cat([acts.reshape(-1, U) for acts, _, _ in batches]).double()
    assert int(a.count.n) == x.shape[0]
    torch.testing.assert_close(a.count.sum, x.sum(0))
    parts = a.split([1, 4])
    assert torch.equal(parts[1]["count"]["sum"], a.count.sum[1:]) and int(parts[0]["count"]["n"]) == x.shape[0]


# =================================================================================================
# merged moments against one run: the bound docs/STORE.md states
# =================================================================================================
MERGE_BOUNDS = {"mean": 5e-6, "std": 1e-6, "skew": 5e-5, "kurtosis": 5e-6, "tuning": 1e-4}


def heavy_tailed(seed, n_windows=96, t=64, u=48):
    """(n_windows, t, u) float32: Student-t (df 3) units of assorted scales and offsets, and sinks of
    ~800 at window position 0 on a third of them (what residual streams look like)."""
    g = np.random.default_rng(seed)
    x = g.standard_t(3, size=(n_windows, t, u)) * g.uniform(0.01, 5, u) + g.normal(0, 3, u)
    x[:, 0, :] += 800 * (g.uniform(size=u) < 0.3)
    return torch.from_numpy(x.astype(np.float32))


def feed_windows(acc, x, rows, w_lo, w_hi, per_batch):
    """Windows [w_lo, w_hi) of x in batches of per_batch from w_lo, as a run or a shard does."""
    t = x.shape[1]
    for lo in range(w_lo, w_hi, per_batch):
        hi = min(w_hi, lo + per_batch)
        acc.update(x[lo:hi].clone(), torch.arange(lo, hi)[:, None] * t + torch.arange(t), rows[lo * t : hi * t])


def merge_errors(one, merged, type_counts):
    """Largest differences of merged moments from one run's, on the scale each is stated."""
    s1, s2 = one.moments.summary(), merged.moments.summary()
    mean_diff = (merged.tuning.sums - one.tuning.sums).double().numpy() / type_counts[:, None]  # (V+1, U)
    return {
        "mean": np.max(np.abs(s1["mean"] - s2["mean"]) / s1["std"]),  # in units of the unit's std
        "std": np.max(np.abs(s1["std"] - s2["std"]) / s1["std"]),  # relative
        "skew": np.max(np.abs(s1["skew"] - s2["skew"])),  # absolute
        "kurtosis": np.max(np.abs(s1["kurtosis"] - s2["kurtosis"]) / (s1["kurtosis"] + 3)),  # relative to E[d^4]/var^2
        "tuning": np.max(np.abs(mean_diff) / s1["std"]),  # tuning means, in units of the unit's std
    }


def test_merged_moments_stay_within_the_stated_bound():
    worst = dict.fromkeys(MERGE_BOUNDS, 0.0)
    for seed in range(3):
        x = heavy_tailed(seed)
        n_windows, t, u = x.shape
        rows = torch.from_numpy(np.random.default_rng(seed).integers(0, 41, n_windows * t))
        settings = StatisticSettings(k=4, k_ctx=2, n_types=40, seed=0)
        one = SiteAccumulator(u, settings)
        feed_windows(one, x, rows, 0, n_windows, 16)
        for n_shards in (2, 3, 5):
            cuts = [n_windows * i // n_shards for i in range(n_shards + 1)]
            parts = []
            for lo, hi in zip(cuts, cuts[1:]):
                parts.append(SiteAccumulator(u, settings))
                feed_windows(parts[-1], x, rows, lo, hi, 16)
            for p in parts[1:]:
                parts[0].merge(p)
            counts = np.bincount(rows.numpy(), minlength=41)
            for name, err in merge_errors(one, parts[0], counts).items():
                worst[name] = max(worst[name], err)
    print("merged moments, largest differences from one run:", {k: f"{v:.2g}" for k, v in worst.items()})
    assert all(worst[name] <= bound for name, bound in MERGE_BOUNDS.items()), worst
    assert worst["mean"] > 0  # batched differently, float32 batch sums do differ: the bound is not vacuous
