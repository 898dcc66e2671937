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

from maxact.config import DEFAULT_CORPUS, DEFAULT_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the check the tests use
from merge_check import EXACT, MERGE_BOUNDS, assert_same_result  # noqa: E402

MAXACT = str(Path(sys.executable).with_name("maxact"))
WROTE = re.compile(r"wrote atlas .*: (\d+) tokens in ([0-9.]+) s")


def timed_atlas(args: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, seconds the command reports) of one `maxact atlas` in a fresh process: the pass
    alone for one process; the shards, merges and finalize for --ray."""
    t0 = time.perf_counter()
    done = subprocess.run([MAXACT, "atlas", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"maxact atlas {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, float(WROTE.search(done.stdout).group(2))


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
        worst = assert_same_result(one, ray)
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
