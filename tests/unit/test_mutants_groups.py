"""engine/groups.py's work buffers made afresh (issue 13: `make mutation` never saw `_Work.__init__`,
because the buffers are cached in a module-level table filled before mutants are switched on).

Each test clears the cache, so the buffers are built inside the test, then checks the per-group
moments against numpy in float64 on data whose mean is far larger than its spread (float32 work
in place of float64 loses it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxact.engine import groups


@pytest.fixture(autouse=True)
def _fresh_buffers():
    groups._WORK.clear()
    yield
    groups._WORK.clear()


def test_work_buffers_have_the_shapes_and_dtypes_of_their_use():
    w = groups._Work(5, 7, "cpu")
    assert (w.sums.shape, w.sums.dtype) == ((5, 7), torch.float32)
    assert (w.m2.shape, w.m2.dtype) == ((5, 7), torch.float32)
    assert (w.delta.shape, w.delta.dtype) == ((5, 7), torch.float64)
    assert (w.m2_64.shape, w.m2_64.dtype) == ((5, 7), torch.float64)
    assert (w.dev.shape, w.dev.dtype) == ((0, 7), torch.float32)
    assert w.deviations(9).shape == (9, 7) and w.deviations(3).shape == (3, 7)
    assert str(w.sums.device) == "cpu"


def test_group_moments_against_numpy_in_float64():
    rng = np.random.default_rng(0)
    n_groups, units = 4, 6
    moments = groups.GroupMoments(n_groups, units)
    xs, gs = [], []
    for size in (50, 1, 37, 200):
        x = (1e4 + rng.standard_normal((size, units))).astype(np.float32)  # mean far above the spread
        g = rng.integers(0, n_groups - 1, size)  # the last group never fed
        moments.add(torch.from_numpy(x), torch.from_numpy(g))
        xs.append(x.astype(np.float64)), gs.append(g)
    x, g = np.concatenate(xs), np.concatenate(gs)
    assert moments.count.tolist() == [int((g == k).sum()) for k in range(n_groups)]
    for k in range(n_groups - 1):
        rows = x[g == k]
        # each batch's group mean is summed in float32 (engine/groups.py), then folded in float64
        np.testing.assert_allclose(moments.mean[k].numpy(), rows.mean(0), rtol=3e-7)
        np.testing.assert_allclose(moments.m2[k].numpy(), ((rows - rows.mean(0)) ** 2).sum(0), rtol=2e-3)  # float32 deviations at 1e4
    assert (moments.mean[-1] == 0).all() and (moments.m2[-1] == 0).all()
