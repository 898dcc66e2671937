"""The engine's core statistics checked where `make mutation` (issue 13) found their mutants alive:
direct logit effects, the exact merge of two top-K lists, the histogram's dtype and the per-type
moments of token tuning.

Every number is compared with one computed here independently (numpy over a hand-made input), and
every function under test is called inside the test (docs/MUTATION.md: module fixtures hide later
tests from the tool). The logit effects run on a small stand-in for a model adapter: the four
methods ``logit_effects`` reads (``unembedding``, ``final_norm_fold``, ``width``,
``mlp_out_weight``), as documented in models/adapters/base.py.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from maxact.engine.keys import EMPTY, pack
from maxact.engine.logit_effects import logit_effects
from maxact.engine.moments import HIST_STRIDE, N_BINS, StreamingMoments, bin_bounds, bin_of
from maxact.engine.site import POS0_BLOCK, SiteAccumulator
from maxact.engine.statistic import Batch, Feed, StatisticSettings
from maxact.engine.topk import C_AFTER, C_BEFORE, MAX_COLUMNS, StreamingTopK
from maxact.engine.tuning import TokenTuning, choose_types, type_moments, type_rows
from maxact.units import SiteRef

VOCAB, D_MODEL, D_MLP, D_Q = 13, 4, 5, 6


class _Adapter:
    """Random weights, no ties between logits; gamma away from +-1 (its fold must multiply)."""

    def __init__(self, centres: bool, seed: int = 3):
        rng = np.random.default_rng(seed)
        self.W_U = rng.normal(size=(VOCAB, D_MODEL)).astype(np.float32)  # (vocab, d_model)
        self.gamma = np.array([0.5, 2.0, -1.5, 3.0], dtype=np.float32)  # (d_model,)
        self.out = {layer: rng.normal(size=(D_MODEL, D_MLP)).astype(np.float32) for layer in (0, 1)}
        self.centres = centres

    def unembedding(self) -> torch.Tensor:
        return torch.tensor(self.W_U)

    def final_norm_fold(self) -> tuple[torch.Tensor, bool]:
        return torch.tensor(self.gamma), self.centres

    def mlp_out_weight(self, layer: int) -> torch.Tensor:
        return torch.tensor(self.out[layer])  # (d_model, d_mlp)

    def width(self, ref: SiteRef) -> int:
        return {"mlp_post": D_MLP, "attn_q": D_Q}.get(ref.site, D_MODEL)


def _expected_rows(logits: np.ndarray, k: int):
    """logits (n, vocab) float64 -> top ids/values and bottom ids/values (n, k), by brute force."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    bottom = np.argsort(logits, axis=1, kind="stable")[:, :k]
    take = lambda ids: np.take_along_axis(logits, ids, axis=1)  # noqa: E731
    return top, take(top), bottom, take(bottom)


# ---- direct logit effects ---------------------------------------------------------------------
@pytest.mark.parametrize("centres", [False, True])
def test_logit_effects_of_every_path_against_numpy(centres):
    adapter, k = _Adapter(centres), 3
    refs = [SiteRef("resid_pre", 0), SiteRef("attn_q", 0), SiteRef("mlp_post", 1),
            SiteRef("ln_final", None)]
    got = logit_effects(adapter, refs, k)

    W = adapter.W_U.astype(np.float64) * adapter.gamma.astype(np.float64)[None, :]  # (vocab, d_model)
    if centres:  # LayerNorm: the mean over d_model of each token's row removed
        W = W - W.mean(axis=1, keepdims=True)
    resid = _expected_rows(W.T, k)  # a basis direction e_d reads column d of W
    mlp = _expected_rows(adapter.out[1].T.astype(np.float64) @ W.T, k)  # (d_mlp, vocab)
    none_ids, none_values = np.full((D_Q, k), -1), np.full((D_Q, k), np.nan)
    expected = [np.concatenate([resid[j], none, mlp[j], resid[j]])
                for j, none in enumerate((none_ids, none_values, none_ids, none_values))]

    names = ("logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")
    assert list(got) == list(names)
    for j, name in enumerate(names):
        assert got[name].shape == (2 * D_MODEL + D_Q + D_MLP, k), name
        if "ids" in name:
            assert got[name].dtype == np.int64, name
            np.testing.assert_array_equal(got[name], expected[j], err_msg=name)
        else:
            assert got[name].dtype == np.float32, name
            np.testing.assert_allclose(got[name], expected[j], rtol=1e-5, atol=1e-5, err_msg=name)
    # the promoted and the suppressed tokens are different lists, best first
    assert (got["logit_top_values"][:D_MODEL, 0] > got["logit_bottom_values"][:D_MODEL, 0]).all()


