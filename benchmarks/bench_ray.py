"""`maxact atlas --ray` on local workers against one process, same machine, same config.

    python benchmarks/bench_ray.py [--tokens 4096] [--workers 2] [--model smollm2-135m] [--corpus looking-glass]

Runs `maxact atlas` twice over the first --tokens tokens of the corpus, each in a fresh process:
once in one process (torch on --workers threads), once with `--ray --shards W` (a local Ray
instance; W tasks of one thread each, so both use the same cores). Checks that the two atlases are
the same result (every exact array byte for byte, the float32 moments and tuning means to 1e-5, what
divides by them to 1e-4), then prints one JSON line: the wall time of each command (model load,
tokenization, pass, merges, finalize, write; for Ray also starting the instance and its workers),
their ratio (the overhead of Ray), and what each command reports (the pass alone for one process;
shards, merges and finalize for Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maxact.config import DEFAULT_CORPUS, DEFAULT_MODEL
from maxact.store import format as F

MAXACT = str(Path(sys.executable).with_name("maxact"))
WROTE = re.compile(r"wrote atlas .*: (\d+) tokens in ([0-9.]+) s")
# what a merge reproduces bit for bit; every other array is compared to float rounding
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


def timed_atlas(args: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, seconds the command reports) of one `maxact atlas` in a fresh process: the pass
    alone for one process; the shards, merges and finalize for --ray."""
    t0 = time.perf_counter()
    done = subprocess.run([MAXACT, "atlas", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"maxact atlas {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, float(WROTE.search(done.stdout).group(2))


def same_result(one: Path, other: Path) -> dict:
    """Assert the two atlases are one result: every exact array byte for byte; the moments and tuning
    means within docs/STORE.md's bounds for a merge; what is made from them (z-scores, per-type
    moments) to 1e-4 of its scale. Returns the largest moment differences, on each bound's scale."""
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--workers", type=int, default=2, help="Ray workers (= shards), and the one process's threads")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    args = p.parse_args()
    ray_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # Ray gives each task 1 thread
    one_env = {**ray_env, "OMP_NUM_THREADS": str(args.workers)}
    common = ["--model", args.model, "--corpus", args.corpus, "--max-tokens", str(args.tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        one, ray = Path(tmp) / "one", Path(tmp) / "ray"
        one_wall, one_pass = timed_atlas([*common, "--out", str(one)], one_env)
        ray_wall, ray_pass = timed_atlas([*common, "--out", str(ray), "--ray", "--shards", str(args.workers)],
                                         ray_env)
        worst = same_result(one, ray)
        n_exact = len([p for p in one.glob("*.npy") if p.name in EXACT])
    print(json.dumps({
        "model": args.model, "corpus": args.corpus, "tokens": args.tokens, "workers": args.workers,
        "cpus": os.cpu_count(), "one_process_wall_s": round(one_wall, 2), "ray_wall_s": round(ray_wall, 2),
        "overhead": round(ray_wall / one_wall, 3),
        "one_process_pass_s": one_pass, "ray_shards_merge_finalize_s": ray_pass,
        "same_result": True, "byte_identical_npy": n_exact, "largest_moment_differences": worst,
        "bounds": MERGE_BOUNDS,
    }))


if __name__ == "__main__":
    main()
