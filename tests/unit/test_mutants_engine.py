"""Checks of the streaming engine that kill the mutants `make mutation` found alive (docs/MUTATION.md).

Each compares a number with one computed independently here (plain numpy or Python over small
inputs, the layouts of docs/STORE.md), never a function of the engine with itself. Several call a
function that the package otherwise runs only at import time (the registered factories, the
histogram's bin bounds), where a mutant switched on after the import could never be seen.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from derived_helpers import expected_bounds

from maxact.engine import registry
from maxact.engine.moments import bin_bounds
from maxact.engine.site import SiteAccumulator
from maxact.engine.statistic import (
    StatisticSettings,
    UndeclaredStateError,
    join_states,
    split_state,
)
from maxact.engine.topk import C_AFTER, C_BEFORE, StreamingTopK

SETTINGS = StatisticSettings(k=6, k_ctx=3, n_types=4, seed=5)


def acts_and_positions(n_windows: int, seq: int, units: int, seed: int):
    """(W, T, U) float32 activations with ties and (W, T) int64 positions of consecutive windows."""
    rng = np.random.default_rng(seed)
    acts = np.round(rng.normal(size=(n_windows, seq, units)) * 4).astype(np.float32) / 2
    positions = np.arange(n_windows * seq, dtype=np.int64).reshape(n_windows, seq)
    return acts, positions


# ---- the histogram's bins (docs/STORE.md) ----------------------------------------------------
def test_bin_bounds_are_the_documented_half_octaves():
    np.testing.assert_array_equal(bin_bounds(), expected_bounds())


# ---- the registry ------------------------------------------------------------------------------
def test_registering_adds_a_statistic_and_refuses_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "STATISTICS", dict(registry.STATISTICS))

    def make(width, settings, device):
        return StreamingTopK(width, 1, 0, True)

    registry.register_statistic("extra", make)
    assert registry.STATISTICS["extra"] is make
    with pytest.raises(ValueError, match="'top' is already registered"):
        registry.register_statistic("top", make)
    assert registry.STATISTICS["top"] is not make


@pytest.mark.parametrize("name, largest, at_start", [
    ("top", True, False), ("bottom", False, False), ("top0", True, True), ("bottom0", False, True)])
def test_extremes_factories_follow_the_settings(name, largest, at_start):
    acc = registry._extremes(name, largest, at_start)(7, SETTINGS, "cpu")
    assert (acc.name, acc.largest, acc.at_window_start, acc.k) == (name, largest, at_start, 6)
    assert acc.k_ctx == (0 if at_start else 3)
    assert tuple(acc.keys.shape) == (7, 6)
    assert tuple(acc.context.shape) == (7, 0 if at_start else 3, C_BEFORE + C_AFTER)
    names = set(acc.arrays())
    assert names == ({f"{name}_values", f"{name}_positions"} | (set() if at_start else {f"{name}_context"}))


# ---- splitting and joining states ---------------------------------------------------------------
def _state_of(width: int, seed: int):
    acts, positions = acts_and_positions(3, 8, width, seed)
    acc = SiteAccumulator(width, SETTINGS)
    rows = torch.as_tensor(positions.reshape(-1) % 5)
    acc.update(torch.as_tensor(acts), torch.as_tensor(positions), rows)
    return acc


def test_split_into_three_ranges_cuts_each_at_its_offset():
    acc = _state_of(6, seed=1)
    keys = acc.top.keys.clone()  # (6, K)
    sums = acc.tuning.sums.clone()  # (V + 1, 6)
    parts = split_state(acc.state(), acc.state_axes(), [1, 2, 3])
    bounds = [(0, 1), (1, 3), (3, 6)]
    for part, (lo, hi) in zip(parts, bounds):
        assert torch.equal(part["top"]["keys"], keys[lo:hi])
        assert torch.equal(part["tuning"]["sums"], sums[:, lo:hi])
        assert int(part["moments"]["count"]) == 24


def test_joining_one_state_gives_it_back():
    acc = _state_of(4, seed=2)
    state = acc.state()
    joined = join_states([state], acc.state_axes())
    assert torch.equal(joined["top"]["keys"], state["top"]["keys"])
    assert int(joined["moments"]["count"]) == 24


def test_an_undeclared_tensor_is_named_with_its_statistic():
    acc = _state_of(4, seed=3)
    state = acc.state()
    state["tuning"]["extra"] = torch.zeros(4)
    with pytest.raises(UndeclaredStateError, match="statistic 'tuning' has a state tensor 'extra'"):
        split_state(state, acc.state_axes(), [2, 2])
    with pytest.raises(UndeclaredStateError, match="statistic 'tuning' has a state tensor 'extra'"):
        join_states([state], acc.state_axes())


def test_a_state_with_unregistered_statistics_is_refused_by_name():
    state = _state_of(4, seed=4).state()
    state["novel"] = {"x": torch.zeros(4)}
    state["other"] = {"y": torch.zeros(4)}
    with pytest.raises(ValueError, match="not registered: novel, other$"):
        SiteAccumulator.from_state(state, SETTINGS)


def test_a_state_whose_tensors_disagree_on_the_units_is_refused():
    state = _state_of(4, seed=5).state()
    state["top"]["keys"] = state["top"]["keys"][:3]
    with pytest.raises(ValueError, match=r"disagree on the number of units \(\[3, 4\]\)"):
        SiteAccumulator.from_state(state, SETTINGS)
    state = _state_of(4, seed=5).state()
    state["moments"]["m5"] = torch.zeros(4)
    with pytest.raises(UndeclaredStateError, match="statistic 'moments' has a state tensor 'm5'"):
        SiteAccumulator.from_state(state, SETTINGS)


def test_loading_a_state_names_the_missing_and_the_unregistered_statistics():
    acc = _state_of(4, seed=6)
    state = acc.state()
    del state["tuning"], state["bands"]
    state["novel"], state["other"] = {}, {}
    with pytest.raises(KeyError, match=r"lacks the statistics \[bands, tuning\] and holds unregistered "
                                       r"ones \[novel, other\]"):
        SiteAccumulator(4, SETTINGS).load_state(state)
    state = acc.state()
    del state["moments"]  # missing only
    with pytest.raises(KeyError, match=r"lacks the statistics \[moments\] and holds unregistered ones \[\]"):
        SiteAccumulator(4, SETTINGS).load_state(state)


# ---- activation bands across a saved state (resume) -----------------------------------------------
def test_bands_resumed_from_a_saved_state_equal_brute_force():
    """Half the corpus, state saved and loaded into a fresh accumulator, then the other half: the
    brute-force bands of the whole. The seed makes position 0 a candidate (a kept example there
    must survive the reload)."""
    from atlas_helpers import expected_bands, splitmix64

    from maxact.engine.bands import ActivationBands
    from maxact.engine.statistic import Batch

    seed = next(s for s in range(10_000) if splitmix64(np.array([0]), s)[0] < np.uint64(1 << 58))
    acts, positions = acts_and_positions(40, 32, 3, seed=7)  # 1280 positions: about 20 candidates
    acts[0, 0, :] = 5.0  # position 0 lands in a band of its own
    first = ActivationBands(3, seed)
    half = 20
    for w in range(half):
        first.update(Batch(torch.as_tensor(acts[w:w + 1]), torch.as_tensor(positions[w:w + 1]), None))
    resumed = ActivationBands(3, seed)
    resumed.load_state({k: v.clone() for k, v in first.state().items()})
    for w in range(half, len(acts)):
        resumed.update(Batch(torch.as_tensor(acts[w:w + 1]), torch.as_tensor(positions[w:w + 1]), None))
    got = resumed.arrays()
    want_positions, want_values = expected_bands(acts.reshape(-1, 3), positions.reshape(-1), seed)
    assert (want_positions == 0).any()
    np.testing.assert_array_equal(got["band_positions"], want_positions)
    np.testing.assert_array_equal(got["band_values"], want_values)


# ---- what the extremes hand to the store ------------------------------------------------------------
def test_extremes_arrays_have_the_store_dtypes():
    """docs/STORE.md: values float32, positions int64, contexts float16, whatever the inputs."""
    acts, positions = acts_and_positions(2, 8, 3, seed=8)
    acc = StreamingTopK(3, 4, 2, True)
    acc.add(torch.as_tensor(acts), torch.as_tensor(positions))
    arrays = acc.arrays()
    assert {k: v.dtype for k, v in arrays.items()} == {
        "top_values": np.float32, "top_positions": np.int64, "top_context": np.float16}
    best = np.sort(acts.reshape(-1, 3), axis=0)[::-1][:4].T  # (U, K) brute force
    np.testing.assert_array_equal(arrays["top_values"], best)