def test_logit_effects_of_many_directions_cover_every_unit():
    """More MLP neurons than one matmul chunk (512): every row is the neuron's own."""
    adapter, k = _Adapter(False), 2
    rng = np.random.default_rng(8)
    adapter.out[0] = rng.normal(size=(D_MODEL, 700)).astype(np.float32)
    adapter.width = lambda ref: 700
    got = logit_effects(adapter, [SiteRef("mlp_post", 0)], k)
    W = adapter.W_U.astype(np.float64) * adapter.gamma.astype(np.float64)[None, :]
    top, top_v, bottom, bottom_v = _expected_rows(adapter.out[0].T.astype(np.float64) @ W.T, k)
    np.testing.assert_array_equal(got["logit_top_ids"], top)
    np.testing.assert_array_equal(got["logit_bottom_ids"], bottom)
    np.testing.assert_allclose(got["logit_bottom_values"], bottom_v, rtol=1e-5, atol=1e-5)


# ---- merging two top-K lists --------------------------------------------------------------------
def test_merging_into_mostly_empty_lists_keeps_contexts_in_range():
    """K = 6 slots, 2 with contexts; one accumulator holds one example, the other none: the merged
    list's empty slots (any of the tied empties may be picked) carry NaN contexts, and the one
    example keeps its own."""
    a, b = StreamingTopK(3, 6, 2, True), StreamingTopK(3, 6, 2, True)
    a.add(torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[4]]))  # (W=1, T=1, U=3)
    before = a.context.clone()
    a.merge(b)
    values, positions = a.values_positions()
    np.testing.assert_array_equal(values[:, 0].numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(positions[:, 0].numpy(), [4, 4, 4])
    assert (a.keys[:, 1:] == EMPTY).all()
    assert a.context.shape == (3, 2, C_BEFORE + C_AFTER)
    np.testing.assert_array_equal(a.context[:, 0].numpy(), before[:, 0].numpy())
    assert torch.isnan(a.context[:, 1]).all()


def test_merging_two_full_lists_interleaves_keys_and_contexts():
    """Two accumulators with hand-set keys and contexts: the merged K best and, for the first
    K_ctx of them, the context each brought with it."""
    k, k_ctx = 4, 2
    a, b = StreamingTopK(1, k, k_ctx, True), StreamingTopK(1, k, k_ctx, True)
    a.keys[0] = pack(torch.tensor([9.0, 5.0, 3.0, 1.0]), torch.tensor([0, 1, 2, 3]), True)
    b.keys[0] = pack(torch.tensor([8.0, 7.0, 2.0, 0.0]), torch.tensor([10, 11, 12, 13]), True)
    a.context[0] = torch.tensor([[1.0], [2.0]]).expand(k_ctx, C_BEFORE + C_AFTER)
    b.context[0] = torch.tensor([[3.0], [4.0]]).expand(k_ctx, C_BEFORE + C_AFTER)
    a.merge(b)
    values, positions = a.values_positions()
    np.testing.assert_array_equal(values[0].numpy(), [9.0, 8.0, 7.0, 5.0])
    np.testing.assert_array_equal(positions[0].numpy(), [0, 10, 11, 1])
    np.testing.assert_array_equal(a.context[0, :, 0].numpy(), [1.0, 3.0])


def _batches(units: int, n_batches: int, windows: int, seq: int, seed: int):
    """(acts (W, T, U) float32 with exact ties, positions (W, T) int64) per batch; the batches'
    windows come in a shuffled corpus order, so a later batch may hold earlier positions."""
    rng = np.random.default_rng(seed)
    starts = rng.permutation(n_batches * windows) * seq
    out = []
    for b in range(n_batches):
        acts = (np.round(rng.normal(size=(windows, seq, units)) * 3) / 2).astype(np.float32)
        positions = starts[b * windows : (b + 1) * windows, None] + np.arange(seq)
        out.append((acts, positions.astype(np.int64)))
    return out


def _brute_extremes(batches, k: int, k_ctx: int, largest: bool, at_start: bool):
    """Values, positions (U, k) and contexts (U, k_ctx, C) by brute force: rows ordered by value
    (desc for top), then position asc; window position 0 alone (at_start) or never."""
    A = np.stack([a for a, _ in batches])  # (B, W, T, U)
    P = np.stack([p for _, p in batches])  # (B, W, T)
    B, W, T, U = A.shape
    b, w, t = (i.reshape(-1) for i in np.meshgrid(np.arange(B), np.arange(W), np.arange(T), indexing="ij"))
    keep = (t == 0) if at_start else (t > 0)
    b, w, t = b[keep], w[keep], t[keep]
    pos = P[b, w, t]  # (M,)
    by_pos = np.argsort(pos, kind="stable")
    b, w, t, pos = b[by_pos], w[by_pos], t[by_pos], pos[by_pos]
    vals = A[b, w, t, :]  # (M, U), rows by position
    order = np.argsort(-vals if largest else vals, axis=0, kind="stable")[:k]  # (k, U): ties by position
    values = np.take_along_axis(vals, order, axis=0).T  # (U, k)
    positions = pos[order].T
    units = np.arange(U)[:, None]
    tt = t[order[:k_ctx]].T[:, :, None] + np.arange(-C_BEFORE, C_AFTER)  # (U, k_ctx, C)
    ctx = A[b[order[:k_ctx]].T[:, :, None], w[order[:k_ctx]].T[:, :, None], np.clip(tt, 0, T - 1),
            units[:, :, None]]
    ctx = np.where((tt >= 0) & (tt < T), ctx, np.nan).astype(np.float16)
    return values, positions, ctx


@pytest.mark.parametrize("largest", [True, False])
def test_top_k_of_more_units_than_one_slice_equals_brute_force(largest):
    """MAX_COLUMNS + 5 units: two slices of columns, the second at an offset; values, positions and
    the contexts (read from the unmasked activations, window position 0 included) of every unit."""
    units, k, k_ctx = MAX_COLUMNS + 5, 3, 2
    batches = _batches(units, n_batches=3, windows=2, seq=30, seed=11)
    acc = StreamingTopK(units, k, k_ctx, largest, name="top" if largest else "bottom")
    for acts, positions in batches:
        acc.update(Batch(torch.tensor(acts), torch.tensor(positions), torch.zeros(acts.size // units,
                                                                                  dtype=torch.int64)))
    values, positions, ctx = _brute_extremes(batches, k, k_ctx, largest, at_start=False)
    got_values, got_positions = acc.values_positions()
    np.testing.assert_array_equal(got_positions.numpy(), positions)
    np.testing.assert_array_equal(got_values.numpy(), values)
    np.testing.assert_array_equal(acc.context.numpy(), ctx)


@pytest.mark.parametrize("k, windows, seq", [(1, 3, 7), (2, 1, 37)])
@pytest.mark.parametrize("largest", [True, False])
def test_top_k_of_batches_cut_into_uneven_groups_equals_brute_force(largest, k, windows, seq):
    """N = W * T rows that the groups of s = N // (8 K) rows do not divide (21 rows in groups of 2,
    37 in groups of 2): the last group is padded. The best value of each batch sits in its last
    row, so that padded group is always a candidate."""
    units = 3
    batches = _batches(units, n_batches=4, windows=windows, seq=seq, seed=15)
    sign = 1.0 if largest else -1.0
    for b, (acts, _) in enumerate(batches):
        acts[-1, -1] = 100.0 * sign
        acts[-1, -1, 0] += b * sign  # unit 0: a new best in every batch
    acc = StreamingTopK(units, k, 1, largest, name="top" if largest else "bottom")
    for acts, positions in batches:
        acc.update(Batch(torch.tensor(acts), torch.tensor(positions), torch.zeros(acts.size // units,
                                                                                  dtype=torch.int64)))
    values, positions, ctx = _brute_extremes(batches, k, 1, largest, at_start=False)
    got_values, got_positions = acc.values_positions()
    np.testing.assert_array_equal(got_positions.numpy(), positions)
    np.testing.assert_array_equal(got_values.numpy(), values)
    np.testing.assert_array_equal(acc.context.numpy(), ctx)


@pytest.mark.parametrize("largest", [True, False])
def test_window_start_extremes_of_more_units_than_one_slice_equal_brute_force(largest):
    units, k = MAX_COLUMNS + 5, 3
    batches = _batches(units, n_batches=2, windows=7, seq=2, seed=12)
    acc = StreamingTopK(units, k, 0, largest, name="top0", at_window_start=True)
    for acts, positions in batches:
        acc.update(Batch(torch.tensor(acts[:, :1]), torch.tensor(positions[:, :1]),
                         torch.zeros(len(acts), dtype=torch.int64)))
    values, positions, _ = _brute_extremes(batches, k, 0, largest, at_start=True)
    got_values, got_positions = acc.values_positions()
    np.testing.assert_array_equal(got_positions.numpy(), positions)
    np.testing.assert_array_equal(got_values.numpy(), values)
    assert set(acc.arrays()) == {"top0_values", "top0_positions"}


def test_window_starts_gathered_over_more_than_one_block_equal_brute_force():
    """Window-position-0 rows wait in blocks of POS0_BLOCK: batches of 7 windows overflow a block,
    a batch of more than POS0_BLOCK windows goes straight through, and the last rows wait until
    the state is read; top0 / bottom0 hold the brute-force extremes of every window start, at
    positions beyond float32's exact integers (2**24)."""
    units, seq, k = 3, 2, 4
    sizes = [7] * 40 + [POS0_BLOCK + 3] + [7] * 3
    rng = np.random.default_rng(14)
    batches = [((np.round(rng.normal(size=(n, seq, units)) * 3) / 2).astype(np.float32),
                (2**24 + 1 + seq * (np.arange(n)[:, None] + sum(sizes[:i]))) + np.arange(seq))
               for i, n in enumerate(sizes)]
    acc = SiteAccumulator(units, StatisticSettings(k=k, k_ctx=2, n_types=2, seed=0))
    for acts, positions in batches:
        acc.update(torch.tensor(acts), torch.tensor(positions), torch.zeros(acts.size // units, dtype=torch.int64))
    state = acc.state()  # reading the state feeds the rows still waiting
    every_window = [(np.concatenate([a for a, _ in batches]), np.concatenate([p for _, p in batches]))]
    for name, largest in (("top0", True), ("bottom0", False)):
        values, positions, _ = _brute_extremes(every_window, k, 0, largest, at_start=True)
        got_values, got_positions = getattr(acc, name).values_positions()
        np.testing.assert_array_equal(got_positions.numpy(), positions, err_msg=name)
        np.testing.assert_array_equal(got_values.numpy(), values, err_msg=name)
        assert torch.equal(state[name]["keys"], getattr(acc, name).keys)


def test_windows_of_one_token_feed_only_the_window_start_statistics():
    acc = SiteAccumulator(2, StatisticSettings(k=2, k_ctx=1, n_types=2, seed=0))
    acc.update(torch.tensor([[[1.0, -2.0]], [[4.0, 0.5]]]), torch.tensor([[3], [8]]), torch.tensor([1, 2]))
    acc.flush()
    values, positions = acc.top0.values_positions()
    np.testing.assert_array_equal(positions.numpy(), [[8, 3], [8, 3]])
    np.testing.assert_array_equal(values.numpy(), [[4.0, 1.0], [0.5, -2.0]])
    assert (acc.top.keys == EMPTY).all()
    assert acc.moments.count == 2 and acc.tuning.types.count.tolist() == [0, 1, 1]


def test_an_accumulator_survives_pickling_with_its_statistics():
    """Pickling (how a state travels to another process) rebuilds the object before its
    statistics exist: attribute lookups then must fail as AttributeError, not as another error."""
    acc = SiteAccumulator(2, StatisticSettings(k=3, k_ctx=1, n_types=2, seed=0))
    acc.update(torch.tensor([[[1.0, 2.0], [3.0, -1.0]]]), torch.tensor([[0, 1]]), torch.zeros(2, dtype=torch.int64))
    clone = pickle.loads(pickle.dumps(acc))
    assert torch.equal(clone.top.keys, acc.top.keys) and clone.width == 2
    with pytest.raises(AttributeError, match="^SiteAccumulator has no statistic or attribute 'nothing'$"):
        clone.nothing  # noqa: B018


def test_each_window_start_is_fed_once():
    """One window, its state read, then one more: top0 holds exactly those two starts, each once
    (no row of the waiting buffer fed before it was written, or fed again)."""
    acc = SiteAccumulator(2, StatisticSettings(k=4, k_ctx=2, n_types=2, seed=0))
    acc.update(torch.tensor([[[1.5, -2.0], [9.0, 9.0]]]), torch.tensor([[40, 41]]), torch.zeros(2, dtype=torch.int64))
    acc.state()
    acc.update(torch.tensor([[[0.5, 3.0], [9.0, 9.0]]]), torch.tensor([[10, 11]]), torch.zeros(2, dtype=torch.int64))
    acc.flush()
    values, positions = acc.top0.values_positions()
    np.testing.assert_array_equal(positions.numpy(), [[40, 10, -1, -1], [10, 40, -1, -1]])
    np.testing.assert_array_equal(values.numpy(), [[1.5, 0.5, np.nan, np.nan], [3.0, -2.0, np.nan, np.nan]])


def test_one_unit_fed_windows_of_two_tokens_keeps_every_position_but_the_first():
    """A site of one unit, windows of two tokens: position 1 of each window enters, position 0
    (fed to top0 instead) never does, and the list is not full (its threshold must let anything in)."""
    top, bottom = StreamingTopK(1, 4, 2, True), StreamingTopK(1, 4, 2, False, name="bottom")
    acts = torch.tensor([[[7.0], [-3.0]], [[8.0], [-1.0]]])  # (W=2, T=2, U=1)
    batch = Batch(acts, torch.tensor([[0, 1], [2, 3]]), torch.zeros(4, dtype=torch.int64))
    top.update(batch)
    bottom.update(batch)
    for acc, values, positions in ((top, [-1.0, -3.0], [3, 1]), (bottom, [-3.0, -1.0], [1, 3])):
        got_values, got_positions = acc.values_positions()
        np.testing.assert_array_equal(got_values[0, :2].numpy(), values)
        np.testing.assert_array_equal(got_positions[0].numpy(), positions + [-1, -1])
        context = acc.context[0, 0].numpy()  # the best example's window: the token before it, itself
        np.testing.assert_array_equal(context[C_BEFORE - 1 : C_BEFORE + 1], acts[positions[0] // 2, :, 0].numpy())


@pytest.mark.parametrize("largest", [True, False])
def test_empty_slots_among_the_kept_contexts_carry_none(largest):
    """Two examples for K = 5 slots, four with contexts: ranks 2 and 3 stay empty (NaN contexts),
    also after a second batch that adds one more."""
    acc = StreamingTopK(1, 5, 4, largest)
    acc.update(Batch(torch.tensor([[[9.0], [2.0], [4.0]]]), torch.tensor([[0, 1, 2]]), torch.zeros(3, dtype=torch.int64)))
    assert torch.isnan(acc.context[0, 2:]).all()
    acc.update(Batch(torch.tensor([[[9.0], [3.0]]]), torch.tensor([[3, 4]]), torch.zeros(2, dtype=torch.int64)))
    values, positions = acc.values_positions()
    order = [2, 4, 1] if largest else [1, 4, 2]
    np.testing.assert_array_equal(positions[0].numpy(), order + [-1, -1])
    assert not torch.isnan(acc.context[0, :3, C_BEFORE]).any()
    assert torch.isnan(acc.context[0, 3]).all()


def test_a_single_candidate_above_the_threshold_enters():
    """A full list, then a batch where exactly one (unit, row) beats its K-th value."""
    acc = StreamingTopK(2, 2, 1, True)
    for values, start in (([[0.0, 0.0], [5.0, 1.0], [6.0, 2.0], [3.0, 3.0]], 0),
                          ([[0.0, 0.0], [1.0, 0.5], [7.0, 1.5], [2.0, 0.0]], 4)):
        acts = torch.tensor([values])  # (W=1, T=4, U=2)
        acc.update(Batch(acts, torch.arange(start, start + 4)[None, :], torch.zeros(4, dtype=torch.int64)))
    values, positions = acc.values_positions()
    np.testing.assert_array_equal(values.numpy(), [[7.0, 6.0], [3.0, 2.0]])
    np.testing.assert_array_equal(positions.numpy(), [[6, 2], [3, 2]])
    np.testing.assert_array_equal(acc.context[0, 0, C_BEFORE - 2 : C_BEFORE + 2].numpy(), [0.0, 1.0, 7.0, 2.0])


def test_a_top_k_list_made_with_the_defaults_keeps_contexts_under_its_name():
    acc = StreamingTopK(2, 3, 1, True)
    assert (acc.name, acc.at_window_start, acc.feed) == ("top", False, Feed.TOKENS)
    assert acc.keys.device.type == "cpu" and acc.context.dtype == torch.float16
    assert set(acc.arrays()) == {"top_values", "top_positions", "top_context"}


# ---- the histogram -----------------------------------------------------------------------------
def _bin_by_bounds(value: float) -> int:
    """The bin of docs/STORE.md's bounds: [low, high) above zero, (low, high] below, and one bin
    for each signed zero (47 for +0.0, 46 for -0.0)."""
    if value == 0:
        return N_BINS // 2 - (1 if np.signbit(value) else 0)
    bounds = bin_bounds()
    return next(i for i, (lo, hi) in enumerate(bounds) if (lo <= value < hi if value > 0 else lo < value <= hi))


def test_bins_of_zeros_denormals_and_edges_follow_the_bounds():
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    values = [0.0, -0.0, tiny, -tiny, 2.0**-10, -(2.0**-10), 1.5 * 2.0**-10, 2.0**-11, 1.0, 1.5, -1.5,
              2.0**12, -(2.0**12), 1.5 * 2.0**11, 3.4e38, -3.4e38]
    got = bin_of(torch.tensor(values, dtype=torch.float32)).numpy()
    np.testing.assert_array_equal(got, [_bin_by_bounds(v) for v in values])
    assert got[0] == 47 and got[1] == 46
    infinities = bin_of(torch.tensor([float("inf"), float("-inf")])).numpy()
    np.testing.assert_array_equal(infinities, [N_BINS - 1, 0])  # the overflow bins


def test_histogram_counts_every_strided_position_as_batches_grow():
    """A first batch with one position on the stride, later ones with more (fewer than the
    units): each strided position counted once."""
    units = 16
    moments = StreamingMoments(units)
    seen = []
    for start, n in ((0, 3), (3, 40), (43, 90)):
        positions = np.arange(start, start + n)
        x = (np.sin(positions[:, None] * np.arange(1, units + 1)) * 50).astype(np.float32)  # (n, U)
        moments.add(torch.tensor(x), torch.tensor(positions))
        seen.append(x[positions % HIST_STRIDE == 0])
    sub = np.concatenate(seen)
    expected = np.zeros((units, N_BINS), dtype=np.int64)
    for u in range(units):
        for value in sub[:, u]:
            expected[u, _bin_by_bounds(float(value))] += 1
    np.testing.assert_array_equal(moments.arrays()["hist"], expected)


def test_histogram_array_is_int64_counts_per_unit():
    moments = StreamingMoments(2)
    x = torch.tensor([[1.0, -1.0], [0.0, 3.0], [1.0, 1.0]])  # (N, U)
    moments.add(x, torch.tensor([0, 8, 16]))
    hist = moments.arrays()["hist"]
    assert hist.dtype == np.int64 and hist.shape == (2, N_BINS)
    np.testing.assert_array_equal(hist.sum(1), [3, 3])


def test_summary_of_a_unit_with_variance_below_one_against_numpy():
    """Population moments of a skewed unit whose variance is below 1 (no clamp or guard at 1),
    a constant unit (std, skew and kurtosis 0) and one far from zero."""
    x = np.array([[0.0, 2.0, 10.5], [0.1, 2.0, 10.0], [0.0, 2.0, 9.0], [0.9, 2.0, 13.0],
                  [-0.2, 2.0, 11.0]], dtype=np.float32)  # (N, U)
    moments = StreamingMoments(3)
    moments.add(torch.tensor(x[:2]), torch.tensor([0, 1]))
    moments.add(torch.tensor(x[2:]), torch.tensor([2, 3, 4]))
    got = moments.summary()
    d = x.astype(np.float64) - x.astype(np.float64).mean(0)
    var = (d**2).mean(0)
    assert 0 < var[0] < 1 and var[1] == 0
    np.testing.assert_array_equal(got["count"], [5, 5, 5])
    np.testing.assert_allclose(got["mean"], x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(got["std"], np.sqrt(var), rtol=1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(var > 0, (d**3).mean(0) / var**1.5, 0.0)
        kurt = np.where(var > 0, (d**4).mean(0) / var**2 - 3.0, 0.0)
    np.testing.assert_allclose(got["skew"], skew, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["kurtosis"], kurt, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["frac_pos"], [2 / 5, 1.0, 1.0])


_FOLD_BATCHES = [  # (n, U=2) float32, exact batch means and deviations, far apart and skewed
    np.array([[5.0, -2.0]], dtype=np.float32),  # one token: the next fold is the first with na > 0
    np.array([[1.0, -4.0], [2.0, 0.0], [6.0, 1.0]], dtype=np.float32),
    np.array([[100.0, 7.0], [104.0, 7.5], [100.0, 9.0], [104.0, 6.5], [107.0, 5.0]], dtype=np.float32),
    np.array([[-50.0, 300.0], [-48.0, 310.0]], dtype=np.float32),
]


def _central_sums(x: np.ndarray):
    d = x.astype(np.float64) - x.astype(np.float64).mean(0)
    return x.astype(np.float64).mean(0), (d**2).sum(0), (d**3).sum(0), (d**4).sum(0)


def _assert_moments(moments: StreamingMoments, x: np.ndarray):
    state = moments.state()
    assert int(state["count"]) == len(x)
    for name, want in zip(("mean", "m2", "m3", "m4"), _central_sums(x)):
        np.testing.assert_allclose(state[name].numpy(), want, rtol=1e-12, atol=1e-9, err_msg=name)


def test_moments_folded_over_batches_far_apart_equal_numpy():
    """Unequal batch sizes and means 100 apart: every cross term of the pairwise formulas counts."""
    moments = StreamingMoments(2)
    for i, x in enumerate(_FOLD_BATCHES):
        moments.add(torch.tensor(x), torch.arange(len(x)) + 10 * i)
    _assert_moments(moments, np.concatenate(_FOLD_BATCHES))


def test_moments_merged_equal_numpy_in_either_order():
    x = np.concatenate(_FOLD_BATCHES)
    for first, second in ((_FOLD_BATCHES[:1], _FOLD_BATCHES[1:]), (_FOLD_BATCHES[1:], _FOLD_BATCHES[:1])):
        a, b = StreamingMoments(2), StreamingMoments(2)
        for part, acc in ((first, a), (second, b)):
            for x_b in part:
                acc.add(torch.tensor(x_b), torch.arange(len(x_b)))
        a.merge(b)
        a.merge(StreamingMoments(2))  # an empty one changes nothing
        _assert_moments(a, x)


def test_moments_fed_nothing_are_float64_zeros():
    moments = StreamingMoments(3)
    state = moments.state()
    for name in ("mean", "m2", "m3", "m4"):
        assert state[name].dtype == torch.float64 and state[name].shape == (3,), name
    # exact counts: int64 (a float32 count of positive tokens stops at 2**24)
    assert state["n_pos"].dtype == torch.int64 and state["n_pos"].shape == (3,)
    assert state["hist_t"].dtype == torch.int64 and state["hist_t"].shape == (N_BINS, 3)
    got = moments.summary()
    np.testing.assert_array_equal(got["count"], [0, 0, 0])
    assert got["mean"].dtype == np.float64
    for name in ("mean", "std", "skew", "kurtosis", "frac_pos"):
        np.testing.assert_array_equal(got[name], [0.0, 0.0, 0.0], err_msg=name)


def test_summary_of_one_token():
    moments = StreamingMoments(2)
    moments.add(torch.tensor([[0.5, -0.25]]), torch.tensor([7]))
    got = moments.summary()
    np.testing.assert_array_equal(got["count"], [1, 1])
    np.testing.assert_array_equal(got["mean"], [0.5, -0.25])
    for name in ("std", "skew", "kurtosis"):
        np.testing.assert_array_equal(got[name], [0.0, 0.0], err_msg=name)
    np.testing.assert_array_equal(got["frac_pos"], [1.0, 0.0])


# ---- the tracked token types --------------------------------------------------------------------
def test_choose_types_keeps_the_most_frequent_then_smaller_ids():
    tokens = np.array([5, 5, 5, 2, 2, 7, 7, 1, 9], dtype=np.int32)
    ids, counts = choose_types(tokens, 3)
    np.testing.assert_array_equal(ids, [5, 2, 7])  # 2 and 7 tie at two: the smaller id first
    np.testing.assert_array_equal(counts, [3, 2, 2, 2])  # the last: the other tokens (1 and 9)
    assert ids.dtype == np.int64 and counts.dtype == np.int64


def test_type_rows_cover_every_token_id_and_the_vocabulary():
    """(max(vocab_size, max token + 1),) rows: tracked ids their rank, every other id the row after."""
    lut = type_rows(np.array([0, 9, 3, 9], dtype=np.int32), np.array([9, 3]), vocab_size=5)
    np.testing.assert_array_equal(lut, [2, 2, 2, 1, 2, 2, 2, 2, 2, 0])  # ids past the vocabulary too
    assert lut.dtype == np.int64
    np.testing.assert_array_equal(type_rows(np.array([0, 0], dtype=np.int32), np.array([0]), 1), [0])
    np.testing.assert_array_equal(type_rows(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), 4),
                                  [0, 0, 0, 0])


# ---- per-type moments of token tuning ---------------------------------------------------------
def _tuning(values: np.ndarray, rows: np.ndarray, n_types: int) -> TokenTuning:
    """A TokenTuning fed ``values`` (N, U) whose tokens fall in the tuning rows ``rows`` (N,)."""
    t = TokenTuning(values.shape[1], n_types)
    t.types.add(torch.tensor(values, dtype=torch.float32), torch.tensor(rows, dtype=torch.int64))
    return t


def _expected_moments(values: np.ndarray, rows: np.ndarray, n_rows: int):
    x = values.astype(np.float64)
    count = np.bincount(rows, minlength=n_rows)
    mean = x.mean(0)
    dev = np.zeros((n_rows, x.shape[1]))
    m2 = np.zeros((n_rows, x.shape[1]))
    for r in range(n_rows):
        if count[r]:
            dev[r] = x[rows == r].mean(0) - mean
            m2[r] = ((x[rows == r] - x[rows == r].mean(0)) ** 2).sum(0)
    total = ((x - mean) ** 2).sum(0)
    return count, dev, m2, mean, total


def test_token_tuning_keeps_one_row_per_tracked_type_and_one_for_the_rest():
    """n_types tracked types + 'other': float32 sums and count/mean/M2 of that many rows."""
    tuning = TokenTuning(2, 3)
    acts = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])  # (W=1, T=3, U=2)
    rows = torch.tensor([0, 3, 0])
    tuning.update(Batch(acts, torch.tensor([[5, 6, 7]]), rows))
    assert tuning.sums.shape == (4, 2) and tuning.sums.dtype == torch.float32
    np.testing.assert_array_equal(tuning.sums.numpy(), [[1.5, 2.5], [0, 0], [0, 0], [3.0, -1.0]])
    assert tuning.types.count.tolist() == [2, 0, 0, 1]
    got = type_moments([tuning])
    assert got.dev.shape == (4, 2) and got.m2.shape == (4, 2)


def test_type_moments_against_numpy_with_unfed_types():
    """Three tracked types and the 'other' row, types 2 and 'other' never fed (their dev is 0);
    unit 0 constant (eta2 NaN, without a warning), unit 1 with a total sum of squares below 1,
    unit 2 spread over two sites' worth of columns."""
    values = np.array([[2.0, 0.1, 5.0], [2.0, 0.3, -1.0], [2.0, 0.6, 4.0], [2.0, 0.2, 0.0],
                       [2.0, 0.5, 7.0]], dtype=np.float32)  # (N=5, U=3)
    rows = np.array([0, 1, 0, 1, 0])
    tunings = [_tuning(values[:, :2], rows, 3), _tuning(values[:, 2:], rows, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant unit's 0 / 0 is expected, not warned about
        got = type_moments(tunings)
    count, dev, m2, mean, total = _expected_moments(values, rows, 4)
    assert got.count.dtype == np.int64
    np.testing.assert_array_equal(got.count, count)
    assert got.dev.dtype == np.float32 and got.m2.dtype == np.float32
    np.testing.assert_allclose(got.dev, dev, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got.dev[2:], 0.0)
    np.testing.assert_allclose(got.m2, m2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(got.total_m2, total, rtol=1e-6, atol=1e-12)
    assert 0 < got.total_m2[1] < 1
    between = (count[:, None] * dev * dev).sum(0)
    assert got.eta2.dtype == np.float64
    assert np.isnan(got.eta2[0])
    np.testing.assert_allclose(got.eta2[1:], between[1:] / total[1:], rtol=1e-6)


def test_type_moments_of_one_token_and_of_types_fed_once():
    """One token fed: the unit's mean is that token's value; a type fed once has its own dev."""
    one = type_moments([_tuning(np.array([[3.0, -2.0]], dtype=np.float32), np.array([1]), 2)])
    np.testing.assert_array_equal(one.count, [0, 1, 0])
    np.testing.assert_allclose(one.mean, [3.0, -2.0])
    np.testing.assert_array_equal(one.dev, 0.0)
    values = np.array([[1.0], [4.0], [10.0]], dtype=np.float32)
    rows = np.array([0, 1, 1])
    got = type_moments([_tuning(values, rows, 1)])
    count, dev, m2, mean, total = _expected_moments(values, rows, 2)
    np.testing.assert_allclose(got.dev, dev, rtol=1e-6)
    assert got.dev[0, 0] == pytest.approx(1.0 - 5.0)
