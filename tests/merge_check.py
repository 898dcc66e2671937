"""One check, shared by tests/unit/test_cluster.py and benchmarks/bench_ray.py: two atlases are one
result (a merged or Ray-run atlas against one run of the same config), to docs/STORE.md's bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maxact.store import format as F

# what a merge reproduces bit for bit (as tests/unit/test_atlas_cli.py checks `maxact merge`)
EXACT = {F.TOP_VALUES, F.TOP_POSITIONS, F.BOTTOM_VALUES, F.BOTTOM_POSITIONS, F.TOP0_VALUES, F.TOP0_POSITIONS,
         F.BOTTOM0_VALUES, F.BOTTOM0_POSITIONS, F.TOP_CONTEXT, F.BOTTOM_CONTEXT, F.HIST, F.HIST_BOUNDS, F.TUNING_IDS,
         F.TUNING_COUNTS, F.REF_POSITIONS, F.REF_PROBS, F.TOKENS, F.LOGIT_TOP_IDS, F.LOGIT_TOP_VALUES,
         F.LOGIT_BOTTOM_IDS, F.LOGIT_BOTTOM_VALUES, F.BAND_POSITIONS, F.BAND_VALUES, F.BAND_EDGES}
EXACT_FIELDS = {F.STATS: ("count", "frac_pos", "min", "max"),
                F.REF: ("top_token", "x_top_token", "best_token", "top_share", "x_top_share", "pos0_share", "miss",
                        "x_miss")}
# docs/STORE.md's bounds for a merge against one run: mean in units of std, std relative, skew absolute,
# kurtosis relative to kurtosis + 3, tuning means in units of std
MERGE_BOUNDS = {"mean": 5e-6, "std": 1e-6, "skew": 5e-5, "kurtosis": 5e-6, "tuning": 1e-4}


def assert_same_result(one: Path, other: Path) -> dict:
    """Every exact array byte for byte; the moments and tuning means within docs/STORE.md's bounds for
    a merge; what is made from them (z-scores, per-type moments) to 1e-4 of its scale. Returns the
    largest moment differences, on the scale of each bound."""
    names = sorted(p.name for p in one.glob("*.npy"))
    assert names == sorted(p.name for p in other.glob("*.npy")), "different files"
    assert EXACT <= set(names)
    for name in names:
        if name in EXACT:
            assert (one / name).read_bytes() == (other / name).read_bytes(), f"{name} differs"
        elif name not in (F.STATS, F.TUNING_MEANS):  # made from the moments: to 1e-4 of their scale
            a, b = np.load(one / name), np.load(other / name)
            for field in a.dtype.names or [None]:
                x, y = (a, b) if field is None else (a[field], b[field])
                if np.issubdtype(x.dtype, np.floating) and field not in EXACT_FIELDS.get(name, ()):
                    scale = float(np.nanmax(np.abs(x), initial=0.0))
                    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{name} {field}")
                else:
                    np.testing.assert_array_equal(x, y, err_msg=f"{name} {field}")
    a, b = np.load(one / F.STATS), np.load(other / F.STATS)
    for field in EXACT_FIELDS[F.STATS]:
        np.testing.assert_array_equal(a[field], b[field], err_msg=field)
    ta, tb = np.load(one / F.TUNING_MEANS), np.load(other / F.TUNING_MEANS)  # (V + 1, U), NaN: type unseen
    for x, y in [(a[f], b[f]) for f in ("mean", "std", "skew", "kurtosis")] + [(ta, tb)]:
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
    std = np.where(a["std"] > 0, a["std"], np.inf)  # a constant unit: every difference must be 0
    diff = {f: np.abs(np.nan_to_num(a[f] - b[f])) for f in ("mean", "std", "skew", "kurtosis")}
    errors = {"mean": diff["mean"] / std, "std": diff["std"] / std, "skew": diff["skew"],
              "kurtosis": diff["kurtosis"] / np.abs(a["kurtosis"] + 3), "tuning": np.abs(np.nan_to_num(ta - tb)) / std}
    worst = {name: float(np.nan_to_num(e, nan=0.0).max(initial=0.0)) for name, e in errors.items()}
    assert all(worst[name] <= bound for name, bound in MERGE_BOUNDS.items()), worst
    return worst
